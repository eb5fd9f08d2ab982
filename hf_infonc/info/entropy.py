"""Matrix (von Neumann and Rényi) entropy of cosine Gram matrices.

``H(K) = -tr((K/n) log(K/n)) = -Σ λᵢ log λᵢ`` with ``λᵢ`` the eigenvalues of ``K / tr(K)``
(natural log, nats). Rényi order α: ``H_α = log(Σ λᵢ^α) / (1 - α)``; α = 1 is von Neumann and
α = 2 needs no eigen-decomposition: ``H₂ = -log(‖K‖_F² / tr(K)²)``.

Sources: Song et al., arXiv 2409.16767 §3 and arXiv 2406.03999 §3 (matrix entropy of Gram
matrices, after Giraldo, Rao & Principe 2014). ``exp(H)`` is the effective rank.

Numerics (SPEC §1): spectra are computed in float64 by default (``dtype=torch.float32`` may be
asked for), outside autocast, and cast back to the input dtype; eigenvalues at or below a
dtype-dependent floor (:data:`EIGENVALUE_FLOOR`) contribute nothing, which keeps the value and
its gradient finite for rank-deficient inputs; gradients flow only through eigenvalues
(``eigvalsh``), which stays stable with repeated eigenvalues. The rows are normalised by
:func:`~hf_infonc.info.gram.unit_rows` and Grams scaled by
:func:`~hf_infonc.info.gram.scaled_gram`, so the value is the same for ``x`` and ``c·x`` over the
whole range of the input dtype; the result is clamped to ``[0, log k]`` against round-off
(:mod:`hf_infonc.info.ranges`).
"""

from __future__ import annotations

import math

import torch

from hf_infonc.info.gram import (
    check_gram,
    check_tensor,
    compute_dtype,
    normalize_rows,
    pick_route,
    psd_from_rows,
    scaled_gram,
)
from hf_infonc.info.ranges import clamp_entropy

#: Trace-normalised eigenvalues at or below this floor are treated as exact zeros.
EIGENVALUE_FLOOR: dict[torch.dtype, float] = {torch.float64: 1e-12, torch.float32: 1e-7}


def check_alpha(alpha: float) -> float:
    """Validate a Rényi order: a finite number ≥ 0 (α = 1 is von Neumann)."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise TypeError(f"alpha must be a number (Rényi order, 1.0 = von Neumann), got {alpha!r}.")
    if not math.isfinite(alpha) or alpha < 0:
        raise ValueError(f"alpha={alpha} is invalid; the Rényi order must be finite and ≥ 0 (1.0 = von Neumann).")
    return float(alpha)


def entropy_from_spectrum(lam: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """Entropy of a trace-normalised spectrum ``lam`` (``(..., k)``, sums to 1 over the kept part).

    Eigenvalues at or below the floor are masked out of both the value and the gradient, so
    ``0·log 0 = 0`` and the result never depends on how many zero eigenvalues the route adds.
    """
    floor = EIGENVALUE_FLOOR.get(lam.dtype, 1e-7)
    keep = lam > floor
    safe = torch.where(keep, lam, torch.ones_like(lam))
    zero = torch.zeros_like(lam)
    if alpha == 1.0:
        return -torch.where(keep, safe * torch.log(safe), zero).sum(dim=-1)
    power = torch.where(keep, safe.pow(alpha), zero).sum(dim=-1)
    positive = power > 0
    log_power = torch.log(torch.where(positive, power, torch.ones_like(power)))
    return torch.where(positive, log_power / (1.0 - alpha), torch.zeros_like(power))


def psd_entropy(p: torch.Tensor, alpha: float = 1.0, eigenvalues: torch.Tensor | None = None) -> torch.Tensor:
    """Matrix entropy of a PSD matrix ``p`` (``(..., k, k)``), normalised by its trace.

    ``eigenvalues`` may be passed when they are already known (un-normalised, from
    ``eigvalsh``/``eigh`` of ``p``). A zero matrix has entropy 0.
    """
    trace = torch.diagonal(p, dim1=-2, dim2=-1).sum(dim=-1)
    has_mass = trace > 0
    safe_trace = torch.where(has_mass, trace, torch.ones_like(trace))
    if alpha == 2.0 and eigenvalues is None:
        purity = (p * p).sum(dim=(-2, -1)) / safe_trace.square()
        purity = torch.where(has_mass & (purity > 0), purity, torch.ones_like(purity))
        return -torch.log(purity)
    if eigenvalues is None:
        eigenvalues = torch.linalg.eigvalsh(p)
    lam = eigenvalues / safe_trace.unsqueeze(-1)
    return torch.where(has_mass, entropy_from_spectrum(lam, alpha), torch.zeros_like(trace))


def matrix_entropy(
    x: torch.Tensor,
    *,
    alpha: float = 1.0,
    is_gram: bool = False,
    center: bool = False,
    route: str = "auto",
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Matrix entropy ``H(G(x))`` in nats (SPEC §1; arXiv 2406.03999 Def. 3.1).

    Args:
        x: features ``(..., n, d)`` with samples as rows, or a Gram matrix ``(..., n, n)`` when
            ``is_gram=True``. Zero rows are allowed: they add a zero row and column to the Gram,
            which is normalised by its trace, so the result equals that of the non-zero rows
            (a row of norm ≤ 1e-12 × the largest row norm of ``x`` counts as a zero row). The value
            does not depend on the scale of ``x``, from subnormals to the largest finite numbers
            of its dtype, nor on the scale of each row above that threshold.
        alpha: Rényi order; 1.0 is von Neumann, 2.0 uses the Frobenius shortcut.
        is_gram: ``x`` is already a (symmetric, PSD) Gram matrix.
        center: subtract the mean row before normalising (features only; off by default).
        route: "auto" (``d x d`` matrix ``ẐᵀẐ`` when ``d < n``, else the ``n x n`` Gram),
            "gram" or "dual" to force one. All routes agree to round-off.
        dtype: dtype of the spectrum computation, float64 (default) or float32.

    Returns:
        A tensor of shape ``x.shape[:-2]`` (0-d for one matrix) in ``x``'s dtype,
        between 0 and ``log(min(n, d))`` (clamped there against round-off, with the gradient of
        the unclamped value).

    Example:
        >>> import torch
        >>> from hf_infonc.info import matrix_entropy
        >>> round(float(matrix_entropy(torch.eye(4, dtype=torch.float64))), 6)  # log 4
        1.386294
    """
    alpha = check_alpha(alpha)
    cdtype = compute_dtype(x, dtype) if isinstance(x, torch.Tensor) else None
    if is_gram:
        check_gram(x, "x")
        if center:
            raise ValueError("center=True needs features, not a Gram matrix: pass the features with is_gram=False.")
        if route not in ("auto", "gram"):
            raise ValueError(f"route={route!r} needs features; with is_gram=True only route='gram' (or 'auto') applies.")
    else:
        check_tensor(x, "x")
    n, d = x.shape[-2], x.shape[-1]
    with torch.autocast(device_type=x.device.type, enabled=False):
        if is_gram:
            p = scaled_gram(x, cdtype)
        else:
            p = psd_from_rows(normalize_rows(x, center=center, dtype=cdtype), pick_route(n, d, route))
        h = clamp_entropy(psd_entropy(p, alpha), n if is_gram else min(n, d), n, cdtype)
    return h.to(x.dtype)
