"""Grokking analysis (docs/theory.md §5): dataset, model, tracked history, JSON and plot, on a small modulus."""

from __future__ import annotations

import json
import math

import pytest
import torch

from hf_infonc.analysis.grokking import (
    HISTORY_KEYS,
    GrokkingConfig,
    GrokkingResult,
    ModularAdditionTransformer,
    information_measures,
    main,
    make_modular_addition_data,
    plot_grokking,
    run_grokking,
)
from hf_infonc.info import hdr, mir, mir_at_collapse

P = 23


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These tiny models run fastest on one thread, above all on a CPU shared with other jobs."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def small_run() -> GrokkingResult:
    cfg = GrokkingConfig(modulus=P, d_model=32, n_heads=4, d_mlp=64, lr=1e-2, steps=60, eval_every=20, seed=5,
                         info_subset=64, num_threads=1, log_evals=False)
    return run_grokking(cfg, progress=False)


def test_dataset_labels_split_deterministic_disjoint_and_complete():
    data = make_modular_addition_data(P, 0.3, seed=7)
    assert data.tokens.shape == (P * P, 3)
    a, b, eq = data.tokens.unbind(dim=1)
    assert torch.equal(eq, torch.full_like(eq, P))  # "=" token is p
    expected = torch.tensor([(int(x) + int(y)) % P for x, y in zip(a, b)])
    assert torch.equal(data.labels, expected)
    # every pair (a, b) once
    assert len({(int(x), int(y)) for x, y in zip(a, b)}) == P * P
    train, test = set(data.train_idx.tolist()), set(data.test_idx.tolist())
    assert len(train) == int(0.3 * P * P) == len(data.train_idx)
    assert not train & test
    assert train | test == set(range(P * P))
    again = make_modular_addition_data(P, 0.3, seed=7)
    assert torch.equal(again.train_idx, data.train_idx) and torch.equal(again.test_idx, data.test_idx)
    other = make_modular_addition_data(P, 0.3, seed=8)
    assert not torch.equal(other.train_idx, data.train_idx)


def test_fast_forward_equals_full_sequence_transformer():
    model = ModularAdditionTransformer(P, d_model=32, n_heads=4, d_mlp=64, seed=1).double()
    tokens = make_modular_addition_data(P, 0.3, seed=0).tokens[::3]  # 177 of the 529 pairs
    logits, features = model(tokens[:, 0], tokens[:, 1])
    ref_logits, ref_features = model.forward_sequence(tokens)
    assert logits.shape == (177, P) and features.shape == (177, 32)
    # (plain comparisons: torch.testing.assert_close imports torch.distributed, seconds on a CPU)
    assert float((logits - ref_logits).detach().abs().max()) < 1e-10
    assert float((features - ref_features).detach().abs().max()) < 1e-10
    # the head rows are the unembedding columns
    assert torch.equal(model.head_rows, model.W_U.T)
    assert torch.allclose(logits, features @ model.head_rows.T, rtol=1e-12, atol=1e-12)
    # and the gradients agree too (same function of the same parameters)
    y = (tokens[:, 0] + tokens[:, 1]) % P
    g_fast = torch.autograd.grad(torch.nn.functional.cross_entropy(logits, y), list(model.parameters()))
    g_ref = torch.autograd.grad(torch.nn.functional.cross_entropy(ref_logits, y), list(model.parameters()))
    for gf, gr in zip(g_fast, g_ref):
        assert torch.allclose(gf, gr, rtol=1e-8, atol=1e-10)
    assert any(float(g.abs().max()) > 1e-3 for g in g_fast)  # the gradients are not all ~0


def test_information_measures_match_mir_and_hdr():
    g = torch.Generator().manual_seed(0)
    features, w = torch.randn(80, 16, generator=g), torch.randn(P, 16, generator=g)
    labels = torch.randint(0, P, (80,), generator=g)
    out = information_measures(features, w[labels])
    assert out["mir"] == pytest.approx(float(mir(features.double(), w[labels].double())), rel=1e-9)
    assert out["hdr"] == pytest.approx(float(hdr(features.double(), w[labels].double())), rel=1e-9)
    # collapse: features equal to their class's simplex-ETF head row, all classes equally often
    from hf_infonc.info import simplex_etf

    etf = simplex_etf(P, 32)
    balanced = torch.arange(P).repeat(3)
    at_collapse = information_measures(2.5 * etf[balanced], etf[balanced])
    assert at_collapse["mir"] == pytest.approx(float(mir_at_collapse(P)), abs=1e-9)
    assert at_collapse["hdr"] == pytest.approx(0.0, abs=1e-9)


