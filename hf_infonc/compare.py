"""``hf-infonc compare``: run a recipe as variants × seeds (each an ``hf-infonc finetune`` in its own process,
in ``OUT/<variant>/seed-<s>/``) and compare every variant with the first, seed by seed, by a paired t-test.
Guide: docs/recipes.md ("Comparing settings").
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from hf_infonc.errors import UserError
from hf_infonc.files import json_safe, json_text, write_atomic
from hf_infonc.recipe import shown_command, shown_override

#: the verdict threshold of the paired t-test
ALPHA = 0.05
CONFIDENCE = 0.95
RESULT_FILES = ("comparison.json", "comparison.md", "comparison.png")
VARIANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
# keys that compare sets itself, and why a user may not
RESERVED_KEYS = {
    **dict.fromkeys(("seed", "training.seed", "training.data_seed"), "the training seed comes from --seeds"),
    "training.output_dir": "each run is written to OUT/<variant>/seed-<s>; choose OUT with --out",
    "hub.push_to_hub": "compare never uploads its runs; push a chosen run with `hf-infonc push`",
}
# keys a variant may not change because the runs would no longer be paired
PAIRING_KEYS = {
    "data.seed": "it draws the data split, the few-shot/labelled subset and the size caps, so the "
                 "variants would not see the same data; change it for every run with --set data.seed=N",
}


@dataclasses.dataclass(frozen=True)
class Metric:
    """One row block of the comparison: where the value sits in ``metrics.json`` and how it prints."""

    key: str
    label: str
    path: tuple[str, ...]
    fmt: str

    def read(self, metrics: Mapping[str, Any]) -> float | None:
        value: Any = metrics
        for part in self.path:
            value = value.get(part) if isinstance(value, Mapping) else None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return None
        return float(value)


METRICS = (
    Metric("accuracy", "test accuracy", ("after", "accuracy"), ".4f"),
    Metric("mir", "MIR", ("after", "mir"), ".4f"),
    Metric("hdr", "HDR", ("after", "hdr"), ".4f"),
    Metric("nc1", "NC1", ("after", "nc1"), ".4f"),
    Metric("wall_time_s", "wall time (s)", ("wall_time_s",), ".1f"),
)


@dataclasses.dataclass
class Variant:
    """A named set of recipe overrides (``KEY=VALUE`` strings, as ``--set`` takes them)."""

    name: str
    overrides: list[str]


@dataclasses.dataclass
class Run:
    """One variant × seed: its folder, log, command, and ``recipe`` as its ``recipe.yaml`` will hold it."""

    variant: str
    seed: int
    folder: Path
    log: Path
    command: list[str]
    recipe: dict[str, Any]


class CompareError(UserError):
    """A comparison that cannot run as asked (variant or seed syntax, a reserved key, a folder of other settings);
    a variant's recipe errors come wrapped in it, prefixed with the variant's name."""


# ---------------------------------------------------------------------------- parsing


def parse_seeds(items: str | Sequence[str]) -> list[int]:
    """``"0-4"`` → ``[0, 1, 2, 3, 4]``; ``"0,1,2"``, ``["0", "1", "2"]`` and ``"0-2,7"`` work too."""
    text = items if isinstance(items, str) else ",".join(items)
    if not text.strip():
        raise CompareError("--seeds: no seeds given. Use e.g. --seeds 0-4 or --seeds 0,1,2.")
    seeds: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        match = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
        if not match:
            raise CompareError(
                f"--seeds {text!r}: {part!r} is not a seed or a range. Give non-negative integers, e.g. --seeds 0-4 "
                f"or --seeds 0,1,2."
            )
        first, last = int(match[1]), int(match[2] if match[2] is not None else match[1])
        if last < first:
            raise CompareError(f"--seeds {text!r}: the range {part!r} runs backwards. Write it as {last}-{first}.")
        for seed in range(first, last + 1):
            if seed in seeds:
                raise CompareError(f"--seeds {text!r}: seed {seed} is listed twice.")
            seeds.append(seed)
    return seeds


def split_assignments(text: str) -> list[str]:
    """Split ``K=V,K=V`` at the commas outside brackets and quotes (so YAML lists and quoted strings stay whole)."""
    items, current, depth, quote = [], [], 0, None
    for char in text:
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            items.append("".join(current))
            current = []
            continue
        current.append(char)
    items.append("".join(current))
    return [item.strip() for item in items if item.strip()]


def override_key(item: str) -> str:
    """The dotted key of a ``KEY=VALUE`` override, as :func:`~hf_infonc.recipe.apply_overrides` reads it."""
    return ".".join(p for p in item.split("=", 1)[0].strip().split(".") if p)


def parse_variants(specs: Sequence[str]) -> list[Variant]:
    """Parse ``--variant`` values; a repeated name adds its overrides to the first one's (order kept)."""
    if not specs:
        raise CompareError("give at least one --variant NAME[:KEY=VALUE,...]; the first is the baseline.")
    variants: dict[str, Variant] = {}
    for spec in specs:
        name, _, body = spec.partition(":")
        name = name.strip()
        if not VARIANT_NAME.fullmatch(name) or name in RESULT_FILES:
            raise CompareError(
                f"--variant {spec!r}: {name!r} is not a usable variant name (it becomes a folder name): use letters, "
                f"digits and _ . + -, e.g. --variant ce:training.cma_weight=0."
            )
        variant = variants.setdefault(name, Variant(name, []))
        for item in split_assignments(body):
            if "=" not in item or not override_key(item):
                raise CompareError(
                    f"--variant {spec!r}: {item!r} must look like KEY=VALUE with a dotted recipe key, e.g. "
                    f"training.cma_weight=0.5. Write several as KEY=VALUE,KEY=VALUE; quote a value holding a comma."
                )
            key = override_key(item)
            if any(override_key(earlier) == key for earlier in variant.overrides):
                raise CompareError(f"--variant {spec!r}: variant {name!r} sets {key} twice. Keep one value.")
            variant.overrides.append(item)
    return list(variants.values())


