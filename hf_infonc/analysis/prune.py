"""Global magnitude pruning, tracked with MIR between the features before and after (docs/theory.md §5).

Each sparsity ``s`` zeroes the fraction ``s`` of smallest ``|w|`` over all prunable weights together, permanently;
MIR/HDR between the features before and after, in batches of 64 (arXiv 2409.16767: MIR stays high up to 90%
sparsity), also relative to ``mir_self = MIR(before, before)``, which is not 1 (docs/theory.md §2.3). What is
prunable and what ``prune.json`` / ``prune.png`` hold: docs/analysis.md, "Magnitude pruning".
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from hf_infonc.analysis.common import (
    AnalysisError, check_out, clear_head_caches, evaluate, evaluation_trainer, finish, load_run, model_state,
    plot_panels, set_model_state,
)

logger = logging.getLogger(__name__)

PRUNABLE_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
SPARSITY_TOLERANCE = 1e-3


def parse_sparsities(text: str | Sequence[float]) -> list[float]:
    """``"0.5,0.9"`` (or a sequence) → ``[0.5, 0.9]``, each in [0, 1]."""
    if isinstance(text, str):
        try:
            values = [float(part) for part in text.split(",") if part.strip()]
        except ValueError as error:
            raise AnalysisError(
                f"--sparsity {text!r}: expected comma-separated numbers in [0, 1], e.g. 0.5,0.9."
            ) from error
    else:
        values = [float(v) for v in text]
    if not values:
        raise AnalysisError("No sparsity given: pass e.g. --sparsity 0.5,0.9.")
    for value in values:
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise AnalysisError(f"sparsity {value} must lie in [0, 1] (the fraction of weights set to zero).")
    return values


def prunable_parameters(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """``(module, name)`` of every prunable weight, each parameter once: the ``weight`` of Linear/Conv modules (also
    inside peft LoRA layers), the input projection of ``nn.MultiheadAttention``; embeddings, norms, biases are kept."""
    found: dict[int, tuple[nn.Module, str]] = {}  # by parameter id: a shared weight is pruned once
    for module in model.modules():
        names = []
        if isinstance(module, PRUNABLE_MODULES):
            names = ["weight"]
        elif isinstance(module, nn.MultiheadAttention):
            separate = ["q_proj_weight", "k_proj_weight", "v_proj_weight"]
            names = ["in_proj_weight"] if module.in_proj_weight is not None else separate
        for name in names:
            if module._parameters.get(name) is not None:
                found.setdefault(id(module._parameters[name]), (module, name))
    return list(found.values())


def global_magnitude_prune(targets: list[tuple[nn.Module, str]], sparsity: float) -> None:
    """Zero the ``sparsity`` fraction of smallest ``|w|`` over all ``targets`` together, permanently."""
    if sparsity <= 0 or not targets:
        return
    from torch.nn.utils import prune

    with torch.no_grad():
        prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=float(sparsity))
        for module, name in targets:
            prune.remove(module, name)


def measured_sparsity(targets: list[tuple[nn.Module, str]]) -> tuple[float, int]:
    """(fraction of exact zeros, number of entries) over the target weights."""
    weights = [getattr(module, name) for module, name in targets]
    zeros, total = sum(int((weight == 0).sum()) for weight in weights), sum(weight.numel() for weight in weights)
    return (zeros / total if total else math.nan), total


def _before_after(before: torch.Tensor, after: torch.Tensor, batch_size: int) -> dict[str, float]:
    from hf_infonc.info import batched_mir_hdr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a 0/0 batch is reported as NaN / skipped
        stats = batched_mir_hdr(before.double(), after.double(), batch_size=batch_size)
    names = {"mir": "mir_before_after", "hdr": "hdr_before_after", "mi": "mi_before_after",
             "head_entropy": "entropy_after"}
    return {name: stats.get(key, math.nan) for key, name in names.items()}


def prune_analysis(checkpoint: str | Path, sparsities: Sequence[float] | str = (0.5, 0.9), *,
                   recipe: str | Path | None = None, overrides: list[str] | None = None, out: str | Path | None = None,
                   batch_size: int = 64, plot: bool = True, progress: bool = True) -> dict[str, Any]:
    """Prune ``checkpoint`` to each sparsity and measure; write ``prune.json`` (and ``prune.png``) to ``out``.

    Returns the JSON document: ``baseline`` (the unpruned model's metrics), ``mir_self``,
    ``results`` (one record per sparsity, in the order given).
    """
    values = parse_sparsities(sparsities)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise AnalysisError(f"--batch-size {batch_size!r}: give a whole number ≥ 1 (the examples per MIR/HDR batch).")
    checkpoint = Path(checkpoint)
    out = Path(out) if out is not None else checkpoint / "analysis" / "prune"
    check_out(out)
    run = load_run(checkpoint, recipe=recipe, overrides=overrides)
    trainer = evaluation_trainer(run, out, progress=progress)
    model = trainer.accelerator.unwrap_model(trainer.model)
    targets = prunable_parameters(model)
    if not targets:
        raise AnalysisError(f"{type(model).__name__} has no Linear/Conv weights to prune.")
    original = model_state(model)
    baseline = evaluate(trainer)
    if baseline.features is None:
        raise AnalysisError("The model's adapter returned no features; MIR before/after pruning needs them.")
    before = baseline.features
    reference = _before_after(before, before, batch_size)
    initial_sparsity, total = measured_sparsity(targets)
    self_mir = reference["mir_before_after"]
    results = []
    for sparsity in tqdm(values, desc="pruning: sparsity", disable=not progress):
        set_model_state(trainer, original)
        global_magnitude_prune(targets, sparsity)
        clear_head_caches(trainer)  # pruning changed the weights after set_model_state cleared them
        achieved, _ = measured_sparsity(targets)
        if abs(achieved - sparsity) > SPARSITY_TOLERANCE:
            logger.warning("Requested sparsity %.4f, achieved %.4f (weights that were already zero: %.4f).", sparsity,
                           achieved, initial_sparsity)
        evaluation = evaluate(trainer)
        record = {"sparsity": sparsity, "achieved_sparsity": achieved, **evaluation.metrics}
        record.update(_before_after(before, evaluation.features, batch_size))
        record["mir_before_after_relative"] = (
            record["mir_before_after"] / self_mir if self_mir and math.isfinite(self_mir) else math.nan
        )
        results.append(record)
        logger.info("sparsity %.3f (achieved %.4f): accuracy %.4f, MIR(before, after) %.4f", sparsity, achieved,
                    record.get("accuracy", math.nan), record["mir_before_after"])
    document = {
        "checkpoint": str(checkpoint),
        "method": "global magnitude (L1Unstructured over all Linear/Conv/MultiheadAttention weights)",
        "batch_size": batch_size, "prunable_tensors": len(targets), "prunable_parameters": total,
        "initial_sparsity": initial_sparsity, "mir_self": self_mir,
        "entropy_before": reference["entropy_after"], "baseline": baseline.metrics, "results": results,
    }
    return finish(trainer, original, run, overrides, document, out, "prune", plot_prune if plot else None)


def plot_prune(document: dict[str, Any], path: str | Path) -> Path:
    """Accuracy, MIR(before, after), MIR/HDR vs head, and HDR(before, after) against the sparsity."""
    results = sorted(document["results"], key=lambda r: r["achieved_sparsity"])
    baseline = document.get("baseline", {})
    panels = [
        ("test accuracy", [("accuracy", "accuracy")], [(baseline.get("accuracy"), "unpruned")]),
        ("MIR(features before, after)", [("mir_before_after", "MIR(before, after)")],
         [(document.get("mir_self"), "MIR(before, before)")]),
        ("features vs head rows", [("mir", "sample MIR"), ("hdr", "sample HDR")],
         [(baseline.get("mir"), "unpruned MIR"), (baseline.get("hdr"), "unpruned HDR")]),
        ("HDR(features before, after)", [("hdr_before_after", "HDR(before, after)")], [(0.0, "0 (identical)")]),
    ]
    xs = [r["achieved_sparsity"] for r in results]
    title = f"Global magnitude pruning of {document['checkpoint']}"
    return plot_panels(path, title, "sparsity (fraction of weights = 0)", xs, results, panels)
