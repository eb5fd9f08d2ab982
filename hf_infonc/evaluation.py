"""The information measures as ``Trainer`` metrics: accuracy, MIR/HDR, class measures, NC1–NC4.

``add_information_metrics(trainer)`` adds them to any ``transformers.Trainer`` (docs/metrics.md, "The measures in
any ``Trainer``"): in float64, in one streaming pass (:func:`hf_infonc.info.stream.neural_collapse_measures`) over
the evaluation set's features (from a hook on the model, or ``InfoNCTrainer``'s adapter), labels and head rows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from transformers import EvalPrediction, TrainerCallback
from transformers.utils import logging

from hf_infonc.adapters.base import FeatureCapture, adapter_for
from hf_infonc.callbacks import InfoDynamicsCallback
from hf_infonc.info.stream import neural_collapse_measures

Array = np.ndarray | torch.Tensor
logger = logging.get_logger(__name__)

#: Keys copied from the neural-collapse measures into the evaluation metrics (renamed).
REPORTED = {
    **{f"sample_{name}": name for name in ("mir", "hdr", "feature_entropy")},
    **{name: name for name in ("class_mir", "class_hdr", "head_entropy", "class_mean_entropy")},
    **{f"nc{i}": f"nc{i}" for i in range(1, 5)},
}


def information_metrics(
    logits: Array | None, features: Array | None, labels: Array, head: torch.Tensor | None, *,
    sample_batch_size: int = 64,
) -> dict[str, float]:
    """Accuracy and the information / neural-collapse measures of one evaluation set, over the rows whose
    label is a class (negative labels, such as the -100 that ``Trainer``'s losses ignore, are left out).
    Where the measures cannot be computed, accuracy alone, with a warning (once per reason)."""
    labels_t = torch.as_tensor(np.asarray(labels)).long()
    logits_t = None if logits is None else torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    labelled = labels_t >= 0
    if not bool(labelled.all()):
        labels_t, logits_t = labels_t[labelled], None if logits_t is None else logits_t[labelled]
    metrics = {}
    if logits_t is not None and labels_t.numel():
        metrics["accuracy"] = float((logits_t.argmax(dim=-1) == labels_t).double().mean())
    if features is None or head is None:
        _cannot("no features were captured" if features is None else "the model has no classifier head to compare")
        return metrics
    features_t = torch.as_tensor(np.asarray(features), dtype=torch.float64)
    head_t = head.detach().to("cpu", torch.float64)
    if labelled.dim() != 1 or labelled.shape[0] != features_t.shape[0]:
        _cannot(f"the labels (shape {tuple(labelled.shape)}) are not one class per feature row "
                f"({features_t.shape[0]} rows)")
        return metrics
    if labels_t.numel() and int(labels_t.max()) >= head_t.shape[0]:
        _cannot(f"labels reach {int(labels_t.max())} but the head has {head_t.shape[0]} classes")
        return metrics
    if labels_t.unique().numel() < 2:
        _cannot("fewer than two classes are present among the labelled rows")
        return metrics
    measures = neural_collapse_measures(
        features_t[labelled], labels_t, head=head_t, logits=logits_t, sample_batch_size=sample_batch_size
    )
    metrics.update({name: float(measures[key]) for key, name in REPORTED.items() if measures.get(key) is not None})
    return metrics


def _cannot(reason: str) -> None:
    logger.warning_once(f"The information and neural-collapse measures are not computed for this evaluation: {reason}.")


class InformationMetrics(TrainerCallback):
    """``compute_metrics`` and ``preprocess_logits_for_metrics`` that add the information measures (built by
    :func:`add_information_metrics`), wrapping the trainer's own (whose metrics win on a name clash). After an
    evaluation, ``features`` holds its gathered features (CPU; half precision as float32); as a callback, it
    leaves no features over after an evaluation or prediction that computed no metrics."""

    def __init__(self, trainer: Any, *, sample_batch_size: int = 64) -> None:
        model = trainer.accelerator.unwrap_model(trainer.model)
        self.trainer = trainer
        self.adapter = getattr(trainer, "adapter", None) or adapter_for(model)
        self.sample_batch_size = sample_batch_size
        self.user_compute_metrics: Callable | None = trainer.compute_metrics
        self.user_preprocess: Callable | None = trainer.preprocess_logits_for_metrics
        self.capture = getattr(trainer, "feature_capture", None)  # InfoNCTrainer fills it from its adapter
        self.hook = None
        if self.capture is None:  # a plain Trainer: hook the model's own forward
            self.capture = FeatureCapture()
            self.hook = self.adapter.capture_features(model, self.capture)
        self._batches: list[torch.Tensor] = []
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []  # (logits, labels) with batch_eval_metrics
        self.features: torch.Tensor | None = None

    def preprocess_logits_for_metrics(self, logits: Any, labels: Any) -> Any:
        """Keep this batch's features (gathered like the logits), then the wrapped preprocessing."""
        features = self.capture.take()
        if features is not None:
            gathered = self.trainer.accelerator.gather_for_metrics(features.contiguous()).detach().cpu()
            self._batches.append(gathered.float() if gathered.dtype in (torch.float16, torch.bfloat16) else gathered)
        return logits if self.user_preprocess is None else self.user_preprocess(logits, labels)

    def discard(self) -> None:
        """Forget the features of an evaluation that computed no metrics."""
        self._batches.clear()
        self._pending.clear()
        self.capture.take()

    def on_evaluate(self, args, state, control, **kwargs):
        self.discard()

    on_predict = on_evaluate

    def __call__(self, prediction: EvalPrediction, compute_result: bool = True) -> dict[str, float]:
        batched = self.trainer.args.batch_eval_metrics  # one batch per call: collect them until the last
        user: dict[str, float] = {}
        if self.user_compute_metrics is not None:
            user = dict(self.user_compute_metrics(prediction, compute_result=compute_result) if batched
                        else self.user_compute_metrics(prediction))
        logits, labels = prediction.predictions, prediction.label_ids
        while isinstance(logits, (tuple, list)):  # models that also return hidden states: logits first
            logits = logits[0]
        if batched:
            self._pending.append((torch.as_tensor(logits).detach().cpu(), torch.as_tensor(labels).detach().cpu()))
            if not compute_result:
                return user
            logits, labels = (torch.cat(parts) for parts in zip(*self._pending))
            self._pending.clear()
        self.features = torch.cat(self._batches) if self._batches else None
        self._batches.clear()
        model = self.trainer.accelerator.unwrap_model(self.trainer.model)
        with torch.no_grad():
            head = self.adapter.head_rows(model)
        ours = information_metrics(logits, self.features, labels, head, sample_batch_size=self.sample_batch_size)
        return {**ours, **user}


def add_information_metrics(
    trainer: Any, *, plots: bool = True, output_dir: str | None = None, sample_batch_size: int = 64
) -> InformationMetrics:
    """Add accuracy, MIR/HDR, the class measures and NC1–NC4 to every evaluation of ``trainer`` (a plain ``Trainer``
    or :class:`~hf_infonc.InfoNCTrainer`); with ``plots``, an :class:`~hf_infonc.callbacks.InfoDynamicsCallback`
    writes its JSON and plots into ``output_dir`` (default ``args.output_dir``). Returns the
    :class:`InformationMetrics` (also ``trainer.compute_metrics``)."""
    if isinstance(trainer.compute_metrics, InformationMetrics):
        return trainer.compute_metrics
    metrics = InformationMetrics(trainer, sample_batch_size=sample_batch_size)
    trainer.compute_metrics = metrics
    trainer.preprocess_logits_for_metrics = metrics.preprocess_logits_for_metrics
    trainer.add_callback(metrics)
    if plots:
        trainer.add_callback(InfoDynamicsCallback(output_dir=output_dir))
    return metrics
