"""Values at neural collapse (docs/theory.md §3, Theorem 4.2 of arXiv 2406.03999) and the simplex ETF."""

from __future__ import annotations

import math

import pytest
import torch

from hf_infonc.info import (
    cosine_gram,
    entropy_at_collapse,
    hdr,
    hdr_at_collapse,
    joint_entropy_at_collapse,
    matrix_entropy,
    matrix_mutual_information,
    mir,
    mir_at_collapse,
    mutual_information_at_collapse,
    simplex_etf,
)

F64 = torch.float64

pytestmark = pytest.mark.usefixtures("single_blas_thread")


# docs/theory.md §3 table: C -> (H at collapse, MIR at collapse)
SPEC_TABLE = {
    3: (0.693147, 0.500000),
    4: (1.098612, 0.753953),
    10: (2.197225, 0.952351),
    100: (4.595120, 0.997813),
    113: (4.718499, 0.998116),
}
MEASURED_C = [3, 4, 10, 100]


def theorem_mir(c: int) -> float:
    """MIR = 1/(C-1) + (C-2)·log(C-2) / ((C-1)·log(C-1)), written out here independently."""
    tail = 0.0 if c == 3 else (c - 2) * math.log(c - 2) / ((c - 1) * math.log(c - 1))
    return 1.0 / (c - 1) + tail


def balanced_samples(c: int, per_class: int, seed: int, dim: int | None = None) -> torch.Tensor:
    """n = C·per_class samples, each equal to its class's ETF row, in a shuffled order."""
    rotation = torch.Generator().manual_seed(seed + 1000) if dim is not None else None
    frame = simplex_etf(c, dim, generator=rotation)
    labels = torch.arange(c).repeat(per_class)
    labels = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))]
    return frame[labels]


# ---------------------------------------------------------------------------------------------
# Closed forms against the spec
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("c", list(SPEC_TABLE))
def test_closed_forms_match_spec_table(c: int) -> None:
    h, mir_value = SPEC_TABLE[c]
    assert float(entropy_at_collapse(c)) == pytest.approx(h, abs=1e-6)
    assert float(mir_at_collapse(c)) == pytest.approx(mir_value, abs=1e-6)
    assert float(mir_at_collapse(c)) == pytest.approx(theorem_mir(c), abs=1e-12)
    assert float(hdr_at_collapse(c)) == 0.0
    # MIR = MI / H at collapse (both entropies equal log(C-1))
    assert float(mutual_information_at_collapse(c) / entropy_at_collapse(c)) == pytest.approx(theorem_mir(c), abs=1e-12)
    for value in (entropy_at_collapse(c), mir_at_collapse(c), joint_entropy_at_collapse(c)):
        assert isinstance(value, torch.Tensor) and value.dtype == F64 and value.dim() == 0


def test_c10_joint_entropy_and_mutual_information_closed_forms() -> None:
    assert float(joint_entropy_at_collapse(10)) == pytest.approx(2.301921, abs=1e-6)
    assert float(mutual_information_at_collapse(10)) == pytest.approx(2.092529, abs=1e-6)


def test_c2_values() -> None:
    assert float(entropy_at_collapse(2)) == 0.0
    with pytest.warns(RuntimeWarning, match="0/0"):
        assert math.isnan(float(mir_at_collapse(2)))
    with pytest.warns(RuntimeWarning, match="0/0"):
        assert math.isnan(float(hdr_at_collapse(2)))
    frame = simplex_etf(2)
    assert abs(float(matrix_entropy(frame))) < 1e-12
    with pytest.warns(RuntimeWarning, match="MIR"):
        assert math.isnan(float(mir(frame, frame)))
    assert float(mir(frame, frame, zero_entropy="zero")) == 0.0


