"""``compute_metrics`` for the Trainer: accuracy joined with the information measures.

The Trainer's evaluation loop gathers the predictions of all processes; ``InfoNCTrainer``
returns ``(logits, features)`` as predictions. :func:`build_compute_metrics` turns them, with the
current head rows from the adapter, into:

* ``accuracy``;
* ``mir``/``hdr``: the paper's sample-level measures, ``MIR/HDR(G(features), G(W[labels]))``
  averaged over consecutive batches of 64 test samples (SPEC §2.2);
* ``class_mir``/``class_hdr``, ``head_entropy``, ``class_mean_entropy``: the class-mean Gram
  against the head Gram (SPEC §2.1);
* ``nc1`` … ``nc4`` (Papyan, Han & Donoho 2020), from one streaming pass
  (:func:`hf_infonc.info.stream.neural_collapse_measures`).

All of it is computed in float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from hf_infonc.info.stream import neural_collapse_measures

#: Keys copied from the neural-collapse measures into the evaluation metrics (renamed).
REPORTED = {
    "sample_mir": "mir",
    "sample_hdr": "hdr",
    "sample_feature_entropy": "feature_entropy",
    "class_mir": "class_mir",
    "class_hdr": "class_hdr",
    "head_entropy": "head_entropy",
    "class_mean_entropy": "class_mean_entropy",
    "nc1": "nc1",
    "nc2": "nc2",
    "nc3": "nc3",
    "nc4": "nc4",
}


def split_predictions(predictions: Any) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``(logits, features)`` from what the evaluation loop gathered (a tuple, or logits alone)."""
    if isinstance(predictions, (tuple, list)):
        logits = predictions[0] if len(predictions) > 0 else None
        features = predictions[1] if len(predictions) > 1 else None
        return logits, features
    return predictions, None


def information_metrics(
    logits: np.ndarray | torch.Tensor | None,
    features: np.ndarray | torch.Tensor | None,
    labels: np.ndarray | torch.Tensor,
    head: torch.Tensor | None,
    *,
    sample_batch_size: int = 64,
) -> dict[str, float]:
    """Accuracy and the information / neural-collapse measures of one evaluation set."""
    labels_t = torch.as_tensor(np.asarray(labels)).long()
    metrics: dict[str, float] = {}
    logits_t = None if logits is None else torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    if logits_t is not None:
        metrics["accuracy"] = float((logits_t.argmax(dim=-1) == labels_t).double().mean())
    if features is None or head is None:
        return metrics
    features_t = torch.as_tensor(np.asarray(features), dtype=torch.float64)
    head_t = head.detach().to("cpu", torch.float64)
    if int(labels_t.min()) < 0 or int(labels_t.max()) >= head_t.shape[0] or labels_t.unique().numel() < 2:
        return metrics  # unlabelled examples or a single class: the measures are undefined
    measures = neural_collapse_measures(
        features_t, labels_t, head=head_t, logits=logits_t, sample_batch_size=sample_batch_size
    )
    for key, name in REPORTED.items():
        value = measures.get(key)
        if value is not None:
            metrics[name] = float(value) if not (isinstance(value, float) and math.isnan(value)) else math.nan
    return metrics


def build_compute_metrics(trainer: Any, *, sample_batch_size: int = 64) -> Callable[[Any], dict[str, float]]:
    """A ``compute_metrics(EvalPrediction)`` bound to ``trainer`` (for its adapter's current head).

    Usage::

        trainer = InfoNCTrainer(...)
        trainer.compute_metrics = build_compute_metrics(trainer)
    """

    def compute_metrics(prediction: Any) -> dict[str, float]:
        logits, features = split_predictions(prediction.predictions)
        model = trainer.accelerator.unwrap_model(trainer.model)
        with torch.no_grad():
            head = trainer.adapter.head_rows(model)
        return information_metrics(logits, features, prediction.label_ids, head, sample_batch_size=sample_batch_size)

    return compute_metrics
