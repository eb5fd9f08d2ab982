"""Gradients of the matrix-information measures: gradcheck, degenerate inputs, autocast."""

from __future__ import annotations

import math
import warnings
from typing import Callable

import pytest
import torch
from torch.autograd import gradcheck

from hf_infonc.info import cosine_gram, hdr, matrix_entropy, matrix_mutual_information, mir

F64 = torch.float64

pytestmark = pytest.mark.usefixtures("single_blas_thread")


BF16 = torch.bfloat16


def randn(*shape: int, seed: int = 0, requires_grad: bool = False) -> torch.Tensor:
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)
    return x.requires_grad_(requires_grad)


def grads(fn: Callable[..., torch.Tensor], *inputs: torch.Tensor, **kwargs: object) -> list[torch.Tensor]:
    leaves = [x.detach().clone().requires_grad_(True) for x in inputs]
    out = fn(*leaves, **kwargs)
    return list(torch.autograd.grad(out.sum(), leaves))


# ---------------------------------------------------------------------------------------------
# gradcheck (float64)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("route", ["gram", "dual", "auto"])
@pytest.mark.parametrize("shape", [(6, 3), (3, 5), (2, 4, 3)], ids=["d<n", "d>n", "batched"])
@pytest.mark.parametrize("alpha", [1.0, 2.0, 0.5])
def test_gradcheck_entropy(route: str, shape: tuple[int, ...], alpha: float) -> None:
    # fast_mode: compares v·J·u for random u, v (finite differences along u) instead of the full J
    x = randn(*shape, seed=1, requires_grad=True)
    assert gradcheck(lambda t: matrix_entropy(t, route=route, alpha=alpha), (x,), fast_mode=True)
    if alpha == 1.0:
        assert gradcheck(lambda t: matrix_entropy(t, route=route), (x,))
        assert gradcheck(lambda t: matrix_entropy(t, route=route, center=True), (x,), fast_mode=True)


def test_gradcheck_entropy_through_gram_input() -> None:
    z = randn(6, 4, seed=2, requires_grad=True)
    assert gradcheck(lambda t: matrix_entropy(cosine_gram(t), is_gram=True), (z,))
    assert gradcheck(lambda t: matrix_entropy(cosine_gram(t), is_gram=True, alpha=3.0), (z,))


@pytest.mark.parametrize("fn", [matrix_mutual_information, mir, hdr])
@pytest.mark.parametrize("route", ["gram", "dual", "auto"])
@pytest.mark.parametrize(
    "shapes", [((7, 2), (7, 3)), ((3, 4), (3, 5)), ((5, 2), (5, 7))], ids=["kron", "d>n", "mixed"]
)
def test_gradcheck_pair(fn: Callable[..., torch.Tensor], route: str, shapes: tuple) -> None:
    a = randn(*shapes[0], seed=3, requires_grad=True)
    b = randn(*shapes[1], seed=4, requires_grad=True)
    assert gradcheck(lambda s, t: fn(s, t, route=route), (a, b), fast_mode=True)


@pytest.mark.parametrize("fn", [matrix_mutual_information, mir])
def test_gradcheck_pair_renyi_and_gram_inputs(fn: Callable[..., torch.Tensor]) -> None:
    a, b = randn(5, 2, seed=5, requires_grad=True), randn(5, 2, seed=6, requires_grad=True)
    for route, alpha in (("gram", 2.0), ("dual", 2.0), ("gram", 0.5), ("dual", 0.5)):
        assert gradcheck(lambda s, t: fn(s, t, route=route, alpha=alpha), (a, b))
    assert gradcheck(lambda s, t: fn(cosine_gram(s), cosine_gram(t), is_gram=True), (a, b))


@pytest.mark.parametrize("route", ["gram", "dual", "auto"])
def test_gradcheck_rank_deficient_along_the_subspace(route: str) -> None:
    # x = U V has rank 2 in R^6 for every U: H(U V) is smooth in U, and the masked zero
    # eigenvalues must not disturb the gradient
    v = randn(2, 6, seed=7)
    u = randn(10, 2, seed=8, requires_grad=True)
    assert gradcheck(lambda t: matrix_entropy(t @ v, route=route), (u,))
    b = randn(10, 3, seed=9)
    for fn in (matrix_mutual_information, mir, hdr):
        assert gradcheck(lambda t: fn(t @ v, b, route=route), (u,))


