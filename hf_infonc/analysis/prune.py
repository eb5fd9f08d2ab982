"""Global magnitude pruning, tracked with MIR between the features before and after (docs/theory.md §5).

For each requested sparsity ``s`` the fine-tuned model is pruned afresh (from the unpruned
weights): the fraction ``s`` of smallest-magnitude entries over **all** prunable weight matrices
together is set to zero (``torch.nn.utils.prune.global_unstructured`` with ``L1Unstructured``,
made permanent with ``prune.remove``). Prunable: the ``weight`` of every ``nn.Linear`` and
``nn.Conv1d/2d/3d`` (also inside peft LoRA layers), and the ``in_proj_weight`` of
``nn.MultiheadAttention`` (open_clip's attention); embeddings, norms and biases are kept. A
parameter shared by several modules is pruned once.

Measured on the recipe's test split, for each ``s``:

* ``achieved_sparsity``: the fraction of exact zeros among the prunable weights after pruning
  (checked against the request; a warning if they differ by more than 1e-3, e.g. because of
  weights that were already zero);
* ``accuracy``, and the usual sample-level ``mir``/``hdr`` between the features and the head rows
  of the labels (docs/theory.md §2 item 2), class-mean measures, NC1–NC4, loss;
* ``mir_before_after``/``hdr_before_after``/``mi_before_after``: ``K₁ = G(features before
  pruning)``, ``K₂ = G(features after)`` of the same inputs, averaged over consecutive batches of
  64 (docs/theory.md §2.3; arXiv 2409.16767: MIR stays high up to 90% sparsity).

Identical features do **not** give MIR = 1 (docs/theory.md §2.3), so the document also holds
``mir_self = MIR(before, before)`` (the value at sparsity 0) and each result has
``mir_before_after_relative = mir_before_after / mir_self`` (1 at sparsity 0).

Writes ``prune.json`` and ``prune.png``. Command line::

    hf-infonc analyze prune runs/a --sparsity 0.5,0.7,0.9 --out runs/prune
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

from hf_infonc.analysis.common import (
    AnalysisError, clear_head_caches, default_out, evaluate, evaluation_trainer, load_run, model_state, set_model_state,
)
from hf_infonc.analysis.report import plot_panels, progress_bar, save_document

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
    """``(module, name)`` of every prunable weight (see the module doc), each parameter once."""
    seen: set[int] = set()
    found = []
    for module in model.modules():
        names = []
        if isinstance(module, PRUNABLE_MODULES):
            names = ["weight"]
        elif isinstance(module, nn.MultiheadAttention):
            separate = ["q_proj_weight", "k_proj_weight", "v_proj_weight"]
            names = ["in_proj_weight"] if module.in_proj_weight is not None else separate
        for name in names:
            parameter = module._parameters.get(name)
            if parameter is None or id(parameter) in seen:
                continue
            seen.add(id(parameter))
            found.append((module, name))
    return found


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
    zeros = total = 0
    for module, name in targets:
        weight = getattr(module, name)
        zeros += int((weight == 0).sum())
        total += weight.numel()
    return (zeros / total if total else math.nan), total


def _before_after(before: torch.Tensor, after: torch.Tensor, batch_size: int) -> dict[str, float]:
    from hf_infonc.info import batched_mir_hdr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a 0/0 batch is reported as NaN / skipped
        stats = batched_mir_hdr(before.double(), after.double(), batch_size=batch_size)
    return {
        "mir_before_after": stats.get("mir", math.nan),
        "hdr_before_after": stats.get("hdr", math.nan),
        "mi_before_after": stats.get("mi", math.nan),
        "entropy_after": stats.get("head_entropy", math.nan),
    }


def prune_analysis(
    checkpoint: str | Path,
    sparsities: Sequence[float] | str = (0.5, 0.9),
    *,
    recipe: str | Path | None = None,
    overrides: list[str] | None = None,
    out: str | Path | None = None,
    batch_size: int = 64,
    plot: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Prune ``checkpoint`` to each sparsity and measure; write ``prune.json`` (and ``prune.png``) to ``out``.

    Returns the JSON document: ``baseline`` (the unpruned model's metrics), ``mir_self``,
    ``results`` (one record per sparsity, in the order given).
    """
    values = parse_sparsities(sparsities)
    checkpoint = Path(checkpoint)
    out = Path(out) if out is not None else default_out("prune", checkpoint)
    run = load_run(checkpoint, recipe=recipe, overrides=overrides)
    trainer = evaluation_trainer(run, out)
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

    results = []
    for sparsity in progress_bar(values, "pruning: sparsity", progress):
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
        self_mir = reference["mir_before_after"]
        record["mir_before_after_relative"] = (
            record["mir_before_after"] / self_mir if self_mir and math.isfinite(self_mir) else math.nan
        )
        results.append(record)
        logger.info("sparsity %.3f (achieved %.4f): accuracy %.4f, MIR(before, after) %.4f", sparsity, achieved,
                    record.get("accuracy", math.nan), record["mir_before_after"])
    set_model_state(trainer, original)
    if hasattr(trainer, "end"):
        trainer.end()

    from hf_infonc.callbacks import collapse_reference

    document = {
        "checkpoint": str(checkpoint),
        "recipe": str(run.recipe_path),
        "overrides": list(overrides or []),
        "method": "global magnitude (L1Unstructured over all Linear/Conv/MultiheadAttention weights)",
        "batch_size": batch_size,
        "prunable_tensors": len(targets),
        "prunable_parameters": total,
        "initial_sparsity": initial_sparsity,
        "num_classes": len(run.class_names),
        "collapse": collapse_reference(len(run.class_names)),
        "mir_self": reference["mir_before_after"],
        "entropy_before": reference["entropy_after"],
        "baseline": baseline.metrics,
        "results": results,
    }
    save_document(out, "prune", document, plot_prune if plot else None)
    return document


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
