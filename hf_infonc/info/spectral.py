"""Matrix entropies with closed-form gradients: one ``torch.autograd.Function`` per batch of them.

The general closed-form path of the losses (any Rényi order, centring, the Kronecker route of the
joint, arbitrary groups), on the kernels of :mod:`hf_infonc.info._kernels` (docs/theory.md §6): the
values and gradients of :mod:`~hf_infonc.info.entropy` / :mod:`~hf_infonc.info.mutual` to round-off,
in the spectrum dtype (float64 by default, outside autocast), the gradients in the inputs' dtypes.
Nothing is validated here; no second derivatives (use :mod:`~hf_infonc.info.entropy`). Pure torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.autograd.function import once_differentiable

from hf_infonc.info._kernels import (  # noqa: F401  (spectral_entropy, Spectrum: re-exported)
    EntropyTerms,
    Spectrum,
    UnitRows,
    class_groups,
    gram,
    kronecker_joint,
    matmul,
    no_autocast,
    pair_group_weight,
    reduced_basis,
    spectral_entropy,
    split_outputs,
    unit_rows,
    unit_rows_backward,
)
from hf_infonc.info.gram import spectrum_dtype


class _SpectrumBatch:
    """Spectra of several ``(matrix, order)`` (any batch shapes): equal ``k`` and order share one ``eigh``."""

    def __init__(self, mats: list[tuple[torch.Tensor, float]], need_grad: bool) -> None:
        groups: dict[tuple[int, float], list[int]] = {}
        for i, (m, alpha) in enumerate(mats):
            groups.setdefault((m.shape[-1], alpha), []).append(i)
        self.shapes = [m.shape[:-2] for m, _ in mats]
        self.h: list[torch.Tensor] = [mats[0][0]] * len(mats)
        # (members, their numbers of matrices in the pooled batch (None: one member, []: stacked single
        # matrices), spectrum)
        self.parts: list[tuple[list[int], list[int] | None, Spectrum]] = []
        for (k, alpha), idx in groups.items():
            if len(idx) == 1:
                sizes, batch = None, mats[idx[0]][0]
            elif all(mats[i][0].dim() == 2 for i in idx):
                sizes, batch = [], torch.stack([mats[i][0] for i in idx])
            else:
                flat = [mats[i][0].reshape(-1, k, k) for i in idx]
                sizes, batch = [f.shape[0] for f in flat], torch.cat(flat)
            spec = spectral_entropy(batch, alpha, need_grad)
            for i, h in zip(idx, self._split(idx, sizes, spec.h)):
                self.h[i] = h
            self.parts.append((idx, sizes, spec))

    def _split(self, idx: list[int], sizes: list[int] | None, pooled: torch.Tensor) -> list[torch.Tensor]:
        """Values or matrices along a pooled batch, back to its members ``idx``."""
        if sizes is None:
            return [pooled]
        if not sizes:
            return list(pooled.unbind())
        return [part.reshape((*self.shapes[i], *pooled.shape[1:])) for i, part in zip(idx, pooled.split(sizes))]

    def grads(self, scales: list[torch.Tensor | None]) -> list[torch.Tensor | None]:
        """``scale_i·dH_i/dP_i`` for each matrix whose scale (a tensor) is not ``None``."""
        out: list[torch.Tensor | None] = [None] * len(scales)
        for idx, sizes, spec in self.parts:
            member = [scales[i] for i in idx]
            if all(s is None for s in member):
                continue
            if sizes is None:
                scale = member[0]
            elif not sizes:  # stacked single matrices
                zero = spec.h.new_zeros(()) if any(s is None for s in member) else None
                scale = torch.stack([zero if s is None else s for s in member])
            else:  # one scale per matrix, or one for all the matrices of the member
                scale = torch.cat([
                    spec.h.new_zeros(size) if s is None else s.reshape(-1) if s.numel() == size
                    else s.reshape(1).expand(size) for s, size in zip(member, sizes)
                ])
            for i, g in zip(idx, self._split(idx, sizes, spec.grad(scale))):
                if scales[i] is not None:
                    out[i] = g
        return out


@dataclass(frozen=True)
class Groups:
    """Groups of rows whose entropies are wanted (CMA's ``S_c``): anchor k in slot 0, then its features."""

    anchor_index: torch.Tensor | None = None  #: ``(K,)`` row of ``anchors`` anchoring group k (``None``: k)
    #: ``(n,)`` slot ``k·width + j`` (``j ≥ 1``) of each feature row in the zero-padded ``K x width`` groups;
    #: ``None``: group i is ``[anchors[i], features[i]]`` (pairs)
    slots: torch.Tensor | None = None
    width: int = 2  #: slots per group (``max group size + 1``); 2 for pairs
    weights: torch.Tensor | float | None = None  #: ``None``: the K entropies; else ``Σ_k weights[k]·H_k``
    alpha: float = 1.0  #: Rényi order


@dataclass(frozen=True)
class Terms:
    """``H(G(features))``, ``H(G(b))``, ``H(G(features) ⊙ G(b))``, ``b = anchors[b_index]`` (or ``anchors``)."""

    b_index: torch.Tensor | None = None  #: ``(n,)`` row of ``anchors`` per sample (labels); ``None``: pairs
    alpha: float = 1.0  #: Rényi order
    center: bool = False  #: subtract the mean row before normalising
    joint: bool = True  #: also compute the joint entropy
    rank_bound_b: int | None = None  #: a bound of ``rank(b)`` (head rows): the joint's route without a host sync


def cma_groups(
    labels: torch.Tensor | None, n: int, *, alpha: float = 1.0, dtype: torch.dtype | None = None,
    host_labels: list[int] | None = None,
) -> Groups:
    """CMA's groups ``S_c`` for ``n`` samples with valid class ``labels`` (``None``: pairs), laid out by
    :func:`~hf_infonc.info._kernels.class_groups`. One host read of the labels unless ``host_labels``."""
    if labels is None:
        return Groups(width=2, weights=pair_group_weight(n), alpha=alpha)
    present, members, width, weights = class_groups(labels.tolist() if host_labels is None else host_labels)
    slots = [0] * n
    for k, rows in enumerate(members):
        for j, i in enumerate(rows, start=1):
            slots[i] = k * width + j
    device = labels.device
    return Groups(
        anchor_index=torch.tensor(present, device=device),
        slots=torch.tensor(slots, device=device),
        width=width,
        weights=torch.tensor(weights, dtype=spectrum_dtype(dtype), device=device),
        alpha=alpha,
    )


class _InformationEntropies(torch.autograd.Function):
    """Group entropies (:class:`Groups`) and entropy terms (:class:`Terms`) in one pass: rows normalised
    once, eigen-problems of equal size and order in one batched call, one backward."""

    @staticmethod
    def forward(ctx, features, anchors, groups, terms, cdtype, need):  # type: ignore[override]
        ctx.set_materialize_grads(False)
        with no_autocast(features.device.type):
            unit_f, unit_a = unit_rows(features, dtype=cdtype), unit_rows(anchors, dtype=cdtype)
            fn, an = unit_f.rows, unit_a.rows
            mats: list[tuple[torch.Tensor, float]] = []  # (matrix, Rényi order)
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
                mats.append((gram(rows, st["group_dual"]), groups.alpha))
            kron = None
            if terms is not None:
                if terms.center:
                    centred_a = unit_rows(features, center=True, dtype=cdtype)
                    rows_b = anchors if terms.b_index is None else anchors[terms.b_index]
                    st["centred"] = centred_a, unit_rows(rows_b, center=True, dtype=cdtype)
                    ta, tb = centred_a.rows, st["centred"][1].rows
                else:
                    ta, tb = fn, an if terms.b_index is None else an[terms.b_index]
                n, d_a, d_b = ta.shape[-2], ta.shape[-1], tb.shape[-1]
                st.update(ta=ta, tb=tb, dual_a=d_a < n, dual_b=d_b < n)
                pa, pb = gram(ta, d_a < n), gram(tb, d_b < n)
                if terms.joint and kronecker_joint(n, d_a, d_b, terms.rank_bound_b, terms.alpha):
                    # the joint on the Kronecker dual of both numerical row spaces (docs/theory.md §6)
                    spec_a, spec_b = (spectral_entropy(p, terms.alpha, True) for p in (pa, pb))
                    basis_a, basis_b = (reduced_basis(s.eigenvalues, s.eigenvectors, n) for s in (spec_a, spec_b))
                    fa, fb = ta @ basis_a, tb @ basis_b
                    f = (fa.unsqueeze(-1) * fb.unsqueeze(-2)).reshape(n, -1)
                    kron = (spec_a, spec_b, basis_a, basis_b, fa, fb, f)
                    mats.append((gram(f, True), terms.alpha))
                else:
                    mats += [(pa, terms.alpha), (pb, terms.alpha)]
                    if terms.joint:
                        st["ka"] = ka = gram(ta) if d_a < n else pa
                        st["kb"] = kb = gram(tb) if d_b < n else pb
                        mats.append((ka * kb, terms.alpha))
            batch = _SpectrumBatch(mats, need)
            outputs: list[torch.Tensor] = []
            if groups is not None:
                h = batch.h[0]
                outputs.append(h if groups.weights is None else (h * groups.weights).sum())
            if terms is not None:
                h_terms = batch.h[int(groups is not None) :]
                outputs += h_terms if kron is None else [kron[0].h, kron[1].h, h_terms[0]]
        if need:
            ctx.plan = (groups, terms, batch, st, kron, features.dtype, anchors.dtype, unit_f, unit_a)
        return tuple(outputs)

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads):  # type: ignore[override]
        groups, terms, batch, st, kron, dtype_f, dtype_a, unit_f, unit_a = ctx.plan
        m = unit_a.rows.shape[0]
        grads = list(grads)
        with no_autocast(unit_f.rows.device.type):
            scales: list[torch.Tensor | None] = []
            if groups is not None:
                grad_groups = grads.pop(0)
                if grad_groups is not None and groups.weights is not None:
                    grad_groups = grad_groups * groups.weights
                scales.append(grad_groups)
            if terms is not None:
                grad_a, grad_b, grad_j = grads[0], grads[1], grads[2] if terms.joint else None
                scales += [grad_j] if kron is not None else [grad_a, grad_b, grad_j][: 2 + terms.joint]
            g = batch.grads(scales)
            # gradients w.r.t. the unit rows fn (n x d) and an (m x d'); extra_*: the centred terms' own
            d_fn = d_an = extra_f = extra_a = None
            if groups is not None and g[0] is not None:
                rows = st["group_rows"]
                d_rows = (matmul(rows, g[0]) if st["group_dual"] else matmul(g[0], rows)) * 2.0
                if groups.slots is None:
                    d_anc, d_fn = d_rows.unbind(dim=-2)
                else:
                    d_fn, d_anc = d_rows.flatten(0, 1)[groups.slots], d_rows.select(-2, 0)
                d_an = _add(None, d_anc, groups.anchor_index, m)
            if terms is not None:
                d_ta, d_tb = _terms_backward(st, kron, g[int(groups is not None) :], grad_a, grad_b)
                if terms.center:
                    centred_a, centred_b = st["centred"]
                    extra_f = None if d_ta is None else unit_rows_backward(d_ta, centred_a, center=True)
                    if d_tb is not None:
                        extra_a = _add(None, unit_rows_backward(d_tb, centred_b, center=True), terms.b_index, m)
                else:
                    d_fn, d_an = _add(d_fn, d_ta), _add(d_an, d_tb, terms.b_index, m)
            out_f = _input_gradient(ctx.needs_input_grad[0], d_fn, unit_f, extra_f, dtype_f)
            out_a = _input_gradient(ctx.needs_input_grad[1], d_an, unit_a, extra_a, dtype_a)
        return out_f, out_a, None, None, None, None


