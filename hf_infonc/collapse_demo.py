"""``hf-infonc collapse``: the closed-form values at neural collapse next to measured ones.

For each C it measures H, MI, MIR and HDR between sample features and the head rows of their
labels (docs/theory.md §2.2) for three kinds of features:

* ``collapsed``: every sample equals its class's simplex-ETF head row (balanced, shuffled);
* ``collapsed + noise``: the same plus isotropic noise of norm 0.3;
* ``random``: isotropic Gaussian features (docs/theory.md §3: MIR is already high at initialisation).
"""

from __future__ import annotations

import torch

from hf_infonc.info import entropy_at_collapse, entropy_terms, hdr, mir, mir_at_collapse, simplex_etf


def collapse_rows(num_classes: int, *, per_class: int = 8, dim: int = 128, noise: float = 0.0,
                  seed: int = 0) -> dict[str, float]:
    """Measured values for one configuration (float64)."""
    generator = torch.Generator().manual_seed(seed)
    head = simplex_etf(num_classes, dim, generator=generator)
    labels = torch.arange(num_classes).repeat(per_class)[torch.randperm(num_classes * per_class, generator=generator)]
    if noise < 0:  # random isotropic features
        features = torch.randn(labels.shape[0], dim, generator=generator, dtype=torch.float64)
    else:
        # ``noise`` is the expected norm of the perturbation relative to the unit-norm rows
        perturbation = torch.randn(labels.shape[0], dim, generator=generator, dtype=torch.float64) / dim**0.5
        features = head[labels] + noise * perturbation
    terms = entropy_terms(features, head[labels])
    return {
        "H(features)": float(terms.h_a),
        "MI": float(terms.mutual_information),
        "MIR": float(mir(features, head[labels])),
        "HDR": float(hdr(features, head[labels])),
    }


def print_collapse_table(classes: list[int], *, seed: int = 0) -> None:
    header = f"{'C':>4}  {'features':<18} {'H':>9} {'MI':>9} {'MIR':>9} {'HDR':>9}"
    print("Matrix information at neural collapse (docs/theory.md §3; Theorem 4.2 of arXiv 2406.03999)")
    print(header)
    print("-" * len(header))
    for c in classes:
        entropy, mir_value = float(entropy_at_collapse(c)), float(mir_at_collapse(c))
        print(f"{c:>4}  {'closed form':<18} {entropy:>9.6f} {'':>9} {mir_value:>9.6f} {0.0:>9.6f}")
        for label, noise in (("collapsed", 0.0), ("collapsed + noise", 0.3), ("random", -1.0)):
            row = collapse_rows(c, noise=noise, seed=seed)
            values = " ".join(f"{row[key]:>9.6f}" for key in ("H(features)", "MI", "MIR", "HDR"))
            print(f"{'':>4}  {label:<18} {values}")
