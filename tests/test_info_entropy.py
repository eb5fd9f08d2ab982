"""Matrix entropy (von Neumann and Rényi): docs/theory.md §1/§3 values, routes, invariances, references.

Every expected number here comes from docs/theory.md §3, from a closed form, or from an
independent float64 reference built with numpy + ``scipy.linalg.eigvalsh`` (tests/info_reference.py); none is
a recorded output of ``hf_infonc.info``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hf_infonc.info import cosine_gram, matrix_entropy, normalize_rows
from info_reference import ref_entropy, ref_gram, ref_spectrum

F64 = torch.float64

pytestmark = pytest.mark.usefixtures("single_blas_thread")


ROUTE_TOL = 1e-10


# ---------------------------------------------------------------------------------------------
# Independent reference (numpy / scipy, float64)
# ---------------------------------------------------------------------------------------------
def rng(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=rng(seed), dtype=F64)


def rank_deficient(n: int = 50, r: int = 3, d: int = 20, seed: int = 1) -> torch.Tensor:
    """n rows lying in an r-dimensional subspace of R^d."""
    return randn(n, r, seed=seed) @ randn(r, d, seed=seed + 100)


def duplicate_rows(seed: int = 2) -> torch.Tensor:
    base = randn(6, 9, seed=seed)
    return base[torch.randint(0, 6, (30,), generator=rng(seed))]


FEATURE_CASES = {
    "d<n": lambda: randn(40, 6, seed=3),
    "d>n": lambda: randn(12, 30, seed=4),
    "d=n": lambda: randn(15, 15, seed=5),
    "rank-deficient": rank_deficient,
    "duplicate-rows": duplicate_rows,
    "one-column": lambda: randn(10, 1, seed=6),
}


# ---------------------------------------------------------------------------------------------
# docs/theory.md §3 test vectors
# ---------------------------------------------------------------------------------------------
def etf3() -> torch.Tensor:
    return torch.full((3, 3), -0.5, dtype=F64).fill_diagonal_(1.0)


@pytest.mark.parametrize(
    ("gram", "expected"),
    [
        (torch.block_diag(torch.ones(2, 2, dtype=F64), torch.ones(2, 2, dtype=F64)), 0.693147),
        (torch.eye(4, dtype=F64), 1.386294),
        (etf3(), 0.693147),
        (torch.eye(3, dtype=F64), 1.098612),
        (torch.tensor([[1.0, 0.5], [0.5, 1.0]], dtype=F64), 0.562335),
    ],
    ids=["blockdiag", "I4", "ETF3", "I3", "half"],
)
def test_spec_test_vector_entropies(gram: torch.Tensor, expected: float) -> None:
    assert float(matrix_entropy(gram, is_gram=True)) == pytest.approx(expected, abs=1e-6)
    # the same Gram reached from features: for a positive-definite Gram, the rows of its Cholesky
    # factor L (K = L Lᵀ, unit rows) are features whose cosine Gram is exactly K
    if bool((torch.linalg.eigvalsh(gram) > 1e-12).all()):
        features = torch.linalg.cholesky(gram)
        for route in ("gram", "dual", "auto"):
            assert float(matrix_entropy(features, route=route)) == pytest.approx(expected, abs=1e-6)


def test_spec_test_vectors_from_features() -> None:
    # blockdiag(1, 1) is the Gram of rows e1, e1, e2, e2 (rank 2); I4 of the standard basis
    e = torch.eye(4, dtype=F64)
    blocks = torch.stack([e[0], e[0], 3.0 * e[1], e[1]])
    for route in ("gram", "dual", "auto"):
        assert float(matrix_entropy(blocks, route=route)) == pytest.approx(math.log(2), abs=1e-12)
        assert float(matrix_entropy(e, route=route)) == pytest.approx(math.log(4), abs=1e-12)


# ---------------------------------------------------------------------------------------------
# Routes
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", list(FEATURE_CASES))
@pytest.mark.parametrize("alpha", [1.0, 2.0, 0.5, 3.0])
@pytest.mark.parametrize("center", [False, True])
def test_routes_agree(case: str, alpha: float, center: bool) -> None:
    x = FEATURE_CASES[case]()
    values = {r: float(matrix_entropy(x, route=r, alpha=alpha, center=center)) for r in ("gram", "dual", "auto")}
    values["is_gram"] = float(matrix_entropy(cosine_gram(x, center=center), is_gram=True, alpha=alpha))
    reference = ref_entropy(ref_gram(x, center=center), alpha)
    for name, value in values.items():
        assert value == pytest.approx(reference, abs=ROUTE_TOL), name


def test_scipy_reference_random_inputs() -> None:
    for seed, (n, d) in enumerate([(8, 3), (30, 30), (64, 16), (20, 100), (100, 7)]):
        x = randn(n, d, seed=10 + seed)
        assert float(matrix_entropy(x)) == pytest.approx(ref_entropy(ref_gram(x)), abs=ROUTE_TOL)
        assert float(matrix_entropy(x, center=True)) == pytest.approx(
            ref_entropy(ref_gram(x, center=True)), abs=ROUTE_TOL
        )


def test_gram_input_with_non_unit_diagonal_is_trace_normalised() -> None:
    # a PSD matrix that is not a cosine Gram: the spectrum of K / tr(K) is used
    z = randn(9, 4, seed=20)
    k = z @ z.T
    assert float(matrix_entropy(k, is_gram=True)) == pytest.approx(ref_entropy(k.numpy()), abs=ROUTE_TOL)


def test_float32_compute_dtype_close_to_float64() -> None:
    x = randn(64, 16, seed=21)
    h64 = float(matrix_entropy(x))
    for route in ("gram", "dual"):
        h32 = matrix_entropy(x, route=route, dtype=torch.float32)
        assert h32.dtype == F64  # returned in the input's dtype
        assert float(h32) == pytest.approx(h64, abs=1e-5)


# ---------------------------------------------------------------------------------------------
# Rényi order
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [0.0, 0.5, 2.0, 3.0])
@pytest.mark.parametrize("case", ["d<n", "d>n", "rank-deficient"])
def test_renyi_matches_eigenvalue_reference(alpha: float, case: str) -> None:
    x = FEATURE_CASES[case]()
    reference = ref_entropy(ref_gram(x), alpha) if alpha != 0.0 else math.log(np.linalg.matrix_rank(x.numpy()))
    for route in ("gram", "dual", "auto"):
        assert float(matrix_entropy(x, alpha=alpha, route=route)) == pytest.approx(reference, abs=ROUTE_TOL)


def test_renyi_two_is_frobenius_purity() -> None:
    x = randn(25, 10, seed=30)
    k = ref_gram(x)
    purity = (k * k).sum() / np.trace(k) ** 2
    assert float(matrix_entropy(x, alpha=2.0)) == pytest.approx(-math.log(purity), abs=ROUTE_TOL)
    assert float(matrix_entropy(x, alpha=2)) == pytest.approx(-math.log(purity), abs=ROUTE_TOL)  # int alpha


def test_alpha_one_is_von_neumann_and_the_limit_of_renyi() -> None:
    x = randn(30, 8, seed=31)
    lam = ref_spectrum(ref_gram(x))
    von_neumann = float(-(lam * np.log(lam)).sum())
    assert float(matrix_entropy(x)) == pytest.approx(von_neumann, abs=ROUTE_TOL)
    assert float(matrix_entropy(x, alpha=1)) == pytest.approx(von_neumann, abs=ROUTE_TOL)
    for alpha in (1 - 1e-6, 1 + 1e-6):
        assert float(matrix_entropy(x, alpha=alpha)) == pytest.approx(von_neumann, abs=1e-5)


def test_renyi_is_non_increasing_in_alpha() -> None:
    x = randn(30, 8, seed=32)
    values = [float(matrix_entropy(x, alpha=a)) for a in (0.0, 0.5, 1.0, 2.0, 3.0, 10.0)]
    assert all(a >= b - 1e-12 for a, b in zip(values, values[1:]))
    assert values[0] == pytest.approx(math.log(8), abs=1e-12)


@pytest.mark.parametrize("alpha", [1.0, 2.0, 0.5])
@pytest.mark.parametrize("route", ["gram", "dual", "auto"])
def test_batched_equals_per_item(alpha: float, route: str) -> None:
    x = randn(3, 20, 7, seed=40)
    x[1] = rank_deficient(20, 2, 7, seed=41)  # items of different rank in one batch
    x[2, 5] = 0.0  # and a zero row
    out = matrix_entropy(x, alpha=alpha, route=route)
    assert out.shape == (3,)
    for i in range(3):
        assert float(out[i]) == pytest.approx(float(matrix_entropy(x[i], alpha=alpha, route=route)), abs=ROUTE_TOL)
        assert float(out[i]) == pytest.approx(ref_entropy(ref_gram(x[i]), alpha), abs=ROUTE_TOL)
    grams = cosine_gram(x)
    assert torch.allclose(matrix_entropy(grams, is_gram=True, alpha=alpha), out, atol=ROUTE_TOL, rtol=0)


def test_two_batch_dimensions() -> None:
    x = randn(2, 3, 10, 4, seed=42)
    out = matrix_entropy(x)
    assert out.shape == (2, 3)
    for i in range(2):
        for j in range(3):
            assert float(out[i, j]) == pytest.approx(ref_entropy(ref_gram(x[i, j])), abs=ROUTE_TOL)


# ---------------------------------------------------------------------------------------------
# Invariances and bounds
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["d<n", "d>n", "rank-deficient", "duplicate-rows"])
def test_row_permutation_and_positive_scaling_invariance(case: str) -> None:
    x = FEATURE_CASES[case]()
    n = x.shape[0]
    perm = torch.randperm(n, generator=rng(50))
    scale = torch.rand(n, 1, generator=rng(51), dtype=F64) * 100 + 1e-3
    for route in ("gram", "dual", "auto"):
        base = float(matrix_entropy(x, route=route))
        assert float(matrix_entropy(x[perm], route=route)) == pytest.approx(base, abs=ROUTE_TOL)
        assert float(matrix_entropy(x * scale, route=route)) == pytest.approx(base, abs=ROUTE_TOL)
    # is_gram: permuting rows and columns together
    k = cosine_gram(x)
    assert float(matrix_entropy(k[perm][:, perm], is_gram=True)) == pytest.approx(
        float(matrix_entropy(k, is_gram=True)), abs=ROUTE_TOL
    )


def test_orthogonal_rotation_of_features_is_invariant() -> None:
    x = randn(20, 6, seed=52)
    q, _ = torch.linalg.qr(randn(6, 6, seed=53))
    assert float(matrix_entropy(x @ q)) == pytest.approx(float(matrix_entropy(x)), abs=ROUTE_TOL)


@pytest.mark.parametrize("n", [1, 2, 5, 17])
def test_identity_has_entropy_log_n(n: int) -> None:
    eye = torch.eye(n, dtype=F64)
    for route in ("gram", "dual", "auto"):
        assert float(matrix_entropy(eye, route=route)) == pytest.approx(math.log(n), abs=1e-12)
    assert float(matrix_entropy(eye, is_gram=True)) == pytest.approx(math.log(n), abs=1e-12)
    for alpha in (0.5, 2.0, 3.0):  # flat spectrum: every Rényi order gives log n
        assert float(matrix_entropy(eye, alpha=alpha)) == pytest.approx(math.log(n), abs=1e-12)


def test_parallel_and_anti_parallel_rows_have_zero_entropy() -> None:
    v = randn(1, 5, seed=54)
    signs_and_scales = torch.tensor([[1.0], [2.0], [-1.0], [-0.5], [7.0]], dtype=F64)
    for x in (v.repeat(6, 1), signs_and_scales * v):
        for route in ("gram", "dual", "auto"):
            for alpha in (1.0, 0.5, 2.0):
                assert abs(float(matrix_entropy(x, route=route, alpha=alpha))) < 1e-12
        assert abs(float(matrix_entropy(torch.ones(4, 4, dtype=F64), is_gram=True))) < 1e-12


@pytest.mark.parametrize("case", list(FEATURE_CASES))
def test_bounds_zero_to_log_rank(case: str) -> None:
    x = FEATURE_CASES[case]()
    rank = np.linalg.matrix_rank(x.numpy())
    for route in ("gram", "dual", "auto"):
        h = float(matrix_entropy(x, route=route))
        assert h >= -1e-12
        assert math.exp(h) <= rank * (1 + 1e-12)
        assert h <= math.log(min(x.shape)) + 1e-12


# ---------------------------------------------------------------------------------------------
# Zero rows
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [1.0, 2.0, 0.5])
def test_zero_row_equals_result_without_it(alpha: float) -> None:
    for x in (randn(12, 4, seed=60), randn(5, 9, seed=61)):
        with_zero = torch.cat([x[:2], torch.zeros(2, x.shape[1], dtype=F64), x[2:]])
        expected = float(matrix_entropy(x, alpha=alpha))
        for route in ("gram", "dual", "auto"):
            assert float(matrix_entropy(with_zero, route=route, alpha=alpha)) == pytest.approx(expected, abs=ROUTE_TOL)
        assert float(matrix_entropy(cosine_gram(with_zero), is_gram=True, alpha=alpha)) == pytest.approx(
            expected, abs=ROUTE_TOL
        )


def test_rows_below_the_zero_norm_threshold_are_zero_rows() -> None:
    # gram.ZERO_ROW_NORM documents that rows with a norm below 1e-12 are treated as zero rows
    x = randn(8, 3, seed=62)
    tiny = torch.cat([x, 1e-14 * randn(1, 3, seed=63)])
    assert normalize_rows(tiny)[-1].abs().max() == 0
    for route in ("gram", "dual"):
        assert float(matrix_entropy(tiny, route=route)) == pytest.approx(float(matrix_entropy(x)), abs=ROUTE_TOL)


def test_all_zero_input_has_zero_entropy() -> None:
    z = torch.zeros(4, 3, dtype=F64)
    for route in ("gram", "dual", "auto"):
        assert float(matrix_entropy(z, route=route)) == 0.0


# ---------------------------------------------------------------------------------------------
# Dtypes and purity of the functions
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_output_dtype_follows_input_and_value_uses_float64(dtype: torch.dtype) -> None:
    x = randn(20, 5, seed=70).to(dtype)
    out = matrix_entropy(x)
    assert out.dtype == dtype
    reference = ref_entropy(ref_gram(x.double()))
    assert float(out) == pytest.approx(reference, rel=torch.finfo(dtype).eps)


def test_does_not_modify_inputs() -> None:
    x = randn(20, 6, seed=71)
    x[3] = 0.0
    k = cosine_gram(x)
    x32 = x.float()
    for tensor, kwargs in [
        (x, {}),
        (x, {"route": "gram"}),
        (x, {"route": "dual", "center": True}),
        (x, {"alpha": 2.0}),
        (x32, {"alpha": 0.5}),
        (k, {"is_gram": True}),
        (k, {"is_gram": True, "alpha": 2.0}),
    ]:
        before = tensor.clone()
        matrix_entropy(tensor, **kwargs)
        assert torch.equal(tensor, before), kwargs
    before = x.clone()
    cosine_gram(x, center=True)
    normalize_rows(x, center=True)
    assert torch.equal(x, before)


def test_cosine_gram_has_unit_diagonal_and_matches_reference() -> None:
    x = randn(10, 4, seed=72)
    x[4] = 0.0
    k = cosine_gram(x)
    assert k.dtype == F64 and k.shape == (10, 10)
    np.testing.assert_allclose(k.numpy(), ref_gram(x), atol=1e-14)
    diag = torch.diagonal(k)
    assert torch.allclose(diag[torch.arange(10) != 4], torch.ones(9, dtype=F64), atol=1e-14)
    assert float(diag[4]) == 0.0
    np.testing.assert_allclose(cosine_gram(x, center=True).numpy(), ref_gram(x, center=True), atol=1e-14)


@pytest.mark.parametrize("alpha", [700.0, 1000.0, 1e6])
def test_renyi_large_orders_do_not_underflow(alpha: float) -> None:
    """Σ λ^α underflows for α ≳ 1000; the entropy is read relative to the largest term: log-sum-exp of
    α·log λ, toward the min-entropy -log λ_max, and non-increasing in α."""
    x = randn(10, 4, seed=3)
    lam = torch.linalg.eigvalsh(cosine_gram(x) / 10)
    exact = float(torch.logsumexp(alpha * lam.clamp_min(1e-300).log(), 0) / (1 - alpha))
    value = float(matrix_entropy(x, alpha=alpha))
    assert value == pytest.approx(exact, rel=1e-9)
    assert -math.log(float(lam.max())) <= value <= float(matrix_entropy(x, alpha=300.0))
    z = x.clone().requires_grad_(True)
    matrix_entropy(z, alpha=alpha).backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
