"""Matrix mutual information, MIR and HDR between two Gram matrices (docs/theory.md §1).

``MI(K₁, K₂) = H(K₁) + H(K₂) - H(K₁ ⊙ K₂)``, ⊙ the Hadamard product of the ``n x n`` Grams (arXiv
2406.03999 Def. 3.2; not the element-wise product of the *features* of a helper in the authors' code).
``MIR = MI / min(H(K₁), H(K₂))`` and ``HDR = |H(K₁) - H(K₂)| / max(H(K₁), H(K₂))`` (arXiv 2409.16767 §3)
are 0/0 when the denominator entropy is 0 (e.g. C = 2 at collapse): **[choice]** ``zero_entropy="nan"``
(default, metrics) returns NaN with a warning, ``"zero"`` returns 0 with a zero gradient (the losses).
"""

from __future__ import annotations

from typing import Literal

import torch

from hf_infonc.info._kernels import EntropyTerms, mir_hdr, reduced_basis
from hf_infonc.info.entropy import check_alpha, gram_entropy, psd_entropy
from hf_infonc.info.gram import (
    check_choice, check_gram, check_options, check_tensor, normalize_rows, pick_route, psd_from_rows, row_kronecker,
    scaled_gram, spectrum_dtype,
)
from hf_infonc.info.ranges import clamp_entropy, clamp_mutual_information

__all__ = [
    "EntropyTerms", "entropy_terms", "hdr", "information_measures", "matrix_mutual_information", "mir", "mir_hdr",
]

ZeroEntropy = Literal["nan", "zero"]


def _check_pair(a: torch.Tensor, b: torch.Tensor, is_gram: bool) -> None:
    check = check_gram if is_gram else check_tensor
    check(a, "a")
    check(b, "b")
    if a.shape[-2] != b.shape[-2]:
        raise ValueError(
            f"`a` has {a.shape[-2]} rows but `b` has {b.shape[-2]}; both must describe the same n "
            f"samples in the same order (rows = samples)."
        )
    if a.shape[:-2] != b.shape[:-2]:
        raise ValueError(
            f"`a` and `b` have different batch dimensions {tuple(a.shape[:-2])} and "
            f"{tuple(b.shape[:-2])}; leading (batch) dimensions must match."
        )


