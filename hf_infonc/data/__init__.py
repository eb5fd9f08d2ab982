"""Recipe-driven datasets: sources, splits, few-shot sampling, prompts, transforms, collators.

A recipe's ``data:`` section becomes a :class:`DataConfig`; :func:`build_datasets` turns it into
a ``datasets.DatasetDict`` with the splits ``train`` and ``test`` (and ``validation`` when
``validation_size`` is set) and the standard columns:

==========  ==========================================  ==========================
column      type                                        present
==========  ==========================================  ==========================
``image``   ``datasets.Image(mode="RGB")`` → RGB PIL     image data
``text``    ``str``                                     text data (never with image)
``caption`` ``str``                                     image-caption pairs
``label``   ``datasets.ClassLabel``; ``.names`` are       always, except caption-only
            the human-readable class names              data
==========  ==========================================  ==========================

Order of operations: load the source (holding out ``test_size`` of train, seed 0, when it
has no test split) → class-name override → ``validation`` hold-out (``validation_size``,
``seed``) → few-shot on train (``shots``, ``seed``) → size caps (``max_train_samples``,
``max_eval_samples``, ``seed``).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict

from hf_infonc.errors import DataError

from .augment import TextViews, strong_image_transform, view_transforms_from, weak_image_transform
from .collate import (
    ImageCaptionCollator,
    ImageClassificationCollator,
    TextClassificationCollator,
    is_hf_tokenizer,
    tokenize_texts,
)
from .config import DataConfig
from .fewshot import class_counts, holdout_split, label_array, sample_few_shot, subsample
from .prompts import (
    CIFAR10_CLASSNAMES,
    CIFAR100_CLASSNAMES,
    DEFAULT_TEMPLATES,
    FASHION_MNIST_CLASSNAMES,
    STL10_CLASSNAMES,
    TEMPLATE_SETS,
    format_prompts,
    get_templates,
    imagenet_classnames,
    validate_template,
)
from .sources import (
    DatasetUnavailableError,
    SourceInfo,
    available_sources,
    check_image_files,
    check_local_files,
    get_source,
    load_hub_dataset,
    load_source,
    register_source,
    standardize_columns,
)
from .transforms import image_transform, image_transform_from_hf, image_transform_from_open_clip

__all__ = [
    "CIFAR10_CLASSNAMES",
    "CIFAR100_CLASSNAMES",
    "DEFAULT_TEMPLATES",
    "FASHION_MNIST_CLASSNAMES",
    "STL10_CLASSNAMES",
    "TEMPLATE_SETS",
    "DataConfig",
    "DatasetUnavailableError",
    "ImageCaptionCollator",
    "ImageClassificationCollator",
    "SourceInfo",
    "TextClassificationCollator",
    "TextViews",
    "available_sources",
    "build_datasets",
    "check_image_files",
    "check_local_files",
    "build_image_transform",
    "class_counts",
    "class_names",
    "format_prompts",
    "get_source",
    "get_templates",
    "holdout_split",
    "image_transform",
    "image_transform_from_hf",
    "image_transform_from_open_clip",
    "imagenet_classnames",
    "is_hf_tokenizer",
    "label_array",
    "load_hub_dataset",
    "load_source",
    "register_source",
    "resolve_hflip",
    "sample_few_shot",
    "standardize_columns",
    "strong_image_transform",
    "subsample",
    "tokenize_texts",
    "validate_template",
    "view_transforms_from",
    "weak_image_transform",
]

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
    """The image transform for ``cfg``, following a model's preprocessing.

    ``preprocessing`` is a ``transformers`` image processor (or a processor holding one, such as
    ``CLIPProcessor``), an open_clip model / preprocess dict / ``PreprocessCfg``, or ``None`` (then ``cfg.image_size`` with CLIP's mean and std).
    ``cfg.image_size`` overrides the model's size; ``cfg.augment`` and the resolved ``hflip``
    control training augmentation.
    """
    kwargs = dict(train=train, augment=cfg.augment, hflip=resolve_hflip(cfg), image_size=cfg.image_size)
    if preprocessing is None:
        if cfg.image_size is None:
            raise DataError(
                "No model preprocessing was given and data.image_size is not set: set image_size in the recipe, "
                "or pass the model's image processor / open_clip model."
            )
        return image_transform(cfg.image_size, train=train, augment=cfg.augment, hflip=resolve_hflip(cfg))
    if type(preprocessing).__module__.startswith("transformers."):
        # An image processor, or a processor (e.g. CLIPProcessor) that holds one.
        return image_transform_from_hf(getattr(preprocessing, "image_processor", preprocessing), **kwargs)
    return image_transform_from_open_clip(preprocessing, **kwargs)


def _rename_classes(ds: Dataset, names: list[str], source: str) -> Dataset:
    feature = ds.features.get("label")
    if not isinstance(feature, ClassLabel):
        return ds
    if list(feature.names) == names:
        return ds
    if feature.num_classes != len(names):
        raise DataError(
            f"data.class_names has {len(names)} names, but source '{source}' has {feature.num_classes} classes "
            f"({feature.names[:10]}{'...' if feature.num_classes > 10 else ''}). Give exactly one name per class, "
            f"in label order."
        )
    return ds.cast_column("label", ClassLabel(names=names))


def _describe(split: str, ds: Dataset) -> str:
    if "label" not in ds.column_names:
        return f"{split}: {len(ds)} examples (no labels)"
    counts = class_counts(ds)
    values = np.array(list(counts.values()))
    shown = ", ".join(f"{k}={v}" for k, v in list(counts.items())[:12]) + (", ..." if len(counts) > 12 else "")
    return (
        f"{split}: {len(ds)} examples, {len(counts)} classes "
        f"(per class min {values.min() if len(values) else 0}, max {values.max() if len(values) else 0}; {shown})"
    )


def build_datasets(cfg: DataConfig) -> DatasetDict:
    """Build the ``train`` / ``test`` (/ ``validation``) splits described by ``cfg``.

    See the module docstring for the column contract and the order of operations.
    Raises :class:`DatasetUnavailableError` when a Hub dataset is asked for offline,
    :class:`~hf_infonc.errors.DataError` (a ``ValueError``) for data that cannot be used (missing or
    empty files, unreadable images, missing texts, bad labels, a missing split, too few examples for
    ``shots``, unlabelled evaluation data, a wrong number of class names, an empty split).
    """
    if not isinstance(cfg, DataConfig):
        raise TypeError(f"build_datasets expects a DataConfig, got {type(cfg).__name__}.")
    info = get_source(cfg.source)
    loaded = load_source(cfg)
    eval_split = cfg.eval_split or info.eval_split
    train, test = loaded[cfg.train_split], loaded[eval_split]

    if cfg.class_names is not None:
        train = _rename_classes(train, cfg.class_names, cfg.source)
        test = _rename_classes(test, cfg.class_names, cfg.source)

    if "label" in test.column_names and (label_array(test) < 0).any():
        raise DataError(
            f"The evaluation split '{eval_split}' of source '{cfg.source}' has unlabelled examples (examples "
            f"without a label: a missing label, or -1), so it cannot be used for evaluation (GLUE test labels, for "
            f"instance, are hidden). Label or remove them, or set data.eval_split to a labelled split such as "
            f"'validation'."
        )
    if "label" in train.column_names:
        unlabelled = int((label_array(train) < 0).sum())
        if unlabelled:
            logger.warning("Split '%s' has %d unlabelled examples (label -1).", cfg.train_split, unlabelled)

    splits: dict[str, Dataset] = {}
    if cfg.validation_size is not None:
        train, validation = holdout_split(train, cfg.validation_size, seed=cfg.seed)
    else:
        validation = None
    if cfg.shots is not None:
        if "label" not in train.column_names:
            raise DataError(f"data.shots needs labels, but source '{cfg.source}' has none (captions only).")
        train = sample_few_shot(train, cfg.shots, seed=cfg.seed)
    train = subsample(train, cfg.max_train_samples, seed=cfg.seed)
    splits["train"] = train
    if validation is not None:
        splits["validation"] = subsample(validation, cfg.max_eval_samples, seed=cfg.seed)
    splits["test"] = subsample(test, cfg.max_eval_samples, seed=cfg.seed)

    empty = [split for split, ds in splits.items() if len(ds) == 0]
    if empty:
        raise DataError(f"Source '{cfg.source}': the split(s) {empty} are empty. Check the data files and data.*_split.")
    built = DatasetDict(splits)
    logger.info("Data source '%s' (seed %d):", cfg.source, cfg.seed)
    for split, ds in built.items():
        logger.info("  %s", _describe(split, ds))
    return built
