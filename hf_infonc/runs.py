"""A run's output folder: what it holds, what a new run may do with it, and how ``--overwrite``,
``--resume`` and ``--eval-only`` treat an earlier run (the contract: docs/recipes.md).

A checkpoint is *complete* when ``trainer_state.json`` (which the Trainer writes last) parses, a
weights file is present and opens, and no temporary file is left over; ``--resume`` continues from
the newest complete one and sets newer, incomplete ones aside as ``incomplete-checkpoint-N``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from hf_infonc.errors import OutputDirError, TrainingInterrupted

logger = logging.getLogger(__name__)

RUN_MARKERS = ("metrics.json", "model.safetensors", "adapter_model.safetensors", "trainer_state.json")
WEIGHT_FILES = (
    "model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors", "pytorch_model.bin",
    "pytorch_model.bin.index.json", "adapter_model.bin",
)  # fmt: skip
"""Files that hold a saved model's weights (one of them is enough)."""
WEIGHT_PATTERNS = (*WEIGHT_FILES, "model-*-of-*.safetensors", "pytorch_model-*-of-*.bin")
"""The weight files of any layout (one file, or shards with their index), as ``fnmatch`` patterns."""
RUN_FILES = (
    *WEIGHT_FILES, "README.md", "config.json", "recipe.yaml", "training_args.json", "eval_metrics.json",
    "generation_config.json", "adapter_config.json", "preprocessor_config.json", "processor_config.json",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json", "merges.txt",
    "open_clip_config.json", "open_clip_model.safetensors", "open_clip_tokenizer.json",
)
"""Files that a run writes into its folder: a folder holding one of them is replaced only with ``--overwrite``."""
STAGING = ".final-model.tmp"
"""The folder inside a run's folder where the final model is saved before its files are moved in."""
TRAINER_STATE = "trainer_state.json"
"""Written last by ``Trainer._save_checkpoint``: a checkpoint without it was cut off while saving."""
EVAL_METRICS = "eval_metrics.json"
"""What ``--eval-only`` writes into a folder that already holds a run (``metrics.json`` is left alone)."""


def holds_run(path: Path) -> bool:
    """True when ``path`` contains the outputs of an earlier run."""
    return path.is_dir() and (any((path / m).exists() for m in RUN_MARKERS) or any(path.glob("checkpoint-*")))


def _is_temporary(name: str) -> bool:
    suffixes = ("~", ".part", ".partial", ".incomplete")
    return ".tmp" in name or name.startswith(("tmp", ".tmp")) or name.endswith(suffixes)


def checkpoint_problems(folder: Path) -> list[str]:
    """Why ``folder`` (a ``checkpoint-N``) cannot be resumed from; empty when it is complete (module docstring)."""
    problems = []
    leftovers = sorted(p.name for p in folder.iterdir() if _is_temporary(p.name))
    if leftovers:
        problems.append(f"leftover temporary file(s) {leftovers[:3]}")
    try:
        json.loads((folder / TRAINER_STATE).read_text())
    except FileNotFoundError:
        problems.append(f"no {TRAINER_STATE} (the Trainer writes it last)")
    except (ValueError, OSError):
        problems.append(f"{TRAINER_STATE} is cut off")
    problems += weights_problems(folder)
    return problems


def weights_problems(folder: Path) -> list[str]:
    """Why the model weights saved in ``folder`` cannot be loaded (none, or a safetensors file that does not open);
    empty when they can."""
    weights = [folder / name for name in WEIGHT_FILES if (folder / name).is_file()]
    if not weights:
        return ["no model weights"]
    problems = []
    for path in weights:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            try:
                with safe_open(str(path), framework="pt"):
                    pass
            except Exception:  # noqa: BLE001 - any failure to open means the file is cut off or damaged
                problems.append(f"{path.name} is cut off or damaged")
    return problems


