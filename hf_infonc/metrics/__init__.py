"""``evaluate`` modules shipped with hf_infonc, loadable offline (docs/metrics.md, "``evaluate`` modules").

``load_metric(name)`` is ``evaluate.load(metric_path(name))`` of ``hf_infonc/metrics/<name>/<name>.py``; the maths is
in :mod:`hf_infonc.info`. ``evaluate.combine`` passes every ``compute`` keyword argument to every module, so each
ignores its siblings' (:data:`SHARED_COMPUTE_KWARGS`) and rejects any other with a ``TypeError``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:  # evaluate is imported lazily: importing hf_infonc.metrics stays cheap
    import evaluate

#: Each module's inputs (``add_batch``: ``features`` are float vectors, the others ints) and its
#: ``compute`` keyword arguments.
INPUTS: dict[str, tuple[str, ...]] = {
    "accuracy": ("predictions", "references"),
    "matrix_entropy": ("features",),
    "mir_hdr": ("features", "references"),
    "neural_collapse": ("features", "references"),
}
COMPUTE_KWARGS: dict[str, frozenset[str]] = {
    "accuracy": frozenset({"normalize", "sample_weight"}),
    "matrix_entropy": frozenset({"alpha", "center", "batch_size"}),
    "mir_hdr": frozenset({"head", "batch_size", "zero_entropy", "drop_last"}),
    "neural_collapse": frozenset(
        {"num_classes", "head", "bias", "logits", "sample_batch_size", "zero_entropy", "global_mean", "drop_last"}
    ),
}
METRIC_NAMES: tuple[str, ...] = tuple(INPUTS)

#: Every ``compute`` keyword argument understood by one of the modules, and the input name
#: (``features``) that ``evaluate.combine(...).compute(features=...)`` hands to all modules.
SHARED_COMPUTE_KWARGS: frozenset[str] = frozenset({"features"}).union(*COMPUTE_KWARGS.values())


def metric_path(name: str) -> str:
    """Folder of the packaged module ``name`` (what ``evaluate.load`` takes)."""
    if name not in METRIC_NAMES:
        raise ValueError(f"unknown hf_infonc metric {name!r}; available: {', '.join(METRIC_NAMES)}.")
    path = Path(__file__).resolve().parent / name
    if not (path / f"{name}.py").is_file():
        raise FileNotFoundError(f"the module file {path / (name + '.py')} is missing from the installed package.")
    return str(path)


def load_metric(name: str, **kwargs: Any) -> "evaluate.EvaluationModule":
    """``evaluate.load`` of a packaged hf_infonc module by name, offline; other keyword arguments
    (``experiment_id``, ``num_process``, ``process_id``, ...) go to ``evaluate.load``."""
    import evaluate

    return evaluate.load(metric_path(name), **kwargs)


def metric_info(name: str, description: str, inputs_description: str, citation: str, urls: list[str]):
    """The ``evaluate.MetricInfo`` of module ``name``: ``features`` are float vectors, other inputs ints."""
    import datasets
    import evaluate

    float_vector, integer = datasets.List(datasets.Value("float64")), datasets.Value("int64")
    features = datasets.Features({key: float_vector if key == "features" else integer for key in INPUTS[name]})
    return evaluate.MetricInfo(description=description, citation=citation, inputs_description=inputs_description,
                               features=features, reference_urls=urls)


def own_compute_kwargs(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The ``compute`` keyword arguments of module ``name``: siblings' ones are dropped, unknown ones raise."""
    accepted = COMPUTE_KWARGS[name]
    unknown = sorted(k for k in kwargs if k not in SHARED_COMPUTE_KWARGS)
    if unknown:
        raise TypeError(
            f"{name}: unknown compute() argument(s) {unknown}; it accepts {sorted(accepted)} "
            f"(arguments of the other hf_infonc metrics are ignored so that evaluate.combine works)."
        )
    return {k: v for k, v in kwargs.items() if k in accepted}


def as_matrix(values: Any, name: str, *, rows: int | None = None) -> torch.Tensor:
    """Stored vectors (list of lists, numpy array, object array of arrays, tensor) as a float64 ``(n, d)`` tensor."""
    if isinstance(values, torch.Tensor):
        out = values.detach().to(torch.float64)
    else:
        try:
            array = np.asarray(values)
            if array.dtype == object:
                array = np.stack([np.asarray(v, dtype=np.float64) for v in array]) if len(array) else array
            out = torch.as_tensor(np.asarray(array, dtype=np.float64))
        except (ValueError, TypeError) as err:
            raise ValueError(f"`{name}` must be vectors of one common length (a (n, d) array): {err}") from err
    if out.dim() == 1 and out.numel() == 0:
        out = out.reshape(0, 0)
    if out.dim() != 2:
        raise ValueError(f"`{name}` must be a (n, d) array of vectors, got shape {tuple(out.shape)}.")
    if rows is not None and out.shape[0] != rows:
        raise ValueError(f"`{name}` has {out.shape[0]} rows but {rows} samples were added; they must match.")
    return out


def read_inputs(name: str, features: Any, references: Any = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The stored ``features`` as a float64 ``(n, d)`` tensor (refused when empty) and the
    ``references`` as int64 labels (None when not given)."""
    x = as_matrix(features, "features")
    if x.shape[0] == 0:
        raise ValueError(f"{name} of an empty set is undefined: add features first.")
    if references is None:
        return x, None
    return x, torch.as_tensor(np.asarray(references, dtype=np.int64)).reshape(-1)


__all__ = [
    "COMPUTE_KWARGS", "INPUTS", "METRIC_NAMES", "SHARED_COMPUTE_KWARGS", "as_matrix", "load_metric", "metric_info",
    "metric_path", "own_compute_kwargs", "read_inputs",
]
