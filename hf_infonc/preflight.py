"""Checks that run before any download or model build (``hf-infonc check`` and the start of ``finetune``).

Everything that can be checked from the recipe and the machine is checked here, so that a
mistake costs seconds, not a data-set download, a model load and a "before" evaluation:

* the training numbers (batch sizes ≥ 1, epochs > 0, learning rate ≥ 0, ``max_steps`` −1 or
  ≥ 1, step intervals > 0, …) that ``TrainingArguments`` accepts but that would crash later or
  silently train nothing (``num_train_epochs: -1`` finishes "successfully" after 0 steps;
  ``max_steps: -5`` silently runs the whole schedule);
* ``fp16``/``bf16`` against the hardware present, with the override that fixes it;
* the :class:`~hf_infonc.trainer.InfoNCTrainingArguments` themselves (built once; their
  ``ValueError`` becomes a :class:`~hf_infonc.recipe.RecipeError` that names the key), and
  the ``report_to`` integrations;
* a push to the Hub asked for while the Hub is offline (it would fail after training);
* local model paths, and the data files and folders of local sources (present, not empty,
  readable; :func:`hf_infonc.data.check_local_files`);
* the output folder: not a file, not under a file, writable, with some free space.

Every failure is a :class:`~hf_infonc.errors.UserError` (exit status 2 on the command line);
no message shows a secret.
"""

from __future__ import annotations

import dataclasses
import errno
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hf_infonc.errors import OutputDirError
from hf_infonc.recipe import Recipe, RecipeError

MIN_FREE_BYTES = 64 * 2**20
"""Below this much free space in the output folder's file system a run is refused (checkpoints fail mid-run)."""


def _where(recipe: Recipe, key: str) -> str:
    return f"{recipe.path or '<recipe>'}: {key}"


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite_at_least(low: float, *, strict: bool = False) -> Callable[[Any], bool]:
    return lambda v: _number(v) and math.isfinite(v) and (v > low if strict else v >= low)


def _fraction(v: Any) -> bool:
    return _number(v) and 0.0 <= v < 1.0


def _strategy(value: Any) -> str:
    return str(getattr(value, "value", value))


# key, check, what it must be, when the key matters (given all the training values)
_NUMBER_RULES: tuple[tuple[str, Callable[[Any], bool], str, Callable[[dict[str, Any]], bool]], ...] = (
    ("per_device_train_batch_size", _finite_at_least(1), "an integer ≥ 1 (examples per device and step)", lambda t: True),
    ("per_device_eval_batch_size", _finite_at_least(1), "an integer ≥ 1 (examples per device and step)", lambda t: True),
    ("gradient_accumulation_steps", _finite_at_least(1), "an integer ≥ 1 (1 = no accumulation)", lambda t: True),
    ("eval_accumulation_steps", lambda v: v is None or _finite_at_least(1)(v), "null or an integer ≥ 1", lambda t: True),
    ("max_steps", lambda v: v == -1 or _finite_at_least(1)(v), "-1 (train for num_train_epochs) or a number of steps ≥ 1",
     lambda t: True),
    ("num_train_epochs", _finite_at_least(0, strict=True), "a number > 0 (it may be fractional, e.g. 0.5)",
     lambda t: not (_number(t.get("max_steps")) and t["max_steps"] > 0)),
    ("learning_rate", _finite_at_least(0), "a finite number ≥ 0", lambda t: True),
    ("weight_decay", _finite_at_least(0), "a finite number ≥ 0", lambda t: True),
    ("warmup_steps", _finite_at_least(0), "≥ 0 (a number of steps, or a fraction < 1 of all steps)", lambda t: True),
    ("max_grad_norm", lambda v: v is None or _finite_at_least(0)(v), "a finite number ≥ 0 (0 turns clipping off)",
     lambda t: True),
    ("adam_beta1", _fraction, "in [0, 1)", lambda t: True),
    ("adam_beta2", _fraction, "in [0, 1)", lambda t: True),
    ("adam_epsilon", _finite_at_least(0), "a finite number ≥ 0", lambda t: True),
    ("label_smoothing_factor", _fraction, "in [0, 1) (0 = no smoothing)", lambda t: True),
    ("logging_steps", _finite_at_least(0, strict=True), "> 0 (steps, or a fraction < 1 of all steps)",
     lambda t: _strategy(t.get("logging_strategy")) == "steps"),
    ("eval_steps", lambda v: v is None or _finite_at_least(0, strict=True)(v), "> 0 (steps, or a fraction < 1 of all steps)",
     lambda t: _strategy(t.get("eval_strategy")) == "steps"),
    ("save_steps", _finite_at_least(0, strict=True), "> 0 (steps, or a fraction < 1 of all steps)",
     lambda t: _strategy(t.get("save_strategy")) == "steps"),
    ("save_total_limit", lambda v: v is None or _finite_at_least(1)(v),
     "null (keep every checkpoint) or ≥ 1; to save no checkpoint use save_strategy: \"no\"", lambda t: True),
    ("eval_delay", _finite_at_least(0), "a number ≥ 0", lambda t: True),
    ("dataloader_num_workers", _finite_at_least(0), "an integer ≥ 0 (0 = load in the main process)", lambda t: True),
)  # fmt: skip