def _check_reserved(items: Iterable[str], where: str, *, variant: bool) -> None:
    for item in items:
        key = override_key(item)
        reason = RESERVED_KEYS.get(key) or (PAIRING_KEYS.get(key) if variant else None)
        if reason:
            raise CompareError(f"{where}: {key} cannot be set here: {reason}.")


# ---------------------------------------------------------------------------- the run matrix


def plan_runs(
    recipe_path: str,
    variants: Sequence[Variant],
    seeds: Sequence[int],
    out: Path,
    *,
    overrides: Sequence[str] = (),
    finetune_command: Sequence[str] | None = None,
) -> list[Run]:
    """Validate every variant through the recipe loader and list the runs, seed by seed.

    Errors are the recipe's (unknown key with the nearest valid one, wrong type, ...), prefixed
    with the variant they come from.
    """
    import yaml

    from hf_infonc.recipe import RecipeError, apply_overrides, load_recipe, recipe_from_dict

    _check_reserved(overrides, "--set", variant=False)
    base = load_recipe(recipe_path, list(overrides))  # the recipe's own errors (file, YAML, --set keys) first
    for variant in variants:
        _check_reserved(variant.overrides, f"--variant {variant.name}", variant=True)
    pinned = [key for key in ("seed", "data_seed") if key in (base.raw.get("training") or {})]
    program = list(finetune_command or [sys.executable, "-m", "hf_infonc.cli", "finetune"])
    runs = []
    for seed in seeds:
        for variant in variants:
            folder = out / variant.name / f"seed-{seed}"
            # the seed, and the TrainingArguments seeds the recipe pins (they would otherwise win over it)
            items = [
                *overrides, *variant.overrides, f"seed={seed}", *(f"training.{key}={seed}" for key in pinned),
                f"training.output_dir={folder}", "hub.push_to_hub=false",
            ]
            try:
                resolved = recipe_from_dict(apply_overrides(base.raw, items, recipe_path), recipe_path)
            except RecipeError as error:
                raise CompareError(f"--variant {variant.name}: {error}") from None
            command = [*program, recipe_path, *(token for item in items for token in ("--set", item))]
            runs.append(Run(variant.name, seed, folder, folder.with_suffix(".log"), command,
                            yaml.safe_load(resolved.to_yaml())))
    return runs


