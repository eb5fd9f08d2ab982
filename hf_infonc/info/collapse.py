"""The simplex equiangular tight frame and the closed-form values at neural collapse (docs/theory.md §3).

At collapse the Gram of the C head rows (and of the centred class means) is ``G = (C/(C-1)) (I - 11ᵀ/C)``;
Theorem 4.2 of arXiv 2406.03999 gives ``H(G) = log(C-1)``, ``HDR = 0`` and the MIR below. The same
values hold for balanced ``n x n`` sample-level Grams.
"""

from __future__ import annotations

import math
import warnings

import torch

from hf_infonc.info.gram import check_count


def check_num_classes(num_classes: int) -> int:
    """``num_classes`` when it is an int ≥ 2 (neural collapse needs at least 2 classes)."""
    return check_count(num_classes, "num_classes", 2, " (neural collapse needs at least 2 classes)")


def simplex_etf(
    num_classes: int, dim: int | None = None, *, generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Rows of a simplex equiangular tight frame: C unit vectors with pairwise cosine ``-1/(C-1)``.

    Args:
        num_classes: C ≥ 2.
        dim: ambient dimension d ≥ C-1 (default C-1, the smallest).
        generator: when given, the frame is rotated by a random orthonormal map into ``R^d``;
            otherwise it occupies the first C-1 coordinates.

    Returns:
        ``C x d`` tensor ``W`` with ``W Wᵀ = (C/(C-1)) (I - 11ᵀ/C)``.
    """
    c = check_num_classes(num_classes)
    d = c - 1 if dim is None else dim
    if d < c - 1:
        raise ValueError(f"a simplex ETF of {c} classes needs dim ≥ {c - 1}, got dim={d}.")
    centering = torch.eye(c, dtype=torch.float64) - 1.0 / c
    basis = torch.linalg.eigh(centering).eigenvectors[:, 1:]  # the eigenvalue-0 direction (all ones) comes first
    frame = basis * math.sqrt(c / (c - 1))  # C x (C-1), rows of unit norm
    if generator is None:
        embedding = torch.eye(c - 1, d, dtype=torch.float64)
    else:
        embedding = torch.linalg.qr(torch.randn(d, c - 1, generator=generator, dtype=torch.float64)).Q.T
    return (frame @ embedding).to(dtype)


def entropy_at_collapse(num_classes: int) -> torch.Tensor:
    """``H = log(C-1)`` (nats), the matrix entropy of the simplex-ETF Gram (0 for C = 2)."""
    c = check_num_classes(num_classes)
    return torch.tensor(math.log(c - 1), dtype=torch.float64)


def joint_entropy_at_collapse(num_classes: int) -> torch.Tensor:
    """``H(G ⊙ G)`` for the simplex-ETF Gram G (2.301921 nats for C = 10): ``G ⊙ G = (1-a) I + a 11ᵀ`` with
    ``a = 1/(C-1)²`` has the trace-normalised eigenvalues ``(1-a)/C`` (C-1 times; 0 for C = 2) and ``(1-a+Ca)/C``."""
    c = check_num_classes(num_classes)
    a = 1.0 / (c - 1) ** 2
    spectrum = ((c - 1, (1.0 - a) / c), (1, (1.0 - a + c * a) / c))  # (multiplicity, eigenvalue)
    return torch.tensor(-sum(k * (p * math.log(p)) for k, p in spectrum if p > 0), dtype=torch.float64)


def _undefined_for_two_classes(what: str) -> torch.Tensor:
    """NaN with a warning: for C = 2 both entropies are 0 at collapse, so the ratio is 0/0."""
    warnings.warn(f"{what} at collapse is 0/0 for C = 2 (both entropies are 0); returning NaN.", RuntimeWarning,
                  stacklevel=3)
    return torch.tensor(float("nan"), dtype=torch.float64)


def mutual_information_at_collapse(num_classes: int) -> torch.Tensor:
    """``MI(G, G) = 2·log(C-1) - H(G ⊙ G)`` at collapse (2.092529 nats for C = 10)."""
    return 2 * entropy_at_collapse(num_classes) - joint_entropy_at_collapse(num_classes)


def mir_at_collapse(num_classes: int) -> torch.Tensor:
    """``MIR = 1/(C-1) + (C-2)·log(C-2) / ((C-1)·log(C-1))`` (Theorem 4.2 of arXiv 2406.03999).

    For C = 2 both entropies are 0 and MIR is 0/0: NaN with a warning (docs/theory.md §1 [choice]).
    """
    c = check_num_classes(num_classes)
    if c == 2:
        return _undefined_for_two_classes("MIR")
    tail = 0.0 if c == 3 else (c - 2) * math.log(c - 2) / ((c - 1) * math.log(c - 1))
    return torch.tensor(1.0 / (c - 1) + tail, dtype=torch.float64)


def hdr_at_collapse(num_classes: int) -> torch.Tensor:
    """``HDR = 0`` at collapse (features and head rows have the same Gram); NaN for C = 2."""
    if check_num_classes(num_classes) == 2:
        return _undefined_for_two_classes("HDR")
    return torch.tensor(0.0, dtype=torch.float64)
