"""The vocabulary of the training modes, written once: the modes, and the settings of LoRA and CoOp with their
defaults. Plain data with no heavy imports, so that a recipe can be read and checked without importing
torch or transformers; :mod:`hf_infonc.modes` applies the modes, :class:`hf_infonc.models.CoOpCLIP` reads
:class:`CoOpSettings`.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Literal

TrainingMode = Literal["full", "lora", "linear_probe", "coop"]
TRAINING_MODES: tuple[str, ...] = typing.get_args(TrainingMode)
DEFAULT_TRAINING_MODE: TrainingMode = "full"
HEAD_ONLY_MODES: tuple[str, ...] = ("coop", "linear_probe")
"""Modes that train only a head on a frozen CLIP model (CLIP only; the saved file holds only the head)."""


@dataclass
class LoraSettings:
    """LoRA through peft (``training_mode: lora``; ``peft.LoraConfig``): rank ``r``, ``alpha`` (scaling
    ``alpha/r``), dropout; ``target_modules=None`` takes a default per family
    (:func:`hf_infonc.modes.default_lora_targets`)."""

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
    """CoOp prompt learning (``training_mode: coop``; Zhou et al. 2022): ``n_ctx`` context vectors,
    initialised from the phrase ``init`` or, when ``None``, as ``N(0, init_std²)``; with ``n_ctx`` larger than
    the phrase, its token embeddings fill the last vectors and the others are random; ``n_ctx=None`` takes the
    phrase length; ``seed`` fixes the random draw."""

    n_ctx: int | None = 16
    init: str | None = "a photo of a"
    class_token_position: str = "end"
    init_std: float = 0.02
    seed: int | None = None
