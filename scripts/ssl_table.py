#!/usr/bin/env python
"""Run a semi-supervised recipe as several methods × seeds and print the mean ± sd accuracy table.

Every run is ``hf-infonc finetune RECIPE --set ...`` in its own process; the labelled subset is
drawn with the recipe's ``data.seed``, so all training seeds share it. Results (one row per run
and the summary) go to ``--out`` as JSON, and a markdown table with the command is printed.

    python scripts/ssl_table.py recipes/ssl_fashion_mnist.yaml --seeds 0 1 2 --jobs 2 \\
        --out docs/data/ssl_fashion_mnist.json
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

NO_INFO = ["training.mi_weight=0", "training.entropy_gap_weight=0", "training.cma_weight=0"]

#: method name → (description, recipe overrides)
METHODS: dict[str, tuple[str, list[str]]] = {
    "supervised": ("supervised only (labelled stream)", ["ssl.algorithm=supervised", "ssl.unlabeled_ratio=0", *NO_INFO]),
    "fixmatch": ("FixMatch", ["ssl.algorithm=fixmatch", *NO_INFO]),
    "freematch": ("FreeMatch", ["ssl.algorithm=freematch", *NO_INFO]),
    "freematch_info": ("FreeMatch + information losses (recipe's weights and info_target)", ["ssl.algorithm=freematch"]),
    "freematch_info_labeled": ("FreeMatch + information losses on the labelled rows", ["ssl.algorithm=freematch", "ssl.info_target=labeled"]),
    "freematch_info_pseudo": ("FreeMatch + information losses on the confident pseudo-labelled rows", ["ssl.algorithm=freematch", "ssl.info_target=pseudo"]),
    "freematch_info_both": ("FreeMatch + information losses on labelled + pseudo-labelled rows", ["ssl.algorithm=freematch", "ssl.info_target=both"]),
}


def run_one(recipe: str, method: str, seed: int, out_root: Path, extra: list[str]) -> dict:
    out_dir = out_root / f"{method}_seed{seed}"
    overrides = [*METHODS[method][1], f"seed={seed}", f"training.output_dir={out_dir}", *extra]
    command = [sys.executable, "-m", "hf_infonc.cli", "finetune", recipe, "--overwrite"]
    for item in overrides:
        command += ["--set", item]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    started = time.perf_counter()
    log = out_root / f"{method}_seed{seed}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as handle:
        subprocess.run(command, check=True, stdout=handle, stderr=subprocess.STDOUT, env=env)
    metrics = json.loads((out_dir / "metrics.json").read_text())
    return {
        "method": method,
        "seed": seed,
        "accuracy": metrics["after"]["accuracy"],
        "mir": metrics["after"].get("mir"),
        "hdr": metrics["after"].get("hdr"),
        "wall_s": round(time.perf_counter() - started, 1),
        "command": shlex.join(command),
    }


def summarise(rows: list[dict]) -> dict[str, dict[str, float]]:
    summary: dict[str, dict[str, float]] = {}
    for method in dict.fromkeys(r["method"] for r in rows):
        accuracies = [r["accuracy"] for r in rows if r["method"] == method]
        summary[method] = {
            "mean": statistics.mean(accuracies),
            "sd": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
            "runs": len(accuracies),
            "seeds": [r["seed"] for r in rows if r["method"] == method],
            "per_seed": accuracies,
        }
    return summary


def markdown(summary: dict[str, dict[str, float]]) -> str:
    lines = ["| method | test accuracy, mean ± sd | per seed | runs |", "|---|---|---|---|"]
    for method, s in summary.items():
        per_seed = ", ".join(f"{a:.3f}" for a in s["per_seed"])
        lines.append(f"| {METHODS[method][0]} | **{s['mean']:.3f} ± {s['sd']:.3f}** | {per_seed} | {s['runs']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe")
    parser.add_argument("--methods", nargs="+", default=["supervised", "fixmatch", "freematch", "freematch_info"],
                        choices=list(METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel (each with OMP_NUM_THREADS=1)")
    parser.add_argument("--out", default=None, help="JSON file for the rows and the summary")
    parser.add_argument("--work-dir", default="outputs/ssl_table")
    parser.add_argument("--set", dest="extra", action="append", default=[], help="extra recipe override for every run")
    args = parser.parse_args(argv)
    jobs = [(m, s) for s in args.seeds for m in args.methods]
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        rows = list(pool.map(lambda job: run_one(args.recipe, job[0], job[1], Path(args.work_dir), args.extra), jobs))
    summary = summarise(rows)
    command = shlex.join(["python", "scripts/ssl_table.py", *(argv if argv is not None else sys.argv[1:])])
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"command": command, "rows": rows, "summary": summary}, indent=2))
    print(f"Command: {command}\nTotal wall time: {(time.perf_counter() - started) / 60:.1f} min\n")
    print(markdown(summary))


if __name__ == "__main__":
    main()
