"""Dataset-level neural-collapse and matrix-information measures in one streaming pass.

:class:`NeuralCollapseAccumulator` keeps only float64 sums (per-class counts ``n_c`` and sums
``s_c``, ``S = Σ h hᵀ`` so that ``Σ_W = (S − Σ_c s_c s_cᵀ / n_c) / N``, with a head ``W`` the
sample-level MIR/HDR statistics of consecutive batches, prediction counts): memory ``O(d² + C·d)``,
any batch sizes, merge and ``all_reduce`` exact up to the summation order. :meth:`~NeuralCollapseAccumulator.compute`
returns (docs/theory.md §2 and §5): ``nc1``, ``nc2``, ``nc2_equinorm``, ``nc2_equiangular``,
``within_class_variance`` (``tr Σ_W``); with a head ``nc3``, ``head_entropy`` ``H(G(W))``,
``class_mean_entropy`` ``H(G(M))``, ``class_mi`` / ``class_mir`` / ``class_hdr``; with a head at
construction ``sample_mir``, ``sample_hdr``, ``sample_mi``, ``sample_feature_entropy``,
``sample_head_entropy``, ``sample_num_batches``, ``sample_mir_undefined_batches``,
``sample_hdr_undefined_batches``; with predictions ``classifier_accuracy``, ``nc4`` /
``ncc_accuracy``; always ``num_samples``, ``num_classes``, ``num_present_classes``, ``num_absent_classes``.

Choices (**[choice]** of docs/theory.md):

* **NC4** needs the class means before any sample is scored. Exact, two passes:
  :meth:`~NeuralCollapseAccumulator.nearest_center_pass` (after ``all_reduce``) gives a
  :class:`NearestCenterAgreement` to feed the same data again (:func:`neural_collapse_measures`).
  One pass: ``centers=`` at construction (e.g. the previous ``class_means()``) counts NC4 against
  those centres. Running means are never used (the result would depend on the data order).
* **Absent classes** are left out of every measure (with a warning); fewer than 2 present is a
  ``ValueError``; ``class_means()`` has NaN rows for them.
* **C = 2**: ``H(G(M)) = 0``, so ``class_mir`` is NaN (warning); a sample batch with one class,
  or with (anti-)parallel head rows, has a 0/0 ratio and follows ``zero_entropy`` ("skip"
  (default): left out and counted, "nan", "zero"; ``compute`` may change it).
* **Partial sample batch**: the leftover samples form a last, smaller batch unless ``drop_last``;
  ``merge`` and ``all_reduce`` close each side's first, as a ``DistributedSampler`` shard would.

Numerics (docs/theory.md §6): the sums hold the features divided by a power of two chosen from the
data, so every measure but ``within_class_variance`` is scale-invariant from 1e-300 to 1e300.
Inputs are never modified (copied to float64 on ``device``, :data:`UPDATE_CHUNK` rows at a time).
"""

from __future__ import annotations

import math
import warnings

import torch

from hf_infonc.info import neural_collapse as nc
from hf_infonc.info._reduce import all_reduce, check_same_everywhere, distributed_ready, same_optional, signature
from hf_infonc.info.gram import check_class_labels, check_count, check_matrix
from hf_infonc.info.mutual import information_measures
from hf_infonc.info.sample_level import (  # noqa: F401  (batched_mir_hdr and the statistics: re-exported)
    N_SAMPLE_STATS, SAMPLE_ZERO_ENTROPY, SampleZeroEntropy, batch_stats, batched_mir_hdr, check_zero_entropy,
    pair_batch_stats, summarize_batch_stats,
)

#: ``update`` processes at most this many rows at a time (bounds the float64 temporaries).
UPDATE_CHUNK = 8192


def _chunks(n: int, size: int = UPDATE_CHUNK):
    """Consecutive row slices of at most ``size`` rows covering ``0..n``."""
    return (slice(start, min(n, start + size)) for start in range(0, n, size))


