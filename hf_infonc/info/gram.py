"""Input checks, cosine Gram matrices ``G(Z) = Ẑ Ẑᵀ`` and the matrices whose spectrum is read: the Gram,
its dual ``ẐᵀẐ`` or a row-wise Kronecker product (the routes of docs/theory.md §6). Pure torch.
"""

from __future__ import annotations

import math

import torch

from hf_infonc.info._kernels import pick_route, unit_rows, wider

__all__ = [
    "check_choice", "check_count", "check_gram", "check_label_tensor", "check_not_meta", "check_options",
    "check_psd_spectrum", "check_tensor", "cosine_gram", "normalize_rows", "pick_route", "psd_from_rows",
    "row_kronecker", "scaled_gram", "spectrum_dtype", "unit_rows",
]


def check_not_meta(x: torch.Tensor, name: str) -> None:
    """``ValueError`` for a tensor on the meta device (a shape without data, e.g. from ``device_map="meta"``)."""
    if x.is_meta:
        raise ValueError(
            f"`{name}` is a meta tensor: meta tensors hold no data, so no measure or loss can be computed from them; "
            f"materialise the model (e.g. load it without device_map='meta') first."
        )


def check_tensor(
    x: object, name: str, *, min_dim: int = 2, shape: tuple[int | None, ...] | None = None, finite: bool = True
) -> torch.Tensor:
    """Validate an input and return it unchanged: ``TypeError`` for a non-tensor or a non-floating dtype,
    ``ValueError`` for a wrong shape or (``finite``) NaN / inf values. The shape: ``shape`` exactly (``None``
    any size, empty allowed), else at least ``min_dim`` dimensions and not empty."""
    sizes = [str(s) if s is not None else ("n" if i == 0 else "d") for i, s in enumerate(shape or ())]
    want = "(..., n, d)" if shape is None else f"({', '.join(sizes)})"
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"`{name}` must be a torch.Tensor of shape {want}, got {type(x).__name__}. "
            f"Convert it first, e.g. torch.as_tensor({name}, dtype=torch.float64)."
        )
    if not x.is_floating_point():
        raise TypeError(
            f"`{name}` has dtype {x.dtype}, but a floating-point tensor is expected "
            f"(float16, bfloat16, float32 or float64). Use {name}.double() or {name}.float()."
        )
    check_not_meta(x, name)
    if shape is not None:
        if x.dim() != len(shape) or any(s is not None and s != t for s, t in zip(shape, x.shape)):
            raise ValueError(f"`{name}` has shape {tuple(x.shape)}, expected {want}.")
        if finite and x.numel() and not bool(torch.isfinite(x).all()):
            raise ValueError(f"`{name}` contains NaN or inf values; the measures need finite inputs.")
        return x
    if x.dim() < min_dim:
        raise ValueError(
            f"`{name}` has shape {tuple(x.shape)}, but at least {min_dim} dimensions are expected: "
            f"(..., n, d) with samples as rows (or (..., n, n) with is_gram=True). "
            f"For a single vector use {name}.unsqueeze(0)."
        )
    if x.numel() == 0:
        raise ValueError(f"`{name}` is empty (shape {tuple(x.shape)}); at least one row and one column are needed.")
    if not math.isfinite(float(x.detach().abs().amax())):  # max propagates NaN: one pass, one host read
        raise ValueError(
            f"`{name}` contains {int((~torch.isfinite(x)).sum())} NaN or inf value(s); matrix entropies need "
            f"finite inputs. Check the model outputs (e.g. an fp16 overflow) before computing the measure."
        )
    return x


def check_gram(k: torch.Tensor, name: str) -> torch.Tensor:
    """Validate a (batched) Gram matrix: square, symmetric (relative tolerance 1e-5), with a diagonal ≥ 0
    (positive semi-definiteness itself is checked on the spectrum: :func:`check_psd_spectrum`)."""
    check_tensor(k, name)
    if k.shape[-1] != k.shape[-2]:
        raise ValueError(
            f"`{name}` has shape {tuple(k.shape)}, but is_gram=True expects square (..., n, n) "
            f"matrices. Pass features with is_gram=False, or build the Gram with cosine_gram()."
        )
    scale = k.abs().amax()  # relative at every scale (a zero matrix has asym = 0)
    asym = (k - k.transpose(-1, -2)).abs().amax()
    negative = k.diagonal(dim1=-2, dim2=-1).amin() < 0
    if bool(negative | (asym > 1e-5 * scale)):  # one host read
        if bool(negative):
            raise ValueError(
                f"`{name}` has a negative diagonal entry (min {float(k.diagonal(dim1=-2, dim2=-1).amin()):.3g}), but "
                f"a Gram matrix is positive semi-definite (diagonal ≥ 0). Build it as X Xᵀ, or with cosine_gram(X), "
                f"or pass the features with is_gram=False."
            )
        raise ValueError(
            f"`{name}` is not symmetric (max |K - Kᵀ| = {float(asym):.3g}, relative "
            f"{float(asym / scale):.3g}); is_gram=True expects a symmetric PSD Gram matrix. "
            f"Symmetrise it with (K + K.transpose(-1, -2)) / 2 if the asymmetry is round-off."
        )
    return k


