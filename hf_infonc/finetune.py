"""Run a recipe end to end: data → model → InfoNCTrainer → metrics.json, model, model card.

Used by ``hf-infonc finetune`` and ``scripts/finetune.py``; works under ``python``,
``accelerate launch`` (one process, or ``--multi_gpu --num_processes N``) and ``torchrun``.

Before any download or model build, :func:`hf_infonc.preflight.check_recipe` checks the
training numbers, the precision against the hardware, the training arguments, the data files
and the output folder; the data are then checked as they are loaded (labels, texts, images), all
before training. Output folder contract:

* an existing run (``metrics.json``, a checkpoint or saved weights) is refused unless one of:

  - ``--overwrite``: the old run stays in place, untouched, while the data, the model and the
    trainer are built and the "before" evaluation runs; right before training it is moved aside
    (to ``<name>.previous-*`` beside the folder) and deleted once the new run has completed its
    first optimizer step (a batch went through the collator, the forward, the backward and the
    optimizer: the new run works). If anything fails or is interrupted before that, the old run is
    put back in place;
  - ``--resume``: continue from the last *complete* checkpoint (weights and ``trainer_state.json``,
    which the Trainer writes last, readable, with no leftover temporary file); incomplete ones
    after it are named and renamed ``incomplete-checkpoint-N`` so that the Trainer's checkpoint
    rotation never mistakes them for the latest;
  - ``--eval-only``: evaluate the model saved in the folder (the final model, else the last
    complete checkpoint) and write ``eval_metrics.json``; nothing else in the folder changes.
    On a folder without a run, ``--eval-only`` evaluates the recipe's model and writes
    ``metrics.json``, ``recipe.yaml`` and the card as a run does;

* if anything fails before training starts, a folder this run created is removed again;
* ``recipe.yaml`` is written (secrets redacted, atomically) when training starts, so an interrupted
  run can be resumed and analysed; at the end the folder holds the model (safetensors), its
  processor/tokenizer, ``metrics.json`` (strict JSON, ``null`` for undefined values; written
  atomically) and ``README.md``;
* Ctrl-C raises :class:`~hf_infonc.errors.TrainingInterrupted`, which says whether ``--resume``
  can continue. In multi-process runs the main process alone moves or deletes folders, between
  barriers.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from hf_infonc.errors import DataError, OutputDirError, TrainingInterrupted, UserError
from hf_infonc.files import json_safe, json_text, write_atomic
from hf_infonc.recipe import CLIP_FAMILIES, Recipe, RecipeError

logger = logging.getLogger(__name__)

RUN_MARKERS = ("metrics.json", "model.safetensors", "adapter_model.safetensors", "trainer_state.json")
WEIGHT_FILES = (
    "model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors", "pytorch_model.bin",
    "pytorch_model.bin.index.json", "adapter_model.bin",
)  # fmt: skip
"""Files that hold a saved model's weights (one of them is enough)."""
TRAINER_STATE = "trainer_state.json"
"""Written last by ``Trainer._save_checkpoint`` (transformers 5.25 writes a checkpoint file by file, with no
temporary folder), so a checkpoint without it was cut off while saving."""
EVAL_METRICS = "eval_metrics.json"
"""What ``--eval-only`` writes into a folder that already holds a run (``metrics.json`` is left alone)."""
HEAD_ONLY_MODES = ("coop", "linear_probe")
"""Head-only training modes of CLIP models (the saved file holds only the head)."""


# ---------------------------------------------------------------------------- the output folder


def holds_run(path: Path) -> bool:
    """True when ``path`` contains the outputs of an earlier run."""
    if not path.is_dir():
        return False
    return any((path / m).exists() for m in RUN_MARKERS) or any(path.glob("checkpoint-*"))


def _is_temporary(name: str) -> bool:
    return ".tmp" in name or name.startswith(("tmp", ".tmp")) or name.endswith(("~", ".part", ".partial", ".incomplete"))


