"""Input checks, row normalisation, cosine Gram matrices and the choice of route.

Notation (SPEC §1): ``Z`` holds n vectors as rows (``n x d``). The cosine Gram matrix is
``G(Z) = Ẑ Ẑᵀ`` where ``Ẑ`` is ``Z`` with every row L2-normalised, so ``diag(G) = 1`` and
``tr(G) = n``.

Every matrix-information quantity in :mod:`hf_infonc.info` only needs the *non-zero spectrum*
of a trace-normalised PSD matrix. That spectrum can be read from any of three matrices:

* ``"gram"``: the ``n x n`` Gram ``Ẑ Ẑᵀ`` (what the paper's code does);
* ``"dual"``: the ``d x d`` matrix ``Ẑᵀ Ẑ``, which has the same non-zero eigenvalues
  and is far cheaper when ``d < n``;
* for a Hadamard product ``G(A) ⊙ G(B)`` (the joint entropy of the matrix mutual information),
  the Gram of the row-wise Kronecker product ``â_i ⊗ b̂_i``, whose dual is ``(d₁d₂) x (d₁d₂)``.

:func:`unit_rows` is the one row normalisation of the package (the validated functions, the
closed-form and fused losses, the neural-collapse measures): it neither overflows nor underflows
at any scale of the inputs, and its zero-row rule (:data:`ZERO_ROW_TOL`) is relative, so every
measure is the same for ``Z`` and ``c·Z`` over the whole float range of the input dtype.

This module is pure torch: it must never import transformers or datasets.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch

Route = Literal["auto", "gram", "dual"]
ROUTES: tuple[str, ...] = ("auto", "gram", "dual")

#: A row is a zero row when its L2 norm is at most this fraction of the largest row norm of its
#: matrix. The rule is relative, so it does not depend on the scale of the features: ``Z`` and
#: ``Z * 1e-300`` have the same zero rows. Zero rows come out of the normalisation as exact zeros,
#: with a zero gradient.
ZERO_ROW_TOL = 1e-12

#: Source dtypes whose squared entries fit float64's normal range (float32's largest value
#: squared is 1.2e77, its smallest subnormal squared 2e-90): normalised in float64, their row norms
#: can neither overflow nor underflow, so they need no pre-scaling.
_FLOAT64_SAFE = (torch.float16, torch.bfloat16, torch.float32)


def check_tensor(x: object, name: str, *, min_dim: int = 2) -> torch.Tensor:
    """Validate an input of the info functions and return it unchanged.

    Raises ``TypeError`` for a non-tensor or a non-floating dtype, and ``ValueError`` for too few
    dimensions, an empty tensor, or NaN / inf values. Every message names the argument, says what
    was expected and how to fix it.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"`{name}` must be a torch.Tensor of shape (..., n, d), got {type(x).__name__}. "
            f"Convert it first, e.g. torch.as_tensor({name}, dtype=torch.float64)."
        )
    if not (x.is_floating_point()):
        raise TypeError(
            f"`{name}` has dtype {x.dtype}, but a floating-point tensor is expected "
            f"(float16, bfloat16, float32 or float64). Use {name}.double() or {name}.float()."
        )
    if x.dim() < min_dim:
        raise ValueError(
            f"`{name}` has shape {tuple(x.shape)}, but at least {min_dim} dimensions are expected: "
            f"(..., n, d) with samples as rows (or (..., n, n) with is_gram=True). "
            f"For a single vector use {name}.unsqueeze(0)."
        )
    if x.numel() == 0:
        raise ValueError(
            f"`{name}` is empty (shape {tuple(x.shape)}); at least one row and one column are needed."
        )
    if not math.isfinite(float(x.detach().abs().amax())):  # max propagates NaN: one pass, one host read
        n_bad = int((~torch.isfinite(x)).sum())
        raise ValueError(
            f"`{name}` contains {n_bad} NaN or inf value(s); matrix entropies need finite inputs. "
            f"Check the model outputs (e.g. an fp16 overflow) before computing the measure."
        )
    return x


def check_gram(k: torch.Tensor, name: str) -> torch.Tensor:
    """Validate a (batched) Gram matrix: square and symmetric (relative tolerance 1e-5)."""
    check_tensor(k, name)
    if k.shape[-1] != k.shape[-2]:
        raise ValueError(
            f"`{name}` has shape {tuple(k.shape)}, but is_gram=True expects square (..., n, n) "
            f"matrices. Pass features with is_gram=False, or build the Gram with cosine_gram()."
        )
    scale = k.abs().amax()  # relative at every scale (a zero matrix has asym = 0)
    asym = (k - k.transpose(-1, -2)).abs().amax()
    if bool(asym > 1e-5 * scale):
        raise ValueError(
            f"`{name}` is not symmetric (max |K - Kᵀ| = {float(asym):.3g}, relative "
            f"{float(asym / scale):.3g}); is_gram=True expects a symmetric PSD Gram matrix. "
            f"Symmetrise it with (K + K.transpose(-1, -2)) / 2 if the asymmetry is round-off."
        )
    return k