def check_psd_spectrum(eigenvalues: torch.Tensor, name: str) -> torch.Tensor:
    """``eigenvalues`` (``(..., k)``, of a matrix passed with ``is_gram=True``) when none is below
    ``-tol·λ_max``, else a ``ValueError``. ``tol = min(1e-2, 1e-5·k)``: the largest eigenvalue shift of the
    round-off :func:`check_gram` accepts (entries off by 1e-5 of the largest); the spectra count the
    eigenvalues so accepted below the floor as zeros. One host read."""
    tol = min(1e-2, 1e-5 * eigenvalues.shape[-1])
    lam = eigenvalues.detach()
    top = lam.amax(dim=-1).clamp_min(0)
    low = lam.amin(dim=-1)
    if bool((low < -tol * top).any()):
        worst = float((low / top.clamp_min(torch.finfo(lam.dtype).tiny)).amin())
        raise ValueError(
            f"`{name}` is not positive semi-definite: it has a negative eigenvalue ({worst:.3g} times the largest), "
            f"but a Gram matrix must be positive semi-definite (e.g. built as X Xᵀ, or a cosine Gram from "
            f"cosine_gram(X)). Pass the features with is_gram=False instead."
        )
    return eigenvalues


def check_count(value: object, name: str, minimum: int, reason: str = "") -> int:
    """An ``int`` (not a ``bool``) ≥ ``minimum``; ``reason`` ends the message."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}.")
    if value < minimum:
        raise ValueError(f"{name}={value} must be ≥ {minimum}{reason}.")
    return value


def check_choice(value: object, name: str, choices: tuple[str, ...]) -> str:
    """``value`` when it is one of ``choices``, else a ``ValueError`` that lists them."""
    if value not in choices:
        raise ValueError(f"{name}={value!r} must be one of {choices}.")
    return value  # type: ignore[return-value]


def check_label_tensor(labels: object, n: int, num_classes: int | None = None) -> torch.Tensor:
    """Class labels: an integer tensor ``(n,)`` (no host sync), in ``0..num_classes-1`` when ``num_classes``
    is given (one host read of their range)."""
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"`labels` must be a torch.Tensor of class indices, got {type(labels).__name__}.")
    check_not_meta(labels, "labels")
    if labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex():
        raise TypeError(f"`labels` has dtype {labels.dtype}; integer class indices 0..C-1 are expected: labels.long().")
    if labels.dim() != 1 or labels.shape[0] != n:
        raise ValueError(f"`labels` has shape {tuple(labels.shape)}, expected ({n},): one class index per feature row.")
    if num_classes is not None and n:
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(
                f"labels must be class indices in 0..{num_classes - 1} (num_classes={num_classes}), but values "
                f"in [{lo}, {hi}] were found. Remap the labels, drop ignored samples (e.g. -100) before update(), "
                f"or raise num_classes."
            )
    return labels


def check_options(is_gram: bool, center: bool, route: str, what: str) -> None:
    """With ``is_gram=True`` (``what``: "a Gram matrix" or "Gram matrices") neither ``center=True``
    nor a route other than "gram" / "auto" applies: both need features."""
    if not is_gram:
        return
    if center:
        raise ValueError(f"center=True needs features, not {what}: pass the features with is_gram=False.")
    if route not in ("auto", "gram"):
        raise ValueError(f"route={route!r} needs features; with is_gram=True only route='gram' (or 'auto') applies.")


def spectrum_dtype(dtype: torch.dtype | None) -> torch.dtype:
    """The dtype of the spectra: float64 (``None``) or float32, never half precision."""
    if dtype is None:
        return torch.float64
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(
            f"dtype={dtype} is not supported for spectra; use torch.float64 (default) or "
            f"torch.float32. Half precision is never used for eigen-decompositions."
        )
    return dtype


def normalize_rows(z: torch.Tensor, *, center: bool = False, dtype: torch.dtype | None = None) -> torch.Tensor:
    """The rows of :func:`unit_rows`: L2-normalised, out of place, in ``dtype`` (default ``z``'s), zero rows
    as exact zeros with a zero gradient; ``center=True`` subtracts the mean row first."""
    return unit_rows(z, center=center, dtype=dtype).rows


def scaled_gram(k: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A (batched) Gram matrix symmetrised, divided by its largest |entry| (detached, per matrix) and cast
    to ``dtype``: the trace-normalised entropies do not change, and Grams at 1e300 stay finite."""
    x = k.to(wider(k.dtype, dtype))
    biggest = torch.linalg.vector_norm(x.detach(), ord=math.inf, dim=(-2, -1), keepdim=True)
    x = x / biggest.masked_fill(biggest == 0, 1.0)
    return (0.5 * (x + x.transpose(-1, -2))).to(dtype)


def cosine_gram(z: torch.Tensor, *, center: bool = False) -> torch.Tensor:
    """Cosine Gram matrix ``G(Z) = Ẑ Ẑᵀ`` of the rows of ``z`` ``(..., n, d)`` (docs/theory.md §1): ``(..., n, n)``
    in ``z``'s dtype, unit diagonal (zero for zero rows). ``center``: subtract the mean row before normalising
    (off by default, as in the paper)."""
    check_tensor(z, "z")
    zn = normalize_rows(z, center=center)
    return zn @ zn.transpose(-1, -2)


def psd_from_rows(zn: torch.Tensor, route: str) -> torch.Tensor:
    """The PSD matrix whose spectrum is read: ``Ẑ Ẑᵀ`` (route "gram") or ``Ẑᵀ Ẑ`` ("dual", a resolved route)."""
    return zn @ zn.transpose(-1, -2) if route == "gram" else zn.transpose(-1, -2) @ zn


def row_kronecker(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise Kronecker product ``a_i ⊗ b_i`` (``(..., n, d₁·d₂)``): its Gram is ``(AAᵀ) ⊙ (BBᵀ)``."""
    out = a.unsqueeze(-1) * b.unsqueeze(-2)
    return out.reshape(*out.shape[:-2], a.shape[-1] * b.shape[-1])
