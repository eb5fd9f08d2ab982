"""NC1 to NC4 with the class- and sample-level MIR/HDR (Papyan, Han & Donoho 2020; docs/theory.md §5):
:func:`hf_infonc.info.stream.neural_collapse_measures` as an ``evaluate`` module, ``load_metric("neural_collapse")``.
"""

import evaluate
import torch
from hf_infonc.citation import NEURAL_COLLAPSE
from hf_infonc.info import neural_collapse_measures
from hf_infonc.metrics import as_matrix, metric_info, own_compute_kwargs, read_inputs

_DESCRIPTION = """
Neural-collapse measures of a labelled feature set: NC1 = tr(Σ_W Σ_B⁺)/C (pseudo-inverse at rank
C-1); NC2 = ‖MMᵀ/‖MMᵀ‖_F - E/‖E‖_F‖_F with E = I - 11ᵀ/C (distance of the centred class-mean Gram
from the simplex ETF) and its equinorm/equiangular parts; with a head: NC3 = ‖W/‖W‖_F - M/‖M‖_F‖_F,
NC4 (rate at which argmax(W h + b), or argmax of the given logits, disagrees with the nearest
class mean), the class-level H/MI/MIR/HDR of G(W) against G(M), and the batch-averaged
sample-level MIR/HDR of G(features) against G(W[labels]). Classes with no sample are left out
(num_absent_classes says how many).
"""

_KWARGS_DESCRIPTION = """
Args:
    features (`list` of `list` of `float`): one feature vector per sample (the classifier input).
    references (`list` of `int`): class indices in 0..C-1.
    num_classes (`int`, optional): C; defaults to the head's rows, else max(references) + 1.
    head (array-like C x d, optional): classifier rows (NC3, NC4, MIR/HDR).
    bias (array-like C, optional): classifier bias (for the predictions of NC4).
    logits (array-like n x C, optional): the classifier's logits, in the order the samples were
        added; used instead of the head for the predictions of NC4 and classifier_accuracy.
    sample_batch_size (`int`, defaults to 64), zero_entropy ("skip"/"nan"/"zero"), drop_last:
        the sample-level MIR/HDR batches (see hf_infonc.info.stream).
    global_mean ("class" or "sample", defaults to "class"): how the class means are centred.

Returns:
    nc1, nc2, nc2_equinorm, nc2_equiangular, within_class_variance, num_samples, num_classes,
    num_present_classes, num_absent_classes; with a head also nc3, head_entropy,
    class_mean_entropy, class_mi, class_mir, class_hdr, sample_mir, sample_hdr, sample_mi,
    sample_feature_entropy, sample_head_entropy, sample_num_batches,
    sample_mir_undefined_batches, sample_hdr_undefined_batches; with a head or logits also nc4,
    nc4_num_samples, ncc_accuracy, classifier_accuracy.

Examples:
    >>> from hf_infonc.info import simplex_etf
    >>> from hf_infonc.metrics import load_metric
    >>> w = simplex_etf(4, 4)
    >>> labels = [i % 4 for i in range(64)]
    >>> out = load_metric("neural_collapse").compute(features=w[labels].tolist(), references=labels, head=w)
    >>> round(out["nc1"], 6), round(out["nc2"], 6), out["nc4"]
    (0.0, 0.0, 0.0)
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class NeuralCollapse(evaluate.Metric):
    def _info(self):
        urls = ["https://doi.org/10.1073/pnas.2015509117", "https://arxiv.org/abs/2409.16767"]
        return metric_info("neural_collapse", _DESCRIPTION, _KWARGS_DESCRIPTION, NEURAL_COLLAPSE, urls)

    def _compute(self, features, references, **kwargs):
        options = own_compute_kwargs("neural_collapse", kwargs)
        x, y = read_inputs("neural_collapse", features, references)
        for key in ("head", "logits"):
            if options.get(key) is not None:
                options[key] = as_matrix(options[key], key, rows=x.shape[0] if key == "logits" else None)
        if options.get("bias") is not None:
            options["bias"] = torch.as_tensor(options["bias"], dtype=torch.float64).reshape(-1)
        return neural_collapse_measures(x, y, **options)
