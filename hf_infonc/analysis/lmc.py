"""Linear mode connectivity of two checkpoints, with accuracy, MIR and HDR along the path (docs/theory.md §5).

Every point ``θ(ω) = (1 - ω)·θ_A + ω·θ_B``, ``ω ∈ linspace(0, 1, points)``, is evaluated on the test split of
A's recipe (arXiv 2406.03999 §5: MIR and HDR follow the accuracy along the path); what is interpolated, what is
checked and what ``lmc.json`` / ``lmc.png`` hold: docs/analysis.md, "Linear mode connectivity".
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from hf_infonc.analysis.common import (
    AnalysisError, check_out, evaluate, evaluation_trainer, find_recipe, finish, finite, load_run, model_state,
    plot_panels, set_model_state,
)

logger = logging.getLogger(__name__)

#: Recipe keys that must agree between the two checkpoints.
ARCHITECTURE_KEYS = ("family", "training_mode")


def check_recipes(recipe_a: Any, recipe_b: Any, name_a: str, name_b: str) -> None:
    """The two recipes build the same kind of model (family, training mode, config/base model)."""
    for key in (*ARCHITECTURE_KEYS, "config", "name_or_path"):
        a, b = getattr(recipe_a.model, key), getattr(recipe_b.model, key)
        if a != b and key in ARCHITECTURE_KEYS:
            raise AnalysisError(
                f"Linear mode connectivity needs two checkpoints of one architecture, but model.{key} differs: "
                f"{a!r} ({name_a}) vs {b!r} ({name_b})."
            )
        if a != b:
            logger.warning("model.%s differs between %s and %s; the state dicts are compared next.", key, name_a,
                           name_b)
    if recipe_a.raw.get("data") != recipe_b.raw.get("data"):
        logger.warning("The data sections of the two recipes differ; evaluating on %s's.", name_a)


def check_same_architecture(state_a: dict[str, torch.Tensor], state_b: dict[str, torch.Tensor], name_a: str = "A",
                            name_b: str = "B") -> None:
    """Same keys, shapes and kinds of dtype; otherwise a ``ValueError`` naming the first mismatching key."""
    different = "The checkpoints have different architectures: first mismatching key"
    for key in [*state_a, *(key for key in state_b if key not in state_a)]:
        if key not in state_a or key not in state_b:
            has, lacks = (name_a, name_b) if key in state_a else (name_b, name_a)
            raise AnalysisError(f"{different} {key!r} is in {has} but not in {lacks}.")
        a, b = state_a[key], state_b[key]
        if a.shape != b.shape:
            raise AnalysisError(
                f"{different} {key!r} has shape {tuple(a.shape)} in {name_a} and {tuple(b.shape)} in {name_b}."
            )
        if a.is_floating_point() != b.is_floating_point():
            raise AnalysisError(f"{key!r}: dtype {a.dtype} in {name_a} but {b.dtype} in {name_b}.")


def interpolate_states(state_a: dict[str, torch.Tensor], state_b: dict[str, torch.Tensor],
                       omega: float) -> dict[str, torch.Tensor]:
    """``(1-ω)·θ_A + ω·θ_B`` for floating-point entries (computed in float32 or wider), A's integer entries."""
    mixed = {}
    for key, a in state_a.items():
        if a.is_floating_point():
            dtype = torch.promote_types(a.dtype, torch.float32)
            a = ((1.0 - omega) * a.to(dtype) + omega * state_b[key].to(dtype)).to(a.dtype)
        mixed[key] = a
    return mixed


def _barrier(omegas: list[float], values: list[float], *, higher_is_better: bool) -> float | None:
    """The largest dip below the line between the end points (rise above it for a loss; Frankle et al. 2020)."""
    if not all(finite(v) for v in values):
        return None
    sign = 1.0 if higher_is_better else -1.0
    return max(sign * ((1 - w) * values[0] + w * values[-1] - v) for w, v in zip(omegas, values))


