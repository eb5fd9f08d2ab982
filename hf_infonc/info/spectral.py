"""Matrix entropies with closed-form gradients: one ``torch.autograd.Function`` per batch of them.

The general closed-form path of the losses (any Rényi order, centring, the Kronecker route of the
joint, arbitrary groups): :func:`information_entropies` computes CMA's group entropies and
``H(K₁)``, ``H(K₂)``, ``H(K₁ ⊙ K₂)`` in one pass (rows normalised once, equal-sized eigen-problems
in one batched ``eigh``, one backward), :func:`group_entropies` and
:func:`cosine_gram_entropy_terms` its two halves. The spectra, their entropies and gradients, the
row normalisation and the route come from :mod:`hf_infonc.info._kernels`; the chain rule from
``dH/dP`` to the rows is derived in docs/theory.md §6. Values and gradients are those of
:mod:`~hf_infonc.info.entropy` / :mod:`~hf_infonc.info.mutual` to round-off.

Nothing is validated here (the callers in :mod:`hf_infonc.losses` validate once). Spectra are
float64 by default (float32 on request), outside autocast; the results are in the spectrum dtype
and the gradients in the inputs' dtypes. No second derivatives: use :mod:`~hf_infonc.info.entropy`
/ :mod:`~hf_infonc.info.mutual` for those. Pure torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.autograd.function import once_differentiable

from hf_infonc.info._kernels import (  # noqa: F401  (spectral_entropy, Spectrum: re-exported)
    Spectrum,
    UnitRows,
    class_groups,
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
from hf_infonc.info.mutual import EntropyTerms


class _SpectrumBatch:
    """Spectra of several matrices (any batch shapes): equal ``k`` and order share one ``eigh``."""

    def __init__(self, mats: list[torch.Tensor], alphas: list[float], need_grad: bool) -> None:
        groups: dict[tuple[int, float], list[int]] = {}
        for i, (m, alpha) in enumerate(zip(mats, alphas)):
            groups.setdefault((m.shape[-1], alpha), []).append(i)
        self.shapes = [m.shape[:-2] for m in mats]
        self.h: list[torch.Tensor] = [mats[0]] * len(mats)
        # (members, their numbers of matrices along the concatenated batch (None: one member, []: stacked
        # single matrices), spectrum)
        self.parts: list[tuple[list[int], list[int] | None, Spectrum]] = []
        for (k, alpha), idx in groups.items():
            if len(idx) == 1:
                spec = spectral_entropy(mats[idx[0]], alpha, need_grad)
                self.h[idx[0]] = spec.h
                self.parts.append((idx, None, spec))
                continue
            if all(mats[i].dim() == 2 for i in idx):  # single matrices: one stack, one unbind
                spec = spectral_entropy(torch.stack([mats[i] for i in idx]), alpha, need_grad)
                for i, h in zip(idx, spec.h.unbind()):
                    self.h[i] = h
                self.parts.append((idx, [], spec))
                continue
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
            if sizes is None:
                out[idx[0]] = spec.grad(scales[idx[0]])  # type: ignore[arg-type]
                continue
            if not sizes:  # stacked single matrices
                member = [scales[i] for i in idx]
                if any(not isinstance(m, torch.Tensor) for m in member):
                    zero = spec.h.new_zeros(())
                    member = [zero if m is None else torch.as_tensor(m, dtype=zero.dtype) for m in member]
                for i, g in zip(idx, spec.grad(torch.stack(member)).unbind()):
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
    """Groups of rows whose entropies are wanted (CMA's ``S_c``): anchor k in slot 0, then its features.

    Attributes:
        anchor_index: ``(K,)`` row of ``anchors`` anchoring group k (``None``: ``anchors[k]``).
        slots: ``(n,)`` slot ``k·width + j`` (``j ≥ 1``) of each feature row in the zero-padded
            ``K x width`` groups; ``None``: group i is ``[anchors[i], features[i]]`` (pairs).
        width: slots per group (``max group size + 1``); 2 for pairs.
        weights: ``None`` for the K entropies, else ``Σ_k weights[k]·H_k`` (length K, or one number).
        alpha: Rényi order.
    """

    anchor_index: torch.Tensor | None = None
    slots: torch.Tensor | None = None
    width: int = 2
    weights: torch.Tensor | float | None = None
    alpha: float = 1.0


@dataclass(frozen=True)
class Terms:
    """``H(G(features))``, ``H(G(b))``, ``H(G(features) ⊙ G(b))``, ``b = anchors[b_index]`` (or ``anchors``).

    Attributes:
        b_index: ``(n,)`` row of ``anchors`` per sample (labels); ``None``: one anchor row per sample.
        alpha: Rényi order.
        center: subtract the mean row before normalising.
        joint: also compute the joint entropy.
        rank_bound_b: a bound of ``rank(b)`` (the number of head rows): the joint's route is then
            decided without a host sync.
    """

    b_index: torch.Tensor | None = None
    alpha: float = 1.0
    center: bool = False
    joint: bool = True
    rank_bound_b: int | None = None


def cma_groups(
    labels: torch.Tensor | None, n: int, *, alpha: float = 1.0, dtype: torch.dtype | None = None,
    host_labels: list[int] | None = None,
) -> Groups:
    """CMA's groups ``S_c`` for ``n`` samples with valid class ``labels`` (``None``: pairs).

    Group k is the k-th class present: its head row, then its samples in batch order, with the
    weights of :func:`~hf_infonc.info._kernels.class_groups`. One host read of the labels unless
    ``host_labels`` are given.
    """
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
    """Group entropies (:class:`Groups`) and entropy terms (:class:`Terms`) of ``features`` (``n x d``)
    and ``anchors`` (``m x d'``) in one pass: rows normalised once, eigen-problems of equal size
    solved in one batched call, one backward."""

    @staticmethod
    def forward(ctx, features, anchors, groups, terms, cdtype, need):  # type: ignore[override]
        ctx.set_materialize_grads(False)
        with no_autocast(features.device.type):
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
                mats.append(matmul(rows.mT, rows) if st["group_dual"] else matmul(rows, rows.mT))
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
                if terms.joint and kronecker_joint(n, d_a, d_b, terms.rank_bound_b, terms.alpha):
                    # joint on the Kronecker dual of both numerical row spaces: needs the marginals' eigenvectors
                    spec_a = spectral_entropy(pa, terms.alpha, True)
                    spec_b = spectral_entropy(pb, terms.alpha, True)
                    basis_a = reduced_basis(spec_a.eigenvalues, spec_a.eigenvectors, n)
                    basis_b = reduced_basis(spec_b.eigenvalues, spec_b.eigenvectors, n)
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
        with no_autocast(fn.device.type):
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
                d_rows = (matmul(rows, g[0]) if st["group_dual"] else matmul(g[0], rows)) * 2.0
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
                        d_b = unit_rows_backward(d_tb, centred_b, center=True)
                        extra_a = _scatter_rows(terms.b_index, d_b, an.shape)
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
            out_f = _input_gradient(ctx.needs_input_grad[0], d_fn, unit_f, extra_f, dtype_f)
            out_a = _input_gradient(ctx.needs_input_grad[1], d_an, unit_a, extra_a, dtype_a)
        return out_f, out_a, None, None, None, None


def _input_gradient(
    needed: bool, d_rows: torch.Tensor | None, unit: UnitRows, extra: torch.Tensor | None, dtype: torch.dtype
) -> torch.Tensor | None:
    """The gradient of an input: ``d_rows`` (w.r.t. its unit rows) through the normalisation, plus
    ``extra`` (already w.r.t. the input: the centred terms), in the input's dtype."""
    if not needed:
        return None
    out = None if d_rows is None else unit_rows_backward(d_rows, unit)
    if extra is not None:
        out = extra if out is None else out + extra
    return None if out is None else out.to(dtype)


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
    features: torch.Tensor, anchors: torch.Tensor, *, groups: Groups | None = None, terms: Terms | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor | None, EntropyTerms | None]:
    """Group entropies and/or entropy terms of ``features`` and ``anchors`` in one ``autograd.Function``.

    The general path of :func:`hf_infonc.losses.information_terms`: rows normalised once,
    eigen-problems of the same size and order in one batched ``eigh``, the closed-form backward of
    docs/theory.md §6. **No validation**: ``features`` (``n x d``) and ``anchors`` (``m x d'``, ``d' = d``
    with ``groups``) must be finite 2-D floating tensors and the indices in range.

    Returns:
        ``(group value, terms)``: the group entropies (``(K,)``, or their weighted sum with
        ``groups.weights``) and :class:`~hf_infonc.info.mutual.EntropyTerms`, each ``None`` when not
        asked for; in the spectrum dtype (float64 by default).
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
    """``H(G(a))``, ``H(G(b[b_index]))`` and their joint ``H(K₁ ⊙ K₂)``, with closed-form gradients.

    The values of :func:`hf_infonc.info.entropy_terms` (route "auto") to round-off; the joint on the
    ``n x n`` Hadamard product, or on the Kronecker dual when ``min(n, d_a)·min(n, d_b, rank_bound_b)
    < n`` (docs/theory.md §6). **No validation** (see :class:`Terms`); 0-d results in the spectrum dtype.
    """
    spec = Terms(b_index=b_index, alpha=float(alpha), center=center, joint=joint, rank_bound_b=rank_bound_b)
    return information_entropies(a, b, terms=spec, dtype=dtype)[1]  # type: ignore[return-value]


def group_entropies(
    features: torch.Tensor, anchors: torch.Tensor, *, anchor_index: torch.Tensor | None = None,
    slots: torch.Tensor | None = None, width: int = 2, alpha: float = 1.0, dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Matrix entropies ``H(G(S_k))`` of K groups of rows, with closed-form gradients (CMA's groups).

    Group ``S_k`` stacks the unit anchor ``anchors[anchor_index[k]]`` (or ``anchors[k]``) in row 0 with
    the unit feature rows of slots ``k·width + j`` (``slots=None``: pairs ``[anchors[i], features[i]]``),
    zero-padded (which leaves the spectrum unchanged); each spectrum is read from the ``width x width``
    Gram or the ``d x d`` dual. **No validation** (see :class:`Groups`); ``(K,)`` in the spectrum dtype.
    """
    spec = Groups(anchor_index=anchor_index, slots=slots, width=width, alpha=float(alpha))
    return information_entropies(features, anchors, groups=spec, dtype=dtype)[0]  # type: ignore[return-value]
