"""Drop-in: with every information weight 0, ``InfoNCTrainer`` behaves as ``transformers.Trainer``.

Each test mirrors one of transformers' own Trainer tests (``tests/trainer/test_trainer.py``:
predict/evaluate outputs, label smoothing, a custom loss function, ``num_items_in_batch``,
checkpoint files, resume, evaluation accumulation, callback events) and runs it with both trainers
on the same model and data, expecting the same result. The deviations that remain on purpose are
asserted too: the arguments are saved as ``training_args.json`` (no pickle), the log history gains
``loss/base`` and the batch ``mir``/``hdr``, and a head that takes ``**kwargs`` but ignores
``num_items_in_batch`` is not trained with a loss inflated by the accumulation steps
(transformers issue #47688).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import (
    Seq2SeqTrainingArguments,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    default_data_collator,
)

from trainer_fixtures import (
    RegressionConfig,
    RegressionModel,
    image_dataset,
    regression_dataset,
    summed_bert,
    text_dataset,
)
from hf_infonc import InfoNCTrainer, InfoNCTrainingArguments, add_information_metrics
from hf_infonc.testing import tiny_bert_classifier, tiny_clip, tiny_vit_classifier

REPO = Path(__file__).resolve().parents[1]
#: What InfoNCTrainer adds to a training log entry (weights 0): the base component and the batch ratios.
ADDED_TRAIN_KEYS = {"loss/base", "mir", "hdr"}


def _args(cls, folder: Path, **overrides):
    values = dict(
        output_dir=str(folder), per_device_train_batch_size=8, per_device_eval_batch_size=8, max_steps=4,
        learning_rate=1e-3, logging_steps=1, use_cpu=True, report_to=[], save_strategy="no", seed=0,
        disable_tqdm=True, dataloader_drop_last=False,
    )
    values.update(overrides)
    return cls(**values)


def _pair(tmp_path: Path, make_model, train=None, eval_data=None, *, train_steps: bool = True, **overrides):
    """The same model, data and arguments under Trainer and InfoNCTrainer (weights 0), trained if asked."""
    trainers = {}
    for name, cls, args_cls in (("trainer", Trainer, TrainingArguments), ("infonc", InfoNCTrainer, InfoNCTrainingArguments)):
        extra = {key: overrides.pop(key) for key in ("compute_loss_func", "data_collator", "callbacks") if key in overrides}
        trainer = cls(
            model=make_model(), args=_args(args_cls, tmp_path / name, **overrides), train_dataset=train,
            eval_dataset=eval_data, **{"data_collator": default_data_collator, **extra},
        )
        overrides.update(extra)
        if train_steps and train is not None:
            trainer.train()
        trainers[name] = trainer
    return trainers["trainer"], trainers["infonc"]


def _assert_same_structure(a, b, atol: float = 1e-6) -> None:
    """Same nesting, types, shapes and values (numpy arrays or tensors, in tuples/lists)."""
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, dict):  # ModelOutputs inside the predictions (CLIP's tower outputs)
        assert list(a) == list(b)
        for key in a:
            _assert_same_structure(a[key], b[key], atol)
    elif isinstance(a, (tuple, list)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same_structure(x, y, atol)
    elif a is None:
        assert b is None
    else:
        a, b = np.asarray(a), np.asarray(b)
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_allclose(a, b, atol=atol, rtol=1e-6)


def _train_logs(trainer) -> list[dict]:
    return [h for h in trainer.state.log_history if "loss" in h]


def _params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same_params(a: torch.nn.Module, b: torch.nn.Module, atol: float = 1e-6) -> None:
    pa, pb = _params(a), _params(b)
    assert pa.keys() == pb.keys()
    for key in pa:
        torch.testing.assert_close(pa[key], pb[key], atol=atol, rtol=0, msg=key)


def _assert_same_training(plain, ours, *, atol: float = 1e-6) -> None:
    """Same logged losses (and other Trainer keys), same parameters; ours adds only ADDED_TRAIN_KEYS."""
    logs_plain, logs_ours = _train_logs(plain), _train_logs(ours)
    assert len(logs_plain) == len(logs_ours) > 0
    for a, b in zip(logs_plain, logs_ours):
        assert set(b) - set(a) <= ADDED_TRAIN_KEYS and set(a) <= set(b)
        for key in a:
            assert b[key] == pytest.approx(a[key], abs=atol), key
    _assert_same_params(plain.model, ours.model, atol=atol)


MODELS = {
    "regression (no adapter)": (lambda: RegressionModel(RegressionConfig(a=0.5, b=-0.5)), lambda: regression_dataset()),
    "regression, two outputs": (
        lambda: RegressionModel(RegressionConfig(a=0.5, b=-0.5, double_output=True)), lambda: regression_dataset()
    ),
    "bert": (lambda: tiny_bert_classifier(seed=3), lambda: text_dataset()),
    "bert, hidden states": (lambda: _bert_with_hidden_states(), lambda: text_dataset()),
    "vit": (lambda: tiny_vit_classifier(seed=3), lambda: image_dataset()),
}


def _bert_with_hidden_states():
    model = tiny_bert_classifier(seed=3)
    model.config.output_hidden_states = True
    return model


@pytest.mark.parametrize("case", list(MODELS))
def test_train_predict_evaluate_identical(tmp_path, case, caplog):
    """Training losses and parameters, predict() and evaluate(): structure, shapes and values as Trainer's
    (several outputs stay a tuple; a model no adapter supports trains with one warning)."""
    make_model, make_data = MODELS[case]
    with caplog.at_level(logging.WARNING, logger="hf_infonc.trainer"):
        plain, ours = _pair(tmp_path, make_model, make_data(), make_data())
    unsupported = [r for r in caplog.records if "no hf_infonc adapter supports" in r.getMessage()]
    assert len(unsupported) == (1 if "regression" in case else 0)
    _assert_same_training(plain, ours)
    data = make_data()
    p, q = plain.predict(data), ours.predict(data)
    _assert_same_structure(p.predictions, q.predictions)
    _assert_same_structure(p.label_ids, q.label_ids)
    assert set(p.metrics) <= set(q.metrics)
    for key in ("test_loss",):
        assert q.metrics[key] == pytest.approx(p.metrics[key], abs=1e-6)
    m, n = plain.evaluate(), ours.evaluate()
    assert n["eval_loss"] == pytest.approx(m["eval_loss"], abs=1e-6)
    added = set(n) - set(m)
    assert added <= {"eval_loss/base", "eval_mir", "eval_hdr"}
    if "regression" in case:
        assert not added  # nothing to measure without an adapter
    if "two outputs" in case or "hidden states" in case:
        assert isinstance(q.predictions, tuple) and len(q.predictions) >= 2


def test_clip_pairs_identical(tmp_path):
    """A CLIPModel on image–caption pairs (Trainer needs return_loss=True in the batch)."""
    collate = lambda features: {**default_data_collator(features), "return_loss": True}  # noqa: E731
    data = image_dataset(n=24, captions=True)
    plain, ours = _pair(tmp_path, lambda: tiny_clip(seed=3), data, data, data_collator=collate, max_steps=3)
    _assert_same_training(plain, ours, atol=1e-5)
    p, q = plain.predict(data), ours.predict(data)
    _assert_same_structure(p.predictions, q.predictions, atol=1e-5)
    assert q.metrics["test_loss"] == pytest.approx(p.metrics["test_loss"], abs=1e-5)


def test_predictions_ordinary_compute_metrics(tmp_path):
    """The issue's example: compute_metrics doing np.argmax(p.predictions, -1) works unchanged."""
    seen = {}

    def compute_metrics(p):
        seen[len(seen)] = p.predictions.shape
        return {"acc": float((np.argmax(p.predictions, -1) == p.label_ids).mean())}

    data = text_dataset()
    plain, ours = _pair(tmp_path, lambda: tiny_bert_classifier(seed=1), data, data, train_steps=False)
    plain.compute_metrics = ours.compute_metrics = compute_metrics
    assert ours.evaluate()["eval_acc"] == plain.evaluate()["eval_acc"]
    assert seen == {0: (40, 3), 1: (40, 3)}


