"""Recipe-driven datasets: a :class:`DataConfig` → :func:`build_datasets` (sources, standard columns, splits,
few-shot); prompts, transforms, augmentations and collators turn the rows into model inputs."""

from .augment import TextViews, strong_image_transform, view_transforms_from, weak_image_transform
from .build import build_datasets, build_image_transform, class_names, resolve_hflip
from .collate import (
    ImageCaptionCollator, ImageClassificationCollator, TextClassificationCollator, is_hf_tokenizer, tokenize_texts,
)
from .columns import STANDARD_COLUMNS, standardize_columns
from .config import DataConfig
from .fewshot import class_counts, holdout_split, label_array, sample_few_shot, subsample
from .prompts import (
    CIFAR10_CLASSNAMES, CIFAR100_CLASSNAMES, DEFAULT_TEMPLATES, FASHION_MNIST_CLASSNAMES, STL10_CLASSNAMES,
    TEMPLATE_SETS, format_prompts, get_templates, imagenet_classnames, validate_template,
)
from .sources import (
    DatasetUnavailableError, SourceInfo, available_sources, check_image_files, check_local_files, get_source,
    load_hub_dataset, load_source, register_source,
)
from .transforms import image_transform, image_transform_from_hf, image_transform_from_open_clip

__all__ = [
    "CIFAR10_CLASSNAMES", "CIFAR100_CLASSNAMES", "DEFAULT_TEMPLATES", "FASHION_MNIST_CLASSNAMES",
    "STANDARD_COLUMNS", "STL10_CLASSNAMES", "TEMPLATE_SETS", "DataConfig", "DatasetUnavailableError",
    "ImageCaptionCollator", "ImageClassificationCollator", "SourceInfo", "TextClassificationCollator", "TextViews",
    "available_sources", "build_datasets", "build_image_transform", "check_image_files", "check_local_files",
    "class_counts", "class_names", "format_prompts", "get_source", "get_templates", "holdout_split",
    "image_transform", "image_transform_from_hf", "image_transform_from_open_clip", "imagenet_classnames",
    "is_hf_tokenizer", "label_array", "load_hub_dataset", "load_source", "register_source", "resolve_hflip",
    "sample_few_shot", "standardize_columns", "strong_image_transform", "subsample",
    "tokenize_texts", "validate_template", "view_transforms_from", "weak_image_transform",
]
