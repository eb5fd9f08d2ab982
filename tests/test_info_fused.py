"""The fused information terms (hf_infonc.info.fused) against autograd references, gradcheck and the dispatch."""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd import gradcheck
from torch.utils._python_dispatch import TorchDispatchMode

from hf_infonc import losses
from hf_infonc.info import entropy_terms, matrix_entropy, simplex_etf
from hf_infonc.info.fused import fused_information_terms, fused_supported
from hf_infonc.losses import CrossModalAlignmentLoss, information_terms

F64 = torch.float64

pytestmark = pytest.mark.usefixtures("single_blas_thread")


def randn(*shape: int, seed: int = 0, dtype: torch.dtype = F64) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def leaf(x: torch.Tensor) -> torch.Tensor:
    return x.detach().clone().requires_grad_(True)


def reference(features, anchors, labels, *, cma=True, terms=True, joint=True):
    """CMA and the entropy terms through autograd: a loop of matrix_entropy per group, entropy_terms."""
    out = {}
    if cma:
        if labels is None:
            groups = [torch.stack([anchors[i], features[i]]) for i in range(features.shape[0])]
            out["cma"] = torch.stack([matrix_entropy(g) for g in groups]).mean() / math.log(2.0)
        else:
            values = []
            for c in labels.unique().tolist():
                rows = torch.cat([anchors[c : c + 1], features[labels == c]])
                values.append(matrix_entropy(rows) / math.log(rows.shape[0]))
            out["cma"] = torch.stack(values).mean()
    if terms:
        rows = anchors if labels is None else anchors[labels]
        t = entropy_terms(features, rows, joint=joint)
        out.update(h_a=t.h_a, h_b=t.h_b)
        if joint:
            out["h_joint"] = t.h_joint
    return out


def fused(features, anchors, labels, *, cma=True, terms=True, joint=True, dtype=None):
    c, t = fused_information_terms(features, anchors, labels, cma=cma, entropy_terms=terms, joint=joint, dtype=dtype)
    out = {}
    if c is not None:
        out["cma"] = c
    if t is not None:
        out.update(h_a=t.h_a, h_b=t.h_b)
        if t.h_joint is not None:
            out["h_joint"] = t.h_joint
    return out


COEF = {"cma": 0.7, "h_a": 0.3, "h_b": -0.9, "h_joint": 1.3}


def compare(features, anchors, labels, *, tol=1e-12, **flags):
    """Values and gradients of the fused path equal the autograd reference."""
    f1, a1 = leaf(features), leaf(anchors)
    ref = reference(f1, a1, labels, **flags)
    sum(COEF[k] * v for k, v in ref.items()).backward()
    f2, a2 = leaf(features), leaf(anchors)
    new = fused(f2, a2, labels, **flags)
    assert set(new) == set(ref)
    sum(COEF[k] * v for k, v in new.items()).backward()
    for key in ref:
        assert new[key].dtype == F64
        assert float(new[key].detach()) == pytest.approx(float(ref[key].detach()), abs=tol), key
    scale = max(float(f1.grad.abs().max()), float(a1.grad.abs().max()), 1.0)
    assert torch.allclose(f2.grad, f1.grad, rtol=0, atol=tol * scale)
    assert torch.allclose(a2.grad, a1.grad, rtol=0, atol=tol * scale)
    return new


def with_zero_rows(x: torch.Tensor, *rows: int) -> torch.Tensor:
    x = x.clone()
    x[list(rows)] = 0.0
    return x