def test_label_smoothing_identical(tmp_path):
    data = text_dataset(n=48)
    plain, ours = _pair(tmp_path, lambda: tiny_bert_classifier(seed=2), data, data, label_smoothing_factor=0.2)
    _assert_same_training(plain, ours)
    assert ours.label_smoother is not None
    assert ours.evaluate()["eval_loss"] == pytest.approx(plain.evaluate()["eval_loss"], abs=1e-6)
    # and it is really applied: a smoothed loss differs from the plain cross-entropy
    _, unsmoothed = _pair(tmp_path / "no", lambda: tiny_bert_classifier(seed=2), data, train_steps=False)
    assert unsmoothed.evaluate(data)["eval_loss"] != pytest.approx(ours.evaluate()["eval_loss"], abs=1e-3)


def _relabelled(kind: str):
    """text_dataset's rows with labels that are not class indices: every fourth one ignored (-100), a float
    regression target, or multi-hot float labels."""
    data = text_dataset(n=32)
    rows = {key: data[:][key] for key in ("input_ids", "attention_mask")}
    classes = data[:]["labels"]
    if kind == "ignored":
        rows["labels"] = classes.masked_fill(torch.arange(32) % 4 == 0, -100)
    elif kind == "regression":
        rows["labels"] = classes.float() / 2
    else:
        rows["labels"] = torch.nn.functional.one_hot(classes, 3).float()
    relabelled = datasets.Dataset.from_dict({key: value.tolist() for key, value in rows.items()})
    relabelled.set_format("torch")
    return relabelled


@pytest.mark.parametrize("kind", ["ignored", "regression", "multi_label"])
def test_labels_that_are_not_classes_train_and_evaluate_as_with_trainer(tmp_path, kind):
    """Trainer trains on -100 labels, regression targets and multi-hot labels; with every weight 0 the batch
    MIR/HDR come from the rows that hold a class (none: no ratio is logged) and nothing raises."""
    data = _relabelled(kind)
    num_labels, problem = {"ignored": (3, None), "regression": (1, None), "multi_label": (3, "multi_label_classification")}[kind]

    def make_model():
        model = tiny_bert_classifier(num_labels, seed=2)
        model.config.problem_type = problem
        return model

    plain, ours = _pair(tmp_path, make_model, data, data, logging_steps=2)
    _assert_same_training(plain, ours)
    metrics_plain, metrics_ours = plain.evaluate(), ours.evaluate()
    assert metrics_ours["eval_loss"] == pytest.approx(metrics_plain["eval_loss"], abs=1e-6)
    logged = [h for h in ours.state.log_history if "loss" in h]
    if kind == "ignored":
        assert all(0 < h["mir"] <= 1 and 0 <= h["hdr"] <= 1 for h in logged)
        assert 0 < metrics_ours["eval_mir"] <= 1
    else:
        assert not any("mir" in h or "hdr" in h for h in logged) and "eval_mir" not in metrics_ours


