"""Training modes: which parameters train, and how (full fine-tuning, LoRA, linear probe, CoOp).

``apply_training_mode(model, mode, ...)`` returns the module to hand to ``InfoNCTrainer``; the
adapter registry picks the right adapter for whatever comes back (a ``peft.PeftModel`` is
unwrapped, ``CoOpCLIP`` and ``CLIPLinearProbe`` have adapters of their own).

=============== ============================================= ==============================================
mode            CLIP (``transformers.CLIPModel``, open_clip)  classifier (``…ForSequenceClassification``,
                                                                          ``…ForImageClassification``)
=============== ============================================= ==============================================
``full``        every parameter trains                        every parameter trains
``lora``        LoRA on the attention projections (HF) or     LoRA on the attention query/value layers; the
                the MLP layers (open_clip), base frozen       classifier trains fully (``modules_to_save``)
``linear_probe`` :class:`~hf_infonc.models.CLIPLinearProbe`:  only the final linear layer trains
                frozen towers, zero-shot-initialised head
``coop``        :class:`~hf_infonc.models.CoOpCLIP`: learned  error (CoOp needs a text tower and prompts)
                context tokens, frozen towers
=============== ============================================= ==============================================

Default LoRA targets (override with ``LoraSettings(target_modules=...)``):

* ``transformers.CLIPModel``: ``q_proj``, ``k_proj``, ``v_proj``, ``out_proj`` (both towers).
* open_clip: ``c_fc``, ``c_proj`` (the MLP ``nn.Linear`` layers of every block, both towers), plus
  ``query``/``value`` of an HF text tower. The attention of open_clip blocks is an
  ``nn.MultiheadAttention`` whose ``out_proj`` is never *called* (its weight is read inside
  ``F.multi_head_attention_forward``), so LoRA on ``out_proj`` alone would silently do nothing;
  peft can adapt the whole module instead (``target_modules=["attn", "c_fc", "c_proj"]``, peft's
  ``MultiheadAttention`` LoRA layer, which merges and unmerges the weights around each call).
* classifiers: the first pair found among ``query``/``value`` (BERT, RoBERTa, ViT, …),
  ``q_lin``/``v_lin`` (DistilBERT), ``query_proj``/``value_proj`` (DeBERTa-v2), ``q_proj``/``v_proj``.
"""

from __future__ import annotations

import difflib
import warnings
from dataclasses import dataclass
from typing import Any

from torch import nn

from hf_infonc.models import clip_towers

TRAINING_MODES: tuple[str, ...] = ("full", "lora", "linear_probe", "coop")

HF_CLIP_LORA_TARGETS: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "out_proj")
OPEN_CLIP_LORA_TARGETS: tuple[str, ...] = ("c_fc", "c_proj")
CLASSIFIER_LORA_TARGET_PAIRS: tuple[tuple[str, str], ...] = (
    ("query", "value"),
    ("q_lin", "v_lin"),
    ("query_proj", "value_proj"),
    ("q_proj", "v_proj"),
)