# (features, anchors, labels); labels None = image-caption pairs
CASES = {
    "classes, d < n (dual marginals)": lambda: (randn(40, 8, seed=1), randn(6, 8, seed=2), torch.arange(40) % 6),
    "classes, n <= d, C < n (C x C head marginal)": lambda: (
        randn(12, 16, seed=3), randn(5, 16, seed=4), torch.arange(12) % 5
    ),
    "classes, n <= d, C >= n (n x n head marginal)": lambda: (
        randn(6, 16, seed=5), randn(9, 16, seed=6), torch.tensor([0, 8, 3, 3, 7, 0])
    ),
    "classes, unused head rows and uneven classes": lambda: (
        randn(30, 10, seed=7), randn(12, 10, seed=8), torch.tensor([2] * 17 + [5] * 9 + [11] * 3 + [0])
    ),
    "classes, one class": lambda: (randn(9, 4, seed=9), randn(3, 4, seed=10), torch.full((9,), 1)),
    "classes, one sample per class": lambda: (randn(5, 8, seed=11), randn(5, 8, seed=12), torch.arange(5)),
    "classes, zero rows": lambda: (
        with_zero_rows(randn(20, 6, seed=13), 3, 11), with_zero_rows(randn(4, 6, seed=14), 2), torch.arange(20) % 4
    ),
    "classes, batch of one": lambda: (randn(1, 7, seed=15), randn(3, 7, seed=16), torch.tensor([2])),
    "classes, rank deficient": lambda: (
        randn(24, 2, seed=17) @ randn(2, 9, seed=18), randn(4, 9, seed=19), torch.arange(24) % 4
    ),
    "classes, neural collapse (ETF, repeated eigenvalues)": lambda: (
        simplex_etf(5, 8)[torch.arange(20) % 5], simplex_etf(5, 8), torch.arange(20) % 5
    ),
    "classes, all features equal (H = 0)": lambda: (
        randn(1, 6, seed=20).repeat(9, 1), randn(3, 6, seed=21), torch.arange(9) % 3
    ),
    "pairs, d < n": lambda: (randn(32, 8, seed=22), randn(32, 8, seed=23), None),
    "pairs, n <= d": lambda: (randn(8, 16, seed=24), randn(8, 16, seed=25), None),
    "pairs, zero rows": lambda: (with_zero_rows(randn(12, 6, seed=26), 4), with_zero_rows(randn(12, 6, seed=27), 4, 7), None),
    "pairs, batch of one": lambda: (randn(1, 5, seed=28), randn(1, 5, seed=29), None),
    "pairs, caption = image (c = 1)": lambda: (randn(10, 6, seed=30), None, None),
}


def case(name: str):
    features, anchors, labels = CASES[name]()
    if anchors is None:  # each caption equals its image: every pair group has entropy 0
        anchors = features * 2.0
    return features, anchors, labels


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize(
    "flags",
    [dict(), dict(terms=False), dict(cma=False), dict(cma=False, joint=False), dict(joint=False)],
    ids=["cma+terms", "cma", "terms", "marginals", "cma+marginals"],
)
def test_fused_equals_the_autograd_reference(name: str, flags: dict) -> None:
    compare(*case(name), **flags)


def test_pair_groups_with_identical_rows_have_zero_entropy_and_finite_gradient() -> None:
    features = randn(10, 6, seed=31)
    f, a = leaf(features), leaf(features * 3.0)
    out = fused(f, a, None, terms=False)
    assert abs(float(out["cma"].detach())) < 1e-15
    out["cma"].backward()
    assert torch.isfinite(f.grad).all() and torch.isfinite(a.grad).all()


@pytest.mark.parametrize("labels", [torch.tensor([0, 2, 2, 1, 0, 2]), None], ids=["classes", "pairs"])
@pytest.mark.parametrize("d", [3, 8], ids=["dual", "gram"])
def test_gradcheck(labels, d: int) -> None:
    features = leaf(randn(6, d, seed=32))
    anchors = leaf(randn(6 if labels is None else 3, d, seed=33))

    def total(f, a):
        c, t = fused_information_terms(f, a, labels, cma=True, entropy_terms=True)
        return 0.7 * c + 0.3 * t.h_a - 0.9 * t.h_b + 1.3 * t.h_joint

    assert gradcheck(total, (features, anchors), eps=1e-6, atol=1e-7)


def test_without_gradients_gives_the_same_values() -> None:
    features, anchors, labels = case("classes, d < n (dual marginals)")
    with_grad = fused(leaf(features), leaf(anchors), labels)
    with torch.no_grad():
        without = fused(features, anchors, labels)
    for key, value in with_grad.items():
        assert float(without[key]) == pytest.approx(float(value.detach()), abs=1e-13)


def test_float32_spectra_and_half_precision_inputs() -> None:
    features, anchors, labels = case("classes, d < n (dual marginals)")
    exact = reference(features, anchors, labels)
    low = fused(features.float(), anchors.float(), labels, dtype=torch.float32)
    for key, value in exact.items():
        assert low[key].dtype == torch.float32
        assert float(low[key]) == pytest.approx(float(value), abs=1e-5), key
    f, a = leaf(features.bfloat16()), leaf(anchors.bfloat16())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fused(f, a, labels)
    ref = reference(features.bfloat16().double(), anchors.bfloat16().double(), labels)
    for key, value in ref.items():  # spectra in float64 outside autocast, on the bf16 values
        assert out[key].dtype == F64
        assert float(out[key].detach()) == pytest.approx(float(value), abs=1e-12), key
    sum(out.values()).backward()
    assert f.grad.dtype == torch.bfloat16 and a.grad.dtype == torch.bfloat16


def test_inputs_are_not_modified() -> None:
    features, anchors, labels = case("classes, zero rows")
    f, a, y = leaf(features), leaf(anchors), labels.clone()
    sum(fused(f, a, y).values()).backward()
    assert torch.equal(f.detach(), features) and torch.equal(a.detach(), anchors) and torch.equal(y, labels)