# ---------------------------------------------------------------------------------------------
# Measured values: C x C Grams of the simplex ETF
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("c", MEASURED_C)
@pytest.mark.parametrize("embedded", [False, True])
def test_measured_on_class_grams(c: int, embedded: bool) -> None:
    h, mir_value = SPEC_TABLE[c]
    frame = simplex_etf(c, c + 3, generator=torch.Generator().manual_seed(c)) if embedded else simplex_etf(c)
    gram = cosine_gram(frame)
    routes = [{"route": r} for r in ("gram", "dual", "auto")]
    for inputs, kwargs in [((gram, gram), {"is_gram": True})] + [((frame, frame), k) for k in routes]:
        x = inputs[0]
        h_measured = float(matrix_entropy(x, **kwargs))
        mir_measured = float(mir(*inputs, **kwargs))
        assert h_measured == pytest.approx(h, abs=1e-6), kwargs
        assert mir_measured == pytest.approx(mir_value, abs=1e-6), kwargs
        # the closed forms equal the measured values (beyond the 6 printed digits)
        assert h_measured == pytest.approx(float(entropy_at_collapse(c)), abs=1e-9), kwargs
        assert mir_measured == pytest.approx(float(mir_at_collapse(c)), abs=1e-9), kwargs
        assert float(matrix_mutual_information(*inputs, **kwargs)) == pytest.approx(
            float(mutual_information_at_collapse(c)), abs=1e-9
        ), kwargs
        assert abs(float(hdr(*inputs, **kwargs))) < 1e-9, kwargs


# ---------------------------------------------------------------------------------------------
# Measured values: balanced n x n sample Grams
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("c", MEASURED_C)
def test_measured_on_balanced_sample_grams(c: int) -> None:
    h, mir_value = SPEC_TABLE[c]
    features = balanced_samples(c, per_class=3, seed=c)  # C-1 columns: dual routes everywhere
    head_rows = balanced_samples(c, per_class=3, seed=c, dim=2 * c)  # same labels, rotated frame
    assert torch.allclose(cosine_gram(features), cosine_gram(head_rows), atol=1e-12)
    cases = [((features, head_rows), {"route": r}) for r in ("gram", "dual", "auto")]
    cases.append(((cosine_gram(features), cosine_gram(head_rows)), {"is_gram": True}))
    for (a, b), kwargs in cases:
        h_measured = float(matrix_entropy(a, **kwargs))
        mir_measured = float(mir(a, b, **kwargs))
        assert h_measured == pytest.approx(h, abs=1e-6), kwargs
        assert float(matrix_entropy(b, **kwargs)) == pytest.approx(h, abs=1e-6), kwargs
        assert mir_measured == pytest.approx(mir_value, abs=1e-6), kwargs
        assert h_measured == pytest.approx(float(entropy_at_collapse(c)), abs=1e-9), kwargs
        assert mir_measured == pytest.approx(float(mir_at_collapse(c)), abs=1e-9), kwargs
        assert float(matrix_mutual_information(a, b, **kwargs)) == pytest.approx(
            float(mutual_information_at_collapse(c)), abs=1e-9
        ), kwargs
        assert abs(float(hdr(a, b, **kwargs))) < 1e-9, kwargs


def test_c10_sample_level_joint_entropy() -> None:
    features = balanced_samples(10, per_class=4, seed=1)
    gram = cosine_gram(features)
    assert float(matrix_entropy(gram * gram, is_gram=True)) == pytest.approx(2.301921, abs=1e-6)
    assert float(matrix_mutual_information(features, features)) == pytest.approx(2.092529, abs=1e-6)


def test_collapse_is_invariant_to_feature_scale_per_sample() -> None:
    # collapse is about directions: per-sample norms do not change the values
    features = balanced_samples(10, per_class=3, seed=2)
    scales = torch.rand(len(features), 1, generator=torch.Generator().manual_seed(3), dtype=F64) * 10 + 0.1
    assert float(mir(features * scales, features)) == pytest.approx(SPEC_TABLE[10][1], abs=1e-6)


