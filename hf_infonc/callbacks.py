"""``InfoDynamicsCallback``: the information measures over training, kept as a series and plotted.

The paper's training-dynamics analysis (docs/theory.md §5; arXiv 2406.03999 §5). The files written, the values at
collapse drawn as dashed lines and how ``C`` is found: docs/analysis.md, "Training dynamics".
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from hf_infonc.files import json_text, write_atomic
from hf_infonc.info.collapse import entropy_at_collapse, mir_at_collapse

logger = logging.getLogger(__name__)

JSON_NAME = "info_dynamics.json"
INFO_PLOT_NAME = "info_dynamics.png"
NC_PLOT_NAME = "neural_collapse.png"

#: Metric-name suffixes that describe the run's speed, not the model: not recorded.
SPEED_KEYS = ("runtime", "samples_per_second", "steps_per_second", "model_preparation_time", "jit_compilation_time")
#: Keys of a training log entry that are not loss components.
TRAIN_LOG_SKIP = ("step", "epoch", "learning_rate", "grad_norm", "total_flos")


def _number(value: Any) -> float | None:
    """``float(value)`` for numbers (numpy / torch scalars included) and finite values, else ``None``."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def evaluation_record(metrics: Mapping[str, Any], step: int, epoch: float | None) -> dict[str, Any]:
    """``{"step", "epoch", "split", <measure>: value, …}`` from the metrics of one evaluation; the split is their
    ``metric_key_prefix`` (``eval``, ``before``, ``eval_name`` …)."""
    prefixes = (key[: -len(suffix)] for suffix in ("_runtime", "_loss") for key in metrics if key.endswith(suffix))
    prefix = next(prefixes, "eval")
    record: dict[str, Any] = {"step": int(step), "epoch": None if epoch is None else float(epoch), "split": prefix}
    for key, value in metrics.items():
        name = key.removeprefix(prefix + "_")
        if name not in SPEED_KEYS and name not in ("epoch", "step") and not isinstance(value, bool):
            with contextlib.suppress(TypeError, ValueError):  # a non-numeric entry (InfoNCTrainer logs none)
                record[name] = float(value)  # NaN stays NaN here (null in the JSON)
    return record


