"""One interface over the CLIP families (``transformers.CLIPModel``, open_clip models, ``OpenCLIPModel``):
the family dispatch of adapters, CoOp and the linear probe, and the zero-shot head of class prompts
(docs/theory.md §2.4). Embeddings are projected, *not* normalised.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from hf_infonc.data.collate import is_hf_tokenizer, tokenize_texts
from hf_infonc.data.prompts import format_prompts, get_templates
from hf_infonc.models.open_clip.model import OpenCLIPModel, open_clip_token_embedding


def _pooled(output: Any) -> torch.Tensor:
    """``get_*_features`` returns a ``BaseModelOutputWithPooling`` in transformers 5, a tensor before."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def inner_open_clip(model: nn.Module) -> nn.Module | None:
    """The open_clip ``CLIP``/``CustomTextCLIP`` of ``model`` (itself, or the one our wrapper holds)."""
    from open_clip.model import CLIP, CustomTextCLIP

    if isinstance(model, OpenCLIPModel):
        model = model.clip
    return model if isinstance(model, (CLIP, CustomTextCLIP)) else None


def clip_family(model: nn.Module) -> str | None:
    """``"hf-clip"`` for ``transformers.CLIPModel``, ``"open-clip"`` for open_clip models, else ``None``."""
    from transformers import CLIPModel  # lazy: importing the trainer does not load every CLIP module

    if isinstance(model, CLIPModel):
        return "hf-clip"
    if inner_open_clip(model) is not None:
        return "open-clip"
    return None


def require_clip(model: nn.Module, what: str) -> str:
    family = clip_family(model)
    if family is None:
        raise TypeError(
            f"{what} needs a CLIP model (transformers.CLIPModel, an open_clip CLIP/CustomTextCLIP, or "
            f"hf_infonc.models.OpenCLIPModel); got {type(model).__name__}."
        )
    return family


def encode_image(model: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """Projected image embeddings, ``n x d``."""
    if clip_family(model) == "hf-clip":
        return _pooled(model.get_image_features(pixel_values=pixel_values))
    return inner_open_clip(model).encode_image(pixel_values)


def encode_text(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Projected text embeddings, ``n x d`` (open_clip derives padding from the ids: no ``attention_mask``)."""
    if clip_family(model) == "hf-clip":
        return _pooled(model.get_text_features(input_ids=input_ids, attention_mask=attention_mask))
    return inner_open_clip(model).encode_text(input_ids)


def token_embedding(model: nn.Module) -> nn.Embedding:
    """The token-embedding layer of the text tower (its output is what CoOp edits)."""
    if clip_family(model) == "hf-clip":
        return model.text_model.embeddings.token_embedding
    return open_clip_token_embedding(inner_open_clip(model))


def embed_dim(model: nn.Module) -> int | None:
    """The width ``d`` of the projected embeddings (``None`` where an open_clip tower does not state it)."""
    if clip_family(model) == "hf-clip":
        return model.visual_projection.out_features
    return getattr(inner_open_clip(model).visual, "output_dim", None)


def context_length(model: nn.Module) -> int | None:
    """The fixed token length an open_clip text tower expects (``None`` when any length up to the max works)."""
    if clip_family(model) == "hf-clip":
        return None
    clip = inner_open_clip(model)
    text = getattr(clip, "text", None)
    if text is not None and type(text).__name__ == "HFTextEncoder":
        return None
    return int(clip.context_length)


def vision_parameters(model: nn.Module) -> Iterator[nn.Parameter]:
    if clip_family(model) == "hf-clip":
        yield from model.vision_model.parameters()
        yield from model.visual_projection.parameters()
    else:
        yield from inner_open_clip(model).visual.parameters()


def text_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters of the text side: everything except the vision tower and the logit scale/bias."""
    if clip_family(model) == "hf-clip":
        return [*model.text_model.parameters(), *model.text_projection.parameters()]
    clip = inner_open_clip(model)
    excluded = {id(p) for p in clip.visual.parameters()}
    for name in ("logit_scale", "logit_bias"):
        value = getattr(clip, name, None)
        if isinstance(value, nn.Parameter):
            excluded.add(id(value))
    return [p for p in clip.parameters() if id(p) not in excluded]


def tokenize(
    tokenizer: Any, texts: list[str], *, length: int | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Token ids (and the attention mask, when the tokenizer gives one) of ``texts`` with a ``transformers``
    tokenizer or processor, or an open_clip tokenizer. ``length``: pad or truncate a ``transformers`` tokenizer's
    output to exactly this many tokens (fixed-length open_clip towers)."""
    from transformers import ProcessorMixin

    if isinstance(tokenizer, ProcessorMixin):  # CLIPProcessor & co: use the text tokenizer it holds
        tokenizer = tokenizer.tokenizer
    if length is not None and is_hf_tokenizer(tokenizer):
        batch = tokenizer(texts, padding="max_length", max_length=length, truncation=True, return_tensors="pt")
    else:
        batch = tokenize_texts(tokenizer, texts)
    return batch["input_ids"], batch.get("attention_mask")


def build_prompts(class_names: list[str], templates: Iterable[str] | None) -> list[str]:
    """Class-major flat list of prompts: ``[t₁(c₁), t₂(c₁), …, t₁(c₂), …]`` (templates validated)."""
    return [prompt for per_class in format_prompts(class_names, templates) for prompt in per_class]


def ensemble_head(text: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Average the normalised prompt embeddings of each class over templates, then re-normalise."""
    per_class = nn.functional.normalize(text, dim=-1).reshape(num_classes, -1, text.shape[-1]).mean(dim=1)
    return nn.functional.normalize(per_class, dim=-1)


def classification_logits(image: torch.Tensor, head: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``scale · normalize(image) · headᵀ`` with ``head`` rows already unit-norm."""
    image_n = nn.functional.normalize(image, dim=-1)
    return scale * image_n @ head.to(image_n.dtype).T


@dataclass
class ClassPrompts:
    """Tokenised class prompts and a cache of their (frozen) head."""

    class_names: list[str]
    templates: list[str]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor | None = None
    _cache: dict[tuple, torch.Tensor] = field(default_factory=dict, repr=False)

    @classmethod
    def tokenize(
        cls, class_names: list[str], templates: Iterable[str] | None, tokenizer: Any, *, length: int | None = None
    ) -> ClassPrompts:
        """With a ``transformers`` or an open_clip tokenizer (see :func:`tokenize`)."""
        templates = get_templates(templates)
        ids, mask = tokenize(tokenizer, build_prompts(class_names, templates), length=length)
        return cls(list(class_names), templates, ids, mask)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def head(self, model: nn.Module) -> torch.Tensor:
        """``C x d`` head rows of the CLIP ``model``. Recomputed (with gradients) when any text parameter trains,
        else cached."""
        device = model.logit_scale.device
        trains = any(p.requires_grad for p in text_parameters(model))
        key = (str(device), torch.is_autocast_enabled())
        if not trains and key in self._cache:
            return self._cache[key]
        with_grad = trains and torch.is_grad_enabled()
        if with_grad:
            self._cache.clear()
        mask = None if self.attention_mask is None else self.attention_mask.to(device)
        with torch.set_grad_enabled(with_grad):
            head = ensemble_head(encode_text(model, self.input_ids.to(device), mask), self.num_classes)
        if not trains:
            self._cache[key] = head
        return head
