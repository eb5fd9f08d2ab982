"""The trainer's information terms in one fused pass: CMA and ``H(K₁)``, ``H(K₂)``, ``H(K₁ ⊙ K₂)``.

:func:`hf_infonc.info.spectral.information_entropies` is general (any Rényi order, centring, the
Kronecker route of the joint, arbitrary groups). Its generality costs some 180–230 dispatched
operations and a millisecond of Python per training step, which is most of the loss's time on
small models. This module computes the one case every training step of ``InfoNCTrainer`` needs:
von Neumann entropies (α = 1), no centring, the joint on its ``n x n`` Hadamard product, for a
labelled batch (features, class head rows, labels) or a batch of image–caption pairs. It gives
the same values and gradients as the general path (``tests/test_info_fused.py`` checks both
against each other and ``gradcheck``), with about a third of the operations:

* **one normalisation** of the stacked rows ``X = [features; head rows (; 0)]``;
* **every matrix from the unit rows**: the marginals on the smallest exact form (``Ẑᵀ Ẑ`` when
  ``d < n``; for the head rows of labels also ``D^½ K_W D^½`` with ``K_W`` the ``C x C`` Gram of
  the head rows and ``D`` the class counts), the joint ``K₁ ⊙ K_W[y][:, y]``, CMA's groups gathered
  by one index (a zero row pads them);
* **one ``eigh`` per distinct matrix size**, and the entropies of all spectra in one set of
  element-wise operations (spectra padded with zeros, which count as exact zeros);
* **pairs in closed form**: CMA's group of a pair is the ``2 x 2`` Gram ``[[q, c], [c, p]]``
  (``c = â·f̂``; ``p, q ∈ {0, 1}`` for unit or zero rows) with eigenvalues ``(p + q ± r)/2``,
  ``r = √((p − q)² + 4c²)``, so ``dH/dc = (w₊ − w₋)·2c/r``;
* **one backward**: ``dH/dP = V diag(w) Vᵀ`` per bucket (``wᵢ = ∂H/∂λᵢ`` with ``t = Σλ``, the
  formula of :mod:`hf_infonc.info.spectral`), mapped to the unit rows by a few products (the
  Hadamard joint's head-row part scattered back to the ``C x C`` Gram by one ``index_put_``),
  then through the row normalisation once.

Maths and conventions are those of :mod:`hf_infonc.info.spectral` (SPEC §1–2, §4; arXiv
2406.03999 Def. 3.1–3.2; arXiv 2409.16767 §5): eigenvalues ``λ̂ ≤`` :data:`EIGENVALUE_FLOOR` are
exact zeros, zero rows (norm ≤ ``1e-12``) have value 0 and gradient 0, spectra are float64 by
default (float32 on request, never half precision) and outside autocast. Nothing is validated
here: :func:`hf_infonc.losses.information_terms` validates, then calls :func:`fused_information_terms`
when :func:`fused_supported` says the case is covered, and the general path otherwise.

This module is pure torch: it must never import transformers or datasets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.autograd.function import once_differentiable

from hf_infonc.info.entropy import EIGENVALUE_FLOOR
from hf_infonc.info.gram import ZERO_ROW_NORM
from hf_infonc.info.mutual import EntropyTerms
from hf_infonc.info.spectral import _no_autocast, kronecker_rank_bound, spectrum_dtype

_LOG2 = math.log(2.0)


def fused_supported(
    n: int, d: int, num_anchors: int, labels_given: bool, *, cma_alpha: float | None, entropy_terms: bool,
    joint: bool, center: bool, alpha: float = 1.0,
) -> bool:
    """Whether :func:`fused_information_terms` covers this call of :func:`~hf_infonc.losses.information_terms`.

    It does for von Neumann entropies (CMA and the terms at α = 1), no centring, and a joint that
    the general path would take on its ``n x n`` Hadamard product (not on the Kronecker dual,
    which it takes when ``d < n`` and ``min(n, d)·min(n, d, C) < n``).
    """
    if cma_alpha is None and not entropy_terms:
        return False
    if cma_alpha is not None and cma_alpha != 1.0:
        return False
    if not entropy_terms:
        return True
    if center or alpha != 1.0:
        return False
    rank_bound = num_anchors if labels_given else None
    return not (joint and d < n and kronecker_rank_bound(n, d, d, rank_bound) < n)


@dataclass(frozen=True)
class _Plan:
    """What to compute; host-side layout of CMA's groups (classes)."""

    cma: bool
    terms: bool
    joint: bool
    pairs: bool
    group_index: torch.Tensor | None = None  # (K, width) rows of the stacked unit rows (n + C = the zero row)
    group_coef: tuple[float, ...] = ()  # CMA weight of each group: 1/(K·log(n_k + 1)) (classes)
    loss_weights: tuple[float, float, float] | None = None  # (cma, mi, gap): output the weighted loss