def read_metrics(folder: Path) -> dict[str, Any] | None:
    """The run's ``metrics.json`` when it is complete (it holds the ``after`` block), else None."""
    try:
        metrics = json.loads((folder / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    return metrics if isinstance(metrics, dict) and isinstance(metrics.get("after"), dict) else None


def _first_difference(a: Any, b: Any, key: str = "") -> str | None:
    """The first dotted key (``training.output_dir`` aside) where two recipe mappings differ, with both values."""
    if key == "training.output_dir":
        return None
    if isinstance(a, dict) and isinstance(b, dict):
        for name in [*a, *(k for k in b if k not in a)]:
            found = _first_difference(a.get(name), b.get(name), f"{key}.{name}" if key else str(name))
            if found:
                return found
        return None
    return None if a == b else f"{key or '<recipe>'}: {a!r} there, {b!r} now"


def check_same_settings(run: Run) -> None:
    """Refuse to reuse a finished run whose ``recipe.yaml`` differs from this run's recipe (output folder aside)."""
    recorded = run.folder / "recipe.yaml"
    if not recorded.is_file():
        return
    import yaml

    try:
        difference = _first_difference(yaml.safe_load(recorded.read_text()) or {}, run.recipe)
    except yaml.YAMLError:
        difference = "its recipe.yaml is unreadable"
    if difference:
        raise CompareError(
            f"{run.folder} holds a finished run with other settings ({difference}). Use another --out, or delete that "
            f"folder to run it again."
        )


def last_error_line(log: Path) -> str:
    """The last line of a log's last 64 KiB that reads like an error (``error: …``, ``…Error: …``), else its last
    line (a carriage return starts a line, as a progress bar redraws it)."""
    try:
        with open(log, "rb") as handle:
            handle.seek(max(0, log.stat().st_size - 65536))
            lines = [line.strip() for line in handle.read().decode("utf-8", "replace").splitlines() if line.strip()]
    except OSError:
        return "(no log)"
    for line in reversed(lines):
        if re.match(r"(error:|[\w.]*(Error|Exception|Interrupt)\b)", line):
            return line
    return lines[-1] if lines else "(empty log)"


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def visible_gpus() -> list[str]:
    """CUDA device ids a job can be pinned to (respects an existing ``CUDA_VISIBLE_DEVICES``)."""
    import torch

    count = torch.cuda.device_count()  # 0 without CUDA
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [d.strip() for d in visible.split(",") if d.strip()] if visible else [str(i) for i in range(count)]
    return ids[:count]


def execute_runs(
    runs: Sequence[Run],
    out: Path,
    *,
    jobs: int,
    gpus: Sequence[str] = (),
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Run (or reuse) every run, ``jobs`` at a time; each job gets cores // jobs threads and, with GPUs, one GPU.
    Returns the runs' entries of ``comparison.json``: status, metric values (``None`` where missing), exit code
    and last error line.

    A run whose folder holds a complete ``metrics.json`` is kept; all of them are checked for
    other settings (:func:`check_same_settings`) before anything starts.
    """
    for run in runs:
        if read_metrics(run.folder) is not None:
            check_same_settings(run)
    threads = str(max(1, available_cores() // jobs))
    slots = itertools.count()
    worker = threading.local()  # each worker thread holds one slot (its GPU) for all its runs

    def one(run: Run) -> tuple[dict[str, Any], str]:
        """The run's entry, and the line that reports it."""
        entry = {
            "variant": run.variant, "seed": run.seed, "status": "finished", "values": None,
            "folder": os.path.relpath(run.folder, out), "log": os.path.relpath(run.log, out),
            "returncode": 0, "error": None, "command": shown_command(run.command),
        }
        metrics = read_metrics(run.folder)
        if metrics is not None:
            values = {m.key: m.read(metrics) for m in METRICS}
            return {**entry, "values": values}, f"{run.variant} seed {run.seed}: finished earlier, kept ({run.folder})"
        env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "PYTHONUNBUFFERED": "1"}
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[worker.slot % len(gpus)]
        command = [*run.command, *(["--overwrite"] if run.folder.exists() else [])]
        run.log.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        with open(run.log, "w") as handle:
            handle.write(f"$ {shown_command(command)}\n")
            handle.flush()
            returncode = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        env=env).returncode
        elapsed = time.perf_counter() - started
        metrics = read_metrics(run.folder) if returncode == 0 else None
        if metrics is None:
            error = last_error_line(run.log) if returncode != 0 else "exit code 0 but no complete metrics.json"
            if returncode < 0:
                error = f"killed by signal {-returncode}; {error}"
            values = dict.fromkeys(m.key for m in METRICS)
            return {**entry, "status": "failed", "values": values, "returncode": returncode, "error": error}, (
                f"{run.variant} seed {run.seed}: FAILED (exit code {returncode}) after {elapsed:.0f} s: {error} "
                f"(log: {run.log})")
        values = {m.key: m.read(metrics) for m in METRICS}
        return {**entry, "values": values}, (
            f"{run.variant} seed {run.seed}: done in {elapsed:.0f} s, accuracy {_number(values['accuracy'], '.4f')}")

    pool = ThreadPoolExecutor(max_workers=jobs, initializer=lambda: setattr(worker, "slot", next(slots)))
    try:
        futures = [pool.submit(one, run) for run in runs]
        for done, future in enumerate(as_completed(futures), 1):
            log(f"[{done}/{len(runs)}] {future.result()[1]}")
        return [future.result()[0] for future in futures]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------------------- statistics


def describe(values: Sequence[float]) -> dict[str, Any]:
    """n, mean and sample standard deviation (``None`` below 2 values)."""
    n = len(values)
    mean = math.fsum(values) / n if n else None
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n >= 2 else None
    return {"n": n, "mean": mean, "sd": sd}


def paired_difference(
    baseline: Mapping[int, float | None], variant: Mapping[int, float | None], confidence: float = CONFIDENCE
) -> dict[str, Any]:
    """Paired comparison ``variant − baseline`` over the seeds where both have a value.

    t = d̄/(s/√n) with n − 1 degrees of freedom, two-sided p = 2·P(T > |t|), interval
    d̄ ± t_{(1+confidence)/2, n−1}·s/√n: the numbers of ``scipy.stats.ttest_rel(variant, baseline)``,
    degenerate cases included (equal non-zero differences: t = ±∞ (``None``), p = 0, zero-width
    interval; all zero: t = p = ``None``). Fewer than 2 pairs: no interval and no test.
    """
    from scipy.stats import t as student_t

    seeds = sorted(s for s in baseline if s in variant and baseline[s] is not None and variant[s] is not None)
    differences = [variant[s] - baseline[s] for s in seeds]
    summary = describe(differences)
    n, mean, sd = summary["n"], summary["mean"], summary["sd"]
    result: dict[str, Any] = {
        "seeds": seeds, "n": n, "mean_difference": mean, "sd_difference": sd, "confidence": confidence,
        "ci_low": None, "ci_high": None, "t": None, "df": n - 1 if n >= 2 else None, "p_value": None,
    }
    if n < 2:
        result["verdict"] = (f"not testable: {'one paired seed' if n == 1 else 'no paired seeds'} "
                             f"(a test needs at least 2)")
        return result
    standard_error = sd / math.sqrt(n)
    half_width = float(student_t.ppf((1 + confidence) / 2, n - 1)) * standard_error
    result["ci_low"], result["ci_high"] = mean - half_width, mean + half_width
    if standard_error == 0:
        if mean == 0:
            result["verdict"] = "no difference: identical in every paired seed"
            return result
        result["p_value"] = 0.0  # the same non-zero difference in every seed: t = ±inf
    else:
        result["t"] = mean / standard_error
        result["p_value"] = float(2 * student_t.sf(abs(result["t"]), n - 1))
    result["verdict"] = (
        f"distinguishable from seed noise (p < {ALPHA:g})" if result["p_value"] < ALPHA
        else "not distinguishable from seed noise"
    )
    return result


def comparison_statistics(entries: Sequence[Mapping[str, Any]], variants: Sequence[str]) -> dict[str, Any]:
    """Per metric: per-variant summaries and, for every non-baseline variant, the paired difference."""
    statistics: dict[str, Any] = {}
    for metric in METRICS:
        per_seed = {v: {r["seed"]: r["values"][metric.key] for r in entries if r["variant"] == v} for v in variants}
        summaries = {}
        for v in variants:
            present = [x for x in per_seed[v].values() if x is not None]
            summaries[v] = {**describe(present), "per_seed": {str(s): x for s, x in per_seed[v].items()}}
        differences = {v: paired_difference(per_seed[variants[0]], per_seed[v]) for v in variants[1:]}
        statistics[metric.key] = {"variants": summaries, "differences_from_baseline": differences}
    return statistics


# ---------------------------------------------------------------------------- outputs


def build_document(
    recipe_path: str, command: str, seeds: Sequence[int], variants: Sequence[Variant], overrides: Sequence[str],
    entries: Sequence[Mapping[str, Any]], data_seed: Any,
) -> dict[str, Any]:
    """Everything ``comparison.json`` holds (nothing that changes when the same command is run again)."""
    from hf_infonc.card import package_versions

    names = [v.name for v in variants]
    return json_safe({
        "command": command,
        "recipe": recipe_path,
        "seeds": list(seeds),
        "baseline": names[0],
        "set": [shown_override(item) for item in overrides],
        "variants": [{"name": v.name, "overrides": [shown_override(item) for item in v.overrides]} for v in variants],
        "pairing": {
            "varies_with_seed": "seed (model initialisation, data order, augmentation)", "data_seed": data_seed,
        },
        "metrics": [{"key": m.key, "label": m.label, "source": ".".join(m.path)} for m in METRICS],
        "test": f"paired two-sided Student t-test, {CONFIDENCE:.0%} confidence interval, verdict at p < {ALPHA:g}",
        "runs": list(entries),
        "statistics": comparison_statistics(entries, names),
        "versions": dict(package_versions(("hf-infonc", "torch", "transformers", "accelerate", "datasets"))),
    })


def _number(value: float | None, fmt: str, sign: bool = False) -> str:
    return "—" if value is None else format(value, ("+" if sign else "") + fmt)


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    """The lines of a markdown table (a ``|`` in a cell is escaped: it would end the cell)."""
    cells = ([str(cell).replace("|", "\\|") for cell in row] for row in rows)
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in cells)]


