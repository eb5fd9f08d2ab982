"""Accuracy, an offline stand-in for the Hub's ``evaluate.load("accuracy")``: ``load_metric("accuracy")``."""

import evaluate
import numpy
from hf_infonc.metrics import metric_info, own_compute_kwargs

_DESCRIPTION = """
Accuracy = (number of predictions equal to their reference) / (number of predictions).
With sample_weight, a weighted mean; with normalize=False, the (weighted) count of correct ones.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): predicted class indices.
    references (`list` of `int`): true class indices.
    normalize (`bool`, defaults to `True`): return the fraction; `False` returns the count.
    sample_weight (`list` of `float`, optional): one weight per sample.

Returns:
    accuracy (`float`): in [0, 1] when normalize=True.

Examples:
    >>> from hf_infonc.metrics import load_metric
    >>> load_metric("accuracy").compute(predictions=[0, 1, 1, 2], references=[0, 1, 2, 2])
    {'accuracy': 0.75}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Accuracy(evaluate.Metric):
    def _info(self):
        urls = ["https://github.com/huggingface/evaluate/tree/main/metrics/accuracy"]
        return metric_info("accuracy", _DESCRIPTION, _KWARGS_DESCRIPTION, "", urls)

    def _compute(self, predictions, references, **kwargs):
        options = own_compute_kwargs("accuracy", kwargs)
        predictions = numpy.asarray(predictions, dtype=numpy.int64)
        references = numpy.asarray(references, dtype=numpy.int64)  # evaluate checks that the lengths match
        if predictions.size == 0:
            raise ValueError("accuracy of an empty set is undefined: add predictions first.")
        correct = (predictions == references).astype(numpy.float64)
        weight = options.get("sample_weight")
        weight = numpy.ones_like(correct) if weight is None else numpy.asarray(weight, dtype=numpy.float64)
        if weight.shape != correct.shape:
            raise ValueError(f"sample_weight has {weight.shape[0]} entries for {correct.shape[0]} samples.")
        total = float((correct * weight).sum())
        return {"accuracy": total / float(weight.sum()) if options.get("normalize", True) else total}
