"""The ``data:`` section of a recipe: the recipe loader checks keys and types from the fields, ``__post_init__``
the rest (ranges, exclusive options, prompt templates)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from hf_infonc.errors import DataError

from .prompts import DEFAULT_TEMPLATES, TEMPLATE_SETS, validate_template

#: Sources read from local files, with the option that must name the files.
LOCAL_SOURCES: dict[str, str] = {
    "imagefolder": "data_dir", "csv": "data_files", "json": "data_files", "jsonl": "data_files",
}  # fmt: skip

DataFiles = Union[str, list[str], dict[str, Union[str, list[str]]]]


def _whole(value: object, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _paths(value: object) -> bool:
    return isinstance(value, str) or (
        isinstance(value, (list, tuple)) and bool(value) and all(isinstance(f, str) for f in value)
    )


@dataclass
class DataConfig:
    """Where the data comes from and how it is split, sub-sampled and presented
    (:func:`hf_infonc.data.build_datasets` turns it into splits)."""

    source: str
    """Name of the data source: offline (``digits``, ``mnist5k``, ``fashion_mnist``, ``amazon_reviews``), a known Hub
    dataset (``cifar10``, ``cifar100``, ``stl10``, ``glue/sst2``, ``ag_news``, ``imdb``), local files (``imagefolder``,
    ``csv``, ``json``, ``jsonl``), or any other Hub dataset id (``owner/name``), read with the ``*_column`` options."""
    config_name: str | None = None
    """Configuration (subset) of a Hub dataset, ``name=`` of ``load_dataset``; known sources set their own."""
    train_split: str = "train"
    """Split of the source used for training."""
    eval_split: str | None = None
    """Split used as ``test``. ``None``: the source's (``validation`` for GLUE), else a held-out ``test_size``."""
    test_size: float = 0.2
    """Fraction of ``train_split`` held out as ``test`` when the source has no evaluation split (stratified, seed 0)."""
    validation_size: float | None = None
    """Fraction (0 < v < 1) of the training split held out as ``validation`` (stratified, ``seed``), before few-shot."""
    image_column: str | None = None
    """Column holding the images. ``None``: the source's default (``image`` or ``img``)."""
    text_column: str | None = None
    """Column holding the texts. ``None``: the source's default (``text``, ``sentence``, ...)."""
    label_column: str | None = None
    """Column holding the class labels (integers, ``ClassLabel`` or strings). ``None``: the source's default."""
    caption_column: str | None = None
    """Column holding captions of image-caption pairs. ``None``: ``caption`` when present."""
    class_names: list[str] | None = None
    """Class names in label-index order, replacing the source's (in CLIP prompts); fixes the order of string labels."""
    shots: int | None = None
    """Few-shot: keep exactly this many training examples per class (seeded, stratified)."""
    max_train_samples: int | None = None
    """Cap on the number of training examples, applied after few-shot sampling (stratified, seeded)."""
    max_eval_samples: int | None = None
    """Cap on the number of test (and validation) examples (stratified, seeded)."""
    seed: int = 0
    """Seed for the validation hold-out, few-shot sampling and sub-sampling."""
    prompt_templates: list[str] | str = field(default_factory=lambda: list(DEFAULT_TEMPLATES))
    """CLIP prompt templates, each with one ``{}`` (or ``{c}``) placeholder for the class name, or a template set:
    ``default``, ``openai_imagenet`` (CLIP's 80), ``simple_imagenet`` (its 7-template subset), ``mnist``."""
    image_size: int | None = None
    """Side of the square model input in pixels. ``None``: from the model's preprocessing."""
    augment: bool = True
    """Random resized crops (and flips, see ``hflip``) on training images."""
    hflip: bool | None = None
    """Random horizontal flips when augmenting. ``None``: the source's default (off for digits, on for photos)."""
    max_length: int = 128
    """Maximum number of tokens of a text (Hugging Face tokenizers; open_clip's use the model's context length)."""
    data_dir: str | None = None
    """Folder of ``imagefolder`` (``<data_dir>/[<split>/]<class>/<image>``), or of the ``fashion_mnist`` IDX files."""
    data_files: DataFiles | None = None
    """Files of a ``csv``/``json``/``jsonl`` source: a path, a list, or split → path(s) (``{train: a.csv, ...}``)."""

    def __post_init__(self) -> None:
        if not isinstance(self.source, str) or not self.source.strip():
            raise DataError(
                f"data.source must be a non-empty string naming a data source, got "
                f"{self.source!r}. Use e.g. 'digits', 'cifar10', 'imagefolder' or a Hub id."
            )
        self.source = self.source.strip()
        key = self.source.lower()
        needed = LOCAL_SOURCES.get(key)
        if needed is not None and getattr(self, needed) is None:
            suffix = "jsonl" if key in ("json", "jsonl") else "csv"
            example = "data_dir: path/to/images" if needed == "data_dir" else f"data_files: path/to/file.{suffix}"
            raise DataError(
                f"data.source '{self.source}' reads local files, so data.{needed} is required but "
                f"was not set. Add it to the recipe, e.g. `{example}`."
            )
        files = self.data_files
        if files is not None and not (
            bool(files) and all(isinstance(k, str) and _paths(v) for k, v in files.items())
            if isinstance(files, dict)
            else _paths(files)
        ):
            raise DataError(
                f"data.data_files must be a path, a non-empty list of paths, or a mapping from split name "
                f"to path(s), got {files!r}. Example: data_files: {{train: train.csv, test: test.csv}}."
            )
        for name in ("test_size", "validation_size"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) < 1.0:
                raise DataError(
                    f"data.{name} must be a fraction strictly between 0 and 1, got {value!r}. "
                    f"Use e.g. {name}: 0.1 for a 10% hold-out"
                    + (" (or omit it for no validation split)." if name == "validation_size" else ".")
                )
            setattr(self, name, float(value))
        for name in ("shots", "max_train_samples", "max_eval_samples", "image_size"):
            value = getattr(self, name)
            if value is not None and not _whole(value, 1):
                raise DataError(
                    f"data.{name} must be a positive integer or null, got {value!r}. "
                    f"Remove it from the recipe for no limit, or give a whole number >= 1."
                )
        if not _whole(self.max_length, 1):
            raise DataError(f"data.max_length must be a positive integer (tokens), got {self.max_length!r}.")
        if not _whole(self.seed, 0):
            raise DataError(f"data.seed must be a non-negative integer, got {self.seed!r}.")
        if self.eval_split is not None and self.eval_split == self.train_split:
            raise DataError(
                f"data.eval_split and data.train_split are both '{self.train_split}': the model would be "
                f"evaluated on its own training data. Pick another eval_split, or omit it to use the "
                f"source's test split (or a held-out fraction, data.test_size)."
            )
        if self.image_column is not None and self.text_column is not None:
            raise DataError(
                f"data.image_column ({self.image_column!r}) and data.text_column ({self.text_column!r}) are "
                f"both set, but a dataset is either image or text classification. For image-caption "
                f"pairs set image_column and caption_column instead."
            )
        names = self.class_names
        if names is not None:
            if not isinstance(names, (list, tuple)) or len(names) == 0:
                raise DataError(
                    f"data.class_names must be a non-empty list of strings, got {names!r}. "
                    f"Example: class_names: [cat, dog]."
                )
            bad = [n for n in names if not isinstance(n, str) or not n.strip()]
            if bad:
                raise DataError(f"data.class_names must hold non-empty strings; these are not: {bad!r}.")
            dupes = sorted({n for n in names if list(names).count(n) > 1})
            if dupes:
                raise DataError(f"data.class_names must be unique; repeated: {dupes!r}.")
            self.class_names = list(names)
        templates = self.prompt_templates
        if isinstance(templates, str):
            if templates not in TEMPLATE_SETS:
                raise DataError(
                    f"data.prompt_templates names an unknown template set {templates!r}. Known sets: "
                    f"{sorted(TEMPLATE_SETS)}; or give a list of templates such as ['a photo of a {{}}.']."
                )
        elif not isinstance(templates, (list, tuple)) or len(templates) == 0:
            raise DataError(
                f"data.prompt_templates must be a non-empty list of templates or a template-set name, got "
                f"{templates!r}. Example: prompt_templates: ['a photo of a {{}}.']."
            )
        else:
            for template in templates:
                validate_template(template, where="data.prompt_templates")
            self.prompt_templates = list(templates)
