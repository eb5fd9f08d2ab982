"""Matrix entropies with closed-form gradients: one ``torch.autograd.Function`` per batch of them.

The functions of :mod:`hf_infonc.info.entropy` and :mod:`hf_infonc.info.mutual` let autograd
differentiate a chain of some thirty small operations per entropy (row normalisation, Gram,
``eigvalsh``, trace division, masked ``x·log x``). The losses evaluate four entropies per training
step, so on small models the dispatch of that chain, forward and backward, costs more than the
arithmetic. Here each group of entropies is one ``autograd.Function`` whose forward keeps the
eigen-decomposition and whose backward is a few matrix products. Values and gradients are those
of the autograd path, to round-off (see ``tests/test_info_spectral.py``).

Maths (SPEC §1; arXiv 2406.03999 Def. 3.1–3.2, arXiv 2409.16767 §3). For a PSD matrix ``P``
(``k x k``) with trace ``t > 0`` and ``P = V diag(λ) Vᵀ``, the trace-normalised spectrum is
``λ̂ = λ / t`` and

* von Neumann (α = 1): ``H = -Σ λ̂ᵢ log λ̂ᵢ``;
* Rényi (α ≠ 1): ``H_α = log(Σ λ̂ᵢ^α) / (1 - α)``;

where eigenvalues ``λ̂ᵢ ≤ ε`` (:data:`~hf_infonc.info.entropy.EIGENVALUE_FLOOR`) count as exact
zeros: they add nothing to the value and nothing to the gradient (the convention of
:func:`~hf_infonc.info.entropy.entropy_from_spectrum`). With ``uᵢ = ∂H/∂λ̂ᵢ``
(``-(log λ̂ᵢ + 1)`` for α = 1, ``α λ̂ᵢ^(α-1) / ((1-α) Σ λ̂^α)`` otherwise, 0 on the masked
eigenvalues), the chain rule through ``λ = eigvalsh(P)`` and ``t = tr P`` gives

    dH/dP = V diag(u) Vᵀ / t - (uᵀλ̂ / t)·I = V diag((u - uᵀλ̂) / t) Vᵀ,

which for α = 1 is ``-(log P̂ + H·I) / t`` on the support of ``P̂ = P/t`` and ``(1 - H)/t`` on its
null space (the trace term acts on the whole identity, exactly as autograd computes it through
``psd_entropy``; the null-space part never reaches the rows, whose gradient lies in their span). Only eigenvalues enter (``eigvalsh``'s gradient ``V diag(·) Vᵀ``), so the
formula stays valid with repeated eigenvalues. α = 2 needs no eigen-decomposition:
``H₂ = -log(‖P‖_F² / t²)`` and ``dH/dP = -2P/‖P‖_F² + 2I/t``.

From ``dH/dP = G`` to the rows (all ``G`` symmetric):

* dual route ``P = ẐᵀẐ`` (``d x d``, used when ``d < n``): ``dH/dẐ = 2ẐG``;
* Gram route ``P = ẐẐᵀ`` (``n x n``): ``dH/dẐ = 2GẐ``;
* joint ``P = (ÂÂᵀ) ⊙ (B̂B̂ᵀ)``: ``dH/dÂ = 2(G ⊙ B̂B̂ᵀ)Â`` and ``dH/dB̂ = 2(G ⊙ ÂÂᵀ)B̂``;
* joint through the Kronecker dual ``P = FᵀF``, ``Fᵢ = (ÂRₐ)ᵢ ⊗ (B̂R_b)ᵢ`` with fixed bases ``R``:
  ``dH/dF = 2FG``, contracted with the other factor and mapped back by ``Rᵀ``;
* row normalisation ``ẑ = z/‖z‖`` (:func:`~hf_infonc.info.gram.unit_rows`, overflow- and
  underflow-free): ``dz = (dẑ - ẑ(ẑ·dẑ)) / ‖z‖``; rows with ``‖z‖ ≤ 1e-12·maxᵢ‖zᵢ‖`` are zero rows,
  with value 0 and gradient 0;
* centring ``z_c = z - mean(z)``: ``dz = dz_c - mean(dz_c)``.

What is here: :func:`information_entropies` (CMA's group entropies and ``H(K₁)``, ``H(K₂)``,
``H(K₁ ⊙ K₂)`` in one pass: rows normalised once, equal-sized eigen-problems in one batched
``eigh``, one backward), its two halves :func:`group_entropies` and
:func:`cosine_gram_entropy_terms`, and :func:`spectral_entropy` (the value of a batch of PSD
matrices and what ``dH/dP`` needs).

Nothing is validated here: the callers (:func:`hf_infonc.losses.sample_entropy_terms`,
:class:`hf_infonc.losses.CrossModalAlignmentLoss` and ``InfoNCTrainer``) validate their inputs
once. Spectra are computed in float64 by default (float32 on request, never half precision),
outside autocast; the results are in the compute dtype and the gradients in the inputs' dtypes.
The backward passes are not themselves differentiable (no second derivatives): use the
functions of :mod:`hf_infonc.info.entropy` / :mod:`hf_infonc.info.mutual` for those.

This module is pure torch: it must never import transformers or datasets.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch.autograd.function import once_differentiable

from hf_infonc.info.entropy import EIGENVALUE_FLOOR
from hf_infonc.info.gram import compute_dtype, unit_rows, unit_rows_backward
from hf_infonc.info.mutual import EntropyTerms


_TINY = {torch.float64: torch.finfo(torch.float64).tiny, torch.float32: torch.finfo(torch.float32).tiny}


_ONES: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}


def _one(like: torch.Tensor) -> torch.Tensor:
    """A cached 0-d tensor 1 of ``like``'s dtype and device (``torch.where`` with a Python number
    dispatches one more operation, to make that tensor, at every call)."""
    key = (like.dtype, like.device)
    one = _ONES.get(key)
    if one is None:
        one = _ONES[key] = torch.ones((), dtype=like.dtype, device=like.device)
    return one


def _no_autocast(device_type: str) -> contextlib.AbstractContextManager:
    """Disable autocast for the spectra (eigen-solvers never run in half precision)."""
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()


def spectrum_dtype(dtype: torch.dtype | None) -> torch.dtype:
    """The dtype of the spectra: float64 (``None``) or float32; anything else is refused
    (:func:`hf_infonc.info.gram.compute_dtype`, which does not depend on the input tensor)."""
    return compute_dtype(None, dtype)  # type: ignore[arg-type]


def _matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for 2-D or 3-D operands, dispatching ``mm`` / ``bmm`` directly (``@`` on 3-D
    tensors goes through expand/view/reshape: six more operations per call)."""
    return torch.bmm(a, b) if a.dim() == 3 else torch.mm(a, b)