def test_a_nan_activation_is_logged_as_by_trainer(tmp_path):
    """One forward whose features are NaN (an overflow): Trainer skips it in the logged loss and trains on;
    so does InfoNCTrainer with every weight 0, logging no ratio for that step."""

    def make_model():
        model = tiny_bert_classifier(seed=2)
        calls = []

        def poison(module, inputs, output):
            if not torch.is_grad_enabled():
                return output  # InfoNCTrainer's no-grad probe of the first batch
            calls.append(1)
            return output * math.nan if len(calls) == 2 else output

        model.bert.pooler.register_forward_hook(poison)
        return model

    data = text_dataset(n=32)
    plain, ours = _pair(tmp_path, make_model, data, max_steps=3)
    assert [h["loss"] for h in _train_logs(ours)] == [h["loss"] for h in _train_logs(plain)]
    assert ["mir" in h for h in _train_logs(ours)] == [True, False, False]  # NaN weights after step 2


def test_no_component_is_kept_when_nothing_is_logged(tmp_path):
    _, ours = _pair(tmp_path, lambda: tiny_bert_classifier(seed=2), text_dataset(n=32), logging_strategy="no")
    assert not any(ours._component_records["train"].values())


def test_one_row_batches_log_no_undefined_ratio(tmp_path):
    """MIR/HDR of a one-row batch are 0/0: left out of the logs (and of trainer_state.json), not NaN."""
    plain, ours = _pair(tmp_path, lambda: tiny_bert_classifier(seed=2), text_dataset(n=8), per_device_train_batch_size=1)
    _assert_same_training(plain, ours)
    assert not any("mir" in h or "hdr" in h for h in ours.state.log_history)


def test_compute_loss_func_identical(tmp_path):
    """A user loss (class-weighted CE normalised by num_items_in_batch) is called as by Trainer."""
    calls = {"trainer": [], "infonc": []}

    def make_loss(name):
        def loss(outputs, labels, num_items_in_batch=None):
            calls[name].append(None if num_items_in_batch is None else int(num_items_in_batch))
            weight = torch.tensor([1.0, 2.0, 0.5])
            summed = torch.nn.functional.cross_entropy(outputs["logits"], labels, weight=weight, reduction="sum")
            return summed / (num_items_in_batch if num_items_in_batch is not None else labels.numel())

        return loss

    data = text_dataset(n=36)
    trainers = []
    for name, cls, args_cls in (("trainer", Trainer, TrainingArguments), ("infonc", InfoNCTrainer, InfoNCTrainingArguments)):
        trainer = cls(
            model=tiny_bert_classifier(seed=4), args=_args(args_cls, tmp_path / name, gradient_accumulation_steps=2),
            train_dataset=data, eval_dataset=data, data_collator=default_data_collator, compute_loss_func=make_loss(name),
        )
        trainer.train()
        trainer.evaluate()
        trainers.append(trainer)
    assert calls["trainer"] == calls["infonc"] and len(calls["trainer"]) > 4
    _assert_same_training(*trainers)


def test_num_items_in_batch_model_identical(tmp_path):
    """A model whose loss uses num_items_in_batch: same loss kwargs, same normalisation over an uneven
    accumulation cycle (36 rows, batch 8, accumulation 2), same parameters."""
    data = text_dataset(n=36)
    plain, ours = _pair(
        tmp_path, lambda: summed_bert(seed=6), data, gradient_accumulation_steps=2, max_steps=-1, num_train_epochs=1
    )
    assert plain.model_accepts_loss_kwargs and ours.model_accepts_loss_kwargs
    _assert_same_training(plain, ours, atol=1e-5)


def test_head_ignoring_num_items_keeps_the_accumulated_mean(tmp_path):
    """BERT's classifier takes **kwargs but computes a plain mean: Trainer then skips the division by the
    accumulation steps (transformers #47688). InfoNCTrainer detects it and keeps the loss a mean: the
    same logged loss and parameters with accumulation 4 × batch 4 as with batch 16, and Trainer's
    loss is either the same (once fixed upstream) or exactly 4 times as large."""
    data = text_dataset(n=32)
    common = dict(learning_rate=0.0, max_steps=2)
    plain4, ours4 = _pair(
        tmp_path / "ga4", lambda: tiny_bert_classifier(seed=5), data, per_device_train_batch_size=4,
        gradient_accumulation_steps=4, **common,
    )
    _, ours1 = _pair(tmp_path / "ga1", lambda: tiny_bert_classifier(seed=5), data, per_device_train_batch_size=16, **common)
    assert not ours4.model_accepts_loss_kwargs
    for one, four, theirs in zip(_train_logs(ours1), _train_logs(ours4), _train_logs(plain4)):
        assert four["loss"] == pytest.approx(one["loss"], abs=1e-5)
        assert theirs["loss"] == pytest.approx(one["loss"], abs=1e-5) or theirs["loss"] == pytest.approx(4 * one["loss"], abs=1e-4)


