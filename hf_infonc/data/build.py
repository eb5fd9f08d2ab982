"""From a :class:`DataConfig` to the datasets and the image transforms of a run."""

from __future__ import annotations

import logging
from typing import Any

from datasets import ClassLabel, Dataset, DatasetDict

from hf_infonc.errors import DataError

from .columns import rename_classes
from .config import DataConfig
from .fewshot import class_counts, holdout_split, label_array, sample_few_shot, subsample
from .sources import get_source, load_source
from .transforms import image_transform, image_transform_from_hf, image_transform_from_open_clip

logger = logging.getLogger(__name__)


def class_names(data: Dataset | DatasetDict, label_column: str = "label") -> list[str]:
    """The ``ClassLabel`` names of a dataset (or of the first split of a ``DatasetDict``)."""
    ds = next(iter(data.values())) if isinstance(data, DatasetDict) else data
    feature = ds.features.get(label_column)
    if not isinstance(feature, ClassLabel):
        raise DataError(
            f"Column {label_column!r} is not a ClassLabel (it is {feature!r}); build the data with "
            f"hf_infonc.data.build_datasets to get class names."
        )
    return list(feature.names)


def resolve_hflip(cfg: DataConfig) -> bool:
    """Whether training images are randomly flipped: ``cfg.hflip``, else the source's default."""
    return bool(cfg.hflip) if cfg.hflip is not None else get_source(cfg.source).hflip


def build_image_transform(cfg: DataConfig, preprocessing: Any = None, *, train: bool):
    """The image transform for ``cfg`` following ``preprocessing``: a ``transformers`` (image) processor, an
    open_clip model / preprocess dict / ``PreprocessCfg``, or ``None`` (``cfg.image_size``, CLIP's mean and std)."""
    options = dict(train=train, augment=cfg.augment, hflip=resolve_hflip(cfg))
    if preprocessing is None:
        if cfg.image_size is None:
            raise DataError(
                "No model preprocessing was given and data.image_size is not set: set image_size in the recipe, "
                "or pass the model's image processor / open_clip model."
            )
        return image_transform(cfg.image_size, **options)
    if type(preprocessing).__module__.startswith("transformers."):
        # An image processor, or a processor (e.g. CLIPProcessor) that holds one.
        processor = getattr(preprocessing, "image_processor", preprocessing)
        return image_transform_from_hf(processor, image_size=cfg.image_size, **options)
    return image_transform_from_open_clip(preprocessing, image_size=cfg.image_size, **options)


def _describe(split: str, ds: Dataset) -> str:
    if "label" not in ds.column_names:
        return f"{split}: {len(ds)} examples (no labels)"
    counts = class_counts(ds)
    shown = ", ".join(f"{k}={v}" for k, v in list(counts.items())[:12]) + (", ..." if len(counts) > 12 else "")
    low, high = min(counts.values(), default=0), max(counts.values(), default=0)
    return f"{split}: {len(ds)} examples, {len(counts)} classes (per class min {low}, max {high}; {shown})"


def build_datasets(cfg: DataConfig) -> DatasetDict:
    """The ``train`` / ``test`` (/ ``validation``) splits of ``cfg``, with the standard columns.

    Order: load the source (holding out ``test_size`` of train, seed 0, when it has no test split) →
    class names → ``validation`` hold-out → few-shot → size caps (all seeded by ``cfg.seed``). Raises
    :class:`~hf_infonc.data.sources.DatasetUnavailableError` (a Hub dataset offline) or
    :class:`~hf_infonc.errors.DataError` (data that cannot be used).
    """
    if not isinstance(cfg, DataConfig):
        raise TypeError(f"build_datasets expects a DataConfig, got {type(cfg).__name__}.")
    loaded = load_source(cfg)
    eval_split = cfg.eval_split or get_source(cfg.source).eval_split
    train, test = loaded[cfg.train_split], loaded[eval_split]
    if cfg.class_names is not None:
        train, test = (rename_classes(ds, cfg.class_names, cfg.source) for ds in (train, test))

    if "label" in test.column_names and (label_array(test) < 0).any():
        raise DataError(
            f"The evaluation split '{eval_split}' of source '{cfg.source}' has unlabelled examples (examples "
            f"without a label: a missing label, or -1), so it cannot be used for evaluation (GLUE test labels, for "
            f"instance, are hidden). Label or remove them, or set data.eval_split to a labelled split such as "
            f"'validation'."
        )
    if "label" in train.column_names and (unlabelled := int((label_array(train) < 0).sum())):
        logger.warning("Split '%s' has %d unlabelled examples (label -1).", cfg.train_split, unlabelled)

    held: dict[str, Dataset] = {}
    if cfg.validation_size is not None:
        train, held["validation"] = holdout_split(train, cfg.validation_size, seed=cfg.seed)
    if cfg.shots is not None:
        if "label" not in train.column_names:
            raise DataError(f"data.shots needs labels, but source '{cfg.source}' has none (captions only).")
        train = sample_few_shot(train, cfg.shots, seed=cfg.seed)
    splits = {"train": subsample(train, cfg.max_train_samples, seed=cfg.seed)}
    for split, ds in {**held, "test": test}.items():
        splits[split] = subsample(ds, cfg.max_eval_samples, seed=cfg.seed)

    empty = [split for split, ds in splits.items() if len(ds) == 0]
    if empty:
        raise DataError(
            f"Source '{cfg.source}': the split(s) {empty} are empty. Check the data files and data.*_split."
        )
    built = DatasetDict(splits)
    logger.info("Data source '%s' (seed %d):", cfg.source, cfg.seed)
    for split, ds in built.items():
        logger.info("  %s", _describe(split, ds))
    return built
