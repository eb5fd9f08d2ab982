"""Matrix mutual information, MIR and HDR: docs/theory.md §3 values, routes (incl. Kronecker), references.

Expected numbers come from docs/theory.md §3 or from an independent numpy / scipy float64 reference
(n x n Grams, Hadamard joint) written in this file.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

import hf_infonc.info.mutual as mutual_module
from hf_infonc.info import cosine_gram, hdr, matrix_entropy, matrix_mutual_information, mir
from info_reference import ref_entropy, ref_gram

F64 = torch.float64

pytestmark = pytest.mark.usefixtures("single_blas_thread")


TOL = 1e-10


# ---------------------------------------------------------------------------------------------
# Independent reference
# ---------------------------------------------------------------------------------------------
def ref_measures(ka: np.ndarray, kb: np.ndarray, alpha: float = 1.0) -> dict[str, float]:
    ha, hb, hj = ref_entropy(ka, alpha), ref_entropy(kb, alpha), ref_entropy(ka * kb, alpha)
    mi = ha + hb - hj
    return {"mi": mi, "mir": mi / min(ha, hb), "hdr": abs(ha - hb) / max(ha, hb)}


def measures(a: torch.Tensor, b: torch.Tensor, **kwargs: object) -> dict[str, float]:
    return {
        "mi": float(matrix_mutual_information(a, b, **kwargs)),
        "mir": float(mir(a, b, **kwargs)),
        "hdr": float(hdr(a, b, **kwargs)),
    }


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def head_case(d_features: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample-level use of the paper: features against the head rows of the labels."""
    g = torch.Generator().manual_seed(7)
    head = torch.randn(5, 64, generator=g, dtype=F64)
    labels = torch.randint(0, 5, (200,), generator=g)
    return torch.randn(200, d_features, generator=g, dtype=F64), head[labels]


def pair_rank_deficient() -> tuple[torch.Tensor, torch.Tensor]:
    a = randn(50, 3, seed=1) @ randn(3, 20, seed=2)  # 50 rows in a 3-dim subspace of R^20
    return a, randn(50, 6, seed=3)


def pair_duplicates() -> tuple[torch.Tensor, torch.Tensor]:
    idx = torch.randint(0, 7, (40,), generator=torch.Generator().manual_seed(4))
    return randn(7, 10, seed=5)[idx], randn(40, 3, seed=6)


PAIR_CASES = {
    "d<n": lambda: (randn(40, 5, seed=10), randn(40, 6, seed=11)),  # d1*d2 = 30 < n: Kronecker
    "d>n": lambda: (randn(10, 30, seed=12), randn(10, 25, seed=13)),
    "mixed": lambda: (randn(30, 5, seed=14), randn(30, 50, seed=15)),
    "d<n<d1d2": lambda: (randn(30, 8, seed=16), randn(30, 9, seed=17)),
    "rank-deficient": pair_rank_deficient,
    "duplicate-rows": pair_duplicates,
    "head-64": head_case,
    "head-16": lambda: head_case(16),  # 16*64 > n, but 16*rank(head)=80 < n: rank-reduced Kronecker
    "same": lambda: (randn(25, 4, seed=18),) * 2,
}


# ---------------------------------------------------------------------------------------------
# docs/theory.md §3 test vectors
# ---------------------------------------------------------------------------------------------
def etf3() -> torch.Tensor:
    return torch.full((3, 3), -0.5, dtype=F64).fill_diagonal_(1.0)


HALF = torch.tensor([[1.0, 0.5], [0.5, 1.0]], dtype=F64)
SPEC_ROWS = [
    # K1, K2, H1, H2, MI, MIR, HDR
    (torch.block_diag(torch.ones(2, 2, dtype=F64), torch.ones(2, 2, dtype=F64)), torch.eye(4, dtype=F64),
     0.693147, 1.386294, 0.693147, 1.0, 0.5),
    (etf3(), torch.eye(3, dtype=F64), 0.693147, 1.098612, 0.693147, 1.0, 0.369070),
    (etf3(), etf3(), 0.693147, 0.693147, 0.346574, 0.5, 0.0),
    (HALF, HALF, 0.562335, 0.562335, None, 0.823543, 0.0),
]


def features_of(gram: torch.Tensor) -> torch.Tensor:
    """Unit rows whose Gram is ``gram`` (eigen-factor; works for singular PSD Grams too)."""
    lam, vec = torch.linalg.eigh(gram)
    return vec * lam.clamp_min(0).sqrt()


