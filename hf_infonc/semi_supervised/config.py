"""Settings of semi-supervised training: the ``ssl:`` section of a recipe."""

from __future__ import annotations

import math
from dataclasses import dataclass

ALGORITHMS = ("supervised", "fixmatch", "freematch")
INFO_TARGETS = ("labeled", "pseudo", "both")


@dataclass
class SemiSupervisedConfig:
    """The ``ssl:`` section of a recipe; defaults follow FreeMatch on CIFAR-10 (USB ``freematch_cifar10_40_0.yaml``)."""

    algorithm: str = "freematch"
    """``freematch``, ``fixmatch``, or ``supervised`` (the labelled stream only: the baseline)."""
    unlabeled_ratio: int = 7
    """μ: unlabelled examples per labelled example in a step."""
    unsup_weight: float = 1.0
    """λ_u, the weight of the consistency loss."""
    p_cutoff: float = 0.95
    """FixMatch's fixed confidence threshold τ."""
    threshold_ema: float = 0.999
    """FreeMatch's EMA momentum λ of the global/local thresholds and the label histogram."""
    fairness_weight: float = 0.001
    """FreeMatch's λ_f, the weight of the self-adaptive fairness loss (0 turns it off)."""
    info_target: str = "labeled"
    """Rows of the information losses: ``labeled`` (measured best), ``pseudo`` (confident strong views) or ``both``."""
    ema_decay: float | None = None
    """Decay (e.g. 0.999) of an EMA teacher for the pseudo-labels; ``None``: the model itself (FixMatch, FreeMatch)."""
    labels_per_class: int | None = None
    """Recipes: labelled examples kept per class (drawn with ``data.seed``); ``None``: ``data.shots``."""
    max_unlabeled: int | None = None
    """Recipes: cap on the training-split part of the unlabelled pool (stratified, seeded)."""
    unlabeled_split: str | None = None
    """Recipes: another split of ``data.source`` added to the unlabelled pool (STL-10's ``unlabeled``; labels -1)."""

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"ssl.algorithm={self.algorithm!r} is not one of {ALGORITHMS}.")
        if self.info_target not in INFO_TARGETS:
            raise ValueError(f"ssl.info_target={self.info_target!r} is not one of {INFO_TARGETS}.")
        ratio = self.unlabeled_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, int) or ratio < 0:
            raise ValueError(f"ssl.unlabeled_ratio={self.unlabeled_ratio!r} must be an integer ≥ 0 (μ; 7 in FixMatch).")
        if self.algorithm != "supervised" and self.unlabeled_ratio == 0:
            raise ValueError(
                f"ssl.algorithm={self.algorithm!r} needs unlabelled data: set ssl.unlabeled_ratio ≥ 1 (7 in the "
                f"papers), or use algorithm 'supervised'."
            )
        for name in ("unsup_weight", "fairness_weight"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"ssl.{name}={value} must be a finite number ≥ 0.")
        if not 0.0 < self.p_cutoff <= 1.0:
            raise ValueError(f"ssl.p_cutoff={self.p_cutoff} must lie in (0, 1] (FixMatch uses 0.95).")
        if not 0.0 <= self.threshold_ema < 1.0:
            raise ValueError(f"ssl.threshold_ema={self.threshold_ema} must lie in [0, 1) (FreeMatch uses 0.999).")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(
                f"ssl.ema_decay={self.ema_decay} must lie in (0, 1) (e.g. 0.999), or be null for no teacher."
            )
        for name in ("labels_per_class", "max_unlabeled"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"ssl.{name}={value!r} must be a positive integer or null.")

    @property
    def uses_unlabeled(self) -> bool:
        return self.algorithm != "supervised"
