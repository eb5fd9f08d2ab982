"""The trainer's information terms in one fused pass: CMA and ``H(K₁)``, ``H(K₂)``, ``H(K₁ ⊙ K₂)``.

The fast path of :func:`hf_infonc.losses.information_terms` for every default training step of
``InfoNCTrainer`` (α = 1, no centring, the joint on its ``n x n`` Hadamard product; class labels or
image–caption pairs), built on the kernels of the general path (:mod:`hf_infonc.info._kernels`),
with its values and gradients and fewer than half of its operations (docs/theory.md §6, "The fused
path"). Nothing is validated here; :func:`fused_supported` says which calls it covers. Pure torch.
"""

from __future__ import annotations

import functools
import math
from array import array
from dataclasses import dataclass

import torch
from torch.autograd.function import once_differentiable

from hf_infonc.info._kernels import (
    class_groups,
    constant,
    eigen,
    gram,
    kronecker_joint,
    no_autocast,
    pair_group_weight,
    spectrum_entropy,
    split_outputs,
    unit_rows,
    unit_rows_backward,
)
from hf_infonc.info.gram import spectrum_dtype
from hf_infonc.info.mutual import EntropyTerms


def fused_supported(
    n: int, d: int, num_anchors: int, labels_given: bool, *, cma_alpha: float | None, entropy_terms: bool,
    joint: bool, center: bool, terms_alpha: float = 1.0,
) -> bool:
    """Whether :func:`fused_information_terms` covers this call of :func:`~hf_infonc.losses.information_terms`:
    von Neumann entropies (CMA's ``cma_alpha``, the terms' ``terms_alpha``), no centring, and the joint on
    its ``n x n`` Hadamard product."""
    if cma_alpha not in (None, 1.0) or (cma_alpha is None and not entropy_terms):
        return False  # a Rényi CMA, or nothing to compute
    if entropy_terms and terms_alpha != 1.0:
        return False  # Rényi entropy terms
    rank_bound = num_anchors if labels_given else None
    return not entropy_terms or not (center or joint and kronecker_joint(n, d, d, rank_bound, 1.0))


@dataclass(frozen=True)
class _Plan:
    """What one call computes, laid out on the host from the shapes and the labels.

    ``X̂ = [F̂; 0; Â; 0]``: two blocks of ``block`` rows, normalised as one ``2 x block x d`` batch;
    ``gather`` picks from it ``[F̂; Â[y]]`` for the terms, then CMA's ``K x width`` groups (head row,
    samples, the zero row ``block + C`` as padding). ``buckets``: the matrices of each size (one
    ``eigh`` each); ``coef[0]`` maps the pooled entropies to the outputs ``[CMA?, H₁, H₂, H₁₂]``,
    ``coef[1]`` too with the factor 2 of ``dZ = 2·G·Z``, for the backward.
    """

    cma: bool
    terms: bool
    joint: bool
    pairs: bool
    n: int
    d: int
    m: int
    block: int  # rows per block of X̂: the head rows start at row `block`
    dual: bool  # the terms' marginals on their d x d duals (d < n)
    groups: tuple[int, int] | None  # (K, width) of CMA's class groups
    gather: torch.Tensor | None
    buckets: tuple[tuple[int, tuple[tuple[str, int], ...]], ...]
    coef: torch.Tensor  # (2, n_out, rows)
    loss_weights: tuple[float, float, float] | None = None  # (cma, mi, gap): output the weighted loss