def test_history_keys_values_and_training(small_run: GrokkingResult):
    hist = small_run.history
    assert tuple(hist) == HISTORY_KEYS
    assert hist["step"] == [0, 20, 40, 60]
    for key in HISTORY_KEYS:
        assert len(hist[key]) == 4, key
        assert all(math.isfinite(v) for v in hist[key]), key
    for split in ("train", "test"):
        assert all(0.0 <= v <= 1.0 for v in hist[f"{split}_mir"])
        assert all(0.0 <= v <= 1.0 for v in hist[f"{split}_hdr"])
        assert all(0.0 <= v <= 1.0 for v in hist[f"{split}_acc"])
        assert all(0.0 < v <= math.log(32) + 1e-9 for v in hist[f"{split}_h_features"])
        # MI = MIR · min(H₁, H₂)
        columns = (hist[f"{split}_{key}"] for key in ("mir", "mi", "h_features", "h_heads"))
        for m, mi, h1, h2 in zip(*columns):
            assert mi == pytest.approx(m * min(h1, h2), rel=1e-9)
    # full-batch training on the training pairs reduces the training loss and fits them
    assert hist["train_loss"][-1] < 0.5 * hist["train_loss"][0]
    assert hist["train_acc"][-1] > hist["train_acc"][0]
    assert hist["train_loss"][0] == pytest.approx(math.log(P), rel=0.2)  # near-uniform at init
    # the features' Gram becomes more aligned with the label rows than at initialisation
    assert hist["train_mir"][-1] > hist["train_mir"][0]
    assert small_run.mir_at_collapse == pytest.approx(float(mir_at_collapse(P)))
    assert small_run.config.seed == 5
    assert small_run.environment["n_train"] == int(0.3 * P * P)
    assert small_run.environment["n_info_train"] == 64
    assert small_run.wall_time_s > 0


def test_run_is_deterministic_per_seed(small_run: GrokkingResult):
    again = run_grokking(small_run.config, progress=False)
    assert again.history["train_loss"] == small_run.history["train_loss"]
    assert again.history["test_mir"] == small_run.history["test_mir"]


def test_grokking_step_and_callback_stop():
    seen = []

    def callback(record, model):
        seen.append(record["step"])
        return record["step"] >= 10

    cfg = GrokkingConfig(modulus=P, d_model=32, n_heads=4, d_mlp=64, steps=100, eval_every=5, seed=0,
                         info_subset=32, grokking_threshold=0.02, num_threads=1,
                         log_evals=False)
    result = run_grokking(cfg, progress=False, callback=callback)
    assert seen == [0, 5, 10]
    assert result.history["step"] == [0, 5, 10]
    # grokking step: the first evaluated step with test accuracy ≥ threshold
    expected = next((s for s, acc in zip(result.history["step"], result.history["test_acc"]) if acc >= 0.02), None)
    assert result.grokking_step == expected


def test_json_roundtrip_and_plot(small_run: GrokkingResult, tmp_path):
    path = small_run.to_json(tmp_path / "h.json")
    data = json.loads(path.read_text())
    assert data["config"]["modulus"] == P and data["config"]["seed"] == 5
    assert data["history"]["step"] == [0, 20, 40, 60]
    back = GrokkingResult.from_json(path)
    assert back.history == small_run.history and back.config == small_run.config
    png = plot_grokking(back, tmp_path / "img" / "g.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 10_000


def test_config_validation():
    with pytest.raises(ValueError, match="train_fraction"):
        GrokkingConfig(train_fraction=1.5)
    with pytest.raises(ValueError, match="n_heads"):
        GrokkingConfig(d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="info_subset"):
        GrokkingConfig(info_subset=1)


def test_cli_writes_json_and_png(tmp_path, capsys):
    rc = main(["--modulus", "11", "--steps", "4", "--eval-every", "2", "--info-subset", "16",
               "--out", str(tmp_path), "--no-progress", "--threads", "1"])
    assert rc == 0
    data = json.loads((tmp_path / "grokking_history.json").read_text())
    assert data["history"]["step"] == [0, 1, 2, 4]  # with the log-spaced early evaluation at step 1
    assert (tmp_path / "grokking.png").stat().st_size > 0
    assert "grokking step" in capsys.readouterr().out


def test_keyboard_interrupt_returns_history_so_far():
    def callback(record, model):
        if record["step"] == 6:
            raise KeyboardInterrupt

    cfg = GrokkingConfig(modulus=11, d_model=16, n_heads=2, d_mlp=32, steps=50, eval_every=3, info_subset=16,
                         num_threads=1, log_evals=False)
    result = run_grokking(cfg, progress=False, callback=callback)
    assert result.environment["interrupted"] is True
    assert result.history["step"] == [0, 3, 6]
    assert all(len(v) == 3 for v in result.history.values())


def test_cli_stop_after_grokking(tmp_path):
    main(["--modulus", "11", "--steps", "40", "--eval-every", "2", "--info-subset", "16", "--threshold", "0.01",
          "--stop-after-grokking", "4", "--out", str(tmp_path), "--no-progress", "--threads", "1", "--no-log-evals"])
    data = json.loads((tmp_path / "grokking_history.json").read_text())
    grokked = data["grokking_step"]
    assert grokked is not None
    assert data["history"]["step"][-1] == grokked + 4


def test_log_spaced_early_evaluations():
    cfg = GrokkingConfig(modulus=11, d_model=16, n_heads=2, d_mlp=32, steps=25, eval_every=20, info_subset=16,
                         num_threads=1)
    result = run_grokking(cfg, progress=False)
    assert result.history["step"] == [0, 1, 2, 3, 6, 10, 18, 20, 25]
