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

This module is pure torch: it must never import transformers or datasets.
"""

from __future__ import annotations

from typing import Literal

import torch

Route = Literal["auto", "gram", "dual"]
ROUTES: tuple[str, ...] = ("auto", "gram", "dual")

#: Rows whose norm is below this are treated as zero rows (they stay zero after normalisation).
ZERO_ROW_NORM = 1e-12


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
    if not bool(torch.isfinite(x).all()):
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
    scale = k.abs().amax().clamp_min(1e-30)
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


def normalize_rows(z: torch.Tensor, *, center: bool = False) -> torch.Tensor:
    """L2-normalise each row of ``z`` (out of place). Zero rows (norm ≤ :data:`ZERO_ROW_NORM`)
    come out as exact zeros, with a zero gradient.

    With ``center=True`` the mean row (over the ``n`` axis) is subtracted first.
    """
    if center:
        z = z - z.mean(dim=-2, keepdim=True)
    norms = torch.linalg.vector_norm(z, dim=-1, keepdim=True)
    # Rows at or below ZERO_ROW_NORM become exact zeros with a zero gradient. (Dividing by the
    # clamped norm would scale tiny rows up instead, and multiply round-off in a zero row's
    # gradient by 1/ZERO_ROW_NORM.)
    nonzero = norms > ZERO_ROW_NORM
    return torch.where(nonzero, z / torch.where(nonzero, norms, torch.ones_like(norms)), torch.zeros_like(z))


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
