"""Collators: dataset rows (standard columns, never modified) → a batch with the Hugging Face names
``pixel_values`` (``float32``), ``input_ids`` / ``attention_mask`` / ... and ``labels`` (``int64``); texts go
through :func:`tokenize_texts` (a Hugging Face or an open_clip tokenizer)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

Rows = Sequence[Mapping[str, Any]]
Transform = Callable[[Any], torch.Tensor]


def is_hf_tokenizer(tokenizer: Any) -> bool:
    """Whether ``tokenizer`` is a ``transformers`` tokenizer (as opposed to an open_clip one)."""
    transformers = sys.modules.get("transformers")  # nothing from transformers was built if it was never imported
    return transformers is not None and isinstance(tokenizer, transformers.PreTrainedTokenizerBase)


def tokenize_texts(tokenizer: Any, texts: list[str], max_length: int | None = None) -> dict[str, torch.Tensor]:
    """Tokenize texts: Hugging Face ``tokenizer(texts, padding=True, truncation=True, max_length=...)`` as
    tensors, or open_clip ``{"input_ids": tokenizer(texts)}`` (``max_length`` ignored: the model fixes it)."""
    if is_hf_tokenizer(tokenizer):
        return dict(tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt").items())
    if not callable(tokenizer):
        raise TypeError(
            f"Expected a Hugging Face tokenizer or an open_clip tokenizer (a callable returning a LongTensor), "
            f"got {type(tokenizer).__name__}."
        )
    ids = tokenizer(texts)
    if not isinstance(ids, torch.Tensor):
        raise TypeError(
            f"The tokenizer {type(tokenizer).__name__} returned {type(ids).__name__}; an open_clip-style "
            f"tokenizer must return a LongTensor of shape (batch, context_length)."
        )
    if ids.ndim != 2 or ids.shape[0] != len(texts):
        raise ValueError(f"Tokenizer output has shape {tuple(ids.shape)}; expected ({len(texts)}, context_length).")
    return {"input_ids": ids.long()}


def _column(examples: Rows, column: str, collator: object) -> list[Any]:
    try:
        return [example[column] for example in examples]
    except KeyError:
        present = sorted(examples[0].keys()) if examples else []
        raise KeyError(
            f"{type(collator).__name__}: a row has no {column!r} column (columns: {present}). The data layer's "
            f"standard columns are image/text/caption/label; keep them when building the Trainer "
            f"(e.g. TrainingArguments(remove_unused_columns=False))."
        ) from None


def _labels(examples: Rows, column: str, collator: object) -> torch.Tensor:
    return torch.tensor([int(label) for label in _column(examples, column, collator)], dtype=torch.long)


def _pixel_values(images: list[Any], transform: Transform | None, collator: object) -> torch.Tensor:
    if transform is None and not all(isinstance(image, torch.Tensor) for image in images):
        raise ValueError(
            f"{type(collator).__name__}: rows hold PIL images, so a transform to tensors is needed; pass transform=..."
        )
    return torch.stack([image if isinstance(image, torch.Tensor) else transform(image) for image in images]).float()


@dataclass(eq=False)
class ImageClassificationCollator:
    """Rows with ``image`` and ``label`` → ``{"pixel_values": float B×3×H×W, "labels": long B}``."""

    transform: Transform | None
    image_column: str = "image"
    label_column: str = "label"

    def __call__(self, examples: Rows) -> dict[str, torch.Tensor]:
        images = _column(examples, self.image_column, self)
        labels = _labels(examples, self.label_column, self)
        return {"pixel_values": _pixel_values(images, self.transform, self), "labels": labels}


@dataclass(eq=False)
class TextClassificationCollator:
    """Rows with ``text`` and ``label`` → tokenizer outputs (``input_ids``, ``attention_mask``,
    ...) + ``labels``. ``max_length`` applies to Hugging Face tokenizers."""

    tokenizer: Any
    max_length: int | None = 128
    text_column: str = "text"
    label_column: str = "label"

    def __call__(self, examples: Rows) -> dict[str, torch.Tensor]:
        texts = [str(t) for t in _column(examples, self.text_column, self)]
        labels = _labels(examples, self.label_column, self)
        return {**tokenize_texts(self.tokenizer, texts, self.max_length), "labels": labels}


@dataclass(eq=False)
class ImageCaptionCollator:
    """Rows with ``image`` and ``caption`` (and optionally ``label``) → ``pixel_values``,
    ``input_ids`` (+ ``attention_mask`` for Hugging Face tokenizers) and ``labels`` when every
    row has a label."""

    transform: Transform | None
    tokenizer: Any
    max_length: int | None = 77
    image_column: str = "image"
    caption_column: str = "caption"
    label_column: str = "label"

    def __call__(self, examples: Rows) -> dict[str, torch.Tensor]:
        images = _column(examples, self.image_column, self)
        captions = [str(c) for c in _column(examples, self.caption_column, self)]
        batch = {"pixel_values": _pixel_values(images, self.transform, self)}
        batch.update(tokenize_texts(self.tokenizer, captions, self.max_length))
        if examples and all(example.get(self.label_column) is not None for example in examples):
            batch["labels"] = _labels(examples, self.label_column, self)
        return batch
