"""Neural-collapse measures NC1 to NC4 (Papyan, Han & Donoho 2020) from class statistics (docs/theory.md §5).

``M``: the ``C x d`` centred class means, ``W``: the ``C x d`` head. NC1 truncates ``Σ_B⁺`` to rank
``min(C−1, d)`` (Papyan et al.'s ``svds(Σ_B, k=C−1)``); NC2 is rhubarbwu/neural-collapse's ``simplex_etf_error``.
Float64, scale-invariant (docs/theory.md §6), inputs never modified.
"""

from __future__ import annotations

import math
import warnings
from typing import Literal

import torch

from hf_infonc.info.gram import check_choice, check_tensor, normalize_rows
from hf_infonc.info.ranges import clamp_float, roundoff_slack

GlobalMean = Literal["class", "sample"]
GLOBAL_MEANS: tuple[str, ...] = ("class", "sample")

#: Values of largest |entry| in ``[2^-SAFE_EXPONENT, 2^SAFE_EXPONENT]`` are squared and summed as they are.
SAFE_EXPONENT = 256


def storage_exponent(biggest: float) -> int:
    """The power of two ``e`` to divide values of largest magnitude ``biggest`` by before squaring them
    in float64: 0 inside the safe range (:data:`SAFE_EXPONENT`), else the exponent of ``biggest``."""
    if not biggest > 0 or not math.isfinite(biggest):
        return 0
    exponent = math.frexp(biggest)[1]
    return 0 if abs(exponent) <= SAFE_EXPONENT else exponent


def ldexp(x: torch.Tensor, exponent: int) -> torch.Tensor:
    """``x · 2^exponent``, exact unless the result over- or underflows (in factors of at most ``2^±1000``)."""
    while exponent:
        step = max(-1000, min(1000, exponent))
        x = x * math.ldexp(1.0, step)
        exponent -= step
    return x


def _unit_frobenius(x: torch.Tensor) -> torch.Tensor | None:
    """``x / ‖x‖_F`` via ``x / max |x|`` (no overflow or underflow at any scale); ``None`` when ``x`` is zero."""
    biggest = x.abs().amax()
    if float(biggest) == 0.0:
        return None
    scaled = x / biggest
    return scaled / torch.linalg.matrix_norm(scaled)


def _as_float64(x: torch.Tensor, name: str) -> torch.Tensor:
    """A float64 copy of the checked matrix ``x``."""
    return check_tensor(x, name, shape=(None, None)).detach().to(torch.float64)


def global_mean(means: torch.Tensor, counts: torch.Tensor, how: GlobalMean = "class") -> torch.Tensor:
    """``μ_G`` from the class means ``(C, d)`` and counts ``(C,)``: **[choice]** their plain mean (``"class"``,
    the default) or the sample-weighted mean (``"sample"``)."""
    check_choice(how, "global_mean", GLOBAL_MEANS)
    means = _as_float64(means, "means")
    if how == "class":
        return means.mean(dim=0)
    weights = counts.to(torch.float64)
    return (weights @ means) / weights.sum()


def within_class_covariance(counts: torch.Tensor, sums: torch.Tensor, second_moment: torch.Tensor) -> torch.Tensor:
    """Symmetric ``Σ_W = (Σ_i h_i h_iᵀ − Σ_c s_c s_cᵀ / n_c) / N`` from the counts ``(C,)``, class sums
    ``s_c`` ``(C, d)`` and ``second_moment`` ``(d, d)`` (float64; empty classes contribute 0)."""
    counts = counts.to(torch.float64)
    sums = _as_float64(sums, "sums")
    second_moment = _as_float64(second_moment, "second_moment")
    total = counts.sum()
    if total <= 0:
        raise ValueError("within_class_covariance needs at least one sample (all counts are 0).")
    present = counts > 0
    s = sums[present]
    between = (s / counts[present].unsqueeze(1)).T @ s
    sigma = (second_moment - between) / total
    return 0.5 * (sigma + sigma.T)


