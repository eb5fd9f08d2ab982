"""What the checkpoint analyses share after measuring: a progress bar, the JSON document and a row of plots."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from hf_infonc.files import json_text, write_atomic

#: A panel: its title, the series ``(key, label)`` of the results, and ``(value, label)`` reference lines.
Panel = tuple[str, list[tuple[str, str]], list[tuple[Any, str]]]


def finite(value: Any) -> bool:
    """A real number that is neither NaN nor infinite."""
    return isinstance(value, (int, float)) and math.isfinite(value)


def progress_bar(values: Iterable[Any], description: str, enabled: bool) -> Iterable[Any]:
    """``values`` behind a tqdm progress bar when ``enabled``."""
    if not enabled:
        return values
    from tqdm.auto import tqdm

    return tqdm(values, desc=description)


def save_document(out: Path, name: str, document: dict[str, Any], plot: Callable[[dict, Path], Path] | None) -> None:
    """Write ``out/<name>.json`` and, with a ``plot`` function, ``out/<name>.png``."""
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / f"{name}.json", json_text(document))
    if plot is not None:
        plot(document, out / f"{name}.png")


def plot_panels(path: str | Path, title: str, xlabel: str, xs: list[float], results: list[dict[str, Any]],
                panels: list[Panel]) -> Path:
    """One row of panels against ``xs``: the finite values of each series and dashed reference lines."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(13, 3.6), layout="constrained")
    FigureCanvasAgg(figure)
    for ax, (panel_title, series, references) in zip(figure.subplots(1, len(panels)), panels):
        for key, label in series:
            pairs = [(x, r.get(key)) for x, r in zip(xs, results) if finite(r.get(key))]
            if pairs:
                ax.plot(*zip(*pairs), marker="o", markersize=3, label=label)
        for value, label in references:
            if finite(value):
                ax.axhline(value, linestyle="--", color="gray", linewidth=1, label=label)
        ax.set_title(panel_title)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    figure.suptitle(title, fontsize=9)
    path = Path(path)
    figure.savefig(path, dpi=110)
    return path
