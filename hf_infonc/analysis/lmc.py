"""Linear mode connectivity of two checkpoints, with accuracy, MIR and HDR along the path (SPEC §5).

For two fine-tuned models ``θ_A``, ``θ_B`` of one architecture (the paper: two models trained from
one initialisation, e.g. with different data orders), every point of the segment

    θ(ω) = (1 - ω)·θ_A + ω·θ_B,   ω ∈ linspace(0, 1, points)

is evaluated on the recipe's test split: accuracy, the sample-level MIR/HDR between the features
and the head rows of the labels (batches of 64, SPEC §2 item 2), the class-mean measures, NC1–NC4
and the loss (arXiv 2406.03999 §5: MIR and HDR follow the accuracy along the path).

* Every floating-point entry of the state dict is interpolated (parameters and float buffers);
  integer buffers (position ids, tokenised prompts) are taken from A. ``ω = 0`` and ``ω = 1`` are
  A and B exactly (``1·a + 0·b``), so the end points repeat each run's ``metrics.json``.
* The two checkpoints must share the model family and training mode of their recipes and have the
  same state-dict keys and shapes; otherwise a ``ValueError`` names the first mismatching key.
* Evaluation uses A's recipe (data, prompts, loss weights), or ``recipe=`` for both.
* ``barrier``: ``max_ω [(1-ω)·v(0) + ω·v(1) - v(ω)]`` for accuracy, MIR (a dip below the straight
  line) and ``max_ω [v(ω) - ((1-ω)·v(0) + ω·v(1))]`` for the loss (the usual loss barrier of
  Frankle et al. 2020).

Writes ``lmc.json`` and ``lmc.png``. Command line::

    hf-infonc analyze lmc runs/a runs/b --points 11 --out runs/lmc
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch

from hf_infonc.files import json_text, write_atomic
from hf_infonc.analysis.common import (
    AnalysisError,
    default_out,
    evaluate,
    evaluation_trainer,
    find_recipe,
    load_model,
    load_run,
    model_state,
    set_model_state,
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
            logger.warning("model.%s differs between %s and %s; the state dicts are compared next.", key, name_a, name_b)
    if recipe_a.raw.get("data") != recipe_b.raw.get("data"):
        logger.warning("The data sections of the two recipes differ; evaluating on %s's.", name_a)


def check_same_architecture(state_a: dict[str, torch.Tensor], state_b: dict[str, torch.Tensor], name_a: str = "A",
                            name_b: str = "B") -> None:
    """Same keys, shapes and kinds of dtype; otherwise a ``ValueError`` naming the first mismatching key."""
    for key, a in state_a.items():
        if key not in state_b:
            raise AnalysisError(
                f"The checkpoints have different architectures: first mismatching key {key!r} is in {name_a} but not "
                f"in {name_b}."
            )
        b = state_b[key]
        if a.shape != b.shape:
            raise AnalysisError(
                f"The checkpoints have different architectures: first mismatching key {key!r} has shape "
                f"{tuple(a.shape)} in {name_a} and {tuple(b.shape)} in {name_b}."
            )
        if a.is_floating_point() != b.is_floating_point():
            raise AnalysisError(f"{key!r}: dtype {a.dtype} in {name_a} but {b.dtype} in {name_b}.")
    for key in state_b:
        if key not in state_a:
            raise AnalysisError(
                f"The checkpoints have different architectures: first mismatching key {key!r} is in {name_b} but not "
                f"in {name_a}."
            )


def interpolate_states(state_a: dict[str, torch.Tensor], state_b: dict[str, torch.Tensor], omega: float) -> dict[str, torch.Tensor]:
    """``(1-ω)·θ_A + ω·θ_B`` for floating-point entries (computed in float32 or wider), A's integer entries."""
    mixed = {}
    for key, a in state_a.items():
        if not a.is_floating_point():
            mixed[key] = a
            continue
        b = state_b[key]
        dtype = torch.promote_types(a.dtype, torch.float32)
        mixed[key] = ((1.0 - omega) * a.to(dtype) + omega * b.to(dtype)).to(a.dtype)
    return mixed


def _barrier(omegas: list[float], values: list[float], *, higher_is_better: bool) -> float | None:
    if any(v is None or not math.isfinite(v) for v in values):
        return None
    line = [(1 - w) * values[0] + w * values[-1] for w in omegas]
    gaps = [(ln - v) if higher_is_better else (v - ln) for ln, v in zip(line, values)]
    return max(gaps)