def compute_dtype(x: torch.Tensor, dtype: torch.dtype | None) -> torch.dtype:
    """The dtype the spectra are computed in: float64 unless the caller asks for float32.

    Eigen-solvers never run in half precision (SPEC §1): float16 / bfloat16 are refused.
    """
    if dtype is None:
        return torch.float64
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(
            f"dtype={dtype} is not supported for spectra; use torch.float64 (default) or "
            f"torch.float32. Half precision is never used for eigen-decompositions."
        )
    return dtype


_WIDER: dict[tuple[torch.dtype, torch.dtype], torch.dtype] = {}


def _wider(a: torch.dtype, b: torch.dtype) -> torch.dtype:
    """``torch.promote_types(a, b)``, cached (it is a dispatched operation)."""
    if a is b:
        return a
    wider = _WIDER.get((a, b))
    if wider is None:
        wider = _WIDER[(a, b)] = torch.promote_types(a, b)
    return wider


class UnitRows(NamedTuple):
    """The rows of a matrix divided by their L2 norms (:func:`unit_rows`), and what the gradient needs."""

    #: ``ẑ = z / ‖z‖`` in the requested dtype; zero rows are exact zeros.
    rows: torch.Tensor
    #: ``‖z / scale‖`` per row (``(..., n, 1)``, working dtype), ``inf`` for zero rows.
    norms: torch.Tensor
    #: the per-matrix pre-scale (``(..., 1, 1)``, the largest |entry| or the smallest normal number), or
    #: ``None`` when the rows were not pre-scaled (then ``norms`` are the row norms ``‖z‖`` themselves).
    scale: torch.Tensor | None


def unit_rows(z: torch.Tensor, *, center: bool = False, dtype: torch.dtype | None = None) -> UnitRows:
    """Divide each row of ``z`` (``(..., n, d)``) by its L2 norm, over the whole float range.

    The one row normalisation of :mod:`hf_infonc.info`: the validated functions, the closed-form
    losses (:mod:`~hf_infonc.info.spectral`, :mod:`~hf_infonc.info.fused`) and the
    neural-collapse measures all call it, so they agree on every row by construction.

    * **Scale.** ``‖z‖ = √Σ z²`` overflows in float64 once the entries pass ~1e154 and underflows
      to 0 below ~1e-154 (float32: 1e19 and 1e-19). float16 / bfloat16 / float32 inputs are
      therefore normalised in float64, where their squares always fit (float32's largest value
      squared is 1.2e77, its smallest subnormal squared 2e-90), and the rows cast to ``dtype``.
      A float64 matrix is first divided by its largest |entry| (a per-matrix constant: dividing by
      it changes neither the normalised rows nor their gradient, so it is detached), which puts
      every entry in [-1, 1].
    * **Zero rows.** A row whose norm is at most :data:`ZERO_ROW_TOL` times the largest row norm of
      its matrix (of the *uncentred* matrix, so that a row equal to the mean up to round-off is a
      zero row at every scale) comes out as exact zeros with a zero gradient.
    * **Dtypes.** The work is done in float64 (so a float64 input at 1e300 survives
      ``dtype=torch.float32``, which only applies to the returned rows) and the rows are returned
      in ``dtype`` (default ``z``'s). NaN / inf entries are not checked here (the callers
      validate) and propagate as NaN.

    With ``center=True`` the mean row (over the ``n`` axis) is subtracted after the pre-scale.
    Differentiable (autograd); the closed-form gradient is :func:`unit_rows_backward`.
    """
    source = z.dtype
    out_dtype = source if dtype is None else dtype
    safe = source in _FLOAT64_SAFE  # normalised in float64, where their squares always fit
    work = torch.float64 if safe else _wider(source, out_dtype)
    x = z if work is source else z.to(work)
    grad = x.requires_grad
    scale = None
    if not safe:
        # the largest |entry|, at least the smallest normal number: entries then lie in [-1, 1] (a
        # subnormal matrix's in [2^-52, 1) at worst), their squares far from over- and underflow,
        # and an all-zero matrix stays zero (no 0/0); the zero-row rule is relative to the
        # largest row norm, so it does not depend on this choice
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
    """Closed-form gradient through :func:`unit_rows`: ``dz = (dẑ − ẑ(ẑ·dẑ)) / ‖z‖``, then through
    the centring (``dz − mean(dz)``). Computed as ``/ ‖z/s‖ / s`` with the pre-scale ``s``, so
    neither divisor overflows; zero rows get 0. The result is in the working dtype of the forward."""
    zn = unit.rows
    grad = torch.addcmul(grad, zn, (zn * grad).sum(dim=-1, keepdim=True), value=-1.0) / unit.norms
    if unit.scale is not None:
        grad = grad / unit.scale
    if center:
        grad = grad - grad.mean(dim=-2, keepdim=True)
    return grad