def _checkpoint_files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_checkpoints_identical(tmp_path):
    """Same checkpoint folders and files (training_args.json instead of the pickle), same weights,
    optimizer, scheduler and RNG states, same trainer state (log entries gain only ADDED_TRAIN_KEYS)."""
    data = text_dataset(n=48)
    plain, ours = _pair(
        tmp_path, lambda: tiny_bert_classifier(seed=7), data, save_strategy="steps", save_steps=2, max_steps=4
    )
    root_plain, root_ours = Path(plain.args.output_dir), Path(ours.args.output_dir)
    assert sorted(p.name for p in root_plain.glob("checkpoint-*")) == sorted(p.name for p in root_ours.glob("checkpoint-*"))
    assert len(list(root_ours.glob("checkpoint-*"))) == 2
    for checkpoint in root_plain.glob("checkpoint-*"):
        mine = root_ours / checkpoint.name
        files_plain, files_ours = _checkpoint_files(checkpoint), _checkpoint_files(mine)
        assert files_plain - files_ours == {"training_args.bin"} and files_ours - files_plain == {"training_args.json"}
        json.loads((mine / "training_args.json").read_text())
        theirs, own = load_file(checkpoint / "model.safetensors"), load_file(mine / "model.safetensors")
        assert theirs.keys() == own.keys()
        for key in theirs:
            torch.testing.assert_close(own[key], theirs[key], atol=1e-6, rtol=0)
        for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
            a = torch.load(checkpoint / name, weights_only=False)
            b = torch.load(mine / name, weights_only=False)
            _assert_nested_close(a, b)
        state_plain = json.loads((checkpoint / "trainer_state.json").read_text())
        state_ours = json.loads((mine / "trainer_state.json").read_text())
        history_plain, history_ours = state_plain.pop("log_history"), state_ours.pop("log_history")
        assert state_plain == state_ours
        for a, b in zip(history_plain, history_ours):
            assert set(b) - set(a) <= ADDED_TRAIN_KEYS
            assert {k: b[k] for k in a} == pytest.approx(a, abs=1e-6)


