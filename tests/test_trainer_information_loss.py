"""InfoNCTrainer.information_loss (validated once, one pass) against the public loss modules; info_dtype."""

from __future__ import annotations

import math

import pytest
import torch

from hf_infonc import InfoNCTrainer, InfoNCTrainingArguments
from hf_infonc.adapters import AdapterOutput
from hf_infonc.losses import (
    CrossModalAlignmentLoss,
    EntropyGapLoss,
    InformationComponents,
    MutualInformationLoss,
    clip_contrastive_loss,
)
from hf_infonc.testing import tiny_bert_classifier
from hf_infonc.training_args import check_information_settings

WEIGHTS = dict(cma_weight=0.5, mi_weight=0.1, entropy_gap_weight=0.2)


def _trainer(tmp_path, **overrides) -> InfoNCTrainer:
    args = InfoNCTrainingArguments(
        output_dir=str(tmp_path / "out"), use_cpu=True, report_to=[], logging_steps=1, **{**WEIGHTS, **overrides}
    )
    trainer = InfoNCTrainer(model=tiny_bert_classifier(num_labels=4), args=args)
    trainer.model.train()
    return trainer


def _leaves(seed: int, pairwise: bool):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(24, 8, generator=g).requires_grad_(True)
    rows = torch.randn(24 if pairwise else 4, 8, generator=g).requires_grad_(True)
    labels = None if pairwise else torch.randint(0, 4, (24,), generator=g)
    base = None if pairwise else torch.tensor(1.3, requires_grad=True)
    scale = torch.tensor(7.0) if pairwise else None
    return features, rows, labels, base, scale


def _reference(features, rows, labels, base, scale, *, normalized=False, dtype=None):
    """The loss of docs/theory.md §4 from the public loss modules, each validating its inputs."""
    if base is None:
        base = clip_contrastive_loss(features, rows, scale)
    cma = CrossModalAlignmentLoss(dtype=dtype)(features, labels, rows)
    mi = MutualInformationLoss(normalized=normalized, dtype=dtype)(features, labels, rows)
    gap = EntropyGapLoss(normalized=normalized, dtype=dtype)(features, labels, rows)
    w = WEIGHTS
    return (1 - w["cma_weight"]) * base + w["cma_weight"] * cma + w["mi_weight"] * mi + w["entropy_gap_weight"] * gap


@pytest.mark.parametrize("pairwise", [False, True], ids=["classes", "pairs"])
@pytest.mark.parametrize("normalized", [False, True], ids=["mi-gap", "mir-hdr"])
def test_information_loss_equals_the_loss_modules(tmp_path, pairwise: bool, normalized: bool) -> None:
    trainer = _trainer(tmp_path, info_normalized=normalized)
    features, rows, labels, base, scale = _leaves(0, pairwise)
    out = AdapterOutput(
        loss=base, features=features, head_rows=rows, labels=labels, logit_scale=scale, pairwise=pairwise
    )
    total, components = trainer.information_loss(out)
    leaves = [t for t in (features, rows, base) if t is not None]
    grads = torch.autograd.grad(total, leaves)
    reference = _reference(features, rows, labels, base, scale, normalized=normalized)
    ref_grads = torch.autograd.grad(reference, leaves)
    assert total.dtype == torch.float32
    assert float(total.detach()) == pytest.approx(float(reference.detach()), abs=2e-6)
    for g, r in zip(grads, ref_grads):
        assert torch.allclose(g, r, rtol=1e-5, atol=1e-6)
    assert set(components) == {"loss/base", "loss/cma", "loss/mi", "loss/entropy_gap", "mir", "hdr"}
    assert all(not v.requires_grad for v in components.values())
    assert 0.0 <= float(components["mir"]) <= 1.0 and 0.0 <= float(components["hdr"]) <= 1.0


