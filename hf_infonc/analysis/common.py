"""Shared pieces of the checkpoint analyses ``hf-infonc analyze lmc`` / ``prune`` (docs/analysis.md, "Options shared").

A saved run is rebuilt as ``hf-infonc finetune`` built it and evaluated by an evaluation-only ``InfoNCTrainer``, so
the numbers are those of ``metrics.json``'s ``after``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hf_infonc.callbacks import SPEED_KEYS
from hf_infonc.errors import UserError
from hf_infonc.factory import load_saved_model
from hf_infonc.files import json_text, write_atomic
from hf_infonc.runs import check_saved_weights

#: A panel: its title, the series ``(key, label)`` of the results, and ``(value, label)`` reference lines.
Panel = tuple[str, list[tuple[str, str]], list[tuple[Any, str]]]


class AnalysisError(UserError):
    """A problem with the analysis' input (checkpoints, recipe, options); the CLI prints it without a traceback."""


@dataclass
class LoadedRun:
    """A saved run rebuilt for evaluation: its :class:`~hf_infonc.recipe.Recipe`, the module handed to the trainer
    (after the training mode: a peft or frozen-CLIP wrapper, …) and the :class:`~hf_infonc.factory.BuiltModel`."""

    run_dir: Path
    recipe: Any
    recipe_path: Path
    model: nn.Module
    built: Any
    datasets: Any
    class_names: list[str]
    eval_collator: Any


def find_recipe(run_dir: str | Path, recipe: str | Path | None = None) -> Path:
    """The recipe of a run: ``recipe`` if given, else ``run_dir/recipe.yaml``, else the parent's
    (a ``checkpoint-N`` folder inside a run directory)."""
    if recipe is not None:
        path = Path(recipe)
        if not path.is_file():
            raise AnalysisError(f"--recipe {path}: file not found.")
        return path
    run_dir = Path(run_dir)
    for candidate in (run_dir / "recipe.yaml", run_dir.parent / "recipe.yaml"):
        if candidate.is_file():
            return candidate
    raise AnalysisError(
        f"{run_dir}: no recipe.yaml in it or its parent folder. Pass the output directory of `hf-infonc finetune` "
        f"(or one of its checkpoint-N folders), or name the recipe with --recipe."
    )


def check_out(out: Path, option: str = "--out") -> None:
    """Refuse an output folder that is a file, or lies under one, before anything is evaluated."""
    for folder in (out, *out.parents):
        if folder.exists() and not folder.is_dir():
            raise AnalysisError(
                f"{option} {out}: {folder} is a file, not a folder. Choose a folder with {option} PATH (it is created)."
            )


def load_run(run_dir: str | Path, *, recipe: str | Path | None = None, overrides: list[str] | None = None) -> LoadedRun:
    """Rebuild a saved run: its recipe (``recipe``/``overrides`` as on the command line), data and model."""
    from hf_infonc.data import build_datasets, class_names as dataset_class_names
    from hf_infonc.finetune import build_collators
    from hf_infonc.recipe import load_recipe

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise AnalysisError(f"{run_dir}: not a directory. Pass the output directory of `hf-infonc finetune`.")
    recipe_path = find_recipe(run_dir, recipe)
    loaded_recipe = load_recipe(recipe_path, overrides)
    datasets = build_datasets(loaded_recipe.data)
    names = dataset_class_names(datasets["train"])
    check_saved_weights(run_dir, str(run_dir))
    model, built = load_saved_model(loaded_recipe, run_dir, names)
    _, eval_collate = build_collators(loaded_recipe, built, datasets)
    return LoadedRun(run_dir, loaded_recipe, recipe_path, model, built, datasets, names, eval_collate)


def evaluation_trainer(run: LoadedRun, output_dir: str | Path, *, progress: bool = True, **overrides: Any):
    """An :class:`~hf_infonc.trainer.InfoNCTrainer` that only evaluates ``run.model`` on the test split;
    ``progress=False`` turns off its evaluation progress bars (else the recipe's ``disable_tqdm`` holds)."""
    from hf_infonc.evaluation import add_information_metrics
    from hf_infonc.trainer import InfoNCTrainer

    args = run.recipe.training_arguments(**{
        "output_dir": str(output_dir), "report_to": [], "save_strategy": "no", "eval_strategy": "no",
        "load_best_model_at_end": False, "push_to_hub": False, **({} if progress else {"disable_tqdm": True}),
        **overrides,
    })
    trainer = InfoNCTrainer(
        model=run.model, args=args, eval_dataset=run.datasets["test"], data_collator=run.eval_collator,
        eval_data_collator=run.eval_collator, processing_class=run.built.processing_class,
        class_names=run.class_names, text_tokenizer=run.built.tokenizer,
    )
    add_information_metrics(trainer, plots=False)
    return trainer


