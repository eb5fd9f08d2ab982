"""Strict JSON and atomic writes, for every file hf_infonc writes (metrics, comparisons, dynamics).

Standard library only: every layer may use it.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any


def json_safe(value: Any) -> Any:
    """``value`` as strict JSON data, containers recursively: NaN and ±inf become ``None`` (``null``; bare ``NaN`` is
    not JSON and most parsers reject it), numpy/torch scalars Python numbers, paths strings."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()  # numpy / torch scalars
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return value


def json_text(value: Any) -> str:
    """The strict-JSON text of ``value`` (after :func:`json_safe`), indented, with a final newline."""
    return json.dumps(json_safe(value), indent=2, allow_nan=False) + "\n"


def write_atomic(path: str | os.PathLike, data: str | bytes | Callable[[Path], None]) -> None:
    """Write ``path`` through a temporary file in the same folder and ``os.replace``, so that a reader (or a run
    killed in the middle) never sees half of it. ``data`` is the text, the bytes, or a function that writes the
    temporary path (a plot)."""
    path = Path(path)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as stream:
            if not callable(data):
                stream.write(data.encode("utf-8") if isinstance(data, str) else data)
                stream.flush()
                os.fsync(stream.fileno())
        if callable(data):
            data(Path(temporary))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


__all__ = ["json_safe", "json_text", "write_atomic"]