def check_saved_weights(folder: Path, where: str) -> None:
    """Refuse to load the model saved in ``folder`` when its weights are missing or damaged (``where`` starts the
    message), naming the file and how to get a complete model back."""
    problems = weights_problems(folder)
    if not problems:
        return
    run = folder.parent if folder.name.startswith("checkpoint-") else folder
    checkpoint = last_complete_checkpoint(run)[0]
    fix = (
        f"Continue the run from its last complete checkpoint ({checkpoint.name}) with `hf-infonc finetune RECIPE "
        f"--resume`, which saves the final model again" if checkpoint is not None and checkpoint != folder
        else "Train the run again (hf-infonc finetune RECIPE --overwrite)"
    )
    raise OutputDirError(f"{where}: the model saved in {folder} cannot be loaded: {'; '.join(problems)}. {fix}.")


def checkpoints(path: Path) -> list[Path]:
    """The ``checkpoint-N`` folders of ``path``, newest (largest N) first."""
    found = [p for p in path.glob("checkpoint-*") if p.is_dir() and p.name.split("-", 1)[1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-", 1)[1]), reverse=True)


def last_complete_checkpoint(path: Path) -> tuple[Path | None, dict[Path, list[str]]]:
    """The newest complete checkpoint of ``path`` and the incomplete ones newer than it (with their problems)."""
    skipped: dict[Path, list[str]] = {}
    for folder in checkpoints(path):
        problems = checkpoint_problems(folder)
        if not problems:
            return folder, skipped
        skipped[folder] = problems
    return None, skipped


def _describe(problems: dict[Path, list[str]]) -> str:
    return "; ".join(f"{folder.name} ({', '.join(reasons)})" for folder, reasons in problems.items())


@dataclasses.dataclass
class OutputPlan:
    """What a run does with its output folder (decided before anything is built)."""

    path: Path
    mode: str
    """``new`` (no run there), ``replace`` (--overwrite of a run), ``resume`` or ``evaluate`` (--eval-only of a run)."""
    checkpoint: Path | None = None
    """``resume``: the checkpoint to continue from."""
    incomplete: list[Path] = dataclasses.field(default_factory=list)
    """``resume``: incomplete checkpoints newer than ``checkpoint``, set aside before training."""
    evaluated: Path | None = None
    """``evaluate``: the folder of the saved model (``None``: it holds none; the recipe's model is evaluated)."""
    created: bool = False
    """The folder did not exist: a failure before training removes it again."""


def plan_output_dir(path: Path, where: str, *, resume: bool, overwrite: bool, eval_only: bool) -> OutputPlan:
    """Decide, changing nothing, what the run does with its output folder; refuse what cannot work (``where`` starts
    the messages)."""
    for leftover in sorted(path.parent.glob(f"{path.name}.previous-*")):
        logger.warning(
            "%s holds a run that an interrupted --overwrite moved aside (the process was killed before it could put it "
            "back). Move it back to %s, or delete it.", leftover, path,
        )
    if eval_only and holds_run(path):
        final = any((path / name).is_file() for name in WEIGHT_FILES)  # else the model of its last checkpoint
        return OutputPlan(path, "evaluate", evaluated=path if final else last_complete_checkpoint(path)[0])
    if resume:
        checkpoint, skipped = last_complete_checkpoint(path)
        if checkpoint is None and not skipped:
            raise OutputDirError(
                f"{where}: --resume was given but {path} has no checkpoint-* folder to resume from (checkpoints "
                f"are saved by save_strategy 'steps' or 'epoch'). Start the run without --resume (with --overwrite if "
                f"the folder holds a run)."
            )
        if checkpoint is None:
            raise OutputDirError(
                f"{where}: --resume found no complete checkpoint in {path}: {_describe(skipped)}. They were cut "
                f"off while saving; start again with --overwrite."
            )
        if skipped:
            logger.warning("Resuming from %s; skipped the incomplete %s.", checkpoint, _describe(skipped))
        return OutputPlan(path, "resume", checkpoint=checkpoint, incomplete=list(skipped))
    clashing = [] if holds_run(path) else [name for name in RUN_FILES if (path / name).exists()]
    if not holds_run(path) and not clashing:
        return OutputPlan(path, "new", created=not path.exists())
    if clashing and (not overwrite or eval_only):
        raise OutputDirError(
            f"{where}: {path} holds no run but files that a run writes ({', '.join(clashing)}), which it would "
            f"replace. Choose another folder with --set training.output_dir=PATH"
            + ("." if eval_only else ", or pass --overwrite to replace the folder's contents.")
        )
    if not overwrite:
        found = [m for m in RUN_MARKERS if (path / m).exists()] + [p.name for p in checkpoints(path)][:3]
        raise OutputDirError(
            f"{where}: {path} already holds a run ({', '.join(found)}). Pass --resume to continue it, --overwrite "
            f"to replace it (the old run is kept until the new one has written all its outputs), --eval-only to "
            f"evaluate its model, or choose another folder with --set training.output_dir=PATH."
        )
    absolute, cwd = path.resolve(), Path.cwd().resolve()
    if absolute == cwd or absolute in cwd.parents:
        raise OutputDirError(
            f"{where}: {path} is the working directory or contains it, so --overwrite cannot move it aside. "
            f"Choose a sub-folder with --set training.output_dir=PATH."
        )
    if not os.access(absolute.parent, os.W_OK | os.X_OK):
        raise OutputDirError(
            f"{where}: --overwrite moves the old run aside inside {absolute.parent}, which is not writable. "
            f"Choose another folder with --set training.output_dir=PATH."
        )
    return OutputPlan(path, "replace")


def set_aside(folder: Path) -> Path:
    """Rename an incomplete ``checkpoint-N`` to ``incomplete-checkpoint-N`` (``-2``, ``-3``, … if taken)."""
    target = folder.with_name(f"incomplete-{folder.name}")
    number = 2
    while target.exists():
        target, number = folder.with_name(f"incomplete-{folder.name}-{number}"), number + 1
    folder.rename(target)
    logger.warning("Renamed the incomplete %s to %s (it cannot be resumed from).", folder, target.name)
    return target


class PreviousRun:
    """The run that ``--overwrite`` replaces: moved aside (a rename in the same parent folder, so it costs no disk
    space) when training starts, deleted once the new run has written all its outputs, put back if the new run fails
    or is interrupted before. Folders are moved by the main process only."""

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
            logger.info(
                "Moved the previous run aside to %s; it is deleted once the new run has written all its outputs.",
                self.aside,
            )

    def restore(self) -> None:
        """Put the previous run back in place, removing the new run's partial outputs (the new run failed or was
        interrupted before it had written all its outputs)."""
        if self.done or self.aside is None:
            return
        self.done = True
        shutil.rmtree(self.folder, ignore_errors=True)
        self.aside.rename(self.folder)
        self.aside.parent.rmdir()
        logger.warning("The new run stopped before it had written all its outputs: the previous run is back in %s.",
                       self.folder)

    def discard(self) -> None:
        """Delete the previous run (the new run has written all its outputs)."""
        if self.done:
            return
        self.done = True
        if self.aside is not None:
            shutil.rmtree(self.aside.parent, ignore_errors=True)
            logger.info("Deleted the previous run (the new run has written all its outputs).")


def interruption(plan: OutputPlan, previous: PreviousRun | None, trainer, training: bool) -> TrainingInterrupted:
    """The :class:`TrainingInterrupted` for Ctrl-C at this point: what is left, and whether ``--resume`` can continue."""
    if plan.mode == "evaluate":
        return TrainingInterrupted(f"the evaluation of {plan.path} was interrupted; nothing in the folder changed.")
    if not training:
        if previous is not None and previous.aside is not None:
            return TrainingInterrupted(
                f"interrupted before the new run had written all its outputs; the previous run is back in "
                f"{plan.path} as it was (the new run's outputs were removed)."
            )
        kept = "nothing was written" if plan.mode in ("new", "replace") else "the folder is as it was"
        return TrainingInterrupted(f"interrupted before training started ({plan.path}: {kept}).")
    step = getattr(getattr(trainer, "state", None), "global_step", None)
    checkpoint = last_complete_checkpoint(plan.path)[0]
    at = f" at step {step}" if step is not None else ""
    if checkpoint is None:
        return TrainingInterrupted(
            f"interrupted{at}, before any checkpoint of {plan.path} was complete, so there is nothing to resume "
            f"from; run again with --overwrite (save_strategy/save_steps set how often checkpoints are saved)."
        )
    message = f"interrupted{at}; {checkpoint} is the last complete checkpoint."
    return TrainingInterrupted(message, resume_from=checkpoint)
