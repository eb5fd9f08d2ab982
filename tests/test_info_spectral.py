"""Closed-form gradients (hf_infonc.info.spectral): equal to the autograd path, gradcheck, degenerate inputs."""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd import gradcheck
from torch.utils._python_dispatch import TorchDispatchMode

from hf_infonc.info import entropy_terms, matrix_entropy, simplex_etf
from hf_infonc.info.spectral import (
    Groups,
    Terms,
    cosine_gram_entropy_terms,
    group_entropies,
    information_entropies,
    spectral_entropy,
)

F64 = torch.float64

pytestmark = pytest.mark.usefixtures("single_blas_thread")


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def leaf(x: torch.Tensor) -> torch.Tensor:
    return x.detach().clone().requires_grad_(True)


def weighted(terms, weights=(0.3, -0.7, 1.1)) -> torch.Tensor:
    out = weights[0] * terms.h_a + weights[1] * terms.h_b
    return out if terms.h_joint is None else out + weights[2] * terms.h_joint


def compare_terms(a, b, b_index=None, *, alpha=1.0, center=False, joint=True, rank_bound_b=None, tol=1e-12):
    """Values and gradients of cosine_gram_entropy_terms against hf_infonc.info.entropy_terms (autograd)."""
    a1, b1 = leaf(a), leaf(b)
    rows = b1 if b_index is None else b1[b_index]
    ref = entropy_terms(a1, rows, alpha=alpha, center=center, joint=joint)
    weighted(ref).backward()
    a2, b2 = leaf(a), leaf(b)
    new = cosine_gram_entropy_terms(
        a2, b2, b_index=b_index, alpha=alpha, center=center, joint=joint, rank_bound_b=rank_bound_b
    )
    weighted(new).backward()
    for name in ("h_a", "h_b") + (("h_joint",) if joint else ()):
        assert float(getattr(new, name).detach()) == pytest.approx(float(getattr(ref, name).detach()), abs=tol), name
    scale = max(float(a1.grad.abs().max()), float(b1.grad.abs().max()), 1.0)
    assert torch.allclose(a2.grad, a1.grad, rtol=0, atol=tol * scale)
    assert torch.allclose(b2.grad, b1.grad, rtol=0, atol=tol * scale)
    return new


def with_zero_row(x: torch.Tensor, row: int) -> torch.Tensor:
    x = x.clone()
    x[row] = 0.0
    return x


TERM_CASES = {
    "dual/dual (d < n)": lambda: (randn(32, 16, seed=1), randn(32, 16, seed=2), None),
    "gram/gram (d >= n)": lambda: (randn(8, 16, seed=3), randn(8, 12, seed=4), None),
    "mixed routes": lambda: (randn(12, 5, seed=5), randn(12, 30, seed=6), None),
    "head rows by labels": lambda: (randn(40, 8, seed=7), randn(6, 8, seed=8), torch.arange(40) % 6),
    "kronecker (d_a d_b < n)": lambda: (randn(40, 3, seed=9), randn(40, 4, seed=10), None),
    "zero rows": lambda: (with_zero_row(randn(12, 6, seed=11), 4), with_zero_row(randn(12, 5, seed=12), 7), None),
    "rank deficient": lambda: (randn(20, 2, seed=13) @ randn(2, 9, seed=14), randn(20, 9, seed=15), None),
    "duplicate rows": lambda: (randn(5, 4, seed=16)[torch.arange(15) % 5], randn(15, 4, seed=17), None),
    "repeated eigenvalues (ETF)": lambda: (
        simplex_etf(5, 8)[torch.arange(20) % 5], simplex_etf(5, 8), torch.arange(20) % 5
    ),
    "batch of one": lambda: (randn(1, 7, seed=18), randn(1, 7, seed=19), None),
    "all rows equal (H = 0)": lambda: (randn(1, 6, seed=20).repeat(9, 1), randn(9, 6, seed=21), None),
}