@dataclass
class LoraSettings:
    """LoRA hyper-parameters (``peft.LoraConfig``): rank ``r``, ``alpha`` (scaling ``alpha/r``), dropout."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] | str | None = None
    bias: str = "none"
    modules_to_save: list[str] | None = None

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"LoraSettings.r={self.r}: the LoRA rank must be ≥ 1.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoraSettings.dropout={self.dropout} must lie in [0, 1).")


@dataclass
class CoOpSettings:
    """CoOp prompt learning: ``n_ctx`` context vectors, initialised from ``init`` (or randomly when ``None``).

    With ``n_ctx`` larger than the phrase, the phrase's token embeddings fill the last vectors
    and the others are ``N(0, init_std²)``; ``n_ctx=None`` takes the phrase length.
    """

    n_ctx: int | None = 16
    init: str | None = "a photo of a"
    class_token_position: str = "end"
    init_std: float = 0.02
    seed: int | None = None


def _classifier_head(model: nn.Module):
    from hf_infonc.adapters.classifier import ImageClassificationAdapter, SequenceClassificationAdapter

    for adapter in (SequenceClassificationAdapter, ImageClassificationAdapter):
        if adapter.supports(model):
            return adapter, adapter.find_head(model)
    return None, None


def _linear_names(model: nn.Module) -> set[str]:
    return {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, nn.Linear)}


def default_lora_targets(model: nn.Module) -> list[str]:
    """The default LoRA ``target_modules`` for ``model`` (see the module docstring)."""
    family = clip_towers.clip_family(model)
    if family == "hf-clip":
        return list(HF_CLIP_LORA_TARGETS)
    if family == "open_clip":
        targets = list(OPEN_CLIP_LORA_TARGETS)
        clip = clip_towers.inner_open_clip(model)
        names = _linear_names(getattr(clip, "text", clip))
        if {"query", "value"} <= names:
            targets += ["query", "value"]
        return targets
    names = _linear_names(model)
    for pair in CLASSIFIER_LORA_TARGET_PAIRS:
        if set(pair) <= names:
            return list(pair)
    raise ValueError(
        f"No default LoRA target modules for {type(model).__name__}: pass LoraSettings(target_modules=[...]) with the "
        f"names of its attention projection layers (nn.Linear module names)."
    )


def _unknown_mode(mode: str) -> ValueError:
    close = difflib.get_close_matches(mode, TRAINING_MODES, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ValueError(f"Unknown training mode {mode!r}; expected one of {', '.join(TRAINING_MODES)}.{hint}")


def apply_training_mode(
    model: nn.Module,
    mode: str,
    *,
    lora: LoraSettings | None = None,
    coop: CoOpSettings | None = None,
    class_names: list[str] | None = None,
    tokenizer: Any = None,
    templates: list[str] | None = None,
) -> nn.Module:
    """Prepare ``model`` for ``mode`` and return the module to train.

    Args:
        model: a CLIP model (``transformers.CLIPModel``, open_clip ``CLIP``/``CustomTextCLIP``,
            :class:`~hf_infonc.models.OpenCLIPModel`) or a linear-head classifier.
        mode: ``"full"``, ``"lora"``, ``"linear_probe"`` or ``"coop"``.
        lora / coop: settings of those modes (defaults: :class:`LoraSettings`, :class:`CoOpSettings`).
        class_names, tokenizer, templates: needed to build the class prompts of a CLIP linear
            probe (zero-shot initialisation) and of CoOp. ``OpenCLIPModel`` supplies its own
            tokenizer when none is given.

    Returns:
        ``model`` itself (``full``, classifier ``linear_probe``), a ``peft.PeftModel`` (``lora``),
        a :class:`~hf_infonc.models.CLIPLinearProbe` or a :class:`~hf_infonc.models.CoOpCLIP`.
    """
    if not isinstance(mode, str):
        raise TypeError(f"mode must be a string, one of {TRAINING_MODES}; got {type(mode).__name__}.")
    mode = mode.strip().lower().replace("-", "_")
    if mode not in TRAINING_MODES:
        raise _unknown_mode(mode)
    if type(model).__module__.startswith("peft"):
        raise TypeError(
            f"The model is already a {type(model).__name__}; apply_training_mode takes the base model (a PEFT model "
            f"is its result for mode='lora')."
        )
    family = clip_towers.clip_family(model)
    adapter, head = (None, None) if family else _classifier_head(model)
    if family is None and adapter is None:
        raise TypeError(
            f"apply_training_mode supports CLIP models (transformers.CLIPModel, open_clip, OpenCLIPModel) and "
            f"linear-head classifiers (…ForSequenceClassification, …ForImageClassification); got {type(model).__name__}."
        )

    if mode == "full":
        for parameter in model.parameters():
            parameter.requires_grad_(True)
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
        with warnings.catch_warnings():  # peft reads the deprecated is_gradient_checkpointing of transformers 5
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            return get_peft_model(model, config)

    if mode == "linear_probe":
        if family is None:
            _, linear = head
            for parameter in model.parameters():
                parameter.requires_grad_(False)
            for parameter in linear.parameters():
                parameter.requires_grad_(True)
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

    settings = coop or CoOpSettings()
    names, tokenizer = _prompt_inputs(model, class_names, tokenizer, "coop")
    return CoOpCLIP.from_clip(
        model, tokenizer, names, n_ctx=settings.n_ctx, init=settings.init,
        class_token_position=settings.class_token_position, init_std=settings.init_std, seed=settings.seed,
    )


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


__all__ = ["CoOpSettings", "LoraSettings", "TRAINING_MODES", "apply_training_mode", "default_lora_targets"]
