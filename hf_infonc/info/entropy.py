"""Matrix (von Neumann and Rényi) entropy of cosine Gram matrices.

``H(K) = -Σ λᵢ log λᵢ`` with ``λᵢ`` the eigenvalues of ``K / tr(K)`` (nats); Rényi order α:
``H_α = log(Σ λᵢ^α) / (1 - α)``, α = 2 without eigen-decomposition: ``H₂ = -log(‖K‖_F² / tr(K)²)``.
Song et al., arXiv 2409.16767 §3 and arXiv 2406.03999 §3 (after Giraldo, Rao & Principe 2014);
``exp(H)`` is the effective rank. Numerics (float64 spectra outside autocast, the eigenvalue floor,
scale invariance, the round-off clamp to ``[0, log k]``): docs/theory.md §6.
"""

from __future__ import annotations

import math

import torch

from hf_infonc.info._kernels import EIGENVALUE_FLOOR, spectral_entropy
from hf_infonc.info.gram import (
    check_gram, check_options, check_psd_spectrum, check_tensor, normalize_rows, pick_route, psd_from_rows, scaled_gram,
    spectrum_dtype,
)
from hf_infonc.info.ranges import clamp_entropy

__all__ = ["EIGENVALUE_FLOOR", "check_alpha", "gram_entropy", "matrix_entropy", "psd_entropy"]


def check_alpha(alpha: float) -> float:
    """Validate a Rényi order: a finite number ≥ 0 (α = 1 is von Neumann)."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise TypeError(f"alpha must be a number (Rényi order, 1.0 = von Neumann), got {alpha!r}.")
    if not math.isfinite(alpha) or alpha < 0:
        raise ValueError(f"alpha={alpha} is invalid; the Rényi order must be finite and ≥ 0 (1.0 = von Neumann).")
    return float(alpha)


def psd_entropy(p: torch.Tensor, alpha: float = 1.0, eigenvalues: torch.Tensor | None = None) -> torch.Tensor:
    """Entropy of the trace-normalised PSD ``p`` ``(..., k, k)`` (0 for a zero matrix), by autograd."""
    return spectral_entropy(p, alpha, need_grad=False, eigenvalues=eigenvalues).h


def gram_entropy(p: torch.Tensor, alpha: float, name: str) -> torch.Tensor:
    """:func:`psd_entropy` of a Gram matrix given by the caller (``is_gram=True``, scaled by
    :func:`~hf_infonc.info.gram.scaled_gram`), after checking from its spectrum that it is PSD."""
    return psd_entropy(p, alpha, check_psd_spectrum(torch.linalg.eigvalsh(p), name))


def matrix_entropy(
    x: torch.Tensor, *, alpha: float = 1.0, is_gram: bool = False, center: bool = False, route: str = "auto",
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Matrix entropy ``H(G(x))`` in nats (docs/theory.md §1; arXiv 2406.03999 Def. 3.1).

    Args:
        x: features ``(..., n, d)`` with samples as rows, or a Gram matrix ``(..., n, n)`` when
            ``is_gram=True``. Zero rows (norm ≤ 1e-12 × the largest row norm) add nothing.
        alpha: Rényi order; 1.0 is von Neumann, 2.0 uses the Frobenius shortcut.
        is_gram: ``x`` is already a (symmetric, PSD) Gram matrix.
        center: subtract the mean row before normalising (features only; off by default).
        route: "auto" (``d x d`` dual ``ẐᵀẐ`` when ``d < n``, else the ``n x n`` Gram), "gram" or
            "dual"; all routes agree to round-off.
        dtype: dtype of the spectrum computation, float64 (default) or float32.

    Returns:
        A tensor of shape ``x.shape[:-2]`` in ``x``'s dtype, in ``[0, log(min(n, d))]`` (clamped there
        against round-off, with the gradient of the unclamped value).
    """
    alpha = check_alpha(alpha)
    (check_gram if is_gram else check_tensor)(x, "x")
    cdtype = spectrum_dtype(dtype)
    check_options(is_gram, center, route, "a Gram matrix")
    n, d = x.shape[-2], x.shape[-1]
    with torch.autocast(device_type=x.device.type, enabled=False):
        if is_gram:
            h = gram_entropy(scaled_gram(x, cdtype), alpha, "x")
        else:
            h = psd_entropy(psd_from_rows(normalize_rows(x, center=center, dtype=cdtype), pick_route(n, d, route)), alpha)
        h = clamp_entropy(h, n if is_gram else min(n, d), n, cdtype)
    return h.to(x.dtype)