def test_random_batches_at_collapse_and_at_random_initialisation() -> None:
    # docs/theory.md §3: an unbalanced random batch at perfect collapse (C=10, B=64) gives
    # MIR ≈ 0.955 ± 0.002 and H ≈ 2.133 ± 0.03; random features against random head rows
    # (d=128, C=10, B=64) give MIR ≈ 0.90 and HDR ≈ 0.44. Means over 100 batches.
    g = torch.Generator().manual_seed(0)
    frame = simplex_etf(10, 128, generator=g)
    labels = torch.randint(0, 10, (100, 64), generator=g)
    batch = frame[labels]  # (100, 64, 128)
    assert float(mir(batch, batch).mean()) == pytest.approx(0.955, abs=0.002)
    assert float(matrix_entropy(batch).mean()) == pytest.approx(2.133, abs=0.01)
    heads = torch.randn(100, 10, 128, generator=g, dtype=F64)
    head_rows = torch.gather(heads, 1, labels.unsqueeze(-1).expand(-1, -1, 128))
    features = torch.randn(100, 64, 128, generator=g, dtype=F64)
    assert float(mir(features, head_rows).mean()) == pytest.approx(0.90, abs=0.005)
    assert float(hdr(features, head_rows).mean()) == pytest.approx(0.44, abs=0.005)


# ---------------------------------------------------------------------------------------------
# simplex_etf
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("c", [2, 3, 4, 10, 100])
@pytest.mark.parametrize("dim", [None, "C-1", "2C"])
@pytest.mark.parametrize("with_generator", [False, True])
def test_simplex_etf_geometry(c: int, dim: str | None, with_generator: bool) -> None:
    d = {None: None, "C-1": c - 1, "2C": 2 * c}[dim]
    generator = torch.Generator().manual_seed(5) if with_generator else None
    w = simplex_etf(c, d, generator=generator)
    assert w.shape == (c, c - 1 if d is None else d)
    assert w.dtype == F64
    assert torch.allclose(torch.linalg.vector_norm(w, dim=1), torch.ones(c, dtype=F64), atol=1e-12)
    cosines = w @ w.T
    expected = torch.full((c, c), -1.0 / (c - 1), dtype=F64).fill_diagonal_(1.0)
    assert torch.allclose(cosines, expected, atol=1e-12)
    # rows sum to zero (the frame is centred)
    assert torch.allclose(w.sum(dim=0), torch.zeros(w.shape[1], dtype=F64), atol=1e-12)


def test_simplex_etf_generator_rotates_reproducibly() -> None:
    a = simplex_etf(5, 12, generator=torch.Generator().manual_seed(1))
    b = simplex_etf(5, 12, generator=torch.Generator().manual_seed(1))
    c = simplex_etf(5, 12, generator=torch.Generator().manual_seed(2))
    plain = simplex_etf(5, 12)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert torch.count_nonzero(plain[:, 4:]) == 0  # without a generator: first C-1 coordinates
    assert torch.count_nonzero(a[:, 4:]) > 0


def test_simplex_etf_dtype() -> None:
    w = simplex_etf(4, 6, dtype=torch.float32)
    assert w.dtype == torch.float32
    assert torch.allclose(w @ w.T, torch.full((4, 4), -1 / 3).fill_diagonal_(1.0), atol=1e-6)


def test_simplex_etf_errors() -> None:
    with pytest.raises(ValueError, match=r"dim ≥ 9"):
        simplex_etf(10, 8)
    with pytest.raises(ValueError, match="at least 2 classes"):
        simplex_etf(1)
    with pytest.raises(TypeError, match="num_classes"):
        simplex_etf(3.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="num_classes"):
        simplex_etf(True)  # type: ignore[arg-type]
    for fn in (entropy_at_collapse, mir_at_collapse, hdr_at_collapse, joint_entropy_at_collapse,
               mutual_information_at_collapse):
        with pytest.raises(ValueError, match="at least 2 classes"):
            fn(1)