def _layout(n: int, d: int, *, cma: bool, terms: bool, joint: bool, pairs: bool,
            group_weights: list[float] | None, width: int) -> tuple[tuple, list[float], tuple[int, int, int]]:
    """The buckets of :class:`_Plan` and its coefficients (flat, and their shape ``(2, n_out, rows)``)."""
    first_term = int(cma)  # output index of H₁ (CMA is output 0 when computed)
    matrices: list[tuple[str, int, list[tuple[int, float]]]] = []  # (role, size, (output, weight) of each matrix)
    if group_weights is not None:
        matrices.append(("groups", min(width, d), [(0, w) for w in group_weights]))
    if terms:
        matrices.append(("marginals", min(d, n), [(first_term, 1.0), (first_term + 1, 1.0)]))
        if joint:
            matrices.append(("joint", n, [(first_term + 2, 1.0)]))
    by_size: dict[int, list[tuple[str, list[tuple[int, float]]]]] = {}
    for role, size, outputs in matrices:
        by_size.setdefault(size, []).append((role, outputs))
    pooled = [(out, w, 2.0 * w) for members in by_size.values() for _, outputs in members for out, w in outputs]
    if cma and pairs:  # the closed-form 2 x 2 spectra, last
        pooled += [(0, pair_group_weight(n), pair_group_weight(n))] * n
    n_out, rows = first_term + (2 + joint if terms else 0), len(pooled)
    table = [0.0] * (2 * n_out * rows)
    for r, (out, w_fwd, w_bwd) in enumerate(pooled):
        table[out * rows + r] = w_fwd
        table[(n_out + out) * rows + r] = w_bwd
    buckets = tuple(
        (size, tuple((role, len(outputs)) for role, outputs in members)) for size, members in by_size.items()
    )
    return buckets, table, (2, n_out, rows)


@functools.lru_cache(maxsize=64)
def _shape_layout(n: int, d: int, cma: bool, terms: bool, joint: bool, pairs: bool, cdtype: torch.dtype,
                  device: torch.device) -> tuple[tuple, torch.Tensor]:
    """:func:`_layout` without class groups (it depends on the shapes only), its coefficients on ``device``."""
    buckets, table, shape = _layout(n, d, cma=cma, terms=terms, joint=joint, pairs=pairs, group_weights=None, width=0)
    return buckets, torch.tensor(table, dtype=cdtype, device=device).view(shape)


def _fused(features: torch.Tensor, anchors: torch.Tensor, labels: torch.Tensor | None, *, cma: bool, terms: bool,
           joint: bool, dtype: torch.dtype | None, loss_weights: tuple[float, float, float] | None = None,
           host_labels: list[int] | None = None) -> tuple[torch.Tensor, ...]:
    """Lay out one call of :class:`_FusedInformation` (:class:`_Plan`; CMA's class groups from the
    labels on the host: ``host_labels``, or one host read of ``labels``) and run it."""
    cdtype = spectrum_dtype(dtype)
    (n, d), m, pairs, device = features.shape, anchors.shape[0], labels is None, features.device
    joint = joint and terms
    gather: list[int] | torch.Tensor | None = None
    groups = None
    block = max(n, m + 1) if (cma and not pairs) else max(n, m)  # CMA's groups need a zero row after Â
    if not pairs and cma:  # CMA's class groups are laid out on the host
        ys = labels.tolist() if host_labels is None else host_labels
        present, members, width, group_weights = class_groups(ys)
        flat: list[int] = []
        for c, rows in zip(present, members):  # the class's head row, its samples, then the zero row after Â
            flat += [block + c, *rows] + [block + m] * (width - 1 - len(rows))
        gather = [*range(n), *(block + y for y in ys), *flat] if terms else flat
        groups = (len(group_weights), width)
    elif not pairs:  # [F̂; Â[y]]: from the host labels when given, else on the device (no host read)
        gather = (
            [*range(n), *(block + y for y in host_labels)] if host_labels is not None
            else torch.cat([torch.arange(n, device=device), labels.to(device, torch.long) + block])
        )
    if groups is None:
        buckets, coef = _shape_layout(n, d, cma, terms, joint, pairs, cdtype, device)
        index = gather if gather is None or isinstance(gather, torch.Tensor) else _to_device(gather, None, device)[0]
    else:
        buckets, table, shape = _layout(n, d, cma=cma, terms=terms, joint=joint, pairs=pairs,
                                        group_weights=group_weights, width=groups[1])
        index, coef = _to_device(gather, table, device)
        coef = coef.to(cdtype).view(shape)
    plan = _Plan(cma=cma, terms=terms, joint=joint, pairs=pairs, n=n, d=d, m=m, block=block, dual=d < n, groups=groups,
                 gather=index, buckets=buckets, coef=coef, loss_weights=loss_weights)
    need = torch.is_grad_enabled() and (features.requires_grad or anchors.requires_grad)
    return _FusedInformation.apply(features, anchors, plan, cdtype, need)


