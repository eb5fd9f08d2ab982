"""Confidence thresholds of FixMatch (Sohn et al., NeurIPS 2020, arXiv 2001.07685) and FreeMatch (Wang et
al., ICLR 2023, arXiv 2205.07246), and FreeMatch's self-adaptive fairness loss. Formulas:
docs/semi_supervised.md ("What a step does").
"""

from __future__ import annotations

from typing import Any

import torch

from hf_infonc.semi_supervised.config import SemiSupervisedConfig


class FixedThreshold:
    """FixMatch: an example is confident when its top weak-view probability is ≥ τ."""

    def __init__(self, p_cutoff: float = 0.95) -> None:
        self.p_cutoff = float(p_cutoff)

    def update(self, probs: torch.Tensor) -> None:
        """Nothing to learn (kept for a common interface)."""

    def class_thresholds(self, num_classes: int, device: torch.device | None = None) -> torch.Tensor:
        return torch.full((num_classes,), self.p_cutoff, device=device)

    def mask(self, probs: torch.Tensor) -> torch.Tensor:
        """``1.0`` where ``max p ≥ τ``, else ``0.0`` (float, one per row of ``probs``)."""
        return (probs.max(dim=-1).values >= self.p_cutoff).to(probs.dtype)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class SelfAdaptiveThreshold:
    """FreeMatch's self-adaptive thresholds (Wang et al., ICLR 2023, §3.2) and label histogram.

    State (all EMAs with momentum ``momentum``, initialised to the uniform 1/C):
    ``global_threshold`` τ_t, ``class_probabilities`` p̃_t (the local estimate) and
    ``label_histogram`` h̃_t (of the pseudo-labels, for the fairness loss).
    """

    STATE = ("global_threshold", "class_probabilities", "label_histogram")

    def __init__(self, num_classes: int, momentum: float = 0.999) -> None:
        if num_classes < 2:
            raise ValueError(f"FreeMatch needs at least 2 classes, got {num_classes}.")
        self.num_classes = num_classes
        self.momentum = float(momentum)
        self.class_probabilities = torch.full((num_classes,), 1.0 / num_classes, dtype=torch.float64)
        self.label_histogram = torch.full((num_classes,), 1.0 / num_classes, dtype=torch.float64)
        self.global_threshold = torch.tensor(1.0 / num_classes, dtype=torch.float64)

    @torch.no_grad()
    def update(self, probs: torch.Tensor) -> None:
        """One EMA step from the weak-view probabilities ``probs`` (n × C) of the global batch."""
        if probs.shape[-1] != self.num_classes:
            raise ValueError(
                f"probabilities have {probs.shape[-1]} classes, the threshold was built for {self.num_classes}."
            )
        if probs.shape[0] == 0:
            return
        if self.global_threshold.device != probs.device:
            for name in self.STATE:
                setattr(self, name, getattr(self, name).to(probs.device))
        p = probs.detach().to(torch.float64)
        top, pseudo = p.max(dim=-1)
        m = self.momentum
        self.global_threshold = m * self.global_threshold + (1 - m) * top.mean()
        self.class_probabilities = m * self.class_probabilities + (1 - m) * p.mean(dim=0)
        histogram = torch.bincount(pseudo, minlength=self.num_classes).to(torch.float64) / p.shape[0]
        self.label_histogram = m * self.label_histogram + (1 - m) * histogram

    def class_thresholds(self, num_classes: int | None = None, device: torch.device | None = None) -> torch.Tensor:
        """``τ_t(c) = τ_t · p̃_t(c) / max_c' p̃_t(c')`` (FreeMatch Eq. 6)."""
        values = self.global_threshold * self.class_probabilities / self.class_probabilities.max()
        return values if device is None else values.to(device)

    def mask(self, probs: torch.Tensor) -> torch.Tensor:
        top, pseudo = probs.detach().max(dim=-1)
        thresholds = self.class_thresholds(device=probs.device)
        return (top.to(torch.float64) >= thresholds[pseudo]).to(probs.dtype)

    def state_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name).cpu() for name in self.STATE}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in self.STATE:
            setattr(self, name, state[name].to(torch.float64))


def _sum_normalise(x: torch.Tensor) -> torch.Tensor:
    return x / x.sum(dim=-1, keepdim=True)


def _inverse(histogram: torch.Tensor) -> torch.Tensor:
    """``1 / h`` where ``h > 0``, else 0."""
    return torch.where(histogram > 0, 1.0 / histogram.clamp_min(1e-12), torch.zeros_like(histogram))


def fairness_loss(strong_logits: torch.Tensor, mask: torch.Tensor, class_probabilities: torch.Tensor,
                  label_histogram: torch.Tensor) -> torch.Tensor:
    """FreeMatch's self-adaptive fairness loss (Wang et al., ICLR 2023, Eq. 8): ``Σ_c q_c log r_c`` with
    ``q = SumNorm(p̃/h̃)``, ``r = SumNorm(p̄/h̄)`` over the masked strong views (classes absent from ``h̄``
    weigh 0, as in USB). 0, with a zero gradient, when no row is masked."""
    keep = mask > 0
    if not bool(keep.any()):
        return strong_logits.sum() * 0.0
    probs = strong_logits[keep].float().softmax(dim=-1)
    num_classes = probs.shape[-1]
    histogram = torch.bincount(probs.argmax(dim=-1), minlength=num_classes).to(probs.dtype)
    histogram = histogram / histogram.sum()
    target = _sum_normalise(class_probabilities.to(probs) * _inverse(label_histogram).to(probs)).detach()
    current = _sum_normalise(probs.mean(dim=0) * _inverse(histogram).detach())
    return (target * torch.log(current + 1e-12)).sum()


def build_threshold(config: SemiSupervisedConfig, num_classes: int) -> FixedThreshold | SelfAdaptiveThreshold | None:
    if config.algorithm == "fixmatch":
        return FixedThreshold(config.p_cutoff)
    if config.algorithm == "freematch":
        return SelfAdaptiveThreshold(num_classes, config.threshold_ema)
    return None