def linear_mode_connectivity(checkpoint_a: str | Path, checkpoint_b: str | Path, *, points: int = 11,
                             recipe: str | Path | None = None, overrides: list[str] | None = None,
                             out: str | Path | None = None, plot: bool = True, progress: bool = True) -> dict[str, Any]:
    """Evaluate ``points`` models on the segment from A to B; write ``lmc.json`` (and ``lmc.png``) to ``out``.

    ``recipe``/``overrides``: as ``--recipe``/``--set`` on the command line (applied to both
    checkpoints; by default each checkpoint's own ``recipe.yaml``, and A's for the evaluation).
    Returns the JSON document.
    """
    from hf_infonc.factory import load_saved_model
    from hf_infonc.recipe import load_recipe
    from hf_infonc.runs import check_saved_weights

    if isinstance(points, bool) or not isinstance(points, int) or points < 2:
        raise AnalysisError(f"points={points!r}: need an int ≥ 2 (ω = 0 and ω = 1 at least).")
    checkpoint_a, checkpoint_b = Path(checkpoint_a), Path(checkpoint_b)
    for path in (checkpoint_a, checkpoint_b):
        if not path.is_dir():
            raise AnalysisError(f"{path}: not a directory. Pass two output directories of `hf-infonc finetune`.")
    recipe_b = load_recipe(find_recipe(checkpoint_b, recipe), overrides)
    recipe_a = load_recipe(find_recipe(checkpoint_a, recipe), overrides)
    check_recipes(recipe_a, recipe_b, str(checkpoint_a), str(checkpoint_b))
    out = Path(out) if out is not None else checkpoint_a / "analysis" / "lmc"
    check_out(out)

    run = load_run(checkpoint_a, recipe=recipe, overrides=overrides)
    check_saved_weights(checkpoint_b, str(checkpoint_b))
    model_b, _ = load_saved_model(recipe_b, checkpoint_b, run.class_names)
    state_a, state_b = model_state(run.model), model_state(model_b)
    del model_b
    check_same_architecture(state_a, state_b, str(checkpoint_a), str(checkpoint_b))

    trainer = evaluation_trainer(run, out, progress=progress)
    omegas = torch.linspace(0, 1, points, dtype=torch.float64).tolist()
    results = []
    for omega in tqdm(omegas, desc="LMC: ω", disable=not progress):
        set_model_state(trainer, interpolate_states(state_a, state_b, omega))
        metrics = evaluate(trainer).metrics
        results.append({"omega": omega, **metrics})
        logger.info("ω = %.3f: accuracy %.4f, MIR %.4f, HDR %.4f", omega, metrics.get("accuracy", math.nan),
                    metrics.get("mir", math.nan), metrics.get("hdr", math.nan))
    barrier = {key: _barrier(omegas, [r.get(key) for r in results], higher_is_better=key != "loss")
               for key in ("accuracy", "mir", "loss")}
    document = {"checkpoint_a": str(checkpoint_a), "checkpoint_b": str(checkpoint_b), "points": points,
                "barrier": barrier, "results": results}
    return finish(trainer, state_a, run, overrides, document, out, "lmc", plot_lmc if plot else None)


def plot_lmc(document: dict[str, Any], path: str | Path) -> Path:
    """Accuracy, MIR, HDR and loss against ω (dashed: MIR and HDR at neural collapse, docs/theory.md §3)."""
    results = document["results"]
    reference = document.get("collapse") or {}
    panels = [
        ("test accuracy", [("accuracy", "accuracy")], []),
        ("MIR", [("mir", "sample MIR"), ("class_mir", "class-mean MIR")], [(reference.get("mir"), "at collapse")]),
        ("HDR", [("hdr", "sample HDR"), ("class_hdr", "class-mean HDR")], [(reference.get("hdr"), "at collapse")]),
        ("test loss", [("loss", "loss"), ("loss/base", "loss/base")], []),
    ]
    title = f"Linear mode connectivity: A = {document['checkpoint_a']}, B = {document['checkpoint_b']}"
    xs = [r["omega"] for r in results]
    return plot_panels(path, title, "ω  (θ = (1-ω)·θ_A + ω·θ_B)", xs, results, panels)