class Spectrum:
    """The entropies of a batch of PSD matrices ``(..., k, k)`` and what their gradient needs.

    ``h`` has shape ``p.shape[:-2]``; :meth:`grad` gives ``scale·dH/dP`` (formula of the module
    docstring) for a ``scale`` of that shape. Build it with :func:`spectral_entropy`.
    """

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
        return _matmul(vec * (w.unsqueeze(-2) if w.dim() > 1 else w), vec.mT)


def spectral_entropy(p: torch.Tensor, alpha: float = 1.0, need_grad: bool = True) -> Spectrum:
    """Matrix entropy of a batch of PSD matrices ``p`` (``(..., k, k)``), each normalised by its trace.

    The value of :func:`~hf_infonc.info.entropy.psd_entropy` (0 for a zero matrix), with what the
    closed-form gradient needs when ``need_grad``: ``eigh`` then (``eigvalsh`` otherwise), and no
    eigen-decomposition at all for α = 2. ``p`` is read, never modified.
    """
    if alpha == 2.0:
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
    t = p.diagonal(dim1=-2, dim2=-1).sum(dim=-1, keepdim=True).clamp_min(_TINY.get(p.dtype, 1e-38))
    if need_grad:
        lam, vec = torch.linalg.eigh(p)
    else:
        lam, vec = torch.linalg.eigvalsh(p), None
    lhat = lam / t
    keep = lhat > EIGENVALUE_FLOOR.get(lam.dtype, 1e-7)
    # eigenvalues at or below the floor are exact zeros: they are replaced by 1, whose λ log λ, log λ
    # and contribution to Σ λ^α (masked below) are 0, so they add nothing to the value or the gradient
    safe = torch.where(keep, lhat, _one(lhat))
    if alpha == 1.0:
        spec = Spectrum(torch.special.entr(safe).sum(dim=-1))  # -Σ λ̂ log λ̂
        if not need_grad:
            return spec
        du = safe.log() + keep  # -∂H/∂λ̂ = log λ̂ + 1 on the kept eigenvalues, 0 elsewhere
    else:
        powers = torch.where(keep, safe.pow(alpha), 0.0)
        total = powers.sum(dim=-1)
        positive = total > 0
        safe_total = torch.where(positive, total, 1.0)
        spec = Spectrum(torch.where(positive, safe_total.log() / (1.0 - alpha), 0.0))
        if not need_grad:
            return spec
        du = powers / (safe * safe_total.unsqueeze(-1)) * (alpha / (alpha - 1.0))  # -∂H/∂λ̂, 0 where masked
    # dH/dP = V diag(u) Vᵀ/t - (uᵀλ̂/t)·I = V diag((uᵀλ̂·1 - u)/t) Vᵀ with u = -du (V orthonormal)
    spec.eigenvalues, spec.eigenvectors = lam, vec
    spec.weights = ((du * lhat).sum(dim=-1, keepdim=True) - du) / t
    return spec