def render_markdown(document: Mapping[str, Any]) -> str:
    """``comparison.md``: the command, the variants, one table per metric, and the failed runs."""
    seeds = document["seeds"]
    baseline = document["baseline"]
    runs = document["runs"]
    failed = [r for r in runs if r["status"] != "finished"]
    total = math.fsum(r["values"]["wall_time_s"] or 0.0 for r in runs)
    lines = [
        f"# Comparison: `{document['recipe']}`", "",
        "```bash", document["command"], "```", "",
        f"Seeds {', '.join(map(str, seeds))}: each changes the model initialisation and the data order; the data "
        f"split and any labelled subset are fixed (`data.seed = {document['pairing']['data_seed']}`), so every "
        f"variant is paired with the baseline `{baseline}` seed by seed. {len(runs) - len(failed)} of {len(runs)} "
        f"runs finished; their wall times add up to {total:.0f} s.", "",
        "Δ = variant − baseline over the seeds where both finished; 95 % CI from Student's t with n − 1 degrees of "
        "freedom; p: two-sided paired t-test; a difference is called distinguishable from seed noise when "
        f"p < {ALPHA:g}.",
        "",
    ]
    if document["set"]:
        lines += ["Every run: " + ", ".join(f"`--set {o}`" for o in document["set"]) + ".", ""]
    lines += _table(["variant", "overrides"], (
        [f"{v['name']} (baseline)" if v["name"] == baseline else v["name"],
         ", ".join(f"`{o}`" for o in v["overrides"]) or "the recipe as it is"] for v in document["variants"]))
    header = ["variant", "mean ± sd", f"per seed ({', '.join(map(str, seeds))})", f"Δ vs {baseline}", "95 % CI", "p",
              "n", "reading"]
    for metric in METRICS:
        block = document["statistics"][metric.key]
        rows = []
        for variant in document["variants"]:
            name = variant["name"]
            summary = block["variants"][name]
            spread = f" ± {_number(summary['sd'], metric.fmt)}" if summary["sd"] is not None else (
                f" (n = {summary['n']})" if summary["n"] else "")
            row = [name, f"{_number(summary['mean'], metric.fmt)}{spread}",
                   ", ".join(_number(summary["per_seed"].get(str(s)), metric.fmt) for s in seeds)]
            diff = block["differences_from_baseline"].get(name)
            if diff is None:  # the baseline
                rows.append([*row, "—", "—", "—", summary["n"], "baseline"])
                continue
            interval = "—" if diff["ci_low"] is None else (
                f"[{_number(diff['ci_low'], metric.fmt, True)}, {_number(diff['ci_high'], metric.fmt, True)}]")
            rows.append([*row, _number(diff["mean_difference"], metric.fmt, True), interval,
                         _number(diff["p_value"], ".3g"), diff["n"], diff["verdict"]])
        lines += ["", f"## {metric.label}", "", *_table(header, rows)]
    if failed:
        lines += ["", "## Failed runs", "", *_table(
            ["variant", "seed", "exit code", "log", "last error line"],
            ([r["variant"], r["seed"], r["returncode"], f"`{r['log']}`", r["error"] or ""] for r in failed))]
    lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in document["versions"].items()) + "."]
    return "\n".join(lines) + "\n"