def checkpoint_problems(folder: Path) -> list[str]:
    """Why ``folder`` (a ``checkpoint-N``) cannot be resumed from; empty when it is complete.

    Complete: ``trainer_state.json`` (written last) parses as JSON, a weights file is present and its
    safetensors header opens, and no temporary file is left over from an interrupted write.
    """
    problems = []
    leftovers = sorted(p.name for p in folder.iterdir() if _is_temporary(p.name))
    if leftovers:
        problems.append(f"leftover temporary file(s) {leftovers[:3]}")
    state = folder / TRAINER_STATE
    if not state.is_file():
        problems.append(f"no {TRAINER_STATE} (the Trainer writes it last)")
    else:
        try:
            json.loads(state.read_text())
        except (ValueError, OSError):
            problems.append(f"{TRAINER_STATE} is cut off")
    weights = [folder / name for name in WEIGHT_FILES if (folder / name).is_file()]
    if not weights:
        problems.append("no model weights")
    for path in weights:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            try:
                with safe_open(str(path), framework="pt"):
                    pass
            except Exception:  # noqa: BLE001 - any failure to open means the file is cut off or damaged
                problems.append(f"{path.name} is cut off or damaged")
    return problems


def _checkpoints(path: Path) -> list[Path]:
    """The ``checkpoint-N`` folders of ``path``, newest (largest N) first."""
    if not path.is_dir():
        return []
    found = [p for p in path.glob("checkpoint-*") if p.is_dir() and p.name.split("-", 1)[1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-", 1)[1]), reverse=True)


def last_complete_checkpoint(path: Path) -> tuple[Path | None, dict[Path, list[str]]]:
    """The newest complete checkpoint of ``path`` and the incomplete ones newer than it (with their problems)."""
    skipped: dict[Path, list[str]] = {}
    for folder in _checkpoints(path):
        problems = checkpoint_problems(folder)
        if not problems:
            return folder, skipped
        skipped[folder] = problems
    return None, skipped


def saved_model_folder(path: Path) -> Path | None:
    """Where the model of the run in ``path`` is: ``path`` itself (final model), else its last complete checkpoint."""
    if any((path / name).is_file() for name in WEIGHT_FILES):
        return path
    return last_complete_checkpoint(path)[0]


def _describe(problems: dict[Path, list[str]]) -> str:
    return "; ".join(f"{folder.name} ({', '.join(reasons)})" for folder, reasons in problems.items())


@dataclasses.dataclass
class OutputPlan:
    """What a run does with its output folder (decided before anything is built; see the module docstring)."""

    path: Path
    mode: str
    """``new`` (no run there), ``replace`` (--overwrite of a run), ``resume`` or ``evaluate`` (--eval-only of a run)."""
    checkpoint: Path | None = None
    """``resume``: the checkpoint to continue from."""
    incomplete: list[Path] = dataclasses.field(default_factory=list)
    """``resume``: incomplete checkpoints newer than ``checkpoint``, set aside before training."""
    evaluated: Path | None = None
    """``evaluate``: the folder of the saved model (``None``: the folder holds no model; the recipe's model is evaluated)."""
    created: bool = False
    """The folder did not exist: a failure before training removes it again."""


def _where(recipe: Recipe) -> str:
    return f"{recipe.path or '<recipe>'}: training.output_dir"


def plan_output_dir(recipe: Recipe, *, resume: bool, overwrite: bool, eval_only: bool) -> OutputPlan:
    """Decide, without changing anything, what the run does with its output folder; refuse what cannot work."""
    path = Path(recipe.output_dir)
    for leftover in sorted(path.parent.glob(f"{path.name}.previous-*")) if path.parent.is_dir() else []:
        logger.warning(
            "%s holds a run that an interrupted --overwrite moved aside (the process was killed before it could put it "
            "back). Move it back to %s, or delete it.", leftover, path,
        )
    created = not path.exists()
    if eval_only:
        if not holds_run(path):
            return OutputPlan(path, "new", created=created)
        return OutputPlan(path, "evaluate", evaluated=saved_model_folder(path))
    if resume:
        checkpoint, skipped = last_complete_checkpoint(path)
        if checkpoint is None:
            if not skipped:
                raise OutputDirError(
                    f"{_where(recipe)}: --resume was given but {path} has no checkpoint-* folder to resume from (checkpoints "
                    f"are saved by save_strategy 'steps' or 'epoch'). Start the run without --resume (with --overwrite if "
                    f"the folder holds a run)."
                )
            raise OutputDirError(
                f"{_where(recipe)}: --resume found no complete checkpoint in {path}: {_describe(skipped)}. They were cut "
                f"off while saving; start again with --overwrite."
            )
        if skipped:
            logger.warning("Resuming from %s; skipped the incomplete %s.", checkpoint, _describe(skipped))
        return OutputPlan(path, "resume", checkpoint=checkpoint, incomplete=list(skipped))
    if not holds_run(path):
        return OutputPlan(path, "new", created=created)
    if not overwrite:
        found = [m for m in RUN_MARKERS if (path / m).exists()] + [p.name for p in _checkpoints(path)][:3]
        raise OutputDirError(
            f"{_where(recipe)}: {path} already holds a run ({', '.join(found)}). Pass --resume to continue it, --overwrite "
            f"to replace it (the old run is kept until the new one has trained a step), --eval-only to evaluate its "
            f"model, or choose another folder with --set training.output_dir=PATH."
        )
    absolute, cwd = path.resolve(), Path.cwd().resolve()
    if absolute == cwd or absolute in cwd.parents:
        raise OutputDirError(
            f"{_where(recipe)}: {path} is the working directory or contains it, so --overwrite cannot move it aside. "
            f"Choose a sub-folder with --set training.output_dir=PATH."
        )
    if not os.access(absolute.parent, os.W_OK | os.X_OK):
        raise OutputDirError(
            f"{_where(recipe)}: --overwrite moves the old run aside inside {absolute.parent}, which is not writable. "
            f"Choose another folder with --set training.output_dir=PATH."
        )
    return OutputPlan(path, "replace")


def _set_aside(folder: Path) -> Path:
    """Rename an incomplete ``checkpoint-N`` to ``incomplete-checkpoint-N`` (``-2``, ``-3``, … if taken)."""
    target = folder.with_name(f"incomplete-{folder.name}")
    number = 2
    while target.exists():
        target, number = folder.with_name(f"incomplete-{folder.name}-{number}"), number + 1
    folder.rename(target)
    logger.warning("Renamed the incomplete %s to %s (it cannot be resumed from).", folder, target.name)
    return target


class PreviousRun:
    """The run that ``--overwrite`` replaces: moved aside when training starts, deleted after its first step,
    put back if the new run fails before. Folders are moved by the main process only."""

    def __init__(self, folder: Path, is_main: bool) -> None:
        self.folder = folder.resolve()
        self.is_main = is_main
        self.aside: Path | None = None
        self.done = False

    def move_aside(self) -> None:
        if self.is_main:
            holder = Path(tempfile.mkdtemp(prefix=f"{self.folder.name}.previous-", dir=self.folder.parent))
            self.aside = holder / self.folder.name
            self.folder.rename(self.aside)
            self.folder.mkdir()
            logger.info("Moved the previous run aside to %s; it is deleted once the new run has trained a step.", self.aside)

    def restore(self) -> None:
        """Put the previous run back in place (the new run failed or was interrupted before its first step)."""
        if self.done or self.aside is None:
            return
        self.done = True
        shutil.rmtree(self.folder, ignore_errors=True)
        self.aside.rename(self.folder)
        self.aside.parent.rmdir()
        logger.warning("The new run stopped before its first training step: the previous run is back in %s.", self.folder)

    def discard(self) -> None:
        if self.done:
            return
        self.done = True
        if self.aside is not None:
            shutil.rmtree(self.aside.parent, ignore_errors=True)
            logger.info("Deleted the previous run (the new run has trained a step).")


def _discard_after_first_step(previous: PreviousRun):
    from transformers import TrainerCallback

    class DiscardPreviousRun(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= 1:
                previous.discard()

    return DiscardPreviousRun()


# ---------------------------------------------------------------------------- outputs


def write_json(path: Path, data: Any, secrets: list[str] = ()) -> None:
    """Strict JSON (``null`` for undefined values), token values redacted, written atomically."""
    from hf_infonc.card import redact

    write_atomic(path, json_text(redact(json_safe(data), secrets)))


def summary_table(metrics: dict[str, dict[str, float]]) -> str:
    """A plain-text table of the headline numbers, before and after training (or of an evaluation)."""
    from hf_infonc.card import format_number

    keys = [
        ("accuracy", "accuracy"), ("mir", "MIR"), ("hdr", "HDR"), ("class_mir", "class MIR"),
        ("nc1", "NC1"), ("loss", "loss"), ("loss/cma", "loss/cma"), ("loss/mi", "loss/mi"),
    ]
    columns = [c for c in ("before", "after", "eval") if c in metrics]
    lines = [f"{'metric':<12}" + "".join(f"{c:>12}" for c in columns)]
    for key, label in keys:
        values = [metrics[c].get(key) for c in columns]
        if all(v is None for v in values):
            continue
        lines.append(f"{label:<12}" + "".join(f"{format_number(v):>12}" for v in values))
    return "\n".join(lines)


def _strip(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    return {k[len(prefix) + 1 :]: v for k, v in metrics.items() if k.startswith(prefix + "_")}


# ---------------------------------------------------------------------------- model and data


def build_collators(recipe: Recipe, built, datasets) -> tuple[Any, Any]:
    """The training and evaluation collators for the recipe's data and the built model's preprocessing."""
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


def apply_recipe_mode(recipe: Recipe, built, class_names: list[str]):
    """Apply the recipe's training mode (LoRA, CoOp, linear probe, or the CLIP classification wrapper)."""
    from hf_infonc.data.prompts import get_templates
    from hf_infonc.modes import CoOpSettings, LoraSettings, apply_training_mode

    spec = recipe.model
    lora = LoraSettings(r=spec.lora.r, alpha=spec.lora.alpha, dropout=spec.lora.dropout, target_modules=spec.lora.target_modules)
    coop = CoOpSettings(n_ctx=spec.coop.n_ctx, init=spec.coop.init)
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


def check_training_data(recipe: Recipe, datasets: Any, class_names: list[str]) -> None:
    """Checks of the loaded data against the run: labelled training data, class count against the model config."""
    from hf_infonc.data import label_array

    train = datasets["train"]
    if recipe.ssl is None and "label" in train.column_names:
        unlabelled = int((label_array(train) < 0).sum())
        if unlabelled:
            raise DataError(
                f"{recipe.path or '<recipe>'}: data: the training split has {unlabelled} example(s) without a label (a "
                f"missing label, or -1). Label or remove them, or train semi-supervised (an ssl: section)."
            )
    config = recipe.model.config or {}
    for key in ("num_labels", "id2label", "label2id"):
        if key in config and recipe.model.family not in CLIP_FAMILIES:
            count = config[key] if key == "num_labels" else len(config[key] or {})
            if count != len(class_names):
                raise RecipeError(
                    f"{recipe.path or '<recipe>'}: model.config.{key}: {count} classes, but the data have "
                    f"{len(class_names)} ({class_names[:10]}{' ...' if len(class_names) > 10 else ''}). Remove "
                    f"model.config.{key} (the class count comes from the data) or fix data.class_names."
                )


def _peft_weights(folder: Path) -> Path | None:
    return next((folder / n for n in ("adapter_model.safetensors", "adapter_model.bin") if (folder / n).is_file()), None)


def _load_head(model, folder: Path) -> None:
    """Load a frozen-CLIP wrapper's saved head (every entry outside ``clip.``) into ``model``."""
    from safetensors.torch import load_file

    path = folder / "model.safetensors"
    if not path.is_file():
        raise OutputDirError(f"{folder}: no model.safetensors with the {type(model).__name__} head in it.")
    state = load_file(str(path))
    expected = model.head_state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise OutputDirError(
            f"{path} does not hold the head of this {type(model).__name__} (missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}); is the recipe the one the run was trained with?"
        )
    for key, value in state.items():
        if expected[key].shape != value.shape:
            raise OutputDirError(
                f"{path}: {key} has shape {tuple(value.shape)}, the model expects {tuple(expected[key].shape)}."
            )
    model.load_state_dict(state, strict=False)


def _load_peft(model, weights: Path) -> None:
    import torch
    from peft import set_peft_model_state_dict

    if weights.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(weights))
    else:  # pragma: no cover - old peft format
        state = torch.load(str(weights), map_location="cpu", weights_only=True)
    result = set_peft_model_state_dict(model, state)
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if unexpected:
        raise OutputDirError(f"{weights}: entries that this LoRA model does not have: {unexpected[:5]}.")


def load_saved_model(recipe: Recipe, folder: str | Path, class_names: list[str]):
    """Rebuild the model of ``recipe`` as :func:`run_recipe` does and load the weights saved in ``folder``
    (a run's output folder or one of its ``checkpoint-N`` folders).

    =========================================  =====================================================
    training mode (recipe)                     what is loaded from the folder
    =========================================  =====================================================
    ``full``, classifier ``linear_probe``      ``from_pretrained(folder)`` of the model's class
                                               (``OpenCLIPModel.from_pretrained`` rebuilds the causal
                                               text mask)
    ``coop``, CLIP ``linear_probe``            the head (``model.safetensors``: context vectors or
                                               probe weights) into the rebuilt frozen-CLIP wrapper
    ``lora``                                   ``adapter_model.safetensors`` into the rebuilt
                                               ``peft`` model (``set_peft_model_state_dict``)
    =========================================  =====================================================

    Returns ``(model for the trainer, BuiltModel)``; the model is in eval mode with no parameter
    requiring gradients (so CLIP class-prompt heads are cached).
    """
    from transformers import set_seed

    from hf_infonc.factory import build_model

    folder = Path(folder)
    spec = recipe.model
    set_seed(recipe.seed)  # the frozen parts of a head-only run are rebuilt exactly as in training
    built = build_model(spec, class_names)
    head_only = spec.family in CLIP_FAMILIES and spec.training_mode in HEAD_ONLY_MODES
    peft_weights = _peft_weights(folder) if spec.training_mode == "lora" else None
    if spec.training_mode == "lora" and peft_weights is None:
        raise OutputDirError(f"{folder}: the recipe trains with LoRA but there is no adapter_model.safetensors here.")
    if not head_only and peft_weights is None:
        if not (folder / "config.json").is_file():
            raise OutputDirError(
                f"{folder}: no saved model (config.json and weights) in it; pass the output directory of "
                f"`hf-infonc finetune` or one of its checkpoint-N folders."
            )
        built.model = type(built.model).from_pretrained(str(folder))
    if spec.family in CLIP_FAMILIES or spec.training_mode != "full":
        built.model = apply_recipe_mode(recipe, built, class_names)
    model = built.model
    if head_only:
        _load_head(model, folder)
    elif peft_weights is not None:
        _load_peft(model, peft_weights)
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model, built


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
            f"{_where(recipe)}: the model in {folder} was trained from another model section ({saved}) than "
            f"{recipe.path}'s. Evaluate it with its own recipe: hf-infonc finetune {saved} --eval-only."
        )


# ---------------------------------------------------------------------------- the run


def run_recipe(
    recipe: Recipe,
    *,
    resume: bool = False,
    overwrite: bool = False,
    eval_only: bool = False,
    callbacks: list[Any] | None = None,
) -> dict[str, Any]:
    """Fine-tune (or only evaluate) as the recipe says; return the metrics written to ``metrics.json``
    (``eval_metrics.json`` for ``eval_only`` on a folder that holds a run).

    ``callbacks`` are extra ``transformers.TrainerCallback`` objects (e.g. for tests or logging).
    Raises a :class:`~hf_infonc.errors.UserError` for anything wrong in the recipe, the data or the
    output folder (before training whenever it can be known then), and
    :class:`~hf_infonc.errors.TrainingInterrupted` on Ctrl-C.
    """
    from accelerate import PartialState

    from hf_infonc.preflight import check_recipe

    if eval_only and (resume or overwrite):
        raise UserError(
            f"--eval-only evaluates the model saved in {recipe.output_dir} (or the recipe's model when the folder holds "
            f"no run); it never trains, continues or replaces a run. Drop --{'resume' if resume else 'overwrite'}."
        )
    if resume and overwrite:
        raise UserError("--resume continues the run in the output folder and --overwrite replaces it: give one of them.")
    started = time.perf_counter()
    state = PartialState()
    check_recipe(recipe)  # numbers, precision, arguments, data files, output folder: before any download or build
    plan = plan_output_dir(recipe, resume=resume, overwrite=overwrite, eval_only=eval_only)
    if plan.mode == "evaluate" and plan.evaluated is not None:
        _check_saved_recipe(recipe, plan.path)
    if plan.incomplete:
        state.wait_for_everyone()  # every process has read the folder before the main one renames in it
        if state.is_main_process:
            for folder in plan.incomplete:
                _set_aside(folder)
    state.wait_for_everyone()
    previous = PreviousRun(plan.path, state.is_main_process) if plan.mode == "replace" else None
    progress: dict[str, Any] = {"trainer": None, "training": False}
    try:
        return _run(recipe, plan, previous, state, started, callbacks or [], eval_only, progress)
    except KeyboardInterrupt as interrupt:
        if isinstance(interrupt, TrainingInterrupted):
            raise
        raise _interrupted(plan, previous, progress) from None


def _interrupted(plan: OutputPlan, previous: PreviousRun | None, progress: dict[str, Any]) -> TrainingInterrupted:
    trainer = progress["trainer"]
    if plan.mode == "evaluate":
        return TrainingInterrupted(f"the evaluation of {plan.path} was interrupted; nothing in the folder changed.")
    if not progress["training"]:
        if previous is not None and previous.aside is not None:
            return TrainingInterrupted(f"interrupted before the first training step; the previous run is back in {plan.path}.")
        kept = "nothing was written" if plan.mode in ("new", "replace") else "the folder is as it was"
        return TrainingInterrupted(f"interrupted before training started ({plan.path}: {kept}).")
    step = getattr(getattr(trainer, "state", None), "global_step", None)
    checkpoint = last_complete_checkpoint(plan.path)[0]
    at = f" at step {step}" if step is not None else ""
    if checkpoint is None:
        return TrainingInterrupted(
            f"interrupted{at}, before any checkpoint of {plan.path} was complete, so there is nothing to resume from; run "
            f"again with --overwrite (save_strategy/save_steps set how often checkpoints are saved)."
        )
    return TrainingInterrupted(f"interrupted{at}; {checkpoint} is the last complete checkpoint.", resume_from=checkpoint)


def _run(
    recipe: Recipe,
    plan: OutputPlan,
    previous: PreviousRun | None,
    state: Any,
    started: float,
    callbacks: list[Any],
    eval_only: bool,
    progress: dict[str, Any],
) -> dict[str, Any]:
    from transformers import set_seed

    from hf_infonc.data import build_datasets, class_names as dataset_class_names
    from hf_infonc.evaluation import add_information_metrics
    from hf_infonc.factory import build_model
    from hf_infonc.preflight import build_training_arguments
    from hf_infonc.trainer import InfoNCTrainer

    output_dir = plan.path
    evaluating_saved = plan.mode == "evaluate"
    secrets = recipe.secrets()
    try:
        set_seed(recipe.seed)
        # semi-supervised: the labelled subset and the unlabelled pool both come from the full split
        datasets = build_datasets(recipe.data if recipe.ssl is None else dataclasses.replace(recipe.data, shots=None))
        names = dataset_class_names(datasets["train"])
        check_training_data(recipe, datasets, names)
        if evaluating_saved and plan.evaluated is not None:
            model, built = load_saved_model(recipe, plan.evaluated, names)
        else:
            if evaluating_saved:
                logger.warning("%s holds a run but no saved model: evaluating the recipe's model instead.", output_dir)
            built = build_model(recipe.model, names)
            if recipe.model.family in CLIP_FAMILIES or recipe.model.training_mode != "full":
                built.model = apply_recipe_mode(recipe, built, names)
            if recipe.model.freeze:
                frozen = freeze_parameters(built.model, recipe.model.freeze)
                logger.info("Froze %d parameters (%s)", frozen, ", ".join(recipe.model.freeze))
            model = built.model
        train_collate, eval_collate = build_collators(recipe, built, datasets)
        train_dataset, trainer_cls, extra = datasets["train"], InfoNCTrainer, {}
        if recipe.ssl is not None:
            from hf_infonc.ssl import SemiSupervisedTrainer, semi_supervised_training_data

            train_dataset, train_collate = semi_supervised_training_data(recipe, built, datasets)
            trainer_cls, extra = SemiSupervisedTrainer, {"ssl_config": recipe.ssl}
        # an evaluation pushes nothing, and on a saved run it writes nothing but eval_metrics.json
        overrides = {"push_to_hub": False, **({"report_to": []} if evaluating_saved else {})} if eval_only else {}
        trainer = trainer_cls(
            model=model,
            args=build_training_arguments(recipe, **overrides),
            train_dataset=train_dataset,
            eval_dataset=datasets["test"],
            data_collator=train_collate,
            eval_data_collator=eval_collate,
            processing_class=built.processing_class,
            class_names=names,
            text_tokenizer=built.tokenizer,
            **extra,
        )
        progress["trainer"] = trainer
        add_information_metrics(trainer, plots=recipe.analysis.info_dynamics and not eval_only, output_dir=str(output_dir))
        for callback in callbacks:
            trainer.add_callback(callback)
        results: dict[str, Any] = {"recipe": recipe.path, "seed": recipe.seed, "class_names": names}
        if evaluating_saved:
            results["evaluated"] = str(plan.evaluated) if plan.evaluated is not None else "the recipe's model"
            results["eval"] = _strip(trainer.evaluate(metric_key_prefix="eval"), "eval")
        else:
            if recipe.ssl is not None:
                results["ssl"] = {
                    "algorithm": recipe.ssl.algorithm,
                    "labeled_examples": len(train_dataset.labeled),
                    "unlabeled_examples": len(train_dataset.unlabeled) if train_dataset.unlabeled is not None else 0,
                    "info_target": recipe.ssl.info_target,
                }
            results["before"] = _strip(trainer.evaluate(metric_key_prefix="before"), "before")
    except BaseException:
        if plan.created and state.is_main_process and output_dir.exists():
            shutil.rmtree(output_dir, ignore_errors=True)
        raise

    if not eval_only:
        state.wait_for_everyone()  # every process is done with the "before" evaluation
        try:
            if previous is not None:
                previous.move_aside()
                trainer.add_callback(_discard_after_first_step(previous))
            if state.is_main_process:
                output_dir.mkdir(parents=True, exist_ok=True)
                write_atomic(output_dir / "recipe.yaml", recipe.to_yaml())
            state.wait_for_everyone()
            progress["training"] = True
            train_output = trainer.train(resume_from_checkpoint=str(plan.checkpoint) if plan.checkpoint else None)
        except BaseException:
            if previous is not None and state.is_main_process and not previous.done:
                progress["training"] = False
                previous.restore()
            raise
        if previous is not None:
            previous.discard()
        results["train"] = dict(train_output.metrics)
        results["after"] = _strip(trainer.evaluate(metric_key_prefix="after"), "after")
        trainer.save_model(str(output_dir))
    results["wall_time_s"] = round(time.perf_counter() - started, 1)
    results["num_processes"] = state.num_processes
    results = json_safe(results)
    if state.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        if evaluating_saved:
            write_json(output_dir / EVAL_METRICS, results, secrets)
        else:
            write_json(output_dir / "metrics.json", results, secrets)
            write_atomic(output_dir / "recipe.yaml", recipe.to_yaml())
            from hf_infonc.card import redact_text, write_model_card

            try:
                write_model_card(output_dir, recipe, results, secrets=secrets)
            except Exception as error:  # noqa: BLE001 - the trained model and metrics are already saved
                logger.warning(
                    "Could not write the model card (%s: %s); the run is otherwise complete.",
                    type(error).__name__, redact_text(str(error), secrets),
                )
        written = EVAL_METRICS if evaluating_saved else "metrics.json"
        took = f"{results['wall_time_s']} s, {state.num_processes} process(es)"
        print(f"\nhf_infonc: {recipe.path} → {output_dir / written} ({took})")
        if evaluating_saved:
            print(f"evaluated: {results['evaluated']}")
        print(summary_table({k: results[k] for k in ("before", "after", "eval") if k in results}))
    if recipe.hub.push_to_hub and not eval_only and state.is_main_process:
        from hf_infonc.card import push_output_dir

        push_output_dir(
            str(output_dir), repo_id=recipe.hub.repo_id, private=recipe.hub.private, token=recipe.training.get("hub_token")
        )
    state.wait_for_everyone()
    trainer.end() if hasattr(trainer, "end") else None
    return results
