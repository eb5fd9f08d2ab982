"""Run a recipe end to end: data → model → InfoNCTrainer → metrics.json, model, model card.

Used by ``hf-infonc finetune`` and ``scripts/finetune.py``; works under ``python``,
``accelerate launch`` (one process, or ``--multi_gpu --num_processes N``) and ``torchrun``.

Output directory contract:

* an existing run (``metrics.json``, a checkpoint or saved weights) is refused unless
  ``--overwrite`` (replace it) or ``--resume`` (continue from its last checkpoint);
* if anything fails before training starts (bad recipe, missing data or model), a directory
  this run created is removed again, so no half-written output is left behind;
* at the end it holds the model (safetensors), its processor/tokenizer, ``metrics.json``
  (before/after accuracy, MIR, HDR, NC measures, losses, wall time, seed) and ``README.md``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any

from hf_infonc.recipe import CLIP_FAMILIES, Recipe, RecipeError

logger = logging.getLogger(__name__)

RUN_MARKERS = ("metrics.json", "model.safetensors", "adapter_model.safetensors", "trainer_state.json")


def holds_run(path: Path) -> bool:
    """True when ``path`` contains the outputs of an earlier run."""
    if not path.is_dir():
        return False
    return any((path / m).exists() for m in RUN_MARKERS) or any(path.glob("checkpoint-*"))


def prepare_output_dir(path: Path, *, resume: bool, overwrite: bool, is_main: bool) -> str | None:
    """Apply the output-directory contract; return the checkpoint to resume from (or None)."""
    from transformers.trainer_utils import get_last_checkpoint

    if resume:
        checkpoint = get_last_checkpoint(str(path)) if path.is_dir() else None
        if checkpoint is None:
            raise RecipeError(f"{path}: --resume was given but there is no checkpoint-* folder to resume from.")
        return checkpoint
    if holds_run(path):
        if not overwrite:
            raise RecipeError(
                f"{path} already holds a run. Pass --overwrite to replace it, --resume to continue it, or choose "
                f"another directory with --set training.output_dir=..."
            )
        if is_main:
            shutil.rmtree(path)
    return None


def _collators(recipe: Recipe, built, datasets) -> tuple[Any, Any]:
    from hf_infonc.data import (
        ImageCaptionCollator,
        ImageClassificationCollator,
        TextClassificationCollator,
        build_image_transform,
    )

    train_columns = datasets["train"].column_names
    if "text" in train_columns:
        collate = TextClassificationCollator(built.tokenizer, max_length=recipe.data.max_length)
        return collate, collate
    train_tf = build_image_transform(recipe.data, built.image_preprocessing, train=True)
    eval_tf = build_image_transform(recipe.data, built.image_preprocessing, train=False)
    if "caption" in train_columns and "label" not in train_columns:
        return (
            ImageCaptionCollator(train_tf, built.tokenizer, max_length=recipe.data.max_length),
            ImageCaptionCollator(eval_tf, built.tokenizer, max_length=recipe.data.max_length),
        )
    return ImageClassificationCollator(train_tf), ImageClassificationCollator(eval_tf)


def _apply_mode(recipe: Recipe, built, class_names: list[str]):
    from hf_infonc.modes import CoOpSettings, LoraSettings, apply_training_mode

    spec = recipe.model
    lora = LoraSettings(r=spec.lora.r, alpha=spec.lora.alpha, dropout=spec.lora.dropout, target_modules=spec.lora.target_modules)
    coop = CoOpSettings(n_ctx=spec.coop.n_ctx, init=spec.coop.init)
    from hf_infonc.data.prompts import get_templates

    return apply_training_mode(
        built.model,
        spec.training_mode,
        lora=lora,
        coop=coop,
        class_names=class_names,
        tokenizer=built.tokenizer,
        templates=get_templates(recipe.data.prompt_templates),
    )


def freeze_parameters(model, prefixes: list[str]) -> int:
    """Set ``requires_grad=False`` on parameters whose name starts with one of ``prefixes``."""
    names = [name for name, _ in model.named_parameters()]
    frozen = 0
    for prefix in prefixes:
        matched = [n for n in names if n.startswith(prefix)]
        if not matched:
            roots = sorted({n.split(".")[0] for n in names})
            raise RecipeError(f"model.freeze: no parameter name starts with '{prefix}' (top-level modules: {roots}).")
        for name, parameter in model.named_parameters():
            if name in matched:
                parameter.requires_grad_(False)
                frozen += parameter.numel()
    return frozen


def summary_table(metrics: dict[str, dict[str, float]]) -> str:
    """A plain-text table of the headline numbers, before and after training."""
    keys = [
        ("accuracy", "accuracy"), ("mir", "MIR"), ("hdr", "HDR"), ("class_mir", "class MIR"),
        ("nc1", "NC1"), ("loss", "loss"), ("loss/cma", "loss/cma"), ("loss/mi", "loss/mi"),
    ]
    columns = [c for c in ("before", "after") if c in metrics]
    lines = [f"{'metric':<12}" + "".join(f"{c:>12}" for c in columns)]
    for key, label in keys:
        values = [metrics[c].get(key) for c in columns]
        if all(v is None for v in values):
            continue
        cells = "".join(f"{v:>12.4f}" if isinstance(v, (int, float)) and not math.isnan(v) else f"{'—':>12}" for v in values)
        lines.append(f"{label:<12}{cells}")
    return "\n".join(lines)


def _strip(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    return {k[len(prefix) + 1 :]: v for k, v in metrics.items() if k.startswith(prefix + "_")}


def run_recipe(
    recipe: Recipe,
    *,
    resume: bool = False,
    overwrite: bool = False,
    eval_only: bool = False,
    callbacks: list[Any] | None = None,
) -> dict[str, Any]:
    """Fine-tune (or only evaluate) as the recipe says; return the metrics written to metrics.json.

    ``callbacks`` are extra ``transformers.TrainerCallback`` objects (e.g. for tests or logging).
    """
    from accelerate import PartialState
    from transformers import set_seed

    from hf_infonc.data import build_datasets, class_names as dataset_class_names
    from hf_infonc.evaluation import build_compute_metrics
    from hf_infonc.factory import build_model
    from hf_infonc.trainer import InfoNCTrainer

    started = time.perf_counter()
    state = PartialState()
    output_dir = Path(recipe.output_dir)
    existed = output_dir.exists()
    checkpoint = prepare_output_dir(output_dir, resume=resume, overwrite=overwrite, is_main=state.is_main_process)
    state.wait_for_everyone()
    try:
        set_seed(recipe.seed)
        # semi-supervised: the labelled subset and the unlabelled pool both come from the full split
        datasets = build_datasets(recipe.data if recipe.ssl is None else dataclasses.replace(recipe.data, shots=None))
        names = dataset_class_names(datasets["train"])
        built = build_model(recipe.model, names)
        if recipe.model.family in CLIP_FAMILIES or recipe.model.training_mode != "full":
            built.model = _apply_mode(recipe, built, names)
        if recipe.model.freeze:
            frozen = freeze_parameters(built.model, recipe.model.freeze)
            logger.info("Froze %d parameters (%s)", frozen, ", ".join(recipe.model.freeze))
        train_collate, eval_collate = _collators(recipe, built, datasets)
        train_dataset, trainer_cls, extra = datasets["train"], InfoNCTrainer, {}
        if recipe.ssl is not None:
            from hf_infonc.ssl import SemiSupervisedTrainer, semi_supervised_training_data

            train_dataset, train_collate = semi_supervised_training_data(recipe, built, datasets)
            trainer_cls, extra = SemiSupervisedTrainer, {"ssl_config": recipe.ssl}
        args = recipe.training_arguments()
        trainer = trainer_cls(
            model=built.model,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=datasets["test"],
            data_collator=train_collate,
            eval_data_collator=eval_collate,
            processing_class=built.processing_class,
            class_names=names,
            text_tokenizer=built.tokenizer,
            **extra,
        )
        trainer.compute_metrics = build_compute_metrics(trainer)
        for callback in callbacks or []:
            trainer.add_callback(callback)
        if recipe.analysis.info_dynamics:
            from hf_infonc.callbacks import InfoDynamicsCallback

            trainer.add_callback(InfoDynamicsCallback(output_dir=str(output_dir)))
    except BaseException:
        if not existed and state.is_main_process and output_dir.exists() and not resume:
            shutil.rmtree(output_dir, ignore_errors=True)
        raise

    results: dict[str, Any] = {"recipe": recipe.path, "seed": recipe.seed, "class_names": names}
    if recipe.ssl is not None:
        results["ssl"] = {
            "algorithm": recipe.ssl.algorithm,
            "labeled_examples": len(train_dataset.labeled),
            "unlabeled_examples": len(train_dataset.unlabeled) if train_dataset.unlabeled is not None else 0,
            "info_target": recipe.ssl.info_target,
        }
    results["before"] = _strip(trainer.evaluate(metric_key_prefix="before"), "before")
    if not eval_only:
        train_output = trainer.train(resume_from_checkpoint=checkpoint)
        results["train"] = dict(train_output.metrics)
        results["after"] = _strip(trainer.evaluate(metric_key_prefix="after"), "after")
        trainer.save_model(str(output_dir))
    results["wall_time_s"] = round(time.perf_counter() - started, 1)
    results["num_processes"] = state.num_processes
    if state.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "metrics.json").write_text(json.dumps(results, indent=2, default=float))
        (output_dir / "recipe.yaml").write_text(recipe.to_yaml())
        from hf_infonc.card import write_model_card

        try:
            write_model_card(output_dir, recipe, results)
        except Exception as error:  # the trained model and metrics are already saved
            logger.warning("Could not write the model card (%s: %s); the run is otherwise complete.", type(error).__name__, error)
        print(f"\nhf_infonc: {recipe.path} → {output_dir} ({results['wall_time_s']} s, {state.num_processes} process(es))")
        print(summary_table({k: results[k] for k in ("before", "after") if k in results}))
    if recipe.hub.push_to_hub and not eval_only and state.is_main_process:
        from hf_infonc.card import push_output_dir

        push_output_dir(
            str(output_dir), repo_id=recipe.hub.repo_id, private=recipe.hub.private, token=recipe.training.get("hub_token")
        )
    state.wait_for_everyone()
    trainer.end() if hasattr(trainer, "end") else None
    return results
