"""Shared pieces of the checkpoint analyses (``hf-infonc analyze lmc`` / ``prune``).

A *run directory* is what ``hf-infonc finetune`` writes (``recipe.yaml``, the saved model, its
tokenizer/processor, ``metrics.json``); a ``checkpoint-N`` folder inside it works too (its recipe
is the parent's ``recipe.yaml``), and any folder does with ``--recipe``.

:func:`load_run` rebuilds the model exactly as ``run_recipe`` built it (same recipe, seed, data,
class names and training mode) and then loads the saved weights with
:func:`hf_infonc.factory.load_saved_model` (as ``hf-infonc finetune --eval-only`` does):
``from_pretrained`` for full models, the head for CoOp and CLIP linear probes, the adapter for LoRA.

:func:`evaluation_trainer` then wraps the model in an :class:`~hf_infonc.trainer.InfoNCTrainer`
for evaluation only (the recipe's training arguments with ``output_dir`` replaced and saving,
reporting and periodic evaluation switched off), so the numbers are those of
``hf-infonc finetune`` (``metrics.json``'s ``after``): accuracy, the paper's sample-level MIR/HDR
(batches of 64, docs/theory.md §2 item 2), the class-mean measures, NC1–NC4, and the loss with its
components. The analyses are single-process tools.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hf_infonc.callbacks import SPEED_KEYS
from hf_infonc.errors import UserError
from hf_infonc.factory import load_saved_model


class AnalysisError(UserError):
    """A problem with the analysis' input (checkpoints, recipe, options); the CLI prints it without a traceback."""


@dataclass
class LoadedRun:
    """A saved run rebuilt for evaluation."""

    run_dir: Path
    recipe: Any
    """The :class:`~hf_infonc.recipe.Recipe` the model and data were built from."""
    recipe_path: Path
    model: nn.Module
    """The module handed to the trainer (after the training mode: a peft or frozen-CLIP wrapper, …)."""
    built: Any
    """The :class:`~hf_infonc.factory.BuiltModel` (tokenizer, processing class, image preprocessing)."""
    datasets: Any
    class_names: list[str]
    eval_collator: Any

    @property
    def test_dataset(self) -> Any:
        return self.datasets["test"]


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
    model, built = load_saved_model(loaded_recipe, run_dir, names)
    _, eval_collate = build_collators(loaded_recipe, built, datasets)
    return LoadedRun(run_dir, loaded_recipe, recipe_path, model, built, datasets, names, eval_collate)


def evaluation_trainer(run: LoadedRun, output_dir: str | Path, **overrides: Any):
    """An :class:`~hf_infonc.trainer.InfoNCTrainer` that only evaluates ``run.model`` on the test split."""
    from hf_infonc.evaluation import add_information_metrics
    from hf_infonc.trainer import InfoNCTrainer

    args = run.recipe.training_arguments(**{
        "output_dir": str(output_dir), "report_to": [], "save_strategy": "no", "eval_strategy": "no",
        "load_best_model_at_end": False, "push_to_hub": False, **overrides,
    })
    trainer = InfoNCTrainer(
        model=run.model, args=args, eval_dataset=run.test_dataset, data_collator=run.eval_collator,
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


def evaluate(trainer: Any, dataset: Any = None) -> Evaluation:
    """Predict on ``dataset`` (default: the trainer's test split) and return the metrics and features
    (those the trainer's :class:`~hf_infonc.evaluation.InformationMetrics` gathered)."""
    dataset = trainer.eval_dataset if dataset is None else dataset
    output = trainer.predict(dataset, metric_key_prefix="test")
    metrics = {}
    for key, value in output.metrics.items():
        name = key[len("test_") :] if key.startswith("test_") else key
        if name not in SPEED_KEYS:
            metrics[name] = float(value)
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


def default_out(name: str, *paths: str | Path) -> Path:
    """``<first checkpoint>/analysis/<name>`` as the default output folder."""
    return Path(paths[0]) / "analysis" / name