def plot_comparison(document: Mapping[str, Any], path: Path) -> None:
    """One panel per metric: every seed's value per variant (a thin line joins a seed's runs) and the mean (bar)."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = [v["name"] for v in document["variants"]]
    seeds = document["seeds"]
    columns = min(3, len(METRICS))
    rows = math.ceil(len(METRICS) / columns)
    figure = Figure(figsize=(max(3.6, 0.7 * len(names) + 1.8) * columns, 3.4 * rows + 0.4), layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.subplots(rows, columns, squeeze=False).ravel()
    for unused in grid[len(METRICS):]:
        unused.set_axis_off()
    step = min(0.08, 0.5 / len(seeds))  # seeds side by side around each variant
    for ax, metric in zip(grid, METRICS):
        block = document["statistics"][metric.key]["variants"]
        for index, seed in enumerate(seeds):
            xs = np.arange(len(names)) + (index - (len(seeds) - 1) / 2) * step
            ys = np.array([block[name]["per_seed"].get(str(seed)) for name in names], dtype=float)  # None: NaN
            ax.plot(xs, ys, color=f"C{index % 10}", linewidth=0.6, alpha=0.4)
            ax.scatter(xs, ys, color=f"C{index % 10}", s=16, zorder=3, label=f"seed {seed}")
        for i, name in enumerate(names):
            if block[name]["mean"] is not None:
                ax.hlines(block[name]["mean"], i - 0.3, i + 0.3, color="black", linewidth=2, zorder=4)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
        ax.set_xlim(-0.6, len(names) - 0.4)
        ax.set_title(metric.label)
        ax.grid(alpha=0.3, axis="y")
    grid[0].legend(fontsize=7)
    figure.suptitle(f"{document['recipe']}: per-seed values (points) and means (bars); baseline {document['baseline']}")
    write_atomic(path, lambda temporary: figure.savefig(temporary, dpi=110, format="png"))


# ---------------------------------------------------------------------------- the command


def compare(
    recipe: str,
    variant_specs: Sequence[str],
    seeds: str | Sequence[str] | Sequence[int],
    out: str | Path,
    *,
    overrides: Sequence[str] = (),
    jobs: int | None = None,
    dry_run: bool = False,
    plot: bool = True,
    finetune_command: Sequence[str] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run ``recipe`` for every variant × seed (see the module docstring) and write the comparison files.

    Returns the ``comparison.json`` document (``{"runs": [...]}`` only, without running, for
    ``dry_run``). ``finetune_command`` replaces ``python -m hf_infonc.cli finetune`` (tests use a
    stand-in). A failed run is in the document with status ``failed``; the caller decides the exit code.
    """
    given = [seeds] if isinstance(seeds, str) else [str(s) for s in seeds]
    seed_list = parse_seeds(given)
    variants = parse_variants(variant_specs)
    if jobs is not None and jobs < 1:
        raise CompareError(f"--jobs {jobs}: give at least 1.")
    command = shown_command([  # this call as an `hf-infonc compare` command line, recorded in comparison.json
        "hf-infonc", "compare", recipe, *(x for v in variant_specs for x in ("--variant", v)), "--seeds", *given,
        *(["--jobs", str(jobs)] if jobs is not None else []), *(x for o in overrides for x in ("--set", o)),
        "--out", str(out),
    ])
    out = Path(out).absolute()
    if out.exists() and not out.is_dir():
        raise CompareError(f"--out {out}: exists and is not a folder.")
    runs = plan_runs(recipe, variants, seed_list, out, overrides=overrides, finetune_command=finetune_command)
    if dry_run:
        for run in runs:
            log(shown_command(run.command))
        return {"runs": [{"variant": r.variant, "seed": r.seed, "command": shown_command(r.command)} for r in runs]}
    on_cpu = bool(runs[0].recipe.get("training", {}).get("use_cpu"))
    gpus = [] if on_cpu else visible_gpus()
    jobs = jobs or (len(gpus) if len(gpus) > 1 else 1)
    out.mkdir(parents=True, exist_ok=True)
    log(f"{len(runs)} runs ({len(variants)} variants × {len(seed_list)} seeds), {jobs} at a time"
        + (f" on GPUs {', '.join(gpus)}" if gpus else f", {max(1, available_cores() // jobs)} thread(s) each")
        + f" → {out}")
    entries = execute_runs(runs, out, jobs=jobs, gpus=gpus, log=log)
    data_seed = (runs[0].recipe.get("data") or {}).get("seed", 0)
    document = build_document(recipe, command, seed_list, variants, overrides, entries, data_seed)
    write_atomic(out / "comparison.json", json_text(document))
    write_atomic(out / "comparison.md", render_markdown(document))
    if plot:
        plot_comparison(document, out / "comparison.png")
    return document