def nc1(sigma_w: torch.Tensor, centred_means: torch.Tensor) -> float:
    """NC1 ``= tr(Σ_W Σ_B⁺) / C = Σ_{j≤r} v_jᵀ Σ_W v_j / s_j²`` (SVD ``M = U S Vᵀ``, ``r = min(C−1, d)``,
    directions with ``s_j ≤ s_1·max(C, d)·eps`` dropped with a warning); NaN with a warning when ``M = 0``."""
    sigma_w = _as_float64(sigma_w, "sigma_w")
    m = _as_float64(centred_means, "centred_means")
    c, d = m.shape
    if sigma_w.shape != (d, d):
        raise ValueError(f"sigma_w has shape {tuple(sigma_w.shape)}, expected ({d}, {d}) to match the means.")
    # NC1 is unchanged when M is scaled by c and Σ_W by c²: both are divided by their largest |entry| (no
    # overflow or underflow of s_j²) and the scales applied at the end
    m_scale = float(m.abs().amax()) or 1.0  # M = 0 is caught below
    w_scale = float(sigma_w.abs().amax()) or 1.0  # Σ_W = 0: NC1 = 0
    _, s, vh = torch.linalg.svd(m / m_scale, full_matrices=False)
    rank = min(c - 1, d)
    s, vh = s[:rank], vh[:rank]
    if s.numel() == 0 or float(s[0]) == 0.0:
        warnings.warn("NC1 is undefined: all class means coincide (Σ_B = 0); returning NaN.", RuntimeWarning,
                      stacklevel=2)
        return float("nan")
    tol = float(s[0]) * max(c, d) * torch.finfo(torch.float64).eps
    keep = s > tol
    if not bool(keep.all()):
        warnings.warn(f"NC1: Σ_B has numerical rank {int(keep.sum())} < {rank} = min(C-1, d); the pseudo-inverse "
                      f"drops the {int((~keep).sum())} null direction(s).", RuntimeWarning, stacklevel=2)
        s, vh = s[keep], vh[keep]
    quad = torch.einsum("jd,de,je->j", vh, sigma_w / w_scale, vh)
    # Σ_W is PSD, so the value is ≥ 0; round-off in the one-pass Σ_W can leave ~ -1e-17 at collapse.
    value = max(0.0, float((quad / s.square()).sum()))
    return value * (w_scale / m_scale) / m_scale  # the scales, in an order that overflows only if NC1 does


def nc2(centred_means: torch.Tensor) -> float:
    """NC2 ``= ‖ MMᵀ/‖MMᵀ‖_F − E/‖E‖_F ‖_F`` with ``E = I − 11ᵀ/C`` (0 at a simplex ETF); NaN with a warning
    when ``M = 0``."""
    m = _as_float64(centred_means, "centred_means")
    unit = _unit_frobenius(m)  # MMᵀ/‖MMᵀ‖_F does not depend on the scale of M (and ‖unit unitᵀ‖_F ≥ 1/√C)
    if unit is None:
        warnings.warn("NC2 is undefined: all class means coincide; returning NaN.", RuntimeWarning, stacklevel=2)
        return float("nan")
    gram = unit @ unit.T
    e = torch.eye(m.shape[0], dtype=torch.float64) - 1.0 / m.shape[0]  # a simplex ETF's Gram, up to scale
    return float(torch.linalg.matrix_norm(gram / torch.linalg.matrix_norm(gram) - e / torch.linalg.matrix_norm(e)))


def nc2_equinorm(centred_means: torch.Tensor) -> float:
    """``std_c ‖μ_c − μ_G‖ / mean_c ‖μ_c − μ_G‖`` (population std; 0 when the norms are equal)."""
    unit = _unit_frobenius(_as_float64(centred_means, "centred_means"))  # the ratio does not depend on the scale
    if unit is None:
        return float("nan")
    norms = torch.linalg.vector_norm(unit, dim=1)  # not all 0: ‖unit‖_F = 1
    return float(norms.std(correction=0) / norms.mean())