@pytest.mark.parametrize("case", list(TERM_CASES))
def test_terms_equal_the_autograd_path(case: str) -> None:
    a, b, index = TERM_CASES[case]()
    compare_terms(a, b, index)
    compare_terms(a, b, index, joint=False)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 2.0, 3.0])
@pytest.mark.parametrize("case", ["dual/dual (d < n)", "gram/gram (d >= n)", "zero rows", "all rows equal (H = 0)"])
def test_terms_renyi_equal_the_autograd_path(case: str, alpha: float) -> None:
    a, b, index = TERM_CASES[case]()
    compare_terms(a, b, index, alpha=alpha)


@pytest.mark.parametrize("case", ["dual/dual (d < n)", "head rows by labels", "kronecker (d_a d_b < n)", "zero rows"])
def test_terms_centred_equal_the_autograd_path(case: str) -> None:
    a, b, index = TERM_CASES[case]()
    compare_terms(a, b, index, center=True)


def test_kronecker_route_with_a_rank_bound() -> None:
    # b = head[labels] has rank ≤ 3: 8·3 < 40 takes the Kronecker dual, with the rank reduction
    a, head, labels = randn(40, 8, seed=22), randn(3, 8, seed=23), torch.arange(40) % 3
    compare_terms(a, head, labels, rank_bound_b=3)
    compare_terms(a, head, labels, rank_bound_b=3, center=True)