@pytest.mark.parametrize("route", ["gram", "dual", "auto"])
def test_gradcheck_duplicate_rows_and_low_rank_head(route: str) -> None:
    # duplicated rows: the entropy is smooth in the distinct rows
    idx = torch.tensor([0, 1, 2, 0, 3, 1, 1, 2, 3, 0])
    base = randn(4, 3, seed=10, requires_grad=True)
    assert gradcheck(lambda t: matrix_entropy(t[idx], route=route), (base,))
    # b = head[labels] (rank ≤ C): the rank-reduced Kronecker route must give exact gradients
    head = randn(3, 5, seed=11, requires_grad=True)
    a = randn(10, 2, seed=12, requires_grad=True)
    for fn in (matrix_mutual_information, mir):
        assert gradcheck(lambda s, h: fn(s, h[idx % 3], route=route), (a, head))


# ---------------------------------------------------------------------------------------------
# Degenerate inputs: finite (and documented) gradients
# ---------------------------------------------------------------------------------------------
def degenerate_cases() -> dict[str, torch.Tensor]:
    v = randn(1, 5, seed=20)
    with_zero = randn(8, 5, seed=21)
    with_zero[3] = 0.0
    return {
        "rank-deficient": randn(10, 2, seed=22) @ randn(2, 6, seed=23),
        "duplicate-rows": randn(4, 5, seed=24)[torch.tensor([0, 1, 1, 2, 3, 3, 3, 0])],
        "one-row": randn(1, 5, seed=25),
        "all-equal-rows": v.repeat(6, 1),
        "zero-row": with_zero,
        "all-zero": torch.zeros(4, 3, dtype=F64),
    }


@pytest.mark.parametrize("case", list(degenerate_cases()))
@pytest.mark.parametrize("route", ["gram", "dual", "auto"])
@pytest.mark.parametrize("dtype", [None, torch.float32])
def test_entropy_gradient_finite(case: str, route: str, dtype: torch.dtype | None) -> None:
    x = degenerate_cases()[case]
    (g,) = grads(matrix_entropy, x, route=route, dtype=dtype)
    assert torch.isfinite(g).all()
    (g2,) = grads(matrix_entropy, x, route=route, dtype=dtype, alpha=2.0)
    assert torch.isfinite(g2).all()
    if case in ("one-row", "all-equal-rows", "all-zero"):
        # H = 0 along these inputs' whole neighbourhood of the same rank: no direction to follow
        assert float(g.abs().max()) < 1e-6


@pytest.mark.parametrize("route", ["gram", "dual", "auto"])
@pytest.mark.parametrize("dtype", [None, torch.float32])
def test_zero_row_value_and_gradient_equal_those_without_it(route: str, dtype: torch.dtype | None) -> None:
    # documented behaviour: a zero row adds a zero row/column to the Gram, which is trace-normalised,
    # so the value (and the gradient of the other rows) is that of the remaining rows; the zero row
    # itself gets a zero gradient.
    x = randn(8, 5, seed=30)
    with_zero = torch.cat([x[:3], torch.zeros(1, 5, dtype=F64), x[3:]])
    keep = torch.arange(9) != 3
    tol = 1e-12 if dtype is None else 1e-5
    assert float(matrix_entropy(with_zero, route=route, dtype=dtype)) == pytest.approx(
        float(matrix_entropy(x, route=route, dtype=dtype)), abs=tol
    )
    (g,) = grads(matrix_entropy, with_zero, route=route, dtype=dtype)
    (g_ref,) = grads(matrix_entropy, x, route=route, dtype=dtype)
    assert torch.equal(g[3], torch.zeros(5, dtype=F64))
    assert torch.allclose(g[keep], g_ref, atol=tol, rtol=0)


@pytest.mark.parametrize("case", list(degenerate_cases()))
@pytest.mark.parametrize("route", ["gram", "dual", "auto"])
def test_pair_gradients_finite(case: str, route: str) -> None:
    a = degenerate_cases()[case]
    n = a.shape[0]
    b = randn(n, 3, seed=31)
    for fn, kwargs in [
        (matrix_mutual_information, {}),
        (mir, {"zero_entropy": "zero"}),
        (hdr, {"zero_entropy": "zero"}),
    ]:
        for inputs in ((a, b), (b, a), (a, a)):
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # zero_entropy="zero" never warns
                ga, gb = grads(fn, *inputs, route=route, **kwargs)
            assert torch.isfinite(ga).all() and torch.isfinite(gb).all(), (fn.__name__, case)


