"""Matrix-information core: pure torch, no transformers.

Everything here works on features ``(..., n, d)`` (samples as rows) or on Gram matrices
(``is_gram=True``), returns tensors, is differentiable, never modifies its inputs, does not depend
on the scale of the inputs, and clamps reported measures to their ranges (docs/theory.md §6).
:mod:`~hf_infonc.info.spectral` and :mod:`~hf_infonc.info.fused` compute the same entropies for the
losses, without validation, with closed-form gradients; all share :mod:`hf_infonc.info._kernels`.
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
from hf_infonc.info.gram import cosine_gram, normalize_rows, unit_rows
from hf_infonc.info.mutual import entropy_terms, hdr, matrix_mutual_information, mir
from hf_infonc.info.spectral import cosine_gram_entropy_terms, group_entropies, information_entropies
from hf_infonc.info.stream import (
    NearestCenterAgreement,
    NeuralCollapseAccumulator,
    batched_mir_hdr,
    neural_collapse_measures,
)

__all__ = [
    "EIGENVALUE_FLOOR", "NearestCenterAgreement", "NeuralCollapseAccumulator", "batched_mir_hdr", "cosine_gram",
    "cosine_gram_entropy_terms", "entropy_at_collapse", "entropy_terms", "group_entropies", "hdr", "hdr_at_collapse",
    "information_entropies", "joint_entropy_at_collapse", "matrix_entropy", "matrix_mutual_information", "mir",
    "mir_at_collapse", "mutual_information_at_collapse", "neural_collapse_measures", "normalize_rows", "simplex_etf",
    "unit_rows",
]
