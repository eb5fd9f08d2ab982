"""Losses: values against independent references, edge cases never NaN, and each loss does its job."""

from __future__ import annotations

import math

import pytest
import torch

from hf_infonc.info import entropy_at_collapse, entropy_terms, matrix_entropy, matrix_mutual_information, simplex_etf
from hf_infonc.losses import (
    CrossModalAlignmentLoss,
    EntropyGapLoss,
    MutualInformationLoss,
    check_loss_inputs,
    clip_contrastive_loss,
    information_terms,
)

ALL_LOSSES = [
    CrossModalAlignmentLoss(),
    MutualInformationLoss(),
    MutualInformationLoss(normalized=True),
    EntropyGapLoss(),
    EntropyGapLoss(normalized=True),
]
IDS = ["cma", "mi", "mir", "gap", "hdr"]


def _cma_reference(features, labels, head):
    """Loop over classes, one group at a time (docs/theory.md §4)."""
    values = []
    for c in labels.unique():
        group = torch.cat([features[labels == c], head[c : c + 1]])
        values.append(matrix_entropy(group.double()) / math.log(group.shape[0]))
    return torch.stack(values).mean()


def test_cma_equals_per_class_loop():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(30, 12, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 5, (30,), generator=g)
    labels[:3] = torch.tensor([7, 7, 9])  # classes 7 and 9 appear, others of the 10 head rows do not
    head = torch.randn(10, 12, generator=g, dtype=torch.float64)
    assert float(CrossModalAlignmentLoss()(features, labels, head)) == pytest.approx(float(_cma_reference(features, labels, head)), abs=1e-10)


def test_cma_is_zero_when_groups_collapse_on_their_anchor():
    head = simplex_etf(4, 8)
    labels = torch.tensor([0, 0, 1, 2, 2, 2, 3])
    features = head[labels] * torch.rand(7, 1, dtype=torch.float64).add(0.5)  # positive rescaling only
    assert float(CrossModalAlignmentLoss()(features, labels, head)) == pytest.approx(0.0, abs=1e-9)


def test_cma_is_one_for_orthogonal_group():
    """Group of features orthogonal to each other and to the anchor: H = log|S_c|, so CMA = 1."""
    eye = torch.eye(6, dtype=torch.float64)
    features, labels, head = eye[:3], torch.zeros(3, dtype=torch.long), eye[5:6]
    assert float(CrossModalAlignmentLoss()(features, labels, head)) == pytest.approx(1.0, abs=1e-12)


def test_mi_and_gap_losses_match_info_functions():
    g = torch.Generator().manual_seed(1)
    features = torch.randn(40, 16, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 6, (40,), generator=g)
    head = torch.randn(6, 16, generator=g, dtype=torch.float64)
    targets = head[labels]
    mi = matrix_mutual_information(features, targets)
    h1, h2 = matrix_entropy(features), matrix_entropy(targets)
    assert float(MutualInformationLoss()(features, labels, head)) == pytest.approx(-float(mi), abs=1e-10)
    assert float(MutualInformationLoss(normalized=True)(features, labels, head)) == pytest.approx(-float(mi / min(h1, h2)), abs=1e-10)
    assert float(EntropyGapLoss()(features, labels, head)) == pytest.approx(abs(float(h1 - h2)), abs=1e-10)
    assert float(EntropyGapLoss(normalized=True)(features, labels, head)) == pytest.approx(abs(float(h1 - h2)) / max(float(h1), float(h2)), abs=1e-10)