class _SpectrumBatch:
    """:func:`spectral_entropy` of several matrices (each ``(..., k, k)``, any batch shape): those
    with the same ``k`` and Rényi order share one eigen-decomposition call."""

    def __init__(self, mats: list[torch.Tensor], alphas: list[float], need_grad: bool) -> None:
        groups: dict[tuple[int, float], list[int]] = {}
        for i, (m, alpha) in enumerate(zip(mats, alphas)):
            groups.setdefault((m.shape[-1], alpha), []).append(i)
        self.shapes = [m.shape[:-2] for m in mats]
        self.h: list[torch.Tensor] = [mats[0]] * len(mats)
        # (members, sizes along the stacked batch or None when stacked 2-D matrices, spectrum)
        self.parts: list[tuple[list[int], list[int] | None, Spectrum]] = []
        for (k, alpha), idx in groups.items():
            if len(idx) == 1:
                spec = spectral_entropy(mats[idx[0]], alpha, need_grad)
                self.h[idx[0]] = spec.h
                self.parts.append((idx, None, spec))
            elif all(mats[i].dim() == 2 for i in idx):  # single matrices: one stack, one unbind
                spec = spectral_entropy(torch.stack([mats[i] for i in idx]), alpha, need_grad)
                for i, h in zip(idx, spec.h.unbind()):
                    self.h[i] = h
                self.parts.append((idx, None, spec))
            else:
                flat = [mats[i].reshape(-1, k, k) for i in idx]
                sizes = [f.shape[0] for f in flat]
                spec = spectral_entropy(torch.cat(flat), alpha, need_grad)
                for i, h in zip(idx, spec.h.split(sizes)):
                    self.h[i] = h.reshape(self.shapes[i])
                self.parts.append((idx, sizes, spec))

    def grads(self, scales: list[torch.Tensor | float | None]) -> list[torch.Tensor | None]:
        """``scale_i·dH_i/dP_i`` for each matrix whose scale is not ``None``."""
        out: list[torch.Tensor | None] = [None] * len(scales)
        for idx, sizes, spec in self.parts:
            if all(scales[i] is None for i in idx):
                continue
            if len(idx) == 1:
                out[idx[0]] = spec.grad(scales[idx[0]])  # type: ignore[arg-type]
                continue
            if sizes is None:  # stacked single matrices
                member = [scales[i] for i in idx]
                if any(not isinstance(m, torch.Tensor) for m in member):
                    zero = spec.h.new_zeros(())
                    member = [zero if m is None else torch.as_tensor(m, dtype=zero.dtype) for m in member]
                stacked = torch.stack(member)
                for i, g in zip(idx, spec.grad(stacked).unbind()):
                    if scales[i] is not None:
                        out[i] = g
                continue
            flat = []
            for i, size in zip(idx, sizes):
                s = scales[i]
                if s is None:
                    s = spec.h.new_zeros(size)
                elif not isinstance(s, torch.Tensor):
                    s = spec.h.new_full((size,), s)
                else:  # one scale per matrix, or one for all the matrices of the member
                    s = s.reshape(-1) if s.numel() == size else s.reshape(1).expand(size)
                flat.append(s)
            for i, g in zip(idx, spec.grad(torch.cat(flat)).split(sizes)):
                if scales[i] is not None:
                    out[i] = g.reshape(*self.shapes[i], *g.shape[-2:])
        return out


# --------------------------------------------------------------------------- what to compute


