"""Dataset-level neural-collapse and matrix-information measures in one streaming pass.

:class:`NeuralCollapseAccumulator` sees the features of a data set batch by batch (any batch
sizes, any number of :meth:`~NeuralCollapseAccumulator.update` calls, any number of processes)
and keeps only float64 **sums**, so merging and ``all_reduce`` lose nothing (they agree with a
single pass up to the round-off of the summation order) and the memory is ``O(d² + C·d)``
whatever the number of samples:

* per-class counts ``n_c`` ``(C,)`` and sums ``s_c = Σ_{i∈c} h_i`` ``(C, d)``;
* the total second moment ``S = Σ_i h_i h_iᵀ`` ``(d, d)``, from which the within-class covariance
  follows without a second pass: ``Σ_W = (S − Σ_c s_c s_cᵀ / n_c) / N``;
* with a head ``W`` (``C x d``) given at construction: running sums of the paper's sample-level
  MIR/HDR (SPEC §2 item 2), computed on the fly over consecutive batches of
  ``sample_batch_size`` samples, so only one partial batch (< ``sample_batch_size`` rows) is held;
* with classifier predictions (``logits`` in ``update``, or the head): correct-prediction counts,
  and NC4 disagreement counts against *given* class centres (see "NC4" below).

:meth:`~NeuralCollapseAccumulator.compute` then returns (formulas in
:mod:`hf_infonc.info.neural_collapse`, after Papyan, Han & Donoho 2020; SPEC §5):

==============================  =========================================================
key                             meaning
==============================  =========================================================
``nc1``                         ``tr(Σ_W Σ_B⁺)/C``, pseudo-inverse at rank ``C−1``
``nc2``                         ``‖MMᵀ/‖MMᵀ‖_F − E/‖E‖_F‖_F``, ``E = I − 11ᵀ/C``
``nc2_equinorm``                std/mean of the centred class-mean norms
``nc2_equiangular``             mean ``|cos + 1/(C−1)|`` over pairs of centred class means
``within_class_variance``       ``tr Σ_W``
``nc3``                         ``‖W/‖W‖_F − M/‖M‖_F‖_F`` (head needed)
``head_entropy``                ``H(G(W))``, SPEC §2 item 1 (head needed)
``class_mean_entropy``          ``H(G(M))``
``class_mi``/``class_mir``/     MI, MIR, HDR of ``G(W)`` against ``G(M)`` (NaN + warning when
``class_hdr``                   an entropy is 0, e.g. always for MIR with C = 2)
``sample_mir``/``sample_hdr``   batch-averaged ``MIR/HDR(G(features), G(W[labels]))``,
                                SPEC §2 item 2 (head given at construction)
``sample_mi``,                  batch averages of ``MI``, ``H(K₁)``, ``H(K₂)``
``sample_feature_entropy``,
``sample_head_entropy``
``sample_num_batches``,         number of sample batches, and how many had an undefined
``sample_mir_undefined_batches``  (0/0) ratio
``sample_hdr_undefined_batches``
``classifier_accuracy``         accuracy of ``argmax`` of the logits (or of ``W h + b``)
``nc4``, ``ncc_accuracy``       NC4 and the nearest-centre accuracy (``centers=`` given, or
                                the second pass of :meth:`nearest_center_pass`; see "NC4")
``num_samples``, ``num_classes``, ``num_present_classes``, ``num_absent_classes``
==============================  =========================================================

Choices (documented, SPEC's **[choice]** convention):

* **NC4.** The nearest-class-centre rule needs the class means of the whole set before any sample
  is scored, so one pass cannot give the exact NC4. Two honest ways are offered:

  1. *exact, two passes*: after the first pass (and ``all_reduce``),
     :meth:`NeuralCollapseAccumulator.nearest_center_pass` returns a small
     :class:`NearestCenterAgreement` seeded with the final class means; a second pass over the
     same data feeds it ``(features, labels, logits)``. Every other measure comes from the first
     pass's sums; the second pass only does a ``(batch x C)`` distance per batch. This is
     Papyan et al.'s NC4 exactly, and what :func:`neural_collapse_measures` does.
  2. *one pass against given centres*: ``NeuralCollapseAccumulator(..., centers=prev)`` counts
     disagreements on the fly against fixed centres, e.g. the class means of the previous
     evaluation (``prev_acc.class_means()``). This is NC4 *with respect to those centres*; it
     equals the exact NC4 only when the centres are this set's class means.

  Running (partial) means are never used: the result would depend on the order of the data.
* **Absent classes.** Classes with no samples are left out: every NC measure, the class means
  ``M`` and the head rows ``W`` use the ``P`` present classes only (``C`` in the formulas is then
  ``P``), and the result reports ``num_absent_classes`` (a warning is issued). Fewer than 2
  present classes is a ``ValueError``. ``class_means()`` has NaN rows for absent classes and the
  nearest-centre rule never picks them.
* **C = 2.** Two centred class means are always anti-parallel, so ``H(G(M)) = 0``:
  ``class_mir`` is NaN (with a warning) and ``class_hdr`` is 1 (NaN if the two head rows are
  parallel or anti-parallel as well, e.g. at collapse). At sample level a batch's head Gram
  ``G(W[y])`` has entropy 0 when the two head rows are (anti-)parallel — always at collapse —
  or when the batch holds one class only; such batches follow ``zero_entropy``. NC1 to NC4 are
  well defined for C = 2.
* **zero_entropy (sample level).** A batch whose MIR (or HDR) is 0/0 — e.g. all its labels equal,
  or a final partial batch of one sample — is, with ``"skip"`` (default) left out of that ratio's
  average (counted in ``sample_*_undefined_batches``; NaN with a warning if no batch is defined);
  with ``"nan"`` it makes the average NaN (warning); with ``"zero"`` it counts as 0. The running
  state does not depend on the mode, so ``compute(zero_entropy=...)`` can change it afterwards.
* **Partial sample batch.** The samples left over at the end (fewer than ``sample_batch_size``)
  form a last, smaller batch (``drop_last=False``, like a test ``DataLoader``) or are dropped
  (``drop_last=True``). :meth:`merge` and :meth:`all_reduce` close each side's pending partial
  batch first, as a ``DistributedSampler`` shard would, so a merged result equals a single pass
  exactly for all class-level measures, and for the sample-level ones when every part but the
  last holds a multiple of ``sample_batch_size`` samples.
* **Global mean**: ``global_mean="class"`` (mean of the class means, default) or ``"sample"``;
  see :mod:`hf_infonc.info.neural_collapse`.

Numerics: the sums hold the features divided by a power of two chosen from the data (exact; 1 for
features of ordinary size, see :func:`~hf_infonc.info.neural_collapse.storage_exponent`), so
``Σ x xᵀ`` neither overflows nor underflows, and every measure except ``within_class_variance``
(scaled back: ``inf`` when it exceeds float64) is the same for features ``x`` and ``c·x``, from
1e-300 to 1e300. Entropies, MI, MIR and HDR are clamped to their ranges against round-off
(:mod:`hf_infonc.info.ranges`).

The caller's tensors are never modified: they are copied to float64 on ``device`` in chunks of at
most :data:`UPDATE_CHUNK` rows. This module is pure torch (no transformers/datasets/evaluate).
"""