def _host_tensor(values: list, typecode: str) -> torch.Tensor:
    """A CPU tensor of Python numbers (``"q"``: int64, ``"d"``: float64), through an ``array`` buffer
    (3x faster than ``torch.tensor(list)``)."""
    return torch.frombuffer(array(typecode, values), dtype=torch.int64 if typecode == "q" else torch.float64)


def _to_device(
    index: list[int], values: list[float] | None, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A host-built index (int64) and float64 ``values`` on ``device``: on an accelerator in one
    asynchronous copy from pinned memory (the values travel as their int64 bits)."""
    if device.type == "cpu":
        return _host_tensor(index, "q"), None if values is None else _host_tensor(values, "d")
    if values is None:
        return _host_tensor(index, "q").pin_memory().to(device, non_blocking=True), None
    packed = torch.cat([_host_tensor(index, "q"), _host_tensor(values, "d").view(torch.int64)])
    packed = packed.pin_memory().to(device, non_blocking=True)
    return packed[: len(index)], packed[len(index) :].view(torch.float64)


def _loss_coefficients(plan: _Plan, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``[linear weights; gap pattern; H₁ − H₂ selector]`` over the values ``[CMA?, H₁, H₂, H₁₂]``: the
    loss is ``values·(linear + sign(H₁ − H₂)·pattern)``, and so is its derivative in the values."""
    w_cma, w_mi, w_gap = plan.loss_weights  # type: ignore[misc]
    columns = [(w_cma, 0.0, 0.0)] if plan.cma else []  # (linear, pattern, selector) of each value
    if plan.terms:
        columns += [(-w_mi, w_gap, 1.0), (-w_mi, -w_gap, -1.0)] + ([(w_mi, 0.0, 0.0)] if plan.joint else [])
    return constant(tuple(zip(*columns)), dtype, device)


def _symmetric_times(g: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``g @ z`` for a batch of symmetric ``g`` (``k x k``), as ``(zᵀ g)ᵀ`` when ``z`` is skinny (``k ≥ 4d``):
    the same numbers, 2x faster with MKL's float64 ``bmm`` (measured at ``k = 128, d = 16``)."""
    return torch.bmm(z.mT, g).mT if z.shape[-2] >= 4 * z.shape[-1] else torch.bmm(g, z)


class _FusedInformation(torch.autograd.Function):
    @staticmethod
    def forward(ctx, features, anchors, plan: _Plan, cdtype, need):  # type: ignore[override]
        n, d, m, block = plan.n, plan.d, plan.m, plan.block
        with no_autocast(features.device.type):
            parts = [features]
            if block > n:
                parts.append(features.new_zeros((block - n, d)))
            parts.append(anchors)
            if block > m:
                parts.append(anchors.new_zeros((block - m, d)))  # holds the padding row of CMA's groups
            # both blocks normalised at once, each with its own scale (the row normalisation of every path)
            unit = unit_rows(torch.cat(parts).view(2, block, d), dtype=cdtype)
            xh = unit.rows.view(2 * block, d)
            rows = xh if plan.gather is None else xh[plan.gather]
            mats: dict[str, torch.Tensor] = {}
            st: dict[str, torch.Tensor] = {}
            closed = None
            if plan.terms:
                # S = [F̂; B̂], B̂ = Â[y] or Â (pairs): the marginals are its Grams (or duals), the joint their product
                st["stacked"] = stacked = rows[: 2 * n].view(2, n, d)
                grams = gram(stacked) if (plan.joint or not plan.dual) else None
                mats["marginals"] = gram(stacked, True) if plan.dual else grams
                if plan.joint:
                    st["grams"] = grams
                    mats["joint"] = grams[:1] * grams[1:]
            if plan.groups is not None:
                k, width = plan.groups
                st["group_rows"] = group_rows = rows[2 * n if plan.terms else 0 :].view(k, width, d)
                mats["groups"] = gram(group_rows, width > d)
            elif plan.cma:  # pairs: the 2 x 2 Grams in closed form, eigenvalues doubled (docs/theory.md §6)
                fh, ah = xh[:n], xh[block:]
                c = (fh * ah).sum(dim=-1)
                nonzero = (unit.norms < math.inf).to(cdtype).view(2, block)  # 1 for unit rows, 0 for zero rows
                p, q = nonzero[0], nonzero[1]
                t, r = p + q, torch.hypot(p - q, 2.0 * c)
                closed = torch.stack([t + r, t - r], dim=-1)
                st["slope"] = 4.0 * c / r.clamp_min(torch.finfo(cdtype).tiny)  # c = 0 wherever r = 0
            spectra: list[torch.Tensor] = []
            vectors: list[torch.Tensor | None] = []
            for _, members in plan.buckets:
                mat = torch.cat([mats[role] for role, _ in members]) if len(members) > 1 else mats[members[0][0]]
                lam, vec = eigen(mat, need)
                spectra.append(lam)
                vectors.append(vec)
            if closed is not None:
                spectra.append(closed)
            k_max = max(s.shape[-1] for s in spectra)
            spectra = [
                s if s.shape[-1] == k_max else torch.nn.functional.pad(s, (0, k_max - s.shape[-1])) for s in spectra
            ]
            lam = spectra[0] if len(spectra) == 1 else torch.cat(spectra)
            # zero-padded entries are zeros of the spectrum: they change neither H nor its weights
            trace = lam.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(cdtype).tiny)
            h, weights = spectrum_entropy(lam, trace, 1.0, need)
            values = torch.mv(plan.coef[0], h)
            effective = None
            if plan.loss_weights is not None:  # one loss and the detached values, instead of one output each
                coefficients = _loss_coefficients(plan, cdtype, xh.device)
                effective = coefficients[0]
                if plan.terms and plan.loss_weights[2]:
                    effective = torch.addcmul(effective, coefficients[1], torch.dot(values, coefficients[2]).sign())
                outputs = (torch.dot(values, effective), values)
                ctx.mark_non_differentiable(values)
            else:
                outputs = tuple(values.unbind())
        if need:
            ctx.state = (plan, vectors, weights, st, features.dtype, anchors.dtype, effective, unit, xh)
        return outputs

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads):  # type: ignore[override]
        plan, vectors, weights, st, dtype_f, dtype_a, effective, unit, xh = ctx.state
        n, d, m, block = plan.n, plan.d, plan.m, plan.block
        with no_autocast(xh.device.type):
            # ∂loss/∂(each output value), then per pooled row (times 2 for Grams), then per eigenvalue
            g_out = torch.stack(grads) if effective is None else effective * grads[0]
            w = weights * torch.mv(plan.coef[1].mT, g_out).unsqueeze(-1)
            grad: dict[str, torch.Tensor] = {}  # role -> V diag(w) Vᵀ (scaled)
            first = 0
            for (size, members), vec in zip(plan.buckets, vectors):
                g = torch.bmm(vec * w[first : first + vec.shape[0], :size].unsqueeze(-2), vec.mT)
                first += vec.shape[0]
                parts = (g,) if len(members) == 1 else g.split([count for _, count in members])
                grad.update(zip([role for role, _ in members], parts))
            d_rows: list[torch.Tensor] = []  # ∂/∂rows, in the order of the gather (pairs: of X̂ itself)
            if plan.terms:
                stacked, gm = st["stacked"], grad["marginals"]
                # P = SᵀS: dS = 2·S·G (the 2 is in coef[1]); P = SSᵀ: dS = 2·G·S
                d_stacked = torch.bmm(stacked, gm) if plan.dual else _symmetric_times(gm, stacked)
                if plan.joint:  # J = K₁ ⊙ K₂: dF̂ = (G ⊙ K₂)F̂, dB̂ = (G ⊙ K₁)B̂
                    d_joint = _symmetric_times(grad["joint"] * st["grams"], stacked.flip(0))  # [dB̂, dF̂]
                    d_stacked = d_stacked + d_joint.flip(0)
                d_rows.append(d_stacked.reshape(2 * n, d))
            if plan.groups is not None:
                group_rows, gg = st["group_rows"], grad["groups"]
                d_groups = _symmetric_times(gg, group_rows) if plan.groups[1] <= d else torch.bmm(group_rows, gg)
                d_rows.append(d_groups.reshape(-1, d))
            if plan.gather is not None:
                gathered = d_rows[0] if len(d_rows) == 1 else torch.cat(d_rows)
                dxh = xh.new_zeros(xh.shape).index_add_(0, plan.gather, gathered)
            else:
                dxh = d_rows[0] if d_rows else torch.zeros_like(xh)
            if plan.cma and plan.pairs:  # dH/dc = (w₊ − w₋)·d(t ± r)/dc, and c = â·f̂
                first = w.shape[0] - n
                coef = ((w[first:, 0] - w[first:, 1]) * st["slope"]).unsqueeze(-1)
                dxh[:n].addcmul_(coef, xh[block:])
                dxh[block:].addcmul_(coef, xh[:n])
            dx = unit_rows_backward(dxh.view(2, block, d), unit).view(2 * block, d)
            out_f = dx[:n].to(dtype_f) if ctx.needs_input_grad[0] else None
            out_a = dx[block : block + m].to(dtype_a) if ctx.needs_input_grad[1] else None
        return out_f, out_a, None, None, None