@pytest.mark.parametrize("row", range(len(SPEC_ROWS)), ids=["blockdiag-I4", "ETF3-I3", "ETF3-ETF3", "half-half"])
def test_spec_test_vectors(row: int) -> None:
    k1, k2, h1, h2, mi_expected, mir_expected, hdr_expected = SPEC_ROWS[row]
    assert float(matrix_entropy(k1, is_gram=True)) == pytest.approx(h1, abs=1e-6)
    assert float(matrix_entropy(k2, is_gram=True)) == pytest.approx(h2, abs=1e-6)
    f1, f2 = features_of(k1), features_of(k2)
    cases = [((k1, k2), {"is_gram": True})] + [((f1, f2), {"route": r}) for r in ("gram", "dual", "auto")]
    for inputs, kwargs in cases:
        values = measures(*inputs, **kwargs)
        if mi_expected is not None:
            assert values["mi"] == pytest.approx(mi_expected, abs=1e-6), kwargs
        assert values["mir"] == pytest.approx(mir_expected, abs=1e-6), kwargs
        assert values["hdr"] == pytest.approx(hdr_expected, abs=1e-6), kwargs


def test_spec_c10_joint_entropy_and_mutual_information() -> None:
    c = 10
    g = torch.full((c, c), -1.0 / (c - 1), dtype=F64).fill_diagonal_(1.0)
    assert float(matrix_entropy(g * g, is_gram=True)) == pytest.approx(2.301921, abs=1e-6)
    assert float(matrix_mutual_information(g, g, is_gram=True)) == pytest.approx(2.092529, abs=1e-6)
    f = features_of(g)
    for route in ("gram", "dual", "auto"):
        assert float(matrix_mutual_information(f, f, route=route)) == pytest.approx(2.092529, abs=1e-6)


def test_joint_is_the_hadamard_product_of_grams_not_of_features() -> None:
    a, b = randn(12, 4, seed=20), randn(12, 4, seed=21)
    ka, kb = cosine_gram(a), cosine_gram(b)
    expected = float(matrix_entropy(ka, is_gram=True) + matrix_entropy(kb, is_gram=True)
                     - matrix_entropy(ka * kb, is_gram=True))
    assert float(matrix_mutual_information(a, b)) == pytest.approx(expected, abs=TOL)
    # the authors' helper multiplies features element-wise: a different quantity
    wrong = float(matrix_entropy(ka, is_gram=True) + matrix_entropy(kb, is_gram=True)
                  - matrix_entropy(a * b))
    assert abs(wrong - expected) > 1e-3


# ---------------------------------------------------------------------------------------------
# Routes and the independent reference
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", list(PAIR_CASES))
@pytest.mark.parametrize("alpha", [1.0, 2.0, 0.5])
def test_routes_agree_with_reference(case: str, alpha: float) -> None:
    a, b = PAIR_CASES[case]()
    reference = ref_measures(ref_gram(a), ref_gram(b), alpha)
    results = {r: measures(a, b, route=r, alpha=alpha) for r in ("gram", "dual", "auto")}
    results["is_gram"] = measures(cosine_gram(a), cosine_gram(b), is_gram=True, alpha=alpha)
    results["swapped"] = measures(b, a, alpha=alpha)
    for name, values in results.items():
        assert values["mi"] == pytest.approx(reference["mi"], abs=TOL), name
        assert values["mir"] == pytest.approx(reference["mir"], abs=TOL), name
        assert values["hdr"] == pytest.approx(reference["hdr"], abs=TOL), name


@pytest.mark.parametrize("case", ["d<n", "rank-deficient", "head-16", "mixed"])
def test_center_option_matches_reference(case: str) -> None:
    a, b = PAIR_CASES[case]()
    reference = ref_measures(ref_gram(a, center=True), ref_gram(b, center=True))
    for route in ("gram", "dual", "auto"):
        values = measures(a, b, route=route, center=True)
        for key in ("mi", "mir", "hdr"):
            assert values[key] == pytest.approx(reference[key], abs=TOL), (route, key)


def test_scipy_reference_random_inputs() -> None:
    for seed, (n, d1, d2) in enumerate([(6, 2, 3), (32, 32, 8), (64, 5, 10), (16, 40, 3), (100, 4, 4)]):
        a, b = randn(n, d1, seed=30 + seed), randn(n, d2, seed=60 + seed)
        reference = ref_measures(ref_gram(a), ref_gram(b))
        values = measures(a, b)
        for key in reference:
            assert values[key] == pytest.approx(reference[key], abs=TOL), (n, d1, d2, key)


