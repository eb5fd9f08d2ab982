"""Matrix entropy H(G(features)), in nats: :func:`hf_infonc.info.matrix_entropy` (docs/theory.md §1; arXiv
2406.03999 Def. 3.1) as an ``evaluate`` module, ``load_metric("matrix_entropy")``."""

import math

import evaluate
import torch
from hf_infonc.citation import UNVEILING
from hf_infonc.info import matrix_entropy
from hf_infonc.metrics import metric_info, own_compute_kwargs, read_inputs

_DESCRIPTION = """
Matrix entropy of the cosine Gram matrix G = Ẑ Ẑᵀ of the feature vectors (rows L2-normalised):
H = -Σ λᵢ log λᵢ with λᵢ the eigenvalues of G / n (von Neumann; Rényi order alpha optional).
exp(H) is the effective rank. Over the whole set by default (computed from the d x d matrix when
d < n, so n may be large); with batch_size, the mean over consecutive batches of that size, in
the order the samples were added (the last batch may be smaller).
"""

_KWARGS_DESCRIPTION = """
Args:
    features (`list` of `list` of `float`): one feature vector per sample.
    alpha (`float`, defaults to 1.0): Rényi order (1.0 = von Neumann).
    center (`bool`, defaults to `False`): subtract the mean vector before normalising.
    batch_size (`int`, optional): average the entropy over consecutive batches of this size.

Returns:
    matrix_entropy (`float`): in nats, between 0 and log(min(n, d)).
    effective_rank (`float`): exp(matrix_entropy).
    num_batches (`int`): 1, or the number of batches averaged.

Examples:
    >>> from hf_infonc.metrics import load_metric
    >>> out = load_metric("matrix_entropy").compute(features=[[1.0, 0.0], [0.0, 1.0]])
    >>> round(out["matrix_entropy"], 6)  # log 2
    0.693147
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MatrixEntropy(evaluate.Metric):
    def _info(self):
        urls = ["https://arxiv.org/abs/2406.03999", "https://arxiv.org/abs/2409.16767"]
        return metric_info("matrix_entropy", _DESCRIPTION, _KWARGS_DESCRIPTION, UNVEILING, urls)

    def _compute(self, features, **kwargs):
        options = own_compute_kwargs("matrix_entropy", kwargs)
        x, _ = read_inputs("matrix_entropy", features)
        alpha, center = options.get("alpha", 1.0), options.get("center", False)
        batch_size = options.get("batch_size")
        positive_int = isinstance(batch_size, int) and not isinstance(batch_size, bool) and batch_size >= 1
        if batch_size is not None and not positive_int:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
        values = [float(matrix_entropy(batch, alpha=alpha, center=center)) for batch in x.split(batch_size or len(x))]
        value = float(torch.tensor(values, dtype=torch.float64).mean())
        return {"matrix_entropy": value, "effective_rank": math.exp(value), "num_batches": len(values)}