def _train_logs(log_history: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The training-loss entries of ``state.log_history`` (those with ``loss``, not the final summary)."""
    entries = []
    for entry in log_history:
        if "loss" in entry and "train_runtime" not in entry:
            numbers = {key: _number(value) for key, value in entry.items() if key not in ("step", "epoch")}
            row = {"step": int(entry.get("step", 0)), "epoch": entry.get("epoch")}
            entries.append({**row, **{key: value for key, value in numbers.items() if value is not None}})
    return entries


def collapse_reference(num_classes: int | None) -> dict[str, float] | None:
    """Values at neural collapse (docs/theory.md §3) for C classes: MIR, HDR, H and NC1–NC4 (0); None if unknown."""
    if num_classes is None or num_classes < 2:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # C = 2: MIR is 0/0 (NaN) at collapse
        mir = float(mir_at_collapse(int(num_classes)))
    reference = {"mir": mir, "hdr": 0.0, "entropy": float(entropy_at_collapse(int(num_classes)))}
    reference.update({f"nc{i}": 0.0 for i in range(1, 5)})
    return {k: (v if math.isfinite(v) else None) for k, v in reference.items()}


def infer_class_names(dataset: Any) -> list[str] | None:
    """Class names from a ``datasets.ClassLabel`` column (``label`` or ``labels``), else ``None``."""
    features = getattr(dataset, "features", None) or {}
    for column in ("label", "labels"):
        names = getattr(features.get(column), "names", None)
        if names:
            return list(names)
    return None


def infer_num_classes(model: Any = None, *datasets: Any) -> int | None:
    """C from the ``ClassLabel`` names of ``datasets``, else the model's class names or head rows."""
    for names in [infer_class_names(dataset) for dataset in datasets] + [getattr(model, "class_names", None)]:
        if isinstance(names, (list, tuple)) and names:
            return len(names)
    if model is None:
        return None
    try:
        from hf_infonc.adapters import adapter_for  # the model families, only when needed

        with torch.no_grad():
            head = adapter_for(model).head_rows(model)
        if head is not None:
            return int(head.shape[0])
    except Exception:  # noqa: BLE001 - an unknown model family simply gives no reference lines
        logger.debug("InfoDynamicsCallback: could not read head rows from %s", type(model).__name__, exc_info=True)
    return None


class InfoDynamicsCallback(TrainerCallback):
    """Record the information and neural-collapse measures at every evaluation (``self.history``); write
    :meth:`payload` as JSON, and the plots.

    Args:
        output_dir: where ``info_dynamics.json`` and the PNG plots go (default: ``args.output_dir``).
        num_classes: C for the reference lines at collapse (default: inferred, docs/analysis.md).
        plot: write the PNG plots (matplotlib, Agg) as well as the JSON.
    """

    def __init__(self, output_dir: str | Path | None = None, num_classes: int | None = None, plot: bool = True) -> None:
        if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2):
            raise ValueError(f"num_classes={num_classes!r} must be an int ≥ 2 (or None to infer it).")
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.num_classes = num_classes
        self.plot = plot
        self.history: list[dict[str, Any]] = []
        self.train_log: list[dict[str, Any]] = []
        self._train_ended = False
        self.written: list[Path] = []

    def on_train_begin(self, args, state, control, **kwargs):
        self._train_ended = False

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not metrics:
            return
        record = evaluation_record(metrics, state.global_step, state.epoch)
        train = _train_logs(state.log_history)
        latest = next((e for e in reversed(train) if e["step"] <= state.global_step), None)
        if latest is not None:
            record["train"] = {k: v for k, v in latest.items() if k not in TRAIN_LOG_SKIP}
        self.history.append(record)
        if self.num_classes is None:
            loaders = (kwargs.get("eval_dataloader"), kwargs.get("train_dataloader"))
            datasets = [getattr(loader, "dataset", None) for loader in loaders]
            self.num_classes = infer_num_classes(kwargs.get("model"), *datasets)
        if self._train_ended and state.is_world_process_zero:
            self.write(self.output_dir or args.output_dir, state)  # e.g. hf-infonc finetune's "after" evaluation

    def on_train_end(self, args, state, control, **kwargs):
        self._train_ended = True
        if state.is_world_process_zero:
            self.write(self.output_dir or args.output_dir, state)

    def payload(self, state: Any = None) -> dict[str, Any]:
        """The JSON document: class count, values at collapse, evaluation records, training-loss log. With
        ``state``, the evaluations of its log history this callback did not see (before a resume) are merged in."""
        evaluations = self.history
        if state is not None:
            self.train_log = _train_logs(state.log_history)
            seen = {(r["step"], r["split"]) for r in self.history}
            logged = [  # evaluations in the Trainer's log: entries with <prefix>_runtime, not train_
                evaluation_record(entry, int(entry.get("step", 0)), entry.get("epoch")) for entry in state.log_history
                if any(k.endswith("_runtime") and not k.startswith("train") for k in entry)
            ]
            earlier = [r for r in logged if (r["step"], r["split"]) not in seen]
            if earlier:
                evaluations = sorted(earlier + self.history, key=lambda r: r["step"])  # stable: own order kept
        return {"num_classes": self.num_classes, "collapse": collapse_reference(self.num_classes),
                "evaluations": evaluations, "train_log": self.train_log}

    def write(self, directory: str | Path, state: Any = None) -> list[Path]:
        """Write ``info_dynamics.json`` (and the plots) into ``directory``; return the paths written."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        document = self.payload(state)
        self.written = [directory / JSON_NAME]
        write_atomic(self.written[0], json_text(document))
        if self.plot and self.history:
            self.written += plot_info_dynamics(document, directory, self.num_classes)
        logger.info("InfoDynamicsCallback: wrote %s", ", ".join(str(p) for p in self.written))
        return self.written


def _series(records: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """The steps and finite values of ``key``."""
    points = [(record["step"], float(value)) for record in records if isinstance(value := record.get(key), (int, float))
              and not isinstance(value, bool) and math.isfinite(value)]
    return [x for x, _ in points], [y for _, y in points]


def _draw(ax, records_by_split: dict[str, list], keys: Sequence[tuple[str, str]], reference: float | None, ref_label: str):
    """One colour per measure; the split with most evaluations as a line, the others (e.g. the
    ``before``/``after`` evaluations of ``hf-infonc finetune``) as markers of the same colour."""
    main = max(records_by_split, key=lambda s: len(records_by_split[s])) if records_by_split else None
    others = [s for s in records_by_split if s != main]
    markers = dict(zip(others, ("s", "D", "^", "v", "P", "X") * (1 + len(others) // 6)))
    labelled: set[str] = set()
    for index, (key, label) in enumerate(keys):
        color = f"C{index}"
        xs, ys = _series(records_by_split.get(main, []), key)
        if xs:
            ax.plot(xs, ys, marker="o", markersize=3, color=color, label=label)
        for split in others:
            xs, ys = _series(records_by_split[split], key)
            if xs:
                name = None if split in labelled else f"{split} evaluation"
                labelled.add(split)
                ax.scatter(xs, ys, marker=markers[split], s=28, color=color, edgecolors="black", linewidths=0.6,
                           label=name, zorder=3)
    if reference is not None and math.isfinite(reference):
        ax.axhline(reference, linestyle="--", color="gray", linewidth=1, label=ref_label)
    if ax.has_data():
        ax.legend(fontsize=7)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)


def plot_info_dynamics(history: Any, path: str | Path, num_classes: int | None = None) -> list[Path]:
    """Plot evaluation records (a :meth:`~InfoDynamicsCallback.payload`, a loaded ``info_dynamics.json``, or a list
    of records with ``step`` and measures); return the paths written (matplotlib's Agg canvas, no pyplot state).

    ``path``: a directory (``info_dynamics.png`` and ``neural_collapse.png`` in it) or a ``.png`` file for the
    information figure (the NC figure beside it as ``<stem>_nc.png``). ``num_classes``: C for the values at
    collapse (default: the document's ``num_classes``).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    if path.suffix.lower() == ".png":
        info_path, nc_path = path, path.with_name(f"{path.stem}_nc.png")
    else:
        info_path, nc_path = path / INFO_PLOT_NAME, path / NC_PLOT_NAME
    info_path.parent.mkdir(parents=True, exist_ok=True)
    document = history if isinstance(history, Mapping) else {"evaluations": history}
    if num_classes is None:
        num_classes = document.get("num_classes")
    reference = collapse_reference(num_classes) or {}
    records, train_log = list(document.get("evaluations", [])), list(document.get("train_log", []))
    by_split: dict[str, list] = {}
    for record in records:
        by_split.setdefault(str(record.get("split", "eval")), []).append(record)
    c_text = f" (C = {num_classes})" if num_classes else ""

    figure = Figure(figsize=(15, 8.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(2, 3).ravel()
    panels = [
        ("test accuracy", [("accuracy", "accuracy")], None, ""),
        ("MIR", [("mir", "sample MIR (features vs head rows)"), ("class_mir", "class-mean MIR")], reference.get("mir"),
         "MIR at collapse"),
        ("HDR", [("hdr", "sample HDR"), ("class_hdr", "class-mean HDR")], reference.get("hdr"), "HDR at collapse (0)"),
        ("matrix entropy H (nats)",
         [("feature_entropy", "H(features)"), ("head_entropy", "H(head rows)"), ("class_mean_entropy", "H(class means)")],
         reference.get("entropy"), "log(C-1) at collapse"),
        ("evaluation loss", [("loss", "loss"), ("loss/base", "loss/base"), ("loss/cma", "loss/cma")], None, ""),
    ]
    for ax, (title, keys, ref, ref_label) in zip(axes, panels):
        _draw(ax, by_split, keys, ref, ref_label)
        ax.set_title(title)
    ax = axes[5]
    components = sorted({k for e in train_log for k in e if k.startswith("loss")})
    for key in components:
        xs, ys = _series(train_log, key)
        if xs:
            ax.plot(xs, ys, label=key, linewidth=1)
    if components:
        ax.legend(fontsize=7)
    ax.set_title("training loss components")
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    figure.suptitle(f"Information dynamics on the evaluation set{c_text}")
    figure.savefig(info_path, dpi=110)

    figure = Figure(figsize=(11, 7.5), layout="constrained")
    FigureCanvasAgg(figure)
    nc_axes = figure.subplots(2, 2).ravel()
    titles = {
        "nc1": "NC1: tr(Σ_W Σ_B⁺)/C",
        "nc2": "NC2: distance of class-mean Gram from simplex ETF",
        "nc3": "NC3: ‖W/‖W‖ − M/‖M‖‖ (self-duality)",
        "nc4": "NC4: disagreement with nearest class centre",
    }
    for ax, (key, title) in zip(nc_axes, titles.items()):
        _draw(ax, by_split, [(key, key.upper())], reference.get(key), "0 at collapse")
        ax.set_title(title, fontsize=10)
    figure.suptitle(f"Neural collapse measures on the evaluation set{c_text}")
    figure.savefig(nc_path, dpi=110)
    return [info_path, nc_path]