def _side(zn: torch.Tensor, route: str, alpha: float, want_factor: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Entropy of one side, and its factor in the Kronecker joint: the rank-reduced ``Ẑ V_r`` on the dual
    route when eigen-pairs are at hand, else ``Ẑ``."""
    chosen = pick_route(zn.shape[-2], zn.shape[-1], route)
    p = psd_from_rows(zn, chosen)
    if chosen == "dual" and want_factor and alpha != 2.0:
        eigenvalues, eigenvectors = torch.linalg.eigh(p)
        return psd_entropy(p, alpha, eigenvalues), zn @ reduced_basis(eigenvalues, eigenvectors, zn.shape[-2])
    return psd_entropy(p, alpha), zn


def entropy_terms(
    a: torch.Tensor, b: torch.Tensor, *, alpha: float = 1.0, is_gram: bool = False, center: bool = False,
    route: str = "auto", dtype: torch.dtype | None = None, joint: bool = True,
) -> EntropyTerms:
    """Validate ``a``, ``b`` and compute ``H(K₁)``, ``H(K₂)`` and optionally ``H(K₁ ⊙ K₂)``, each clamped to
    ``[0, log k]`` (straight-through); ``route`` (docs/theory.md §6): "gram" (every ``n x n`` matrix), "dual"
    (the ``ẐᵀẐ`` marginals and the Kronecker joint) or "auto" (the cheapest per term)."""
    alpha = check_alpha(alpha)
    _check_pair(a, b, is_gram)
    cdtype = spectrum_dtype(dtype)
    check_options(is_gram, center, route, "Gram matrices")
    with torch.autocast(device_type=a.device.type, enabled=False):
        terms = raw_entropy_terms(
            a, b, alpha=alpha, is_gram=is_gram, center=center, route=route, dtype=cdtype, joint=joint
        )
    n, d_a, d_b = a.shape[-2], a.shape[-1], b.shape[-1]
    ranks = (n, n, n) if is_gram else (min(n, d_a), min(n, d_b), min(n, d_a * d_b))
    return EntropyTerms(
        clamp_entropy(terms.h_a, ranks[0], n, cdtype),
        clamp_entropy(terms.h_b, ranks[1], n, cdtype),
        None if terms.h_joint is None else clamp_entropy(terms.h_joint, ranks[2], n, cdtype),
    )


def raw_entropy_terms(
    a: torch.Tensor, b: torch.Tensor, *, alpha: float = 1.0, is_gram: bool = False, center: bool = False,
    route: str = "auto", dtype: torch.dtype = torch.float64, joint: bool = True,
) -> EntropyTerms:
    """The entropies of :func:`entropy_terms` before their clamp, without validation (the inputs must be
    valid, ``dtype`` a spectrum dtype; Grams are checked PSD from the spectrum that is computed anyway):
    what the round-off clamp starts from, for diagnostics and tests."""
    if is_gram:
        ka, kb = scaled_gram(a, dtype), scaled_gram(b, dtype)
        h_a, h_b = gram_entropy(ka, alpha, "a"), gram_entropy(kb, alpha, "b")  # both PSD: so is ka ⊙ kb (Schur)
        return EntropyTerms(h_a, h_b, psd_entropy(ka * kb, alpha) if joint else None)

    za = normalize_rows(a, center=center, dtype=dtype)
    zb = normalize_rows(b, center=center, dtype=dtype)
    n = za.shape[-2]
    h_a, fa = _side(za, route, alpha, joint)
    h_b, fb = _side(zb, route, alpha, joint)
    if not joint:
        return EntropyTerms(h_a, h_b, None)
    kron_dim = fa.shape[-1] * fb.shape[-1]
    if route == "dual" or (route == "auto" and kron_dim < n):
        h_joint = psd_entropy(psd_from_rows(row_kronecker(fa, fb), "dual" if kron_dim < n else "gram"), alpha)
    else:
        h_joint = psd_entropy(psd_from_rows(za, "gram") * psd_from_rows(zb, "gram"), alpha)
    return EntropyTerms(h_a, h_b, h_joint)


def information_measures(
    a: torch.Tensor, b: torch.Tensor, zero_entropy: str, label: str = ""
) -> tuple[EntropyTerms, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The clamped float64 terms of ``G(a)`` and ``G(b)``, their MI (in ``[0, min H]``), MIR and HDR
    (in [0, 1]; ``zero_entropy`` as in :func:`~hf_infonc.info._kernels.safe_ratio`)."""
    terms = entropy_terms(a, b, dtype=torch.float64)
    mi = clamp_mutual_information(terms, a.shape[-2], torch.float64)
    mir_value, hdr_value = mir_hdr(terms.h_a, terms.h_b, mi, zero_entropy, label)  # type: ignore[arg-type]
    return terms, mi, mir_value, hdr_value  # type: ignore[return-value]


def matrix_mutual_information(
    a: torch.Tensor, b: torch.Tensor, *, alpha: float = 1.0, is_gram: bool = False, center: bool = False,
    route: str = "auto", dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Matrix mutual information ``H(K₁) + H(K₂) - H(K₁ ⊙ K₂)`` in nats (arXiv 2406.03999 Def. 3.2).

    ``a``, ``b``: features ``(..., n, d₁)``, ``(..., n, d₂)`` of the same n samples (or ``(..., n, n)``
    Grams with ``is_gram=True``); other arguments as in :func:`~hf_infonc.info.matrix_entropy`.
    Returns a tensor of shape ``a.shape[:-2]`` in ``a``'s dtype (at collapse:
    :func:`~hf_infonc.info.mutual_information_at_collapse`).
    """
    terms = entropy_terms(a, b, alpha=alpha, is_gram=is_gram, center=center, route=route, dtype=dtype)
    return clamp_mutual_information(terms, a.shape[-2], terms.h_a.dtype).to(a.dtype)


def mir(
    a: torch.Tensor, b: torch.Tensor, *, alpha: float = 1.0, is_gram: bool = False, center: bool = False,
    route: str = "auto", dtype: torch.dtype | None = None, zero_entropy: ZeroEntropy = "nan",
) -> torch.Tensor:
    """Matrix mutual information ratio ``MI(K₁, K₂) / min(H(K₁), H(K₂))``, in [0, 1] (arXiv 2409.16767 §3).

    Arguments as in :func:`matrix_mutual_information`; ``zero_entropy``: the value when the smaller entropy
    is 0, "nan" (with a warning) or "zero". At neural collapse: :func:`~hf_infonc.info.mir_at_collapse`.
    """
    check_choice(zero_entropy, "zero_entropy", ("nan", "zero"))
    terms = entropy_terms(a, b, alpha=alpha, is_gram=is_gram, center=center, route=route, dtype=dtype)
    mi = clamp_mutual_information(terms, a.shape[-2], terms.h_a.dtype)
    return mir_hdr(terms.h_a, terms.h_b, mi, zero_entropy, hdr=False)[0].to(a.dtype)


def hdr(
    a: torch.Tensor, b: torch.Tensor, *, alpha: float = 1.0, is_gram: bool = False, center: bool = False,
    route: str = "auto", dtype: torch.dtype | None = None, zero_entropy: ZeroEntropy = "nan",
) -> torch.Tensor:
    """Matrix entropy difference ratio ``|H(K₁) - H(K₂)| / max(H(K₁), H(K₂))``, in [0, 1] (arXiv 2409.16767 §3).

    0 at neural collapse; 0/0 only when both entropies are 0. Arguments as in :func:`mir`.
    """
    check_choice(zero_entropy, "zero_entropy", ("nan", "zero"))
    terms = entropy_terms(a, b, alpha=alpha, is_gram=is_gram, center=center, route=route, dtype=dtype, joint=False)
    return mir_hdr(terms.h_a, terms.h_b, None, zero_entropy)[1].to(a.dtype)