def _stored(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A float64 copy of ``x`` on ``device`` (the caller's tensor is never modified)."""
    return x.detach().to(device, torch.float64).clone()


def _head_and_bias(
    head: torch.Tensor | None, bias: torch.Tensor | None, num_classes: int, dim: int, device: torch.device
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The checked float64 copies of an optional ``(C, d)`` head and ``(C,)`` bias (a bias needs a head)."""
    if head is not None:
        head = _stored(check_matrix(head, "head", (num_classes, dim)), device)
    if bias is not None and head is None:
        raise ValueError("`bias` was given without `head`; pass both, or pass logits to update().")
    return head, None if bias is None else _stored(check_matrix(bias, "bias", (num_classes,)), device)


def _predictions(
    f: torch.Tensor, logits: torch.Tensor | None, head: torch.Tensor | None, bias: torch.Tensor | None
) -> torch.Tensor | None:
    """The classifier's predictions for the float64 rows ``f``: from ``logits``, else from the head, else None."""
    if logits is not None:
        return logits.argmax(dim=1)
    return None if head is None else nc.head_predictions(f, head, bias)


class NearestCenterAgreement:
    """NC4 ``= (1/N) #{i : argmax_c logits_ic ≠ argmin_c ‖h_i − μ_c‖}`` for *fixed* centres ``μ`` (NaN rows
    never chosen); predictions from the ``logits`` given to :meth:`update`, else ``argmax(h Wᵀ + b)``. The
    exact NC4 uses the class means of the same data (:meth:`NeuralCollapseAccumulator.nearest_center_pass`).

    Args:
        centers: ``(C, d)`` class centres (float, NaN rows allowed).
        head: optional ``(C, d)`` classifier rows; bias: optional ``(C,)``.
        device: where the counts live and the distances are computed.
    """

    def __init__(
        self, centers: torch.Tensor, *, head: torch.Tensor | None = None, bias: torch.Tensor | None = None,
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
        self.centers = _stored(centers, self.device)
        self.head, self.bias = _head_and_bias(head, bias, self.num_classes, self.dim, self.device)
        self.reset()

    def reset(self) -> None:
        """Zero the counts: ``[samples scored, disagreements, samples with labels, NCC correct]``."""
        self.stats = torch.zeros(4, dtype=torch.float64, device=self.device)
        self._synced = False

    def update(
        self, features: torch.Tensor, labels: torch.Tensor | None = None, logits: torch.Tensor | None = None,
    ) -> None:
        """Score one batch: ``features`` ``(n, d)``; optional ``labels`` ``(n,)`` (for ``ncc_accuracy``)
        and ``logits`` ``(n, C)`` (else the head gives the predictions)."""
        if self._synced:
            raise RuntimeError("update() after all_reduce(): the counts are already global; call reset() first.")
        check_matrix(features, "features", (None, self.dim))
        n = features.shape[0]
        if labels is not None:
            check_class_labels(labels, n, self.num_classes)
        if logits is not None:
            check_matrix(logits, "logits", (n, self.num_classes))
        elif self.head is None:
            raise ValueError(
                "NC4 needs the classifier's predictions: pass logits to update(), or give `head` at construction."
            )
        for rows in _chunks(n):
            f = features[rows].detach().to(self.device, torch.float64)
            lg = None if logits is None else logits[rows].detach().to(self.device)
            self._score(f, _predictions(f, lg, self.head, self.bias), None if labels is None else labels[rows])

    def _score(self, f: torch.Tensor, pred: torch.Tensor, y: torch.Tensor | None) -> None:
        """Count one chunk: float64 rows ``f``, the classifier's predictions, optional labels."""
        ncc = nc.nearest_center_predictions(f, self.centers)
        self.stats[0] += f.shape[0]
        self.stats[1] += float((pred != ncc).sum())
        if y is not None:
            self.stats[2] += f.shape[0]
            self.stats[3] += float((ncc == y.to(self.device)).sum())

    def merge(self, other: "NearestCenterAgreement") -> "NearestCenterAgreement":
        """Add ``other``'s counts (same centres and head required); returns ``self``."""
        if not isinstance(other, NearestCenterAgreement):
            raise TypeError(f"can only merge a NearestCenterAgreement, got {type(other).__name__}.")
        pairs = ((self.centers, other.centers), (self.head, other.head), (self.bias, other.bias))
        if not all(same_optional(mine, theirs) for mine, theirs in pairs):
            raise ValueError("cannot merge NC4 counts made against different centres or heads.")
        self.stats += other.stats.to(self.device)
        return self

    def all_reduce(self, group: object = None) -> "NearestCenterAgreement":
        """Sum the counts over all processes (no-op without an initialised process group)."""
        if not distributed_ready():
            return self
        if self._synced:
            raise RuntimeError("all_reduce() was already called; the counts are global.")
        config = signature(self.num_classes, self.dim, self.centers, self.head, self.bias)
        check_same_everywhere(config, "NC4 centres", group)
        self.stats = all_reduce(self.stats, group)
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


class NeuralCollapseAccumulator:
    """One-pass, mergeable, all-reducible float64 sums for NC1–NC4 and matrix-information measures.

    See the module documentation for the returned keys, the formulas and the choices (NC4, absent
    classes, C = 2, ``zero_entropy``).

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

    Usage: docs/metrics.md.
    """

    def __init__(
        self, num_classes: int, dim: int, *, head: torch.Tensor | None = None, bias: torch.Tensor | None = None,
        centers: torch.Tensor | None = None, sample_batch_size: int = 64, zero_entropy: SampleZeroEntropy = "skip",
        drop_last: bool = False, global_mean: nc.GlobalMean = "class", device: torch.device | str = "cpu",
    ) -> None:
        self.num_classes = check_count(num_classes, "num_classes", 2)
        self.dim = check_count(dim, "dim", 1)
        self.sample_batch_size = check_count(sample_batch_size, "sample_batch_size", 1)
        self.zero_entropy = check_zero_entropy(zero_entropy)
        if global_mean not in nc.GLOBAL_MEANS:
            raise ValueError(f"global_mean={global_mean!r} must be one of {nc.GLOBAL_MEANS}.")
        self.drop_last = bool(drop_last)
        self.global_mean = global_mean
        self.device = torch.device(device)
        self.head, self.bias = _head_and_bias(head, bias, self.num_classes, self.dim, self.device)
        if centers is not None:
            shape = (self.num_classes, self.dim)
            valid = isinstance(centers, torch.Tensor) and centers.is_floating_point()
            if not valid or tuple(centers.shape) != shape:
                raise ValueError(f"`centers` must be a floating tensor of shape {shape}.")  # NaN rows allowed
            centers = _stored(centers, self.device)
        self._centers = centers
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
        centers, head, bias = self._centers, self.head, self.bias
        self.ncc = None if centers is None else NearestCenterAgreement(centers, head=head, bias=bias, device=dev)
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

    def update(
        self, features: torch.Tensor, labels: torch.Tensor, logits: torch.Tensor | None = None,
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
        check_matrix(features, "features", (None, self.dim))
        n = int(features.shape[0])
        check_class_labels(labels, n, self.num_classes)
        if logits is not None:
            check_matrix(logits, "logits", (n, self.num_classes))
        elif self.ncc is not None and self.head is None:
            raise ValueError(
                "NC4 against the given `centers` needs the classifier's predictions: pass logits to update(), "
                "or give `head` at construction."
            )
        for rows in _chunks(n):
            f = features[rows].detach().to(self.device, torch.float64)
            y = labels[rows].detach().to(self.device, torch.long)
            lg = None if logits is None else logits[rows].detach().to(self.device)
            pred = _predictions(f, lg, self.head, self.bias)
            self.counts += torch.bincount(y, minlength=self.num_classes).to(torch.float64)
            stored = self._to_storage(f)
            self.sums.index_add_(0, y, stored)
            self.second_moment += stored.T @ stored
            if pred is not None:
                self.prediction_stats[0] += f.shape[0]
                self.prediction_stats[1] += float((pred == y).sum())
            if self.ncc is not None:
                self.ncc._score(f, pred, y)  # type: ignore[arg-type]  (update() checked there are predictions)
            if self.head is not None:
                self._update_sample_level(f, y)

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

    def _config(self) -> tuple:
        return (self.num_classes, self.dim, self.sample_batch_size, float(self.drop_last), self.head, self.bias,
                self._centers)

    def merge(self, other: "NeuralCollapseAccumulator") -> "NeuralCollapseAccumulator":
        """Add ``other``'s sums into ``self`` (``other`` unchanged; same configuration required); returns
        ``self``. Each side's pending partial sample batch is closed first (module doc)."""
        if not isinstance(other, NeuralCollapseAccumulator):
            raise TypeError(f"can only merge a NeuralCollapseAccumulator, got {type(other).__name__}.")
        mine, theirs = self._config(), other._config()
        if mine[:4] != theirs[:4] or not all(same_optional(a, b) for a, b in zip(mine[4:], theirs[4:])):
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

    def all_reduce(self, group: object = None) -> "NeuralCollapseAccumulator":
        """Sum the state over all processes of ``group`` (every rank calls it once; no-op without a process
        group): pending partial sample batches are closed, then one float64 all-reduce. Returns ``self``."""
        if not distributed_ready():
            return self
        if self._synced:
            raise RuntimeError("all_reduce() was already called; the sums are already global.")
        check_same_everywhere(signature(*self._config()), "accumulator configuration", group)
        self._close_partial_batch()
        # one storage scale on every rank (the largest), then the sums add up exactly as before
        exponent = torch.tensor([-math.inf if self._exponent is None else float(self._exponent)], dtype=torch.float64)
        exponent = all_reduce(exponent, group, "MAX")
        self._rescale(None if math.isinf(float(exponent)) else int(exponent))
        parts = [self.counts, self.sums, self.second_moment, self.sample_stats, self.prediction_stats]
        if self.ncc is not None:
            parts.append(self.ncc.stats)
        packed = all_reduce(torch.cat([p.reshape(-1) for p in parts]), group)
        for p, values in zip(parts, packed.split([p.numel() for p in parts])):
            p.copy_(values.view_as(p))
        self._synced = True
        if self.ncc is not None:
            self.ncc._synced = True
        return self

    def compute(
        self, head: torch.Tensor | None = None, *, zero_entropy: SampleZeroEntropy | None = None,
    ) -> dict[str, float]:
        """All the measures (keys in the module doc); the state is unchanged. ``ValueError`` when fewer than 2
        classes have samples.

        Args:
            head: ``(C, d)`` head rows for NC3 and the class-level MIR/HDR (default: the one given at
                construction, which the sample-level measures always use).
            zero_entropy: override the sample-level ``zero_entropy`` mode.
        """
        mode = check_zero_entropy(self.zero_entropy if zero_entropy is None else zero_entropy)
        w_full = self.head if head is None else _head_and_bias(head, None, self.num_classes, self.dim, self.device)[0]
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
    check_matrix(features, "features", (None, None))
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
    check_class_labels(labels, n, num_classes)

    def feed(target: NeuralCollapseAccumulator | NearestCenterAgreement) -> None:
        for rows in _chunks(n, chunk_size):
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
