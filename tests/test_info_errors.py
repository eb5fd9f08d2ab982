"""Input validation of hf_infonc.info: the right exception, with a message that names the argument
and says what is expected."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hf_infonc.info import cosine_gram, hdr, matrix_entropy, matrix_mutual_information, mir

F64 = torch.float64

pytestmark = pytest.mark.usefixtures("single_blas_thread")


PAIR_FUNCTIONS = [matrix_mutual_information, mir, hdr]


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def with_value(x: torch.Tensor, value: float) -> torch.Tensor:
    x = x.clone()
    x.view(-1)[3] = value
    return x


# ---------------------------------------------------------------------------------------------
# Non-finite values
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("is_gram", [False, True])
def test_non_finite_entropy_input(bad: float, is_gram: bool) -> None:
    x = cosine_gram(randn(5, 3)) if is_gram else randn(5, 3)
    with pytest.raises(ValueError, match=r"`x` contains 1 NaN or inf"):
        matrix_entropy(with_value(x, bad), is_gram=is_gram)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
@pytest.mark.parametrize("fn", PAIR_FUNCTIONS)
@pytest.mark.parametrize("side", ["a", "b"])
def test_non_finite_pair_input(bad: float, fn: object, side: str) -> None:
    a, b = randn(6, 3, seed=1), randn(6, 4, seed=2)
    if side == "a":
        a = with_value(a, bad)
    else:
        b = with_value(b, bad)
    with pytest.raises(ValueError, match=rf"`{side}` contains 1 NaN or inf"):
        fn(a, b)  # type: ignore[operator]
    ka, kb = cosine_gram(randn(6, 3, seed=1)), cosine_gram(randn(6, 4, seed=2))
    if side == "a":
        ka = with_value(ka, bad)
    else:
        kb = with_value(kb, bad)
    with pytest.raises(ValueError, match=rf"`{side}` contains 1 NaN or inf"):
        fn(ka, kb, is_gram=True)  # type: ignore[operator]


# ---------------------------------------------------------------------------------------------
# Shapes
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(0, 3), (3, 0), (2, 0, 3)])
def test_empty_tensor(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"`x` is empty"):
        matrix_entropy(torch.empty(shape, dtype=F64))
    with pytest.raises(ValueError, match=r"`a` is empty"):
        mir(torch.empty(shape, dtype=F64), randn(3, 2))
    with pytest.raises(ValueError, match=r"`b` is empty"):
        hdr(randn(3, 2), torch.empty(shape, dtype=F64))


@pytest.mark.parametrize("fn", [matrix_entropy, cosine_gram])
def test_one_dimensional_entropy_input(fn: object) -> None:
    with pytest.raises(ValueError, match=r"at least 2 dimensions.*unsqueeze\(0\)"):
        fn(randn(5))  # type: ignore[operator]


@pytest.mark.parametrize("fn", PAIR_FUNCTIONS)
def test_one_dimensional_pair_input(fn: object) -> None:
    with pytest.raises(ValueError, match=r"`a` has shape \(5,\).*at least 2 dimensions"):
        fn(randn(5), randn(5, 2))  # type: ignore[operator]
    with pytest.raises(ValueError, match=r"`b` has shape \(5,\).*at least 2 dimensions"):
        fn(randn(5, 2), randn(5))  # type: ignore[operator]


@pytest.mark.parametrize("fn", PAIR_FUNCTIONS)
def test_different_row_counts(fn: object) -> None:
    with pytest.raises(ValueError, match=r"`a` has 6 rows but `b` has 7"):
        fn(randn(6, 3), randn(7, 3))  # type: ignore[operator]
    with pytest.raises(ValueError, match=r"`a` has 6 rows but `b` has 7"):
        fn(cosine_gram(randn(6, 3)), cosine_gram(randn(7, 3)), is_gram=True)  # type: ignore[operator]


@pytest.mark.parametrize("fn", PAIR_FUNCTIONS)
def test_different_batch_dimensions(fn: object) -> None:
    with pytest.raises(ValueError, match=r"batch dimensions"):
        fn(randn(2, 6, 3), randn(3, 6, 3))  # type: ignore[operator]


def test_is_gram_non_square() -> None:
    with pytest.raises(ValueError, match=r"`x` has shape \(4, 3\).*is_gram=True expects square"):
        matrix_entropy(randn(4, 3), is_gram=True)
    for fn in PAIR_FUNCTIONS:
        with pytest.raises(ValueError, match=r"`b` has shape \(4, 5\).*square"):
            fn(cosine_gram(randn(4, 3)), randn(4, 5), is_gram=True)


def test_is_gram_non_symmetric() -> None:
    k = cosine_gram(randn(5, 3))
    k[0, 1] += 0.1
    with pytest.raises(ValueError, match=r"`x` is not symmetric"):
        matrix_entropy(k, is_gram=True)
    for fn in PAIR_FUNCTIONS:
        with pytest.raises(ValueError, match=r"`a` is not symmetric"):
            fn(k, cosine_gram(randn(5, 3)), is_gram=True)
    # round-off asymmetry is accepted (and symmetrised)
    k_ok = cosine_gram(randn(5, 3))
    k_ok[0, 1] += 1e-12
    matrix_entropy(k_ok, is_gram=True)


# ---------------------------------------------------------------------------------------------
# Types
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool, torch.complex128])
def test_non_floating_dtype(dtype: torch.dtype) -> None:
    x = torch.ones(4, 3, dtype=dtype)
    with pytest.raises(TypeError, match=r"`x` has dtype .*floating-point"):
        matrix_entropy(x)
    for fn in PAIR_FUNCTIONS:
        with pytest.raises(TypeError, match=r"`a` has dtype .*floating-point"):
            fn(x, randn(4, 2))
        with pytest.raises(TypeError, match=r"`b` has dtype .*floating-point"):
            fn(randn(4, 2), x)


@pytest.mark.parametrize("value", [[[1.0, 0.0], [0.0, 1.0]], np.eye(3), None, 3.0])
def test_non_tensor_input(value: object) -> None:
    with pytest.raises(TypeError, match=r"`x` must be a torch.Tensor"):
        matrix_entropy(value)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"`x` must be a torch.Tensor"):
        matrix_entropy(value, is_gram=True)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"`z` must be a torch.Tensor"):
        cosine_gram(value)  # type: ignore[arg-type]
    for fn in PAIR_FUNCTIONS:
        with pytest.raises(TypeError, match=r"`a` must be a torch.Tensor"):
            fn(value, randn(2, 2))
        with pytest.raises(TypeError, match=r"`b` must be a torch.Tensor"):
            fn(randn(2, 2), value)


# ---------------------------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("route", ["fast", "GRAM", "", "kron", None])
def test_invalid_route(route: object) -> None:
    x = randn(6, 3)
    with pytest.raises(ValueError, match=r"route="):
        matrix_entropy(x, route=route)  # type: ignore[arg-type]
    for fn in PAIR_FUNCTIONS:
        with pytest.raises(ValueError, match=r"route="):
            fn(x, randn(6, 2), route=route)  # type: ignore[arg-type]


def test_feature_routes_refused_with_is_gram() -> None:
    k = cosine_gram(randn(6, 3))
    with pytest.raises(ValueError, match=r"route='dual' needs features"):
        matrix_entropy(k, is_gram=True, route="dual")
    for fn in PAIR_FUNCTIONS:
        with pytest.raises(ValueError, match=r"route='dual' needs features"):
            fn(k, k, is_gram=True, route="dual")


@pytest.mark.parametrize("alpha", [-1.0, float("nan"), float("inf"), -1e-9])
def test_invalid_alpha_value(alpha: float) -> None:
    x = randn(6, 3)
    with pytest.raises(ValueError, match=r"alpha=.*Rényi order must be finite and ≥ 0"):
        matrix_entropy(x, alpha=alpha)
    for fn in PAIR_FUNCTIONS:
        with pytest.raises(ValueError, match=r"alpha="):
            fn(x, x, alpha=alpha)


@pytest.mark.parametrize("alpha", ["2", True, None, torch.tensor(2.0)])
def test_invalid_alpha_type(alpha: object) -> None:
    x = randn(6, 3)
    with pytest.raises(TypeError, match=r"alpha must be a number"):
        matrix_entropy(x, alpha=alpha)  # type: ignore[arg-type]
    for fn in PAIR_FUNCTIONS:
        with pytest.raises(TypeError, match=r"alpha must be a number"):
            fn(x, x, alpha=alpha)  # type: ignore[arg-type]


def test_center_with_is_gram() -> None:
    k = cosine_gram(randn(6, 3))
    with pytest.raises(ValueError, match=r"center=True needs features"):
        matrix_entropy(k, is_gram=True, center=True)
    for fn in PAIR_FUNCTIONS:
        with pytest.raises(ValueError, match=r"center=True needs features"):
            fn(k, k, is_gram=True, center=True)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.int64, torch.complex128])
def test_invalid_compute_dtype(dtype: torch.dtype) -> None:
    x = randn(6, 3)
    with pytest.raises(ValueError, match=r"dtype=.*not supported.*float64"):
        matrix_entropy(x, dtype=dtype)
    for fn in PAIR_FUNCTIONS:
        with pytest.raises(ValueError, match=r"dtype=.*not supported"):
            fn(x, x, dtype=dtype)


@pytest.mark.parametrize("fn", [mir, hdr])
def test_invalid_zero_entropy(fn: object) -> None:
    x = randn(6, 3)
    with pytest.raises(ValueError, match=r"zero_entropy='none'.*'nan'.*'zero'"):
        fn(x, randn(6, 2), zero_entropy="none")  # type: ignore[operator]


# ---------------------------------------------------------------------------------------------
# Import isolation
# ---------------------------------------------------------------------------------------------
def test_import_does_not_pull_in_transformers_or_datasets() -> None:
    code = (
        "import sys, hf_infonc.info\n"
        "from hf_infonc.info import mir, hdr, matrix_entropy\n"
        "bad = [m for m in ('transformers', 'datasets', 'accelerate', 'evaluate') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_is_gram_must_be_positive_semi_definite() -> None:
    """A symmetric matrix with a negative eigenvalue, or a negative diagonal, is not a Gram: refused, not
    turned into a negative entropy or a ratio outside [0, 1]."""
    k = torch.tensor([[1.0, 2.0], [2.0, 1.0]], dtype=torch.float64)  # eigenvalues 3 and -1
    eye = torch.eye(2, dtype=torch.float64)
    for alpha in (1.0, 2.0, 0.5):
        with pytest.raises(ValueError, match=r"`x` is not positive semi-definite: .*-0.333 times the largest.*X Xᵀ"):
            matrix_entropy(k, is_gram=True, alpha=alpha)
    for fn in PAIR_FUNCTIONS:
        with pytest.raises(ValueError, match=r"`a` is not positive semi-definite"):
            fn(k, eye, is_gram=True)
        with pytest.raises(ValueError, match=r"`b` is not positive semi-definite"):
            fn(eye, k, is_gram=True)
    with pytest.raises(ValueError, match=r"`x` has a negative diagonal entry .*positive semi-definite"):
        matrix_entropy(-eye, is_gram=True)
    # a PSD Gram with round-off negative eigenvalues (rank 3 of 50) and the zero matrix stay accepted
    low_rank = cosine_gram(randn(50, 3))
    assert float(matrix_entropy(low_rank, is_gram=True)) == pytest.approx(float(matrix_entropy(randn(50, 3))), abs=1e-10)
    assert float(matrix_entropy(torch.zeros(3, 3, dtype=torch.float64), is_gram=True)) == 0.0
