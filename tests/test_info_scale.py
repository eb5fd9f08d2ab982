"""Scale invariance over the whole float range, zero rows, non-finite inputs and the round-off clamp.

The cosine Gram of ``Z`` is that of ``c·Z`` for every ``c > 0``, so every matrix-information
measure, loss and neural-collapse ratio must be the same for ``Z``, ``Z * 1e-300`` and
``Z * 1e300`` (the row norms are computed without overflow or underflow), and the reported
measures must lie inside their ranges (entropies in ``[0, log k]``, MI in ``[0, min H]``, MIR and
HDR in ``[0, 1]``) even where round-off would push them out by an ulp.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch.autograd import gradcheck

from hf_infonc.info import (
    cosine_gram,
    entropy_at_collapse,
    entropy_terms,
    hdr,
    joint_entropy_at_collapse,
    matrix_entropy,
    matrix_mutual_information,
    mir,
    mir_at_collapse,
    mutual_information_at_collapse,
    neural_collapse_measures,
    normalize_rows,
    simplex_etf,
)
from hf_infonc.info import neural_collapse as nc
from hf_infonc.info.fused import fused_information_loss
from hf_infonc.info.mutual import raw_entropy_terms
from hf_infonc.info.ranges import clamp_to_range, roundoff_slack
from hf_infonc.info.stream import NeuralCollapseAccumulator, batched_mir_hdr
from hf_infonc.losses import (
    CrossModalAlignmentLoss,
    EntropyGapLoss,
    MutualInformationLoss,
    check_loss_inputs,
    information_terms,
)

F64, F32, BF16 = torch.float64, torch.float32, torch.bfloat16
SCALES = [1e-300, 1e-30, 1e30, 1e300]
REL = 1e-12

pytestmark = pytest.mark.usefixtures("single_blas_thread")


def randn(*shape: int, seed: int = 0, dtype: torch.dtype = F64) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def batch(n: int = 24, d: int = 6, c: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Features ``n x d``, other features ``n x 4``, head rows ``c x d`` and labels (every class present)."""
    return randn(n, d, seed=seed), randn(n, 4, seed=seed + 1), randn(c, d, seed=seed + 2), torch.arange(n) % c


def close(a: float, b: float, rel: float = REL) -> bool:
    return a == b or abs(a - b) <= rel * max(abs(a), abs(b), 1e-300)


def in_range(value: torch.Tensor, low: float, high: float) -> bool:
    """``low ≤ value ≤ high`` with the bounds rounded to ``value``'s dtype (log 30 in float32 is a
    float32 number)."""
    low_t, high_t = (torch.tensor(bound, dtype=value.dtype) for bound in (low, high))
    return bool((low_t <= value) & (value <= high_t))