def _class_groups(
    labels: torch.Tensor, n: int, num_anchors: int, host_labels: list[int] | None = None
) -> tuple[torch.Tensor, tuple[float, ...]]:
    """CMA's groups of a labelled batch: row 0 the class's head row, then its samples in batch order.

    The layout is built in Python in O(n) from the labels on the host (``host_labels``, or one
    host read of ``labels``) and sent as one tensor (asynchronously from pinned memory on an
    accelerator). The padding index ``n + C`` points at a zero row appended to the stacked rows.
    Returns the ``(K, width)`` index and the weights ``1/(K·log(n_k + 1))`` that make the weighted
    sum of the group entropies the CMA value.
    """
    members: dict[int, list[int]] = {}
    for i, c in enumerate(labels.tolist() if host_labels is None else host_labels):
        members.setdefault(c, []).append(i)
    present = sorted(members)
    width = max(len(v) for v in members.values()) + 1
    pad = n + num_anchors
    flat: list[int] = []
    for c in present:
        rows = members[c]
        flat += [n + c, *rows] + [pad] * (width - 1 - len(rows))
    index = torch.tensor(flat, dtype=torch.long)
    if labels.device.type != "cpu":
        index = index.pin_memory().to(labels.device, non_blocking=True)
    k = len(present)
    return index.view(k, width), tuple(1.0 / (k * math.log(len(members[c]) + 1)) for c in present)


_CONSTANTS: dict[tuple, torch.Tensor] = {}