class KroneckerSpy:
    """Records the shape of every row-wise Kronecker factor the code builds."""

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []
        self.original = mutual_module.row_kronecker

    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        out = self.original(a, b)
        self.shapes.append(tuple(out.shape))
        return out


@pytest.mark.parametrize(
    ("case", "route", "kron_width"),
    [
        ("d<n", "auto", 30),  # 5 * 6 < 40
        ("d<n", "dual", 30),
        ("head-16", "auto", 16 * 5),  # rank reduction of the head side: 64 -> 5
        ("head-64", "dual", 64 * 5),
        ("rank-deficient", "auto", 3 * 6),  # rank reduction of the features: 20 -> 3
        ("d<n<d1d2", "auto", None),  # 72 > 30: Hadamard of the n x n Grams
        ("d>n", "auto", None),
        ("d<n", "gram", None),
    ],
)
def test_kronecker_route_is_taken_when_cheaper(
    case: str, route: str, kron_width: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = KroneckerSpy()
    monkeypatch.setattr(mutual_module, "row_kronecker", spy)
    a, b = PAIR_CASES[case]()
    value = float(matrix_mutual_information(a, b, route=route))
    if kron_width is None:
        assert spy.shapes == []
    else:
        assert spy.shapes == [(a.shape[0], kron_width)]
    reference = ref_measures(ref_gram(a), ref_gram(b))["mi"]
    assert value == pytest.approx(reference, abs=TOL)


@pytest.mark.parametrize("route", ["gram", "dual", "auto"])
@pytest.mark.parametrize("alpha", [1.0, 2.0])
def test_batched_equals_per_item(route: str, alpha: float) -> None:
    a, b = randn(3, 20, 7, seed=70), randn(3, 20, 4, seed=71)
    a[1] = randn(20, 2, seed=72) @ randn(2, 7, seed=73)  # items of different rank in one batch
    b[2] = randn(3, 4, seed=74)[torch.arange(20) % 3]  # head-like low-rank item
    for fn in (matrix_mutual_information, mir, hdr):
        out = fn(a, b, route=route, alpha=alpha)
        assert out.shape == (3,)
        for i in range(3):
            single = float(fn(a[i], b[i], route=route, alpha=alpha))
            assert float(out[i]) == pytest.approx(single, abs=TOL), (fn.__name__, i)
            expected = ref_measures(ref_gram(a[i]), ref_gram(b[i]), alpha)
            key = {"matrix_mutual_information": "mi", "mir": "mir", "hdr": "hdr"}[fn.__name__]
            assert float(out[i]) == pytest.approx(expected[key], abs=TOL), (fn.__name__, i)


# ---------------------------------------------------------------------------------------------
# Invariances and bounds
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["d<n", "d>n", "rank-deficient", "duplicate-rows", "head-64"])
def test_permutation_and_scaling_invariance(case: str) -> None:
    a, b = PAIR_CASES[case]()
    n = a.shape[0]
    g = torch.Generator().manual_seed(80)
    perm = torch.randperm(n, generator=g)
    sa = torch.rand(n, 1, generator=g, dtype=F64) * 50 + 1e-2
    sb = torch.rand(n, 1, generator=g, dtype=F64) * 50 + 1e-2
    for route in ("gram", "dual", "auto"):
        base = measures(a, b, route=route)
        for a2, b2 in ((a[perm], b[perm]), (a * sa, b * sb)):
            moved = measures(a2, b2, route=route)
            for key in base:
                assert moved[key] == pytest.approx(base[key], abs=TOL), (route, key)


def test_bounds_on_random_inputs() -> None:
    g = torch.Generator().manual_seed(81)
    for _ in range(20):
        n = int(torch.randint(3, 40, (1,), generator=g))
        d1, d2 = (int(v) for v in torch.randint(1, 20, (2,), generator=g))
        a, b = torch.randn(n, d1, generator=g, dtype=F64), torch.randn(n, d2, generator=g, dtype=F64)
        if d1 == 1 or d2 == 1:  # a single column has entropy 0: MIR/HDR undefined or 1
            continue
        ha, hb = float(matrix_entropy(a)), float(matrix_entropy(b))
        mi_value = float(matrix_mutual_information(a, b))
        assert -1e-12 <= mi_value <= min(ha, hb) + 1e-12
        assert -1e-12 <= float(mir(a, b)) <= 1 + 1e-12
        assert -1e-12 <= float(hdr(a, b)) <= 1 + 1e-12