@pytest.mark.parametrize("route", ["gram", "dual", "auto"])
def test_zero_entropy_zero_mode_value_and_gradient(route: str) -> None:
    equal_rows = randn(1, 4, seed=40).repeat(5, 1)
    b = randn(5, 3, seed=41)
    one_a, one_b = randn(1, 4, seed=42), randn(1, 3, seed=43)
    for fn, inputs in ((mir, (equal_rows, b)), (mir, (one_a, one_b)), (hdr, (one_a, one_b))):
        leaves = [t.clone().requires_grad_(True) for t in inputs]
        out = fn(*leaves, route=route, zero_entropy="zero")
        assert float(out.detach()) == 0.0
        out.backward()
        for leaf in leaves:
            assert torch.isfinite(leaf.grad).all()
            assert float(leaf.grad.abs().max()) < 1e-6


def test_nan_mode_is_nan_with_a_warning() -> None:
    equal_rows = randn(1, 4, seed=44).repeat(5, 1).requires_grad_(True)
    with pytest.warns(RuntimeWarning, match="NaN"):
        out = mir(equal_rows, randn(5, 3, seed=45))
    assert math.isnan(float(out.detach()))


# ---------------------------------------------------------------------------------------------
# Autocast (bf16 inputs): spectrum in float64, result in the input's dtype
# ---------------------------------------------------------------------------------------------
def bf16_features() -> tuple[torch.nn.Linear, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    linear = torch.nn.Linear(16, 8)
    return linear, torch.randn(40, 16), torch.randn(40, 16)


@pytest.mark.parametrize("route", ["gram", "dual", "auto"])
def test_autocast_values(route: str) -> None:
    linear, za, zb = bf16_features()
    with torch.autocast("cpu", dtype=BF16):
        a, b = linear(za), linear(zb)
        assert a.dtype == BF16
        results = {
            "h": matrix_entropy(a, route=route),
            "mi": matrix_mutual_information(a, b, route=route),
            "mir": mir(a, b, route=route),
            "hdr": hdr(a, b, route=route),
        }
    a64, b64 = a.detach().double(), b.detach().double()
    references = {
        "h": matrix_entropy(a64, route=route),
        "mi": matrix_mutual_information(a64, b64, route=route),
        "mir": mir(a64, b64, route=route),
        "hdr": hdr(a64, b64, route=route),
    }
    for key, value in results.items():
        assert value.dtype == BF16, key
        ref = references[key]
        # the only error is the final rounding to bf16: at most half an ulp (eps/2 = 2^-8 relative)
        assert torch.equal(value.detach(), ref.to(BF16)), key
        assert abs(float(value.detach()) - float(ref)) <= torch.finfo(BF16).eps / 2 * abs(float(ref)) + 1e-12, key


def test_autocast_backward() -> None:
    linear, za, zb = bf16_features()
    with torch.autocast("cpu", dtype=BF16):
        a = linear(za)
        b = linear(zb)
        loss = matrix_entropy(a) - mir(a, b, zero_entropy="zero") + hdr(a, b, zero_entropy="zero")
    loss.backward()
    assert linear.weight.grad is not None
    assert torch.isfinite(linear.weight.grad).all() and float(linear.weight.grad.abs().max()) > 0

    # gradient w.r.t. a bf16 leaf: the float64 gradient rounded to bf16
    leaf = a.detach().clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=BF16):
        h = matrix_entropy(leaf)
    h.backward()
    assert leaf.grad is not None and leaf.grad.dtype == BF16
    (reference,) = grads(matrix_entropy, leaf.detach().double())
    assert torch.equal(leaf.grad, reference.to(BF16))


def test_float16_and_float32_inputs_keep_their_dtype_and_gradients() -> None:
    for dtype in (torch.float16, torch.float32):
        x = randn(12, 4, seed=50).to(dtype).requires_grad_(True)
        h = matrix_entropy(x)
        assert h.dtype == dtype
        h.backward()
        assert x.grad is not None and x.grad.dtype == dtype and torch.isfinite(x.grad).all()