def _assert_nested_close(a, b) -> None:
    if isinstance(a, torch.Tensor):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=0)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _assert_nested_close(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_nested_close(x, y)
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b


def test_resume_identical(tmp_path):
    """Resuming from checkpoint-2 gives the uninterrupted run's parameters, under both trainers."""
    data = text_dataset(n=48)
    settings = dict(save_strategy="steps", save_steps=2, max_steps=4)
    plain, ours = _pair(tmp_path / "full", lambda: tiny_bert_classifier(seed=8), data, **settings)
    resumed = []
    for trainer in (plain, ours):
        again = type(trainer)(
            model=tiny_bert_classifier(seed=99), args=trainer.args, train_dataset=data, data_collator=default_data_collator
        )
        again.train(resume_from_checkpoint=str(Path(trainer.args.output_dir) / "checkpoint-2"))
        _assert_same_params(again.model, trainer.model, atol=1e-6)
        resumed.append(again)
    _assert_same_params(*[t.model for t in resumed])


def test_eval_accumulation_identical(tmp_path):
    data = text_dataset(n=30)
    plain, ours = _pair(tmp_path, lambda: tiny_bert_classifier(seed=9), None, data, eval_accumulation_steps=2,
                        per_device_eval_batch_size=4)
    p, q = plain.predict(data), ours.predict(data)
    _assert_same_structure(p.predictions, q.predictions)
    assert q.predictions.shape == (30, 3)


class _Events(TrainerCallback):
    def __init__(self) -> None:
        self.events: list[str] = []

    def __getattribute__(self, name: str):
        if name.startswith("on_"):
            events = object.__getattribute__(self, "events")
            return lambda *args, **kwargs: events.append(name)
        return object.__getattribute__(self, name)


def test_callback_events_identical(tmp_path):
    data = text_dataset(n=32)
    recorders = [_Events(), _Events()]
    for recorder, (cls, args_cls, name) in zip(
        recorders, ((Trainer, TrainingArguments, "trainer"), (InfoNCTrainer, InfoNCTrainingArguments, "infonc"))
    ):
        trainer = cls(
            model=tiny_bert_classifier(seed=10), callbacks=[recorder], train_dataset=data, eval_dataset=data,
            args=_args(args_cls, tmp_path / f"events-{name}", eval_strategy="steps", eval_steps=2, save_strategy="steps",
                       save_steps=2),
        )
        trainer.train()
        trainer.evaluate()
        trainer.predict(data)
    assert recorders[0].events == recorders[1].events and "on_evaluate" in recorders[0].events


# ------------------------------------------------------------------ evaluation components are per-sample means
def test_eval_components_are_per_sample_means(tmp_path):
    """loss/base and the evaluation loss do not depend on the eval batch size or the last batch's size."""
    data = text_dataset(n=30)
    values = {}
    for batch in (4, 7, 30):
        trainer = InfoNCTrainer(
            model=tiny_bert_classifier(seed=11), eval_dataset=data, data_collator=default_data_collator,
            args=_args(InfoNCTrainingArguments, tmp_path / f"b{batch}", per_device_eval_batch_size=batch, mi_weight=0.1),
        )
        metrics = trainer.evaluate()
        values[batch] = metrics
    for batch in (4, 7):
        assert values[batch]["eval_loss/base"] == pytest.approx(values[30]["eval_loss/base"], abs=1e-6)
    # the batch Gram terms are batch quantities; weighted per row, the last small batch counts less
    assert all(math.isfinite(v["eval_loss/mi"]) for v in values.values())


@pytest.mark.distributed
def test_two_processes_drop_in_and_eval_components(tmp_path):
    """On 2 CPU processes: InfoNCTrainer (weights 0) trains as Trainer (average_tokens_across_devices,
    num_items_in_batch; CLIP pairs with each process's own contrastive loss) and the evaluation components of 2 × batch 4 equal those of 1 × batch 8."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}"}
    script = str(REPO / "tests" / "dist_scripts" / "dropin_worker.py")
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    subprocess.run([sys.executable, script, str(one)], check=True, env=env, cwd=tmp_path, timeout=600)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531"]
    subprocess.run([*torchrun, script, str(two)], check=True, env=env, cwd=tmp_path, timeout=600)
    single, double = json.loads(one.read_text()), json.loads(two.read_text())
    assert (single["world"], double["world"]) == (1, 2)
    for result in (single, double):  # drop-in on each process count
        assert result["infonc_losses"] == pytest.approx(result["trainer_losses"], abs=1e-6)
        assert result["infonc_params"] == pytest.approx(result["trainer_params"], abs=1e-6)
        assert result["pairs_infonc_losses"] == pytest.approx(result["pairs_trainer_losses"], abs=1e-5)
        assert result["pairs_infonc_params"] == pytest.approx(result["pairs_trainer_params"], abs=1e-5)
    for key, value in single["eval"].items():  # 1 × 8 = 2 × 4 for every component
        assert double["eval"][key] == pytest.approx(value, abs=1e-5), key


# ------------------------------------------------------------------ the card in every workflow
def test_create_model_card_and_push_to_hub(tmp_path, monkeypatch):
    """trainer.push_to_hub() writes hf_infonc's card (metadata, loss formula with weights, the last
    evaluation's MIR/HDR/NC, citation) and uploads no pickle, also from checkpoint pushes."""
    from huggingface_hub import HfApi, ModelCard, RepoUrl

    uploads = []

    def fake_upload(self, *, folder_path, ignore_patterns=None, **kwargs):
        import fnmatch

        files = [p.relative_to(folder_path).as_posix() for p in Path(folder_path).rglob("*") if p.is_file()]
        ignored = list(ignore_patterns or [])
        uploads.append([f for f in files if not any(fnmatch.fnmatch(f, pattern) for pattern in ignored)])

        class Done:
            def done(self):
                return True

        return Done() if kwargs.get("run_as_future") else "https://hub.test/commit"

    monkeypatch.setattr(HfApi, "create_repo", lambda self, *a, **k: RepoUrl("https://huggingface.co/me/model"))
    monkeypatch.setattr(HfApi, "upload_folder", fake_upload)
    data = text_dataset(n=40)
    trainer = InfoNCTrainer(
        model=tiny_bert_classifier(seed=12), train_dataset=data, eval_dataset=data, data_collator=default_data_collator,
        args=_args(InfoNCTrainingArguments, tmp_path / "out", mi_weight=0.2, entropy_gap_weight=0.1, eval_strategy="steps",
                   eval_steps=2, save_strategy="steps", save_steps=2, push_to_hub=True, hub_model_id="me/model",
                   hub_strategy="checkpoint", hub_token="hf_" + "x" * 34),
    )
    add_information_metrics(trainer, plots=True)
    trainer.train()
    trainer.push_to_hub()
    card_path = Path(trainer.args.output_dir) / "README.md"
    text = card_path.read_text()
    card = ModelCard.load(card_path)
    assert card.data.library_name == "transformers" and "hf_infonc" in card.data.tags
    assert "arxiv:2406.03999" in card.data.tags and "mutual-information-loss" in card.data.tags
    assert "L = L_base - 0.2·MI(K₁, K₂) + 0.1·|H(K₁) - H(K₂)|" in text
    last_eval = [h for h in trainer.state.log_history if "eval_mir" in h][-1]
    assert f"{last_eval['eval_mir']:.4f}" in text and f"{last_eval['eval_nc1']:.4f}"[:4] in text
    assert "@article{song2024exploring" in text and "xxxxxxxx" not in text
    assert uploads and all(not f.endswith((".bin", ".pt", ".pth")) for files in uploads for f in files)
    assert any("README.md" in files for files in uploads)
    assert not (Path(trainer.args.output_dir) / "training_args.bin").exists()


def test_card_of_an_unsupported_model_is_transformers(tmp_path):
    trainer = InfoNCTrainer(model=RegressionModel(RegressionConfig()), args=_args(InfoNCTrainingArguments, tmp_path / "out"))
    trainer.create_model_card(model_name="reg")
    assert "hf_infonc" not in (tmp_path / "out" / "README.md").read_text()


# ------------------------------------------------------------------ measure without swapping the trainer
@pytest.mark.parametrize(
    "make_model, make_data",
    [(lambda: tiny_bert_classifier(seed=13), lambda: text_dataset(n=48)), (lambda: tiny_vit_classifier(seed=13), lambda: image_dataset(n=48))],
    ids=["sequence", "image"],
)
def test_plain_trainer_information_metrics_equal_infonc(tmp_path, make_model, make_data):
    """One line (add_information_metrics) on a plain Trainer: eval_mir, eval_hdr, eval_nc1… logged and
    returned, equal to InfoNCTrainer's, the user's compute_metrics kept, plots at the end; predictions
    untouched."""
    data = make_data()
    runs = {}
    for name, cls, args_cls in (("trainer", Trainer, TrainingArguments), ("infonc", InfoNCTrainer, InfoNCTrainingArguments)):
        trainer = cls(
            model=make_model(), train_dataset=data, eval_dataset=data, data_collator=default_data_collator,
            args=_args(args_cls, tmp_path / name, eval_strategy="steps", eval_steps=2),
            compute_metrics=lambda p: {"top1": float((np.argmax(p.predictions, -1) == p.label_ids).mean())},
        )
        add_information_metrics(trainer)
        trainer.train()
        runs[name] = (trainer, trainer.evaluate(), trainer.predict(data))
    (plain, m_plain, p_plain), (ours, m_ours, p_ours) = runs["trainer"], runs["infonc"]
    keys = ("accuracy", "mir", "hdr", "class_mir", "class_hdr", "feature_entropy", "nc1", "nc2", "nc3", "nc4")
    for key in keys:
        assert math.isfinite(m_plain[f"eval_{key}"]), key
        assert m_ours[f"eval_{key}"] == pytest.approx(m_plain[f"eval_{key}"], abs=1e-6), key
    assert m_plain["eval_top1"] == m_plain["eval_accuracy"] and m_ours["eval_top1"] == m_ours["eval_accuracy"]
    logged = [h for h in plain.state.log_history if "eval_mir" in h]
    assert len(logged) == 3 and logged[-1]["eval_mir"] == m_plain["eval_mir"]  # logged, not only returned
    assert isinstance(p_plain.predictions, np.ndarray) and p_plain.predictions.shape == (48, 3)
    _assert_same_structure(p_plain.predictions, p_ours.predictions)
    for trainer in (plain, ours):
        folder = Path(trainer.args.output_dir)
        assert (folder / "info_dynamics.png").stat().st_size > 10_000 and (folder / "neural_collapse.png").is_file()
        document = json.loads((folder / "info_dynamics.json").read_text())
        assert [e["step"] for e in document["evaluations"] if e["split"] == "eval"][:2] == [2, 4]


def test_information_metrics_need_a_supported_model(tmp_path):
    trainer = Trainer(model=RegressionModel(RegressionConfig()), args=_args(TrainingArguments, tmp_path))
    with pytest.raises(TypeError, match="No hf_infonc adapter supports RegressionModel"):
        add_information_metrics(trainer)


# ------------------------------------------------------------------ the documented adapter example
def test_documented_adapter_example(tmp_path):
    """docs/adapters.md's GPT-2 adapter: with it, InfoNCTrainer trains a GPT-2 classifier with the MI loss,
    and with weights 0 exactly as Trainer does."""
    from transformers import GPT2Config, GPT2ForSequenceClassification

    from hf_infonc.adapters import base

    text = (REPO / "docs" / "adapters.md").read_text().split("## Adding an adapter for a new family")[1]
    code = text.split("```python\n")[1].split("```")[0]
    registry = list(base._REGISTRY)
    namespace: dict = {}
    try:
        exec(compile(code, "docs/adapters.md", "exec"), namespace)

        def make_model():
            torch.manual_seed(14)
            config = GPT2Config(vocab_size=3100, n_embd=32, n_layer=2, n_head=2, n_positions=32, num_labels=3,
                                pad_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
            return GPT2ForSequenceClassification(config)

        data = text_dataset(n=32)
        plain, ours = _pair(tmp_path, make_model, data, max_steps=2)
        assert type(ours.adapter).__name__ == "GPT2ClassifierAdapter"
        _assert_same_training(plain, ours, atol=1e-5)
        trainer = InfoNCTrainer(
            model=make_model(), args=_args(InfoNCTrainingArguments, tmp_path / "mi", mi_weight=0.3, max_steps=2),
            train_dataset=data, data_collator=default_data_collator,
        )
        trainer.train()
        assert all(math.isfinite(h["loss/mi"]) for h in _train_logs(trainer))
    finally:
        base._REGISTRY[:] = registry


@pytest.mark.parametrize("family", ["bert", "clip"])
def test_predict_on_unlabelled_data_with_information_weights(tmp_path, family):
    """predict() on data without labels returns the logits, also with information weights > 0 and for
    CLIP, whose classification runs through the adapter (model(**inputs) runs it)."""
    from hf_infonc.testing import minilm_tokenizer

    if family == "bert":
        model, data, extra = tiny_bert_classifier(seed=15), text_dataset(n=20).remove_columns("labels"), {}
    else:
        model, data = tiny_clip(seed=15), image_dataset(n=20).remove_columns("labels")
        extra = dict(class_names=["cat", "dog", "car"], processing_class=minilm_tokenizer())
    data.set_format("torch")
    trainer = InfoNCTrainer(
        model=model, args=_args(InfoNCTrainingArguments, tmp_path, mi_weight=0.1, cma_weight=0.2),
        data_collator=default_data_collator, **extra,
    )
    output = trainer.predict(data)
    assert isinstance(output.predictions, np.ndarray) and output.predictions.shape == (20, 3)
    assert output.label_ids is None


def test_evaluation_prepare_workaround_still_needed():
    """While ``_EVALUATION_PREPARE_STICKS`` holds, accelerate must still treat a model prepared with
    ``evaluation_mode=True`` as prepared for training (under bf16 its forward is not re-wrapped; on several
    processes DDP is skipped). When this fails, accelerate re-prepares it: drop the workaround."""
    import hf_infonc.trainer as trainer_module

    if not trainer_module._EVALUATION_PREPARE_STICKS:
        pytest.skip("the installed accelerate is not known to need the workaround")
    script = (
        "import torch\nfrom accelerate import Accelerator\n"
        "accelerator = Accelerator(cpu=True, mixed_precision='bf16')\nmodel = torch.nn.Linear(2, 2)\n"
        "accelerator.prepare_model(model, evaluation_mode=True)\nforward = model.forward\n"
        "accelerator.prepare_model(model)\nprint(model.forward is forward)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "True"


@dataclasses.dataclass
class _ArgsWithAuxWeight(TrainingArguments):
    aux_weight: float = 0.0


@dataclasses.dataclass(kw_only=True)
class _ArgsWithRequiredField(InfoNCTrainingArguments):
    experiment: str


def test_card_of_arguments_with_a_required_field(tmp_path):
    """create_model_card (push_to_hub's card) lists the settings that differ from the defaults, also for a
    user's arguments class with a field of its own that has no default."""
    args = _ArgsWithRequiredField(output_dir=str(tmp_path), experiment="e1", learning_rate=3e-4, use_cpu=True,
                                  report_to=[])
    trainer = InfoNCTrainer(model=tiny_bert_classifier(seed=3), args=args, train_dataset=text_dataset(n=8),
                            data_collator=default_data_collator)
    trainer.create_model_card()
    text = (tmp_path / "README.md").read_text()
    assert "learning_rate" in text and "0.0003" in text and "experiment" in text


@pytest.mark.parametrize("args_cls", [TrainingArguments, _ArgsWithAuxWeight, Seq2SeqTrainingArguments])
def test_training_arguments_subclass_is_kept(tmp_path, args_cls):
    """Any TrainingArguments subclass is accepted and kept as ``trainer.args`` (the caller's own object), as by
    Trainer; its information settings are the defaults (weights 0), and edits after building the trainer count."""
    trainers = []
    for name, cls in (("trainer", Trainer), ("infonc", InfoNCTrainer)):
        args = _args(args_cls, tmp_path / name, max_steps=2)
        trainer = cls(model=tiny_bert_classifier(seed=3), args=args, train_dataset=text_dataset(n=16),
                      data_collator=default_data_collator)
        assert trainer.args is args
        args.max_steps = 3  # after the trainer is built, as Trainer reads it in train()
        trainer.train()
        assert trainer.state.global_step == 3
        trainers.append(trainer)
    _assert_same_training(*trainers)
    settings = trainers[1].information_settings
    assert (settings.cma_weight, settings.mi_weight, settings.entropy_gap_weight) == (0.0, 0.0, 0.0)
    assert settings.info_losses_active is False and settings.class_prompt_templates == ["a photo of a {}."]


def test_positional_arguments_as_trainer(tmp_path):
    """``InfoNCTrainer(model, args, data_collator, train_dataset, eval_dataset)`` as ``Trainer``'s positional call."""
    data = text_dataset(n=16)
    trainers = [
        cls(tiny_bert_classifier(seed=3), _args(args_cls, tmp_path / cls.__name__, max_steps=2),
            default_data_collator, data, data)
        for cls, args_cls in ((Trainer, TrainingArguments), (InfoNCTrainer, InfoNCTrainingArguments))
    ]
    for trainer in trainers:
        trainer.train()
    _assert_same_training(*trainers)
    assert trainers[1].eval_dataset is data and trainers[1].data_collator is default_data_collator


def test_default_arguments_as_trainer(tmp_path, monkeypatch):
    """Without ``args``, Trainer's own default arguments (output folder ``tmp_trainer``)."""
    monkeypatch.chdir(tmp_path)
    plain, ours = (cls(model=tiny_bert_classifier(seed=3)) for cls in (Trainer, InfoNCTrainer))
    assert ours.args.output_dir == plain.args.output_dir == "tmp_trainer"
    assert type(ours.args) is TrainingArguments and ours.information_settings.info_losses_active is False


def test_model_init_gets_the_adapter(tmp_path, caplog):
    """A model built by ``model_init`` gets its adapter: no false warning with weights 0, the information losses
    with a weight > 0, and the adapter set up again on the model ``train()`` re-initialises."""
    from hf_infonc.adapters import SequenceClassificationAdapter

    with caplog.at_level(logging.WARNING, logger="hf_infonc"):
        plain = Trainer(model_init=lambda: tiny_bert_classifier(seed=3), args=_args(TrainingArguments, tmp_path / "a"),
                        train_dataset=text_dataset(n=32), data_collator=default_data_collator)
        ours = InfoNCTrainer(model_init=lambda: tiny_bert_classifier(seed=3),
                             args=_args(InfoNCTrainingArguments, tmp_path / "b"), train_dataset=text_dataset(n=32),
                             data_collator=default_data_collator)
    assert isinstance(ours.adapter, SequenceClassificationAdapter)
    assert "no hf_infonc adapter" not in caplog.text
    plain.train()
    ours.train()
    _assert_same_training(plain, ours)

    set_up = []

    class Recording(SequenceClassificationAdapter):
        def setup(self, model, **kwargs):
            set_up.append(model)
            super().setup(model, **kwargs)

    trainer = InfoNCTrainer(
        model_init=lambda: tiny_bert_classifier(seed=3), args=_args(InfoNCTrainingArguments, tmp_path / "c", mi_weight=0.1),
        train_dataset=text_dataset(n=32), data_collator=default_data_collator, adapter=Recording(),
    )
    first = trainer.model
    trainer.train()
    assert set_up == [first, trainer.model] and trainer.model is not first
    assert all("loss/mi" in entry for entry in _train_logs(trainer))


def test_semi_supervised_trainer_leaves_the_arguments_alone(tmp_path):
    """The SSL trainer computes the Gram terms per micro-batch without changing the caller's arguments."""
    from hf_infonc.semi_supervised import SemiSupervisedTrainer

    args = _args(InfoNCTrainingArguments, tmp_path, gradient_accumulation_steps=2, mi_weight=0.1)
    before = args.to_dict()
    ssl = SemiSupervisedTrainer(model=tiny_bert_classifier(seed=3), args=args)
    assert args.to_dict() | {"remove_unused_columns": True} == before | {"remove_unused_columns": True}
    assert args.info_exact_accumulation is True and ssl._exact_accumulation_wanted(2) is False
    assert InfoNCTrainer(model=tiny_bert_classifier(seed=3), args=args)._exact_accumulation_wanted(2) is True


# ------------------------------------------------------------------ image–caption pairs, the loss kwargs probe


def test_clip_pairs_with_accumulation_identical(tmp_path):
    """Image–caption pairs asking for CLIP's loss (return_loss), accumulation 2, weights 0: the base loss is the
    model's own per micro-batch, as in Trainer (no two-pass step over the accumulated batch): the same logged
    losses and parameters; the logged batch MIR/HDR are those of the whole accumulated batch."""
    collate = lambda features: {**default_data_collator(features), "return_loss": True}  # noqa: E731
    data = image_dataset(n=16, captions=True)
    plain, ours = _pair(
        tmp_path, lambda: tiny_clip(seed=3), data, data_collator=collate, max_steps=2, per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
    )
    _assert_same_training(plain, ours, atol=1e-5)
    whole = InfoNCTrainer(model=tiny_clip(seed=3), args=_args(InfoNCTrainingArguments, tmp_path / "ga1", max_steps=1),
                          train_dataset=data, data_collator=collate)
    whole.train()  # one batch of 8: the same samples as the first accumulated step
    first, reference = _train_logs(ours)[0], _train_logs(whole)[0]
    assert first["mir"] == pytest.approx(reference["mir"], abs=1e-5)
    assert first["loss"] != pytest.approx(reference["loss"], abs=1e-3)  # the mean of two micro-batch losses


def test_clip_predict_without_return_loss_identical(tmp_path):
    """predict() on pairs whose batch asks for no loss: the model's outputs carry none, as in Trainer
    (predictions[0] is logits_per_image, not a per-batch loss)."""
    data = image_dataset(n=16, captions=True)
    plain, ours = _pair(tmp_path, lambda: tiny_clip(seed=3), eval_data=data, train_steps=False)
    p, q = plain.predict(data), ours.predict(data)
    _assert_same_structure(p.predictions, q.predictions, atol=1e-5)
    assert q.predictions[0].shape == (16, 8) and "test_loss" not in q.metrics


def test_loss_kwargs_probe_waits_for_a_batch_with_targets(tmp_path):
    """GPT-2 (its loss uses num_items_in_batch), batch 1 × accumulation 4, the first example without target
    tokens (labels all -100): the probe's losses are 0 and tell nothing, so model_accepts_loss_kwargs stays
    as Trainer set it until a later step decides; the same logged losses and parameters as Trainer."""
    import datasets
    from transformers import GPT2Config, GPT2LMHeadModel, set_seed

    def gpt2():
        torch.manual_seed(0)
        config = GPT2Config(vocab_size=100, n_positions=16, n_embd=32, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0)
        return GPT2LMHeadModel(config)

    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 90, (16, 10), generator=generator)
    labels = ids.clone()
    for i in range(16):
        labels[i, : 2 + (i * 3) % 8] = -100
    labels[::2] = -100  # half the examples have no target token
    data = datasets.Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist(),
                                       "labels": labels.tolist()})
    data.set_format("torch")
    plain, ours = _pair(tmp_path, gpt2, data, per_device_train_batch_size=1, gradient_accumulation_steps=4,
                        max_steps=3, train_steps=False)
    decided, probe = [], ours._probe_loss_kwargs

    def spy(model, inputs, num_items_in_batch):
        probe(model, inputs, num_items_in_batch)
        decided.append((bool((inputs["labels"] != -100).any()), ours._loss_kwargs_probed))

    ours._probe_loss_kwargs = spy
    for trainer in (plain, ours):  # the same dropout masks: both start from the seed
        set_seed(0)
        trainer.train()
    assert decided[0] == (False, False) and decided[-1] == (True, True)  # no targets: probed again at a later step
    assert plain.model_accepts_loss_kwargs and ours.model_accepts_loss_kwargs
    _assert_same_training(plain, ours, atol=1e-5)


