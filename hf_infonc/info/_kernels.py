"""The one implementation of the spectral pieces of :mod:`hf_infonc.info` (docs/theory.md §6).

Row normalisation, routes, spectrum → entropy and its closed-form gradient, CMA's groups and
weights, MIR / HDR from entropy terms: the validated API, the general closed-form path
(:mod:`~hf_infonc.info.spectral`) and the fused path (:mod:`~hf_infonc.info.fused`) all call these.
Nothing here validates its inputs. Pure torch.
"""

from __future__ import annotations

import contextlib
import functools
import math
import warnings
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch

#: Trace-normalised eigenvalues at or below this floor are treated as exact zeros.
EIGENVALUE_FLOOR: dict[torch.dtype, float] = {torch.float64: 1e-12, torch.float32: 1e-7}

#: A row is a zero row when its L2 norm is at most this fraction of the largest row norm of its
#: matrix (a relative rule: ``Z`` and ``Z * 1e-300`` have the same zero rows). Zero rows come out of
#: the normalisation as exact zeros, with a zero gradient.
ZERO_ROW_TOL = 1e-12

#: An entropy (nats) at or below this is treated as 0 in the denominators of MIR and HDR.
ZERO_ENTROPY_TOL = 1e-9

Route = Literal["auto", "gram", "dual"]
ROUTES: tuple[str, ...] = ("auto", "gram", "dual")
ZeroEntropy = Literal["nan", "zero", "masked"]

# float16 / bfloat16 / float32 rows are normalised in float64, where their squares always fit
_FLOAT64_SAFE = (torch.float16, torch.bfloat16, torch.float32)
_promote_types = functools.lru_cache(maxsize=None)(torch.promote_types)


def wider(a: torch.dtype, b: torch.dtype) -> torch.dtype:
    """``torch.promote_types(a, b)``, cached (it is a dispatched operation)."""
    return a if a is b else _promote_types(a, b)


