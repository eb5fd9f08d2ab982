"""Tests of hf_infonc.info.stream (one-pass NC1-NC4, class- and sample-level MIR/HDR).

The reference below is a straightforward two-pass computation in numpy float64 that shares no
code with hf_infonc.info: class means first, then the within-class covariance from the centred
samples, Σ_B⁺ from an eigen-decomposition of the d x d Σ_B, and matrix entropies from
numpy's eigvalsh of the n x n cosine Grams.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hf_infonc.info import entropy_at_collapse, mir_at_collapse, simplex_etf
from hf_infonc.info.stream import (
    NearestCenterAgreement,
    NeuralCollapseAccumulator,
    batched_mir_hdr,
    neural_collapse_measures,
)

TOL = 1e-8


# ---------------------------------------------------------------------------------------------
# reference (numpy, two passes)
# ---------------------------------------------------------------------------------------------


def ref_entropy(gram: np.ndarray) -> float:
    lam = np.linalg.eigvalsh(gram / np.trace(gram))
    lam = lam[lam > 1e-12]
    return float(-(lam * np.log(lam)).sum())


def ref_cosine_gram(z: np.ndarray) -> np.ndarray:
    zn = z / np.linalg.norm(z, axis=1, keepdims=True)
    return zn @ zn.T


def ref_pair(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    ga, gb = ref_cosine_gram(a), ref_cosine_gram(b)
    return ref_entropy(ga), ref_entropy(gb), ref_entropy(ga * gb)


def reference(x, y, num_classes, head=None, bias=None, batch=64, global_mean="class", drop_last=False):
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y)
    present = [c for c in range(num_classes) if (y == c).any()]
    p = len(present)
    means = np.stack([x[y == c].mean(axis=0) for c in present])  # pass 1
    mu_g = means.mean(axis=0) if global_mean == "class" else x.mean(axis=0)
    m = means - mu_g
    sw = np.zeros((x.shape[1], x.shape[1]))
    for k, c in enumerate(present):  # pass 2
        dev = x[y == c] - means[k]
        sw += dev.T @ dev
    sw /= x.shape[0]
    sb = m.T @ m / p
    vals, vecs = np.linalg.eigh(sb)
    r = min(p - 1, x.shape[1])
    vals, vecs = vals[-r:], vecs[:, -r:]
    sb_pinv = vecs @ np.diag(1.0 / vals) @ vecs.T
    out = {"nc1": float(np.trace(sw @ sb_pinv) / p), "within_class_variance": float(np.trace(sw))}
    g = m @ m.T
    e = np.eye(p) - 1.0 / p
    out["nc2"] = float(np.linalg.norm(g / np.linalg.norm(g) - e / np.linalg.norm(e)))
    norms = np.linalg.norm(m, axis=1)
    out["nc2_equinorm"] = float(norms.std() / norms.mean())
    cos = ref_cosine_gram(m)
    off = ~np.eye(p, dtype=bool)
    out["nc2_equiangular"] = float(np.abs(cos[off] + 1.0 / (p - 1)).mean())
    if head is not None:
        w = np.asarray(head, dtype=np.float64)
        wp = w[present]
        out["nc3"] = float(np.linalg.norm(wp / np.linalg.norm(wp) - m / np.linalg.norm(m)))
        ha, hb, hj = ref_pair(wp, m)
        out.update(head_entropy=ha, class_mean_entropy=hb, class_mi=ha + hb - hj)
        out["class_mir"] = (ha + hb - hj) / min(ha, hb) if min(ha, hb) > 1e-9 else math.nan
        out["class_hdr"] = abs(ha - hb) / max(ha, hb) if max(ha, hb) > 1e-9 else math.nan
        # sample level: consecutive batches of `batch` rows, the last one partial
        mirs, hdrs, has, hbs, mis = [], [], [], [], []
        for start in range(0, x.shape[0], batch):
            xs, ys = x[start : start + batch], y[start : start + batch]
            if drop_last and xs.shape[0] < batch:
                continue
            ha, hb, hj = ref_pair(xs, w[ys])
            has.append(ha), hbs.append(hb), mis.append(ha + hb - hj)
            mirs.append((ha + hb - hj) / min(ha, hb) if min(ha, hb) > 1e-9 else math.nan)
            hdrs.append(abs(ha - hb) / max(ha, hb) if max(ha, hb) > 1e-9 else math.nan)
        out["sample_mir"] = float(np.nanmean(mirs))
        out["sample_hdr"] = float(np.nanmean(hdrs))
        out["sample_feature_entropy"] = float(np.mean(has))
        out["sample_head_entropy"] = float(np.mean(hbs))
        out["sample_mi"] = float(np.mean(mis))
        out["sample_num_batches"] = len(mis)
        scores = x @ w.T + (0.0 if bias is None else np.asarray(bias))
        pred = scores.argmax(axis=1)
        full_means = np.full((num_classes, x.shape[1]), np.inf)
        full_means[present] = means
        dist = ((x[:, None, :] - full_means[None, :, :]) ** 2).sum(axis=2)
        dist[:, [c for c in range(num_classes) if c not in present]] = np.inf
        ncc = dist.argmin(axis=1)
        out["nc4"] = float((pred != ncc).mean())
        out["ncc_accuracy"] = float((ncc == y).mean())
        out["classifier_accuracy"] = float((pred == y).mean())
    return out


def assert_matches(result: dict, ref: dict, tol: float = TOL) -> None:
    for key, expected in ref.items():
        assert key in result, f"missing key {key}"
        got = result[key]
        if isinstance(expected, float) and math.isnan(expected):
            assert math.isnan(got), f"{key}: expected NaN, got {got}"
        else:
            assert got == pytest.approx(expected, abs=tol, rel=tol), f"{key}: {got} != {expected}"


def make_data(n=700, d=12, c=5, noise=0.7, seed=0, offset=2.0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(c, d, generator=g, dtype=torch.float64) * 2 + offset
    y = torch.randint(0, c, (n,), generator=g)
    x = centres[y] + noise * torch.randn(n, d, generator=g, dtype=torch.float64)
    head = torch.randn(c, d, generator=g, dtype=torch.float64)
    return x, y, head


def run_all(x, y, c, head=None, sizes=None, **kwargs):
    acc = NeuralCollapseAccumulator(c, x.shape[1], head=head, **kwargs)
    if sizes is None:
        acc.update(x, y)
    else:
        start, i = 0, 0
        while start < x.shape[0]:
            stop = min(x.shape[0], start + sizes[i % len(sizes)])
            acc.update(x[start:stop], y[start:stop])
            start, i = stop, i + 1
    return acc


# ---------------------------------------------------------------------------------------------
# against the reference
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("global_mean", ["class", "sample"])
def test_matches_two_pass_reference(global_mean):
    x, y, head = make_data()
    out = neural_collapse_measures(x, y, head=head, global_mean=global_mean)
    ref = reference(x, y, 5, head=head, global_mean=global_mean)
    assert_matches(out, ref)
    assert out["num_samples"] == 700 and out["num_absent_classes"] == 0
    assert out["sample_num_batches"] == math.ceil(700 / 64)
    # sanity: the quantities are not trivial, so the comparison means something
    assert 0.01 < out["nc1"] and 0.01 < out["nc2"] and 0.01 < out["nc3"] and 0 < out["nc4"] < 1


def test_float32_inputs_and_bias_and_drop_last():
    x, y, head = make_data(n=300, d=20, c=4, seed=3)
    bias = torch.tensor([0.5, -1.0, 0.0, 2.0], dtype=torch.float64)
    out = neural_collapse_measures(x.float(), y, head=head.float(), bias=bias.float(), drop_last=True)
    ref = reference(x.float().double(), y, 4, head=head.float().double(), bias=bias.float().double(), drop_last=True)
    assert_matches(out, ref, tol=1e-7)
    assert out["sample_num_batches"] == 300 // 64


def test_logits_override_head_for_predictions():
    x, y, head = make_data(n=200, seed=5)
    logits = torch.randn(200, 5, generator=torch.Generator().manual_seed(9))
    out = neural_collapse_measures(x, y, head=head, logits=logits)
    pred = logits.argmax(1).numpy()
    ref_means = np.stack([x[y == c].mean(0).numpy() for c in range(5)])
    ncc = ((x.numpy()[:, None] - ref_means[None]) ** 2).sum(2).argmin(1)
    assert out["nc4"] == pytest.approx(float((pred != ncc).mean()), abs=0)
    assert out["classifier_accuracy"] == pytest.approx(float((pred == y.numpy()).mean()), abs=0)


def test_class_level_head_at_compute():
    x, y, head = make_data(n=400, seed=2)
    acc = run_all(x, y, 5)
    out = acc.compute(head=head)
    ref = reference(x, y, 5, head=head)
    for key in ("nc3", "head_entropy", "class_mean_entropy", "class_mi", "class_mir", "class_hdr"):
        assert out[key] == pytest.approx(ref[key], abs=TOL)
    assert "sample_mir" not in out  # the sample level needs the head during update()
    assert "nc3" not in acc.compute()


# ---------------------------------------------------------------------------------------------
# invariances
# ---------------------------------------------------------------------------------------------


def test_batch_splitting_invariance():
    x, y, head = make_data(n=1000, seed=11)
    one = run_all(x, y, 5, head=head).compute()
    many = run_all(x, y, 5, head=head, sizes=[1, 7, 63, 64, 65, 200, 3]).compute()
    assert one.keys() == many.keys()
    for key in one:
        assert many[key] == pytest.approx(one[key], abs=1e-10, rel=1e-10), key


def test_merge_equals_single_pass():
    x, y, head = make_data(n=1000, seed=12)
    single = run_all(x, y, 5, head=head).compute()
    a = run_all(x[:640], y[:640], 5, head=head, sizes=[33])  # 640 = 10 sample batches
    b = run_all(x[640:], y[640:], 5, head=head, sizes=[101])
    b_before = b.compute()
    merged = a.merge(b).compute()
    for key in single:
        assert merged[key] == pytest.approx(single[key], abs=1e-10, rel=1e-10), key
    assert b.compute() == b_before  # merge leaves `other` unchanged


def test_merge_uneven_split_class_level():
    x, y, _ = make_data(n=777, seed=13)
    single = run_all(x, y, 5).compute()
    merged = run_all(x[:301], y[:301], 5).merge(run_all(x[301:], y[301:], 5)).compute()
    for key in single:
        assert merged[key] == pytest.approx(single[key], abs=1e-10, rel=1e-10), key


def test_merge_closes_partial_batches_as_shards():
    # Uneven shard with a head: each side's partial batch is its own (smaller) batch.
    x, y, head = make_data(n=300, seed=14)
    merged = run_all(x[:100], y[:100], 5, head=head).merge(run_all(x[100:], y[100:], 5, head=head)).compute()
    r1, r2 = reference(x[:100], y[:100], 5, head=head), reference(x[100:], y[100:], 5, head=head)
    n1, n2 = r1["sample_num_batches"], r2["sample_num_batches"]
    assert merged["sample_num_batches"] == n1 + n2 == 2 + 4
    expected = (r1["sample_mir"] * n1 + r2["sample_mir"] * n2) / (n1 + n2)
    assert merged["sample_mir"] == pytest.approx(expected, abs=TOL)


def test_does_not_mutate_inputs_and_compute_is_pure():
    x, y, head = make_data(n=150, seed=4)
    x32, head32 = x.float(), head.clone()
    copies = (x.clone(), x32.clone(), y.clone(), head.clone())
    acc = NeuralCollapseAccumulator(5, 12, head=head32)
    acc.update(x, y)
    acc.update(x32, y)
    first = acc.compute()
    assert torch.equal(x, copies[0]) and torch.equal(x32, copies[1]) and torch.equal(y, copies[2])
    x.add_(100.0)  # the accumulator holds copies, not views of the caller's tensors
    head32.mul_(-3.0)
    assert acc.compute() == first


# ---------------------------------------------------------------------------------------------
# values at collapse and with noise
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_classes", [4, 8])
def test_perfect_collapse(num_classes):
    d = 16
    w = simplex_etf(num_classes, d, generator=torch.Generator().manual_seed(0))
    y = torch.arange(64 * 5) % num_classes  # every batch of 64 is balanced
    offset = torch.linspace(-1, 1, d, dtype=torch.float64)
    x = 3.0 * w[y] + offset  # collapsed: scaled ETF rows plus a common offset
    out = neural_collapse_measures(x, y, head=w)
    assert out["nc1"] < 1e-12
    assert out["nc2"] < 1e-10 and out["nc2_equinorm"] < 1e-10 and out["nc2_equiangular"] < 1e-10
    assert out["nc3"] < 1e-10
    assert out["nc4"] == 0.0 and out["ncc_accuracy"] == 1.0
    expected_mir = float(mir_at_collapse(num_classes))
    assert out["class_mir"] == pytest.approx(expected_mir, abs=1e-9)
    assert out["class_hdr"] == pytest.approx(0.0, abs=1e-9)
    assert out["head_entropy"] == pytest.approx(float(entropy_at_collapse(num_classes)), abs=1e-9)
    # sample level (docs/theory.md §3: same values for balanced n x n Grams); without the offset, which
    # would change the cosine Gram of the uncentred features
    acc = NeuralCollapseAccumulator(num_classes, d, head=w)
    acc.update(w[y] * 2.0, y)
    sample = acc.compute()
    assert sample["sample_mir"] == pytest.approx(expected_mir, abs=1e-9)
    assert sample["sample_hdr"] == pytest.approx(0.0, abs=1e-9)
    assert sample["sample_feature_entropy"] == pytest.approx(math.log(num_classes - 1), abs=1e-9)


def test_collapse_imbalanced_depends_on_global_mean():
    w = simplex_etf(5, 8, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0] * 40 + [1] * 10 + [2] * 25 + [3] * 5 + [4] * 60)
    out = neural_collapse_measures(w[y], y, head=w)  # global_mean="class"
    assert out["nc1"] < 1e-12 and out["nc2"] < 1e-10 and out["nc3"] < 1e-10 and out["nc4"] == 0
    weighted = neural_collapse_measures(w[y], y, head=w, global_mean="sample")
    assert weighted["nc2"] > 0.05 and weighted["nc3"] > 0.05  # the weighted mean is off the ETF centre


def test_noise_increases_nc1():
    w = simplex_etf(6, 10, generator=torch.Generator().manual_seed(2))
    y = torch.arange(600) % 6
    eps = torch.randn(600, 10, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    values = [neural_collapse_measures(w[y] + s * eps, y, head=w)["nc1"] for s in (0.0, 0.05, 0.2, 0.5)]
    assert values[0] < 1e-12
    assert 0 < values[1] < values[2] < values[3]
    ref = reference(w[y] + 0.2 * eps, y, 6, head=w)
    assert values[2] == pytest.approx(ref["nc1"], rel=TOL)


def test_two_classes():
    x, y, head = make_data(n=256, c=2, seed=21)
    with pytest.warns(RuntimeWarning, match="MIR"):
        out = neural_collapse_measures(x, y, head=head)
    assert math.isnan(out["class_mir"])
    assert out["class_mean_entropy"] == pytest.approx(0.0, abs=1e-9)
    assert out["class_hdr"] == pytest.approx(1.0, abs=1e-9)
    ref = reference(x, y, 2, head=head)
    for key in ("nc1", "nc2", "nc3", "nc4", "sample_mir", "sample_hdr"):
        assert out[key] == pytest.approx(ref[key], abs=TOL), key
    # at collapse with C = 2 every batch's head Gram has entropy 0: sample MIR is 0/0 everywhere
    w = simplex_etf(2, 4)
    yy = torch.arange(128) % 2
    acc = NeuralCollapseAccumulator(2, 4, head=w)
    acc.update(w[yy], yy)
    with pytest.warns(RuntimeWarning):
        res = acc.compute()
    assert math.isnan(res["sample_mir"]) and res["sample_mir_undefined_batches"] == 2
    assert res["nc1"] < 1e-12 and res["nc2"] < 1e-10


def test_absent_classes_use_present_ones():
    x, y, head = make_data(n=300, c=4, seed=7)
    y = torch.where(y == 2, torch.tensor(3), y)  # class 2 has no sample
    head6 = torch.cat([head, torch.randn(2, 12, generator=torch.Generator().manual_seed(1), dtype=torch.float64)])
    with pytest.warns(RuntimeWarning, match="have no samples"):
        out = neural_collapse_measures(x, y, head=head6, num_classes=6)
    assert out["num_absent_classes"] == 3 and out["num_present_classes"] == 3
    ref = reference(x, y, 6, head=head6)
    assert_matches(out, ref)


def test_zero_entropy_modes():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(12, 6, generator=g, dtype=torch.float64)
    y = torch.tensor([1, 1, 1, 1, 0, 1, 2, 0, 2, 2, 1, 0])  # first batch of 4: one class only
    head = torch.randn(3, 6, generator=g, dtype=torch.float64)
    acc = NeuralCollapseAccumulator(3, 6, head=head, sample_batch_size=4)
    acc.update(x, y)
    per_batch = []
    for s in range(0, 12, 4):
        ha, hb, hj = ref_pair(x[s : s + 4].numpy(), head[y[s : s + 4]].numpy())
        per_batch.append((ha + hb - hj) / min(ha, hb) if min(ha, hb) > 1e-9 else None)
    assert per_batch[0] is None and None not in per_batch[1:]
    skip = acc.compute()
    assert skip["sample_mir"] == pytest.approx((per_batch[1] + per_batch[2]) / 2, abs=TOL)
    assert skip["sample_mir_undefined_batches"] == 1 and skip["sample_hdr_undefined_batches"] == 0
    assert acc.compute(zero_entropy="zero")["sample_mir"] == pytest.approx((per_batch[1] + per_batch[2]) / 3, abs=TOL)
    with pytest.warns(RuntimeWarning, match="0/0"):
        assert math.isnan(acc.compute(zero_entropy="nan")["sample_mir"])


# ---------------------------------------------------------------------------------------------
# NC4 against given centres (one pass) and the explicit second pass
# ---------------------------------------------------------------------------------------------


def test_nc4_with_given_centres_and_second_pass():
    x, y, head = make_data(n=500, seed=8, noise=1.5)
    first = run_all(x, y, 5, head=head)
    exact = first.nearest_center_pass()
    exact.update(x, y)
    ref = reference(x, y, 5, head=head)
    assert exact.compute()["nc4"] == pytest.approx(ref["nc4"], abs=0)
    # one pass against the (here: exact) centres of a previous pass gives the same numbers
    one_pass = run_all(x, y, 5, head=head, centers=first.class_means(), sizes=[37])
    assert one_pass.compute()["nc4"] == pytest.approx(ref["nc4"], abs=0)
    assert one_pass.compute()["ncc_accuracy"] == pytest.approx(ref["ncc_accuracy"], abs=0)
    # against other centres it is NC4 with respect to those centres
    shifted = first.class_means() + torch.randn(5, 12, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    other = NearestCenterAgreement(shifted, head=head)
    other.update(x)
    ncc = ((x[:, None] - shifted[None]) ** 2).sum(2).argmin(1)
    assert other.compute()["nc4"] == pytest.approx(float(((x @ head.T).argmax(1) != ncc).double().mean()), abs=0)
    assert "ncc_accuracy" not in other.compute()


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------


def test_errors():
    acc = NeuralCollapseAccumulator(3, 4)
    x = torch.randn(5, 4)
    with pytest.raises(ValueError, match=r"0\.\.2.*\[0, 3\]"):
        acc.update(x, torch.tensor([0, 1, 2, 3, 0]))
    with pytest.raises(ValueError, match=r"\[-100, 1\]"):
        acc.update(x, torch.tensor([0, 1, -100, 1, 0]))
    with pytest.raises(TypeError, match="integer"):
        acc.update(x, torch.tensor([0.0, 1, 2, 1, 0]))
    with pytest.raises(ValueError, match=r"expected \(5,\)"):
        acc.update(x, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"expected \(n, 4\)"):
        acc.update(torch.randn(5, 3), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="NaN"):
        acc.update(torch.full((5, 4), float("nan")), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"logits.*expected \(5, 3\)"):
        acc.update(x, torch.zeros(5, dtype=torch.long), logits=torch.randn(5, 2))
    assert acc.num_samples == 0  # failed updates add nothing
    acc.update(x, torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="1 of 3 classes have samples"):
        acc.compute()
    with pytest.raises(ValueError, match="num_classes=1"):
        NeuralCollapseAccumulator(1, 4)
    with pytest.raises(ValueError, match=r"head.*expected \(3, 4\)"):
        NeuralCollapseAccumulator(3, 4, head=torch.randn(3, 5))
    with pytest.raises(ValueError, match="zero_entropy"):
        NeuralCollapseAccumulator(3, 4, zero_entropy="ignore")
    with pytest.raises(ValueError, match="different configurations"):
        acc.merge(NeuralCollapseAccumulator(3, 4, head=torch.randn(3, 4)))
    with pytest.raises(ValueError, match="predictions"):
        NeuralCollapseAccumulator(3, 4, centers=torch.zeros(3, 4)).update(x, torch.zeros(5, dtype=torch.long))
    assert acc.all_reduce() is acc  # no process group: a no-op


def test_memory_is_independent_of_sample_count():
    acc = NeuralCollapseAccumulator(3, 8, head=torch.randn(3, 8, dtype=torch.float64), sample_batch_size=64)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        acc.update(torch.randn(101, 8, generator=g), torch.randint(0, 3, (101,), generator=g))
    state = [acc.counts, acc.sums, acc.second_moment, acc._buffer_features]
    assert sum(t.numel() for t in state) <= 3 + 3 * 8 + 8 * 8 + 63 * 8
    assert acc.num_samples == 2020


def test_batched_mir_hdr_matches_accumulator_and_reference():
    x, y, head = make_data(n=333, seed=17)
    out = batched_mir_hdr(x, head[y], batch_size=64)
    acc = run_all(x, y, 5, head=head, sizes=[50]).compute()
    ref = reference(x, y, 5, head=head)
    for key in ("mir", "hdr", "mi", "feature_entropy", "head_entropy", "num_batches"):
        assert out[key] == pytest.approx(acc[f"sample_{key}"], abs=1e-12), key
        assert out[key] == pytest.approx(ref[f"sample_{key}"], abs=TOL), key
    # features of the same inputs from a second "model" (docs/theory.md §2 item 3): any d₂ works
    other = torch.tanh(x @ torch.randn(12, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    two = batched_mir_hdr(x, other, batch_size=100, drop_last=True)
    ha, hb, hj = ref_pair(x[:100].numpy(), other[:100].numpy())
    assert two["num_batches"] == 3
    assert 0 < two["mir"] < 1 and two["feature_entropy"] > two["head_entropy"]
    first = batched_mir_hdr(x[:100], other[:100], batch_size=100)
    assert first["mir"] == pytest.approx((ha + hb - hj) / min(ha, hb), abs=TOL)


def test_all_reduce_single_process_group(tmp_path):
    import torch.distributed as dist

    x, y, head = make_data(n=200, seed=19)
    expected = run_all(x, y, 5, head=head).compute()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        acc = run_all(x, y, 5, head=head, sizes=[64])
        assert acc.all_reduce() is acc
        got = acc.compute()
        for key in expected:
            assert got[key] == pytest.approx(expected[key], abs=1e-12), key
        with pytest.raises(RuntimeError, match="after all_reduce"):
            acc.update(x[:3], y[:3])
        with pytest.raises(RuntimeError, match="already called"):
            acc.all_reduce()
        acc.reset()
        acc.update(x[:3], y[:3])
        assert acc.num_samples == 3
    finally:
        dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------
# two processes (torchrun, gloo)
# ---------------------------------------------------------------------------------------------


@pytest.mark.distributed
def test_all_reduce_two_processes(tmp_path):
    x, y, head = make_data(n=1000, d=10, c=6, seed=31)
    data = {"features": x.float(), "labels": y, "head": head, "split": 640, "uneven_split": 333, "batch": 64}
    torch.save(data, tmp_path / "data.pt")
    worker = Path(__file__).parent / "dist_scripts" / "stream_worker.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(worker), str(tmp_path / "data.pt"), str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    single = neural_collapse_measures(x.float(), y, head=head, sample_batch_size=64)
    plain = NeuralCollapseAccumulator(6, 10)
    plain.update(x.float(), y)
    single_plain = plain.compute()
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got["with_head"].keys() == single.keys()
        for key, value in single.items():
            assert got["with_head"][key] == pytest.approx(value, abs=1e-10, rel=1e-10), (rank, key)
        for key, value in single_plain.items():
            assert got["plain"][key] == pytest.approx(value, abs=1e-10, rel=1e-10), (rank, key)
