"""Seeded, stratified selection of examples: k-shot sampling and size caps.

Both functions return ``ds.select(indices)`` with the indices in ascending order, so the
result keeps the original order of the dataset (the Trainer shuffles at training time).
"""

from __future__ import annotations

import numpy as np
from datasets import ClassLabel, Dataset

from hf_infonc.errors import DataError


def label_array(ds: Dataset, label_column: str = "label") -> np.ndarray:
    """The labels of ``ds`` as an int64 numpy array (fast: read through Arrow, not Python)."""
    if label_column not in ds.column_names:
        raise KeyError(
            f"The dataset has no label column {label_column!r}; its columns are {ds.column_names}. "
            f"Pass label_column=<name of the column with the class labels>."
        )
    column = ds.select_columns([label_column]).with_format("arrow")[label_column]
    return np.asarray(column.to_numpy(), dtype=np.int64)


def _class_name(ds: Dataset, label_column: str, label: int) -> str:
    feature = ds.features.get(label_column)
    if isinstance(feature, ClassLabel) and 0 <= label < feature.num_classes:
        return f"{label} ({feature.names[label]!r})"
    return str(label)


def class_counts(ds: Dataset, label_column: str = "label") -> dict[str, int]:
    """Number of examples per class, keyed by class name (every ``ClassLabel`` class listed)."""
    labels = label_array(ds, label_column)
    labels = labels[labels >= 0]
    feature = ds.features.get(label_column)
    if isinstance(feature, ClassLabel):
        counts = np.bincount(labels, minlength=feature.num_classes)
        return {name: int(counts[i]) for i, name in enumerate(feature.names)}
    values, counts = np.unique(labels, return_counts=True)
    return {str(v): int(c) for v, c in zip(values, counts)}


def sample_few_shot(ds: Dataset, shots: int, seed: int = 0, label_column: str = "label") -> Dataset:
    """Keep exactly ``shots`` examples of every class, drawn at random with ``seed``.

    Every class of the ``ClassLabel`` feature must have at least ``shots`` examples (for a
    plain integer column: every label value present). Examples with label ``-1`` (unlabelled)
    are dropped. For a fixed seed the draws are nested: the 1-shot set is inside the 2-shot
    set, which is inside the 4-shot set, and so on (each class is permuted once and its first
    ``shots`` indices are kept).

    Raises ``ValueError`` naming the class that has too few examples.
    """
    if isinstance(shots, bool) or not isinstance(shots, int) or shots < 1:
        raise ValueError(f"shots must be a positive integer (examples per class), got {shots!r}.")
    labels = label_array(ds, label_column)
    feature = ds.features.get(label_column)
    if isinstance(feature, ClassLabel):
        classes = np.arange(feature.num_classes)
    else:
        classes = np.unique(labels[labels >= 0])
    if len(classes) == 0:
        raise DataError("Few-shot sampling needs labelled examples, but the dataset has none.")

    rng = np.random.default_rng(seed)
    chosen: list[np.ndarray] = []
    for label in classes:
        members = np.flatnonzero(labels == label)
        if len(members) < shots:
            raise DataError(
                f"Few-shot sampling of {shots} examples per class is impossible: class "
                f"{_class_name(ds, label_column, int(label))} has only {len(members)} example(s) in this split "
                f"of {len(ds)}. Lower `shots` to at most {len(members)}, or use a larger training split."
            )
        chosen.append(rng.permutation(members)[:shots])
    return ds.select(np.sort(np.concatenate(chosen)))


def _stratified(labels: np.ndarray, total: int, rng: np.random.Generator, skip_empty: bool) -> np.ndarray:
    """``total`` random indices, each class contributing a share proportional to its size (largest-remainder
    rounding, ties broken by class index). ``skip_empty``: draw nothing for a class that gets no share."""
    values, counts = np.unique(labels, return_counts=True)
    quotas = counts * (total / counts.sum())
    allocation = np.floor(quotas).astype(np.int64)
    remainder = total - int(allocation.sum())
    if remainder > 0:
        order = np.lexsort((np.arange(len(counts)), -(quotas - allocation)))
        allocation[order[:remainder]] += 1
    allocation = np.minimum(allocation, counts)
    draws = zip(values, allocation)
    return np.concatenate([rng.permutation(np.flatnonzero(labels == v))[:k] for v, k in draws if k or not skip_empty])


def subsample(
    ds: Dataset, max_samples: int | None, seed: int = 0, *, stratify: bool = True, label_column: str = "label"
) -> Dataset:
    """Keep at most ``max_samples`` examples, drawn with ``seed``.

    With ``stratify=True`` (and a label column) each class keeps a share proportional to its
    size (largest-remainder rounding), so class balance is preserved; otherwise a plain seeded
    draw. ``ds`` is returned unchanged when it is already small enough or ``max_samples`` is
    ``None``.
    """
    if max_samples is None or len(ds) <= max_samples:
        return ds
    if isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1:
        raise ValueError(f"max_samples must be a positive integer or None, got {max_samples!r}.")
    rng = np.random.default_rng(seed)
    if not stratify or label_column not in ds.column_names:
        return ds.select(np.sort(rng.choice(len(ds), size=max_samples, replace=False)))

    return ds.select(np.sort(_stratified(label_array(ds, label_column), max_samples, rng, skip_empty=True)))


def holdout_split(
    ds: Dataset, fraction: float, seed: int = 0, label_column: str = "label"
) -> tuple[Dataset, Dataset]:
    """Split ``ds`` into ``(rest, held_out)``, with ``ceil(fraction * len(ds))`` rows held out.

    Stratified by ``label_column`` when it is a ``ClassLabel``: each class contributes a share
    proportional to its size (largest-remainder rounding). Otherwise a plain seeded split.
    Deterministic for a given ``seed``; both parts keep the original row order. (Implemented
    with numpy on the label column: ``Dataset.train_test_split(stratify_by_column=...)`` reads
    rows one by one and takes about a minute on 60,000 images.)
    """
    if isinstance(fraction, bool) or not 0.0 < float(fraction) < 1.0:
        raise ValueError(f"The held-out fraction must be strictly between 0 and 1, got {fraction!r}.")
    n = len(ds)
    n_out = int(np.ceil(float(fraction) * n))
    if n < 2 or n_out >= n:
        raise DataError(
            f"Cannot hold out {fraction:.0%} of a split with {n} example(s) and keep some for training; "
            f"use a larger split or a smaller fraction."
        )
    rng = np.random.default_rng(seed)
    if isinstance(ds.features.get(label_column), ClassLabel):
        held = _stratified(label_array(ds, label_column), n_out, rng, skip_empty=False)
    else:
        held = rng.permutation(n)[:n_out]
    mask = np.zeros(n, dtype=bool)
    mask[held] = True
    return ds.select(np.flatnonzero(~mask)), ds.select(np.flatnonzero(mask))
