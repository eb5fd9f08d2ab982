"""InfoDynamicsCallback: the series of evaluations, the JSON and the plots, alone and through a recipe."""

from __future__ import annotations

import json
import math

import pytest
import yaml

from hf_infonc import InfoNCTrainer, InfoNCTrainingArguments
from hf_infonc.callbacks import InfoDynamicsCallback, collapse_reference, evaluation_record, plot_info_dynamics
from hf_infonc.evaluation import add_information_metrics
from hf_infonc.info import entropy_at_collapse, mir_at_collapse
from hf_infonc.testing import tiny_bert_classifier

from trainer_fixtures import text_dataset

CLASS_NAMES = ["cat", "dog", "car"]
MEASURES = ("accuracy", "mir", "hdr", "feature_entropy", "head_entropy", "class_mean_entropy", "nc1", "nc2", "nc3", "nc4")


def test_callback_records_every_evaluation_and_writes_json_and_plots(tmp_path):
    out = tmp_path / "dyn"
    args = InfoNCTrainingArguments(
        output_dir=str(tmp_path / "trainer"), per_device_train_batch_size=8, per_device_eval_batch_size=16,
        max_steps=6, eval_strategy="steps", eval_steps=2, logging_steps=2, learning_rate=1e-3, use_cpu=True,
        report_to=[], save_strategy="no", seed=0, disable_tqdm=True, mi_weight=0.1,
    )
    trainer = InfoNCTrainer(
        model=tiny_bert_classifier(seed=1), args=args, train_dataset=text_dataset(48, seed=0), eval_dataset=text_dataset(40, seed=1)
    )
    add_information_metrics(trainer, plots=False)
    callback = InfoDynamicsCallback(output_dir=out)
    trainer.add_callback(callback)
    trainer.train()

    document = json.loads((out / "info_dynamics.json").read_text())
    assert document["num_classes"] == 3, "C is read from the ClassLabel of the evaluation data"
    assert document["collapse"]["mir"] == pytest.approx(float(mir_at_collapse(3)))
    assert document["collapse"]["entropy"] == pytest.approx(float(entropy_at_collapse(3)))
    assert document["collapse"]["hdr"] == 0.0
    evaluations = document["evaluations"]
    assert [e["step"] for e in evaluations] == [2, 4, 6]
    assert {e["split"] for e in evaluations} == {"eval"}
    for record in evaluations:
        for key in (*MEASURES, "class_mir", "class_hdr", "loss", "epoch"):
            assert isinstance(record[key], float) and math.isfinite(record[key]), (record["step"], key)
        assert 0.0 <= record["mir"] <= 1.0 and 0.0 <= record["hdr"] <= 1.0
        # the training-loss components of the latest log entry ride along
        assert {"loss", "loss/base", "loss/mi"} <= set(record["train"])
        assert all(math.isfinite(v) for v in record["train"].values())
    # the recorded values are the ones the Trainer logged
    logged = [h for h in trainer.state.log_history if "eval_mir" in h]
    assert [h["eval_mir"] for h in logged] == pytest.approx([e["mir"] for e in evaluations])
    assert [h["eval_nc1"] for h in logged] == pytest.approx([e["nc1"] for e in evaluations])
    assert [e["step"] for e in document["train_log"]] == [2, 4, 6]
    for name in ("info_dynamics.png", "neural_collapse.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, name
    assert len(callback.history) == 3 and callback.written[0] == out / "info_dynamics.json"


def test_plot_info_dynamics_alone(tmp_path):
    records = [
        evaluation_record({"eval_accuracy": 0.1 * s, "eval_mir": 0.5 + 0.05 * s, "eval_hdr": 0.5 - 0.05 * s,
                           "eval_nc1": 2.0 / s, "eval_feature_entropy": 1.0, "eval_runtime": 0.1}, step=s, epoch=s / 10)
        for s in (1, 2, 3)
    ]
    assert records[0]["split"] == "eval" and "runtime" not in records[0] and records[0]["mir"] == 0.55
    written = plot_info_dynamics(records, tmp_path / "dyn.png", num_classes=10)
    assert [p.name for p in written] == ["dyn.png", "dyn_nc.png"]
    assert all(p.stat().st_size > 10_000 for p in written)
    # C = 2: MIR at collapse is 0/0, so that line is left out (no error, no NaN line)
    assert collapse_reference(2)["mir"] is None and collapse_reference(None) is None
    plot_info_dynamics({"evaluations": records, "num_classes": 2}, tmp_path / "c2")
    assert (tmp_path / "c2" / "info_dynamics.png").exists()
    with pytest.raises(ValueError, match="num_classes"):
        InfoDynamicsCallback(num_classes=1)


def test_recipe_info_dynamics_through_run_recipe(tmp_path):
    from test_finetune import TINY

    from hf_infonc.finetune import run_recipe
    from hf_infonc.recipe import load_recipe

    raw = yaml.safe_load(yaml.safe_dump(TINY))
    out = tmp_path / "run"
    raw["training"].update(output_dir=str(out), eval_strategy="steps", eval_steps=2, save_strategy="no")
    raw["analysis"] = {"info_dynamics": True}
    path = tmp_path / "tiny_dynamics.yaml"
    path.write_text(yaml.safe_dump(raw))
    results = run_recipe(load_recipe(path))

    document = json.loads((out / "info_dynamics.json").read_text())
    assert document["num_classes"] == 10
    assert document["collapse"]["mir"] == pytest.approx(float(mir_at_collapse(10)))
    periodic = [e for e in document["evaluations"] if e["split"] == "eval"]
    assert [e["step"] for e in periodic] == [2, 4, 6]
    for record in periodic:
        for key in MEASURES:
            assert isinstance(record[key], float) and math.isfinite(record[key]), (record["step"], key)
    # hf-infonc finetune's own evaluations are kept too: before training, and after it (rewritten at the end)
    splits = [e["split"] for e in document["evaluations"]]
    assert splits[0] == "before" and splits[-1] == "after"
    after = document["evaluations"][-1]
    assert after["accuracy"] == pytest.approx(results["after"]["accuracy"])
    assert after["mir"] == pytest.approx(results["after"]["mir"])
    assert (out / "info_dynamics.png").stat().st_size > 10_000
    assert (out / "neural_collapse.png").stat().st_size > 10_000


def test_evaluations_before_a_resume_come_from_the_log_history():
    """After resume_from_checkpoint the callback has only seen the new evaluations; the log has the rest."""
    from types import SimpleNamespace

    log = [
        {"before_accuracy": 0.1, "before_mir": 0.2, "before_runtime": 1.0, "epoch": 0, "step": 0},
        {"loss": 2.0, "loss/base": 2.1, "epoch": 0.1, "step": 2},
        {"eval_accuracy": 0.3, "eval_mir": 0.4, "eval_runtime": 1.0, "epoch": 0.1, "step": 2},
        {"loss": 1.5, "loss/base": 1.6, "epoch": 0.2, "step": 4},
        {"eval_accuracy": 0.5, "eval_mir": 0.6, "eval_runtime": 1.0, "epoch": 0.2, "step": 4},
        {"train_runtime": 3.0, "train_loss": 1.7, "epoch": 0.2, "step": 4},
    ]
    callback = InfoDynamicsCallback(num_classes=3)
    callback.history = [evaluation_record(log[0], 0, 0), evaluation_record(log[4], 4, 0.2)]  # seen after resuming
    document = callback.payload(SimpleNamespace(log_history=log))
    assert [(e["split"], e["step"]) for e in document["evaluations"]] == [("before", 0), ("eval", 2), ("eval", 4)]
    assert document["evaluations"][1]["mir"] == 0.4 and isinstance(document["evaluations"][1]["step"], int)
    assert [e["step"] for e in document["train_log"]] == [2, 4]
