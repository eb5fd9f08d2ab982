"""``hf-infonc collapse``: the closed-form values at neural collapse next to measured ones.

For each C it measures H, MI, MIR and HDR between sample features and the head rows of their
labels (docs/theory.md §2.2) for three kinds of features:

* ``collapsed``: every sample equals its class's simplex-ETF head row (balanced, shuffled);
* ``collapsed + noise``: the same plus isotropic noise of norm 0.3;
* ``random``: isotropic Gaussian features (docs/theory.md §3: MIR is already high at initialisation).
"""

from __future__ import annotations

import torch

from hf_infonc.errors import UserError
from hf_infonc.info import entropy_at_collapse, entropy_terms, hdr, mir, mir_at_collapse, simplex_etf


def print_collapse_table(classes: list[int], *, seed: int = 0, per_class: int = 8, dim: int = 128) -> None:
    """Print, for each C, the closed-form values and those measured (float64) on ``per_class`` samples per class."""
    wrong = [c for c in classes if not 2 <= c <= dim + 1]
    if wrong:
        raise UserError(
            f"--classes {' '.join(map(str, wrong))}: each number of classes C must lie in 2..{dim + 1} (neural "
            f"collapse needs at least 2 classes, and a simplex ETF of C classes needs C - 1 ≤ {dim} feature "
            f"dimensions). E.g. --classes 3 10 100."
        )
    header = f"{'C':>4}  {'features':<18} {'H':>9} {'MI':>9} {'MIR':>9} {'HDR':>9}"
    print("Matrix information at neural collapse (docs/theory.md §3; Theorem 4.2 of arXiv 2406.03999)")
    print(header)
    print("-" * len(header))
    for c in classes:
        entropy, mir_value = float(entropy_at_collapse(c)), float(mir_at_collapse(c))
        print(f"{c:>4}  {'closed form':<18} {entropy:>9.6f} {'':>9} {mir_value:>9.6f} {0.0:>9.6f}")
        for label, noise in (("collapsed", 0.0), ("collapsed + noise", 0.3), ("random", None)):
            generator = torch.Generator().manual_seed(seed)
            head = simplex_etf(c, dim, generator=generator)
            labels = torch.arange(c).repeat(per_class)[torch.randperm(c * per_class, generator=generator)]
            # ``noise`` is the expected norm of the perturbation relative to the unit-norm rows
            sample = torch.randn(labels.shape[0], dim, generator=generator, dtype=torch.float64)
            features = sample if noise is None else head[labels] + noise * sample / dim**0.5
            terms = entropy_terms(features, head[labels])
            values = (terms.h_a, terms.mutual_information, mir(features, head[labels]), hdr(features, head[labels]))
            print(f"{'':>4}  {label:<18} " + " ".join(f"{float(value):>9.6f}" for value in values))
