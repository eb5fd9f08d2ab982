"""Class prompts for CLIP-style heads (docs/theory.md §2.4): tokenise once, embed every step or once (cached)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from hf_infonc.data.prompts import get_templates
from hf_infonc.models.clip_towers import build_prompts, ensemble_head, tokenize

__all__ = ["ClassPrompts", "build_prompts"]


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
        """With a ``transformers`` or an open_clip tokenizer (see :func:`~hf_infonc.models.clip_towers.tokenize`)."""
        templates = get_templates(templates)
        ids, mask = tokenize(tokenizer, build_prompts(class_names, templates), length=length)
        return cls(list(class_names), templates, ids, mask)

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
        key = (str(device), torch.is_autocast_enabled())
        if not trains and key in self._cache:
            return self._cache[key]
        with_grad = trains and torch.is_grad_enabled()
        if with_grad:
            self._cache.clear()
        mask = None if self.attention_mask is None else self.attention_mask.to(device)
        with torch.set_grad_enabled(with_grad):
            head = ensemble_head(encode(self.input_ids.to(device), mask), self.num_classes)
        if not trains:
            self._cache[key] = head
        return head