def _add(
    total: torch.Tensor | None, part: torch.Tensor | None, index: torch.Tensor | None = None, rows: int = 0
) -> torch.Tensor | None:
    """``total + part`` (``None`` counts as 0); with an ``index``, ``part`` is summed onto those rows of
    a ``rows``-row total."""
    if part is None:
        return total
    if index is None:
        return part if total is None else total + part
    if total is None:
        total = part.new_zeros((rows, part.shape[-1]))
    return total.index_add_(0, index, part)


def _input_gradient(
    needed: bool, d_rows: torch.Tensor | None, unit: UnitRows, extra: torch.Tensor | None, dtype: torch.dtype
) -> torch.Tensor | None:
    """The gradient of an input: ``d_rows`` (w.r.t. its unit rows) through the normalisation, plus
    ``extra`` (already w.r.t. the input: the centred terms), in the input's dtype."""
    if not needed:
        return None
    out = _add(None if d_rows is None else unit_rows_backward(d_rows, unit), extra)
    return None if out is None else out.to(dtype)


def _terms_backward(
    st: dict, kron: tuple | None, g: list[torch.Tensor | None], grad_a: torch.Tensor | None, grad_b: torch.Tensor | None
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``dH/dẐ_a`` and ``dH/dẐ_b`` of the entropy terms, from ``scale·dH/dP`` of their matrices."""
    if kron is not None:
        spec_a, spec_b, basis_a, basis_b, fa, fb, f = kron
        ga = None if grad_a is None else spec_a.grad(grad_a)
        gb = None if grad_b is None else spec_b.grad(grad_b)
        gj = g[0]
    else:
        ga, gb, gj = g[0], g[1], g[2] if len(g) > 2 else None
    # dH/dẐ = 2·(left @ Ẑ + Ẑ @ right): Gram-route and Hadamard terms on the left, dual-route terms on the right
    left_a, right_a = (None, ga) if st["dual_a"] else (ga, None)
    left_b, right_b = (None, gb) if st["dual_b"] else (gb, None)
    extra_a = extra_b = None
    if gj is not None and kron is None:
        left_a, left_b = _add(left_a, gj * st["kb"]), _add(left_b, gj * st["ka"])
    elif gj is not None:
        d_f = (f @ gj).reshape(f.shape[0], fa.shape[-1], fb.shape[-1])
        extra_a = (d_f @ fb.unsqueeze(-1)).squeeze(-1) @ basis_a.mT
        extra_b = (fa.unsqueeze(-2) @ d_f).squeeze(-2) @ basis_b.mT
    return _row_gradient(st["ta"], left_a, right_a, extra_a), _row_gradient(st["tb"], left_b, right_b, extra_b)


def _row_gradient(
    z: torch.Tensor, left: torch.Tensor | None, right: torch.Tensor | None, extra: torch.Tensor | None
) -> torch.Tensor | None:
    """``2·(left @ z + z @ right + extra)`` over the parts present (``None`` if none is)."""
    total = _add(None if left is None else torch.mm(left, z), extra)
    if right is not None:
        return torch.mm(z, right).mul_(2.0) if total is None else torch.addmm(total, z, right, beta=2.0, alpha=2.0)
    return None if total is None else total * 2.0


def information_entropies(
    features: torch.Tensor, anchors: torch.Tensor, *, groups: Groups | None = None, terms: Terms | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor | None, EntropyTerms | None]:
    """Group entropies and/or entropy terms of ``features`` and ``anchors`` in one ``autograd.Function``.

    The general path of :func:`hf_infonc.losses.information_terms`. **No validation**: ``features``
    (``n x d``) and ``anchors`` (``m x d'``, ``d' = d`` with ``groups``) must be finite 2-D floating
    tensors and the indices in range. Returns ``(group value, terms)``: the group entropies (``(K,)``,
    or their weighted sum with ``groups.weights``) and :class:`~hf_infonc.info.mutual.EntropyTerms`,
    each ``None`` when not asked for, in the spectrum dtype.
    """
    cdtype = spectrum_dtype(dtype)
    if groups is None and terms is None:
        return None, None
    need = torch.is_grad_enabled() and (features.requires_grad or anchors.requires_grad)
    out = _InformationEntropies.apply(features, anchors, groups, terms, cdtype, need)
    return split_outputs(out, groups is not None, terms is not None, terms is not None and terms.joint)


def cosine_gram_entropy_terms(
    a: torch.Tensor, b: torch.Tensor, *, b_index: torch.Tensor | None = None, alpha: float = 1.0,
    center: bool = False, dtype: torch.dtype | None = None, joint: bool = True, rank_bound_b: int | None = None,
) -> EntropyTerms:
    """``H(G(a))``, ``H(G(b[b_index]))`` and their joint ``H(K₁ ⊙ K₂)`` (:class:`Terms`), with closed-form
    gradients: the values of :func:`hf_infonc.info.entropy_terms` to round-off. **No validation**; 0-d
    results in the spectrum dtype."""
    spec = Terms(b_index=b_index, alpha=float(alpha), center=center, joint=joint, rank_bound_b=rank_bound_b)
    return information_entropies(a, b, terms=spec, dtype=dtype)[1]  # type: ignore[return-value]


def group_entropies(
    features: torch.Tensor, anchors: torch.Tensor, *, anchor_index: torch.Tensor | None = None,
    slots: torch.Tensor | None = None, width: int = 2, alpha: float = 1.0, dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Matrix entropies ``H(G(S_k))`` of K groups of unit rows (:class:`Groups`: CMA's groups), with
    closed-form gradients. **No validation**; ``(K,)`` in the spectrum dtype."""
    spec = Groups(anchor_index=anchor_index, slots=slots, width=width, alpha=float(alpha))
    return information_entropies(features, anchors, groups=spec, dtype=dtype)[0]  # type: ignore[return-value]
