"""``hf-infonc compare``: run a recipe as variants × seeds (each an ``hf-infonc finetune`` in its own process,
in ``OUT/<variant>/seed-<s>/``) and compare every variant with the first, seed by seed, by a paired t-test.
Guide: docs/recipes.md ("Comparing settings").
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import queue
import re
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from hf_infonc.errors import UserError
from hf_infonc.files import json_safe, json_text, write_atomic

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


@dataclasses.dataclass
class RunResult:
    """What became of a run: its metric values (``None`` where missing), or its exit code and last error line."""

    run: Run
    status: str  # "finished" or "failed"
    values: dict[str, float | None]
    returncode: int | None = None
    error: str | None = None


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


def _seed_overrides(raw: Mapping[str, Any], seed: int) -> list[str]:
    """``seed=s``, plus the TrainingArguments seeds the recipe pins (they would otherwise win over it)."""
    training = raw.get("training") or {}
    return [f"seed={seed}", *(f"training.{key}={seed}" for key in ("seed", "data_seed") if key in training)]


def _without_output_dir(raw: Mapping[str, Any]) -> dict[str, Any]:
    raw = json.loads(json.dumps(raw, default=str))
    raw.get("training", {}).pop("output_dir", None)
    return raw


def _first_difference(a: Any, b: Any, key: str = "") -> str | None:
    """The first dotted key where two recipe mappings differ, with both values."""
    if isinstance(a, dict) and isinstance(b, dict):
        for name in [*a, *(k for k in b if k not in a)]:
            found = _first_difference(a.get(name), b.get(name), f"{key}.{name}" if key else str(name))
            if found:
                return found
        return None
    return None if a == b else f"{key or '<recipe>'}: {a!r} there, {b!r} now"


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

    if not seeds:
        raise CompareError("--seeds: no seeds given. Use e.g. --seeds 0-4.")
    _check_reserved(overrides, "--set", variant=False)
    base = load_recipe(recipe_path, list(overrides))  # the recipe's own errors (file, YAML, --set keys) first
    raw = yaml.safe_load(Path(recipe_path).read_text())
    program = list(finetune_command or [sys.executable, "-m", "hf_infonc.cli", "finetune"])
    runs = []
    for variant in variants:
        _check_reserved(variant.overrides, f"--variant {variant.name}", variant=True)
        for seed in seeds:
            folder = out / variant.name / f"seed-{seed}"
            items = [
                *overrides, *variant.overrides, *_seed_overrides(base.raw, seed),
                f"training.output_dir={folder}", "hub.push_to_hub=false",
            ]
            try:
                resolved = recipe_from_dict(apply_overrides(raw, items, recipe_path), recipe_path)
            except RecipeError as error:
                raise CompareError(f"--variant {variant.name}: {error}") from None
            command = [*program, recipe_path, *(token for item in items for token in ("--set", item))]
            runs.append(Run(variant.name, seed, folder, folder.with_suffix(".log"), command,
                            yaml.safe_load(resolved.to_yaml())))
    runs.sort(key=lambda r: (seeds.index(r.seed), [v.name for v in variants].index(r.variant)))
    return runs


def read_metrics(folder: Path) -> dict[str, Any] | None:
    """The run's ``metrics.json`` when it is complete (it holds the ``after`` block), else None."""
    try:
        metrics = json.loads((folder / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    return metrics if isinstance(metrics, dict) and isinstance(metrics.get("after"), dict) else None


def check_same_settings(run: Run) -> None:
    """Refuse to reuse a finished run whose ``recipe.yaml`` differs from this run's recipe (output folder aside)."""
    recorded = run.folder / "recipe.yaml"
    if not recorded.is_file():
        return
    import yaml

    try:
        difference = _first_difference(_without_output_dir(yaml.safe_load(recorded.read_text()) or {}),
                                       _without_output_dir(run.recipe))
    except yaml.YAMLError:
        difference = "its recipe.yaml is unreadable"
    if difference:
        raise CompareError(
            f"{run.folder} holds a finished run with other settings ({difference}). Use another --out, or delete that "
            f"folder to run it again."
        )


def last_error_line(log: Path) -> str:
    """The last line of a log that reads like an error (``error: …``, ``…Error: …``), else its last line."""
    try:
        with open(log, "rb") as handle:
            handle.seek(max(0, log.stat().st_size - 65536))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    lines = [line.rsplit("\r", 1)[-1].strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    for line in reversed(lines):
        if re.match(r"(error:|[\w.]*(Error|Exception|Interrupt)\b)", line):
            return line
    return lines[-1] if lines else "(empty log)"


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def visible_gpus() -> list[str]:
    """CUDA device ids a job can be pinned to (respects an existing ``CUDA_VISIBLE_DEVICES``)."""
    try:
        import torch

        count = torch.cuda.device_count()
    except Exception:  # pragma: no cover - torch without CUDA support
        count = 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [d.strip() for d in visible.split(",") if d.strip()] if visible else [str(i) for i in range(count)]
    return ids[:count]


def execute_runs(
    runs: Sequence[Run],
    *,
    jobs: int,
    gpus: Sequence[str] = (),
    log: Callable[[str], None] = print,
) -> list[RunResult]:
    """Run (or reuse) every run, ``jobs`` at a time; each job gets cores // jobs threads and, with GPUs, one GPU.

    A run whose folder holds a complete ``metrics.json`` is kept; all of them are checked for
    other settings (:func:`check_same_settings`) before anything starts.
    """
    for run in runs:
        if read_metrics(run.folder) is not None:
            check_same_settings(run)
    threads = max(1, available_cores() // jobs)
    slots: queue.Queue[int] = queue.Queue()
    for slot in range(jobs):
        slots.put(slot)
    lock = threading.Lock()
    done = [0]

    def report(message: str) -> None:
        with lock:
            done[0] += 1
            log(f"[{done[0]}/{len(runs)}] {message}")

    def one(run: Run) -> RunResult:
        metrics = read_metrics(run.folder)
        if metrics is not None:
            report(f"{run.variant} seed {run.seed}: finished earlier, kept ({run.folder})")
            return RunResult(run, "finished", {m.key: m.read(metrics) for m in METRICS}, returncode=0)
        slot = slots.get()
        try:
            env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                   "PYTHONUNBUFFERED": "1"}
            if gpus:
                env["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
            command = [*run.command, *(["--overwrite"] if run.folder.exists() else [])]
            run.log.parent.mkdir(parents=True, exist_ok=True)
            started = time.perf_counter()
            with open(run.log, "w") as handle:
                handle.write(f"$ {shlex.join(command)}\n")
                handle.flush()
                returncode = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=env).returncode
            elapsed = time.perf_counter() - started
        finally:
            slots.put(slot)
        metrics = read_metrics(run.folder) if returncode == 0 else None
        if metrics is None:
            error = last_error_line(run.log) if returncode != 0 else "exit code 0 but no complete metrics.json"
            if returncode is not None and returncode < 0:
                error = f"killed by signal {-returncode}; {error}"
            report(f"{run.variant} seed {run.seed}: FAILED (exit code {returncode}) after {elapsed:.0f} s: {error} "
                   f"(log: {run.log})")
            return RunResult(run, "failed", {m.key: None for m in METRICS}, returncode=returncode, error=error)
        values = {m.key: m.read(metrics) for m in METRICS}
        report(f"{run.variant} seed {run.seed}: done in {elapsed:.0f} s, accuracy {_number(values['accuracy'], '.4f')}")
        return RunResult(run, "finished", values, returncode=0)

    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        results = list(pool.map(one, runs))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return results


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


def comparison_statistics(results: Sequence[RunResult], variants: Sequence[str]) -> dict[str, Any]:
    """Per metric: per-variant summaries and, for every non-baseline variant, the paired difference."""
    statistics: dict[str, Any] = {}
    for metric in METRICS:
        per_seed = {v: {r.run.seed: r.values[metric.key] for r in results if r.run.variant == v} for v in variants}
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
    results: Sequence[RunResult], out: Path,
) -> dict[str, Any]:
    """Everything ``comparison.json`` holds (nothing that changes when the same command is run again)."""
    from hf_infonc.card import package_versions

    names = [v.name for v in variants]
    runs = []
    for result in results:
        run = result.run
        runs.append({
            "variant": run.variant, "seed": run.seed, "status": result.status, "values": result.values,
            "folder": os.path.relpath(run.folder, out), "log": os.path.relpath(run.log, out),
            "returncode": result.returncode, "error": result.error, "command": shlex.join(run.command),
        })
    return json_safe({
        "command": command,
        "recipe": recipe_path,
        "seeds": list(seeds),
        "baseline": names[0],
        "set": list(overrides),
        "variants": [{"name": v.name, "overrides": v.overrides} for v in variants],
        "pairing": {
            "varies_with_seed": "seed (model initialisation, data order, augmentation)",
            "data_seed": (results[0].run.recipe.get("data") or {}).get("seed", 0) if results else None,
        },
        "metrics": [{"key": m.key, "label": m.label, "source": ".".join(m.path)} for m in METRICS],
        "test": f"paired two-sided Student t-test, {CONFIDENCE:.0%} confidence interval, verdict at p < {ALPHA:g}",
        "runs": runs,
        "statistics": comparison_statistics(results, names),
        "versions": dict(package_versions(("hf-infonc", "torch", "transformers", "accelerate", "datasets"))),
    })


def _number(value: float | None, fmt: str, sign: bool = False) -> str:
    if value is None:
        return "—"
    return format(value, ("+" if sign else "") + fmt)


def _cell(text: str) -> str:
    """Text for a markdown table cell (a ``|`` would end the cell)."""
    return text.replace("|", "\\|")


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
    lines += ["| variant | overrides |", "|---|---|"]
    for variant in document["variants"]:
        label = f"{variant['name']} (baseline)" if variant["name"] == baseline else variant["name"]
        overrides = ", ".join(f"`{_cell(o)}`" for o in variant["overrides"]) or "the recipe as it is"
        lines.append(f"| {label} | {overrides} |")
    for metric in document["metrics"]:
        fmt = next(m.fmt for m in METRICS if m.key == metric["key"])
        block = document["statistics"][metric["key"]]
        lines += [
            "", f"## {metric['label']}", "",
            f"| variant | mean ± sd | per seed ({', '.join(map(str, seeds))}) | Δ vs {baseline} | 95 % CI | p | n "
            "| reading |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for variant in document["variants"]:
            name = variant["name"]
            summary = block["variants"][name]
            spread = f" ± {_number(summary['sd'], fmt)}" if summary["sd"] is not None else (
                f" (n = {summary['n']})" if summary["n"] else "")
            mean = f"{_number(summary['mean'], fmt)}{spread}"
            per_seed = ", ".join(_number(summary["per_seed"].get(str(s)), fmt) for s in seeds)
            if name == baseline:
                lines.append(f"| {name} | {mean} | {per_seed} | — | — | — | {summary['n']} | baseline |")
                continue
            diff = block["differences_from_baseline"][name]
            interval = "—" if diff["ci_low"] is None else (
                f"[{_number(diff['ci_low'], fmt, True)}, {_number(diff['ci_high'], fmt, True)}]")
            lines.append(
                f"| {name} | {mean} | {per_seed} | {_number(diff['mean_difference'], fmt, True)} | {interval} | "
                f"{_number(diff['p_value'], '.3g')} | {diff['n']} | {diff['verdict']} |"
            )
    if failed:
        lines += ["", "## Failed runs", "", "| variant | seed | exit code | log | last error line |",
                  "|---|---|---|---|---|"]
        for r in failed:
            error = _cell(r["error"] or "")
            lines.append(f"| {r['variant']} | {r['seed']} | {r['returncode']} | `{r['log']}` | {error} |")
    lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in document["versions"].items()) + "."]
    return "\n".join(lines) + "\n"


def plot_comparison(document: Mapping[str, Any], path: Path) -> None:
    """One panel per metric: every seed's value per variant (a thin line joins a seed's runs) and the mean (bar)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = [v["name"] for v in document["variants"]]
    seeds = document["seeds"]
    metrics = document["metrics"]
    columns = min(3, len(metrics))
    rows = math.ceil(len(metrics) / columns)
    figure = Figure(figsize=(max(3.6, 0.7 * len(names) + 1.8) * columns, 3.4 * rows + 0.4), layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.subplots(rows, columns, squeeze=False).ravel()
    for unused in grid[len(metrics):]:
        unused.set_axis_off()
    axes = grid[: len(metrics)]
    colours = [f"C{i % 10}" for i in range(len(seeds))]
    for ax, metric in zip(axes, metrics):
        block = document["statistics"][metric["key"]]["variants"]
        for index, seed in enumerate(seeds):
            offset = (index - (len(seeds) - 1) / 2) * min(0.08, 0.5 / max(len(seeds), 1))
            xs = [i + offset for i, _ in enumerate(names)]
            ys = [block[name]["per_seed"].get(str(seed)) for name in names]
            ys = [float("nan") if y is None else y for y in ys]
            ax.plot(xs, ys, color=colours[index], linewidth=0.6, alpha=0.4)
            ax.scatter(xs, ys, color=colours[index], s=16, zorder=3, label=f"seed {seed}")
        for i, name in enumerate(names):
            mean = block[name]["mean"]
            if mean is not None:
                ax.hlines(mean, i - 0.3, i + 0.3, color="black", linewidth=2, zorder=4)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
        ax.set_xlim(-0.6, len(names) - 0.4)
        ax.set_title(metric["label"])
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=7)
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
    command: str | None = None,
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
    seed_list = parse_seeds(seeds if isinstance(seeds, str) else [str(s) for s in seeds])
    variants = parse_variants(variant_specs)
    if jobs is not None and jobs < 1:
        raise CompareError(f"--jobs {jobs}: give at least 1.")
    out = Path(out).absolute()
    if out.exists() and not out.is_dir():
        raise CompareError(f"--out {out}: exists and is not a folder.")
    runs = plan_runs(recipe, variants, seed_list, out, overrides=overrides, finetune_command=finetune_command)
    command = command or command_line(recipe, variant_specs, [",".join(map(str, seed_list))], overrides, out)
    if dry_run:
        for run in runs:
            log(shlex.join(run.command))
        return {"runs": [{"variant": r.variant, "seed": r.seed, "command": shlex.join(r.command)} for r in runs]}
    on_cpu = bool(runs[0].recipe.get("training", {}).get("use_cpu"))
    gpus = [] if on_cpu else visible_gpus()
    jobs = jobs or (len(gpus) if len(gpus) > 1 else 1)
    out.mkdir(parents=True, exist_ok=True)
    log(f"{len(runs)} runs ({len(variants)} variants × {len(seed_list)} seeds), {jobs} at a time"
        + (f" on GPUs {', '.join(gpus)}" if gpus else f", {max(1, available_cores() // jobs)} thread(s) each")
        + f" → {out}")
    results = execute_runs(runs, jobs=jobs, gpus=gpus, log=log)
    document = build_document(recipe, command, seed_list, variants, overrides, results, out)
    write_atomic(out / "comparison.json", json_text(document))
    write_atomic(out / "comparison.md", render_markdown(document))
    if plot:
        plot_comparison(document, out / "comparison.png")
    return document


def command_line(recipe: str, variants: Sequence[str], seeds: Sequence[str], overrides: Sequence[str],
                 out: str | Path, jobs: int | None = None) -> str:
    """The ``hf-infonc compare`` command line of these arguments (recorded in ``comparison.json``)."""
    return shlex.join([
        "hf-infonc", "compare", recipe, *(x for v in variants for x in ("--variant", v)), "--seeds", *seeds,
        *(["--jobs", str(jobs)] if jobs is not None else []), *(x for o in overrides for x in ("--set", o)),
        "--out", str(out),
    ])


def _run_compare(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    command = command_line(args.recipe, args.variants, args.seeds, args.overrides, args.out, args.jobs)
    document = compare(args.recipe, args.variants, args.seeds, args.out, overrides=args.overrides, jobs=args.jobs,
                       command=command, dry_run=args.dry_run, plot=not args.no_plot)
    if args.dry_run:
        return 0
    out = Path(args.out)
    print()
    print(render_markdown(document))
    print(f"Total wall time: {(time.perf_counter() - started) / 60:.1f} min. Wrote {out / 'comparison.json'}, "
          f"{out / 'comparison.md'}" + ("" if args.no_plot else f" and {out / 'comparison.png'}") + ".")
    failed = [r for r in document["runs"] if r["status"] != "finished"]
    if failed:
        print(f"{len(failed)} run(s) failed; see 'Failed runs' in the table. The same command runs them again "
              "(finished runs are kept).", file=sys.stderr)
        return 1
    return 0


def add_compare_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``compare`` on the ``hf-infonc`` sub-command parsers."""
    parser = subparsers.add_parser(
        "compare",
        help="run a recipe as variants × seeds; paired differences with CIs and p-values",
        description="Run a recipe under several settings (variants) × seeds, each as `hf-infonc finetune` in its "
                    "own process, and compare every variant with the first (the baseline), seed by seed: mean ± sd, "
                    "paired mean difference, 95% CI, p-value of a paired t-test, and whether the difference is "
                    "distinguishable from seed noise. See docs/ablations.md.",
        epilog="example:\n  hf-infonc compare recipes/demo.yaml --seeds 0-4 --jobs 2 --out /tmp/ablation \\\n"
               "      --variant ce:training.cma_weight=0,training.mi_weight=0 --variant cma:training.mi_weight=0\n\n"
               "A value holding a comma must be quoted or bracketed as YAML (data.class_names=[a, b]), or given in a\n"
               "second --variant with the same name. Finished runs are kept when the command is run again.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("recipe", help="path of a YAML recipe (see recipes/)")
    parser.add_argument("--variant", dest="variants", action="append", required=True, metavar="NAME[:KEY=VALUE,...]",
                        help="a named set of recipe overrides (dotted keys, YAML values, as --set); the first is the "
                             "baseline; NAME alone runs the recipe as it is (repeatable)")
    parser.add_argument("--seeds", nargs="+", default=["0-4"], metavar="SEEDS",
                        help="training seeds: 0-4, 0,1,2 or 0 1 2 (default: 0-4)")
    parser.add_argument("--jobs", type=int, default=None,
                        help="runs in parallel (default: one per GPU where there are several, else 1); each gets "
                             "cores // jobs CPU threads")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe value in every run, e.g. --set training.num_train_epochs=4 "
                             "(repeatable)")
    parser.add_argument("--out", required=True, help="folder for the runs and comparison.{json,md,png}")
    parser.add_argument("--dry-run", action="store_true", help="validate and print the runs' commands; run nothing")
    parser.add_argument("--no-plot", action="store_true", help="skip comparison.png")
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of errors (or set HF_INFONC_DEBUG=1)")
    parser.set_defaults(func=_run_compare)
    return parser