@dataclass(frozen=True)
class Groups:
    """Groups of rows whose entropies are wanted (CMA's ``S_c``): anchor k at slot 0, then its features.

    Attributes:
        anchor_index: ``(K,)`` row of ``anchors`` that anchors group k; ``None``: group k is
            anchored by ``anchors[k]``.
        slots: ``(n,)`` slot of each feature row in the ``K·width`` rows of the zero-padded
            ``K x width`` array of groups: ``k·width + j`` is row j of group k (distinct, ``j ≥ 1``:
            row 0 is the anchor's); ``None``: group i is ``[anchors[i], features[i]]`` (pairs).
        width: slots per group (``max group size + 1``); 2 for pairs.
        weights: ``None`` to return the K entropies, else return ``Σ_k weights[k]·H_k`` (a tensor
            of length K or one number for all).
        alpha: Rényi order.
    """

    anchor_index: torch.Tensor | None = None
    slots: torch.Tensor | None = None
    width: int = 2
    weights: torch.Tensor | float | None = None
    alpha: float = 1.0


@dataclass(frozen=True)
class Terms:
    """``H(G(features))``, ``H(G(b))`` and ``H(G(features) ⊙ G(b))`` with ``b = anchors[b_index]`` (or ``anchors``).

    Attributes:
        b_index: ``(n,)`` row of ``anchors`` for each sample (labels); ``None``: one anchor row
            per sample (pairs).
        alpha: Rényi order.
        center: subtract the mean row (over the n samples) before normalising.
        joint: also compute the joint entropy.
        rank_bound_b: a known bound of ``rank(b)`` (the number of head rows): lets the route of
            the joint be decided without a host sync.
    """

    b_index: torch.Tensor | None = None
    alpha: float = 1.0
    center: bool = False
    joint: bool = True
    rank_bound_b: int | None = None


def kronecker_rank_bound(n: int, d_a: int, d_b: int, rank_bound_b: int | None = None) -> int:
    """Upper bound of ``rank(Ẑ_a)·rank(Ẑ_b)``: the size of the joint's Kronecker dual at most."""
    r_b = min(n, d_b) if rank_bound_b is None else min(n, d_b, rank_bound_b)
    return min(n, d_a) * r_b


def _reduced_basis(lam: torch.Tensor, vec: torch.Tensor, n: int) -> torch.Tensor:
    """Eigenvectors of ``ẐᵀẐ`` above ``max(λ)·max(n, d)·eps`` (as :func:`~hf_infonc.info.gram.reduce_rank`)."""
    tol = lam.amax(dim=-1, keepdim=True).clamp_min(0) * max(n, vec.shape[-1]) * torch.finfo(lam.dtype).eps
    rank = max(int((lam > tol).sum()), 1)
    return vec[..., -rank:]  # eigh sorts ascending: keep the top ones


