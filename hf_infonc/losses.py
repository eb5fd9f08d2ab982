"""Information losses between representations and classifier-head rows.

Each loss is an ``nn.Module`` with its hyper-parameters in the constructor, called as
``loss(features, labels, head_rows)`` with ``features`` ``n x d``, integer ``labels`` of length
``n`` and ``head_rows`` ``C x d`` (or ``labels=None`` and one head row per sample: image–caption
pairs); it returns a 0-d tensor. Weights are applied by the trainer. The inputs are validated
(:func:`check_loss_inputs`) unless ``validate=False``; the entropies are computed by
:mod:`hf_infonc.info.spectral` with closed-form gradients, in float64 unless ``dtype=float32``.
None of them returns NaN or inf: a batch of one, a single class, a class with one sample and
zero entropy all give finite values and finite gradients.

* :class:`CrossModalAlignmentLoss` (CMA): Song et al., arXiv 2409.16767, §5 and the authors'
  released code.
* :class:`MutualInformationLoss` and :class:`EntropyGapLoss`: Song et al., arXiv 2406.03999,
  §6 (``L_base - λ·MI`` and ``L_base + λ·|H₁ - H₂|``).

Citation::

    @article{song2024exploring,
      title  = {Exploring Information-Theoretic Metrics Associated with Neural Collapse in
                Supervised Training},
      author = {Song, Kun and Tan, Zhiquan and Zou, Bochao and Chen, Jiansheng and Ma, Huimin
                and Huang, Weiran},
      journal= {arXiv preprint arXiv:2409.16767},
      year   = {2024}
    }
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from hf_infonc.info.entropy import check_alpha
from hf_infonc.info.fused import fused_information_terms, fused_supported
from hf_infonc.info.gram import check_tensor
from hf_infonc.info.mutual import ZERO_ENTROPY_TOL, EntropyTerms, safe_ratio
from hf_infonc.info.spectral import Groups, Terms, information_entropies, spectrum_dtype


def _check_label_tensor(labels: object, n: int) -> None:
    """Type, dtype and shape of class labels (no host sync)."""
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels must be a torch.Tensor of class indices, got {type(labels).__name__}.")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"labels must be integer class indices, got dtype {labels.dtype}. Use labels.long().")
    if labels.dim() != 1 or labels.shape[0] != n:
        raise ValueError(
            f"labels has shape {tuple(labels.shape)}, expected ({n},): one class index per feature row."
        )


def _check_label_range(low: int, high: int, num_classes: int) -> None:
    if low < 0 or high >= num_classes:
        raise ValueError(
            f"labels range over [{low}, {high}] but there are {num_classes} head rows "
            f"(classes 0..{num_classes - 1}). "
            f"Check the label mapping of the data against the model's classes (ignored labels such as -100 "
            f"must be removed before the information losses)."
        )


def check_labels(labels: object, n: int, num_classes: int) -> torch.Tensor:
    """Validate integer class labels of length ``n`` in ``[0, num_classes)`` (one host sync)."""
    _check_label_tensor(labels, n)
    if n > 0:
        low, high = torch.stack(torch.aminmax(labels)).tolist()
        _check_label_range(low, high, num_classes)
    return labels


def check_loss_inputs(features: object, labels: object, head_rows: object) -> list[int] | None:
    """Validate the inputs of the information losses once (what ``validate=True`` runs).

    ``features`` must be a finite floating ``n x d`` tensor with n ≥ 1 and ``head_rows`` a finite
    floating ``C x d`` one; ``labels`` integer class indices of length n in ``[0, C)``, or ``None``
    for image–caption pairs, where ``head_rows`` holds one row per sample (``C = n``).
    Raises ``TypeError`` / ``ValueError`` saying what is wrong and how to fix it.

    Costs one host sync: the NaN/inf check (one sum) and the labels come to the host in one
    transfer, and the labels are returned as a Python list (``None`` for pairs), which the fused
    loss takes as ``host_labels`` to lay out CMA's classes without reading them again. That is why
    ``InfoNCTrainer`` runs it once per step on the gathered batch and calls the losses with
    ``validate=False``.
    """
    if not isinstance(features, torch.Tensor) or features.dim() != 2:
        raise ValueError(f"features must be a 2-D tensor (n x d), got {getattr(features, 'shape', type(features))}.")
    if not isinstance(head_rows, torch.Tensor) or head_rows.dim() != 2:
        raise ValueError(f"head_rows must be a 2-D tensor (C x d), got {getattr(head_rows, 'shape', type(head_rows))}.")
    if features.shape[0] == 0:
        raise ValueError("features is empty: an information loss needs at least one sample.")
    if head_rows.shape[-1] != features.shape[-1]:
        raise ValueError(
            f"features have dimension {features.shape[-1]} but head_rows have {head_rows.shape[-1]}; both must live "
            f"in the same space (for CLIP, the projected image and text embeddings)."
        )
    if labels is None:
        if head_rows.shape[0] != features.shape[0]:
            raise ValueError(
                f"labels=None means image–caption pairs (one head row per sample), but there are "
                f"{features.shape[0]} features and {head_rows.shape[0]} head rows. Pass class labels, or as many "
                f"caption embeddings as images."
            )
    else:
        _check_label_tensor(labels, features.shape[0])
    for name, x in (("features", features), ("head_rows", head_rows)):
        if not x.is_floating_point() or x.numel() == 0:
            check_tensor(x, name)  # raises the TypeError / ValueError that says what to pass instead
    # NaN/inf: a finite float64 sum means finite entries; a non-finite one (a NaN/inf entry, or an
    # overflow of the sum) runs the element-wise check, which names the input. The sum travels with
    # the labels in one int64 transfer (its bits, reinterpreted on the host).
    with torch.no_grad():
        total = features.sum(dtype=torch.float64) + head_rows.sum(dtype=torch.float64)
        row = total.reshape(1).view(torch.int64)
        host = (row if labels is None else torch.cat([row, labels.to(row.device, torch.int64)])).tolist()
    host_labels = None if labels is None else host[1:]
    if host_labels:
        _check_label_range(min(host_labels), max(host_labels), head_rows.shape[0])
    if not math.isfinite(struct.unpack("<d", struct.pack("<q", host[0]))[0]):
        check_tensor(features, "features")
        check_tensor(head_rows, "head_rows")
    return host_labels


def sample_entropy_terms(
    features: torch.Tensor,
    labels: torch.Tensor | None,
    head_rows: torch.Tensor,
    *,
    center: bool = False,
    dtype: torch.dtype | None = None,
    joint: bool = True,
    validate: bool = True,
) -> EntropyTerms:
    """``H(K₁)``, ``H(K₂)``, ``H(K₁ ⊙ K₂)``, ``K₁ = G(features)``, ``K₂ = G(head_rows[labels])`` (SPEC §2.2).

    ``labels=None``: image–caption pairs, ``K₂ = G(head_rows)`` with one head row per sample.
    The values are those of :func:`hf_infonc.info.entropy_terms` (route "auto"), with closed-form
    gradients: one ``autograd.Function`` for the three entropies
    (:func:`hf_infonc.info.spectral.information_entropies`). The tensors are in the spectrum dtype
    (float64 by default). ``validate=False`` skips :func:`check_loss_inputs`, for callers that
    validated the same tensors already (``InfoNCTrainer`` does, once per step).
    """
    return information_terms(
        features, labels, head_rows, center=center, dtype=dtype, joint=joint, validate=validate
    )[1]  # type: ignore[return-value]


def cma_groups(labels: torch.Tensor | None, n: int, *, alpha: float = 1.0, dtype: torch.dtype | None = None) -> Groups:
    """The groups ``S_c`` of CMA for ``n`` samples with valid class ``labels`` (``None``: pairs).

    Group k is class ``classes[k]`` (the classes present, sorted): its head row in row 0, then its
    samples in batch order in rows ``1…n_k`` (``width = max n_k + 1``). The weights
    ``1/(K·log(n_k + 1))`` make the weighted sum of the group entropies the CMA value
    ``mean_k H(G(S_k)) / log|S_k|``. Pairs: group i is ``[caption i, image i]``, weight ``1/(n·log 2)``.
    One host sync (the class counts); the per-class bookkeeping is done on those K numbers.
    """
    if labels is None:
        return Groups(width=2, weights=1.0 / (n * math.log(2.0)), alpha=alpha)
    classes, counts = torch.unique(labels, return_counts=True)
    order = torch.argsort(labels, stable=True)  # samples grouped by class, in batch order within a class
    sizes = counts.tolist()
    width = max(sizes) + 1
    sorted_slots = [k * width + j for k, size in enumerate(sizes) for j in range(1, size + 1)]
    slots = torch.empty_like(order).index_put_((order,), torch.tensor(sorted_slots, device=labels.device))
    cdtype = spectrum_dtype(dtype)
    weights = [1.0 / (len(sizes) * math.log(size + 1)) for size in sizes]
    weights = torch.tensor(weights, dtype=cdtype, device=labels.device)
    return Groups(anchor_index=classes, slots=slots, width=width, weights=weights, alpha=alpha)


def information_terms(
    features: torch.Tensor,
    labels: torch.Tensor | None,
    head_rows: torch.Tensor,
    *,
    cma: CrossModalAlignmentLoss | None = None,
    entropy_terms: bool = True,
    center: bool = False,
    dtype: torch.dtype | None = None,
    joint: bool = True,
    validate: bool = True,
) -> tuple[torch.Tensor | None, EntropyTerms | None]:
    """CMA and the sample entropy terms of one batch in one pass (what ``InfoNCTrainer`` uses).

    Returns ``(CMA value or None, EntropyTerms or None)`` in the spectrum dtype: the value of
    ``cma`` (its Rényi order; ``None`` to skip it) and, if ``entropy_terms``, those of
    :func:`sample_entropy_terms`. Both come from one ``autograd.Function`` with a closed-form
    backward: :func:`hf_infonc.info.fused.fused_information_terms` for the von Neumann case with the
    joint on its ``n x n`` Hadamard product (every step of ``InfoNCTrainer`` with the default
    settings), :func:`hf_infonc.info.spectral.information_entropies` otherwise (Rényi orders,
    centring, the Kronecker route); both give the same values and gradients.
    ``validate=False`` skips :func:`check_loss_inputs` (validate once per step).
    """
    host_labels = check_loss_inputs(features, labels, head_rows) if validate else None
    n, d = features.shape
    if fused_supported(
        n, d, head_rows.shape[0], labels is not None, cma_alpha=None if cma is None else cma.alpha,
        entropy_terms=entropy_terms, joint=joint, center=center,
    ):
        return fused_information_terms(
            features, head_rows, labels, cma=cma is not None, entropy_terms=entropy_terms, joint=joint, dtype=dtype,
            host_labels=host_labels,
        )
    groups = None if cma is None else cma_groups(labels, n, alpha=cma.alpha, dtype=dtype)
    terms = None
    if entropy_terms:
        rank_bound = None if labels is None else head_rows.shape[0]
        terms = Terms(b_index=labels, center=center, joint=joint, rank_bound_b=rank_bound)
    return information_entropies(features, head_rows, groups=groups, terms=terms, dtype=dtype)


class CrossModalAlignmentLoss(nn.Module):
    """Cross-modal alignment: mean over present classes of ``H(G(S_c)) / log |S_c|``.

    ``S_c`` stacks the L2-normalised features of the batch samples of class c with the class-c
    head row (for CLIP, the text embedding of the class prompt): ``n_c + 1`` rows. Minimising
    the within-group entropy pulls each class's features and its anchor toward one direction.
    The value lies in [0, 1]; ``|S_c| ≥ 2`` so the normaliser is never 0.
    Total loss in the paper: ``(1 - w)·CE + w·CMA`` (arXiv 2409.16767 §5).

    All groups are evaluated in one batched eigen-decomposition with a closed-form gradient
    (:func:`hf_infonc.info.spectral.information_entropies`): groups are padded with zero rows,
    which leave a trace-normalised spectrum unchanged. With ``labels=None`` (image–caption pairs)
    each sample's group is itself and its caption embedding (``head_rows`` has one row per sample).

    Args:
        alpha: Rényi order of the entropy (1.0 = von Neumann, as in the paper).
        dtype: spectrum dtype (float64 by default; float32 is faster on some GPUs).
    """

    def __init__(self, alpha: float = 1.0, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.alpha = check_alpha(alpha)
        self.dtype = spectrum_dtype(dtype)

    def forward(
        self, features: torch.Tensor, labels: torch.Tensor | None, head_rows: torch.Tensor, *, validate: bool = True
    ) -> torch.Tensor:
        """CMA of a batch (0-d, in ``features``' dtype); ``validate=False`` skips :func:`check_loss_inputs`."""
        return self.value(features, labels, head_rows, validate=validate).to(features.dtype)

    def value(
        self, features: torch.Tensor, labels: torch.Tensor | None, head_rows: torch.Tensor, *, validate: bool = True
    ) -> torch.Tensor:
        """CMA in the spectrum dtype (float64 by default)."""
        return information_terms(
            features, labels, head_rows, cma=self, entropy_terms=False, dtype=self.dtype, validate=validate
        )[0]  # type: ignore[return-value]

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


class MutualInformationLoss(nn.Module):
    """``-MI(G(features), G(head_rows[labels]))``, or ``-MIR`` with ``normalized=True``.

    arXiv 2406.03999 §6: ``L = L_base - λ·MI``. The normalised form is the SPEC's [choice];
    where MIR is 0/0 (an entropy is 0) it contributes 0 with a zero gradient.
    """

    def __init__(self, normalized: bool = False, center: bool = False, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.normalized = normalized
        self.center = center
        self.dtype = spectrum_dtype(dtype)

    def from_terms(self, terms: EntropyTerms) -> torch.Tensor:
        """The loss from precomputed entropy terms (lets the trainer share one computation)."""
        if self.normalized:
            return -safe_ratio(terms.mutual_information, torch.minimum(terms.h_a, terms.h_b), "zero", "MIR")
        return terms.h_joint - terms.h_a - terms.h_b  # -MI

    def forward(
        self, features: torch.Tensor, labels: torch.Tensor | None, head_rows: torch.Tensor, *, validate: bool = True
    ) -> torch.Tensor:
        terms = sample_entropy_terms(
            features, labels, head_rows, center=self.center, dtype=self.dtype, validate=validate
        )
        return self.from_terms(terms).to(features.dtype)

    def extra_repr(self) -> str:
        return f"normalized={self.normalized}, center={self.center}"


class EntropyGapLoss(nn.Module):
    """``|H(G(features)) - H(G(head_rows[labels]))|``, or HDR with ``normalized=True``.

    arXiv 2406.03999 §6: ``L = L_base + λ·|H₁ - H₂|``. The normalised form (HDR) is the SPEC's
    [choice]; where HDR is 0/0 (both entropies 0) it contributes 0 with a zero gradient.
    """

    def __init__(self, normalized: bool = False, center: bool = False, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.normalized = normalized
        self.center = center
        self.dtype = spectrum_dtype(dtype)

    def from_terms(self, terms: EntropyTerms) -> torch.Tensor:
        gap = (terms.h_a - terms.h_b).abs()
        if self.normalized:
            return safe_ratio(gap, torch.maximum(terms.h_a, terms.h_b), "zero", "HDR")
        return gap

    def forward(
        self, features: torch.Tensor, labels: torch.Tensor | None, head_rows: torch.Tensor, *, validate: bool = True
    ) -> torch.Tensor:
        terms = sample_entropy_terms(
            features, labels, head_rows, center=self.center, dtype=self.dtype, joint=False, validate=validate
        )
        return self.from_terms(terms).to(features.dtype)

    def extra_repr(self) -> str:
        return f"normalized={self.normalized}, center={self.center}"


def batch_ratios(terms: EntropyTerms) -> dict[str, torch.Tensor]:
    """Batch MIR and HDR from entropy terms, for logging: detached tensors, NaN where 0/0.

    No host synchronisation (no ``float()``), so logging costs nothing on an accelerator.
    """
    with torch.no_grad():
        h_a, h_b = terms.h_a, terms.h_b
        low, high = torch.minimum(h_a, h_b), torch.maximum(h_a, h_b)
        mir_value = (terms.mutual_information / low).masked_fill_(low <= ZERO_ENTROPY_TOL, math.nan)
        hdr_value = ((high - low) / high).masked_fill_(high <= ZERO_ENTROPY_TOL, math.nan)  # high - low = |h_a - h_b|
    return {"mir": mir_value, "hdr": hdr_value}


@dataclass(frozen=True)
class ComponentLayout:
    """Which values an information-loss step produced and which logged components they give.

    The values are ``[CMA?, H₁, H₂, H₁₂]``: CMA first when ``cma``, then the three entropies when
    ``terms``. ``mi`` / ``gap`` log ``loss/mi`` = ``H₁₂ − H₁ − H₂`` (−MI) / ``loss/entropy_gap`` =
    ``|H₁ − H₂|``; the terms also give the batch ``mir`` / ``hdr`` (:func:`batch_ratios`).
    """

    cma: bool
    terms: bool
    mi: bool
    gap: bool

    def derive(self, values: torch.Tensor) -> dict[str, torch.Tensor]:
        """The logged components from ``values`` (``(k,)``, or ``(steps, k)`` for many steps at once)."""
        out: dict[str, torch.Tensor] = {}
        if self.cma:
            out["loss/cma"] = values[..., 0]
        if self.terms:
            first = int(self.cma)
            h_a, h_b, h_joint = values[..., first], values[..., first + 1], values[..., first + 2]
            if self.mi:
                out["loss/mi"] = h_joint - h_a - h_b
            if self.gap:
                out["loss/entropy_gap"] = (h_a - h_b).abs()
            out.update(batch_ratios(EntropyTerms(h_a, h_b, h_joint)))
        return out


class InformationComponents(Mapping):
    """The logged components of one step of the fused information loss, derived only when read.

    ``InfoNCTrainer.record_components`` keeps ``raw`` (the values ``[CMA?, H₁, H₂, H₁₂]``) and
    derives the components of all the steps of a logging window at once
    (:meth:`ComponentLayout.derive`), so a training step spends no operation on them. Reading it
    as a mapping (``components["mir"]``) derives them.
    """

    def __init__(self, base: torch.Tensor | None, values: torch.Tensor, layout: ComponentLayout) -> None:
        self.base, self.raw, self.layout = base, values, layout
        self._derived: dict[str, torch.Tensor] | None = None

    def _all(self) -> dict[str, torch.Tensor]:
        if self._derived is None:
            self._derived = ({} if self.base is None else {"loss/base": self.base}) | self.layout.derive(self.raw)
        return self._derived

    def __getitem__(self, key: str) -> torch.Tensor:
        return self._all()[key]

    def __iter__(self):
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())

    def without_base(self) -> InformationComponents:
        return InformationComponents(None, self.raw, self.layout)


def clip_contrastive_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric InfoNCE over paired rows (Radford et al. 2021): mean of both directions.

    ``logits = scale · text_n · image_nᵀ``; pair i is the positive of row i. The operations follow
    ``transformers.CLIPModel(return_loss=True)`` step for step, so a single-process run matches it
    to round-off; called on the batch gathered from all processes, it equals the single-process loss.
    """
    image_n = image / image.pow(2).sum(dim=-1, keepdim=True).pow(0.5)
    text_n = text / text.pow(2).sum(dim=-1, keepdim=True).pow(0.5)
    logits_per_text = (text_n @ image_n.t()) * logit_scale
    target = torch.arange(logits_per_text.shape[0], device=logits_per_text.device)
    caption_loss = nn.functional.cross_entropy(logits_per_text, target)
    image_loss = nn.functional.cross_entropy(logits_per_text.t(), target)
    return (caption_loss + image_loss) / 2.0
