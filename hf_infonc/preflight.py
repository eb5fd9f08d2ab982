"""Checks that run before any download or model build (``hf-infonc check`` and the start of ``finetune``), so
that a mistake costs seconds (the list: docs/recipes.md, "Errors, and what happens to an existing run"). Every
failure is a :class:`~hf_infonc.errors.UserError`; no message shows a secret.
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
from hf_infonc.offline import hub_offline
from hf_infonc.recipe import Recipe, RecipeError

MIN_FREE_BYTES = 64 * 2**20
"""Below this much free space in the output folder's file system a run is refused (checkpoints fail mid-run)."""


# the recipe has converted every value to its field's type (a number, or None where the field allows it)
def _finite_at_least(low: float, *, strict: bool = False) -> Callable[[Any], bool]:
    return lambda v: math.isfinite(v) and (v > low if strict else v >= low)


def _fraction(v: Any) -> bool:
    return 0.0 <= v < 1.0


def _steps(strategy: str) -> Callable[[dict[str, Any]], bool]:
    return lambda t: str(getattr(t.get(strategy), "value", t.get(strategy))) == "steps"


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


_BATCH = "an integer ≥ 1 (examples per device and step)"
_INTERVAL = "> 0 (steps, or a fraction < 1 of all steps)"
# key, check, what it must be, when the key matters (given all the training values; None: always)
_NUMBER_RULES: tuple[tuple[str, Callable[[Any], bool], str, Callable[[dict[str, Any]], bool] | None], ...] = (
    ("per_device_train_batch_size", _finite_at_least(1), _BATCH, None),
    ("per_device_eval_batch_size", _finite_at_least(1), _BATCH, None),
    ("gradient_accumulation_steps", _finite_at_least(1), "an integer ≥ 1 (1 = no accumulation)", None),
    ("eval_accumulation_steps", _optional(_finite_at_least(1)), "null or an integer ≥ 1", None),
    ("max_steps", lambda v: v == -1 or _finite_at_least(1)(v),
     "-1 (train for num_train_epochs) or a number of steps ≥ 1", None),
    ("num_train_epochs", _finite_at_least(0, strict=True), "a number > 0 (it may be fractional, e.g. 0.5)",
     lambda t: t["max_steps"] <= 0),
    ("learning_rate", _finite_at_least(0), "a finite number ≥ 0", None),
    ("weight_decay", _finite_at_least(0), "a finite number ≥ 0", None),
    ("warmup_steps", _finite_at_least(0), "≥ 0 (a number of steps, or a fraction < 1 of all steps)", None),
    ("max_grad_norm", _optional(_finite_at_least(0)), "a finite number ≥ 0 (0 turns clipping off)", None),
    ("adam_beta1", _fraction, "in [0, 1)", None),
    ("adam_beta2", _fraction, "in [0, 1)", None),
    ("adam_epsilon", _finite_at_least(0), "a finite number ≥ 0", None),
    ("label_smoothing_factor", _fraction, "in [0, 1) (0 = no smoothing)", None),
    ("logging_steps", _finite_at_least(0, strict=True), _INTERVAL, _steps("logging_strategy")),
    ("eval_steps", _optional(_finite_at_least(0, strict=True)), _INTERVAL, _steps("eval_strategy")),
    ("save_steps", _finite_at_least(0, strict=True), _INTERVAL, _steps("save_strategy")),
    ("save_total_limit", _optional(_finite_at_least(1)),
     "null (keep every checkpoint) or ≥ 1; to save no checkpoint use save_strategy: \"no\"", None),
    ("eval_delay", _finite_at_least(0), "a number ≥ 0", None),
    ("dataloader_num_workers", _finite_at_least(0), "an integer ≥ 0 (0 = load in the main process)", None),
)  # fmt: skip


def training_values(recipe: Recipe) -> dict[str, Any]:
    """The recipe's ``training`` values over the defaults of :class:`InfoNCTrainingArguments`."""
    from hf_infonc.training_args import InfoNCTrainingArguments

    fields = dataclasses.fields(InfoNCTrainingArguments)
    defaults = {f.name: f.default for f in fields if f.init and f.default is not dataclasses.MISSING}
    return {**defaults, **recipe.training}


def check_training_numbers(recipe: Recipe) -> None:
    """Refuse training numbers that would crash later or silently train nothing (``num_train_epochs: -1``)."""
    values = training_values(recipe)
    for key, valid, requirement, applies in _NUMBER_RULES:
        value = values.get(key)
        if (applies is None or applies(values)) and not valid(value):
            default = "" if key in recipe.training else " (the default)"
            raise RecipeError(
                f"{recipe.where('training.' + key)}: {value!r}{default} is not allowed; it must be {requirement}. "
                f"Set it in the recipe or with --set training.{key}=<value>."
            )
    if not 0 <= recipe.seed < 2**32:
        raise RecipeError(f"{recipe.where('seed')}: {recipe.seed!r} must be an integer in [0, 2**32).")


