"""Class prompts for CLIP-style heads: tokenise once, embed every step or once (cached).

The head of a CLIP classifier is the matrix of normalised text embeddings of the class prompts
(SPEC §2.4): with T templates, each class's row is the re-normalised mean of its T normalised
prompt embeddings (CLIP's prompt ensembling).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from hf_infonc.data.prompts import format_prompts, get_templates

def build_prompts(class_names: list[str], templates: Iterable[str] | None) -> list[str]:
    """Class-major flat list of prompts: ``[t₁(c₁), t₂(c₁), …, t₁(c₂), …]`` (templates validated)."""
    return [prompt for per_class in format_prompts(class_names, templates) for prompt in per_class]


def classification_logits(image: torch.Tensor, head: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``scale · normalize(image) · headᵀ`` with ``head`` rows already unit-norm."""
    image_n = nn.functional.normalize(image, dim=-1)
    return scale * image_n @ head.to(image_n.dtype).T


def ensemble_head(text: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Average the normalised prompt embeddings of each class over templates, then re-normalise."""
    per_class = nn.functional.normalize(text, dim=-1).reshape(num_classes, -1, text.shape[-1]).mean(dim=1)
    return nn.functional.normalize(per_class, dim=-1)


@dataclass
class ClassPrompts:
    """Tokenised class prompts and a cache of their (frozen) head."""

    class_names: list[str]
    templates: list[str]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor | None = None
    _cache: dict[tuple, torch.Tensor] = field(default_factory=dict, repr=False)

    @classmethod
    def from_hf_tokenizer(cls, class_names: list[str], templates: Iterable[str] | None, tokenizer) -> ClassPrompts:
        templates = get_templates(templates)
        batch = tokenizer(build_prompts(class_names, templates), padding=True, truncation=True, return_tensors="pt")
        return cls(list(class_names), templates, batch["input_ids"], batch.get("attention_mask"))

    @classmethod
    def from_token_ids(cls, class_names: list[str], templates: Iterable[str] | None, tokenize: Callable) -> ClassPrompts:
        """For tokenizers that return a LongTensor of ids (open_clip)."""
        templates = get_templates(templates)
        return cls(list(class_names), templates, tokenize(build_prompts(class_names, templates)))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def head(
        self,
        encode: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor],
        text_parameters: Iterable[nn.Parameter],
        device: torch.device,
    ) -> torch.Tensor:
        """``C x d`` head rows. Recomputed (with gradients) when any text parameter trains, else cached."""
        trains = any(p.requires_grad for p in text_parameters)
        ids = self.input_ids.to(device)
        mask = None if self.attention_mask is None else self.attention_mask.to(device)
        if trains and torch.is_grad_enabled():
            self._cache.clear()
            return ensemble_head(encode(ids, mask), self.num_classes)
        key = (str(device), torch.is_autocast_enabled())
        if trains or key not in self._cache:
            with torch.no_grad():
                head = ensemble_head(encode(ids, mask), self.num_classes)
            if trains:
                return head
            self._cache[key] = head
        return self._cache[key]