from __future__ import annotations

import math
import warnings
from typing import Literal

import torch

from hf_infonc.info import neural_collapse as nc
from hf_infonc.info.mutual import ZERO_ENTROPY_TOL, entropy_terms, mutual_information_in_range, safe_ratio
from hf_infonc.info.ranges import clamp_float, roundoff_slack

SampleZeroEntropy = Literal["skip", "nan", "zero"]
SAMPLE_ZERO_ENTROPY: tuple[str, ...] = ("skip", "nan", "zero")

#: ``update`` processes at most this many rows at a time (bounds the float64 temporaries).
UPDATE_CHUNK = 8192

#: The sample-level entropies are computed for at most this many rows (whole batches) per call,
#: which bounds the batched Gram / normalisation temporaries.
SAMPLE_GROUP_ROWS = 2048

# Layout of the sample-level running sums.
_S_BATCHES, _S_MIR, _S_MIR_DEF, _S_HDR, _S_HDR_DEF, _S_HA, _S_HB, _S_MI = range(8)
_N_SAMPLE_STATS = 8


# --------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------


def _check_count(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}.")
    if value < minimum:
        raise ValueError(f"{name}={value} must be ≥ {minimum}.")
    return value


def _check_matrix(x: object, name: str, shape: tuple[int | None, ...]) -> torch.Tensor:
    """A finite floating tensor with the given shape (``None`` = any size)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(x).__name__}; use torch.as_tensor({name}).")
    if not x.is_floating_point():
        raise TypeError(f"`{name}` has dtype {x.dtype}; a floating-point tensor is expected.")
    if x.dim() != len(shape) or any(s is not None and s != t for s, t in zip(shape, x.shape)):
        want = "(" + ", ".join("n" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"`{name}` has shape {tuple(x.shape)}, expected {want}.")
    if x.numel() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"`{name}` contains NaN or inf values; the measures need finite inputs.")
    return x


def _check_matrix_allow_nan(x: object, name: str, shape: tuple[int, ...]) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or tuple(x.shape) != shape:
        raise ValueError(f"`{name}` must be a floating tensor of shape {shape}.")
    return x


def _check_labels(labels: object, n: int, num_classes: int) -> torch.Tensor:
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"`labels` must be a torch.Tensor of class indices, got {type(labels).__name__}.")
    if labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex():
        raise TypeError(f"`labels` has dtype {labels.dtype}; an integer tensor of class indices 0..C-1 is expected.")
    if labels.dim() != 1 or labels.shape[0] != n:
        raise ValueError(f"`labels` has shape {tuple(labels.shape)}, expected ({n},): one class index per feature row.")
    if n:
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(
                f"labels must be class indices in 0..{num_classes - 1} (num_classes={num_classes}), but values "
                f"in [{lo}, {hi}] were found. Remap the labels, drop ignored samples (e.g. -100) before update(), "
                f"or raise num_classes."
            )
    return labels


def _comm_device(group: object) -> torch.device:
    import torch.distributed as dist

    backend = str(dist.get_backend(group))
    if "nccl" in backend.lower():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _distributed_ready() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def _all_reduce_sum(vector: torch.Tensor, group: object) -> torch.Tensor:
    import torch.distributed as dist

    buf = vector.to(_comm_device(group))
    dist.all_reduce(buf, op=dist.ReduceOp.SUM, group=group)
    return buf.to(vector.device)


def _all_reduce_max(vector: torch.Tensor, group: object) -> torch.Tensor:
    import torch.distributed as dist

    buf = vector.to(_comm_device(group))
    dist.all_reduce(buf, op=dist.ReduceOp.MAX, group=group)
    return buf.to(vector.device)


def _ldexp_float(value: float, exponent: int) -> float:
    """``value · 2^exponent`` as a float: ``inf`` when the result exceeds float64 (e.g. the
    within-class variance of features at 1e300), 0 when it underflows."""
    try:
        return math.ldexp(value, exponent)
    except OverflowError:
        return math.inf


def _check_same_everywhere(signature: torch.Tensor, what: str, group: object) -> None:
    """Raise on every rank (no hang) when ranks disagree on a configuration signature."""
    import torch.distributed as dist

    dev = _comm_device(group)
    hi, lo = signature.to(dev).clone(), signature.to(dev).clone()
    dist.all_reduce(hi, op=dist.ReduceOp.MAX, group=group)
    dist.all_reduce(lo, op=dist.ReduceOp.MIN, group=group)
    if not torch.equal(hi, lo):
        raise ValueError(
            f"all_reduce: the processes disagree on the {what} (num_classes, dim, sample batch size, head, "
            f"centres, ...). Build the accumulator with the same arguments on every rank."
        )


def _tensor_signature(x: torch.Tensor | None) -> list[float]:
    if x is None:
        return [0.0, 0.0, 0.0]
    y = torch.nan_to_num(x.to(torch.float64), nan=0.0)
    return [1.0, float(y.sum()), float(y.abs().sum())]


def _same_optional(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and bool(torch.equal(torch.nan_to_num(a, nan=0.0), torch.nan_to_num(b.to(a.device), nan=0.0)))


# --------------------------------------------------------------------------------------------
# sample-level MIR / HDR over consecutive batches (SPEC §2 item 2)
# --------------------------------------------------------------------------------------------


def pair_batch_stats(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Summed statistics of ``k`` sample batches: ``a`` ``(k, n, d₁)``, ``b`` ``(k, n, d₂)`` (rows
    paired by sample). Per batch, ``K₁ = G(a)``, ``K₂ = G(b)``, and the vector holds
    ``[k, Σ MIR, #MIR defined, Σ HDR, #HDR defined, Σ H(K₁), Σ H(K₂), Σ MI]`` (float64), the
    undefined (0/0) ratios contributing 0 to the sums.
    """
    terms = entropy_terms(a, b, dtype=torch.float64)  # entropies clamped to [0, log k] against round-off
    h_a, h_b = terms.h_a, terms.h_b
    mi = mutual_information_in_range(terms, a.shape[-2], torch.float64)  # so MIR, HDR lie in [0, 1]
    lo, hi = torch.minimum(h_a, h_b), torch.maximum(h_a, h_b)
    mir_def, hdr_def = lo > ZERO_ENTROPY_TOL, hi > ZERO_ENTROPY_TOL
    mir_val = torch.where(mir_def, mi / torch.where(mir_def, lo, torch.ones_like(lo)), torch.zeros_like(lo))
    hdr_val = torch.where(hdr_def, (h_a - h_b).abs() / torch.where(hdr_def, hi, torch.ones_like(hi)), torch.zeros_like(hi))
    out = torch.zeros(_N_SAMPLE_STATS, dtype=torch.float64, device=a.device)
    out[_S_BATCHES] = a.shape[0]
    out[_S_MIR] = mir_val.sum()
    out[_S_MIR_DEF] = mir_def.sum()
    out[_S_HDR] = hdr_val.sum()
    out[_S_HDR_DEF] = hdr_def.sum()
    out[_S_HA] = h_a.sum()
    out[_S_HB] = h_b.sum()
    out[_S_MI] = mi.sum()
    return out