def info_values(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    """The validated measures of ``a`` (and ``b``) over routes, orders and options."""
    out = {}
    for route in ("auto", "gram", "dual"):
        out[f"h {route}"] = float(matrix_entropy(a, route=route))
        out[f"mi {route}"] = float(matrix_mutual_information(a, b, route=route))
        out[f"mir {route}"] = float(mir(a, b, route=route))
        out[f"hdr {route}"] = float(hdr(a, b, route=route))
    out["h alpha=2"] = float(matrix_entropy(a, alpha=2.0))
    out["h alpha=0.5"] = float(matrix_entropy(a, alpha=0.5))
    out["h centred"] = float(matrix_entropy(a, center=True))
    out["mi centred"] = float(matrix_mutual_information(a, b, center=True))
    out["h float32 spectra"] = float(matrix_entropy(a, dtype=F32))
    return out


def loss_values(features: torch.Tensor, head: torch.Tensor, labels: torch.Tensor | None, dtype=None) -> dict[str, float]:
    """Every loss path: the modules (fused and general), information_terms and fused_information_loss."""
    out = {
        "cma": float(CrossModalAlignmentLoss(dtype=dtype)(features, labels, head)),
        "cma renyi (general)": float(CrossModalAlignmentLoss(alpha=2.0, dtype=dtype)(features, labels, head)),
        "-mi": float(MutualInformationLoss(dtype=dtype)(features, labels, head)),
        "-mir": float(MutualInformationLoss(normalized=True, dtype=dtype)(features, labels, head)),
        "-mi centred (general)": float(MutualInformationLoss(center=True, dtype=dtype)(features, labels, head)),
        "gap": float(EntropyGapLoss(dtype=dtype)(features, labels, head)),
        "hdr": float(EntropyGapLoss(normalized=True, dtype=dtype)(features, labels, head)),
    }
    loss, values = fused_information_loss(
        features, head, labels, cma_weight=0.5, mi_weight=0.1, gap_weight=0.1, dtype=dtype,
        host_labels=check_loss_inputs(features, labels, head),
    )
    out["fused loss"] = float(loss)
    out.update({f"fused value {i}": float(v) for i, v in enumerate(values)})
    return out


def assert_same(values: dict[str, float], reference: dict[str, float], rel: float = REL) -> None:
    assert values.keys() == reference.keys()
    bad = {k: (values[k], reference[k]) for k in values if not close(values[k], reference[k], rel)}
    assert not bad, bad


# ---------------------------------------------------------------------------------------------
# float64: the measures, the losses and their gradients at every scale
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scale", SCALES)
def test_measures_equal_at_every_scale(scale: float) -> None:
    a, b, _, _ = batch()
    reference = info_values(a, b)
    assert_same(info_values(a * scale, b * scale), reference)
    assert_same(info_values(a * scale, b), reference)  # each input has its own scale
    # Grams given as such (is_gram=True) scale too
    ka, kb = cosine_gram(a), cosine_gram(b)
    assert close(float(matrix_entropy(ka * scale, is_gram=True)), float(matrix_entropy(ka, is_gram=True)))
    assert close(float(matrix_entropy(ka * scale, is_gram=True, alpha=2.0)), float(matrix_entropy(ka, is_gram=True, alpha=2.0)))
    assert close(float(mir(ka * scale, kb * scale, is_gram=True)), float(mir(ka, kb, is_gram=True)))


def test_the_values_of_the_issue_are_no_longer_zero() -> None:
    """Issue 14: matrix_entropy(Z * 1e-30) and (Z * 1e160) returned 0, so MI exceeded min(H), and
    the CMA loss was 0 at 1e160."""
    a, b, head, labels = batch()
    h = float(matrix_entropy(a))
    assert h > 1.0
    for scale in (1e-30, 1e160):
        assert close(float(matrix_entropy(a * scale)), h)
        terms = entropy_terms(a * scale, b)
        assert float(matrix_mutual_information(a * scale, b)) <= min(float(terms.h_a), float(terms.h_b))
        cma = CrossModalAlignmentLoss()
        assert close(float(cma(a * scale, labels, head * scale)), float(cma(a, labels, head)))


def test_mixed_row_scales() -> None:
    """Rows of very different norms (here over ten orders of magnitude) give the Gram of their directions."""
    a, b, head, labels = batch()
    order = torch.randperm(a.shape[0], generator=torch.Generator().manual_seed(3))
    row_scales = 10.0 ** torch.linspace(-5, 5, a.shape[0], dtype=F64)[order]
    mixed = a * row_scales.unsqueeze(1)
    assert torch.allclose(cosine_gram(mixed), cosine_gram(a), rtol=0, atol=1e-15)
    def per_row(values: dict[str, float]) -> dict[str, float]:  # centring is not invariant to per-row scales
        return {k: v for k, v in values.items() if "centred" not in k}

    for scale in (1.0, *SCALES):
        assert_same(per_row(info_values(mixed * scale, b)), per_row(info_values(a, b)))
        assert_same(per_row(loss_values(mixed * scale, head, labels)), per_row(loss_values(a, head, labels)))


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("mode", ["classes", "pairs", "more classes than samples"])
def test_losses_equal_at_every_scale(scale: float, mode: str) -> None:
    a, _, head, labels = batch()
    if mode == "pairs":
        head, labels = randn(a.shape[0], a.shape[1], seed=9), None
    elif mode == "more classes than samples":
        head, labels = randn(40, a.shape[1], seed=9), torch.arange(a.shape[0]) * 3 % 40
    reference = loss_values(a, head, labels)
    assert_same(loss_values(a * scale, head * scale, labels), reference)
    assert_same(loss_values(a * scale, head, labels), reference)
    assert_same(loss_values(a, head * scale, labels), reference)


@pytest.mark.parametrize("scale", [1e-300, 1e300])
def test_loss_gradients_are_scale_invariant(scale: float) -> None:
    """``f(s·u) = f(u)``, so the gradient in ``u`` of ``u ↦ f(s·u)`` is the gradient at ``s = 1``: the
    gradient of ``f`` at ``s·u`` (of size 1/s) is computed without overflow or underflow."""
    a, _, head, labels = batch(n=12, d=4, c=3, seed=4)

    def paths(f: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        fused, _ = fused_information_loss(f, h, labels, cma_weight=0.5, mi_weight=0.3, gap_weight=0.2)
        general = CrossModalAlignmentLoss(alpha=2.0)(f, labels, h) + MutualInformationLoss(center=True)(f, labels, h)
        autograd = matrix_entropy(f, center=True) + mir(f, h[labels])
        return fused + general + autograd

    grads = []
    for s in (1.0, scale):
        f, h = a.clone().requires_grad_(True), head.clone().requires_grad_(True)
        paths(f * s, h * s).backward()
        grads.append((f.grad, h.grad))
    for reference, scaled in zip(grads[0], grads[1]):
        assert torch.isfinite(scaled).all()
        assert torch.allclose(scaled, reference, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("scale", [1e-300, 1e300])
def test_gradcheck_on_scaled_inputs(scale: float) -> None:
    a, _, head, labels = batch(n=7, d=3, c=3, seed=5)
    f, h = a.clone().requires_grad_(True), head.clone().requires_grad_(True)
    pairs_anchor = randn(7, 3, seed=6).requires_grad_(True)
    weights = {"cma_weight": 0.5, "mi_weight": 0.3, "gap_weight": 0.2}
    checks = {
        "fused classes": lambda f, h: fused_information_loss(f * scale, h * scale, labels, **weights)[0],
        "cma general (renyi)": lambda f, h: CrossModalAlignmentLoss(alpha=2.0)(f * scale, labels, h * scale),
        "mir loss": lambda f, h: MutualInformationLoss(normalized=True)(f * scale, labels, h * scale),
        "hdr loss": lambda f, h: EntropyGapLoss(normalized=True)(f * scale, labels, h * scale),
        "terms centred (general)": lambda f, h: sum(
            information_terms(f * scale, labels, h * scale, center=True)[1].__dict__.values()
        ),
        "entropy (autograd)": lambda f, h: matrix_entropy(f * scale) + matrix_mutual_information(f * scale, h[labels] * scale),
    }
    for name, fn in checks.items():
        assert gradcheck(fn, (f, h)), name
    pairs = lambda f, b: fused_information_loss(f * scale, b * scale, None, **weights)[0]  # noqa: E731
    assert gradcheck(pairs, (f, pairs_anchor))


# ---------------------------------------------------------------------------------------------
# float32 and bfloat16 inputs at the extremes of their range
# ---------------------------------------------------------------------------------------------
def power_of_two_scaled(
    x: torch.Tensor, dtype: torch.dtype, *, largest: int | None = None, smallest: int | None = None
) -> torch.Tensor:
    """``x`` times a power of two (exact) so that its largest |entry| has exponent ``largest`` or its
    smallest |entry| exponent ``smallest``, cast to ``dtype`` (exact as well: ``x`` is rounded to
    ``dtype`` first)."""
    x = x.to(dtype).double()
    exponent = torch.frexp(x.abs().amax())[1] if largest is not None else torch.frexp(x.abs().amin())[1]
    shift = (largest if largest is not None else smallest) - int(exponent)
    scaled = x * 2.0**shift
    out = scaled.to(dtype)
    assert torch.equal(out.double(), scaled) and torch.isfinite(out).all()
    return out


@pytest.mark.parametrize("dtype", [F32, BF16])
@pytest.mark.parametrize(
    "where", ["2^-100 (1e-30)", "2^100 (1e30)", "largest entry near the max", "smallest entry near the smallest normal"]
)
def test_narrow_inputs_at_the_extremes_of_their_range(dtype: torch.dtype, where: str) -> None:
    a, b, head, labels = batch(seed=7)
    a, b, head = (x.to(dtype) for x in (a, b, head))
    finfo = torch.finfo(dtype)
    if where.startswith("2^"):
        shift = -100 if where.startswith("2^-") else 100
        scaled = [power_of_two_scaled(x, dtype, largest=int(torch.frexp(x.double().abs().amax())[1]) + shift) for x in (a, b, head)]
    elif where.startswith("largest"):
        top = int(math.log2(finfo.max)) + 1  # 128: the largest entry in [2^127, max]
        scaled = [power_of_two_scaled(x, dtype, largest=top) for x in (a, b, head)]
        assert float(scaled[0].abs().max()) >= finfo.max / 2
    else:
        bottom = int(math.log2(finfo.tiny)) + 1  # the smallest |entry| in [tiny, 2·tiny)
        scaled = [power_of_two_scaled(x, dtype, smallest=bottom) for x in (a, b, head)]
        assert float(scaled[0].abs().min()) < 2 * finfo.tiny
    # the metrics (float64 spectra) and the losses in float64 and in float32 spectra
    assert_same(info_values(scaled[0], scaled[1]), info_values(a, b))
    assert_same(loss_values(scaled[0], scaled[2], labels), loss_values(a, head, labels))
    assert_same(loss_values(scaled[0], scaled[2], labels, dtype=F32), loss_values(a, head, labels, dtype=F32), rel=1e-6)


@pytest.mark.parametrize("scale", [1e-30, 1e30])
def test_float32_inputs_times_decimal_scales(scale: float) -> None:
    """``Z32 * 1e±30``: the products are rounded to float32 (a relative change of 6e-8 per entry),
    so the values agree to that rounding, with float64 and with float32 spectra."""
    a, b, head, labels = (x.float() if x.is_floating_point() else x for x in batch(seed=10))
    assert_same(info_values(a * scale, b * scale), info_values(a, b), rel=1e-5)
    assert_same(loss_values(a * scale, head * scale, labels), loss_values(a, head, labels), rel=1e-5)
    assert_same(loss_values(a * scale, head * scale, labels, dtype=F32), loss_values(a, head, labels, dtype=F32), rel=1e-4)


def test_float64_inputs_beyond_float32_with_float32_spectra() -> None:
    """A float64 input at 1e±300 survives ``dtype=torch.float32`` (it is normalised before the cast)."""
    a, b, head, labels = batch(seed=8)
    for scale in (1e-300, 1e300):
        assert close(float(matrix_entropy(a * scale, dtype=F32)), float(matrix_entropy(a, dtype=F32)), 1e-6)
        assert close(float(mir(a * scale, b * scale, dtype=F32)), float(mir(a, b, dtype=F32)), 1e-5)
        assert_same(loss_values(a * scale, head * scale, labels, dtype=F32), loss_values(a, head, labels, dtype=F32), rel=1e-6)
        f = (a * scale).requires_grad_(True)
        fused_information_loss(f, head, labels, cma_weight=1.0, mi_weight=1.0, gap_weight=1.0, dtype=F32)[0].backward()
        assert f.grad.dtype == F64 and torch.isfinite(f.grad).all() and float(f.grad.abs().max()) > 0


# ---------------------------------------------------------------------------------------------
# subnormal, tiny and zero rows
# ---------------------------------------------------------------------------------------------
def test_subnormal_rows() -> None:
    """Rows of subnormal numbers (small integers times the smallest subnormal, exact) have the
    directions of the integer rows: float64 and float32 inputs, features and head rows."""
    ints = torch.randint(-40, 41, (16, 5), generator=torch.Generator().manual_seed(11)).double()
    ints[ints.abs().sum(dim=1) == 0, 0] = 1.0
    head = torch.randint(-40, 41, (4, 5), generator=torch.Generator().manual_seed(12)).double()
    head[head.abs().sum(dim=1) == 0, 0] = 1.0
    labels = torch.arange(16) % 4
    for dtype, smallest in ((F64, 2.0**-1074), (F32, 2.0**-149)):
        sub = (ints * smallest).to(dtype)
        assert torch.equal(sub.double() / smallest, ints) and float(sub.abs().max()) < torch.finfo(dtype).tiny
        assert close(float(matrix_entropy(sub)), float(matrix_entropy(ints.to(dtype))))
        assert close(float(mir(sub, (ints[:, :3] * smallest).to(dtype))), float(mir(ints.to(dtype), ints[:, :3].to(dtype))))
        sub_head = (head * smallest).to(dtype)
        assert_same(loss_values(sub, sub_head, labels), loss_values(ints.to(dtype), head.to(dtype), labels), rel=1e-10)


def test_tiny_rows_relative_to_their_matrix_are_zero_rows_at_every_scale() -> None:
    """The documented rule: a row of norm ≤ 1e-12 × the largest |entry| of its matrix is a zero
    row (round-off of a row that should be zero, e.g. after centring), whatever the scale."""
    a = randn(10, 4, seed=13)
    tiny = torch.cat([a, 1e-14 * randn(1, 4, seed=14)])
    for scale in (1.0, *SCALES):
        assert torch.equal(normalize_rows(tiny * scale)[-1], torch.zeros(4, dtype=F64))
        assert close(float(matrix_entropy(tiny * scale)), float(matrix_entropy(a)))
    # one step above the threshold the row is a row like any other
    kept = torch.cat([a, 1e-10 * randn(1, 4, seed=14)])
    assert torch.allclose(normalize_rows(kept * 1e300)[-1].norm(), torch.tensor(1.0, dtype=F64))


def test_exact_zero_rows_as_before_at_every_scale() -> None:
    """Zero rows add a zero row and column (the value is that without them) and get a zero gradient,
    in every path and at every scale."""
    a, b, head, labels = batch(seed=15)
    with_zero = a.clone()
    with_zero[[3, 11]] = 0.0
    keep = torch.ones(a.shape[0], dtype=torch.bool)
    keep[[3, 11]] = False
    assert close(float(matrix_entropy(with_zero)), float(matrix_entropy(a[keep])))
    for scale in (1.0, *SCALES):
        assert close(float(matrix_entropy(with_zero * scale)), float(matrix_entropy(a[keep])))
        assert close(float(mir(with_zero * scale, b)), float(mir(with_zero, b)))
        f = (with_zero * scale).requires_grad_(True)
        loss, values = fused_information_loss(f, head, labels, cma_weight=0.5, mi_weight=0.1, gap_weight=0.1)
        loss.backward()
        assert torch.equal(f.grad[[3, 11]], torch.zeros(2, a.shape[1], dtype=F64))
        reference, _ = fused_information_loss(with_zero, head, labels, cma_weight=0.5, mi_weight=0.1, gap_weight=0.1)
        assert close(float(loss.detach()), float(reference.detach()))
        # pairs (CMA's 2 x 2 groups in closed form): a zero feature row, and a zero caption row elsewhere
        captions = randn(*a.shape, seed=16)
        captions[5] = 0.0
        f = (with_zero * scale).requires_grad_(True)
        c = (captions * scale).requires_grad_(True)
        pairs_loss, _ = fused_information_loss(f, c, None, cma_weight=0.5, mi_weight=0.1, gap_weight=0.1)
        pairs_loss.backward()
        assert torch.equal(f.grad[[3, 11]], torch.zeros(2, a.shape[1], dtype=F64)) and torch.equal(c.grad[5], torch.zeros(a.shape[1], dtype=F64))
        pairs_reference, _ = fused_information_loss(with_zero, captions, None, cma_weight=0.5, mi_weight=0.1, gap_weight=0.1)
        assert close(float(pairs_loss.detach()), float(pairs_reference))
    everything_zero = torch.zeros(5, 3, dtype=F64)
    assert float(matrix_entropy(everything_zero)) == 0.0


# ---------------------------------------------------------------------------------------------
# NaN and inf: a clear error, never a silent number
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_inputs_are_refused_by_name(bad: float) -> None:
    a, b, head, labels = batch(seed=16)
    broken_a, broken_b, broken_head = a.clone(), b.clone(), head.clone()
    broken_a[2, 1] = broken_b[5, 0] = broken_head[1, 3] = bad
    with pytest.raises(ValueError, match=r"`x` contains 1 NaN or inf"):
        matrix_entropy(broken_a)
    broken_gram = cosine_gram(a)
    broken_gram[0, 0] = bad
    with pytest.raises(ValueError, match=r"`x` contains 1 NaN or inf"):
        matrix_entropy(broken_gram, is_gram=True)
    for fn in (matrix_mutual_information, mir, hdr, entropy_terms):
        with pytest.raises(ValueError, match=r"`a` contains 1 NaN or inf"):
            fn(broken_a, b)
        with pytest.raises(ValueError, match=r"`b` contains 1 NaN or inf"):
            fn(a, broken_b)
    for dtype in (F64, F32, BF16):
        for loss in (CrossModalAlignmentLoss(), MutualInformationLoss(), EntropyGapLoss(normalized=True)):
            with pytest.raises(ValueError, match=r"`features` contains 1 NaN or inf"):
                loss(broken_a.to(dtype), labels, head.to(dtype))
            with pytest.raises(ValueError, match=r"`head_rows` contains 1 NaN or inf"):
                loss(a.to(dtype), labels, broken_head.to(dtype))
    with pytest.raises(ValueError, match=r"`features` contains NaN or inf"):
        neural_collapse_measures(broken_a, labels, head=head)
    with pytest.raises(ValueError, match=r"`head` contains NaN or inf"):
        neural_collapse_measures(a, labels, head=broken_head)
    with pytest.raises(ValueError, match=r"`head_rows` contains NaN or inf"):
        batched_mir_hdr(a, broken_a)
    with pytest.raises(ValueError, match=r"`features` contains NaN or inf"):
        NeuralCollapseAccumulator(5, a.shape[1]).update(broken_a, labels)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
@pytest.mark.parametrize("dtype", [F64, F32])
def test_unvalidated_fused_loss_never_turns_non_finite_inputs_into_a_number(bad: float, dtype: torch.dtype) -> None:
    """fused_information_loss does not validate (the trainer validates once per step); a NaN or inf
    entry then makes the loss NaN or an error, never a finite value (no row is silently zeroed)."""
    a, _, head, labels = batch(seed=17)
    broken = a.to(dtype)
    broken[4, 0] = bad
    try:
        loss, _ = fused_information_loss(broken, head.to(dtype), labels, cma_weight=0.5, mi_weight=0.1, gap_weight=0.1)
    except (RuntimeError, ValueError, torch.linalg.LinAlgError):
        return
    assert not math.isfinite(float(loss))


# ---------------------------------------------------------------------------------------------
# ranges: MI ≤ min(H), ratios in [0, 1], entropies in [0, log k]
# ---------------------------------------------------------------------------------------------
def degenerate_pairs() -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    a = randn(30, 6, seed=18)
    etf = simplex_etf(10, 12, generator=torch.Generator().manual_seed(0))
    y = torch.arange(40) % 10
    return [
        ("random", a, randn(30, 3, seed=19)),
        ("identical", a, a),
        ("identity", a, torch.eye(30, dtype=F64)),
        ("rank one", a, a[:1].repeat(30, 1)),
        ("constant", a, torch.ones(30, 2, dtype=F64)),
        ("rescaled rows", a, a * torch.rand(30, 1, generator=torch.Generator().manual_seed(1), dtype=F64)),
        ("ETF", etf, etf),
        ("ETF samples", etf[y], etf[y]),
        ("ETF samples, noisy", etf[y] + 1e-9 * randn(40, 12, seed=20), etf[y]),
        ("one row", a[:1], a[:1] + 1),
        ("d = 1", a[:, :1], randn(30, 1, seed=21)),
    ]


@pytest.mark.parametrize("scale", [1.0, 1e-300, 1e300])
def test_mutual_information_and_ratios_inside_their_ranges(scale: float) -> None:
    for name, a, b in degenerate_pairs():
        n = a.shape[0]
        for route in ("auto", "gram", "dual"):
            for dtype in (None, F32):
                terms = entropy_terms(a * scale, b, route=route, dtype=dtype)
                assert in_range(terms.h_a, 0.0, math.log(min(n, a.shape[1]))), (name, route, float(terms.h_a))
                assert in_range(terms.h_b, 0.0, math.log(min(n, b.shape[1]))), (name, route, float(terms.h_b))
                assert in_range(terms.h_joint, 0.0, math.log(n)), (name, route, float(terms.h_joint))
                mi = float(matrix_mutual_information(a * scale, b, route=route, dtype=dtype))
                assert 0.0 <= mi <= min(float(terms.h_a), float(terms.h_b)), (name, route, mi)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # 0/0 ratios are NaN (documented)
                    for ratio in (mir(a * scale, b, route=route, dtype=dtype), hdr(a * scale, b, route=route, dtype=dtype)):
                        assert math.isnan(float(ratio)) or 0.0 <= float(ratio) <= 1.0, (name, route, float(ratio))


def _check_clamp(raw: float, value: float, top: float, slack: float, crossed: dict, what: str, bound: str,
                 where: tuple, *, exact: bool = True) -> None:
    """``raw`` lies in ``[0, top]`` up to ``slack``; ``value`` is it moved onto the bound it crossed (counted in
    ``crossed``), and ``raw`` itself inside the range when ``exact``."""
    assert -slack <= raw <= top + slack, (*where, what, raw, top)
    if raw < 0:
        crossed[f"{what} < 0"] += 1
        assert value == 0.0
    elif raw > top:
        crossed[f"{what} > {bound}"] += 1
        assert value == top
    elif exact:
        assert value == raw


def test_round_off_is_clamped_at_the_edges() -> None:
    """Constructed cases whose unclamped values leave the range by round-off: the reported value is
    then exactly on the bound, and the unclamped one was within the round-off slack."""
    crossed = {"H < 0": 0, "H > log k": 0, "MI < 0": 0, "MI > min H": 0}
    for name, x, y in degenerate_pairs():
        n = x.shape[0]
        for route in ("auto", "gram", "dual"):
            raw = raw_entropy_terms(x, y, route=route)
            terms = entropy_terms(x, y, route=route)
            mi = float(matrix_mutual_information(x, y, route=route))
            slack = roundoff_slack(F64, n)
            for raw_h, h, rank in ((raw.h_a, terms.h_a, min(n, x.shape[1])), (raw.h_b, terms.h_b, min(n, y.shape[1]))):
                _check_clamp(float(raw_h), float(h), math.log(rank), slack, crossed, "H", "log k", (name, route))
            low = min(float(terms.h_a), float(terms.h_b))
            _check_clamp(float(raw.mutual_information), mi, low, slack, crossed, "MI", "min H", (name, route), exact=False)
    assert crossed["H < 0"] and crossed["MI > min H"], crossed  # the clamp has work to do in these cases
    a = randn(30, 6, seed=18)
    rank_one = a[:1].repeat(30, 1)
    assert 0.0 <= float(matrix_entropy(rank_one)) < 1e-15
    assert 1.0 - 1e-15 < float(hdr(a, rank_one)) <= 1.0
    assert 1.0 - 1e-15 < float(mir(a, torch.eye(30, dtype=F64))) <= 1.0
    etf = simplex_etf(10)
    assert math.log(9) - 1e-15 < float(matrix_entropy(etf)) <= math.log(9)
    assert math.log(7) - 1e-15 < float(matrix_entropy(torch.eye(7, dtype=F64))) <= math.log(7)
    assert float(hdr(etf, etf)) == 0.0


def test_closed_forms_at_collapse_inside_their_ranges() -> None:
    """The closed forms of hf_infonc.info.collapse, C = 2 included (its joint Gram is 11ᵀ: H = 0)."""
    assert float(joint_entropy_at_collapse(2)) == 0.0 and float(mutual_information_at_collapse(2)) == 0.0
    for c in range(2, 120):
        h, joint, mi = (float(f(c)) for f in (entropy_at_collapse, joint_entropy_at_collapse, mutual_information_at_collapse))
        assert 0.0 <= h <= joint <= math.log(c) and 0.0 <= mi <= h, c
        assert math.isclose(joint, float(matrix_entropy(cosine_gram(simplex_etf(c)) ** 2, is_gram=True)), abs_tol=1e-12)
        if c > 2:
            assert 0.0 < float(mir_at_collapse(c)) <= 1.0


def test_class_level_measures_inside_their_ranges() -> None:
    """Two classes: the centred class means are anti-parallel (entropy 0), so class_hdr is 1: it
    came out as 1.0000000000000002 before the clamp (issue 14)."""
    for seed in range(12):
        x = randn(64, 5, seed=seed)
        y = torch.arange(64) % 2
        head = randn(2, 5, seed=seed + 100)
        with pytest.warns(RuntimeWarning, match="class-level MIR is 0/0"):  # H(G(M)) = 0: MIR undefined
            out = neural_collapse_measures(x, y, head=head)
        assert 0.0 <= out["class_mean_entropy"] < 1e-15
        assert 1.0 - 1e-15 < out["class_hdr"] <= 1.0
        assert 0.0 <= out["head_entropy"] <= math.log(2)
        assert 0.0 <= out["class_mi"] <= min(out["head_entropy"], out["class_mean_entropy"])
        assert 0.0 <= out["sample_mi"] <= min(out["sample_feature_entropy"], out["sample_head_entropy"])
        assert 0.0 <= out["sample_hdr"] <= 1.0 and 0.0 <= out["sample_mir"] <= 1.0
        assert 0.0 <= out["nc3"] <= 2.0


def test_clamp_to_range_moves_round_off_only_and_keeps_the_gradient() -> None:
    slack = roundoff_slack(F64, 10)
    x = torch.tensor([-1e-16, 0.5, 1.0 + 2e-16, -1e-3, 1.5, math.nan, 2.0], dtype=F64, requires_grad=True)
    out = clamp_to_range(x, 0.0, 1.0, slack)
    assert out[:5].tolist() == [0.0, 0.5, 1.0, -1e-3, 1.5]  # round-off clamped, real errors left visible
    assert math.isnan(float(out[5].detach())) and float(out[6].detach()) == 2.0
    out.sum().backward()
    assert torch.equal(x.grad, torch.ones(7, dtype=F64))  # straight-through
    bound = torch.tensor([0.25], dtype=F64)
    above = torch.tensor([0.25], dtype=F64).nextafter(torch.tensor(1.0, dtype=F64))
    assert float(above) > 0.25 and float(clamp_to_range(above, 0.0, bound, slack)) == 0.25
    # a clamped entropy is still differentiable, with the gradient of the unclamped value
    rank_one = randn(1, 4, seed=22).repeat(6, 1).requires_grad_(True)
    matrix_entropy(rank_one).backward()
    assert torch.isfinite(rank_one.grad).all()


# ---------------------------------------------------------------------------------------------
# the neural-collapse measures (one-pass sums scaled by powers of two)
# ---------------------------------------------------------------------------------------------
NC_INVARIANT = (
    "nc1", "nc2", "nc2_equinorm", "nc2_equiangular", "nc3", "head_entropy", "class_mean_entropy", "class_mi",
    "class_mir", "class_hdr", "sample_mir", "sample_hdr", "sample_mi", "sample_feature_entropy",
    "sample_head_entropy", "classifier_accuracy", "nc4", "ncc_accuracy",
)


def nc_data(seed: int = 23) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    c, d = 5, 7
    means = 3 * randn(c, d, seed=seed)
    y = torch.arange(150) % c
    x = means[y] + randn(150, d, seed=seed + 1)
    return x, y, means + 0.3 * randn(c, d, seed=seed + 2)


def assert_nc_same(out: dict, reference: dict, variance_factor: float) -> None:
    bad = {k: (out[k], reference[k]) for k in NC_INVARIANT if not close(out[k], reference[k], 1e-11)}
    assert not bad, bad
    expected = reference["within_class_variance"] * variance_factor
    if math.isinf(expected) or expected > torch.finfo(F64).max:
        assert out["within_class_variance"] == math.inf  # the true value exceeds float64: inf, not a wrong number
    else:
        assert close(out["within_class_variance"], expected, 1e-11)


@pytest.mark.parametrize("scale", SCALES)
def test_neural_collapse_measures_equal_at_every_scale(scale: float) -> None:
    x, y, head = nc_data()
    reference = neural_collapse_measures(x, y, head=head)
    assert_nc_same(neural_collapse_measures(x * scale, y, head=head * scale), reference, scale * scale)
    assert_nc_same(neural_collapse_measures(x * scale, y, head=head), reference, scale * scale)


def test_neural_collapse_functions_at_every_scale() -> None:
    x, y, head = nc_data(seed=30)
    means = torch.stack([x[y == c].mean(0) for c in range(5)])
    m = means - means.mean(0)
    sigma_w = torch.cov(torch.cat([x[y == c] - means[c] for c in range(5)]).T, correction=0)
    for scale in (1e-150, 1e-30, 1e30, 1e150):  # Σ_W scales by s²: representable down to 1e-150
        assert close(nc.nc1(sigma_w * scale**2, m * scale), nc.nc1(sigma_w, m), 1e-11)
        for fn in (nc.nc2, nc.nc2_equinorm, nc.nc2_equiangular):
            assert close(fn(m * scale), fn(m), 1e-11)
        assert close(nc.nc3(head * scale, m), nc.nc3(head, m), 1e-11)
        assert torch.equal(nc.nearest_center_predictions(x * scale, means * scale), nc.nearest_center_predictions(x, means))
        assert torch.equal(nc.head_predictions(x * scale, head * scale), nc.head_predictions(x, head))
    for scale in (1e-300, 1e300):
        for fn in (nc.nc2, nc.nc2_equinorm, nc.nc2_equiangular):
            assert close(fn(m * scale), fn(m), 1e-11)
        assert close(nc.nc3(head * scale, m * scale), nc.nc3(head, m), 1e-11)
        assert torch.equal(nc.nearest_center_predictions(x * scale, means * scale), nc.nearest_center_predictions(x, means))
        assert torch.equal(nc.head_predictions(x * scale, head * scale), nc.head_predictions(x, head))


def test_accumulator_mixes_scales_across_batches_and_merges() -> None:
    """Batches of very different scales: the sums are rescaled by powers of two as needed, and
    merging accumulators at different scales equals one pass over both."""
    x, y, head = nc_data(seed=40)
    x = x.clone()
    x[75:] *= 1e200
    one = NeuralCollapseAccumulator(5, x.shape[1], head=head)
    for start in range(0, 150, 25):
        one.update(x[start : start + 25], y[start : start + 25])
    for first, second in ((x[:75], x[75:]), (x[75:], x[:75])):
        left, right = NeuralCollapseAccumulator(5, x.shape[1], head=head), NeuralCollapseAccumulator(5, x.shape[1], head=head)
        left.update(first, y[:75])
        right.update(second, y[75:])
        merged = left.merge(right).compute()
        single = NeuralCollapseAccumulator(5, x.shape[1], head=head)
        single.update(torch.cat([first, second]), torch.cat([y[:75], y[75:]]))
        expected = single.compute()
        for key in ("nc1", "nc2", "nc3", "class_mir", "class_hdr", "within_class_variance"):
            assert close(merged[key], expected[key], 1e-10), key
    # the large half dominates the class means: the measures are those of the large half alone
    large = NeuralCollapseAccumulator(5, x.shape[1], head=head)
    large.update(x[75:], y[75:])
    assert close(one.compute()["nc2"], large.compute()["nc2"], 1e-10)
    assert torch.allclose(one.class_means(), torch.stack([x[y == c].mean(0) for c in range(5)]), rtol=1e-12, atol=0)