def _constant(values: tuple, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A small constant tensor, cached (sending the same few numbers every step costs an operation)."""
    key = (values, dtype, device)
    tensor = _CONSTANTS.get(key)
    if tensor is None:
        if len(_CONSTANTS) > 256:
            _CONSTANTS.clear()
        tensor = _CONSTANTS[key] = torch.tensor(values, dtype=dtype, device=device)
    return tensor


class _Spectra:
    """The spectra of one step: PSD matrices solved with one ``eigh`` per distinct size, and
    spectra known in closed form, pooled (zero-padded) into one ``(rows, k_max)`` array.

    Each pooled row belongs to one output value (``out_index``) with a weight in the value
    (``weight_fwd``: CMA's group weights, 1 for H₁, H₂, H₁₂) and a weight in the backward
    (``weight_bwd``: the same, times 2 where ``P = ZZᵀ`` or ``ZᵀZ``, since then ``dZ = 2·G·Z``).
    """

    def __init__(self) -> None:
        self.by_size: dict[int, list[tuple[str, torch.Tensor]]] = {}
        self.closed: list[tuple[str, torch.Tensor]] = []
        self.meta: dict[str, tuple[list[int], float, float]] = {}  # role -> (output of each row, weight fwd, bwd)
        self.group_weights: tuple[float, ...] = ()
        self.rows: dict[str, tuple[int, int]] = {}  # role -> (first pooled row, count)
        self.solved: list[tuple[int, int, int, torch.Tensor | None]] = []  # (first row, count, size, eigenvectors)

    def add(self, role: str, mats: torch.Tensor, outputs: list[int], weight: float = 1.0) -> None:
        """Matrices ``(B, k, k)``; ``outputs``: the output value of each (one entry: all of them)."""
        self.by_size.setdefault(mats.shape[-1], []).append((role, mats))
        self.meta[role] = (outputs * mats.shape[0] if len(outputs) == 1 else outputs, weight, 2.0 * weight)

    def add_closed(self, role: str, lam: torch.Tensor, output: int, weight: float) -> None:
        self.closed.append((role, lam))
        self.meta[role] = ([output] * lam.shape[0], weight, weight)

    def solve(self, need_grad: bool) -> torch.Tensor:
        spectra: list[torch.Tensor] = []
        first = 0
        for size, members in self.by_size.items():
            mats = members[0][1] if len(members) == 1 else torch.cat([m for _, m in members])
            lam, vec = torch.linalg.eigh(mats) if need_grad else (torch.linalg.eigvalsh(mats), None)
            self.solved.append((first, mats.shape[0], size, vec))
            for role, m in members:
                self.rows[role] = (first, m.shape[0])
                first += m.shape[0]
            spectra.append(lam)
        for role, lam in self.closed:
            self.rows[role] = (first, lam.shape[0])
            first += lam.shape[0]
            spectra.append(lam)
        k_max = max(s.shape[-1] for s in spectra)
        spectra = [s if s.shape[-1] == k_max else torch.nn.functional.pad(s, (0, k_max - s.shape[-1])) for s in spectra]
        return spectra[0] if len(spectra) == 1 else torch.cat(spectra)

    def row_constants(self, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """``out_index`` (long) and ``[weight_fwd; weight_bwd]`` (2 x rows) of the pooled rows."""
        out: list[int] = []
        fwd: list[float] = []
        bwd: list[float] = []
        for role, (first, count) in sorted(self.rows.items(), key=lambda item: item[1][0]):
            outputs, w_fwd, w_bwd = self.meta[role]
            out += outputs
            if role == "groups" and self.group_weights:
                fwd += self.group_weights
                bwd += [w * w_bwd for w in self.group_weights]
            else:
                fwd += [w_fwd] * count
                bwd += [w_bwd] * count
        return _constant(tuple(out), torch.long, device), _constant((tuple(fwd), tuple(bwd)), dtype, device)


def _entropies(lam: torch.Tensor, need_grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Von Neumann entropies of trace-normalised spectra (rows of ``lam``) and ``∂H/∂λ`` (``t = Σλ``).

    ``H = -Σ λ̂ log λ̂`` over ``λ̂ = λ/t > floor``; ``∂H/∂λᵢ = (Σⱼ uⱼλ̂ⱼ − uᵢ)/t`` with
    ``uᵢ = log λ̂ᵢ + 1`` on the kept eigenvalues and 0 on the others (:mod:`hf_infonc.info.spectral`).
    Zero-padded entries are zeros of the spectrum: they change neither.
    """
    t = lam.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(lam.dtype).tiny)
    lhat = lam / t
    keep = lhat > EIGENVALUE_FLOOR.get(lam.dtype, 1e-7)
    safe = torch.where(keep, lhat, _constant(1.0, lam.dtype, lam.device))
    h = torch.special.entr(safe).sum(dim=-1)
    if not need_grad:
        return h, None
    du = safe.log() + keep
    return h, ((du * lhat).sum(dim=-1, keepdim=True) - du) / t


def _loss_coefficients(plan: _Plan, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``[linear weights; gap pattern]`` of the output values ``[CMA?, H₁, H₂, H₁₂]`` (those computed).

    The loss is ``values·(linear + sign(H₁ − H₂)·pattern)``: ``w_cma·CMA − w_mi·(H₁ + H₂ − H₁₂)`` plus
    ``w_gap·|H₁ − H₂| = w_gap·sign(H₁ − H₂)·(H₁ − H₂)``; its derivative in the values is that same
    vector (``sign`` is 0 at equality, the derivative ``torch.abs`` uses).
    """
    w_cma, w_mi, w_gap = plan.loss_weights  # type: ignore[misc]
    linear = [w_cma] if plan.cma else []
    pattern = [0.0] if plan.cma else []
    if plan.terms:
        linear += [-w_mi, -w_mi] + ([w_mi] if plan.joint else [])
        pattern += [w_gap, -w_gap] + ([0.0] if plan.joint else [])
    return _constant((tuple(linear), tuple(pattern)), dtype, device)


class _FusedInformation(torch.autograd.Function):
    @staticmethod
    def forward(ctx, features, anchors, labels, plan: _Plan, cdtype, need):  # type: ignore[override]
        n, d = features.shape
        m = anchors.shape[0]
        with _no_autocast(features.device.type):
            parts = [features, anchors]
            if plan.group_index is not None:
                parts.append(features.new_zeros((1, d)))  # the padding row of CMA's groups
            x = torch.cat(parts).to(cdtype)
            norms = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
            zero = norms <= ZERO_ROW_NORM
            div = norms.masked_fill(zero, math.inf)
            xh = x / div
            fh, ah = xh[:n], xh[n : n + m]
            spectra = _Spectra()
            st: dict[str, torch.Tensor | bool] = {}
            first_term = int(plan.cma)  # output index of H₁ (CMA is output 0 when computed)
            if plan.cma and plan.pairs:  # 2 x 2 groups [[q, c], [c, p]], c = â·f̂, p, q ∈ {0, 1}
                c = (fh * ah).sum(dim=-1)
                unit = (~zero).to(cdtype).squeeze(-1)
                p, q = unit[:n], unit[n:]
                t, r = p + q, torch.hypot(p - q, 2.0 * c)
                # eigenvalues (t ± r)/2, given doubled (entropies do not change with the scale); d(t ± r)/dc = ±4c/r
                spectra.add_closed("groups", torch.stack([t + r, t - r], dim=-1), 0, 1.0 / (n * _LOG2))
                st["slope"] = 4.0 * c / r.clamp_min(torch.finfo(cdtype).tiny)  # c = 0 wherever r = 0
            elif plan.cma:
                rows = xh[plan.group_index]  # (K, width, d)
                st["groups_gram"] = gram = rows.shape[-2] <= d
                spectra.add("groups", torch.bmm(rows, rows.mT) if gram else torch.bmm(rows.mT, rows), [0])
                spectra.group_weights = plan.group_coef
                st["rows"] = rows
            if plan.terms:
                # S = [F̂; B̂] with B̂ = Â[y] (the head row of each sample) or Â (pairs): the two marginals
                # are its two Grams (or their d x d duals), the joint their Hadamard product
                stacked = xh[: 2 * n].view(2, n, d) if plan.pairs else torch.stack([fh, ah[labels]])
                st["dual"] = dual = d < n
                grams = torch.bmm(stacked, stacked.mT) if (plan.joint or not dual) else None
                marginals = torch.bmm(stacked.mT, stacked) if dual else grams
                spectra.add("marginals", marginals, [first_term, first_term + 1])
                st.update(stacked=stacked, grams=grams)
                if plan.joint:
                    spectra.add("joint", (grams[0] * grams[1]).unsqueeze(0), [first_term + 2])
            lam = spectra.solve(need)
            h, weights = _entropies(lam, need)
            out_index, row_weights = spectra.row_constants(cdtype, xh.device)
            n_out = first_term + (2 + plan.joint if plan.terms else 0)
            values = h.new_zeros(n_out).index_add_(0, out_index, h * row_weights[0])
            effective = None
            if plan.loss_weights is not None:  # one loss and the detached values, instead of one output each
                coefficients = _loss_coefficients(plan, cdtype, xh.device)
                effective = coefficients[0]
                if plan.terms and plan.loss_weights[2]:
                    sign = torch.sign(values[first_term] - values[first_term + 1])
                    effective = torch.addcmul(effective, coefficients[1], sign)
                outputs = (torch.dot(values, effective), values)
                ctx.mark_non_differentiable(values)
            else:
                outputs = tuple(values.unbind())
        if need:
            ctx.save_for_backward(xh, div)
            ctx.state = (plan, spectra, weights, st, labels, n, m, features.dtype, anchors.dtype, out_index,
                         row_weights, effective)
        return outputs

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads):  # type: ignore[override]
        xh, div = ctx.saved_tensors
        plan, spectra, weights, st, labels, n, m, dtype_f, dtype_a, out_index, row_weights, effective = ctx.state
        with _no_autocast(xh.device.type):
            # ∂loss/∂(each output value), then per pooled row (its weight in the value, times 2 for Gram-type
            # matrices), then per eigenvalue
            g_out = torch.stack(grads) if effective is None else effective * grads[0]
            w = weights * (g_out[out_index] * row_weights[1]).unsqueeze(-1)
            grad: dict[str, torch.Tensor] = {}  # role -> V diag(w) Vᵀ (scaled)
            for first, count, size, vec in spectra.solved:
                g = torch.bmm(vec * w[first : first + count, :size].unsqueeze(-2), vec.mT)
                for role, (r0, rc) in spectra.rows.items():
                    if first <= r0 < first + count:
                        grad[role] = g[r0 - first : r0 - first + rc]
            dxh = torch.zeros_like(xh)
            dfh, dah = dxh[:n], dxh[n : n + m]
            fh, ah = xh[:n], xh[n : n + m]
            if plan.cma and plan.pairs:  # dH/dc = (w₊ − w₋)·d(t ± r)/dc, and c = â·f̂
                first, _ = spectra.rows["groups"]
                coef = ((w[first : first + n, 0] - w[first : first + n, 1]) * st["slope"]).unsqueeze(-1)
                dfh.addcmul_(coef, ah)
                dah.addcmul_(coef, fh)
            elif plan.cma:
                rows, gg = st["rows"], grad["groups"]
                d_rows = torch.bmm(gg, rows) if st["groups_gram"] else torch.bmm(rows, gg)
                dxh.index_add_(0, plan.group_index.view(-1), d_rows.reshape(-1, rows.shape[-1]))
            if plan.terms:
                stacked, grams, gm = st["stacked"], st["grams"], grad["marginals"]
                d_grams = None if st["dual"] else gm  # ∂/∂(F̂F̂ᵀ, B̂B̂ᵀ)
                if plan.joint:  # J = K₁ ⊙ K₂: ∂/∂K₁ = G ⊙ K₂, ∂/∂K₂ = G ⊙ K₁
                    d_joint = grad["joint"] * grams.flip(0)
                    d_grams = d_joint if d_grams is None else d_grams + d_joint
                if st["dual"]:  # P = SᵀS: dS = 2·S·G (the 2 is in the row weights)
                    d_stacked = torch.bmm(stacked, gm)
                    if d_grams is not None:
                        d_stacked = torch.baddbmm(d_stacked, d_grams, stacked)
                else:
                    d_stacked = torch.bmm(d_grams, stacked)
                dfh.add_(d_stacked[0])
                if plan.pairs:
                    dah.add_(d_stacked[1])
                else:  # B̂ = Â[y]: each sample's row gradient goes back to its class's head row
                    dah.index_add_(0, labels, d_stacked[1])
            # through x̂ = x/‖x‖: dx = (dx̂ − x̂(x̂·dx̂))/‖x‖ (zero rows: ‖x‖ = inf, gradient 0)
            dx = torch.addcmul(dxh, xh, (xh * dxh).sum(dim=-1, keepdim=True), value=-1.0) / div
            out_f = dx[:n].to(dtype_f) if ctx.needs_input_grad[0] else None
            out_a = dx[n : n + m].to(dtype_a) if ctx.needs_input_grad[1] else None
        return out_f, out_a, None, None, None, None


def fused_information_loss(
    features: torch.Tensor,
    anchors: torch.Tensor,
    labels: torch.Tensor | None,
    *,
    cma_weight: float,
    mi_weight: float,
    gap_weight: float,
    entropy_terms: bool = True,
    dtype: torch.dtype | None = None,
    host_labels: list[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``w_cma·CMA − w_mi·MI + w_gap·|H₁ − H₂|`` in one fused pass, and the values it came from.

    What ``InfoNCTrainer`` adds to the base loss each step (arXiv 2409.16767 §5 and 2406.03999 §6,
    unnormalised forms), with ``MI = H₁ + H₂ − H₁₂``: the gradient goes straight from the loss to
    the rows, with no autograd graph for the weighted sum. CMA is computed when ``cma_weight > 0``;
    H₁, H₂ and H₁₂ when ``entropy_terms`` (needed when ``mi_weight`` or ``gap_weight`` is non-zero).
    Same inputs (``host_labels`` too) and conditions as :func:`fused_information_terms` (no
    validation).

    Returns:
        ``(loss, values)``: the 0-d loss in the spectrum dtype, and the detached values
        ``[CMA?, H₁, H₂, H₁₂]`` (CMA only when computed; the three terms only with
        ``entropy_terms``), for logging.
    """
    cma = cma_weight > 0
    if not (cma or entropy_terms):
        raise ValueError("fused_information_loss needs cma_weight > 0 or entropy_terms=True: nothing to compute.")
    if (mi_weight or gap_weight) and not entropy_terms:
        raise ValueError("mi_weight and gap_weight need entropy_terms=True (H₁, H₂, H₁₂).")
    plan = _plan(features, anchors, labels, cma=cma, terms=entropy_terms, joint=True,
                 loss_weights=(float(cma_weight), float(mi_weight), float(gap_weight)), host_labels=host_labels)
    need = torch.is_grad_enabled() and (features.requires_grad or anchors.requires_grad)
    loss, values = _FusedInformation.apply(features, anchors, labels, plan, spectrum_dtype(dtype), need)
    return loss, values


def _plan(features: torch.Tensor, anchors: torch.Tensor, labels: torch.Tensor | None, *, cma: bool, terms: bool,
          joint: bool, loss_weights: tuple[float, float, float] | None = None,
          host_labels: list[int] | None = None) -> _Plan:
    """What :class:`_FusedInformation` computes, with CMA's class groups laid out on the host."""
    index, coef = None, ()
    if cma and labels is not None:
        index, coef = _class_groups(labels, features.shape[0], anchors.shape[0], host_labels)
    return _Plan(cma=cma, terms=terms, joint=joint, pairs=labels is None, group_index=index, group_coef=coef,
                 loss_weights=loss_weights)


def fused_information_terms(
    features: torch.Tensor,
    anchors: torch.Tensor,
    labels: torch.Tensor | None,
    *,
    cma: bool,
    entropy_terms: bool,
    joint: bool = True,
    dtype: torch.dtype | None = None,
    host_labels: list[int] | None = None,
) -> tuple[torch.Tensor | None, EntropyTerms | None]:
    """CMA (α = 1) and ``H(K₁)``, ``H(K₂)``, ``H(K₁ ⊙ K₂)`` of a batch, fused (module docstring).

    ``features`` is ``n x d``, ``anchors`` ``C x d`` head rows picked by integer ``labels`` (length
    n, values in ``[0, C)``), or with ``labels=None`` one anchor per sample (image–caption pairs,
    ``C = n``). CMA is ``mean_c H(G(S_c))/log|S_c|`` over the classes present (pairs:
    ``mean_i H(G([a_i, f_i]))/log 2``); ``K₁ = G(features)``, ``K₂ = G(anchors[labels])``.

    **No validation** and only the cases :func:`fused_supported` accepts: callers go through
    :func:`hf_infonc.losses.information_terms`. ``host_labels``: the labels as a Python list when
    the caller has read them already (:func:`hf_infonc.losses.check_loss_inputs` returns them),
    which saves CMA's layout a host read. Returns ``(CMA or None, EntropyTerms or None)`` in
    the spectrum dtype (float64 unless ``dtype=torch.float32``), the values of the general path.
    """
    if not (cma or entropy_terms):
        return None, None
    plan = _plan(features, anchors, labels, cma=cma, terms=entropy_terms, joint=joint, host_labels=host_labels)
    need = torch.is_grad_enabled() and (features.requires_grad or anchors.requires_grad)
    out = _FusedInformation.apply(features, anchors, labels, plan, spectrum_dtype(dtype), need)
    cma_value = out[0] if cma else None
    if not entropy_terms:
        return cma_value, None
    rest = out[1:] if cma else out
    return cma_value, EntropyTerms(rest[0], rest[1], rest[2] if joint else None)