def summarize_batch_stats(stats: torch.Tensor, zero_entropy: str = "skip") -> dict[str, float]:
    """Batch averages from :func:`pair_batch_stats` sums: keys ``mir``, ``hdr``, ``mi``,
    ``feature_entropy`` (``H(K₁)``), ``head_entropy`` (``H(K₂)``), ``num_batches``,
    ``mir_undefined_batches``, ``hdr_undefined_batches``. ``zero_entropy`` as in the module doc.
    """
    if zero_entropy not in SAMPLE_ZERO_ENTROPY:
        raise ValueError(f"zero_entropy={zero_entropy!r} must be one of {SAMPLE_ZERO_ENTROPY}.")
    s = stats.tolist()
    batches = s[_S_BATCHES]
    out: dict[str, float] = {
        "num_batches": int(batches),
        "mir_undefined_batches": int(batches - s[_S_MIR_DEF]),
        "hdr_undefined_batches": int(batches - s[_S_HDR_DEF]),
    }
    if batches == 0:
        return out
    out["feature_entropy"] = s[_S_HA] / batches
    out["head_entropy"] = s[_S_HB] / batches
    # each batch's MI is at most its smaller entropy, so the average is too, up to the summation's round-off
    upper = min(out["feature_entropy"], out["head_entropy"])
    out["mi"] = clamp_float(s[_S_MI] / batches, 0.0, upper, roundoff_slack(torch.float64, int(batches)))
    for key, total, defined in (("mir", s[_S_MIR], s[_S_MIR_DEF]), ("hdr", s[_S_HDR], s[_S_HDR_DEF])):
        undefined = batches - defined
        if zero_entropy == "zero":
            out[key] = total / batches
        elif undefined and (zero_entropy == "nan" or defined == 0):
            warnings.warn(
                f"{key.upper()}: {int(undefined)} of {int(batches)} sample batches have a 0/0 ratio (a matrix entropy "
                f"is 0: all rows parallel, a single row, or C = 2 at collapse); returning NaN "
                f"(zero_entropy={zero_entropy!r}).",
                RuntimeWarning,
                stacklevel=3,
            )
            out[key] = math.nan
        else:
            out[key] = total / defined
    return out