class _InformationEntropies(torch.autograd.Function):
    """Group entropies (:class:`Groups`) and entropy terms (:class:`Terms`) of ``features`` (``n x d``)
    and ``anchors`` (``m x d'``) in one pass: rows normalised once, eigen-problems of equal size
    solved in one batched call, one backward."""

    @staticmethod
    def forward(ctx, features, anchors, groups, terms, cdtype, need):  # type: ignore[override]
        ctx.set_materialize_grads(False)
        with _no_autocast(features.device.type):
            unit_f, unit_a = unit_rows(features, dtype=cdtype), unit_rows(anchors, dtype=cdtype)
            fn, an = unit_f.rows, unit_a.rows
            mats: list[torch.Tensor] = []
            alphas: list[float] = []
            st: dict[str, object] = {}
            if groups is not None:
                anc = an if groups.anchor_index is None else an[groups.anchor_index]
                if groups.slots is None:
                    rows = torch.stack([anc, fn], dim=-2)
                else:
                    rows = fn.new_zeros((anc.shape[0] * groups.width, fn.shape[-1]))
                    rows.index_put_((groups.slots,), fn)
                    rows = rows.view(anc.shape[0], groups.width, fn.shape[-1])
                    rows.select(-2, 0).copy_(anc)
                st["group_rows"], st["group_dual"] = rows, rows.shape[-1] < rows.shape[-2]
                mats.append(_matmul(rows.mT, rows) if st["group_dual"] else _matmul(rows, rows.mT))
                alphas.append(groups.alpha)
            kron = None
            if terms is not None:
                if terms.center:
                    centred_a = unit_rows(features, center=True, dtype=cdtype)
                    rows_b = anchors if terms.b_index is None else anchors[terms.b_index]
                    centred_b = unit_rows(rows_b, center=True, dtype=cdtype)
                    st["centred"] = (centred_a, centred_b)
                    ta, tb = centred_a.rows, centred_b.rows
                else:
                    ta, tb = fn, an if terms.b_index is None else an[terms.b_index]
                n, d_a, d_b = ta.shape[-2], ta.shape[-1], tb.shape[-1]
                dual_a, dual_b = d_a < n, d_b < n
                pa = ta.mT @ ta if dual_a else ta @ ta.mT
                pb = tb.mT @ tb if dual_b else tb @ tb.mT
                st.update(ta=ta, tb=tb, dual_a=dual_a, dual_b=dual_b)
                use_kron = (
                    terms.joint and terms.alpha != 2.0 and dual_a and dual_b
                    and kronecker_rank_bound(n, d_a, d_b, terms.rank_bound_b) < n
                )
                if use_kron:
                    # joint on the Kronecker dual of both numerical row spaces: needs the marginals' eigenvectors
                    spec_a = spectral_entropy(pa, terms.alpha, True)
                    spec_b = spectral_entropy(pb, terms.alpha, True)
                    basis_a = _reduced_basis(spec_a.eigenvalues, spec_a.eigenvectors, n)
                    basis_b = _reduced_basis(spec_b.eigenvalues, spec_b.eigenvectors, n)
                    fa, fb = ta @ basis_a, tb @ basis_b
                    f = (fa.unsqueeze(-1) * fb.unsqueeze(-2)).reshape(n, -1)
                    kron = (spec_a, spec_b, basis_a, basis_b, fa, fb, f)
                    mats.append(f.mT @ f)
                    alphas.append(terms.alpha)
                else:
                    mats += [pa, pb]
                    alphas += [terms.alpha, terms.alpha]
                    if terms.joint:
                        ka = pa if not dual_a else ta @ ta.mT
                        kb = pb if not dual_b else tb @ tb.mT
                        st.update(ka=ka, kb=kb)
                        mats.append(ka * kb)
                        alphas.append(terms.alpha)
            batch = _SpectrumBatch(mats, alphas, need)
            outputs: list[torch.Tensor] = []
            if groups is not None:
                h = batch.h[0]
                weights = groups.weights
                outputs.append(h if weights is None else (h * weights).sum())
            if terms is not None:
                first = 0 if groups is None else 1
                if kron is not None:
                    outputs += [kron[0].h, kron[1].h, batch.h[first]]
                else:
                    outputs += batch.h[first : first + (3 if terms.joint else 2)]
        if need:
            ctx.plan = (groups, terms, batch, st, kron, features.dtype, anchors.dtype, unit_f, unit_a)
        return tuple(outputs)

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads):  # type: ignore[override]
        groups, terms, batch, st, kron, dtype_f, dtype_a, unit_f, unit_a = ctx.plan
        fn, an = unit_f.rows, unit_a.rows
        grads = list(grads)
        with _no_autocast(fn.device.type):
            scales: list[torch.Tensor | float | None] = []
            grad_groups = grads.pop(0) if groups is not None else None
            if groups is not None:
                if grad_groups is not None and groups.weights is not None:
                    grad_groups = grad_groups * groups.weights
                scales.append(grad_groups)
            grad_a = grad_b = grad_j = None
            if terms is not None:
                grad_a, grad_b = grads[0], grads[1]
                grad_j = grads[2] if terms.joint else None
                scales += [grad_j] if kron is not None else [grad_a, grad_b, grad_j][: 3 if terms.joint else 2]
            g = batch.grads(scales)
            d_fn = d_an = None  # gradients w.r.t. the unit rows fn (n x d) and an (m x d')
            d_an_index: list[tuple[torch.Tensor | None, torch.Tensor]] = []
            if groups is not None and g[0] is not None:
                rows = st["group_rows"]
                d_rows = (_matmul(rows, g[0]) if st["group_dual"] else _matmul(g[0], rows)) * 2.0
                if groups.slots is None:
                    d_anc, d_fn = d_rows.unbind(dim=-2)
                else:
                    d_fn, d_anc = d_rows.flatten(0, 1)[groups.slots], d_rows.select(-2, 0)
                d_an_index.append((groups.anchor_index, d_anc))
            extra_f = extra_a = None  # centred terms: their own normalisation
            if terms is not None and (grad_a is not None or grad_b is not None or grad_j is not None):
                d_ta, d_tb = _terms_backward(st, kron, g[1:] if groups is not None else g, grad_a, grad_b)
                if terms.center:
                    centred_a, centred_b = st["centred"]
                    extra_f = None if d_ta is None else unit_rows_backward(d_ta, centred_a, center=True)
                    if d_tb is not None:
                        extra_a = _scatter_rows(terms.b_index, unit_rows_backward(d_tb, centred_b, center=True), an.shape)
                else:
                    if d_ta is not None:
                        d_fn = d_ta if d_fn is None else d_fn + d_ta
                    if d_tb is not None:
                        d_an_index.append((terms.b_index, d_tb))
            for index, part in d_an_index:
                if index is None:
                    d_an = part if d_an is None else d_an + part
                else:
                    if d_an is None:
                        d_an = part.new_zeros(an.shape)
                    d_an = d_an.index_add_(0, index, part)
            out_f = out_a = None
            if ctx.needs_input_grad[0]:
                if d_fn is not None:
                    out_f = unit_rows_backward(d_fn, unit_f)
                if extra_f is not None:
                    out_f = extra_f if out_f is None else out_f + extra_f
                out_f = None if out_f is None else out_f.to(dtype_f)
            if ctx.needs_input_grad[1]:
                if d_an is not None:
                    out_a = unit_rows_backward(d_an, unit_a)
                if extra_a is not None:
                    out_a = extra_a if out_a is None else out_a + extra_a
                out_a = None if out_a is None else out_a.to(dtype_a)
        return out_f, out_a, None, None, None, None


