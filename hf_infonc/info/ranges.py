"""The ranges of the measures, and the clamp that keeps their round-off inside them (docs/theory.md §6, Clamps).

A reported value outside its range by at most :func:`roundoff_slack` is moved onto the bound,
straight-through; a value further out is left visible. The losses are not clamped. Pure torch.
"""

from __future__ import annotations

import math

import torch

from hf_infonc.info._kernels import EntropyTerms

#: Round-off allowance per unit of spectrum size, in ulps of the compute dtype.
ROUNDOFF_ULPS = 64


def roundoff_slack(dtype: torch.dtype, size: int) -> float:
    """How far outside its range a value computed in ``dtype`` from spectra of at most ``size`` rows may lie
    by round-off alone: ``ROUNDOFF_ULPS · k · eps · max(1, log k)``."""
    k = max(int(size), 1)
    return ROUNDOFF_ULPS * k * torch.finfo(dtype).eps * max(1.0, math.log(k))


def clamp_to_range(value: torch.Tensor, low: float, high: torch.Tensor | float, slack: float) -> torch.Tensor:
    """``value`` with the entries outside ``[low, high]`` by at most ``slack`` moved onto that bound; entries
    further out, NaN and ``inf`` unchanged. Straight-through (the gradient is that of ``value``); ``high``
    is a number or a tensor broadcastable to ``value`` (no gradient flows into it)."""
    v = value.detach() if value.requires_grad else value
    if isinstance(high, torch.Tensor):
        clamped = torch.minimum(v.clamp_min(low), high)
        within = torch.minimum(v.clamp_min(low - slack), high + slack) == v
    else:
        clamped = v.clamp(low, high)
        within = v.clamp(low - slack, high + slack) == v  # False for NaN, ±inf and real errors
    result = torch.where(within, clamped, v)
    return value + (result - v) if value.requires_grad else result  # straight-through: the gradient of value


def clamp_float(value: float, low: float, high: float, slack: float) -> float:
    """:func:`clamp_to_range` for a Python float (NaN and ``inf`` pass through)."""
    return float(clamp_to_range(torch.tensor(value, dtype=torch.float64), low, high, slack))


def clamp_entropy(h: torch.Tensor, rank: int, size: int, dtype: torch.dtype) -> torch.Tensor:
    """A matrix entropy of rank at most ``rank``, computed in ``dtype`` from matrices of at most
    ``size`` rows, clamped to ``[0, log rank]``."""
    return clamp_to_range(h, 0.0, math.log(max(rank, 1)), roundoff_slack(dtype, size))


def clamp_mutual_information(terms: EntropyTerms, size: int, dtype: torch.dtype) -> torch.Tensor:
    """``H(K₁) + H(K₂) − H(K₁ ⊙ K₂)`` of ``size`` samples, computed in ``dtype``, clamped to
    ``[0, min(H(K₁), H(K₂))]``."""
    high = torch.minimum(terms.h_a, terms.h_b).detach()
    return clamp_to_range(terms.mutual_information, 0.0, high, roundoff_slack(dtype, size))
