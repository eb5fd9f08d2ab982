"""Training modes: which parameters train, and how (full fine-tuning, LoRA, linear probe, CoOp).

``apply_training_mode(model, mode, ...)`` returns the module to hand to ``InfoNCTrainer``; the modes per model kind
and the default LoRA targets: docs/adapters.md, "Training modes". Where a LoRA adapter finds its base
(:func:`base_model_reference`), and a base saved beside its adapter: docs/hub.md, "LoRA".
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hf_infonc.files import json_text, write_atomic
from hf_infonc.local_models import hub_id
from hf_infonc.mode_settings import HEAD_ONLY_MODES, TRAINING_MODES, CoOpSettings, LoraSettings, TrainingMode

HF_CLIP_LORA_TARGETS: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "out_proj")
OPEN_CLIP_LORA_TARGETS: tuple[str, ...] = ("c_fc", "c_proj")
LORA_BASE_WEIGHTS_NAME = "base_model.safetensors"
"""Weights of a base model saved beside its LoRA adapter."""
CLASSIFIER_LORA_TARGET_PAIRS: tuple[tuple[str, str], ...] = (
    ("query", "value"),
    ("q_lin", "v_lin"),
    ("query_proj", "value_proj"),
    ("q_proj", "v_proj"),
)


def _linear_names(model: nn.Module) -> set[str]:
    return {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, nn.Linear)}


def default_lora_targets(model: nn.Module) -> list[str]:
    """The default LoRA ``target_modules`` for ``model`` (docs/adapters.md, "Training modes")."""
    from hf_infonc.models import clip_towers

    if clip_towers.clip_family(model) == "hf-clip":
        return list(HF_CLIP_LORA_TARGETS)
    open_clip = clip_towers.inner_open_clip(model)
    if open_clip is not None:
        extra = ["query", "value"] if {"query", "value"} <= _linear_names(getattr(open_clip, "text", open_clip)) else []
        return [*OPEN_CLIP_LORA_TARGETS, *extra]
    names = _linear_names(model)
    for pair in CLASSIFIER_LORA_TARGET_PAIRS:
        if set(pair) <= names:
            return list(pair)
    raise ValueError(
        f"No default LoRA target modules for {type(model).__name__}: pass LoraSettings(target_modules=[...]) with the "
        f"names of its attention projection layers (nn.Linear module names)."
    )


def apply_training_mode(
    model: nn.Module, mode: str, *, lora: LoraSettings | None = None, coop: CoOpSettings | None = None,
    class_names: list[str] | None = None, tokenizer: Any = None, templates: list[str] | None = None,
) -> nn.Module:
    """Prepare ``model`` for ``mode`` and return the module to train.

    Args:
        model: a CLIP model (``transformers.CLIPModel``, open_clip, :class:`~hf_infonc.models.OpenCLIPModel`) or a
            linear-head classifier.
        mode: ``"full"``, ``"lora"``, ``"linear_probe"`` or ``"coop"``.
        lora / coop: settings of those modes (defaults: :class:`LoraSettings`, :class:`CoOpSettings`).
        class_names, tokenizer, templates: the class prompts of a CLIP linear probe and of CoOp
            (``OpenCLIPModel`` supplies its own tokenizer).

    Returns:
        ``model`` itself (``full``, classifier ``linear_probe``), a ``peft.PeftModel``, a
        :class:`~hf_infonc.models.CLIPLinearProbe` or a :class:`~hf_infonc.models.CoOpCLIP`.
    """
    if not isinstance(mode, str):
        raise TypeError(f"mode must be a string, one of {TRAINING_MODES}; got {type(mode).__name__}.")
    mode = mode.strip().lower().replace("-", "_")
    if mode not in TRAINING_MODES:
        close = difflib.get_close_matches(mode, TRAINING_MODES, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"Unknown training mode {mode!r}; expected one of {', '.join(TRAINING_MODES)}.{hint}")
    if type(model).__module__.startswith("peft"):
        raise TypeError(
            f"The model is already a {type(model).__name__}; apply_training_mode takes the base model (a PEFT model "
            f"is its result for mode='lora')."
        )
    from hf_infonc.adapters.classifier import ImageClassificationAdapter, SequenceClassificationAdapter
    from hf_infonc.models import clip_towers

    family = clip_towers.clip_family(model)
    classifiers = () if family else (SequenceClassificationAdapter, ImageClassificationAdapter)
    adapter = next((candidate for candidate in classifiers if candidate.supports(model)), None)
    if family is None and adapter is None:
        raise TypeError(
            f"apply_training_mode supports CLIP models (transformers.CLIPModel, open_clip, OpenCLIPModel) and "
            f"linear-head classifiers (…ForSequenceClassification, …ForImageClassification); "
            f"got {type(model).__name__}."
        )

    if mode == "full":
        model.requires_grad_(True)
        return model

    if mode == "lora":
        from peft import LoraConfig, get_peft_model

        settings = lora or LoraSettings()
        targets = settings.target_modules or default_lora_targets(model)
        modules_to_save = settings.modules_to_save
        task_type = None
        if family is None:
            modules_to_save = modules_to_save or ["classifier"]
            task_type = "SEQ_CLS" if adapter.family == "sequence-classification" else None
        config = LoraConfig(
            r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout, target_modules=targets,
            bias=settings.bias, modules_to_save=modules_to_save, task_type=task_type,
        )
        reference = base_model_reference(model)
        with warnings.catch_warnings():  # peft reads the deprecated is_gradient_checkpointing of transformers 5
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            peft_model = get_peft_model(model, config)
        peft_model.peft_config["default"].base_model_name_or_path = reference
        from transformers import PreTrainedModel

        if reference is None and isinstance(model, PreTrainedModel):
            # an instance attribute: Trainer checkpoints, Trainer.save_model and push_to_hub all call it
            peft_model.save_pretrained = types.MethodType(_save_pretrained_with_base, peft_model)
        return peft_model

    if mode == "linear_probe":
        if family is None:
            model.requires_grad_(False)
            adapter.find_head(model)[1].requires_grad_(True)
            return model
        from hf_infonc.models.frozen_clip import CLIPLinearProbe

        names, tokenizer = _prompt_inputs(model, class_names, tokenizer, "linear_probe")
        return CLIPLinearProbe.from_clip(model, tokenizer, names, templates=templates)

    # mode == "coop"
    if family is None:
        raise TypeError(
            f"CoOp prompt learning needs a CLIP model (a text tower that reads class prompts); got "
            f"{type(model).__name__}. For a classifier use mode='full', 'lora' or 'linear_probe'."
        )
    from hf_infonc.models.coop import CoOpCLIP

    names, tokenizer = _prompt_inputs(model, class_names, tokenizer, "coop")
    return CoOpCLIP.from_clip(model, tokenizer, names, **dataclasses.asdict(coop or CoOpSettings()))


def base_model_reference(model: nn.Module) -> str | None:
    """How a LoRA adapter on ``model`` names its base (``base_model_name_or_path``): a Hub id (also for a local
    offline copy), ``"hf-hub:<repo>"``, a local folder's absolute path, or ``None`` when nothing can load it again
    (built from a config: the base is then saved with the adapter)."""
    name = getattr(model, "name_or_path", None)
    if not isinstance(name, str) or not name:
        return None
    if name.startswith("hf-hub:"):
        return name
    if Path(name).is_dir():
        return hub_id(name) or str(Path(name).resolve())
    return hub_id(name)


def base_model_state_dict(
    peft_model: nn.Module, state_dict: dict[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """The base model's own state dict inside a peft model, loadable into a fresh base with ``strict=True``: keys lose
    ``base_model.model.``, a wrapper's ``base_layer`` / ``original_module`` takes its place, adapter tensors are
    dropped. ``state_dict``: the peft model's full state dict when the caller has it (FSDP/DeepSpeed)."""
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils.other import AuxiliaryTrainingWrapper

    wrappers = {}
    for name, module in peft_model.get_base_model().named_modules():
        if isinstance(module, BaseTunerLayer):
            wrappers[name] = "base_layer"
        elif isinstance(module, AuxiliaryTrainingWrapper):
            wrappers[name] = "original_module"
    innermost_first = sorted(wrappers.items(), key=lambda item: len(item[0]), reverse=True)
    prefix = "base_model.model."
    state = peft_model.state_dict() if state_dict is None else state_dict
    base_state = {}
    for key, value in state.items():
        if not key.startswith(prefix):
            continue
        key = key[len(prefix) :]
        for path, inner in innermost_first:
            if key.startswith(f"{path}."):
                rest = key[len(path) + 1 :]
                if not rest.startswith(f"{inner}."):
                    break  # a tensor of the adapter (lora_A, lora_B, modules_to_save copies, …)
                key = f"{path}.{rest[len(inner) + 1 :]}"
        else:
            base_state[key] = value
    return base_state


