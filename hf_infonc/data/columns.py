"""The standard columns that every data source returns (others are dropped): ``image``
(``datasets.Image(mode="RGB")``) or ``text`` (``str``); ``caption`` (``str``, image-caption pairs only); ``label``
(``ClassLabel`` with human-readable names, used in CLIP prompts; optional for image-caption data; -1: unlabelled).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from datasets import ClassLabel, Dataset, DatasetDict, Image, Value

from hf_infonc.errors import DataError

STANDARD_COLUMNS = ("image", "text", "caption", "label")
"""The columns every source returns (``image`` or ``text``; ``caption`` and ``label`` optional)."""
_IMAGE_CANDIDATES = ("image", "img", "picture", "photo")
_TEXT_CANDIDATES = ("text", "sentence", "review", "content", "document")
_CAPTION_CANDIDATES = ("caption", "text", "sentence")
_LABEL_CANDIDATES = ("label", "labels", "fine_label", "target", "class")


def _pick(columns: Sequence[str], explicit: str | None, candidates: Sequence[str], what: str, source: str):
    if explicit is None:
        return next((c for c in candidates if c in columns), None)
    if explicit not in columns:
        close = difflib.get_close_matches(explicit, columns, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise DataError(
            f"Source '{source}' has no {what} column {explicit!r}; its columns are {list(columns)}.{hint} "
            f"Set data.{what}_column to one of them."
        )
    return explicit


def _more(items: Sequence[Any], shown: int, more: str = "...") -> str:
    return f"{list(items)[:shown]}{more if len(items) > shown else ''}"


def rename_classes(ds: Dataset, names: Sequence[str], source: str) -> Dataset:
    """``ds`` with the names of its ``ClassLabel`` column ``label`` replaced by ``names`` (same number)."""
    feature = ds.features.get("label")
    if not isinstance(feature, ClassLabel) or list(feature.names) == list(names):
        return ds
    if feature.num_classes != len(names):
        raise DataError(
            f"data.class_names has {len(names)} names, but source '{source}' has {feature.num_classes} classes "
            f"({_more(feature.names, 10)}). Give exactly one name per class, in label order."
        )
    return ds.cast_column("label", ClassLabel(names=list(names)))


def _label_values(dd: DatasetDict) -> set[Any]:
    return {v for ds in dd.values() for v in ds.unique("label") if v is not None}


def _relabel(ds: Dataset, names: list[str], convert: Callable[[Any], int], desc: str) -> Dataset:
    """``ds`` with its labels mapped by ``convert`` (a missing one to -1), typed ``ClassLabel(names)``."""
    features = ds.features.copy()
    features["label"] = ClassLabel(names=names)

    def relabel(batch: dict[str, list[Any]]) -> dict[str, list[int]]:
        return {"label": [-1 if v is None else convert(v) for v in batch["label"]]}

    return ds.map(relabel, batched=True, features=features, desc=desc)


def _standardize_labels(dd: DatasetDict, class_names: Sequence[str] | None, source: str) -> DatasetDict:
    feature = next(iter(dd.values())).features["label"]
    if isinstance(feature, ClassLabel):
        if class_names is None:
            return dd
        return DatasetDict({split: rename_classes(ds, class_names, source) for split, ds in dd.items()})

    dtype = getattr(feature, "dtype", None)
    if dtype in ("string", "large_string"):
        values = _label_values(dd)
        if class_names is not None:
            missing = sorted(values - set(class_names))
            if missing:
                raise DataError(
                    f"Source '{source}': the label values {missing[:10]} are not in data.class_names "
                    f"{list(class_names)}. For string labels, class_names must list every label value (it fixes "
                    f"the label order); omit it to use the sorted label values."
                )
        names = list(class_names) if class_names is not None else sorted(values)
        index = {name: i for i, name in enumerate(names)}
        return DatasetDict(
            {split: _relabel(ds, names, index.__getitem__, f"Encoding labels of {split}") for split, ds in dd.items()}
        )
    if dtype is None or not dtype.startswith(("int", "uint", "float")):
        raise DataError(
            f"Source '{source}': the label column has type {feature}; expected integer class indices, "
            f"strings or a ClassLabel. Convert the labels (e.g. to 0..C-1 integers) or choose another "
            f"column with data.label_column."
        )
    values = _label_values(dd)
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
    gaps = sorted(set(range(maximum + 1)) - set(present))
    if class_names is not None and len(class_names) <= maximum:
        raise DataError(
            f"Source '{source}' has labels up to {maximum} ({maximum + 1} classes), but only "
            f"{len(class_names)} class names were given in data.class_names; give one name per class."
        )
    if class_names is None and gaps:
        # Refused rather than guessed: keeping the values would invent classes without examples (C, the CLIP head
        # and the collapse references would be wrong); renumbering would silently change what an index means.
        raise DataError(
            f"Source '{source}': the integer labels are {_more(present, 12, ' ...')}, not 0..C-1: class index(es) "
            f"{_more(gaps, 10, ' ...')} have no example, so they would make {maximum + 1} classes. Renumber the "
            f"labels 0..{len(present) - 1}, or list all {maximum + 1} classes in data.class_names (one name per "
            f"index; classes without examples are then intended)."
        )
    names = list(class_names) if class_names is not None else [str(i) for i in range(maximum + 1)]
    out = {}
    for split, ds in dd.items():
        if dtype.startswith("float") or ds.data.column("label").null_count:
            out[split] = _relabel(ds, names, int, f"Reading labels of {split}")
        else:
            out[split] = ds.cast_column("label", ClassLabel(names=names))
    return DatasetDict(out)


def _require_values(ds: Dataset, column: str, original: str, split: str, source: str) -> Dataset:
    """Refuse rows without a value in ``column`` (naming them); give numbers in a text column as strings."""
    missing = ds.data.column(column).null_count
    if missing:
        rows = [i for i, v in enumerate(ds[column]) if v is None]
        raise DataError(
            f"Source '{source}': split '{split}' has {missing} row(s) without a {column} (column {original!r}): rows "
            f"{_more(rows, 8, ' ...')} (0-based, in file order). Fill them in or remove those rows."
        )
    if ds.features[column] not in (Value("string"), Value("large_string")):
        ds = ds.cast_column(column, Value("string"))
    return ds


def _resolve_image_paths(ds: Dataset, base_dir: Path) -> Dataset:
    def absolute(batch):
        keep = [p is None or os.path.isabs(p) or os.path.exists(p) for p in batch["image"]]
        return {"image": [p if kept else str(base_dir / p) for p, kept in zip(batch["image"], keep)]}

    return ds.map(absolute, batched=True, desc="Resolving image paths")


def standardize_columns(
    data: Dataset | DatasetDict, *, image_column: str | None = None, text_column: str | None = None,
    label_column: str | None = None, caption_column: str | None = None, class_names: Sequence[str] | None = None,
    source: str = "dataset", base_dir: str | os.PathLike | None = None,
) -> DatasetDict:
    """Rename, select and type the columns of ``data`` to the standard ones (unnamed ones found among common
    names; image paths relative to ``base_dir``).

    Labels become a ``ClassLabel``: integers keep their values (names ``"0"``, ``"1"``, ... unless
    ``class_names``), strings are encoded in the order of ``class_names`` or sorted; a missing label is -1.
    :class:`DataError` for a missing text or caption, fractional or negative labels, and integer labels
    with gaps (``{0, 1, 7}``) unless ``class_names`` lists every class.
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
    caption = None if image is None else _pick(columns, caption_column, _CAPTION_CANDIDATES, "caption", source)
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

    mapping = {k: v for k, v in zip(STANDARD_COLUMNS, (image, text, caption, label)) if v}
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
    return _standardize_labels(dd, class_names, source) if "label" in mapping else dd