def _scatter_rows(index: torch.Tensor | None, rows: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Sum the gradients of ``anchors[index]`` back onto the rows of ``anchors``."""
    if index is None:
        return rows
    return rows.new_zeros(shape).index_add_(0, index, rows)


def _terms_backward(
    st: dict, kron: tuple | None, g: list[torch.Tensor | None], grad_a: torch.Tensor | None, grad_b: torch.Tensor | None
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``dH/dẐ_a`` and ``dH/dẐ_b`` of the entropy terms, from ``scale·dH/dP`` of their matrices."""
    ta, tb = st["ta"], st["tb"]
    if kron is not None:
        spec_a, spec_b, basis_a, basis_b, fa, fb, f = kron
        ga = None if grad_a is None else spec_a.grad(grad_a)
        gb = None if grad_b is None else spec_b.grad(grad_b)
        gj = g[0]
    else:
        ga, gb = g[0], g[1]
        gj = g[2] if len(g) > 2 else None
    # dH/dẐ = 2·(left @ Ẑ + Ẑ @ right): Gram-route and Hadamard terms act on the left,
    # dual-route terms on the right
    left_a, right_a = (None, ga) if st["dual_a"] else (ga, None)
    left_b, right_b = (None, gb) if st["dual_b"] else (gb, None)
    extra_a = extra_b = None
    if gj is not None and kron is None:
        ka, kb = st["ka"], st["kb"]
        left_a = gj * kb if left_a is None else left_a + gj * kb
        left_b = gj * ka if left_b is None else left_b + gj * ka
    elif gj is not None:
        d_f = (f @ gj).reshape(ta.shape[-2], fa.shape[-1], fb.shape[-1])
        extra_a = (d_f @ fb.unsqueeze(-1)).squeeze(-1) @ basis_a.mT
        extra_b = (fa.unsqueeze(-2) @ d_f).squeeze(-2) @ basis_b.mT
    return _row_gradient(ta, left_a, right_a, extra_a), _row_gradient(tb, left_b, right_b, extra_b)


def _row_gradient(
    z: torch.Tensor, left: torch.Tensor | None, right: torch.Tensor | None, extra: torch.Tensor | None
) -> torch.Tensor | None:
    """``2·(left @ z + z @ right + extra)`` over the parts present (``None`` if none is)."""
    total = None
    if left is not None:
        total = torch.mm(left, z)
    if extra is not None:
        total = extra if total is None else total + extra
    if right is not None:
        return torch.mm(z, right).mul_(2.0) if total is None else torch.addmm(total, z, right, beta=2.0, alpha=2.0)
    return None if total is None else total * 2.0


def information_entropies(
    features: torch.Tensor,
    anchors: torch.Tensor,
    *,
    groups: Groups | None = None,
    terms: Terms | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor | None, EntropyTerms | None]:
    """Group entropies and/or entropy terms of ``features`` and ``anchors`` in one ``autograd.Function``.

    What :class:`~hf_infonc.losses.CrossModalAlignmentLoss` (``groups``) and
    :func:`~hf_infonc.losses.sample_entropy_terms` (``terms``) compute, and what ``InfoNCTrainer``
    computes for both at once: the rows are normalised once and eigen-problems of the same size
    and order share one batched ``eigh``; the backward is the closed form of the module docstring.

    **No validation**: ``features`` (``n x d``) and ``anchors`` (``m x d'``, ``d' = d`` with
    ``groups``) must be finite 2-D floating tensors and the indices in range; the callers in
    :mod:`hf_infonc.losses` validate first.

    Returns:
        ``(group value, terms)``: the group entropies (``(K,)``, or their weighted sum with
        ``groups.weights``) and :class:`~hf_infonc.info.mutual.EntropyTerms`, each ``None`` when
        not asked for; all in the spectrum dtype (float64 by default).
    """
    cdtype = spectrum_dtype(dtype)
    if groups is None and terms is None:
        return None, None
    need = torch.is_grad_enabled() and (features.requires_grad or anchors.requires_grad)
    out = _InformationEntropies.apply(features, anchors, groups, terms, cdtype, need)
    group_value = out[0] if groups is not None else None
    if terms is None:
        return group_value, None
    rest = out[1:] if groups is not None else out
    return group_value, EntropyTerms(rest[0], rest[1], rest[2] if terms.joint else None)


def cosine_gram_entropy_terms(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    b_index: torch.Tensor | None = None,
    alpha: float = 1.0,
    center: bool = False,
    dtype: torch.dtype | None = None,
    joint: bool = True,
    rank_bound_b: int | None = None,
) -> EntropyTerms:
    """``H(K₁)``, ``H(K₂)``, ``H(K₁ ⊙ K₂)`` for ``K₁ = G(a)``, ``K₂ = G(b[b_index])``; closed-form gradients.

    The values of :func:`hf_infonc.info.entropy_terms` with ``route="auto"`` (to round-off): each
    marginal on the ``d x d`` dual when ``d < n`` (else ``n x n``), both in one batched
    eigen-decomposition when their sizes agree; the joint on the ``n x n`` Hadamard product, or on
    the Kronecker dual of the two numerical row spaces when ``min(n, d_a)·min(n, d_b, rank_bound_b)
    < n`` (the only case with a host sync, for the ranks).

    **No validation**: ``a`` must be a finite 2-D ``n x d_a`` floating tensor and ``b`` a finite
    ``n x d_b`` one (or ``m x d_b`` rows picked by the integer ``b_index`` of length n: head rows
    and labels). :func:`hf_infonc.losses.sample_entropy_terms` validates, then calls this.
    See :class:`Terms` for the arguments. Returns 0-d tensors in the spectrum dtype.
    """
    spec = Terms(b_index=b_index, alpha=float(alpha), center=center, joint=joint, rank_bound_b=rank_bound_b)
    return information_entropies(a, b, terms=spec, dtype=dtype)[1]  # type: ignore[return-value]


def group_entropies(
    features: torch.Tensor,
    anchors: torch.Tensor,
    *,
    anchor_index: torch.Tensor | None = None,
    slots: torch.Tensor | None = None,
    width: int = 2,
    alpha: float = 1.0,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Matrix entropies ``H(G(S_k))`` of K groups of rows, with closed-form gradients (CMA's groups).

    Group ``S_k`` stacks the L2-normalised anchor ``anchors[anchor_index[k]]`` (or ``anchors[k]``)
    with the L2-normalised feature rows assigned to it: feature i is row ``slots[i] % width`` of
    group ``slots[i] // width`` in a ``K x width x d`` zero-padded array whose row 0 holds the
    anchors; with ``slots=None`` group i is ``[anchors[i], features[i]]`` (pairs). Zero padding leaves a
    trace-normalised spectrum unchanged. Each spectrum is read from the ``width x width`` Gram, or
    from the ``d x d`` dual when ``d < width``, in one batched eigen-decomposition.

    **No validation** (see :class:`Groups`); returns ``(K,)`` entropies in the spectrum dtype.
    """
    spec = Groups(anchor_index=anchor_index, slots=slots, width=width, alpha=float(alpha))
    return information_entropies(features, anchors, groups=spec, dtype=dtype)[0]  # type: ignore[return-value]
