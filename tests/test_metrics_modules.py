"""The evaluate modules in hf_infonc/metrics load offline by path and agree with hf_infonc.info.

HF_HUB_OFFLINE=1 and a temporary HF_HOME are set by tests/conftest.py. (Importing evaluate takes
~10 s here: it imports transformers.)
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

evaluate = pytest.importorskip("evaluate")

from hf_infonc.info import hdr, matrix_entropy, mir, simplex_etf  # noqa: E402
from hf_infonc.info.stream import neural_collapse_measures  # noqa: E402
from hf_infonc.metrics import METRIC_NAMES, load_metric, metric_path  # noqa: E402

METRICS_DIR = Path(__file__).resolve().parents[1] / "hf_infonc" / "metrics"


def load_by_path(name: str):
    return evaluate.load(str(METRICS_DIR / name))


def numpy_entropy(z: np.ndarray) -> float:
    zn = z / np.linalg.norm(z, axis=1, keepdims=True)
    lam = np.linalg.eigvalsh(zn @ zn.T / z.shape[0])
    lam = lam[lam > 1e-12]
    return float(-(lam * np.log(lam)).sum())


def data(n=150, d=6, c=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, c, (n,), generator=g)
    centres = 3 * torch.randn(c, d, generator=g, dtype=torch.float64)
    x = centres[y] + torch.randn(n, d, generator=g, dtype=torch.float64)
    head = torch.randn(c, d, generator=g, dtype=torch.float64)
    return x, y, head


def test_offline_flag_is_set():
    assert os.environ.get("HF_HUB_OFFLINE") == "1"


@pytest.mark.parametrize("name", METRIC_NAMES)
def test_load_by_path_and_by_name(name):
    module = load_by_path(name)
    assert isinstance(module, evaluate.EvaluationModule)
    assert module.name == name
    assert Path(metric_path(name), f"{name}.py").is_file()
    assert load_metric(name).name == name


def test_unknown_name():
    with pytest.raises(ValueError, match="available: accuracy"):
        load_metric("f1")


def test_accuracy_values_and_add_batch():
    acc = load_by_path("accuracy")
    assert acc.compute(predictions=[0, 1, 1, 2], references=[0, 1, 2, 2]) == {"accuracy": 0.75}
    rng = np.random.default_rng(0)
    preds, refs = rng.integers(0, 5, 97), rng.integers(0, 5, 97)
    for start in range(0, 97, 20):
        acc.add_batch(predictions=preds[start : start + 20], references=refs[start : start + 20])
    assert acc.compute()["accuracy"] == pytest.approx(float((preds == refs).mean()), abs=1e-15)
    w = rng.random(97)
    weighted = acc.compute(predictions=preds, references=refs, sample_weight=w)["accuracy"]
    assert weighted == pytest.approx(float(((preds == refs) * w).sum() / w.sum()), abs=1e-12)
    assert acc.compute(predictions=[1, 1, 0], references=[1, 0, 0], normalize=False) == {"accuracy": 2.0}
    with pytest.raises(TypeError, match="unknown compute"):
        acc.compute(predictions=[1], references=[1], normalise=False)  # typo is not ignored


def test_matrix_entropy():
    x, _, _ = data(n=40, d=8)
    module = load_by_path("matrix_entropy")
    out = module.compute(features=x.tolist())
    assert out["matrix_entropy"] == pytest.approx(numpy_entropy(x.numpy()), abs=1e-10)
    assert out["matrix_entropy"] == pytest.approx(float(matrix_entropy(x)), abs=1e-12)
    assert out["effective_rank"] == pytest.approx(math.exp(out["matrix_entropy"]), rel=1e-12)
    for start in range(0, 40, 7):
        module.add_batch(features=x[start : start + 7].tolist())
    batched = module.compute(batch_size=16)  # batches of 16, 16, 8
    expected = np.mean([numpy_entropy(x[s : s + 16].numpy()) for s in (0, 16, 32)])
    assert batched["num_batches"] == 3 and batched["matrix_entropy"] == pytest.approx(expected, abs=1e-10)
    renyi = module.compute(features=x.tolist(), alpha=2.0)["matrix_entropy"]
    assert renyi == pytest.approx(float(matrix_entropy(x, alpha=2.0)), abs=1e-12)
    assert renyi < out["matrix_entropy"]  # Rényi entropies decrease with the order


def test_mir_hdr_against_info():
    x, y, head = data(n=150)
    module = load_by_path("mir_hdr")
    for start in range(0, 150, 40):
        module.add_batch(features=x[start : start + 40].tolist(), references=y[start : start + 40].tolist())
    out = module.compute(head=head.numpy())
    batches = [(s, min(150, s + 64)) for s in range(0, 150, 64)]  # 64, 64, 22
    mirs = [float(mir(x[a:b], head[y[a:b]])) for a, b in batches]
    hdrs = [float(hdr(x[a:b], head[y[a:b]])) for a, b in batches]
    assert out["num_batches"] == 3
    assert out["mir"] == pytest.approx(np.mean(mirs), abs=1e-10)
    assert out["hdr"] == pytest.approx(np.mean(hdrs), abs=1e-10)
    assert 0.0 < out["hdr"] < out["mir"] < 1.0
    whole = module.compute(features=x.tolist(), references=y.tolist(), head=head, batch_size=None)
    assert whole["mir"] == pytest.approx(float(mir(x, head[y])), abs=1e-10)
    assert whole["hdr"] == pytest.approx(float(hdr(x, head[y])), abs=1e-10)
    with pytest.raises(ValueError, match="needs the classifier head"):
        module.compute(features=x.tolist(), references=y.tolist())
    with pytest.raises(ValueError, match=r"0\.\.3"):
        module.compute(features=x[:3].tolist(), references=[0, 1, 4], head=head)


def test_mir_hdr_at_collapse():
    w = simplex_etf(8, 8)
    labels = [i % 8 for i in range(128)]
    out = load_by_path("mir_hdr").compute(features=(2.0 * w[labels]).tolist(), references=labels, head=w)
    c = 8
    expected = 1 / (c - 1) + (c - 2) * math.log(c - 2) / ((c - 1) * math.log(c - 1))  # docs/theory.md §3
    assert out["mir"] == pytest.approx(expected, abs=1e-9)
    assert out["hdr"] == pytest.approx(0.0, abs=1e-9)


def test_neural_collapse_against_stream_and_collapse():
    x, y, head = data(n=200, c=5, d=7, seed=3)
    module = load_by_path("neural_collapse")
    for start in range(0, 200, 64):
        module.add_batch(features=x[start : start + 64].tolist(), references=y[start : start + 64].tolist())
    out = module.compute(head=head.tolist())
    ref = neural_collapse_measures(x, y, head=head)
    assert out.keys() == ref.keys()
    for key, value in ref.items():
        assert out[key] == pytest.approx(value, abs=1e-10), key
    logits = torch.randn(200, 5, generator=torch.Generator().manual_seed(1))
    with_logits = module.compute(features=x.tolist(), references=y.tolist(), logits=logits.numpy())
    assert with_logits["classifier_accuracy"] == pytest.approx(float((logits.argmax(1) == y).double().mean()))
    assert "nc3" not in with_logits and "nc4" in with_logits
    w = simplex_etf(5, 7, generator=torch.Generator().manual_seed(0))
    labels = [i % 5 for i in range(100)]
    collapsed = module.compute(features=w[labels].tolist(), references=labels, head=w)
    assert collapsed["nc1"] < 1e-12 and collapsed["nc2"] < 1e-10 and collapsed["nc3"] < 1e-10
    assert collapsed["nc4"] == 0.0


def test_combine_accuracy_and_information_metrics():
    x, y, head = data(n=120, c=4, seed=5)
    preds = (x @ head.T).argmax(1)
    combined = evaluate.combine([load_by_path("accuracy"), load_by_path("mir_hdr"), load_by_path("neural_collapse")])
    for start in range(0, 120, 50):
        sl = slice(start, start + 50)
        combined.add_batch(predictions=preds[sl].tolist(), references=y[sl].tolist(), features=x[sl].tolist())
    out = combined.compute(head=head.numpy())
    assert out["accuracy"] == pytest.approx(float((preds == y).double().mean()), abs=1e-15)
    ref = neural_collapse_measures(x, y, head=head)
    assert out["nc1"] == pytest.approx(ref["nc1"], abs=1e-10)
    assert out["mir"] == pytest.approx(ref["sample_mir"], abs=1e-10)  # same batches, same measure
    assert out["classifier_accuracy"] == pytest.approx(out["accuracy"], abs=1e-15)
    # accuracy alone with a second module, compute(...) with inputs given directly
    two = evaluate.combine([load_metric("accuracy"), load_metric("matrix_entropy")])
    res = two.compute(predictions=[0, 1], references=[0, 0], features=[[1.0, 0.0], [0.0, 1.0]])
    assert res["accuracy"] == 0.5 and res["matrix_entropy"] == pytest.approx(math.log(2), abs=1e-12)


def test_mir_hdr_whole_set_returns_every_documented_key():
    """batch_size=None: one batch of the whole set, with the keys of the batched mode (MI and the entropies
    of that batch, the undefined counts) and the same validation of zero_entropy."""
    from hf_infonc.info import entropy_terms, matrix_mutual_information

    x, y, head = data(n=150)
    module = load_by_path("mir_hdr")
    whole = module.compute(features=x.tolist(), references=y.tolist(), head=head, batch_size=None)
    batched = module.compute(features=x.tolist(), references=y.tolist(), head=head, batch_size=150)
    assert whole == batched
    terms = entropy_terms(x, head[y])
    assert whole["num_batches"] == 1 and whole["mir_undefined_batches"] == whole["hdr_undefined_batches"] == 0
    assert whole["mi"] == pytest.approx(float(matrix_mutual_information(x, head[y])), abs=1e-10)
    assert whole["feature_entropy"] == pytest.approx(float(terms.h_a), abs=1e-10)
    assert whole["head_entropy"] == pytest.approx(float(terms.h_b), abs=1e-10)
    assert whole["mir"] == pytest.approx(float(mir(x, head[y])), abs=1e-10)
    for batch_size in (None, 64):
        with pytest.raises(ValueError, match=r"zero_entropy='bogus' must be one of \('skip', 'nan', 'zero'\)"):
            module.compute(features=x.tolist(), references=y.tolist(), head=head, batch_size=batch_size,
                           zero_entropy="bogus")
