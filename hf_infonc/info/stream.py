"""Dataset-level neural-collapse and matrix-information measures in one streaming pass (docs/theory.md §2, §5).

:class:`NeuralCollapseAccumulator` keeps float64 sums only (class counts ``n_c`` and sums ``s_c``, ``S = Σ h hᵀ``,
so ``Σ_W = (S − Σ_c s_c s_cᵀ / n_c) / N``; with a head the sample-level MIR/HDR statistics; prediction counts):
memory ``O(d² + C·d)``, any batch sizes, ``merge`` and ``all_reduce`` exact up to the summation order.
``compute()`` returns ``nc1``, ``nc2``, ``nc2_equinorm``, ``nc2_equiangular``, ``within_class_variance``
(``tr Σ_W``); with a head ``nc3``, ``head_entropy`` ``H(G(W))``, ``class_mean_entropy`` ``H(G(M))``,
``class_mi`` / ``class_mir`` / ``class_hdr``; with a head at construction the keys of
:func:`summarize_batch_stats` prefixed ``sample_``; with predictions ``classifier_accuracy``, ``nc4`` /
``ncc_accuracy``; always ``num_samples``, ``num_classes``, ``num_present_classes``, ``num_absent_classes``.

Choices (**[choice]** of docs/theory.md):

* **NC4** needs the class means before any sample is scored. Exact, two passes: ``nearest_center_pass()``
  (after ``all_reduce``) gives a :class:`NearestCenterAgreement` to feed the same data again
  (:func:`neural_collapse_measures`). One pass: ``centers=`` at construction (e.g. the previous
  ``class_means()``). Running means are never used (the result would depend on the data order).
* **Absent classes** are left out of every measure (with a warning); fewer than 2 present is a
  ``ValueError``; ``class_means()`` has NaN rows for them.
* **C = 2**: ``H(G(M)) = 0``, so ``class_mir`` is NaN (warning); a sample batch with one class, or with
  (anti-)parallel head rows, has a 0/0 ratio and follows ``zero_entropy`` ("skip" (default): left out
  and counted, "nan", "zero"; ``compute`` may change it).
* **Partial sample batch**: the leftover samples form a last, smaller batch unless ``drop_last``;
  ``merge`` and ``all_reduce`` close each side's first, as a ``DistributedSampler`` shard would.

Numerics (docs/theory.md §6): the sums hold the features divided by a power of two chosen from the data,
so every measure but ``within_class_variance`` is scale-invariant. Inputs are never modified.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from typing import TypeVar

import torch

from hf_infonc.info import neural_collapse as nc
from hf_infonc.info.collapse import check_num_classes
from hf_infonc.info.gram import check_choice, check_count, check_label_tensor, check_tensor
from hf_infonc.info.mutual import information_measures
from hf_infonc.info.sample_level import (
    N_SAMPLE_STATS, SAMPLE_ZERO_ENTROPY, SampleZeroEntropy, batch_stats, batched_mir_hdr, pair_batch_stats,
    summarize_batch_stats,
)

#: ``update`` processes at most this many rows at a time (bounds the float64 temporaries).
UPDATE_CHUNK = 8192
_A = TypeVar("_A", bound="_Accumulator")


def _stored(x: object, name: str, shape: tuple[int, ...], device: torch.device, finite: bool = True) -> torch.Tensor:
    """A float64 copy on ``device`` of the checked input ``x`` (the caller's tensor is never modified)."""
    return check_tensor(x, name, shape=shape, finite=finite).detach().to(device, torch.float64).clone()


def _reduced(vector: torch.Tensor, group: object, op: str = "SUM") -> torch.Tensor:
    """``vector`` reduced over ``group`` (``op``: "SUM", "MAX" or "MIN"), on ``vector``'s device; the
    reduction runs on the group's device (CUDA for NCCL, else the CPU)."""
    import torch.distributed as dist

    nccl = "nccl" in str(dist.get_backend(group)).lower()
    buf = vector.to(torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu"), copy=True)
    dist.all_reduce(buf, op=getattr(dist.ReduceOp, op), group=group)
    return buf.to(vector.device)


def _signature(config: tuple) -> torch.Tensor:
    """A float64 summary of a configuration: numbers as they are, optional tensors as ``[given, Σ x, Σ |x|]``
    (NaN counted as 0)."""
    values: list[float] = []
    for part in config:
        if part is None or isinstance(part, torch.Tensor):
            y = torch.zeros(0) if part is None else part.to(torch.float64).nan_to_num(0.0)
            values += [float(part is not None), float(y.sum()), float(y.abs().sum())]
        else:
            values.append(float(part))
    return torch.tensor(values, dtype=torch.float64)


def _same(a: object, b: object) -> bool:
    """Whether two configuration entries are equal: numbers, ``None`` or tensors (NaN equal to NaN)."""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and bool(torch.equal(a.nan_to_num(0.0), b.to(a.device).nan_to_num(0.0)))
    return type(a) is type(b) and a == b


class _Accumulator:
    """What both accumulators share: C, d, an optional head and bias, the checked reading of a batch in
    chunks, and the float64 tensors of ``_parts()`` that ``merge`` adds and ``all_reduce`` sums over
    processes, after every rank has checked that all hold the same ``_config()`` (numbers and optional
    tensors, named by ``_fields``), so a mismatch raises everywhere instead of hanging."""

    _fields = ""

    def _aligned(self, other: _A) -> list[torch.Tensor]:
        """``other``'s parts, ready to add to this state's (as they are by default)."""
        return other._parts()

    def _before_all_reduce(self, group: object) -> None:
        """Bring the state into the form that sums over processes (nothing to do by default)."""

    def _set_classifier(self, head: torch.Tensor | None, bias: torch.Tensor | None) -> None:
        """The checked float64 copies of an optional ``(C, d)`` head and ``(C,)`` bias (a bias needs a head)."""
        if bias is not None and head is None:
            raise ValueError("`bias` was given without `head`; pass both, or pass logits to update().")
        shape = (self.num_classes, self.dim)
        self.head = None if head is None else _stored(head, "head", shape, self.device)
        self.bias = None if bias is None else _stored(bias, "bias", shape[:1], self.device)

    def _batches(
        self, features: torch.Tensor, labels: torch.Tensor | None, logits: torch.Tensor | None, *,
        need_labels: bool, need_predictions: bool,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]]:
        """Check a batch, then yield ``(float64 rows, labels or None, predictions or None)`` on the device,
        :data:`UPDATE_CHUNK` rows at a time; predictions from ``logits``, else from the head."""
        if self._synced:
            raise RuntimeError(
                "update() after all_reduce(): the sums are already global (all processes). "
                "Call reset() to start a new pass."
            )
        check_tensor(features, "features", shape=(None, self.dim))
        n = int(features.shape[0])
        if labels is not None or need_labels:
            check_label_tensor(labels, n, self.num_classes)
        if logits is not None:
            check_tensor(logits, "logits", shape=(n, self.num_classes))
        elif need_predictions and self.head is None:
            raise ValueError(
                "NC4 needs the classifier's predictions: pass logits to update(), or give `head` at construction."
            )
        for start in range(0, n, UPDATE_CHUNK):
            rows = slice(start, start + UPDATE_CHUNK)
            f = features[rows].detach().to(self.device, torch.float64)
            y = None if labels is None else labels[rows].detach().to(self.device, torch.long)
            if logits is not None:
                yield f, y, logits[rows].detach().to(self.device).argmax(dim=1)
            else:
                yield f, y, None if self.head is None else nc.head_predictions(f, self.head, self.bias)

    def merge(self: _A, other: _A) -> _A:
        """Add ``other``'s state into ``self`` (``other`` unchanged; same configuration required; each side's
        pending partial sample batch is closed first, module doc); returns ``self``."""
        if not isinstance(other, type(self)):
            raise TypeError(f"can only merge a {type(self).__name__}, got {type(other).__name__}.")
        if not all(map(_same, self._config(), other._config())):
            raise ValueError(f"cannot merge a {type(self).__name__} with different configurations ({self._fields}).")
        if self._synced or other._synced:
            raise RuntimeError("cannot merge after all_reduce(): the sums are already global.")
        theirs = self._aligned(other)
        for mine, part in zip(self._parts(), theirs):
            mine += part.to(self.device)
        return self

    def all_reduce(self: _A, group: object = None) -> _A:
        """Sum the state over all processes of ``group`` in one float64 all-reduce (every rank calls it once;
        a no-op without an initialised process group). Returns ``self``."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return self
        if self._synced:
            raise RuntimeError("all_reduce() was already called; the sums are already global.")
        config = _signature(self._config())
        if not torch.equal(_reduced(config, group, "MAX"), _reduced(config, group, "MIN")):
            raise ValueError(
                f"all_reduce: the processes disagree on the configuration ({self._fields}). "
                f"Build the {type(self).__name__} with the same arguments on every rank."
            )
        self._before_all_reduce(group)
        parts = self._parts()
        packed = _reduced(torch.cat([p.reshape(-1) for p in parts]), group)
        for p, values in zip(parts, packed.split([p.numel() for p in parts])):
            p.copy_(values.view_as(p))
        self._synced = True
        return self


class NearestCenterAgreement(_Accumulator):
    """NC4 ``= (1/N) #{i : argmax_c logits_ic ≠ argmin_c ‖h_i − μ_c‖}`` for *fixed* centres ``μ``
    (``(C, d)``, NaN rows never chosen); predictions from the ``logits`` given to :meth:`update`, else
    ``argmax(h Wᵀ + b)`` from the optional ``head`` ``(C, d)`` and ``bias`` ``(C,)``. ``device``: where
    the counts live. The exact NC4 uses the class means of the same data (``nearest_center_pass()``).
    """

    _fields = "num_classes, dim, centres, head, bias"

    def __init__(
        self, centers: torch.Tensor, *, head: torch.Tensor | None = None, bias: torch.Tensor | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.device = torch.device(device)
        self.centers = _stored(centers, "centers", (None, None), self.device, finite=False)
        if not bool(torch.isfinite(self.centers).all(dim=1).any()):
            raise ValueError("`centers` has no finite row: at least one class centre is needed.")
        self.num_classes, self.dim = self.centers.shape
        self._set_classifier(head, bias)
        self.reset()

    def reset(self) -> None:
        """Zero the counts: ``[samples scored, disagreements, samples with labels, NCC correct]``."""
        self.stats = torch.zeros(4, dtype=torch.float64, device=self.device)
        self._synced = False

    def _config(self) -> tuple:
        return (self.num_classes, self.dim, self.centers, self.head, self.bias)

    def _parts(self) -> list[torch.Tensor]:
        return [self.stats]

    def update(
        self, features: torch.Tensor, labels: torch.Tensor | None = None, logits: torch.Tensor | None = None,
    ) -> None:
        """Score one batch: ``features`` ``(n, d)``; optional ``labels`` ``(n,)`` (for ``ncc_accuracy``)
        and ``logits`` ``(n, C)`` (else the head gives the predictions)."""
        for f, y, pred in self._batches(features, labels, logits, need_labels=False, need_predictions=True):
            self._score(f, pred, y)  # type: ignore[arg-type]

    def _score(self, f: torch.Tensor, pred: torch.Tensor, y: torch.Tensor | None) -> None:
        """Count one chunk: float64 rows ``f``, the classifier's predictions, optional labels."""
        ncc = nc.nearest_center_predictions(f, self.centers)
        self.stats[0] += f.shape[0]
        self.stats[1] += float((pred != ncc).sum())
        if y is not None:
            self.stats[2] += f.shape[0]
            self.stats[3] += float((ncc == y).sum())

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


class NeuralCollapseAccumulator(_Accumulator):
    """One-pass, mergeable, all-reducible float64 sums for NC1–NC4 and matrix-information measures (keys,
    formulas and choices: module doc; usage: docs/metrics.md).

    Args:
        num_classes: C ≥ 2.
        dim: feature dimension d.
        head: optional ``(C, d)`` classifier rows ``W``: needed at construction for the sample-level MIR/HDR
            and for predictions without logits; NC3 and the class-level MIR/HDR can also get it at :meth:`compute`.
        bias: optional ``(C,)`` classifier bias, used only to form predictions from the head.
        centers: optional ``(C, d)`` fixed centres to count NC4 against in this pass (e.g. earlier :meth:`class_means`).
        sample_batch_size: rows per sample batch of the sample-level MIR/HDR (64 in the paper).
        zero_entropy: "skip" (default), "nan" or "zero": how 0/0 batches enter the sample-level averages.
        drop_last: drop the final partial sample batch instead of using it.
        global_mean: "class" (mean of the class means, default) or "sample" (sample-weighted).
        device: where the sums live and the arithmetic runs (the inputs are copied there).
    """

    _fields = "num_classes, dim, sample_batch_size, drop_last, head, bias, centers"

    def __init__(
        self, num_classes: int, dim: int, *, head: torch.Tensor | None = None, bias: torch.Tensor | None = None,
        centers: torch.Tensor | None = None, sample_batch_size: int = 64, zero_entropy: SampleZeroEntropy = "skip",
        drop_last: bool = False, global_mean: nc.GlobalMean = "class", device: torch.device | str = "cpu",
    ) -> None:
        self.num_classes = check_num_classes(num_classes)
        self.dim = check_count(dim, "dim", 1)
        self.sample_batch_size = check_count(sample_batch_size, "sample_batch_size", 1)
        self.zero_entropy = check_choice(zero_entropy, "zero_entropy", SAMPLE_ZERO_ENTROPY)
        self.global_mean = check_choice(global_mean, "global_mean", nc.GLOBAL_MEANS)
        self.drop_last = bool(drop_last)
        self.device = torch.device(device)
        self._set_classifier(head, bias)
        self.ncc: NearestCenterAgreement | None = None
        if centers is not None:
            check_tensor(centers, "centers", shape=(num_classes, dim), finite=False)  # NaN rows allowed
            self.ncc = NearestCenterAgreement(centers, head=self.head, bias=self.bias, device=self.device)
        self.reset()

    def reset(self) -> None:
        """Forget all samples (keeps the configuration)."""
        c, d, dev = self.num_classes, self.dim, self.device
        self.counts = torch.zeros(c, dtype=torch.float64, device=dev)
        self.sums = torch.zeros(c, d, dtype=torch.float64, device=dev)
        self.second_moment = torch.zeros(d, d, dtype=torch.float64, device=dev)
        self.sample_stats = torch.zeros(N_SAMPLE_STATS, dtype=torch.float64, device=dev)
        self.prediction_stats = torch.zeros(2, dtype=torch.float64, device=dev)  # [predicted, correct]
        self._exponent: int | None = None  # sums and second_moment hold the values / 2^exponent (None: no data yet)
        self._buffer_features = torch.zeros(0, d, dtype=torch.float64, device=dev)
        self._buffer_labels = torch.zeros(0, dtype=torch.long, device=dev)
        if self.ncc is not None:
            self.ncc.reset()
        self._synced = False

    def _config(self) -> tuple:
        centers = None if self.ncc is None else self.ncc.centers
        return (self.num_classes, self.dim, self.sample_batch_size, float(self.drop_last), self.head, self.bias,
                centers)

    def _parts(self) -> list[torch.Tensor]:
        parts = [self.counts, self.sums, self.second_moment, self.sample_stats, self.prediction_stats]
        return parts + ([] if self.ncc is None else self.ncc._parts())

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

    def update(
        self, features: torch.Tensor, labels: torch.Tensor, logits: torch.Tensor | None = None,
    ) -> None:
        """Add a batch: ``features`` ``(n, d)``, integer ``labels`` ``(n,)`` in ``0..C-1``, optional
        ``logits`` ``(n, C)`` (classifier predictions for ``classifier_accuracy`` and NC4)."""
        need_predictions = self.ncc is not None
        for f, y, pred in self._batches(features, labels, logits, need_labels=True, need_predictions=need_predictions):
            self.counts += torch.bincount(y, minlength=self.num_classes).to(torch.float64)
            stored = self._to_storage(f)
            self.sums.index_add_(0, y, stored)
            self.second_moment += stored.T @ stored
            if pred is not None:
                self.prediction_stats[0] += f.shape[0]
                self.prediction_stats[1] += float((pred == y).sum())
            if self.ncc is not None:
                self.ncc._score(f, pred, y)  # type: ignore[arg-type]  (_batches checked there are predictions)
            if self.head is not None:
                self._update_sample_level(f, y)  # type: ignore[arg-type]

    def _to_storage(self, f: torch.Tensor) -> torch.Tensor:
        """``f / 2^exponent`` for the sums (:func:`~.neural_collapse.storage_exponent`, exact); a batch that
        needs a larger exponent rescales the sums first."""
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
        full = (feats.shape[0] // self.sample_batch_size) * self.sample_batch_size
        self.sample_stats += batch_stats(feats[:full], self.head[labs[:full]], self.sample_batch_size, tail=False)
        self._buffer_features = feats[full:].clone()
        self._buffer_labels = labs[full:].clone()

    def _tail_stats(self) -> torch.Tensor:
        """Statistics of the pending partial batch (zeros when none or ``drop_last``); no mutation."""
        if self.head is None or self.drop_last or self._buffer_features.shape[0] == 0:
            return torch.zeros(N_SAMPLE_STATS, dtype=torch.float64, device=self.device)
        return pair_batch_stats(self._buffer_features[None], self.head[self._buffer_labels][None])

    def _close_partial_batch(self) -> None:
        self.sample_stats += self._tail_stats()
        self._buffer_features = self._buffer_features[:0]
        self._buffer_labels = self._buffer_labels[:0]

    def _aligned(self, other: NeuralCollapseAccumulator) -> list[torch.Tensor]:
        """``other``'s parts in the storage scale both now share, its pending partial batch included."""
        self._close_partial_batch()
        self._rescale(max((e for e in (self._exponent, other._exponent) if e is not None), default=None))
        shift = 0 if other._exponent is None else other._exponent - (self._exponent or 0)
        counts, sums, second_moment, sample_stats, *rest = other._parts()
        sample_stats = sample_stats + other._tail_stats()
        return [counts, nc.ldexp(sums, shift), nc.ldexp(second_moment, 2 * shift), sample_stats, *rest]

    def _before_all_reduce(self, group: object) -> None:
        """Close the pending partial sample batch, and give every rank one storage scale (the largest)."""
        self._close_partial_batch()
        exponent = torch.tensor([-math.inf if self._exponent is None else float(self._exponent)], dtype=torch.float64)
        exponent = _reduced(exponent, group, "MAX")
        self._rescale(None if math.isinf(float(exponent)) else int(exponent))
        if self.ncc is not None:
            self.ncc._synced = True  # its counts are summed with these sums

    def compute(
        self, head: torch.Tensor | None = None, *, zero_entropy: SampleZeroEntropy | None = None,
    ) -> dict[str, float]:
        """All the measures (keys in the module doc), the state unchanged; ``ValueError`` when fewer than 2
        classes have samples. ``head``: ``(C, d)`` rows for NC3 and the class-level MIR/HDR (default: the one
        given at construction, which the sample-level measures always use); ``zero_entropy``: overrides the
        sample-level mode."""
        mode = check_choice(self.zero_entropy if zero_entropy is None else zero_entropy, "zero_entropy",
                            SAMPLE_ZERO_ENTROPY)
        w_full = self.head if head is None else _stored(head, "head", (self.num_classes, self.dim), self.device)
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
                f"and class-level MIR/HDR use the {n_present} present classes only.", RuntimeWarning, stacklevel=2,
            )
        counts_p = self.counts[present]
        means_p = self.sums[present] / counts_p.unsqueeze(1)
        m = means_p - nc.global_mean(means_p, counts_p, self.global_mean)
        sigma_w = nc.within_class_covariance(self.counts, self.sums, self.second_moment)
        variance = max(0.0, float(torch.diagonal(sigma_w).sum()))
        try:  # back to the features' scale (inf past float64's range)
            variance = math.ldexp(variance, 2 * (self._exponent or 0))
        except OverflowError:
            variance = math.inf

        out: dict[str, float] = {
            "num_samples": self.num_samples,
            "num_classes": self.num_classes,
            "num_present_classes": n_present,
            "num_absent_classes": n_absent,
            "nc1": nc.nc1(sigma_w, m),
            "nc2": nc.nc2(m),
            "nc2_equinorm": nc.nc2_equinorm(m),
            "nc2_equiangular": nc.nc2_equiangular(m),
            "within_class_variance": variance,
        }
        if w_full is not None:
            w = w_full[present]
            out["nc3"] = nc.nc3(w, m)
            terms, mi, class_mir, class_hdr = information_measures(w, m, "nan", "class-level ")
            out["head_entropy"], out["class_mean_entropy"] = float(terms.h_a), float(terms.h_b)
            out["class_mi"], out["class_mir"], out["class_hdr"] = float(mi), float(class_mir), float(class_hdr)
        if self.head is not None:
            summary = summarize_batch_stats(self.sample_stats + self._tail_stats(), mode)
            out.update({f"sample_{k}": v for k, v in summary.items()})
        predicted, correct = (float(v) for v in self.prediction_stats)
        if predicted > 0:
            out["classifier_accuracy"] = correct / predicted
        if self.ncc is not None:
            out.update(self.ncc.compute())
        return out


def neural_collapse_measures(
    features: torch.Tensor, labels: torch.Tensor, *, num_classes: int | None = None, head: torch.Tensor | None = None,
    bias: torch.Tensor | None = None, logits: torch.Tensor | None = None, chunk_size: int = UPDATE_CHUNK,
    **accumulator_kwargs: object,
) -> dict[str, float]:
    """All the measures of :class:`NeuralCollapseAccumulator` for in-memory ``features`` / ``labels``, with
    the exact two-pass NC4 when predictions exist (``logits`` ``(n, C)``, or ``head`` / ``bias``).

    ``num_classes`` defaults to ``head.shape[0]``, else ``labels.max() + 1``; other keyword arguments
    go to :class:`NeuralCollapseAccumulator`. Inputs are read ``chunk_size`` rows at a time, in order.
    """
    check_tensor(features, "features", shape=(None, None))
    if num_classes is None:
        if head is not None:
            num_classes = int(head.shape[0])
        elif isinstance(labels, torch.Tensor) and labels.numel():
            num_classes = max(int(labels.max()) + 1, 2)
        else:
            raise ValueError("num_classes is needed when there is neither a head nor any label.")
    acc = NeuralCollapseAccumulator(
        num_classes, int(features.shape[1]), head=head, bias=bias, **accumulator_kwargs  # type: ignore[arg-type]
    )
    n = int(features.shape[0])
    check_label_tensor(labels, n, num_classes)

    def feed(target: NeuralCollapseAccumulator | NearestCenterAgreement) -> None:
        for start in range(0, n, chunk_size):
            rows = slice(start, start + chunk_size)
            target.update(features[rows], labels[rows], None if logits is None else logits[rows])

    feed(acc)
    out = acc.compute()
    if logits is not None or head is not None:
        agreement = acc.nearest_center_pass()
        feed(agreement)
        out.update(agreement.compute())
    return out


__all__ = [
    "NearestCenterAgreement", "NeuralCollapseAccumulator", "SAMPLE_ZERO_ENTROPY", "UPDATE_CHUNK", "batched_mir_hdr",
    "neural_collapse_measures", "pair_batch_stats", "summarize_batch_stats",
]
