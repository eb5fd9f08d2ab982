"""Seeded, stratified selection of examples (k-shot sampling, size caps, hold-outs); every result keeps the
dataset's row order (the Trainer shuffles at training time)."""

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
    """Keep exactly ``shots`` examples of every class (of the ``ClassLabel``, else every label present), drawn
    with ``seed``; unlabelled ones (-1) are dropped. For one seed the draws are nested (1-shot ⊂ 2-shot ⊂ ...).
    A :class:`DataError` (a ``ValueError``) names a class with too few examples."""
    if isinstance(shots, bool) or not isinstance(shots, int) or shots < 1:
        raise ValueError(f"shots must be a positive integer (examples per class), got {shots!r}.")
    labels = label_array(ds, label_column)
    feature = ds.features.get(label_column)
    named = isinstance(feature, ClassLabel)
    classes = np.arange(feature.num_classes) if named else np.unique(labels[labels >= 0])
    if len(classes) == 0:
        raise DataError("Few-shot sampling needs labelled examples, but the dataset has none.")

    rng = np.random.default_rng(seed)
    chosen: list[np.ndarray] = []
    for label in classes:
        members = np.flatnonzero(labels == label)
        if len(members) < shots:
            name = f"{label} ({feature.names[label]!r})" if named else str(label)
            raise DataError(
                f"Few-shot sampling of {shots} examples per class is impossible: class "
                f"{name} has only {len(members)} example(s) in this split "
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
    order = np.lexsort((np.arange(len(counts)), -(quotas - allocation)))
    allocation[order[: total - int(allocation.sum())]] += 1
    allocation = np.minimum(allocation, counts)
    draws = zip(values, allocation)
    return np.concatenate([rng.permutation(np.flatnonzero(labels == v))[:k] for v, k in draws if k or not skip_empty])


def subsample(
    ds: Dataset, max_samples: int | None, seed: int = 0, *, stratify: bool = True, label_column: str = "label"
) -> Dataset:
    """At most ``max_samples`` examples (``None``: all), drawn with ``seed``; with ``stratify`` (and a label
    column) each class keeps a share proportional to its size (largest-remainder rounding)."""
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
    """Split ``ds`` into ``(rest, held_out)`` with ``ceil(fraction * len(ds))`` rows held out, drawn with ``seed``,
    stratified by a ``ClassLabel`` ``label_column`` (largest-remainder shares). Numpy on the label column:
    ``Dataset.train_test_split(stratify_by_column=...)`` takes about a minute on 60,000 images."""
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
    return ds.select(np.setdiff1d(np.arange(n), held)), ds.select(np.sort(held))