def test_losses_at_collapse():
    """Features equal to their class's ETF head row: gap 0, MI = H(log(C-1))-level value from the closed form."""
    C = 5
    head = simplex_etf(C, 12, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(C).repeat(4)
    assert float(EntropyGapLoss()(head[labels], labels, head)) == pytest.approx(0.0, abs=1e-10)
    mi = -float(MutualInformationLoss()(head[labels], labels, head))
    assert 0 < mi <= float(entropy_at_collapse(C)) + 1e-10


@pytest.mark.parametrize("loss", ALL_LOSSES, ids=IDS)
@pytest.mark.parametrize(
    "case",
    ["one_class", "single_sample_class", "zero_entropy", "batch_of_one", "duplicate_rows", "zero_row"],
)
def test_losses_never_nan(loss, case):
    g = torch.Generator().manual_seed(2)
    head = torch.randn(4, 8, generator=g)
    if case == "one_class":
        features, labels = torch.randn(6, 8, generator=g), torch.zeros(6, dtype=torch.long)
    elif case == "single_sample_class":
        features, labels = torch.randn(5, 8, generator=g), torch.tensor([0, 0, 1, 1, 3])
    elif case == "zero_entropy":
        features, labels = torch.ones(5, 8), torch.zeros(5, dtype=torch.long)
    elif case == "batch_of_one":
        features, labels = torch.randn(1, 8, generator=g), torch.tensor([2])
    elif case == "duplicate_rows":
        features, labels = torch.randn(1, 8, generator=g).repeat(6, 1), torch.tensor([0, 1, 0, 1, 2, 2])
    else:
        features, labels = torch.randn(5, 8, generator=g), torch.tensor([0, 1, 2, 3, 0])
        features[2] = 0.0
    features = features.clone().requires_grad_(True)
    value = loss(features, labels, head)
    assert value.dim() == 0 and torch.isfinite(value)
    value.backward()
    assert torch.isfinite(features.grad).all()


@pytest.mark.parametrize("loss", ALL_LOSSES, ids=IDS)
def test_losses_under_bf16_autocast(loss):
    g = torch.Generator().manual_seed(3)
    layer = torch.nn.Linear(8, 8)
    x, labels, head = torch.randn(12, 8, generator=g), torch.randint(0, 4, (12,), generator=g), torch.randn(4, 8, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        features = layer(x)
        value = loss(features, labels, head)
    assert features.dtype == torch.bfloat16 and torch.isfinite(value)
    value.float().backward()
    assert torch.isfinite(layer.weight.grad).all()


def test_losses_do_not_mutate_inputs():
    g = torch.Generator().manual_seed(4)
    features, labels, head = torch.randn(10, 6, generator=g), torch.randint(0, 3, (10,), generator=g), torch.randn(3, 6, generator=g)
    copies = (features.clone(), labels.clone(), head.clone())
    for loss in ALL_LOSSES:
        loss(features, labels, head)
    for original, copy in zip((features, labels, head), copies):
        assert torch.equal(original, copy)


def _optimise(loss_fn, features, steps=150, lr=0.05):
    features = features.clone().requires_grad_(True)
    optimiser = torch.optim.Adam([features], lr=lr)
    first = float(loss_fn(features))
    for _ in range(steps):
        optimiser.zero_grad()
        loss_fn(features).backward()
        optimiser.step()
    return first, float(loss_fn(features)), features.detach()


def test_cma_pulls_image_features_to_their_text_feature():
    g = torch.Generator().manual_seed(5)
    head = torch.nn.functional.normalize(torch.randn(3, 16, generator=g), dim=-1)
    labels = torch.arange(3).repeat(5)
    start = torch.randn(15, 16, generator=g)
    first, last, features = _optimise(lambda f: CrossModalAlignmentLoss()(f, labels, head), start)
    assert last < 0.25 * first
    # A cosine Gram cannot tell parallel from anti-parallel rows, so CMA aligns each feature with
    # the line of its anchor; the cross-entropy of the total loss picks the sign.
    cos_before = torch.nn.functional.cosine_similarity(start, head[labels]).abs().mean()
    cos_after = torch.nn.functional.cosine_similarity(features, head[labels]).abs().mean()
    assert cos_after > 0.9 > 0.5 > cos_before


def test_mi_loss_increases_mutual_information():
    g = torch.Generator().manual_seed(6)
    head = torch.randn(4, 16, generator=g)
    labels = torch.arange(4).repeat(6)
    first, last, _ = _optimise(lambda f: MutualInformationLoss()(f, labels, head), torch.randn(24, 16, generator=g))
    assert last < first - 0.2  # -MI decreases, i.e. MI grows


def test_entropy_gap_loss_closes_the_gap():
    g = torch.Generator().manual_seed(7)
    head = torch.randn(4, 16, generator=g)
    labels = torch.arange(4).repeat(6)
    first, last, _ = _optimise(lambda f: EntropyGapLoss()(f, labels, head), torch.randn(24, 16, generator=g))
    assert first > 0.3 and last < 0.05 * first


def test_label_errors():
    features, head = torch.randn(4, 6), torch.randn(3, 6)
    with pytest.raises(ValueError, match=r"labels range over \[0, 5\] but there are 3 head rows"):
        MutualInformationLoss()(features, torch.tensor([0, 1, 5, 2]), head)
    with pytest.raises(ValueError, match="labels range"):
        CrossModalAlignmentLoss()(features, torch.tensor([0, -100, 1, 2]), head)
    with pytest.raises(TypeError, match="integer class indices"):
        EntropyGapLoss()(features, torch.tensor([0.0, 1.0, 2.0, 0.0]), head)
    with pytest.raises(ValueError, match=r"expected \(4,\)"):
        EntropyGapLoss()(features, torch.tensor([0, 1]), head)
    with pytest.raises(ValueError, match="same space"):
        CrossModalAlignmentLoss()(features, torch.tensor([0, 1, 2, 0]), torch.randn(3, 5))


def test_clip_contrastive_loss_matches_transformers():
    from hf_infonc.testing import tiny_clip

    model = tiny_clip()
    g = torch.Generator().manual_seed(8)
    pixels = torch.randn(6, 3, 32, 32, generator=g)
    ids = torch.randint(1000, 3000, (6, 7), generator=g)
    ids[:, 0], ids[:, -1] = 101, 102
    with torch.no_grad():
        reference = model(input_ids=ids, pixel_values=pixels, return_loss=True).loss
        image = model.get_image_features(pixel_values=pixels).pooler_output
        text = model.get_text_features(input_ids=ids).pooler_output
        ours = clip_contrastive_loss(image, text, model.logit_scale.exp())
    assert float(ours) == pytest.approx(float(reference), abs=1e-6)


# ---------------------------------------------------------------------------------------------
# Validation once, the no-validation fast path, pairs, the one-pass computation
# ---------------------------------------------------------------------------------------------
def _batch(seed=10, n=24, d=8, c=5):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, c, (n,), generator=g), torch.randn(c, d, generator=g)


def _value_and_grads(fn, features, head):
    f, h = features.clone().requires_grad_(True), head.clone().requires_grad_(True)
    value = fn(f, h)
    value.backward()
    return value.detach(), f.grad, h.grad


@pytest.mark.parametrize("loss", ALL_LOSSES, ids=IDS)
def test_validate_false_gives_the_same_value_and_gradient(loss):
    features, labels, head = _batch()
    checked = _value_and_grads(lambda f, h: loss(f, labels, h), features, head)
    fast = _value_and_grads(lambda f, h: loss(f, labels, h, validate=False), features, head)
    for a, b in zip(checked, fast):
        assert torch.equal(a, b)


def test_cma_gradient_equals_the_per_class_loop():
    """Closed-form backward of the batched groups = autograd through one matrix_entropy per class."""
    g = torch.Generator().manual_seed(11)
    features, labels, head = torch.randn(30, 12, generator=g, dtype=torch.float64), torch.randint(0, 5, (30,), generator=g), torch.randn(6, 12, generator=g, dtype=torch.float64)
    for alpha in (1.0, 2.0, 0.5):
        ours = _value_and_grads(lambda f, h: CrossModalAlignmentLoss(alpha=alpha)(f, labels, h), features, head)

        def reference(f, h):
            values = [
                matrix_entropy(torch.cat([f[labels == c], h[c : c + 1]]), alpha=alpha) / math.log(int((labels == c).sum()) + 1)
                for c in labels.unique()
            ]
            return torch.stack(values).mean()

        ref = _value_and_grads(reference, features, head)
        for a, b in zip(ours, ref):
            assert torch.allclose(a, b, rtol=0, atol=1e-12)


def test_pairs_mode_equals_labels_arange():
    """labels=None: one head row (caption) per sample, the trainer's image–caption mode."""
    g = torch.Generator().manual_seed(12)
    images, captions = torch.randn(10, 6, generator=g, dtype=torch.float64), torch.randn(10, 6, generator=g, dtype=torch.float64)
    arange = torch.arange(10)
    for loss in ALL_LOSSES:
        pairs = _value_and_grads(lambda f, h: loss(f, None, h), images, captions)
        indexed = _value_and_grads(lambda f, h: loss(f, arange, h), images, captions)
        for a, b in zip(pairs, indexed):
            assert torch.allclose(a, b, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="labels=None means image–caption pairs"):
        CrossModalAlignmentLoss()(images, None, captions[:9])


def test_one_pass_equals_the_loss_modules():
    features, labels, head = _batch(13)
    cma, terms = information_terms(features.double(), labels, head.double(), cma=CrossModalAlignmentLoss())
    assert cma.dtype == torch.float64
    assert float(cma) == pytest.approx(float(CrossModalAlignmentLoss()(features.double(), labels, head.double())), abs=1e-14)
    assert float(MutualInformationLoss().from_terms(terms)) == pytest.approx(
        float(MutualInformationLoss()(features.double(), labels, head.double())), abs=1e-14
    )
    assert float(EntropyGapLoss().from_terms(terms)) == pytest.approx(
        float(EntropyGapLoss()(features.double(), labels, head.double())), abs=1e-14
    )
    reference = entropy_terms(features.double(), head.double()[labels])
    for name in ("h_a", "h_b", "h_joint"):
        assert float(getattr(terms, name)) == pytest.approx(float(getattr(reference, name)), abs=1e-12)


def test_float32_spectra_stay_close():
    features, labels, head = _batch(14, n=64, d=16, c=10)
    for loss_type in (CrossModalAlignmentLoss, MutualInformationLoss, EntropyGapLoss):
        v64 = float(loss_type()(features, labels, head))
        v32 = float(loss_type(dtype=torch.float32)(features, labels, head))
        assert v32 == pytest.approx(v64, abs=1e-5)
    with pytest.raises(ValueError, match="Half precision is never used"):
        CrossModalAlignmentLoss(dtype=torch.float16)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_inputs_are_named(bad):
    features, labels, head = _batch(15)
    broken = features.clone()
    broken[3, 2] = bad
    for loss in ALL_LOSSES:
        with pytest.raises(ValueError, match=r"`features` contains 1 NaN or inf"):
            loss(broken, labels, head)
    broken_head = head.clone()
    broken_head[0, 0] = bad
    with pytest.raises(ValueError, match=r"`head_rows` contains 1 NaN or inf"):
        check_loss_inputs(features, labels, broken_head)


def test_a_sum_that_overflows_is_not_an_error():
    """The NaN/inf check sums the inputs in float64; an overflowing sum of finite values falls back to the exact scan."""
    features, labels, head = _batch(16)
    huge = features.clone()
    huge[:, 0] = 3.0e38  # finite; its float32 sum would overflow, its float64 sum does not
    assert check_loss_inputs(huge, labels, head) == labels.tolist()
    assert torch.isfinite(CrossModalAlignmentLoss()(huge, labels, head))
    larger = features.double()
    larger[:, 0] = 1.0e308  # finite, but even the float64 sum overflows to inf
    assert check_loss_inputs(larger, labels, head.double()) == labels.tolist()  # no error


def test_uint8_labels_are_class_indices_not_a_mask():
    """uint8 labels give the loss of the same int64 labels, on the Gram route and on the Kronecker route
    of the joint (d < n, few classes)."""
    g = torch.Generator().manual_seed(0)
    features = torch.randn(3, 6, generator=g, dtype=torch.float64)
    head = torch.randn(3, 6, generator=g, dtype=torch.float64)
    labels = torch.tensor([1, 1, 2])
    for loss in (MutualInformationLoss(center=True), EntropyGapLoss(center=True), MutualInformationLoss(),
                 CrossModalAlignmentLoss(alpha=2.0)):
        assert float(loss(features, labels.to(torch.uint8), head)) == float(loss(features, labels, head))
    assert float(MutualInformationLoss(center=True)(features, labels.to(torch.uint8), head)) == pytest.approx(0.0, abs=1e-12)
    features = torch.randn(40, 2, generator=g, dtype=torch.float64)
    head, labels = torch.randn(2, 2, generator=g, dtype=torch.float64), torch.arange(40) % 2
    mi = MutualInformationLoss()
    assert float(mi(features, labels.to(torch.uint8), head)) == float(mi(features, labels, head))


@pytest.mark.parametrize("alpha", [2.0, 0.5, 3.0])
def test_info_alpha_reaches_the_mi_and_gap_terms(alpha):
    """InformationLoss(alpha=α) computes -MI and |ΔH| with Rényi-α entropies (the general path, since the
    fused one is von Neumann only), as hf_infonc.info does; α = 1 stays on the fused path."""
    from hf_infonc.info.fused import fused_supported
    from hf_infonc.losses import InformationLoss

    g = torch.Generator().manual_seed(0)
    f, w = torch.randn(16, 8, generator=g, dtype=torch.float64), torch.randn(4, 8, generator=g, dtype=torch.float64)
    y = torch.arange(16) % 4
    terms = entropy_terms(f, w[y], alpha=alpha)
    mi = InformationLoss(mi_weight=1.0, alpha=alpha)(f, y, w, log_ratios=False, validate=True)[0]
    gap = InformationLoss(gap_weight=1.0, alpha=alpha)(f, y, w, log_ratios=False, validate=True)[0]
    assert float(mi) == pytest.approx(-float(matrix_mutual_information(f, w[y], alpha=alpha)), abs=1e-10)
    assert float(gap) == pytest.approx(abs(float(terms.h_a - terms.h_b)), abs=1e-10)
    assert float(mi) != pytest.approx(float(InformationLoss(mi_weight=1.0)(f, y, w, log_ratios=False)[0]), abs=1e-3)
    assert not InformationLoss(mi_weight=1.0, alpha=alpha).fused_applies(f, y, w, True)
    assert InformationLoss(mi_weight=1.0).fused_applies(f, y, w, True)
    assert not fused_supported(16, 8, 4, True, cma_alpha=None, entropy_terms=True, joint=True, center=False,
                               terms_alpha=alpha)
    assert MutualInformationLoss(alpha=alpha)(f, y, w).item() == pytest.approx(float(mi), abs=1e-12)


@pytest.mark.parametrize("name, setting, value, message", [
    ("mi_weight", "mi_weight", -1.0, r"mi_weight=-1.0 must be a finite number ≥ 0"),
    ("mi_weight", "mi_weight", math.nan, r"mi_weight=nan must be a finite number ≥ 0"),
    ("gap_weight", "entropy_gap_weight", math.inf, r"gap_weight=inf must be a finite number ≥ 0"),
    ("cma_weight", "cma_weight", 5.0, r"cma_weight=5.0 must lie in \[0, 1\]"),
])
def test_information_loss_checks_its_weights(name, setting, value, message):
    """InformationLoss's weights obey the rules of InfoNCTrainingArguments (``setting``: the same weight there)."""
    from hf_infonc.losses import InformationLoss
    from hf_infonc.training_args import InfoNCTrainingArguments

    with pytest.raises(ValueError, match=message):
        InformationLoss(**{name: value})
    with pytest.raises(ValueError, match=message.replace(name, setting, 1)):
        InfoNCTrainingArguments(output_dir="unused", **{setting: value})


def test_meta_tensors_are_refused_with_a_clear_error():
    f = torch.randn(8, 5, device="meta")
    w = torch.randn(3, 5, device="meta")
    y = torch.zeros(8, dtype=torch.long, device="meta")
    with pytest.raises(ValueError, match=r"`features` is a meta tensor: meta tensors hold no data.*materialise the model"):
        MutualInformationLoss()(f, y, w)
    with pytest.raises(ValueError, match=r"`labels` is a meta tensor"):
        MutualInformationLoss()(torch.randn(8, 5), y, torch.randn(3, 5))
    with pytest.raises(ValueError, match=r"`x` is a meta tensor.*device_map='meta'"):
        matrix_entropy(f)