class ScalarReads(TorchDispatchMode):
    """Counts the single-value host reads (``_local_scalar_dense``: ``float(t)``, ``t.item()``)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += "_local_scalar_dense" in str(func)
        return func(*args, **(kwargs or {}))


@pytest.fixture
def tolist_reads(monkeypatch) -> list:
    """The shapes of the tensors read to the host with ``tolist`` (which the dispatcher does not see)."""
    reads: list = []
    tolist = torch.Tensor.tolist
    monkeypatch.setattr(torch.Tensor, "tolist", lambda self: reads.append(self.shape) or tolist(self))
    return reads


def test_one_host_sync_for_cma_of_classes_and_none_otherwise(tolist_reads) -> None:
    """The CMA layout of a labelled batch reads the labels once (``tolist``); nothing else syncs."""
    classes, pairs = case("classes, d < n (dual marginals)"), case("pairs, d < n")
    for (features, anchors, labels), flags, expected in (
        (classes, dict(), [classes[2].shape]), (classes, dict(cma=False), []), (pairs, dict(), [])
    ):
        tolist_reads.clear()
        with ScalarReads() as scalars:
            sum(fused(leaf(features), leaf(anchors), labels, **flags).values()).backward()
        assert scalars.count == 0
        assert tolist_reads == expected
    features, anchors, labels = classes
    host_labels = labels.tolist()
    tolist_reads.clear()
    with ScalarReads() as scalars:  # labels already on the host (check_loss_inputs returns them): no read at all
        fused_information_terms(leaf(features), leaf(anchors), labels, cma=True, entropy_terms=True,
                                host_labels=host_labels)
    assert scalars.count == 0 and tolist_reads == []


def test_check_loss_inputs_reads_the_host_once_and_returns_the_labels(tolist_reads) -> None:
    features, anchors, labels = case("classes, d < n (dual marginals)")
    expected = labels.tolist()
    for labels_in, result in ((labels, expected), (labels.int(), expected), (None, None)):
        tolist_reads.clear()
        with ScalarReads() as scalars:
            host = losses.check_loss_inputs(features, labels_in, anchors if labels_in is not None else features)
        assert host == result and scalars.count == 0 and len(tolist_reads) == 1


def test_supported_cases() -> None:
    common = dict(cma_alpha=1.0, entropy_terms=True, joint=True, center=False)
    assert fused_supported(128, 16, 10, True, **common)  # 16 x 10 = 160 ≥ 128: Hadamard joint
    assert not fused_supported(256, 16, 10, True, **common)  # Kronecker dual (160 < 256): general path
    assert fused_supported(256, 16, 10, True, **{**common, "joint": False})
    assert fused_supported(256, 512, 10, True, **common)
    assert not fused_supported(32, 16, 10, True, **{**common, "cma_alpha": 2.0})
    assert fused_supported(32, 16, 10, True, **{**common, "cma_alpha": None})
    assert not fused_supported(32, 16, 10, True, **{**common, "center": True})
    assert fused_supported(32, 16, 10, True, **{**common, "center": True, "entropy_terms": False})
    assert not fused_supported(32, 16, 10, True, **{**common, "cma_alpha": None, "entropy_terms": False})


@pytest.mark.parametrize(
    "n,d,alpha,center,expect_fused",
    [(40, 16, 1.0, False, True), (40, 16, 2.0, False, False), (40, 16, 1.0, True, False), (40, 4, 1.0, False, False)],
    ids=["fused", "renyi", "centred", "kronecker"],
)
def test_information_terms_dispatch_gives_the_same_values(monkeypatch, n, d, alpha, center, expect_fused) -> None:
    calls = []
    real = losses.fused_information_terms

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(losses, "fused_information_terms", spy)
    features, anchors = randn(n, d, seed=34), randn(3, d, seed=35)  # d = 4: 4 x 3 < 40 takes the Kronecker dual
    labels = torch.arange(n) % 3
    cma, terms = information_terms(features, labels, anchors, cma=CrossModalAlignmentLoss(alpha=alpha), center=center)
    assert bool(calls) == expect_fused
    ref_cma = torch.stack([
        matrix_entropy(torch.cat([anchors[c : c + 1], features[labels == c]]), alpha=alpha) / math.log(n // 3 + 1 + (c < n % 3))
        for c in range(3)
    ]).mean()
    ref = entropy_terms(features, anchors[labels], center=center)
    assert float(cma) == pytest.approx(float(ref_cma), abs=1e-12)
    for key in ("h_a", "h_b", "h_joint"):
        assert float(getattr(terms, key)) == pytest.approx(float(getattr(ref, key)), abs=1e-12)
