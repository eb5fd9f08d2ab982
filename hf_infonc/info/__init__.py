"""Matrix-information core: pure torch, no transformers.

>>> from hf_infonc.info import matrix_entropy, matrix_mutual_information, mir, hdr

Everything here works on features ``(..., n, d)`` (samples as rows) or on Gram matrices
(``is_gram=True``), returns tensors, is differentiable, and never modifies its inputs.
"""

from hf_infonc.info.collapse import (
    entropy_at_collapse,
    hdr_at_collapse,
    joint_entropy_at_collapse,
    mir_at_collapse,
    mutual_information_at_collapse,
    simplex_etf,
)
from hf_infonc.info.entropy import EIGENVALUE_FLOOR, matrix_entropy
from hf_infonc.info.gram import cosine_gram, normalize_rows
from hf_infonc.info.mutual import entropy_terms, hdr, matrix_mutual_information, mir
from hf_infonc.info.stream import (
    NearestCenterAgreement,
    NeuralCollapseAccumulator,
    batched_mir_hdr,
    neural_collapse_measures,
)

__all__ = [
    "EIGENVALUE_FLOOR",
    "NearestCenterAgreement",
    "NeuralCollapseAccumulator",
    "batched_mir_hdr",
    "neural_collapse_measures",
    "cosine_gram",
    "entropy_at_collapse",
    "entropy_terms",
    "hdr",
    "hdr_at_collapse",
    "joint_entropy_at_collapse",
    "matrix_entropy",
    "matrix_mutual_information",
    "mir",
    "mir_at_collapse",
    "mutual_information_at_collapse",
    "normalize_rows",
    "simplex_etf",
]
