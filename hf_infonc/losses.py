"""Information losses between representations and classifier-head rows (docs/theory.md §4).

Each loss is an ``nn.Module`` called as ``loss(features, labels, head_rows)`` (``n x d``, ``n`` integer
labels, ``C x d``; or ``labels=None`` and one head row per sample: image–caption pairs) returning a 0-d
tensor, never NaN or inf. Inputs are validated (:func:`check_loss_inputs`) unless ``validate=False``;
entropies in float64 unless ``dtype=float32``, with closed-form gradients (:func:`information_terms`).
CMA: arXiv 2409.16767 §5; MI and entropy gap: arXiv 2406.03999 §6; :class:`InformationLoss`: their
weighted sum, what ``InfoNCTrainer`` adds to the base loss. Citation: :data:`hf_infonc.citation.CITATION`.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch
from torch import nn

from hf_infonc.info.entropy import check_alpha
from hf_infonc.info.fused import fused_information_loss, fused_information_terms, fused_supported
from hf_infonc.info.gram import check_label_tensor, check_not_meta, check_tensor, spectrum_dtype
from hf_infonc.info.mutual import EntropyTerms, mir_hdr
from hf_infonc.info.spectral import Terms, cma_groups, information_entropies


def _weight(value: float) -> bool:
    return math.isfinite(value) and value >= 0


#: The information-loss settings :func:`check_information_settings` validates, by their names in
#: ``InfoNCTrainingArguments`` (whose defaults they take): name -> (valid?, message).
_RULES: dict[str, tuple[Any, str]] = {
    "cma_weight": (
        lambda v: _weight(v) and v <= 1.0, "{name}={v} must lie in [0, 1]: it is w of (1-w)·base + w·CMA."
    ),
    "mi_weight": (_weight, "{name}={v} must be a finite number ≥ 0 (0 disables the loss)."),
    "entropy_gap_weight": (_weight, "{name}={v} must be a finite number ≥ 0 (0 disables the loss)."),
    "info_alpha": (_weight, "{name}={v} must be a finite Rényi order ≥ 0."),
    "info_dtype": (
        lambda v: v in ("float64", "float32"),
        "{name}={v!r} is not supported: use 'float64' (default) or 'float32' for the spectra of the information "
        "losses (eigen-solvers never run in half precision; metrics are always float64).",
    ),
}
INFORMATION_SETTINGS: tuple[str, ...] = tuple(_RULES)
#: :class:`InformationLoss`'s name of a setting -> its name in :data:`INFORMATION_SETTINGS`.
_ALIASES = {"gap_weight": "entropy_gap_weight"}


def check_information_settings(**settings: Any) -> None:
    """Validate the information-loss settings given (any of :data:`INFORMATION_SETTINGS`, or ``gap_weight``
    for ``entropy_gap_weight``): what :class:`InformationLoss` and ``InfoNCTrainingArguments`` check, also
    used by recipes without building the arguments."""
    for name, value in settings.items():
        rule = _RULES.get(_ALIASES.get(name, name))
        if rule is None:
            raise TypeError(f"check_information_settings got {name!r}; it validates {INFORMATION_SETTINGS}.")
        valid, message = rule
        if not valid(value):
            raise ValueError(message.format(name=name, v=value))


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
    check_label_tensor(labels, n)
    if n > 0:
        low, high = torch.stack(torch.aminmax(labels)).tolist()
        _check_label_range(low, high, num_classes)
    return labels


def check_loss_inputs(features: object, labels: object, head_rows: object) -> list[int] | None:
    """Validate the inputs of the information losses once (what ``validate=True`` runs).

    ``features``: finite floating ``n x d``, n ≥ 1; ``head_rows``: finite floating ``C x d``; ``labels``:
    integer classes of length n in ``[0, C)``, or ``None`` for pairs (``C = n``). Raises ``TypeError`` /
    ``ValueError``. One host sync; returns the labels as a list (the fused loss's ``host_labels``).
    """
    for name, x, shape in (("features", features, "n x d"), ("head_rows", head_rows, "C x d")):
        if not isinstance(x, torch.Tensor) or x.dim() != 2:
            raise ValueError(f"{name} must be a 2-D tensor ({shape}), got {getattr(x, 'shape', type(x))}.")
        check_not_meta(x, name)
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
        check_label_tensor(labels, features.shape[0])
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
    features: torch.Tensor, labels: torch.Tensor | None, head_rows: torch.Tensor, *, alpha: float = 1.0,
    center: bool = False, dtype: torch.dtype | None = None, joint: bool = True, validate: bool = True,
) -> EntropyTerms:
    """``H(K₁)``, ``H(K₂)``, ``H(K₁ ⊙ K₂)`` of ``G(features)`` and ``G(head_rows[labels])``, docs/theory.md §2.2.

    The values of :func:`hf_infonc.info.entropy_terms` (Rényi order ``alpha``) with closed-form gradients,
    in the spectrum dtype.
    """
    return information_terms(
        features, labels, head_rows, alpha=alpha, center=center, dtype=dtype, joint=joint, validate=validate
    )[1]  # type: ignore[return-value]


def information_terms(
    features: torch.Tensor, labels: torch.Tensor | None, head_rows: torch.Tensor, *,
    cma: CrossModalAlignmentLoss | None = None, entropy_terms: bool = True, alpha: float = 1.0, center: bool = False,
    dtype: torch.dtype | None = None, joint: bool = True, validate: bool = True,
) -> tuple[torch.Tensor | None, EntropyTerms | None]:
    """CMA and the sample entropy terms of one batch in one pass: the one entry point of the losses.

    Returns ``(CMA value or None, EntropyTerms or None)`` in the spectrum dtype: the value of ``cma``
    (``None``: skipped) and, if ``entropy_terms``, those of :func:`sample_entropy_terms` (Rényi order
    ``alpha``); by the fused path where :func:`~hf_infonc.info.fused.fused_supported`, else the general one
    (same values, gradients). Integer labels of any dtype are used as int64 class indices.
    """
    host_labels = check_loss_inputs(features, labels, head_rows) if validate else None
    if labels is not None and labels.dtype != torch.int64:  # uint8 would index as a mask
        labels = labels.long()
    n, d = features.shape
    if fused_supported(
        n, d, head_rows.shape[0], labels is not None, cma_alpha=None if cma is None else cma.alpha,
        entropy_terms=entropy_terms, joint=joint, center=center, terms_alpha=alpha,
    ):
        return fused_information_terms(
            features, head_rows, labels, cma=cma is not None, entropy_terms=entropy_terms, joint=joint, dtype=dtype,
            host_labels=host_labels,
        )
    groups = None if cma is None else cma_groups(labels, n, alpha=cma.alpha, dtype=dtype, host_labels=host_labels)
    rank_bound = None if labels is None else head_rows.shape[0]
    terms = Terms(b_index=labels, alpha=alpha, center=center, joint=joint, rank_bound_b=rank_bound) if entropy_terms \
        else None
    return information_entropies(features, head_rows, groups=groups, terms=terms, dtype=dtype)


class CrossModalAlignmentLoss(nn.Module):
    """Cross-modal alignment: mean over present classes of ``H(G(S_c)) / log |S_c|`` (arXiv 2409.16767 §5).

    ``S_c`` stacks the unit features of the batch samples of class c with the class-c head row (for
    CLIP, the class prompt's text embedding): minimising its entropy pulls them toward one direction.
    In [0, 1]; the paper's total loss is ``(1 - w)·CE + w·CMA``. With ``labels=None`` (image–caption
    pairs) each sample's group is itself and its caption embedding.

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
        cma, _ = information_terms(
            features, labels, head_rows, cma=self, entropy_terms=False, dtype=self.dtype, validate=validate
        )
        return cma.to(features.dtype)  # type: ignore[union-attr]

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


def mi_term(terms: EntropyTerms, normalized: bool = False) -> torch.Tensor:
    """``-MI = H₁₂ − H₁ − H₂``, or ``-MIR`` (0 with a zero gradient where MIR is 0/0)."""
    if normalized:
        return -mir_hdr(terms.h_a, terms.h_b, terms.mutual_information, "zero", hdr=False)[0]
    return terms.h_joint - terms.h_a - terms.h_b


def gap_term(terms: EntropyTerms, normalized: bool = False) -> torch.Tensor:
    """``|H₁ − H₂|``, or HDR (0 with a zero gradient where HDR is 0/0)."""
    if normalized:
        return mir_hdr(terms.h_a, terms.h_b, None, "zero")[1]
    return (terms.h_a - terms.h_b).abs()


class _TermsLoss(nn.Module):
    """A loss ``term(terms, normalized)`` of the entropy terms of ``G(features)``, ``G(head_rows[labels])``."""

    needs_joint = True

    def __init__(
        self, normalized: bool = False, center: bool = False, dtype: torch.dtype | None = None, alpha: float = 1.0
    ) -> None:
        super().__init__()
        self.normalized = normalized
        self.center = center
        self.dtype = spectrum_dtype(dtype)
        self.alpha = check_alpha(alpha)

    def from_terms(self, terms: EntropyTerms) -> torch.Tensor:
        """The loss from precomputed entropy terms (lets the trainer share one computation)."""
        return self.term(terms, self.normalized)

    def forward(
        self, features: torch.Tensor, labels: torch.Tensor | None, head_rows: torch.Tensor, *, validate: bool = True
    ) -> torch.Tensor:
        terms = sample_entropy_terms(
            features, labels, head_rows, alpha=self.alpha, center=self.center, dtype=self.dtype,
            joint=self.needs_joint, validate=validate,
        )
        return self.from_terms(terms).to(features.dtype)

    def extra_repr(self) -> str:
        return f"normalized={self.normalized}, center={self.center}, alpha={self.alpha}"


class MutualInformationLoss(_TermsLoss):
    """``-MI(G(features), G(head_rows[labels]))``, or ``-MIR`` with ``normalized=True``.

    arXiv 2406.03999 §6: ``L = L_base - λ·MI``. The normalised form is a [choice] of docs/theory.md;
    where MIR is 0/0 (an entropy is 0) it contributes 0 with a zero gradient. ``alpha``: the Rényi order of
    the entropies (1.0 = von Neumann, as in the paper).
    """

    term = staticmethod(mi_term)


class EntropyGapLoss(_TermsLoss):
    """``|H(G(features)) - H(G(head_rows[labels]))|``, or HDR with ``normalized=True``.

    arXiv 2406.03999 §6: ``L = L_base + λ·|H₁ - H₂|``. The normalised form (HDR) is a [choice] of
    docs/theory.md; where HDR is 0/0 (both entropies 0) it contributes 0 with a zero gradient. ``alpha``: the
    Rényi order of the entropies (1.0 = von Neumann, as in the paper).
    """

    needs_joint = False
    term = staticmethod(gap_term)


def batch_ratios(terms: EntropyTerms) -> dict[str, torch.Tensor]:
    """Batch MIR and HDR from entropy terms, for logging: detached, NaN where 0/0, no host sync."""
    with torch.no_grad():
        mir_value, hdr_value = mir_hdr(terms.h_a, terms.h_b, terms.mutual_information, "masked")
    return {"mir": mir_value, "hdr": hdr_value}


@dataclass(frozen=True)
class ComponentLayout:
    """Which values ``[CMA?, H₁, H₂, H₁₂]`` an information-loss step produced, and which logged
    components they give: ``loss/cma``, ``loss/mi`` (−MI), ``loss/entropy_gap``, the batch ``mir`` / ``hdr``.
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
            terms = EntropyTerms(values[..., first], values[..., first + 1], values[..., first + 2])
            if self.mi:
                out["loss/mi"] = mi_term(terms)
            if self.gap:
                out["loss/entropy_gap"] = gap_term(terms)
            out.update(batch_ratios(terms))
        return out


class InformationComponents(Mapping):
    """The logged components of one fused step, derived only when read (``InfoNCTrainer`` keeps
    ``raw`` and derives a whole logging window at once with :meth:`ComponentLayout.derive`).
    """

    def __init__(self, base: torch.Tensor | None, values: torch.Tensor, layout: ComponentLayout) -> None:
        self.base, self.raw, self.layout = base, values, layout

    @cached_property
    def _all(self) -> dict[str, torch.Tensor]:
        return ({} if self.base is None else {"loss/base": self.base}) | self.layout.derive(self.raw)

    def __getitem__(self, key: str) -> torch.Tensor:
        return self._all[key]

    def __iter__(self):
        return iter(self._all)

    def __len__(self) -> int:
        return len(self._all)

    def without_base(self) -> InformationComponents:
        return InformationComponents(None, self.raw, self.layout)


class InformationLoss(nn.Module):
    """``w_cma·CMA + w_mi·L_MI + w_gap·L_gap`` of one batch: what ``InfoNCTrainer`` adds to the base loss.

    ``L_MI``, ``L_gap``: ``-MI`` and ``|H₁ − H₂|`` (``-MIR`` and HDR with ``normalized=True``),
    docs/theory.md §4; by :func:`~hf_infonc.info.fused.fused_information_loss` where :meth:`fused_applies`,
    else by the three loss modules, with the same values and gradients.

    Args:
        cma_weight, mi_weight, gap_weight: the weights (a term with weight 0 is not computed): finite,
            ≥ 0, and ``cma_weight ≤ 1`` (:func:`check_information_settings`, as ``InfoNCTrainingArguments``).
        normalized: ``-MIR`` and HDR instead of ``-MI`` and ``|H₁ − H₂|``.
        center: subtract the mean row before normalising (MI and gap terms).
        alpha: Rényi order of every entropy: CMA's, and those of the MI and gap terms (1.0 = von Neumann).
        dtype: spectrum dtype (float64 by default, or float32).
    """

    def __init__(
        self, cma_weight: float = 0.0, mi_weight: float = 0.0, gap_weight: float = 0.0, *, normalized: bool = False,
        center: bool = False, alpha: float = 1.0, dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.cma_weight, self.mi_weight, self.gap_weight = float(cma_weight), float(mi_weight), float(gap_weight)
        check_information_settings(cma_weight=self.cma_weight, mi_weight=self.mi_weight, gap_weight=self.gap_weight)
        self.cma = CrossModalAlignmentLoss(alpha=alpha, dtype=dtype)
        self.mi = MutualInformationLoss(normalized=normalized, center=center, dtype=dtype, alpha=alpha)
        self.gap = EntropyGapLoss(normalized=normalized, center=center, dtype=dtype, alpha=alpha)

    def fused_applies(self, features: torch.Tensor, labels: torch.Tensor | None, head_rows: torch.Tensor,
                      terms: bool) -> bool:
        """Whether the fused pass computes this batch: a weight on, neither ``normalized`` nor
        ``center``, and :func:`~hf_infonc.info.fused.fused_supported`; ``terms``: H₁, H₂, H₁₂ wanted.
        """
        weight_on = self.cma_weight > 0 or self.mi_weight > 0 or self.gap_weight > 0
        if not weight_on or self.mi.normalized or self.mi.center:
            return False
        return fused_supported(
            features.shape[0], features.shape[1], head_rows.shape[0], labels is not None,
            cma_alpha=self.cma.alpha if self.cma_weight > 0 else None, entropy_terms=terms, joint=True, center=False,
            terms_alpha=self.mi.alpha,
        )

    def forward(
        self, features: torch.Tensor, labels: torch.Tensor | None, head_rows: torch.Tensor, *, log_ratios: bool,
        validate: bool = False, host_labels: list[int] | None = None, base: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor | None, Mapping[str, torch.Tensor]]:
        """The weighted loss (``None`` when no term is on), in the spectrum dtype, and the logged components.

        Components: ``loss/cma``, ``loss/mi``, ``loss/entropy_gap`` for the terms that are on, the batch
        ``mir`` / ``hdr`` when the MI or gap term is on or ``log_ratios``, ``loss/base`` when ``base`` (the
        detached base loss) is given; an :class:`InformationComponents` on the fused path. ``validate=True``
        runs :func:`check_loss_inputs`, else pass the ``host_labels`` it returned.
        """
        if validate:
            host_labels = check_loss_inputs(features, labels, head_rows)
        wants_terms = self.mi_weight > 0 or self.gap_weight > 0
        any_terms = wants_terms or log_ratios
        cma_loss = self.cma if self.cma_weight > 0 else None
        components: dict[str, torch.Tensor] = {} if base is None else {"loss/base": base}
        if cma_loss is None and not any_terms:
            return None, components
        dtype, center, alpha = self.mi.dtype, self.mi.center, self.mi.alpha
        if self.fused_applies(features, labels, head_rows, any_terms):
            info, values = fused_information_loss(
                features, head_rows, labels, cma_weight=self.cma_weight if cma_loss is not None else 0.0,
                mi_weight=self.mi_weight, gap_weight=self.gap_weight, entropy_terms=any_terms, dtype=dtype,
                host_labels=host_labels,
            )
            layout = ComponentLayout(cma=cma_loss is not None, terms=any_terms, mi=self.mi_weight > 0,
                                     gap=self.gap_weight > 0)
            return info, InformationComponents(base, values, layout)
        if cma_loss is not None and not wants_terms:  # CMA with gradients; the logged MIR/HDR, when due, without
            cma, _ = information_terms(
                features, labels, head_rows, cma=cma_loss, entropy_terms=False, dtype=dtype, validate=False
            )
            terms = None
            if log_ratios:
                with torch.no_grad():
                    terms = sample_entropy_terms(features, labels, head_rows, alpha=alpha, center=center, dtype=dtype,
                                                 validate=False)
        else:  # one pass for CMA (if on) and H₁, H₂, H₁₂ (with gradients only for MI / gap)
            with torch.set_grad_enabled(torch.is_grad_enabled() and wants_terms):
                cma, terms = information_terms(
                    features, labels, head_rows, cma=cma_loss, entropy_terms=True, alpha=alpha, center=center,
                    dtype=dtype, validate=False,
                )
        info: torch.Tensor | None = None  # Σ weight·term, in the spectrum dtype
        if cma is not None:
            info = cma * self.cma_weight
            components["loss/cma"] = cma.detach()
        if terms is not None:
            weighted = ((self.mi_weight, self.mi, "loss/mi"), (self.gap_weight, self.gap, "loss/entropy_gap"))
            for weight, loss, key in weighted:
                if weight > 0:
                    value = loss.from_terms(terms)
                    info = value * weight if info is None else info.add(value, alpha=weight)
                    components[key] = value.detach()
            components.update(batch_ratios(terms))
        return info, components

    def extra_repr(self) -> str:
        return f"cma_weight={self.cma_weight}, mi_weight={self.mi_weight}, gap_weight={self.gap_weight}"


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