def save_base_model(
    peft_model: nn.Module, directory: str | Path, *, state_dict: dict | None = None, is_main_process: bool = True
) -> Path:
    """Write the (untrained) base of ``peft_model`` into ``directory`` (``config.json`` + the weights named by
    ``transformers_weights``) and point every adapter's ``base_model_name_or_path`` at it; returns it."""
    from hf_infonc.models import OpenCLIPModel

    out = Path(directory)
    if is_main_process:
        base = peft_model.get_base_model()
        extra = {"open_clip_layout": False} if isinstance(base, OpenCLIPModel) else {}  # it is not the trained model
        base.save_pretrained(str(out), state_dict=base_model_state_dict(peft_model, state_dict), **extra)
        weights = out / "model.safetensors"
        if weights.is_file():  # a sharded base (model.safetensors.index.json) is left as written
            weights.replace(out / LORA_BASE_WEIGHTS_NAME)
            config_file = out / "config.json"
            config = json.loads(config_file.read_text())
            config["transformers_weights"] = LORA_BASE_WEIGHTS_NAME
            config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    for adapter_config in peft_model.peft_config.values():
        adapter_config.base_model_name_or_path = str(out.resolve())
    return out


def moved_lora_base(peft_model: nn.Module, old: Path, new: Path) -> None:
    """After the files a save wrote into ``old`` were moved into ``new``: every adapter whose saved base
    (:func:`save_base_model`) was ``old`` names ``new``, in memory and in ``new``'s ``adapter_config.json`` files."""
    old_ref, new_ref = str(old.resolve()), str(new.resolve())
    for adapter_config in getattr(peft_model, "peft_config", {}).values():
        if adapter_config.base_model_name_or_path == old_ref:
            adapter_config.base_model_name_or_path = new_ref
    for file in new.rglob("adapter_config.json"):
        saved = json.loads(file.read_text())
        if saved.get("base_model_name_or_path") == old_ref:
            write_atomic(file, json_text({**saved, "base_model_name_or_path": new_ref}))