@functools.lru_cache(maxsize=256)
def constant(values: object, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A small constant tensor, cached (making the same few numbers every step costs an operation)."""
    return torch.tensor(values, dtype=dtype, device=device)


def no_autocast(device_type: str) -> contextlib.AbstractContextManager:
    """Disable autocast for the spectra (eigen-solvers never run in half precision)."""
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()


def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for 2-D or 3-D operands through ``mm`` / ``bmm`` (``@`` on 3-D tensors dispatches
    expand/view/reshape: six more operations per call)."""
    return torch.bmm(a, b) if a.dim() == 3 else torch.mm(a, b)


def eigen(p: torch.Tensor, vectors: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Eigenvalues (ascending) of the symmetric ``p``, and with ``vectors`` its eigenvectors (else ``None``)."""
    return torch.linalg.eigh(p) if vectors else (torch.linalg.eigvalsh(p), None)


def gram(z: torch.Tensor, dual: bool = False) -> torch.Tensor:
    """``ẐẐᵀ`` of the rows ``z`` (``(..., n, d)``, 2-D or 3-D), or with ``dual`` its dual ``ẐᵀẐ``."""
    return matmul(z.mT, z) if dual else matmul(z, z.mT)


class UnitRows(NamedTuple):
    """The rows of a matrix divided by their L2 norms (:func:`unit_rows`), and what the gradient needs."""

    #: ``ẑ = z / ‖z‖`` in the requested dtype; zero rows are exact zeros.
    rows: torch.Tensor
    #: ``‖z / scale‖`` per row (``(..., n, 1)``, working dtype), ``inf`` for zero rows.
    norms: torch.Tensor
    #: the per-matrix pre-scale (``(..., 1, 1)``), or ``None`` when the rows were not pre-scaled.
    scale: torch.Tensor | None


def unit_rows(z: torch.Tensor, *, center: bool = False, dtype: torch.dtype | None = None) -> UnitRows:
    """Divide each row of ``z`` (``(..., n, d)``) by its L2 norm, over the whole float range.

    The one row normalisation of :mod:`hf_infonc.info` (docs/theory.md §6): no norm overflows or
    underflows; a row of norm ≤ :data:`ZERO_ROW_TOL` times the largest of its (uncentred) matrix comes
    out as exact zeros with a zero gradient. ``center=True`` subtracts the mean row first. Rows in
    ``dtype`` (default ``z``'s); NaN / inf propagate. Closed-form gradient: :func:`unit_rows_backward`.
    """
    source = z.dtype
    out_dtype = source if dtype is None else dtype
    safe = source in _FLOAT64_SAFE
    work = torch.float64 if safe else wider(source, out_dtype)
    x = z if work is source else z.to(work)
    grad = x.requires_grad
    scale = None
    if not safe:  # the largest |entry|, at least the smallest normal number (a zero matrix stays zero)
        scale = (x.detach() if grad else x).abs().amax(dim=(-2, -1), keepdim=True).clamp_min_(torch.finfo(work).tiny)
        x = x / scale
    reference = None
    if center:  # zero rows are judged against the uncentred rows
        reference = torch.linalg.vector_norm(x.detach(), dim=-1, keepdim=True).amax(dim=-2, keepdim=True)
        x = x - x.mean(dim=-2, keepdim=True)
    norms = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    if reference is None:
        reference = (norms.detach() if grad else norms).amax(dim=-2, keepdim=True)
    zero = norms <= reference.mul_(ZERO_ROW_TOL)  # (reference is a fresh tensor)
    # zero rows: x / inf = 0, and so is their gradient (in place when autograd does not record)
    norms = norms.masked_fill(zero, math.inf) if grad else norms.masked_fill_(zero, math.inf)
    rows = x / norms
    return UnitRows(rows if out_dtype is work else rows.to(out_dtype), norms, scale)


def unit_rows_backward(grad: torch.Tensor, unit: UnitRows, *, center: bool = False) -> torch.Tensor:
    """Closed-form gradient through :func:`unit_rows` (docs/theory.md §6), as ``/ ‖z/s‖ / s`` so that no
    divisor overflows; zero rows get 0. In the working dtype of the forward."""
    zn = unit.rows
    grad = torch.addcmul(grad, zn, (zn * grad).sum(dim=-1, keepdim=True), value=-1.0) / unit.norms
    if unit.scale is not None:
        grad = grad / unit.scale
    if center:
        grad = grad - grad.mean(dim=-2, keepdim=True)
    return grad


def pick_route(n: int, d: int, route: str) -> str:
    """Resolve ``route`` for ``n`` rows of dimension ``d``: "dual" when ``d < n``, else "gram"."""
    if route not in ROUTES:
        raise ValueError(f"route={route!r} is not one of {ROUTES}.")
    if route == "auto":
        return "dual" if d < n else "gram"
    return route


def kronecker_joint(n: int, d_a: int, d_b: int, rank_bound_b: int | None, alpha: float) -> bool:
    """Whether the closed-form paths read the joint ``H(K₁ ⊙ K₂)`` from the Kronecker dual rather than
    the ``n x n`` Hadamard product: both marginals on their duals and ``min(n, d_a)·min(n, d_b,
    rank_bound_b) < n`` (docs/theory.md §6); decided from the shapes, without a host sync."""
    r_b = min(n, d_b) if rank_bound_b is None else min(n, d_b, rank_bound_b)
    return alpha != 2.0 and d_a < n and d_b < n and min(n, d_a) * r_b < n


def reduced_basis(eigenvalues: torch.Tensor, eigenvectors: torch.Tensor, n: int) -> torch.Tensor:
    """The eigenvectors ``V_r`` of ``ẐᵀẐ`` (``d x d``, ``n`` rows) spanning the numerical row space,
    detached (docs/theory.md §6). One host read, for the rank."""
    lam = eigenvalues.detach()
    tol = lam.amax(dim=-1, keepdim=True).clamp_min(0) * max(n, eigenvectors.shape[-1]) * torch.finfo(lam.dtype).eps
    rank = max(int((lam > tol).sum(dim=-1).amax()), 1)
    return eigenvectors.detach()[..., -rank:]  # eigh sorts ascending: keep the top ones


def spectrum_entropy(
    lam: torch.Tensor, trace: torch.Tensor, alpha: float = 1.0, need_grad: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Entropies of the spectra ``lam`` (``(..., k)``) of matrices of trace ``trace`` (``(..., 1)``, > 0)
    and, with ``need_grad``, the weights ``w`` of ``dH/dP = V diag(w) Vᵀ`` (docs/theory.md §6).

    α = 1: ``H = -Σ λ̂ log λ̂``; otherwise ``log(Σ λ̂^α) / (1 - α)``, its sum taken relative to its
    largest term (no underflow at any α); ``λ̂ ≤`` :data:`EIGENVALUE_FLOOR` counts as 0. Differentiable
    by autograd too.
    """
    lhat = lam / trace
    keep = lhat > EIGENVALUE_FLOOR.get(lam.dtype, 1e-7)
    # masked eigenvalues are replaced by 1, whose λ log λ and log λ are 0
    safe = torch.where(keep, lhat, constant(1.0, lhat.dtype, lhat.device))
    if alpha == 1.0:
        h = torch.special.entr(safe).sum(dim=-1)  # -Σ λ̂ log λ̂
        if not need_grad:
            return h, None
        du = safe.log() + keep  # -∂H/∂λ̂ = log λ̂ + 1 on the kept eigenvalues, 0 elsewhere
    else:
        # log Σ λ̂^α = top + log Σ exp(α log λ̂ - top), top = α log max λ̂: no underflow at any order α
        scaled = safe.log() * alpha  # 0 where masked
        positive = keep.any(dim=-1, keepdim=True)
        top = torch.where(positive, torch.where(keep, scaled, -math.inf).amax(dim=-1, keepdim=True), 0.0).detach()
        powers = torch.where(keep, torch.exp(torch.where(keep, scaled - top, 0.0)), 0.0)  # λ̂^α / exp(top)
        total = torch.where(positive, powers.sum(dim=-1, keepdim=True), 1.0)  # ≥ 1 where positive
        h = torch.where(positive, (total.log() + top) / (1.0 - alpha), 0.0).squeeze(-1)
        if not need_grad:
            return h, None
        du = powers / (safe * total) * (alpha / (alpha - 1.0))  # -∂H/∂λ̂, 0 where masked
    # w = (u - uᵀλ̂)/t with u = -du (docs/theory.md §6)
    return h, ((du * lhat).sum(dim=-1, keepdim=True) - du) / trace


class Spectrum:
    """The entropies ``h`` of a batch of PSD matrices ``(..., k, k)`` and what their gradient needs;
    :meth:`grad` gives ``scale·dH/dP``. Built by :func:`spectral_entropy`."""

    __slots__ = ("h", "eigenvalues", "eigenvectors", "weights", "p", "coef_p", "coef_i")

    def __init__(self, h: torch.Tensor) -> None:
        self.h = h
        self.eigenvalues = self.eigenvectors = self.weights = self.p = self.coef_p = self.coef_i = None

    def grad(self, scale: torch.Tensor | float) -> torch.Tensor:
        """``scale·dH/dP``, ``(..., k, k)``; ``scale`` is a tensor of ``h``'s shape or a number."""
        if self.p is not None:  # α = 2: -2P/‖P‖² + 2I/t
            coef_p, coef_i = self.coef_p * scale, self.coef_i * scale
            g = self.p * coef_p[..., None, None]
            g.diagonal(dim1=-2, dim2=-1).add_(coef_i.unsqueeze(-1))
            return g
        vec = self.eigenvectors
        if isinstance(scale, torch.Tensor) and scale.dim() > 0:
            scale = scale.unsqueeze(-1)
        w = self.weights * scale
        return matmul(vec * (w.unsqueeze(-2) if w.dim() > 1 else w), vec.mT)


def spectral_entropy(
    p: torch.Tensor, alpha: float = 1.0, need_grad: bool = True, eigenvalues: torch.Tensor | None = None
) -> Spectrum:
    """Matrix entropy of a batch of PSD matrices ``p`` (``(..., k, k)``), each normalised by its trace.

    0 for a zero matrix; with ``need_grad`` what the closed-form gradient needs (``eigh``, else
    ``eigvalsh``; α = 2 without either, docs/theory.md §6), or the ``eigenvalues`` when known.
    ``p`` is never modified; differentiable by autograd without ``need_grad``.
    """
    if alpha == 2.0 and eigenvalues is None:
        trace = p.diagonal(dim1=-2, dim2=-1).sum(dim=-1)
        defined_trace = trace > 0
        t = torch.where(defined_trace, trace, 1.0)
        square = (p * p).sum(dim=(-2, -1))
        purity = square / t.square()
        defined = defined_trace & (purity > 0)
        spec = Spectrum(-torch.log(torch.where(defined, purity, 1.0)))
        if need_grad:
            spec.p = p
            spec.coef_p = torch.where(defined, -2.0 / torch.where(defined, square, 1.0), 0.0)
            spec.coef_i = torch.where(defined, 2.0 / t, 0.0)
        return spec
    # trace ≥ 0 (a Gram, a Hadamard product of Grams); a zero matrix has zero eigenvalues and H = 0
    t = p.diagonal(dim1=-2, dim2=-1).sum(dim=-1, keepdim=True).clamp_min(torch.finfo(p.dtype).tiny)
    lam, vec = (eigenvalues, None) if eigenvalues is not None else eigen(p, need_grad)
    h, weights = spectrum_entropy(lam, t, alpha, need_grad)
    spec = Spectrum(h)
    spec.eigenvalues, spec.eigenvectors, spec.weights = lam, vec, weights
    return spec


def class_groups(host_labels: list[int]) -> tuple[list[int], list[list[int]], int, list[float]]:
    """CMA's groups ``S_c`` of a labelled batch, on the host: the classes present (sorted), the samples
    of each in batch order, the width ``max n_c + 1`` (head row, then samples) and the weights
    ``1/(K·log(n_c + 1))`` of ``CMA = Σ_c w_c H(G(S_c))``."""
    members: dict[int, list[int]] = {}
    for i, c in enumerate(host_labels):
        members.setdefault(c, []).append(i)
    present = sorted(members)
    rows = [members[c] for c in present]
    width = max(len(r) for r in rows) + 1
    return present, rows, width, [1.0 / (len(present) * math.log(len(r) + 1)) for r in rows]


def pair_group_weight(n: int) -> float:
    """CMA's weight of each of the ``n`` groups ``[caption i, image i]`` of image–caption pairs."""
    return 1.0 / (n * math.log(2.0))


@dataclass
class EntropyTerms:
    """``H(K₁)``, ``H(K₂)`` and (when asked for) the joint ``H(K₁ ⊙ K₂)``, in the compute dtype."""

    h_a: torch.Tensor
    h_b: torch.Tensor
    h_joint: torch.Tensor | None

    @property
    def mutual_information(self) -> torch.Tensor:
        assert self.h_joint is not None
        return self.h_a + self.h_b - self.h_joint


def split_outputs(
    out: tuple[torch.Tensor, ...], first: bool, terms: bool, joint: bool
) -> tuple[torch.Tensor | None, EntropyTerms | None]:
    """``(group / CMA value or None, EntropyTerms or None)`` from the outputs ``[value?, H₁, H₂, H₁₂?]``."""
    h = out[int(first):]
    return out[0] if first else None, EntropyTerms(h[0], h[1], h[2] if joint else None) if terms else None


def safe_ratio(
    numerator: torch.Tensor, denominator: torch.Tensor, zero_entropy: ZeroEntropy, what: str
) -> torch.Tensor:
    """``numerator / denominator`` where the denominator entropy is > :data:`ZERO_ENTROPY_TOL`; elsewhere
    NaN with a warning (``"nan"``: metrics, one host sync), 0 with a zero gradient (``"zero"``: losses)
    or NaN without a warning nor a host sync (``"masked"``: logging)."""
    defined = denominator > ZERO_ENTROPY_TOL
    ratio = numerator / torch.where(defined, denominator, 1.0)
    if zero_entropy == "zero":
        return torch.where(defined, ratio, 0.0)
    if zero_entropy == "nan":
        if bool(defined.all()):
            return ratio
        warnings.warn(
            f"{what} is 0/0 because a matrix entropy is 0 (all rows parallel, a single row, or C = 2 at "
            f"collapse); returning NaN. Use zero_entropy='zero' to get 0 instead.",
            RuntimeWarning,
            stacklevel=4,
        )
    return torch.where(defined, ratio, math.nan)


def mir_hdr(
    h_a: torch.Tensor, h_b: torch.Tensor, mi: torch.Tensor | None, zero_entropy: ZeroEntropy, label: str = "", *,
    hdr: bool = True,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``MIR = MI / min(H₁, H₂)`` (when ``mi`` is given) and ``HDR = |H₁ − H₂| / max(H₁, H₂)`` (when
    ``hdr``), arXiv 2409.16767 §3, with the zero-entropy rule of :func:`safe_ratio`; the one place
    the package computes them from entropy terms."""
    mir = None if mi is None else safe_ratio(mi, torch.minimum(h_a, h_b), zero_entropy, f"{label}MIR")
    if not hdr:
        return mir, None
    return mir, safe_ratio((h_a - h_b).abs(), torch.maximum(h_a, h_b), zero_entropy, f"{label}HDR")