def linear_mode_connectivity(
    checkpoint_a: str | Path,
    checkpoint_b: str | Path,
    *,
    points: int = 11,
    recipe: str | Path | None = None,
    overrides: list[str] | None = None,
    out: str | Path | None = None,
    plot: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate ``points`` models on the segment from A to B; write ``lmc.json`` (and ``lmc.png``) to ``out``.

    ``recipe``/``overrides``: as ``--recipe``/``--set`` on the command line (applied to both
    checkpoints; by default each checkpoint's own ``recipe.yaml``, and A's for the evaluation).
    Returns the JSON document.
    """
    from hf_infonc.recipe import load_recipe

    if isinstance(points, bool) or not isinstance(points, int) or points < 2:
        raise AnalysisError(f"points={points!r}: need an int ≥ 2 (ω = 0 and ω = 1 at least).")
    checkpoint_a, checkpoint_b = Path(checkpoint_a), Path(checkpoint_b)
    for path in (checkpoint_a, checkpoint_b):
        if not path.is_dir():
            raise AnalysisError(f"{path}: not a directory. Pass two output directories of `hf-infonc finetune`.")
    recipe_b = load_recipe(find_recipe(checkpoint_b, recipe), overrides)
    recipe_a = load_recipe(find_recipe(checkpoint_a, recipe), overrides)
    check_recipes(recipe_a, recipe_b, str(checkpoint_a), str(checkpoint_b))
    out = Path(out) if out is not None else default_out("lmc", checkpoint_a)

    run = load_run(checkpoint_a, recipe=recipe, overrides=overrides)
    model_b, _ = load_model(recipe_b, checkpoint_b, run.class_names)
    state_a, state_b = model_state(run.model), model_state(model_b)
    del model_b
    check_same_architecture(state_a, state_b, str(checkpoint_a), str(checkpoint_b))

    trainer = evaluation_trainer(run, out)
    omegas = torch.linspace(0, 1, points, dtype=torch.float64).tolist()
    results = []
    iterator = omegas
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(omegas, desc="LMC: ω")
    for omega in iterator:
        set_model_state(trainer, interpolate_states(state_a, state_b, omega))
        metrics = evaluate(trainer).metrics
        results.append({"omega": omega, **metrics})
        logger.info("ω = %.3f: accuracy %.4f, MIR %.4f, HDR %.4f", omega, metrics.get("accuracy", math.nan),
                    metrics.get("mir", math.nan), metrics.get("hdr", math.nan))
    set_model_state(trainer, state_a)
    if hasattr(trainer, "end"):
        trainer.end()

    from hf_infonc.callbacks import collapse_reference

    series = {key: [r.get(key) for r in results] for key in ("accuracy", "mir", "hdr", "loss")}
    document = {
        "checkpoint_a": str(checkpoint_a),
        "checkpoint_b": str(checkpoint_b),
        "recipe": str(run.recipe_path),
        "overrides": list(overrides or []),
        "points": points,
        "num_classes": len(run.class_names),
        "collapse": collapse_reference(len(run.class_names)),
        "barrier": {
            "accuracy": _barrier(omegas, series["accuracy"], higher_is_better=True),
            "mir": _barrier(omegas, series["mir"], higher_is_better=True),
            "loss": _barrier(omegas, series["loss"], higher_is_better=False),
        },
        "results": results,
    }
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "lmc.json", json_text(document))
    if plot:
        plot_lmc(document, out / "lmc.png")
    return document


def plot_lmc(document: dict[str, Any], path: str | Path) -> Path:
    """Accuracy, MIR, HDR and loss against ω (dashed: MIR and HDR at neural collapse, SPEC §3)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    results = document["results"]
    reference = document.get("collapse") or {}
    omegas = [r["omega"] for r in results]
    figure = Figure(figsize=(13, 3.6), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 4)
    panels = [
        ("test accuracy", [("accuracy", "accuracy")], None),
        ("MIR", [("mir", "sample MIR"), ("class_mir", "class-mean MIR")], reference.get("mir")),
        ("HDR", [("hdr", "sample HDR"), ("class_hdr", "class-mean HDR")], reference.get("hdr")),
        ("test loss", [("loss", "loss"), ("loss/base", "loss/base")], None),
    ]
    for ax, (title, keys, ref) in zip(axes, panels):
        for key, label in keys:
            pairs = [(w, r.get(key)) for w, r in zip(omegas, results)]
            pairs = [(w, v) for w, v in pairs if isinstance(v, (int, float)) and v is not None and math.isfinite(v)]
            if pairs:
                ax.plot(*zip(*pairs), marker="o", markersize=3, label=label)
        if ref is not None:
            ax.axhline(ref, linestyle="--", color="gray", linewidth=1, label="at collapse")
        ax.set_title(title)
        ax.set_xlabel("ω  (θ = (1-ω)·θ_A + ω·θ_B)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    figure.suptitle(f"Linear mode connectivity: A = {document['checkpoint_a']}, B = {document['checkpoint_b']}", fontsize=9)
    path = Path(path)
    figure.savefig(path, dpi=110)
    return path
