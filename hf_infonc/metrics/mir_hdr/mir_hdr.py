"""Sample-level MIR and HDR between the features and the head rows of their labels, averaged over batches
(docs/theory.md §2 item 2; arXiv 2409.16767 §3, 2406.03999 §4): :func:`hf_infonc.info.stream.batched_mir_hdr` as
an ``evaluate`` module, ``load_metric("mir_hdr")``.
"""

import evaluate
from hf_infonc.citation import EXPLORING
from hf_infonc.info import batched_mir_hdr
from hf_infonc.metrics import as_matrix, metric_info, own_compute_kwargs, read_inputs

_DESCRIPTION = """
Matrix mutual-information ratio (MIR) and entropy difference ratio (HDR) between the cosine Gram
of the features and the cosine Gram of each sample's classifier-head row (picked by its label or
pseudo-label), averaged over consecutive batches in the order the samples were added.
The head (C x d classifier rows, or the normalised text embeddings of the class prompts for CLIP)
is given to compute(head=...).
"""

_KWARGS_DESCRIPTION = """
Args:
    features (`list` of `list` of `float`): one feature vector per sample (the classifier input).
    references (`list` of `int`): the label (or pseudo-label) of each sample, in 0..C-1.
    head (array-like, C x d_head): the classifier rows; required.
    batch_size (`int` or `None`, defaults to 64): batch size of the average; `None` makes the whole set
        one batch (n x n Grams, computed through the smaller dual matrices), with the same keys.
    zero_entropy (`str`, defaults to "skip"): batches whose ratio is 0/0 (e.g. one class only)
        are left out of the average ("skip"), make it NaN ("nan"), or count as 0 ("zero").
        With batch_size=None there is one ratio, and "skip" acts as "nan".
    drop_last (`bool`, defaults to `False`): drop the last, smaller batch.

Returns:
    mir, hdr (`float`): batch averages, in [0, 1].
    mi, feature_entropy, head_entropy (`float`): batch averages of MI, H(K₁), H(K₂) (nats).
    num_batches, mir_undefined_batches, hdr_undefined_batches (`int`).

Examples:
    >>> from hf_infonc.info import simplex_etf
    >>> from hf_infonc.metrics import load_metric
    >>> w = simplex_etf(4, 4)
    >>> labels = [i % 4 for i in range(64)]
    >>> out = load_metric("mir_hdr").compute(features=w[labels].tolist(), references=labels, head=w)
    >>> round(out["mir"], 6), round(out["hdr"], 6)  # values at neural collapse, C = 4
    (0.753953, 0.0)
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MirHdr(evaluate.Metric):
    def _info(self):
        urls = ["https://arxiv.org/abs/2409.16767", "https://arxiv.org/abs/2406.03999"]
        return metric_info("mir_hdr", _DESCRIPTION, _KWARGS_DESCRIPTION, EXPLORING, urls)

    def _compute(self, features, references, **kwargs):
        options = own_compute_kwargs("mir_hdr", kwargs)
        if options.get("head") is None:
            raise ValueError("mir_hdr needs the classifier head: compute(..., head=<C x d array of head rows>).")
        head = as_matrix(options["head"], "head")
        x, y = read_inputs("mir_hdr", features, references)
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= head.shape[0]):
            raise ValueError(
                f"references must be class indices in 0..{head.shape[0] - 1} (head has {head.shape[0]} rows), "
                f"but values in [{int(y.min())}, {int(y.max())}] were found."
            )
        rows = head[y]
        batch_size = options.get("batch_size", 64)
        if batch_size is None:  # the whole set as one batch: the same keys, one ratio ("skip" acts as "nan")
            batch_size = max(int(x.shape[0]), 1)
        return batched_mir_hdr(
            x, rows, batch_size=batch_size, zero_entropy=options.get("zero_entropy", "skip"),
            drop_last=options.get("drop_last", False),
        )