def fused_information_loss(
    features: torch.Tensor, anchors: torch.Tensor, labels: torch.Tensor | None, *, cma_weight: float,
    mi_weight: float, gap_weight: float, entropy_terms: bool = True, dtype: torch.dtype | None = None,
    host_labels: list[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``w_cma·CMA − w_mi·MI + w_gap·|H₁ − H₂|`` in one fused pass, and the values it came from.

    What ``InfoNCTrainer`` adds to the base loss (arXiv 2409.16767 §5, 2406.03999 §6). CMA when
    ``cma_weight > 0``; H₁, H₂, H₁₂ when ``entropy_terms``; inputs as :func:`fused_information_terms`.
    Returns ``(loss, values)``: the 0-d loss in the spectrum dtype and the detached values
    ``[CMA?, H₁, H₂, H₁₂]``, for logging.
    """
    cma = cma_weight > 0
    if not (cma or entropy_terms):
        raise ValueError("fused_information_loss needs cma_weight > 0 or entropy_terms=True: nothing to compute.")
    if (mi_weight or gap_weight) and not entropy_terms:
        raise ValueError("mi_weight and gap_weight need entropy_terms=True (H₁, H₂, H₁₂).")
    return _fused(features, anchors, labels, cma=cma, terms=entropy_terms, joint=True, dtype=dtype,
                  loss_weights=(float(cma_weight), float(mi_weight), float(gap_weight)), host_labels=host_labels)


def fused_information_terms(
    features: torch.Tensor, anchors: torch.Tensor, labels: torch.Tensor | None, *, cma: bool, entropy_terms: bool,
    joint: bool = True, dtype: torch.dtype | None = None, host_labels: list[int] | None = None,
) -> tuple[torch.Tensor | None, EntropyTerms | None]:
    """CMA (α = 1) and ``H(K₁)``, ``H(K₂)``, ``H(K₁ ⊙ K₂)`` of a batch, fused.

    ``features`` ``n x d``; ``anchors`` ``C x d`` head rows picked by integer ``labels`` in ``[0, C)``,
    or with ``labels=None`` one anchor per sample (pairs). **No validation**, and only the cases
    :func:`fused_supported` accepts. ``host_labels``: the labels as a list when already read (saves a
    host read). Returns ``(CMA or None, EntropyTerms or None)`` in the spectrum dtype, the values of
    the general path.
    """
    if not (cma or entropy_terms):
        return None, None
    out = _fused(features, anchors, labels, cma=cma, terms=entropy_terms, joint=joint, dtype=dtype,
                 host_labels=host_labels)
    return split_outputs(out, cma, entropy_terms, joint)