def test_information_metrics_leave_out_ignored_labels(tmp_path):
    """Evaluation rows labelled -100 (ignored by the model's loss) are left out of eval_accuracy and of the
    measures: the same values as an evaluation of the labelled rows alone; where no measure can be
    computed, a warning says why."""
    import datasets
    from transformers.testing_utils import CaptureLogger
    from transformers.utils import logging as hf_logging

    from hf_infonc.evaluation import information_metrics

    clean = text_dataset(n=24)
    features = datasets.Features({**{k: v for k, v in clean.features.items() if k != "labels"},
                                  "labels": datasets.Value("int64")})
    ignored = clean.with_format(None).map(
        lambda ex, i: {"labels": -100 if i % 3 == 0 else ex["labels"]}, with_indices=True, features=features)
    labelled = ignored.filter(lambda ex: ex["labels"] >= 0)
    ignored.set_format("torch")
    labelled.set_format("torch")
    trainer = Trainer(model=tiny_bert_classifier(seed=13), args=_args(TrainingArguments, tmp_path),
                      data_collator=default_data_collator)
    add_information_metrics(trainer, plots=False)
    with_ignored, alone = trainer.evaluate(ignored), trainer.evaluate(labelled)
    prediction = trainer.predict(ignored)
    keep = prediction.label_ids != -100
    expected = float((prediction.predictions.argmax(-1)[keep] == prediction.label_ids[keep]).mean())
    assert with_ignored["eval_accuracy"] == pytest.approx(expected, abs=1e-12) == alone["eval_accuracy"]
    for key in ("mir", "hdr", "class_mir", "feature_entropy", "nc1", "nc2", "nc3", "nc4"):
        assert with_ignored[f"eval_{key}"] == pytest.approx(alone[f"eval_{key}"], abs=1e-9), key
    logger = hf_logging.get_logger("hf_infonc.evaluation")
    with CaptureLogger(logger) as captured:
        only_one = information_metrics(np.eye(3)[[0, 0, 0]], np.ones((3, 4)), np.array([-100, 0, 0]), torch.ones(3, 4))
    assert only_one == {"accuracy": 1.0}
    assert "not computed for this evaluation: fewer than two classes" in captured.out
