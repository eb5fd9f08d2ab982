"""Run a recipe end to end: data → model → InfoNCTrainer → metrics.json, model, model card.

Used by ``hf-infonc finetune`` and ``scripts/finetune.py``, under ``python``, ``accelerate launch`` and ``torchrun``.
The contract for an existing run in the output folder (decided by :mod:`hf_infonc.runs`), the files written and
Ctrl-C: docs/recipes.md. In multi-process runs the main process alone moves, deletes or writes folders.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from hf_infonc.errors import DataError, OutputDirError, TrainingInterrupted, UserError
from hf_infonc.files import json_safe, json_text, write_atomic
from hf_infonc.recipe import CLIP_FAMILIES, Recipe, RecipeError
from hf_infonc.runs import (
    EVAL_METRICS, STAGING, WEIGHT_PATTERNS, OutputPlan, PreviousRun, check_saved_weights, holds_run, interruption,
    plan_output_dir, set_aside,
)
from hf_infonc.secrets import redact, redact_text

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- outputs


def write_json(path: Path, data: Any, secrets: list[str] = ()) -> None:
    """Strict JSON (``null`` for undefined values), token values redacted, written atomically."""
    write_atomic(path, json_text(redact(json_safe(data), secrets)))


def summary_table(results: dict[str, Any]) -> str:
    """A plain-text table of the headline numbers ``before`` and ``after`` training (or of an ``eval``)."""
    from hf_infonc.card import format_number

    labels = {"accuracy": "accuracy", "mir": "MIR", "hdr": "HDR", "class_mir": "class MIR", "nc1": "NC1",
              "loss": "loss", "loss/cma": "loss/cma", "loss/mi": "loss/mi"}
    columns = [c for c in ("before", "after", "eval") if c in results]
    lines = [f"{'metric':<12}" + "".join(f"{c:>12}" for c in columns)]
    for key, label in labels.items():
        values = [results[c].get(key) for c in columns]
        if any(v is not None for v in values):
            lines.append(f"{label:<12}" + "".join(f"{format_number(v):>12}" for v in values))
    return "\n".join(lines)


def _strip(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    return {k[len(prefix) + 1 :]: v for k, v in metrics.items() if k.startswith(prefix + "_")}


# ---------------------------------------------------------------------------- model and data


def build_collators(recipe: Recipe, built, datasets) -> tuple[Any, Any]:
    """The training and evaluation collators for the recipe's data and the built model's preprocessing."""
    from hf_infonc.data import ImageCaptionCollator, ImageClassificationCollator, TextClassificationCollator
    from hf_infonc.data import build_image_transform

    columns = datasets["train"].column_names
    if "text" in columns:
        collate = TextClassificationCollator(built.tokenizer, max_length=recipe.data.max_length)
        return collate, collate
    train_tf, eval_tf = (build_image_transform(recipe.data, built.image_preprocessing, train=t) for t in (True, False))
    if "caption" in columns and "label" not in columns:
        return tuple(ImageCaptionCollator(tf, built.tokenizer, recipe.data.max_length) for tf in (train_tf, eval_tf))
    return ImageClassificationCollator(train_tf), ImageClassificationCollator(eval_tf)


def check_training_data(recipe: Recipe, datasets: Any, class_names: list[str]) -> None:
    """Checks of the loaded data against the run: labelled training data, class count against the model config."""
    from hf_infonc.data import label_array

    train = datasets["train"]
    if recipe.ssl is None and "label" in train.column_names:
        unlabelled = int((label_array(train) < 0).sum())
        if unlabelled:
            raise DataError(
                f"{recipe.where('data')}: the training split has {unlabelled} example(s) without a label (a "
                f"missing label, or -1). Label or remove them, or train semi-supervised (an ssl: section)."
            )
    config = recipe.model.config or {}
    for key in ("num_labels", "id2label", "label2id"):
        if key in config and recipe.model.family not in CLIP_FAMILIES:
            count = config[key] if key == "num_labels" else len(config[key] or {})
            if count != len(class_names):
                raise RecipeError(
                    f"{recipe.where('model.config.' + key)}: {count} classes, but the data have "
                    f"{len(class_names)} ({class_names[:10]}{' ...' if len(class_names) > 10 else ''}). Remove "
                    f"model.config.{key} (the class count comes from the data) or fix data.class_names."
                )


def _check_saved_recipe(recipe: Recipe, folder: Path) -> None:
    """``--eval-only`` of a saved run rebuilds its model from the given recipe: its model section must match."""
    import yaml

    saved = folder / "recipe.yaml"
    try:
        raw = yaml.safe_load(saved.read_text()) if saved.is_file() else None
    except (yaml.YAMLError, OSError):
        raw = None
    if isinstance(raw, dict) and raw.get("model") != recipe.raw.get("model"):
        raise OutputDirError(
            f"{recipe.where('training.output_dir')}: the model in {folder} was trained from another model section "
            f"({saved}) than {recipe.path}'s. Evaluate it with its own recipe: hf-infonc finetune {saved} --eval-only."
        )


# ---------------------------------------------------------------------------- the run


def run_recipe(
    recipe: Recipe, *, resume: bool = False, overwrite: bool = False, eval_only: bool = False,
    callbacks: list[Any] | None = None,
) -> dict[str, Any]:
    """Fine-tune (or only evaluate) as the recipe says; return the metrics written to ``metrics.json``
    (``eval_metrics.json`` for ``eval_only`` on a folder that holds a run).

    ``callbacks``: extra ``TrainerCallback`` objects. Raises a :class:`~hf_infonc.errors.UserError` for anything
    wrong in the recipe, the data or the output folder (before training whenever it can be known then), and
    :class:`~hf_infonc.errors.TrainingInterrupted` on Ctrl-C.
    """
    from accelerate import PartialState

    from hf_infonc.preflight import check_recipe

    if eval_only and (resume or overwrite):
        raise UserError(
            f"--eval-only evaluates the model saved in {recipe.output_dir} (or the recipe's model when the folder "
            f"holds no run); it never trains, continues or replaces a run. "
            f"Drop --{'resume' if resume else 'overwrite'}."
        )
    if resume and overwrite:
        raise UserError(
            "--resume continues the run in the output folder and --overwrite replaces it: give one of them."
        )
    started = time.perf_counter()
    state = PartialState()
    path = Path(recipe.output_dir)
    # an evaluation pushes nothing, and on a saved run it writes nothing but eval_metrics.json
    overrides = {"push_to_hub": False, **({"report_to": []} if holds_run(path) else {})} if eval_only else {}
    args = check_recipe(recipe, **overrides)  # numbers, precision, arguments, data files, folder: before any download
    plan = plan_output_dir(
        path, recipe.where("training.output_dir"), resume=resume, overwrite=overwrite, eval_only=eval_only
    )
    if plan.mode == "evaluate" and plan.evaluated is not None:
        _check_saved_recipe(recipe, plan.path)
        check_saved_weights(plan.evaluated, recipe.where("training.output_dir"))
    if plan.incomplete:
        state.wait_for_everyone()  # every process has read the folder before the main one renames in it
        if state.is_main_process:
            for folder in plan.incomplete:
                set_aside(folder)
    state.wait_for_everyone()
    previous = PreviousRun(plan.path, state.is_main_process) if plan.mode == "replace" else None
    progress: dict[str, Any] = {"trainer": None, "training": False}
    try:
        return _run(recipe, args, plan, previous, state, started, callbacks or [], eval_only, progress)
    except KeyboardInterrupt as interrupt:
        if isinstance(interrupt, TrainingInterrupted):
            raise
        raise interruption(plan, previous, progress["trainer"], progress["training"]) from None


def _prepare(
    recipe: Recipe, args: Any, plan: OutputPlan, callbacks: list[Any], eval_only: bool, progress: dict[str, Any]
) -> tuple[Any, dict[str, Any]]:
    """The data, the model and the trainer of the run, and its first results (the "before" evaluation, or the
    evaluation of ``--eval-only``)."""
    from transformers import set_seed

    from hf_infonc import factory
    from hf_infonc.data import build_datasets, class_names as dataset_class_names
    from hf_infonc.evaluation import add_information_metrics
    from hf_infonc.trainer import InfoNCTrainer

    evaluating_saved = plan.mode == "evaluate"
    set_seed(recipe.seed)
    # semi-supervised: the labelled subset and the unlabelled pool both come from the full split
    datasets = build_datasets(recipe.data if recipe.ssl is None else dataclasses.replace(recipe.data, shots=None))
    names = dataset_class_names(datasets["train"])
    check_training_data(recipe, datasets, names)
    if evaluating_saved and plan.evaluated is not None:
        _, built = factory.load_saved_model(recipe, plan.evaluated, names)
    else:
        if evaluating_saved:
            logger.warning("%s holds a run but no saved model: evaluating the recipe's model instead.", plan.path)
        built = factory.build_recipe_model(recipe, names)
    train_collate, eval_collate = build_collators(recipe, built, datasets)
    train_dataset, trainer_cls, extra = datasets["train"], InfoNCTrainer, {}
    if recipe.ssl is not None:
        from hf_infonc.semi_supervised import SemiSupervisedTrainer, semi_supervised_training_data

        train_dataset, train_collate = semi_supervised_training_data(recipe, built, datasets)
        trainer_cls, extra = SemiSupervisedTrainer, {"ssl_config": recipe.ssl}
    trainer = progress["trainer"] = trainer_cls(
        model=built.model, args=args, train_dataset=train_dataset, eval_dataset=datasets["test"],
        data_collator=train_collate, eval_data_collator=eval_collate, processing_class=built.processing_class,
        class_names=names, text_tokenizer=built.tokenizer, **extra,
    )
    add_information_metrics(trainer, plots=recipe.analysis.info_dynamics and not eval_only, output_dir=str(plan.path))
    for callback in callbacks:
        trainer.add_callback(callback)
    results: dict[str, Any] = {"recipe": recipe.path, "seed": recipe.seed, "class_names": names}
    if evaluating_saved:
        results["evaluated"] = str(plan.evaluated) if plan.evaluated is not None else "the recipe's model"
        results["eval"] = _strip(trainer.evaluate(metric_key_prefix="eval"), "eval")
        return trainer, results
    if recipe.ssl is not None:
        results["ssl"] = {
            "algorithm": recipe.ssl.algorithm,
            "labeled_examples": len(train_dataset.labeled),
            "unlabeled_examples": len(train_dataset.unlabeled) if train_dataset.unlabeled is not None else 0,
            "info_target": recipe.ssl.info_target,
        }
    results["before"] = _strip(trainer.evaluate(metric_key_prefix="before"), "before")
    return trainer, results


def _run(
    recipe: Recipe, args: Any, plan: OutputPlan, previous: PreviousRun | None, state: Any, started: float,
    callbacks: list[Any], eval_only: bool, progress: dict[str, Any],
) -> dict[str, Any]:
    try:
        trainer, results = _prepare(recipe, args, plan, callbacks, eval_only, progress)
    except BaseException:
        if plan.created and state.is_main_process and plan.path.exists():
            shutil.rmtree(plan.path, ignore_errors=True)
        raise
    try:
        if not eval_only:
            state.wait_for_everyone()  # every process is done with the "before" evaluation
            if previous is not None:
                previous.move_aside()
            if state.is_main_process:
                plan.path.mkdir(parents=True, exist_ok=True)
                write_atomic(plan.path / "recipe.yaml", recipe.to_yaml())
            state.wait_for_everyone()
            progress["training"] = True
            train_output = trainer.train(resume_from_checkpoint=str(plan.checkpoint) if plan.checkpoint else None)
            results["train"] = dict(train_output.metrics)
            results["after"] = _strip(trainer.evaluate(metric_key_prefix="after"), "after")
            save_final_model(trainer, plan.path, state)
        results["wall_time_s"] = round(time.perf_counter() - started, 1)
        results["num_processes"] = state.num_processes
        results = json_safe(results)
        if state.is_main_process:
            _write_outputs(recipe, plan, results)
        state.wait_for_everyone()
    except BaseException:
        if previous is not None and state.is_main_process and not previous.done:
            progress["training"] = False
            previous.restore()
        raise
    if previous is not None:
        previous.discard()  # the new run has written all its outputs
    if recipe.hub.push_to_hub and not eval_only and state.is_main_process:
        from hf_infonc.hub import push_output_dir

        hub, token = recipe.hub, recipe.training.get("hub_token")
        push_output_dir(str(plan.path), repo_id=hub.repo_id, private=hub.private, token=token)
    state.wait_for_everyone()
    if hasattr(trainer, "end"):
        trainer.end()
    return results


def save_final_model(trainer: Any, path: Path, state: Any) -> None:
    """``trainer.save_model`` into a temporary folder inside ``path``, then each file moved into ``path`` with an
    atomic rename: a run killed while saving (or a ``--resume`` of a finished run) never leaves a cut-off model in
    place of a complete one."""
    from hf_infonc.modes import moved_lora_base

    staging = path / STAGING
    if state.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    state.wait_for_everyone()
    try:
        trainer.save_model(str(staging))
        state.wait_for_everyone()
        if state.is_main_process:
            saved = {item.name for item in staging.iterdir()}
            for old in path.iterdir():  # weights of an earlier save in another layout would be loaded instead
                if old.is_file() and old.name not in saved and any(fnmatch(old.name, p) for p in WEIGHT_PATTERNS):
                    old.unlink()
            for item in sorted(staging.iterdir()):
                target = path / item.name
                if item.is_dir() and target.is_dir():
                    shutil.rmtree(target)
                os.replace(item, target)
            moved_lora_base(trainer.model, staging, path)  # a LoRA base saved with the model names its final folder
    finally:
        if state.is_main_process:
            shutil.rmtree(staging, ignore_errors=True)


def _write_outputs(recipe: Recipe, plan: OutputPlan, results: dict[str, Any]) -> None:
    """``metrics.json``, ``recipe.yaml`` and the model card (``eval_metrics.json`` alone for an evaluation of a
    saved run), then the summary on the console."""
    from hf_infonc.card import write_model_card

    secrets = recipe.secrets()
    evaluating_saved = plan.mode == "evaluate"
    written = EVAL_METRICS if evaluating_saved else "metrics.json"
    plan.path.mkdir(parents=True, exist_ok=True)
    write_json(plan.path / written, results, secrets)
    if not evaluating_saved:
        write_atomic(plan.path / "recipe.yaml", recipe.to_yaml())
        try:
            write_model_card(plan.path, recipe, results, secrets=secrets)
        except Exception as error:  # noqa: BLE001 - the trained model and metrics are already saved
            logger.warning(
                "Could not write the model card (%s: %s); the run is otherwise complete.",
                type(error).__name__, redact_text(str(error), secrets),
            )
    took = f"{results['wall_time_s']} s, {results['num_processes']} process(es)"
    print(f"\nhf_infonc: {recipe.path} → {plan.path / written} ({took})")
    if evaluating_saved:
        print(f"evaluated: {results['evaluated']}")
    print(summary_table(results))