def batched_mir_hdr(
    features: torch.Tensor,
    head_rows: torch.Tensor,
    *,
    batch_size: int = 64,
    zero_entropy: SampleZeroEntropy = "skip",
    drop_last: bool = False,
) -> dict[str, float]:
    """The paper's sample-level MIR/HDR (SPEC §2 item 2), averaged over consecutive batches.

    For each batch of ``batch_size`` consecutive rows (the last one smaller unless ``drop_last``):
    ``K₁ = G(features[batch])``, ``K₂ = G(head_rows[batch])``; ``head_rows`` is usually
    ``W[labels]`` (each sample's head row), or the features of the same inputs from a second
    model (SPEC §2 item 3). Returns the keys of :func:`summarize_batch_stats`; undefined (0/0)
    batches follow ``zero_entropy`` ("skip" default, "nan", "zero"). The temporaries are those of
    one group of whole batches (about :data:`SAMPLE_GROUP_ROWS` rows) at a time.
    """
    _check_matrix(features, "features", (None, None))
    n = int(features.shape[0])
    _check_matrix(head_rows, "head_rows", (n, None))
    batch_size = _check_count(batch_size, "batch_size", 1)
    if zero_entropy not in SAMPLE_ZERO_ENTROPY:
        raise ValueError(f"zero_entropy={zero_entropy!r} must be one of {SAMPLE_ZERO_ENTROPY}.")
    stats = torch.zeros(_N_SAMPLE_STATS, dtype=torch.float64, device=features.device)
    group = max(1, SAMPLE_GROUP_ROWS // batch_size) * batch_size
    for start in range(0, n, group):
        a = features[start : start + group].detach().to(torch.float64)
        b = head_rows[start : start + group].detach().to(torch.float64)
        full = (a.shape[0] // batch_size) * batch_size
        if full:
            stats += pair_batch_stats(
                a[:full].reshape(-1, batch_size, a.shape[1]), b[:full].reshape(-1, batch_size, b.shape[1])
            )
        if full < a.shape[0] and not drop_last:
            stats += pair_batch_stats(a[full:].unsqueeze(0), b[full:].unsqueeze(0))
    return summarize_batch_stats(stats, zero_entropy)


# --------------------------------------------------------------------------------------------
# NC4: nearest-centre agreement against fixed centres
# --------------------------------------------------------------------------------------------


class NearestCenterAgreement:
    """NC4 counts: how often the classifier disagrees with the nearest-class-centre rule.

    ``NC4 = (1/N) #{i : argmax_c logits_ic ≠ argmin_c ‖h_i − μ_c‖}`` for *fixed* centres ``μ``
    (Papyan, Han & Donoho 2020). The classifier's prediction is ``argmax(logits)`` when ``logits``
    are given to :meth:`update`, else ``argmax(h Wᵀ + b)`` from ``head``/``bias``.

    For the exact NC4 the centres must be the class means of the same data: build this with
    :meth:`NeuralCollapseAccumulator.nearest_center_pass` after a first pass, then feed it the
    data again. Rows of ``centers`` that are NaN (absent classes) are never chosen.

    Args:
        centers: ``(C, d)`` class centres (float, NaN rows allowed).
        head: optional ``(C, d)`` classifier rows; bias: optional ``(C,)``.
        device: where the counts live and the distances are computed.
    """

    def __init__(
        self,
        centers: torch.Tensor,
        *,
        head: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        if not isinstance(centers, torch.Tensor) or centers.dim() != 2:
            raise ValueError("`centers` must be a (C, d) tensor of class centres.")
        if not centers.is_floating_point():
            raise TypeError(f"`centers` has dtype {centers.dtype}; a floating-point tensor is expected.")
        self.device = torch.device(device)
        self.num_classes, self.dim = int(centers.shape[0]), int(centers.shape[1])
        if not bool(torch.isfinite(centers).all(dim=1).any()):
            raise ValueError("`centers` has no finite row: at least one class centre is needed.")
        self.centers = centers.detach().to(self.device, torch.float64).clone()
        self.head = None if head is None else _check_matrix(head, "head", (self.num_classes, self.dim)).detach().to(self.device, torch.float64).clone()
        self.bias = None if bias is None else _check_matrix(bias, "bias", (self.num_classes,)).detach().to(self.device, torch.float64).clone()
        if self.bias is not None and self.head is None:
            raise ValueError("`bias` was given without `head`; pass both, or pass logits to update().")
        self.reset()

    def reset(self) -> None:
        """Zero the counts: ``[samples scored, disagreements, samples with labels, NCC correct]``."""
        self.stats = torch.zeros(4, dtype=torch.float64, device=self.device)
        self._synced = False

    def update(
        self,
        features: torch.Tensor,
        labels: torch.Tensor | None = None,
        logits: torch.Tensor | None = None,
    ) -> None:
        """Score one batch: ``features`` ``(n, d)``; optional ``labels`` ``(n,)`` (for ``ncc_accuracy``)
        and ``logits`` ``(n, C)`` (else the head gives the predictions)."""
        if self._synced:
            raise RuntimeError("update() after all_reduce(): the counts are already global; call reset() first.")
        _check_matrix(features, "features", (None, self.dim))
        n = features.shape[0]
        if labels is not None:
            _check_labels(labels, n, self.num_classes)
        if logits is not None:
            _check_matrix(logits, "logits", (n, self.num_classes))
        elif self.head is None:
            raise ValueError("NC4 needs the classifier's predictions: pass logits to update(), or give `head` at construction.")
        for start in range(0, n, UPDATE_CHUNK):
            stop = min(n, start + UPDATE_CHUNK)
            f = features[start:stop].detach().to(self.device, torch.float64)
            ncc = nc.nearest_center_predictions(f, self.centers)
            if logits is not None:
                pred = logits[start:stop].detach().to(self.device).argmax(dim=1)
            else:
                pred = nc.head_predictions(f, self.head, self.bias)  # type: ignore[arg-type]
            self.stats[0] += stop - start
            self.stats[1] += float((pred != ncc).sum())
            if labels is not None:
                y = labels[start:stop].to(self.device)
                self.stats[2] += stop - start
                self.stats[3] += float((ncc == y).sum())

    def merge(self, other: "NearestCenterAgreement") -> "NearestCenterAgreement":
        """Add ``other``'s counts (same centres and head required); returns ``self``."""
        if not isinstance(other, NearestCenterAgreement):
            raise TypeError(f"can only merge a NearestCenterAgreement, got {type(other).__name__}.")
        if not (_same_optional(self.centers, other.centers) and _same_optional(self.head, other.head) and _same_optional(self.bias, other.bias)):
            raise ValueError("cannot merge NC4 counts made against different centres or heads.")
        self.stats += other.stats.to(self.device)
        return self

    def _signature(self) -> torch.Tensor:
        return torch.tensor(
            [self.num_classes, self.dim, *_tensor_signature(self.centers), *_tensor_signature(self.head), *_tensor_signature(self.bias)],
            dtype=torch.float64,
        )

    def all_reduce(self, group: object = None) -> "NearestCenterAgreement":
        """Sum the counts over all processes (no-op without an initialised process group)."""
        if not _distributed_ready():
            return self
        if self._synced:
            raise RuntimeError("all_reduce() was already called; the counts are global.")
        _check_same_everywhere(self._signature(), "NC4 centres", group)
        self.stats = _all_reduce_sum(self.stats, group)
        self._synced = True
        return self

    def compute(self) -> dict[str, float]:
        """``{"nc4", "nc4_num_samples"}`` plus ``"ncc_accuracy"`` when labels were given."""
        out: dict[str, float] = {}
        scored, mismatched, labelled, correct = (float(v) for v in self.stats)
        if scored > 0:
            out["nc4"] = mismatched / scored
            out["nc4_num_samples"] = int(scored)
        if labelled > 0:
            out["ncc_accuracy"] = correct / labelled
        return out


# --------------------------------------------------------------------------------------------
# the one-pass accumulator
# --------------------------------------------------------------------------------------------


class NeuralCollapseAccumulator:
    """One-pass, mergeable, all-reducible float64 sums for NC1–NC4 and matrix-information measures.

    See the module documentation for the returned keys, the formulas and the choices (NC4, absent
    classes, C = 2, ``zero_entropy``).

    Args:
        num_classes: C ≥ 2.
        dim: feature dimension d.
        head: optional ``(C, d)`` classifier rows ``W``. Needed at construction for the sample-level
            MIR/HDR (computed during :meth:`update`) and for predictions without logits; the
            class-level measures (NC3, class MIR/HDR) can also get it at :meth:`compute`.
        bias: optional ``(C,)`` classifier bias, used only to form predictions from the head.
        centers: optional ``(C, d)`` fixed class centres: NC4 is then counted in this pass against
            them (e.g. the previous evaluation's :meth:`class_means`).
        sample_batch_size: size of the consecutive sample batches of the sample-level MIR/HDR
            (64 in the paper).
        zero_entropy: "skip" (default), "nan" or "zero": how batches whose ratio is 0/0 enter the
            sample-level averages.
        drop_last: drop the final partial sample batch instead of using it.
        global_mean: "class" (mean of the class means, default) or "sample" (sample-weighted).
        device: where the sums live and the arithmetic runs (the inputs are copied there).

    Example:
        >>> import torch
        >>> from hf_infonc.info.stream import NeuralCollapseAccumulator
        >>> from hf_infonc.info import simplex_etf
        >>> w = simplex_etf(4, 8)
        >>> acc = NeuralCollapseAccumulator(4, 8, head=w)
        >>> y = torch.arange(128) % 4
        >>> acc.update(w[y], y)
        >>> out = acc.compute()
        >>> round(out["nc1"], 6), round(out["nc2"], 6), round(out["class_mir"], 6)
        (0.0, 0.0, 0.753953)
    """

    def __init__(
        self,
        num_classes: int,
        dim: int,
        *,
        head: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
        centers: torch.Tensor | None = None,
        sample_batch_size: int = 64,
        zero_entropy: SampleZeroEntropy = "skip",
        drop_last: bool = False,
        global_mean: nc.GlobalMean = "class",
        device: torch.device | str = "cpu",
    ) -> None:
        self.num_classes = _check_count(num_classes, "num_classes", 2)
        self.dim = _check_count(dim, "dim", 1)
        self.sample_batch_size = _check_count(sample_batch_size, "sample_batch_size", 1)
        if zero_entropy not in SAMPLE_ZERO_ENTROPY:
            raise ValueError(f"zero_entropy={zero_entropy!r} must be one of {SAMPLE_ZERO_ENTROPY}.")
        if global_mean not in nc.GLOBAL_MEANS:
            raise ValueError(f"global_mean={global_mean!r} must be one of {nc.GLOBAL_MEANS}.")
        self.zero_entropy = zero_entropy
        self.drop_last = bool(drop_last)
        self.global_mean = global_mean
        self.device = torch.device(device)
        self.head = self._prepare_head(head)
        if bias is not None and self.head is None:
            raise ValueError("`bias` was given without `head`; pass both, or pass logits to update().")
        self.bias = None if bias is None else _check_matrix(bias, "bias", (self.num_classes,)).detach().to(self.device, torch.float64).clone()
        if centers is not None:
            _check_matrix_allow_nan(centers, "centers", (self.num_classes, self.dim))
            centers = centers.detach().to(self.device, torch.float64).clone()
        self._centers = centers
        self.reset()

    # ---------------------------------------------------------------- state

    def _prepare_head(self, head: torch.Tensor | None) -> torch.Tensor | None:
        if head is None:
            return None
        _check_matrix(head, "head", (self.num_classes, self.dim))
        return head.detach().to(self.device, torch.float64).clone()

    def reset(self) -> None:
        """Forget all samples (keeps the configuration)."""
        c, d, dev = self.num_classes, self.dim, self.device
        self.counts = torch.zeros(c, dtype=torch.float64, device=dev)
        self.sums = torch.zeros(c, d, dtype=torch.float64, device=dev)
        self.second_moment = torch.zeros(d, d, dtype=torch.float64, device=dev)
        self.sample_stats = torch.zeros(_N_SAMPLE_STATS, dtype=torch.float64, device=dev)
        self.prediction_stats = torch.zeros(2, dtype=torch.float64, device=dev)  # [predicted, correct]
        self._exponent: int | None = None  # sums and second_moment hold the values / 2^exponent (None: no data yet)
        self._buffer_features = torch.zeros(0, d, dtype=torch.float64, device=dev)
        self._buffer_labels = torch.zeros(0, dtype=torch.long, device=dev)
        self.ncc = (
            None
            if self._centers is None
            else NearestCenterAgreement(self._centers, head=self.head, bias=self.bias, device=dev)
        )
        self._synced = False

    @property
    def num_samples(self) -> int:
        return int(self.counts.sum())

    def class_means(self) -> torch.Tensor:
        """``(C, d)`` float64 class means ``μ_c = s_c / n_c``; NaN rows for classes with no sample."""
        counts = self.counts.unsqueeze(1)
        means = nc.ldexp(self.sums / counts.clamp_min(1.0), self._exponent or 0)
        return torch.where(counts > 0, means, torch.full_like(means, float("nan")))

    def nearest_center_pass(self) -> NearestCenterAgreement:
        """A :class:`NearestCenterAgreement` seeded with this pass's class means (exact NC4 in a
        second pass; call after :meth:`all_reduce` in multi-process runs)."""
        if self.num_samples == 0:
            raise ValueError("nearest_center_pass() needs a first pass: no sample was added.")
        return NearestCenterAgreement(self.class_means(), head=self.head, bias=self.bias, device=self.device)

    # ---------------------------------------------------------------- update

    def update(
        self,
        features: torch.Tensor,
        labels: torch.Tensor,
        logits: torch.Tensor | None = None,
    ) -> None:
        """Add a batch: ``features`` ``(n, d)``, integer ``labels`` ``(n,)`` in ``0..C-1``, optional
        ``logits`` ``(n, C)`` (classifier predictions for ``classifier_accuracy`` and NC4).

        The inputs are not modified (they are copied to float64 chunk by chunk).
        """
        if self._synced:
            raise RuntimeError(
                "update() after all_reduce(): the sums are already global (all processes). "
                "Call reset() to start a new pass."
            )
        _check_matrix(features, "features", (None, self.dim))
        n = int(features.shape[0])
        _check_labels(labels, n, self.num_classes)
        if logits is not None:
            _check_matrix(logits, "logits", (n, self.num_classes))
        elif self.ncc is not None and self.head is None:
            raise ValueError(
                "NC4 against the given `centers` needs the classifier's predictions: pass logits to update(), "
                "or give `head` at construction."
            )
        for start in range(0, n, UPDATE_CHUNK):
            stop = min(n, start + UPDATE_CHUNK)
            f = features[start:stop].detach().to(self.device, torch.float64)
            y = labels[start:stop].detach().to(self.device, torch.long)
            lg = None if logits is None else logits[start:stop].detach().to(self.device)
            self._update_chunk(f, y, lg)

    def _update_chunk(self, f: torch.Tensor, y: torch.Tensor, logits: torch.Tensor | None) -> None:
        self.counts += torch.bincount(y, minlength=self.num_classes).to(torch.float64)
        stored = self._to_storage(f)
        self.sums.index_add_(0, y, stored)
        self.second_moment += stored.T @ stored
        pred = None
        if logits is not None:
            pred = logits.argmax(dim=1)
        elif self.head is not None:
            pred = nc.head_predictions(f, self.head, self.bias)
        if pred is not None:
            self.prediction_stats[0] += f.shape[0]
            self.prediction_stats[1] += float((pred == y).sum())
        if self.ncc is not None:
            self.ncc.update(f, y, logits=logits)
        if self.head is not None:
            self._update_sample_level(f, y)

    def _to_storage(self, f: torch.Tensor) -> torch.Tensor:
        """``f`` scaled for the float64 sums: the sums hold ``values / 2^exponent`` with the exponent
        chosen so that ``Σ x xᵀ`` neither overflows nor underflows (0 for features of ordinary size,
        :func:`~hf_infonc.info.neural_collapse.storage_exponent`); a batch that needs a larger one
        rescales the sums first. Scaling by a power of two is exact, and every measure but
        ``within_class_variance`` (scaled back) does not depend on the scale."""
        biggest = float(f.abs().amax()) if f.numel() else 0.0
        if biggest > 0:
            wanted = nc.storage_exponent(biggest)
            if self._exponent is None or wanted > self._exponent:
                self._rescale(wanted)
        return nc.ldexp(f, -(self._exponent or 0))

    def _rescale(self, exponent: int | None) -> None:
        """Re-express the sums as ``values / 2^exponent`` (``exponent`` ≥ the current one)."""
        if exponent is None:
            return
        if self._exponent is not None and exponent != self._exponent:
            shift = self._exponent - exponent  # ≤ 0: older, smaller contributions may round away, as in any sum
            self.sums = nc.ldexp(self.sums, shift)
            self.second_moment = nc.ldexp(self.second_moment, 2 * shift)
        self._exponent = exponent

    def _update_sample_level(self, f: torch.Tensor, y: torch.Tensor) -> None:
        feats = torch.cat([self._buffer_features, f])
        labs = torch.cat([self._buffer_labels, y])
        b = self.sample_batch_size
        full = (feats.shape[0] // b) * b
        step = max(1, SAMPLE_GROUP_ROWS // b) * b
        for start in range(0, full, step):
            stop = min(full, start + step)
            self.sample_stats += self._batch_stats(
                feats[start:stop].reshape(-1, b, self.dim), labs[start:stop].reshape(-1, b)
            )
        self._buffer_features = feats[full:].clone()
        self._buffer_labels = labs[full:].clone()

    def _batch_stats(self, feats: torch.Tensor, labs: torch.Tensor) -> torch.Tensor:
        """Summed per-batch statistics for ``feats`` ``(k, n, d)`` and labels ``(k, n)``."""
        assert self.head is not None
        return pair_batch_stats(feats, self.head[labs])

    def _tail_stats(self) -> torch.Tensor:
        """Statistics of the pending partial batch (zeros when none or ``drop_last``); no mutation."""
        if self.head is None or self.drop_last or self._buffer_features.shape[0] == 0:
            return torch.zeros(_N_SAMPLE_STATS, dtype=torch.float64, device=self.device)
        return self._batch_stats(self._buffer_features.unsqueeze(0), self._buffer_labels.unsqueeze(0))

    def _close_partial_batch(self) -> None:
        self.sample_stats += self._tail_stats()
        self._buffer_features = self._buffer_features[:0]
        self._buffer_labels = self._buffer_labels[:0]

    # ---------------------------------------------------------------- combine

    def _same_config(self, other: "NeuralCollapseAccumulator") -> bool:
        return (
            self.num_classes == other.num_classes
            and self.dim == other.dim
            and self.sample_batch_size == other.sample_batch_size
            and self.drop_last == other.drop_last
            and _same_optional(self.head, other.head)
            and _same_optional(self.bias, other.bias)
            and _same_optional(self._centers, other._centers)
        )

    def merge(self, other: "NeuralCollapseAccumulator") -> "NeuralCollapseAccumulator":
        """Add ``other``'s sums into ``self`` (``other`` is not changed); returns ``self``.

        Both must have the same configuration. Each side's pending partial sample batch is closed
        first (see the module doc), so ``a.merge(b)`` equals one pass over a's data then b's when
        a's sample count is a multiple of ``sample_batch_size``.
        """
        if not isinstance(other, NeuralCollapseAccumulator):
            raise TypeError(f"can only merge a NeuralCollapseAccumulator, got {type(other).__name__}.")
        if not self._same_config(other):
            raise ValueError(
                "cannot merge accumulators with different configurations (num_classes, dim, head, bias, "
                "centers, sample_batch_size, drop_last)."
            )
        if self._synced or other._synced:
            raise RuntimeError("cannot merge after all_reduce(): the sums are already global.")
        self._close_partial_batch()
        self._rescale(max((e for e in (self._exponent, other._exponent) if e is not None), default=None))
        shift = 0 if other._exponent is None else other._exponent - (self._exponent or 0)
        self.counts += other.counts.to(self.device)
        self.sums += nc.ldexp(other.sums.to(self.device), shift)
        self.second_moment += nc.ldexp(other.second_moment.to(self.device), 2 * shift)
        self.sample_stats += other.sample_stats.to(self.device) + other._tail_stats().to(self.device)
        self.prediction_stats += other.prediction_stats.to(self.device)
        if self.ncc is not None and other.ncc is not None:
            self.ncc.merge(other.ncc)
        return self

    def _signature(self) -> torch.Tensor:
        return torch.tensor(
            [
                self.num_classes,
                self.dim,
                self.sample_batch_size,
                float(self.drop_last),
                *_tensor_signature(self.head),
                *_tensor_signature(self.bias),
                *_tensor_signature(self._centers),
            ],
            dtype=torch.float64,
        )

    def all_reduce(self, group: object = None) -> "NeuralCollapseAccumulator":
        """Sum the state over all processes of ``group`` when ``torch.distributed`` is initialised.

        Every rank must call it (once). Pending partial sample batches are closed first on each
        rank; then one float64 all-reduce of the packed sums makes every rank hold the global
        state (exact: only sums are reduced). Without an initialised process group it does nothing.
        Returns ``self``.
        """
        if not _distributed_ready():
            return self
        if self._synced:
            raise RuntimeError("all_reduce() was already called; the sums are already global.")
        _check_same_everywhere(self._signature(), "accumulator configuration", group)
        self._close_partial_batch()
        # one storage scale on every rank (the largest), then the sums add up exactly as before
        exponent = torch.tensor([-math.inf if self._exponent is None else float(self._exponent)], dtype=torch.float64)
        exponent = _all_reduce_max(exponent, group)
        self._rescale(None if math.isinf(float(exponent)) else int(exponent))
        parts = [self.counts, self.sums, self.second_moment, self.sample_stats, self.prediction_stats]
        if self.ncc is not None:
            parts.append(self.ncc.stats)
        packed = _all_reduce_sum(torch.cat([p.reshape(-1) for p in parts]), group)
        offset = 0
        for p in parts:
            k = p.numel()
            p.copy_(packed[offset : offset + k].view_as(p))
            offset += k
        self._synced = True
        if self.ncc is not None:
            self.ncc._synced = True
        return self

    # ---------------------------------------------------------------- compute

    def compute(
        self,
        head: torch.Tensor | None = None,
        *,
        zero_entropy: SampleZeroEntropy | None = None,
    ) -> dict[str, float]:
        """All the measures (see the module doc for the keys). Does not change the state.

        Args:
            head: ``(C, d)`` head rows for NC3 and the class-level MIR/HDR; defaults to the head
                given at construction (the sample-level measures always use that one).
            zero_entropy: override the sample-level ``zero_entropy`` mode.

        Raises:
            ValueError: fewer than 2 classes have samples.
        """
        mode = self.zero_entropy if zero_entropy is None else zero_entropy
        if mode not in SAMPLE_ZERO_ENTROPY:
            raise ValueError(f"zero_entropy={mode!r} must be one of {SAMPLE_ZERO_ENTROPY}.")
        w_full = self.head if head is None else self._prepare_head(head)
        present = self.counts > 0
        n_present = int(present.sum())
        if n_present < 2:
            raise ValueError(
                f"{n_present} of {self.num_classes} classes have samples ({self.num_samples} samples in all); "
                f"the neural-collapse measures need at least 2 classes with samples. Call update() with more data."
            )
        n_absent = self.num_classes - n_present
        if n_absent:
            missing = torch.nonzero(~present).flatten().tolist()
            shown = ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else "")
            warnings.warn(
                f"{n_absent} of {self.num_classes} classes have no samples (classes {shown}); the NC measures "
                f"and class-level MIR/HDR use the {n_present} present classes only.",
                RuntimeWarning,
                stacklevel=2,
            )
        counts_p = self.counts[present]
        means_p = self.sums[present] / counts_p.unsqueeze(1)
        mu_g = nc.global_mean(means_p, counts_p, self.global_mean)
        m = means_p - mu_g
        sigma_w = nc.within_class_covariance(self.counts, self.sums, self.second_moment)

        out: dict[str, float] = {
            "num_samples": self.num_samples,
            "num_classes": self.num_classes,
            "num_present_classes": n_present,
            "num_absent_classes": n_absent,
            "nc1": nc.nc1(sigma_w, m),
            "nc2": nc.nc2(m),
            "nc2_equinorm": nc.nc2_equinorm(m),
            "nc2_equiangular": nc.nc2_equiangular(m),
            "within_class_variance": _ldexp_float(
                max(0.0, float(torch.diagonal(sigma_w).sum())), 2 * (self._exponent or 0)  # back to the features' scale
            ),
        }
        if w_full is not None:
            w = w_full[present]
            out["nc3"] = nc.nc3(w, m)
            terms = entropy_terms(w, m, dtype=torch.float64)  # entropies clamped to [0, log k]
            mi = mutual_information_in_range(terms, n_present, torch.float64)  # in [0, min H]: MIR, HDR in [0, 1]
            out["head_entropy"] = float(terms.h_a)
            out["class_mean_entropy"] = float(terms.h_b)
            out["class_mi"] = float(mi)
            out["class_mir"] = float(safe_ratio(mi, torch.minimum(terms.h_a, terms.h_b), "nan", "class-level MIR"))
            out["class_hdr"] = float(
                safe_ratio((terms.h_a - terms.h_b).abs(), torch.maximum(terms.h_a, terms.h_b), "nan", "class-level HDR")
            )
        if self.head is not None:
            out.update(self._sample_results(mode))
        predicted, correct = (float(v) for v in self.prediction_stats)
        if predicted > 0:
            out["classifier_accuracy"] = correct / predicted
        if self.ncc is not None:
            out.update(self.ncc.compute())
        return out

    def _sample_results(self, mode: str) -> dict[str, float]:
        return {f"sample_{k}": v for k, v in summarize_batch_stats(self.sample_stats + self._tail_stats(), mode).items()}


def neural_collapse_measures(
    features: torch.Tensor,
    labels: torch.Tensor,
    *,
    num_classes: int | None = None,
    head: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    logits: torch.Tensor | None = None,
    chunk_size: int = UPDATE_CHUNK,
    **accumulator_kwargs: object,
) -> dict[str, float]:
    """All the measures of :class:`NeuralCollapseAccumulator` for in-memory ``features``/``labels``,
    with the exact two-pass NC4 (second pass: nearest-centre agreement against the final means).

    NC4 is computed when predictions exist (``logits`` ``(n, C)``, or ``head``/``bias``).
    ``num_classes`` defaults to ``head.shape[0]``, else ``labels.max() + 1``. Other keyword
    arguments go to :class:`NeuralCollapseAccumulator`. Inputs are processed ``chunk_size`` rows at
    a time, in order, and never modified.
    """
    _check_matrix(features, "features", (None, None))
    if num_classes is None:
        if head is not None:
            num_classes = int(head.shape[0])
        elif isinstance(labels, torch.Tensor) and labels.numel():
            num_classes = max(int(labels.max()) + 1, 2)
        else:
            raise ValueError("num_classes is needed when there is neither a head nor any label.")
    acc = NeuralCollapseAccumulator(num_classes, int(features.shape[1]), head=head, bias=bias, **accumulator_kwargs)  # type: ignore[arg-type]
    n = int(features.shape[0])
    _check_labels(labels, n, num_classes)
    for start in range(0, n, chunk_size):
        stop = min(n, start + chunk_size)
        acc.update(features[start:stop], labels[start:stop], None if logits is None else logits[start:stop])
    out = acc.compute()
    if logits is not None or head is not None:
        agreement = acc.nearest_center_pass()
        for start in range(0, n, chunk_size):
            stop = min(n, start + chunk_size)
            agreement.update(features[start:stop], labels[start:stop], None if logits is None else logits[start:stop])
        out.update(agreement.compute())
    return out


__all__ = [
    "NearestCenterAgreement",
    "batched_mir_hdr",
    "pair_batch_stats",
    "summarize_batch_stats",
    "NeuralCollapseAccumulator",
    "SAMPLE_ZERO_ENTROPY",
    "UPDATE_CHUNK",
    "neural_collapse_measures",
]
