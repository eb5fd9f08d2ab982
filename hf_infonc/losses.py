"""Information losses between representations and classifier-head rows.

Each loss is an ``nn.Module`` with its hyper-parameters in the constructor, called as
``loss(features, labels, head_rows)`` with ``features`` ``n x d``, integer ``labels`` of length
``n`` and ``head_rows`` ``C x d``; it returns a 0-d tensor. Weights are applied by the trainer.
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

import torch
from torch import nn

from hf_infonc.info.entropy import check_alpha, psd_entropy
from hf_infonc.info.gram import compute_dtype, normalize_rows, pick_route, psd_from_rows
from hf_infonc.info.mutual import EntropyTerms, entropy_terms, safe_ratio


def check_labels(labels: object, n: int, num_classes: int) -> torch.Tensor:
    """Validate integer class labels of length ``n`` in ``[0, num_classes)``."""
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels must be a torch.Tensor of class indices, got {type(labels).__name__}.")
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise TypeError(f"labels must be integer class indices, got dtype {labels.dtype}. Use labels.long().")
    if labels.dim() != 1 or labels.shape[0] != n:
        raise ValueError(
            f"labels has shape {tuple(labels.shape)}, expected ({n},): one class index per feature row."
        )
    if n > 0:
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= num_classes:
            raise ValueError(
                f"labels range over [{low}, {high}] but there are {num_classes} head rows (classes 0..{num_classes - 1}). "
                f"Check the label mapping of the data against the model's classes (ignored labels such as -100 "
                f"must be removed before the information losses)."
            )
    return labels


def _check_inputs(features: torch.Tensor, labels: torch.Tensor, head_rows: torch.Tensor) -> None:
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
    check_labels(labels, features.shape[0], head_rows.shape[0])


def sample_entropy_terms(
    features: torch.Tensor,
    labels: torch.Tensor,
    head_rows: torch.Tensor,
    *,
    center: bool = False,
    dtype: torch.dtype | None = None,
) -> EntropyTerms:
    """``H(K₁)``, ``H(K₂)``, ``H(K₁ ⊙ K₂)`` for ``K₁ = G(features)``, ``K₂ = G(head_rows[labels])`` (SPEC §2.2)."""
    _check_inputs(features, labels, head_rows)
    return entropy_terms(features, head_rows[labels], center=center, dtype=dtype)


class CrossModalAlignmentLoss(nn.Module):
    """Cross-modal alignment: mean over present classes of ``H(G(S_c)) / log |S_c|``.

    ``S_c`` stacks the L2-normalised features of the batch samples of class c with the class-c
    head row (for CLIP, the text embedding of the class prompt): ``n_c + 1`` rows. Minimising
    the within-group entropy pulls each class's features and its anchor toward one direction.
    The value lies in [0, 1]; ``|S_c| ≥ 2`` so the normaliser is never 0.
    Total loss in the paper: ``(1 - w)·CE + w·CMA`` (arXiv 2409.16767 §5).

    All groups are evaluated in one batched eigen-decomposition: groups are padded with zero
    rows, which leave a trace-normalised spectrum unchanged.

    Args:
        alpha: Rényi order of the entropy (1.0 = von Neumann, as in the paper).
        dtype: spectrum dtype (float64 by default; float32 is faster on some GPUs).
    """

    def __init__(self, alpha: float = 1.0, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.alpha = alpha
        self.dtype = dtype

    def forward(self, features: torch.Tensor, labels: torch.Tensor, head_rows: torch.Tensor) -> torch.Tensor:
        _check_inputs(features, labels, head_rows)
        classes, group, counts = torch.unique(labels, return_inverse=True, return_counts=True)
        num_groups, width = classes.shape[0], int(counts.max()) + 1
        order = torch.argsort(group, stable=True)
        starts = torch.cumsum(counts, dim=0) - counts
        position = torch.empty_like(group)
        position[order] = torch.arange(group.shape[0], device=group.device) - starts[group[order]] + 1
        common = torch.promote_types(torch.promote_types(features.dtype, head_rows.dtype), torch.float32)
        features_n = normalize_rows(features.to(common))
        anchors_n = normalize_rows(head_rows[classes].to(common))
        groups = features_n.new_zeros((num_groups, width, features.shape[-1]))
        groups = groups.index_put((group, position), features_n)
        groups = groups.index_put((torch.arange(num_groups, device=group.device), torch.zeros_like(classes)), anchors_n)
        # The groups are unit rows (and zero padding) built from validated inputs: read their
        # spectra directly instead of re-checking and re-normalising them in matrix_entropy.
        spectrum_dtype = compute_dtype(groups, self.dtype)
        with torch.autocast(device_type=groups.device.type, enabled=False):
            rows = groups.to(spectrum_dtype)
            route = pick_route(rows.shape[-2], rows.shape[-1], "auto")
            entropy = psd_entropy(psd_from_rows(rows, route), check_alpha(self.alpha))
        return (entropy / torch.log((counts + 1).to(entropy.dtype))).mean().to(features.dtype)

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
        self.dtype = dtype

    def from_terms(self, terms: EntropyTerms) -> torch.Tensor:
        """The loss from precomputed entropy terms (lets the trainer share one computation)."""
        mi = terms.mutual_information
        if self.normalized:
            return -safe_ratio(mi, torch.minimum(terms.h_a, terms.h_b), "zero", "MIR")
        return -mi

    def forward(self, features: torch.Tensor, labels: torch.Tensor, head_rows: torch.Tensor) -> torch.Tensor:
        terms = sample_entropy_terms(features, labels, head_rows, center=self.center, dtype=self.dtype)
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
        self.dtype = dtype

    def from_terms(self, terms: EntropyTerms) -> torch.Tensor:
        gap = (terms.h_a - terms.h_b).abs()
        if self.normalized:
            return safe_ratio(gap, torch.maximum(terms.h_a, terms.h_b), "zero", "HDR")
        return gap

    def forward(self, features: torch.Tensor, labels: torch.Tensor, head_rows: torch.Tensor) -> torch.Tensor:
        terms = sample_entropy_terms(features, labels, head_rows, center=self.center, dtype=self.dtype)
        return self.from_terms(terms).to(features.dtype)

    def extra_repr(self) -> str:
        return f"normalized={self.normalized}, center={self.center}"


def batch_ratios(terms: EntropyTerms) -> dict[str, torch.Tensor]:
    """Batch MIR and HDR from entropy terms, for logging: detached tensors, NaN where 0/0.

    No host synchronisation (no ``float()``), so logging costs nothing on an accelerator.
    """
    with torch.no_grad():
        mi = terms.mutual_information
        low, high = torch.minimum(terms.h_a, terms.h_b), torch.maximum(terms.h_a, terms.h_b)
        nan = torch.full_like(mi, math.nan)
        mir_value = torch.where(low > 1e-9, mi / low.clamp_min(1e-9), nan)
        hdr_value = torch.where(high > 1e-9, (terms.h_a - terms.h_b).abs() / high.clamp_min(1e-9), nan)
    return {"mir": mir_value, "hdr": hdr_value}


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