def test_info_dtype_float32(tmp_path) -> None:
    features, rows, labels, base, scale = _leaves(1, False)
    out = AdapterOutput(loss=base, features=features, head_rows=rows, labels=labels, pairwise=False)
    t64, _ = _trainer(tmp_path).information_loss(out)
    trainer32 = _trainer(tmp_path, info_dtype="float32")
    assert trainer32.cma_loss.dtype == torch.float32 and trainer32.mi_loss.dtype == torch.float32
    t32, components = trainer32.information_loss(out)
    assert float(t32.detach()) == pytest.approx(float(t64.detach()), abs=1e-5)
    assert components["mir"].dtype == torch.float32


@pytest.mark.parametrize("bad", ["float16", "bfloat16", "double", "fp32"])
def test_info_dtype_is_validated(tmp_path, bad: str) -> None:
    with pytest.raises(ValueError, match=rf"info_dtype='{bad}' is not supported"):
        InfoNCTrainingArguments(output_dir=str(tmp_path), use_cpu=True, info_dtype=bad)
    with pytest.raises(ValueError, match="eigen-solvers never run in half precision"):
        check_information_settings(info_dtype=bad)


def test_logged_ratios_without_information_losses(tmp_path) -> None:
    trainer = _trainer(tmp_path, cma_weight=0.0, mi_weight=0.0, entropy_gap_weight=0.0)
    features, rows, labels, base, _ = _leaves(2, False)
    total, components = trainer.information_loss(
        AdapterOutput(loss=base, features=features, head_rows=rows, labels=labels, pairwise=False)
    )
    assert total is base
    assert set(components) == {"loss/base", "mir", "hdr"}
    assert not math.isnan(float(components["mir"]))


def test_bad_inputs_are_reported_once_per_step(tmp_path) -> None:
    trainer = _trainer(tmp_path)
    features, rows, labels, base, _ = _leaves(3, False)
    with pytest.raises(ValueError, match=r"labels range over \[7, 7\] but there are 4 head rows"):
        trainer.information_loss(
            AdapterOutput(loss=base, features=features, head_rows=rows, labels=torch.full((24,), 7), pairwise=False)
        )
    broken = features.detach().clone()
    broken[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"`features` contains 1 NaN or inf"):
        trainer.information_loss(
            AdapterOutput(loss=base, features=broken, head_rows=rows, labels=labels, pairwise=False)
        )


@pytest.mark.parametrize("pairwise", [False, True], ids=["classes", "pairs"])
@pytest.mark.parametrize(
    "weights",
    [WEIGHTS, dict(cma_weight=0.5, mi_weight=0.0, entropy_gap_weight=0.0), dict(cma_weight=0.0, mi_weight=0.0,
                                                                                 entropy_gap_weight=0.3)],
    ids=["all", "cma-only", "gap-only"],
)
def test_fused_path_equals_the_general_path(tmp_path, monkeypatch, pairwise: bool, weights: dict) -> None:
    """The fused loss (default settings) against the general path (forced), values, components, gradients."""
    features, rows, labels, base, scale = _leaves(4, pairwise)
    out = AdapterOutput(loss=base, features=features, head_rows=rows, labels=labels, logit_scale=scale, pairwise=pairwise)
    results = []
    for fused in (True, False):
        trainer = _trainer(tmp_path, **weights)
        if not fused:
            monkeypatch.setattr(trainer.information_loss_module, "fused_applies", lambda *args: False)
        total, components = trainer.information_loss(out)
        assert isinstance(components, InformationComponents) == fused
        leaves = [t for t in (features, rows, base) if t is not None]
        grads = torch.autograd.grad(total, leaves)
        results.append((total.detach(), dict(components), grads))
    (t1, c1, g1), (t2, c2, g2) = results
    assert float(t1) == pytest.approx(float(t2), abs=1e-6)
    assert set(c1) == set(c2)  # logging_steps=1: the batch MIR/HDR are due, so CMA-only logs them too
    for key in c1:
        assert float(c1[key]) == pytest.approx(float(c2[key]), abs=1e-6, nan_ok=True), key
    for a, b in zip(g1, g2):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)