def normalize_rows(z: torch.Tensor, *, center: bool = False, dtype: torch.dtype | None = None) -> torch.Tensor:
    """L2-normalise each row of ``z`` (out of place), in ``dtype`` (default ``z``'s): the rows of
    :func:`unit_rows`. Zero rows (norm ≤ :data:`ZERO_ROW_TOL` × the largest row norm of the matrix)
    come out as exact zeros, with a zero gradient. With ``center=True`` the mean row (over the
    ``n`` axis) is subtracted first.
    """
    return unit_rows(z, center=center, dtype=dtype).rows


def scaled_gram(k: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A (batched) Gram matrix symmetrised, divided by its largest |entry| and cast to ``dtype``.

    The matrix entropies normalise by the trace, so the division (per matrix, detached) changes
    nothing but the range: entries in [-1, 1] keep ``K ⊙ K``, ``‖K‖_F²`` and the trace finite for
    Grams at 1e300, and a float64 Gram survives ``dtype=torch.float32``. A zero matrix stays zero.
    """
    x = k.to(_wider(k.dtype, dtype))
    biggest = torch.linalg.vector_norm(x.detach(), ord=math.inf, dim=(-2, -1), keepdim=True)
    x = x / biggest.masked_fill(biggest == 0, 1.0)
    return (0.5 * (x + x.transpose(-1, -2))).to(dtype)


def cosine_gram(z: torch.Tensor, *, center: bool = False) -> torch.Tensor:
    """Cosine Gram matrix ``G(Z) = Ẑ Ẑᵀ`` of the rows of ``z`` (SPEC §1).

    Args:
        z: features ``(..., n, d)``, samples as rows.
        center: subtract the mean row before normalising (off by default, as in the paper).

    Returns:
        ``(..., n, n)`` tensor in the dtype of ``z`` with unit diagonal (zero for zero rows).
    """
    check_tensor(z, "z")
    zn = normalize_rows(z, center=center)
    return zn @ zn.transpose(-1, -2)


def pick_route(n: int, d: int, route: str) -> str:
    """Resolve ``route`` for ``n`` rows of dimension ``d``: "dual" when ``d < n``, else "gram"."""
    if route not in ROUTES:
        raise ValueError(f"route={route!r} is not one of {ROUTES}.")
    if route == "auto":
        return "dual" if d < n else "gram"
    return route


def psd_from_rows(zn: torch.Tensor, route: str) -> torch.Tensor:
    """The PSD matrix whose spectrum is read: ``Ẑ Ẑᵀ`` (route "gram") or ``Ẑᵀ Ẑ`` ("dual")."""
    if route == "gram":
        return zn @ zn.transpose(-1, -2)
    if route == "dual":
        return zn.transpose(-1, -2) @ zn
    raise ValueError(f"route={route!r} must be resolved to 'gram' or 'dual' first.")


def row_kronecker(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise Kronecker product: row i is ``a_i ⊗ b_i`` (shape ``(..., n, d₁·d₂)``).

    Its Gram is the Hadamard product of the Grams: ``(A⊗B)(A⊗B)ᵀ = (AAᵀ) ⊙ (BBᵀ)``, and unit rows
    stay unit rows, so it is the feature form of the joint matrix ``G(A) ⊙ G(B)``.
    """
    out = a.unsqueeze(-1) * b.unsqueeze(-2)
    return out.reshape(*out.shape[:-2], a.shape[-1] * b.shape[-1])


def reduce_rank(zn: torch.Tensor, eigenvectors: torch.Tensor, eigenvalues: torch.Tensor) -> torch.Tensor:
    """Project unit rows onto their numerical row space, given the eigen-pairs of ``Ẑᵀ Ẑ``.

    Returns ``Ẑ V_r`` (``n x r``) with ``V_r`` the eigenvectors whose eigenvalue exceeds
    ``max(λ) · max(n, d) · eps``, detached. ``(Ẑ V_r)(Ẑ V_r)ᵀ = Ẑ Ẑᵀ`` up to round-off, and the
    gradient is exact as well: a Gram's gradient ``2 ∂f/∂K · Ẑ`` lies in the row space of ``Ẑ``.
    Used to shrink the Kronecker route when one side has low rank (e.g. the head rows of the
    labels, rank ≤ C).
    """
    n, d = zn.shape[-2], zn.shape[-1]
    lam = eigenvalues.detach()
    tol = lam.amax(dim=-1, keepdim=True).clamp_min(0) * max(n, d) * torch.finfo(lam.dtype).eps
    rank = int((lam > tol).sum(dim=-1).amax())
    rank = max(rank, 1)
    basis = eigenvectors.detach()[..., -rank:]  # eigh sorts ascending: keep the top ones
    return zn @ basis