def _accelerator_available() -> bool:
    from transformers.utils import is_torch_cuda_available, is_torch_mps_available, is_torch_xpu_available

    return is_torch_cuda_available() or is_torch_xpu_available() or is_torch_mps_available()


def check_precision(recipe: Recipe) -> None:
    """``fp16`` needs a GPU; ``bf16`` needs a bfloat16-capable GPU unless ``use_cpu`` (CPU autocast)."""
    values = training_values(recipe)
    use_cpu = bool(values.get("use_cpu"))
    half = next((k for k in ("fp16", "fp16_full_eval") if values.get(k)), None)
    if half is not None and (use_cpu or not _accelerator_available()):
        reason = "training.use_cpu is true" if use_cpu else "no GPU is available on this machine"
        raise RecipeError(
            f"{recipe.where('training.' + half)}: true needs a GPU (float16 mixed precision), but {reason}. Fix: "
            f"--set training.{half}=false (full precision), or bfloat16 on the CPU: --set training.{half}=false "
            f"--set training.bf16=true --set training.use_cpu=true."
        )
    bf16 = next((k for k in ("bf16", "bf16_full_eval") if values.get(k)), None)
    if bf16 is not None and not use_cpu:
        from transformers.utils import is_torch_bf16_gpu_available, is_torch_xla_available

        if not is_torch_bf16_gpu_available() and not is_torch_xla_available():
            found = "a GPU without bfloat16 support" if _accelerator_available() else "no GPU"
            raise RecipeError(
                f"{recipe.where('training.' + bf16)}: true needs a GPU with bfloat16 support (e.g. NVIDIA Ampere or "
                f"newer), and this machine has {found}. Fix: --set training.{bf16}=false (full precision), or "
                f"--set training.use_cpu=true to run in bfloat16 on the CPU."
            )


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
            f"{recipe.where('training.report_to')}: {name!r} cannot be used ({problem}). Install it, or leave it "
            f"out: --set 'training.report_to=[]'."
        )


def check_hub(recipe: Recipe) -> None:
    """A push to the Hub while the Hub is offline would fail only after training: refuse it now."""
    pushes = {"hub.push_to_hub": recipe.hub.push_to_hub, "training.push_to_hub": recipe.training.get("push_to_hub")}
    for key, wanted in pushes.items():
        if wanted and hub_offline():
            raise RecipeError(
                f"{recipe.where(key)}: true, but HF_HUB_OFFLINE=1 is set, so the push would fail after training. "
                f"Train without pushing (--set {key}=false) and push later with "
                f"`hf-infonc push OUTPUT_DIR --repo-id NAME`, or unset HF_HUB_OFFLINE."
            )


def check_model_paths(recipe: Recipe) -> None:
    """A model, tokenizer or checkpoint given as an explicit local path (``/…``, ``./…``, ``~/…``) must exist."""
    spec = recipe.model
    for name in ("name_or_path", "tokenizer", "pretrained"):
        key, value = f"model.{name}", getattr(spec, name)
        explicit = isinstance(value, str) and value.startswith(("/", "./", "../", "~"))
        if explicit and not Path(value).expanduser().exists():
            raise RecipeError(
                f"{recipe.where(key)}: {value!r} does not exist (relative paths are relative to {os.getcwd()!r}). "
                f"Point it at the saved model folder or file, or use a Hub id."
            )


def check_output_folder(recipe: Recipe) -> None:
    """``training.output_dir`` can hold a run: not a file, not under a file, writable (a temporary file, which also
    catches read-only file systems), with free space."""
    path = Path(recipe.output_dir).expanduser()
    key = recipe.where("training.output_dir")
    fix = "choose another folder with --set training.output_dir=PATH"
    if path.exists() and not path.is_dir():
        raise OutputDirError(f"{key}: {str(path)!r} is a file, not a folder; {fix}.")
    existing = next((p for p in (path, *path.parents) if p.exists() or p.is_symlink()), Path(path.anchor or "."))
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


def check_recipe(recipe: Recipe, **overrides: Any) -> Any:
    """Run every check that needs neither the data nor the model; return ``recipe.training_arguments(**overrides)``."""
    check_training_numbers(recipe)
    check_precision(recipe)
    args = recipe.training_arguments(**overrides)
    check_reporting(recipe, args)
    check_hub(recipe)
    check_model_paths(recipe)
    from hf_infonc.data import check_local_files

    check_local_files(recipe.data)
    check_output_folder(recipe)
    return args