def test_default_route_makes_no_host_sync_and_batches_the_marginals() -> None:
    class Count(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.names: list[str] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.append(str(func))
            return func(*args, **(kwargs or {}))

    a, b = leaf(randn(32, 16, seed=24)), leaf(randn(32, 16, seed=25))
    with Count() as count:
        terms = cosine_gram_entropy_terms(a, b)
        weighted(terms).backward()
    assert not any("_local_scalar_dense" in name for name in count.names)
    # the two 16 x 16 marginals share one batched eigh; the 32 x 32 joint has its own
    assert sum("linalg_eigh" in name for name in count.names) == 2


# ---------------------------------------------------------------------------------------------
# Group entropies (CMA's groups)
# ---------------------------------------------------------------------------------------------
def group_layout(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Classes present, the slot of each sample (class k's rows start at k·width, row 0 = anchor), width."""
    classes = labels.unique()
    width = int(torch.bincount(labels).max()) + 1
    slots = torch.empty_like(labels)
    for k, c in enumerate(classes.tolist()):
        members = (labels == c).nonzero().flatten()
        slots[members] = k * width + 1 + torch.arange(members.numel())
    return classes, slots, width


def group_reference(features, head, labels, alpha=1.0) -> torch.Tensor:
    """One matrix_entropy per class on [features of the class; head row] (autograd)."""
    return torch.stack(
        [matrix_entropy(torch.cat([head[c : c + 1], features[labels == c]]), alpha=alpha) for c in labels.unique()]
    )


@pytest.mark.parametrize("alpha", [1.0, 0.5, 2.0])
@pytest.mark.parametrize("n,d,classes", [(30, 12, 5), (40, 4, 3), (6, 8, 6)], ids=["gram", "dual", "one-per-class"])
def test_group_entropies_equal_the_per_class_loop(n: int, d: int, classes: int, alpha: float) -> None:
    features, head = randn(n, d, seed=30), randn(classes + 2, d, seed=31)  # two head rows never used
    labels = torch.arange(n) % classes
    features[1] = 0.0  # a zero row
    f1, h1 = leaf(features), leaf(head)
    ref = group_reference(f1, h1, labels, alpha)
    weights = torch.linspace(0.5, 1.5, ref.shape[0], dtype=F64)
    (ref * weights).sum().backward()
    f2, h2 = leaf(features), leaf(head)
    present, slots, width = group_layout(labels)
    new = group_entropies(f2, h2, anchor_index=present, slots=slots, width=width, alpha=alpha)
    (new * weights).sum().backward()
    assert torch.allclose(new, ref, rtol=0, atol=1e-12)
    assert torch.allclose(f2.grad, f1.grad, rtol=0, atol=1e-12)
    assert torch.allclose(h2.grad, h1.grad, rtol=0, atol=1e-12)
    assert torch.equal(h2.grad[classes:], torch.zeros(2, d, dtype=F64))


def test_pair_groups_equal_the_per_pair_loop() -> None:
    features, captions = randn(9, 6, seed=32), randn(9, 6, seed=33)
    captions[4] = 0.0  # a zero caption: its group has one non-zero row, entropy 0
    f1, c1 = leaf(features), leaf(captions)
    ref = torch.stack([matrix_entropy(torch.stack([c1[i], f1[i]])) for i in range(9)])
    ref.sum().backward()
    f2, c2 = leaf(features), leaf(captions)
    new = group_entropies(f2, c2)
    new.sum().backward()
    assert float(new[4].detach()) == 0.0
    assert torch.allclose(new, ref, rtol=0, atol=1e-12)
    assert torch.allclose(f2.grad, f1.grad, rtol=0, atol=1e-12)
    assert torch.allclose(c2.grad, c1.grad, rtol=0, atol=1e-12)


def test_one_pass_equals_separate_calls() -> None:
    features, head = randn(24, 5, seed=34), randn(4, 5, seed=35)
    labels = torch.arange(24) % 4
    present, slots, width = group_layout(labels)
    weights = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=F64)
    groups = Groups(anchor_index=present, slots=slots, width=width, weights=weights, alpha=1.0)
    terms = Terms(b_index=labels, center=False, joint=True, rank_bound_b=4)

    def loss(f, h, separate):
        if separate:
            g = information_entropies(f, h, groups=groups)[0]
            t = information_entropies(f, h, terms=terms)[1]
        else:
            g, t = information_entropies(f, h, groups=groups, terms=terms)
        return g + weighted(t)

    grads = []
    for separate in (True, False):
        f, h = leaf(features), leaf(head)
        value = loss(f, h, separate)
        value.backward()
        grads.append((float(value), f.grad, h.grad))
    assert grads[0][0] == pytest.approx(grads[1][0], abs=1e-13)
    assert torch.allclose(grads[0][1], grads[1][1], rtol=0, atol=1e-13)
    assert torch.allclose(grads[0][2], grads[1][2], rtol=0, atol=1e-13)


def test_one_pass_with_equal_sized_group_and_marginal_problems() -> None:
    # pairs in R^2: the 2 x 2 group Grams and the 2 x 2 duals of the marginals share one eigh call
    images, captions = randn(7, 2, seed=36), randn(7, 2, seed=37)
    groups, terms = Groups(weights=1.0 / (7 * math.log(2.0))), Terms()
    f, c = leaf(images), leaf(captions)
    g, t = information_entropies(f, c, groups=groups, terms=terms)
    (g + weighted(t)).backward()
    f1, c1 = leaf(images), leaf(captions)
    ref_g = torch.stack([matrix_entropy(torch.stack([c1[i], f1[i]])) for i in range(7)]).mean() / math.log(2.0)
    ref_t = entropy_terms(f1, c1)
    (ref_g + weighted(ref_t)).backward()
    assert float(g.detach()) == pytest.approx(float(ref_g.detach()), abs=1e-12)
    assert torch.allclose(f.grad, f1.grad, rtol=0, atol=1e-12)
    assert torch.allclose(c.grad, c1.grad, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# gradcheck (float64)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [1.0, 0.5, 2.0, 3.0])
def test_gradcheck_terms(alpha: float) -> None:
    a, b = leaf(randn(9, 4, seed=40)), leaf(randn(9, 3, seed=41))
    assert gradcheck(lambda s, t: weighted(cosine_gram_entropy_terms(s, t, alpha=alpha)), (a, b))
    a, b = leaf(randn(5, 7, seed=42)), leaf(randn(5, 6, seed=43))  # Gram routes
    assert gradcheck(lambda s, t: weighted(cosine_gram_entropy_terms(s, t, alpha=alpha)), (a, b))


def test_gradcheck_terms_centred_indexed_and_kronecker() -> None:
    a, head, labels = leaf(randn(12, 3, seed=44)), leaf(randn(3, 3, seed=45)), torch.arange(12) % 3
    fn = lambda s, h: weighted(cosine_gram_entropy_terms(s, h, b_index=labels, center=True))  # noqa: E731
    assert gradcheck(fn, (a, head))
    # 3·3 < 12: the Kronecker route
    fn = lambda s, h: weighted(cosine_gram_entropy_terms(s, h, b_index=labels, rank_bound_b=3))  # noqa: E731
    assert gradcheck(fn, (a, head))


def test_gradcheck_terms_degenerate_inputs() -> None:
    # zero row: its gradient is 0, the others are smooth
    a, b = leaf(with_zero_row(randn(8, 5, seed=46), 2)), leaf(randn(8, 4, seed=47))
    assert gradcheck(lambda s, t: weighted(cosine_gram_entropy_terms(s, t)), (a, b))
    # rank 2 in R^6 for every u: the masked zero eigenvalues must not disturb the gradient
    v, u, b = randn(2, 6, seed=48), leaf(randn(10, 2, seed=49)), randn(10, 3, seed=50)
    assert gradcheck(lambda t: weighted(cosine_gram_entropy_terms(t @ v, b)), (u,))
    # repeated eigenvalues: a perturbed simplex ETF (eigenvalue 1/(C-1) of multiplicity C-1)
    etf = leaf(simplex_etf(5, 6) + 1e-3 * randn(5, 6, seed=51))
    idx = torch.arange(15) % 5
    assert gradcheck(lambda w: weighted(cosine_gram_entropy_terms(w[idx], w, b_index=idx)), (etf,))


@pytest.mark.parametrize("alpha", [1.0, 0.5, 2.0])
def test_gradcheck_groups(alpha: float) -> None:
    labels = torch.tensor([0, 2, 2, 0, 3, 2, 0, 2])
    present, slots, width = group_layout(labels)
    features, head = leaf(randn(8, 6, seed=52)), leaf(randn(4, 6, seed=53))
    fn = lambda f, h: group_entropies(f, h, anchor_index=present, slots=slots, width=width, alpha=alpha)  # noqa: E731
    assert gradcheck(fn, (features, head))
    features, head = leaf(randn(8, 2, seed=54)), leaf(randn(4, 2, seed=55))  # d < width: dual route
    assert gradcheck(fn, (features, head))
    pairs, captions = leaf(randn(5, 3, seed=56)), leaf(randn(5, 3, seed=57))
    assert gradcheck(lambda f, c: group_entropies(f, c, alpha=alpha), (pairs, captions))


# ---------------------------------------------------------------------------------------------
# Degenerate values, dtypes, autocast, no side effects
# ---------------------------------------------------------------------------------------------
def test_zero_matrix_has_zero_entropy_and_zero_gradient() -> None:
    p = torch.zeros(3, 4, 4, dtype=F64)
    for alpha in (1.0, 0.5, 2.0):
        spec = spectral_entropy(p, alpha, need_grad=True)
        assert torch.equal(spec.h, torch.zeros(3, dtype=F64))
        assert torch.equal(spec.grad(torch.ones(3, dtype=F64)), torch.zeros(3, 4, 4, dtype=F64))
    a = leaf(torch.zeros(4, 3, dtype=F64))
    terms = cosine_gram_entropy_terms(a, randn(4, 3, seed=58))
    weighted(terms).backward()
    assert float(terms.h_a) == 0.0 and float(terms.h_joint) == 0.0
    assert torch.equal(a.grad, torch.zeros(4, 3, dtype=F64))


def test_batch_of_one_is_zero_with_zero_gradient() -> None:
    a, b = leaf(randn(1, 5, seed=59)), leaf(randn(1, 5, seed=60))
    terms = cosine_gram_entropy_terms(a, b)
    weighted(terms).backward()
    assert (float(terms.h_a), float(terms.h_b), float(terms.h_joint)) == (0.0, 0.0, 0.0)
    assert float(a.grad.abs().max()) < 1e-12 and float(b.grad.abs().max()) < 1e-12


def test_no_grad_values_equal_the_values_with_gradients() -> None:
    a, head, labels = randn(30, 6, seed=61), randn(4, 6, seed=62), torch.arange(30) % 4
    with_grad = cosine_gram_entropy_terms(leaf(a), leaf(head), b_index=labels)
    with torch.no_grad():
        without = cosine_gram_entropy_terms(leaf(a), leaf(head), b_index=labels)  # eigvalsh, nothing kept
    assert not without.h_a.requires_grad
    for name in ("h_a", "h_b", "h_joint"):
        assert float(getattr(without, name)) == pytest.approx(float(getattr(with_grad, name)), abs=1e-13)


def test_float32_spectra_are_close_to_float64() -> None:
    a, head, labels = randn(64, 16, seed=63), randn(10, 16, seed=64), torch.arange(64) % 10
    t64 = cosine_gram_entropy_terms(a, head, b_index=labels)
    t32 = cosine_gram_entropy_terms(a, head, b_index=labels, dtype=torch.float32)
    assert t32.h_a.dtype == torch.float32
    for name in ("h_a", "h_b", "h_joint"):
        assert float(getattr(t32, name)) == pytest.approx(float(getattr(t64, name)), abs=2e-5)
    with pytest.raises(ValueError, match="Half precision is never used"):
        cosine_gram_entropy_terms(a, head, b_index=labels, dtype=torch.bfloat16)


def test_autocast_inputs_get_float64_spectra_and_gradients_in_their_dtype() -> None:
    torch.manual_seed(0)
    layer = torch.nn.Linear(8, 8)
    x, head, labels = torch.randn(20, 8), torch.randn(3, 8), torch.arange(20) % 3
    with torch.autocast("cpu", dtype=torch.bfloat16):
        features = layer(x)
        terms = cosine_gram_entropy_terms(features, head, b_index=labels)
    assert features.dtype == torch.bfloat16 and terms.h_a.dtype == F64
    reference = entropy_terms(features.detach().double(), head[labels].double())
    assert float(terms.h_joint) == pytest.approx(float(reference.h_joint), abs=1e-12)
    weighted(terms).backward()
    assert layer.weight.grad is not None and torch.isfinite(layer.weight.grad).all()


def test_inputs_are_not_modified() -> None:
    a, head, labels = randn(12, 4, seed=65), randn(3, 4, seed=66), torch.arange(12) % 3
    present, slots, width = group_layout(labels)
    copies = (a.clone(), head.clone(), labels.clone(), slots.clone())
    f, h = leaf(a), leaf(head)
    g, t = information_entropies(
        f, h, groups=Groups(anchor_index=present, slots=slots, width=width), terms=Terms(b_index=labels)
    )
    (g.sum() + weighted(t)).backward()
    for original, copy in zip((f.detach(), h.detach(), labels, slots), copies):
        assert torch.equal(original, copy)


def test_the_gradient_is_not_itself_differentiable() -> None:
    # documented: no second derivatives here (the autograd path of hf_infonc.info.entropy has them)
    a = leaf(randn(6, 3, seed=67))
    terms = cosine_gram_entropy_terms(a, randn(6, 3, seed=68))
    (grad,) = torch.autograd.grad(weighted(terms), a, create_graph=True)
    assert not grad.requires_grad


def test_known_values() -> None:
    # docs/theory.md §3: ETF C = 10, balanced batch: H = log 9, H(G ⊙ G) = 2.301921
    head = simplex_etf(10, 16)
    labels = torch.arange(10).repeat(3)
    terms = cosine_gram_entropy_terms(head[labels], head, b_index=labels)
    assert float(terms.h_a) == pytest.approx(math.log(9), abs=1e-12)
    assert float(terms.h_b) == pytest.approx(math.log(9), abs=1e-12)
    assert float(terms.h_joint) == pytest.approx(2.301921, abs=1e-6)