def nc2_equiangular(centred_means: torch.Tensor) -> float:
    """``mean_{c≠c'} |cos(μ_c − μ_G, μ_c' − μ_G) + 1/(C−1)|`` (0 at a simplex ETF)."""
    m = _as_float64(centred_means, "centred_means")
    c = m.shape[0]
    unit = normalize_rows(m)  # a zero row (a class mean at the global mean) has cosine 0 with the others
    cos = unit @ unit.T
    off = ~torch.eye(c, dtype=torch.bool)
    return float((cos[off] + 1.0 / (c - 1)).abs().mean())


def nc3(head: torch.Tensor, centred_means: torch.Tensor) -> float:
    """NC3 ``= ‖ W/‖W‖_F − M/‖M‖_F ‖_F`` (self-duality of the head rows and centred means)."""
    w = _as_float64(head, "head")
    m = _as_float64(centred_means, "centred_means")
    if w.shape != m.shape:
        raise ValueError(
            f"head has shape {tuple(w.shape)} but the class means have {tuple(m.shape)}; NC3 needs (C, d) for both."
        )
    unit_w, unit_m = _unit_frobenius(w), _unit_frobenius(m)
    if unit_w is None or unit_m is None:
        warnings.warn("NC3 is undefined: the head or the centred means are all zero; returning NaN.", RuntimeWarning,
                      stacklevel=2)
        return float("nan")
    # the distance of two unit vectors: in [0, 2] (clamped against round-off)
    distance = float(torch.linalg.matrix_norm(unit_w - unit_m))
    return clamp_float(distance, 0.0, 2.0, roundoff_slack(torch.float64, w.numel()))


def head_predictions(features: torch.Tensor, head: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``argmax_c (W h + b)_c`` for each row ``h`` of ``features`` (float64 ``W``: ``(C, d)``); features, head
    and bias are scaled by powers of two (exact, same argmax) so that ``W h`` neither overflows nor underflows."""
    f = features.to(torch.float64)
    exp_f = storage_exponent(float(f.abs().amax()) if f.numel() else 0.0)
    exp_w = storage_exponent(float(head.abs().amax()))
    scores = ldexp(f, -exp_f) @ ldexp(head, -exp_w).T
    if bias is not None:
        scores = scores + ldexp(bias, -(exp_f + exp_w))
    return scores.argmax(dim=1)


def nearest_center_predictions(features: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """``argmin_c (‖μ_c‖² − 2 h·μ_c)`` in float64 for each row ``h`` of ``features`` (NaN rows of ``centers``,
    i.e. absent classes, are never chosen)."""
    f = features.detach().to(torch.float64)
    mu = centers.detach().to(device=f.device, dtype=torch.float64)
    valid = torch.isfinite(mu).all(dim=1)
    if not bool(valid.any()):
        raise ValueError("nearest_center_predictions: no class centre is defined (all rows are NaN).")
    mu_safe = torch.where(valid.unsqueeze(1), mu, torch.zeros_like(mu))
    # the same power of two for both (exact, same argmin) when their squares would leave float64's range
    exponent = storage_exponent(max(float(f.abs().amax()) if f.numel() else 0.0, float(mu_safe.abs().amax())))
    f, mu_safe = ldexp(f, -exponent), ldexp(mu_safe, -exponent)
    score = (mu_safe * mu_safe).sum(dim=1) - 2.0 * (f @ mu_safe.T)
    score = torch.where(valid.unsqueeze(0), score, torch.full_like(score, math.inf))
    return score.argmin(dim=1)


__all__ = [
    "GLOBAL_MEANS", "SAFE_EXPONENT", "global_mean", "head_predictions", "ldexp", "nc1", "nc2", "nc2_equiangular",
    "nc2_equinorm", "nc3", "nearest_center_predictions", "storage_exponent", "within_class_covariance",
]