def training_values(recipe: Recipe) -> dict[str, Any]:
    """The recipe's ``training`` values over the defaults of :class:`InfoNCTrainingArguments`."""
    from hf_infonc.trainer import InfoNCTrainingArguments

    fields = dataclasses.fields(InfoNCTrainingArguments)
    defaults = {f.name: f.default for f in fields if f.init and f.default is not dataclasses.MISSING}
    return {**defaults, **recipe.training}


def check_training_numbers(recipe: Recipe) -> None:
    """Refuse the training numbers that would crash later or silently train nothing (see the module docstring)."""
    values = training_values(recipe)
    for key, valid, requirement, applies in _NUMBER_RULES:
        value = values.get(key)
        if applies(values) and not valid(value):
            default = "" if key in recipe.training else " (the default)"
            raise RecipeError(
                f"{_where(recipe, 'training.' + key)}: {value!r}{default} is not allowed; it must be {requirement}. "
                f"Set it in the recipe or with --set training.{key}=<value>."
            )
    if not (isinstance(recipe.seed, int) and 0 <= recipe.seed < 2**32):
        raise RecipeError(f"{_where(recipe, 'seed')}: {recipe.seed!r} must be an integer in [0, 2**32).")


def _accelerator_available() -> bool:
    import torch

    xpu = getattr(torch, "xpu", None)
    return bool(
        torch.cuda.is_available()
        or (xpu is not None and xpu.is_available())
        or (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available())
    )


def check_precision(recipe: Recipe) -> None:
    """``fp16`` needs a GPU; ``bf16`` needs a bfloat16-capable GPU unless ``use_cpu`` (CPU autocast)."""
    values = training_values(recipe)
    use_cpu = bool(values.get("use_cpu"))
    half = next((k for k in ("fp16", "fp16_full_eval") if values.get(k)), None)
    if half is not None and (use_cpu or not _accelerator_available()):
        reason = "training.use_cpu is true" if use_cpu else "no GPU is available on this machine"
        raise RecipeError(
            f"{_where(recipe, 'training.' + half)}: true needs a GPU (float16 mixed precision), but {reason}. Fix: "
            f"--set training.{half}=false (full precision), or bfloat16 on the CPU: --set training.{half}=false "
            f"--set training.bf16=true --set training.use_cpu=true."
        )
    bf16 = next((k for k in ("bf16", "bf16_full_eval") if values.get(k)), None)
    if bf16 is not None and not use_cpu:
        from transformers.utils import is_torch_bf16_gpu_available, is_torch_xla_available

        if not is_torch_bf16_gpu_available() and not is_torch_xla_available():
            found = "a GPU without bfloat16 support" if _accelerator_available() else "no GPU"
            raise RecipeError(
                f"{_where(recipe, 'training.' + bf16)}: true needs a GPU with bfloat16 support (e.g. NVIDIA Ampere or "
                f"newer), and this machine has {found}. Fix: --set training.{bf16}=false (full precision), or "
                f"--set training.use_cpu=true to run in bfloat16 on the CPU."
            )


def _blamed_key(message: str, training: dict[str, Any]) -> str | None:
    """The training key a ``TrainingArguments`` error is about: the one whose value the message starts with
    (``nope is not a valid IntervalStrategy``), else one named in it, else the longest value it quotes."""
    texts = {key: str(getattr(value, "value", value)) for key, value in training.items()}
    texts = {key: text for key, text in texts.items() if len(text) >= 2 and not isinstance(training[key], (bool, dict, list))}
    starting = [key for key, text in texts.items() if message.startswith(text + " ")]
    named = [key for key in training if key in message]
    quoted = sorted((key for key, text in texts.items() if text in message), key=lambda k: -len(texts[k]))
    return next(iter(starting + named + quoted), None)


def build_training_arguments(recipe: Recipe, **overrides: Any):
    """``recipe.training_arguments(**overrides)``, with its errors rephrased as a :class:`RecipeError` naming the key."""
    from hf_infonc.card import redact_text

    try:
        return recipe.training_arguments(**overrides)
    except RecipeError:
        raise
    except (ValueError, TypeError, ImportError) as error:
        message = redact_text(str(error).strip(), recipe.secrets())
        message += "" if message.endswith((".", "!", "?")) else "."
        key = _blamed_key(message, recipe.training)
        fix = f"--set training.{key}=<value>" if key else "--set training.<key>=<value>"
        raise RecipeError(
            f"{_where(recipe, 'training.' + key if key else 'training')}: TrainingArguments refuses it: {message} "
            f"Fix it in the recipe or with {fix}."
        ) from None