def test_logged_components_are_the_mean_of_the_steps(tmp_path) -> None:
    """Recorded raw values give, at the log, the mean of each step's components (and regular ones too)."""
    trainer = _trainer(tmp_path)
    expected: dict[str, list[float]] = {}
    for seed in (5, 6, 7):
        features, rows, labels, base, _ = _leaves(seed, False)
        with torch.no_grad():
            _, components = trainer.information_loss(
                AdapterOutput(loss=base, features=features, head_rows=rows, labels=labels, pairwise=False)
            )
        assert isinstance(components, InformationComponents)
        for key, value in components.items():
            expected.setdefault(key, []).append(float(value))
        trainer.record_components(components, "train")
        trainer.record_components({"loss/extra": torch.tensor(float(seed))}, "train")
    logged = trainer._reduced_components("train")
    assert set(logged) == set(expected) | {"loss/extra"}
    for key, values in expected.items():
        assert logged[key] == pytest.approx(sum(values) / 3, abs=2e-6), key
    assert logged["loss/extra"] == pytest.approx(6.0)
    assert trainer._reduced_components("train") == {}  # cleared after the log


def test_weights_set_after_init_take_effect(tmp_path) -> None:
    """``hyperparameter_search`` sets each trial's weights on ``trainer.args`` after ``__init__``: the
    information loss must follow them, as ``Trainer`` follows a changed learning rate."""
    trainer = _trainer(tmp_path)
    features, rows, labels, base, scale = _leaves(2, False)
    out = AdapterOutput(loss=base, features=features, head_rows=rows, labels=labels, pairwise=False)
    with_terms, components = trainer.information_loss(out)
    assert "loss/cma" in components and float(with_terms) != pytest.approx(float(base))
    for key in WEIGHTS:
        setattr(trainer.args, key, 0.0)
    without, components = trainer.information_loss(AdapterOutput(
        loss=base, features=features, head_rows=rows, labels=labels, pairwise=False))
    assert float(without) == float(base)
    assert not {"loss/cma", "loss/mi", "loss/entropy_gap"} & set(components)  # MIR/HDR are still logged
    trainer.args.mi_weight = 0.3
    only_mi, _ = trainer.information_loss(AdapterOutput(
        loss=base, features=features, head_rows=rows, labels=labels, pairwise=False))
    mi = MutualInformationLoss()(features, labels, rows)
    assert float(only_mi) == pytest.approx(float(base + 0.3 * mi), abs=2e-6)


@pytest.mark.parametrize("logging_steps, first", [(0.25, False), (0.1, True), (0.3, True), (3, False), (3, True)])
def test_ratios_are_computed_on_the_steps_trainer_logs(tmp_path, logging_steps, first) -> None:
    """With every weight 0 the batch MIR/HDR cost a spectrum only on the steps ``Trainer`` logs: its own
    ``TrainerState.compute_steps`` (a fraction of ``max_steps`` rounded up) and ``DefaultFlowCallback``."""
    from transformers import TrainerControl, TrainerState
    from transformers.trainer_callback import DefaultFlowCallback

    args = InfoNCTrainingArguments(output_dir=str(tmp_path / "out"), use_cpu=True, report_to=[],
                                   logging_steps=logging_steps, logging_first_step=first)
    trainer = InfoNCTrainer(model=tiny_bert_classifier(num_labels=4), args=args)
    trainer.model.train()
    state = TrainerState(max_steps=10)
    state.compute_steps(trainer.args, max_steps=10)
    trainer.state.max_steps = 10
    due, logged = [], []
    for step in range(10):
        trainer.state.global_step = step
        due.append(trainer._ratios_due())
        state.global_step = step + 1
        control = DefaultFlowCallback().on_step_end(trainer.args, state, TrainerControl())
        logged.append(control.should_log)
    assert due == logged and any(logged)