@dataclass
class Evaluation:
    metrics: dict[str, float]
    """accuracy, mir, hdr, class_mir, …, nc1–nc4, loss and its components (no prefix, no timings)."""
    logits: torch.Tensor | None
    features: torch.Tensor | None
    labels: torch.Tensor | None


def evaluate(trainer: Any) -> Evaluation:
    """Predict on the trainer's test split; the metrics and the features that its
    :class:`~hf_infonc.evaluation.InformationMetrics` gathered."""
    output = trainer.predict(trainer.eval_dataset, metric_key_prefix="test")
    names = {key: key.removeprefix("test_") for key in output.metrics}
    metrics = {name: float(output.metrics[key]) for key, name in names.items() if name not in SPEED_KEYS}
    logits = output.predictions[0] if isinstance(output.predictions, (tuple, list)) else output.predictions
    features = getattr(trainer.compute_metrics, "features", None)
    tensors = [None if x is None else torch.as_tensor(x) for x in (logits, features, output.label_ids)]
    return Evaluation(metrics, *tensors)


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of ``model.state_dict()``."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def clear_head_caches(trainer: Any) -> None:
    """Forget the cached CLIP class-prompt heads of the trainer's adapter (after the weights change)."""
    adapter = getattr(trainer, "adapter", None)
    for value in vars(adapter).values() if adapter is not None else ():
        cache = getattr(value, "_cache", None)
        if isinstance(cache, dict):
            cache.clear()


def set_model_state(trainer: Any, state: dict[str, torch.Tensor]) -> None:
    """Load ``state`` into the trainer's model (strictly) and clear the adapter's head caches."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    model.load_state_dict(state, strict=True)
    clear_head_caches(trainer)


def finite(value: Any) -> bool:
    """A real number that is neither NaN nor infinite."""
    return isinstance(value, (int, float)) and math.isfinite(value)


def finish(trainer: Any, state: dict[str, torch.Tensor], run: LoadedRun, overrides: list[str] | None,
           document: dict[str, Any], out: Path, name: str, plot: Callable[[dict, Path], Path] | None) -> dict[str, Any]:
    """Put ``state`` back, end the trainer, add the run's recipe, overrides, classes and values at collapse to
    ``document`` (before its ``results``); write ``out/<name>.json`` and, with a ``plot`` function, ``<name>.png``."""
    from hf_infonc.callbacks import collapse_reference

    set_model_state(trainer, state)
    if hasattr(trainer, "end"):
        trainer.end()
    num_classes = len(run.class_names)
    results = document.pop("results")
    document.update(recipe=str(run.recipe_path), overrides=list(overrides or []), num_classes=num_classes,
                    collapse=collapse_reference(num_classes), results=results)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / f"{name}.json", json_text(document))
    if plot is not None:
        plot(document, out / f"{name}.png")
    return document


def plot_panels(path: str | Path, title: str, xlabel: str, xs: list[float], results: list[dict[str, Any]],
                panels: list[Panel]) -> Path:
    """One row of panels against ``xs``: the finite values of each series and dashed reference lines."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(13, 3.6), layout="constrained")
    FigureCanvasAgg(figure)
    for ax, (panel_title, series, references) in zip(figure.subplots(1, len(panels)), panels):
        for key, label in series:
            pairs = [(x, r.get(key)) for x, r in zip(xs, results) if finite(r.get(key))]
            if pairs:
                ax.plot(*zip(*pairs), marker="o", markersize=3, label=label)
        for value, label in references:
            if finite(value):
                ax.axhline(value, linestyle="--", color="gray", linewidth=1, label=label)
        ax.set(title=panel_title, xlabel=xlabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    figure.suptitle(title, fontsize=9)
    path = Path(path)
    figure.savefig(path, dpi=110)
    return path