def test_mutual_information_with_itself_and_with_identity() -> None:
    a = randn(15, 6, seed=82)
    ha = float(matrix_entropy(a))
    # K ⊙ I = I (unit diagonal): MI(K, I) = H(K) + log n - log n = H(K), MIR = 1
    eye = torch.eye(15, dtype=F64)
    assert float(matrix_mutual_information(a, eye)) == pytest.approx(ha, abs=TOL)
    assert float(mir(a, eye)) == pytest.approx(1.0, abs=TOL)
    assert float(hdr(a, eye)) == pytest.approx((math.log(15) - ha) / math.log(15), abs=TOL)
    # HDR of a matrix with itself is 0, MIR with itself ≤ 1
    assert float(hdr(a, a)) == 0.0
    assert 0 < float(mir(a, a)) <= 1


# ---------------------------------------------------------------------------------------------
# Zero entropies
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("route", ["gram", "dual", "auto"])
def test_zero_entropy_gives_nan_with_warning_or_zero(route: str) -> None:
    b = randn(6, 4, seed=90)
    equal_rows = randn(1, 5, seed=91).repeat(6, 1)
    with pytest.warns(RuntimeWarning, match="MIR"):
        assert math.isnan(float(mir(equal_rows, b, route=route)))
    # HDR: only the max entropy is in the denominator, so one zero entropy gives exactly 1
    assert float(hdr(equal_rows, b, route=route)) == pytest.approx(1.0, abs=1e-12)
    one_a, one_b = randn(1, 5, seed=92), randn(1, 3, seed=93)
    with pytest.warns(RuntimeWarning, match="MIR"):
        assert math.isnan(float(mir(one_a, one_b, route=route)))
    with pytest.warns(RuntimeWarning, match="HDR"):
        assert math.isnan(float(hdr(one_a, one_b, route=route)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert float(mir(equal_rows, b, route=route, zero_entropy="zero")) == 0.0
        assert float(mir(one_a, one_b, route=route, zero_entropy="zero")) == 0.0
        assert float(hdr(one_a, one_b, route=route, zero_entropy="zero")) == 0.0
        assert abs(float(matrix_mutual_information(one_a, one_b, route=route))) < 1e-12


def test_zero_entropy_in_one_batch_item_only() -> None:
    a, b = randn(3, 8, 4, seed=94), randn(3, 8, 3, seed=95)
    a[1] = a[1, :1].repeat(8, 1)
    with pytest.warns(RuntimeWarning):
        out = mir(a, b)
    assert math.isnan(float(out[1]))
    for i in (0, 2):
        assert float(out[i]) == pytest.approx(float(mir(a[i], b[i])), abs=TOL)
    zeroed = mir(a, b, zero_entropy="zero")
    assert float(zeroed[1]) == 0.0
    assert torch.allclose(zeroed[[0, 2]], out[[0, 2]], atol=TOL, rtol=0)


def test_no_warning_when_entropies_are_positive() -> None:
    a, b = randn(10, 3, seed=96), randn(10, 4, seed=97)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mir(a, b)
        hdr(a, b)


# ---------------------------------------------------------------------------------------------
# Dtypes and purity
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_output_dtype_follows_a(dtype: torch.dtype) -> None:
    a, b = randn(20, 5, seed=98).to(dtype), randn(20, 3, seed=99).to(dtype)
    reference = ref_measures(ref_gram(a.double()), ref_gram(b.double()))
    for fn, key in ((matrix_mutual_information, "mi"), (mir, "mir"), (hdr, "hdr")):
        out = fn(a, b)
        assert out.dtype == dtype
        assert float(out) == pytest.approx(reference[key], rel=torch.finfo(dtype).eps, abs=1e-7)


def test_float32_compute_dtype_close_to_float64() -> None:
    a, b = head_case(16)
    reference = measures(a, b)
    for route in ("gram", "dual", "auto"):
        values = measures(a, b, route=route, dtype=torch.float32)
        for key in reference:
            assert values[key] == pytest.approx(reference[key], abs=1e-4), (route, key)


def test_does_not_modify_inputs() -> None:
    a, b = head_case(16)
    a = a.clone()
    a[3] = 0.0
    ka, kb = cosine_gram(a), cosine_gram(b)
    calls = [
        ((a, b), {}),
        ((a, b), {"route": "gram"}),
        ((a, b), {"route": "dual", "center": True}),
        ((a, b), {"alpha": 2.0}),
        ((a.float(), b.float()), {"alpha": 0.5}),
        ((ka, kb), {"is_gram": True}),
    ]
    for (x, y), kwargs in calls:
        before = (x.clone(), y.clone())
        for fn in (matrix_mutual_information, mir, hdr):
            fn(x, y, **kwargs)
        assert torch.equal(x, before[0]) and torch.equal(y, before[1]), kwargs