def _save_pretrained_with_base(self, save_directory: str, *args: Any, **kwargs: Any) -> None:
    """``PeftModel.save_pretrained`` preceded by :func:`save_base_model` (a base with no Hub reference)."""
    save_base_model(
        self, save_directory, state_dict=kwargs.get("state_dict"), is_main_process=kwargs.get("is_main_process", True)
    )
    return type(self).save_pretrained(self, save_directory, *args, **kwargs)


def _prompt_inputs(model: nn.Module, class_names: list[str] | None, tokenizer: Any, mode: str) -> tuple[list[str], Any]:
    if not class_names:
        raise ValueError(f"mode={mode!r} on a CLIP model needs class_names=[...] (one per label id, in label order).")
    if tokenizer is None and hasattr(model, "get_tokenizer"):
        tokenizer = model.get_tokenizer()
    if tokenizer is None:
        raise ValueError(
            f"mode={mode!r} on a CLIP model needs the text tokenizer (tokenizer=CLIPTokenizer/CLIPProcessor, or "
            f"open_clip.get_tokenizer(name) for open_clip models)."
        )
    return list(class_names), tokenizer


__all__ = [
    "CoOpSettings", "HEAD_ONLY_MODES", "LORA_BASE_WEIGHTS_NAME", "LoraSettings", "TRAINING_MODES", "TrainingMode",
    "apply_training_mode", "base_model_reference", "base_model_state_dict", "default_lora_targets", "save_base_model",
]