def check_reporting(recipe: Recipe, args: Any) -> None:
    """Every ``report_to`` integration is known to transformers and installed here."""
    from transformers.integrations import get_available_reporting_integrations, get_reporting_integration_callbacks

    installed = get_available_reporting_integrations()
    for name in args.report_to or []:
        try:
            get_reporting_integration_callbacks([name])
        except ValueError as error:
            problem = str(error).strip()
        else:
            if name in installed:
                continue
            problem = f"its package is not installed; installed integrations: {installed or 'none'}"
        raise RecipeError(
            f"{_where(recipe, 'training.report_to')}: {name!r} cannot be used ({problem}). Install it, or leave it "
            f"out: --set 'training.report_to=[]'."
        )


def check_hub(recipe: Recipe) -> None:
    """A push to the Hub while the Hub is offline would fail only after training: refuse it now."""
    from hf_infonc.factory import hub_offline

    pushes = {"hub.push_to_hub": recipe.hub.push_to_hub, "training.push_to_hub": recipe.training.get("push_to_hub")}
    for key, wanted in pushes.items():
        if wanted and hub_offline():
            raise RecipeError(
                f"{_where(recipe, key)}: true, but HF_HUB_OFFLINE=1 is set, so the push would fail after training. "
                f"Train without pushing (--set {key}=false) and push later with `hf-infonc push OUTPUT_DIR --repo-id NAME`, "
                f"or unset HF_HUB_OFFLINE."
            )


def check_model_paths(recipe: Recipe) -> None:
    """A model, tokenizer or checkpoint given as an explicit local path (``/…``, ``./…``, ``~/…``) must exist."""
    spec = recipe.model
    paths = {"model.name_or_path": spec.name_or_path, "model.tokenizer": spec.tokenizer, "model.pretrained": spec.pretrained}
    for key, value in paths.items():
        explicit = isinstance(value, str) and value.startswith(("/", "./", "../", "~"))
        if explicit and not Path(value).expanduser().exists():
            raise RecipeError(
                f"{_where(recipe, key)}: {value!r} does not exist (relative paths are relative to {os.getcwd()!r}). "
                f"Point it at the saved model folder or file, or use a Hub id."
            )


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists() or candidate.is_symlink():
            return candidate
    return Path(path.anchor or ".")


def check_output_folder(recipe: Recipe) -> None:
    """``training.output_dir`` can hold a run: not a file, not under a file, writable, with free space.

    The write test creates and removes one temporary file in the folder (or in its nearest existing
    parent), which also catches read-only file systems that ``os.access`` does not see.
    """
    path = Path(recipe.output_dir).expanduser()
    key = _where(recipe, "training.output_dir")
    fix = "choose another folder with --set training.output_dir=PATH"
    if path.exists() and not path.is_dir():
        raise OutputDirError(f"{key}: {str(path)!r} is a file, not a folder; {fix}.")
    existing = _nearest_existing(path)
    if not existing.is_dir():
        raise OutputDirError(f"{key}: {str(path)!r} is inside {str(existing)!r}, which is a file, not a folder; {fix}.")
    try:
        handle, probe = tempfile.mkstemp(prefix=".hf_infonc-write-test-", dir=existing)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        reason = {
            errno.EROFS: "is on a read-only file system",
            errno.ENOSPC: "is on a full disk",
            errno.EACCES: "is not writable (permissions)",
            errno.EPERM: "is not writable (permissions)",
        }.get(error.errno, f"cannot be written ({error.strerror or error})")
        where = "" if existing == path else f" (its nearest existing folder {str(existing)!r})"
        raise OutputDirError(f"{key}: {str(path)!r}{where} {reason}; {fix}.") from None
    free = shutil.disk_usage(existing).free
    if free < MIN_FREE_BYTES:
        raise OutputDirError(
            f"{key}: {str(path)!r} is on a disk with only {free / 2**20:.1f} MiB free (checkpoints and the model need "
            f"more); free some space or {fix}."
        )


def check_recipe(recipe: Recipe) -> Any:
    """Run every check that needs neither the data nor the model; return the built training arguments."""
    check_training_numbers(recipe)
    check_precision(recipe)
    args = build_training_arguments(recipe)
    check_reporting(recipe, args)
    check_hub(recipe)
    check_model_paths(recipe)
    from hf_infonc.data import check_local_files

    check_local_files(recipe.data)
    check_output_folder(recipe)
    return args
