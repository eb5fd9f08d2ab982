"""InfoNCTrainer: equivalence with transformers.Trainer, gradient accumulation, processes, errors."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from transformers import Trainer, TrainingArguments, default_data_collator

from hf_infonc import InfoNCTrainer, InfoNCTrainingArguments, add_information_metrics
from hf_infonc.testing import minilm_tokenizer, tiny_bert_classifier, tiny_clip, tiny_vit_classifier

from trainer_fixtures import image_dataset

REPO = Path(__file__).resolve().parents[1]
CLASS_NAMES = ["cat", "dog", "car"]


def _common(tmp_path: Path, **overrides) -> dict:
    values = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=8,
        max_steps=5,
        learning_rate=1e-3,
        logging_steps=1,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        seed=0,
        disable_tqdm=True,
        dataloader_drop_last=True,
    )
    values.update(overrides)
    return values


def _text_dataset(n: int = 40, num_labels: int = 3, seed: int = 0) -> datasets.Dataset:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 3000, (n, 12), generator=g)
    ds = datasets.Dataset.from_dict(
        {
            "input_ids": ids.tolist(),
            "attention_mask": torch.ones_like(ids).tolist(),
            "labels": torch.randint(0, num_labels, (n,), generator=g).tolist(),
        }
    )
    ds.set_format("torch")
    return ds


def _losses(trainer) -> list[float]:
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


def _param_gap(a: torch.nn.Module, b: torch.nn.Module) -> float:
    return max(float((p - q).detach().abs().max()) for p, q in zip(a.parameters(), b.parameters()))


def _tensor_leaves(value) -> list[torch.Tensor]:
    """The tensors inside nested model outputs, tuples and dicts."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    return [leaf for item in value for leaf in _tensor_leaves(item)] if isinstance(value, (list, tuple)) else []


def _with_clip_loss(features: list[dict]) -> dict:
    """Plain Trainer + CLIPModel needs return_loss=True to get CLIP's contrastive loss."""
    return {**default_data_collator(features), "return_loss": True}


@pytest.mark.parametrize(
    "make_model, make_data",
    [
        (lambda: tiny_bert_classifier(seed=3), lambda: _text_dataset()),
        (lambda: tiny_vit_classifier(seed=3), lambda: image_dataset()),
        (lambda: tiny_clip(seed=3), lambda: image_dataset(captions=True)),
    ],
    ids=["bert", "vit", "clip-pairs"],
)
def test_zero_weights_match_plain_trainer(tmp_path, make_model, make_data):
    """All information weights 0: same losses and parameters after 5 steps as transformers.Trainer."""
    data = make_data()
    plain = Trainer(
        model=make_model(),
        args=TrainingArguments(**_common(tmp_path / "plain"), remove_unused_columns=False),
        train_dataset=data,
        data_collator=_with_clip_loss if "input_ids" in data.column_names and "labels" not in data.column_names else default_data_collator,
    )
    plain.train()
    ours = InfoNCTrainer(
        model=make_model(),
        args=InfoNCTrainingArguments(**_common(tmp_path / "ours")),
        train_dataset=data,
        data_collator=default_data_collator,
    )
    ours.train()
    assert len(_losses(ours)) == 5
    assert _losses(ours) == pytest.approx(_losses(plain), abs=1e-6)
    assert _param_gap(ours.model, plain.model) < 1e-6
    # the base component equals the total loss when every weight is 0
    logged = [h for h in ours.state.log_history if "loss" in h]
    assert [h["loss/base"] for h in logged] == pytest.approx([h["loss"] for h in logged], abs=1e-5)


def test_information_losses_change_the_training(tmp_path):
    """Non-zero weights do change the result (guards against weights being ignored)."""
    data = _text_dataset()
    runs = {}
    for name, weights in {"off": {}, "on": dict(mi_weight=0.5, entropy_gap_weight=0.5, cma_weight=0.3)}.items():
        trainer = InfoNCTrainer(
            model=tiny_bert_classifier(seed=3),
            args=InfoNCTrainingArguments(**_common(tmp_path / name), **weights),
            train_dataset=data,
            data_collator=default_data_collator,
        )
        trainer.train()
        runs[name] = trainer
    on = [h for h in runs["on"].state.log_history if "loss" in h]
    for h in on:
        assert {"loss/base", "loss/cma", "loss/mi", "loss/entropy_gap", "mir", "hdr"} <= set(h)
        # loss/mi is the logged loss term, i.e. -MI
        expected = 0.7 * h["loss/base"] + 0.3 * h["loss/cma"] + 0.5 * h["loss/mi"] + 0.5 * h["loss/entropy_gap"]
        assert h["loss"] == pytest.approx(expected, abs=1e-4)
        assert 0.0 <= h["mir"] <= 1.0 and 0.0 <= h["hdr"] <= 1.0
    assert _param_gap(runs["on"].model, runs["off"].model) > 1e-5


INFO_WEIGHTS = dict(mi_weight=0.3, entropy_gap_weight=0.3, cma_weight=0.3)
LOGGED_KEYS = ("loss", "loss/base", "loss/cma", "loss/mi", "loss/entropy_gap", "mir", "hdr")
# model, data and extra trainer arguments of the accumulation tests (dropout 0: comparable shapes)
ACCUMULATION_CASES = {
    "bert": (lambda: tiny_bert_classifier(seed=5), lambda n: _text_dataset(n=n), lambda: {}),
    "clip": (
        lambda: tiny_clip(seed=5),
        lambda n: image_dataset(n=n),
        lambda: dict(class_names=CLASS_NAMES, processing_class=minilm_tokenizer()),
    ),
    "pairs": (lambda: tiny_clip(seed=5), lambda n: image_dataset(n=n, captions=True), lambda: {}),
}


@pytest.mark.parametrize("case", ["bert", "clip", "pairs"])
@pytest.mark.parametrize("bf16", [False, True])
def test_adapter_runs_under_the_mixed_precision_autocast(tmp_path, case, bf16):
    """bf16=True must train the model in bf16: the adapters bypass accelerate's patched forward."""
    make_model, make_data, extra = ACCUMULATION_CASES[case]
    trainer = InfoNCTrainer(
        model=make_model(),
        args=InfoNCTrainingArguments(**_common(tmp_path, max_steps=2, bf16=bf16), **INFO_WEIGHTS),
        train_dataset=make_data(16),
        data_collator=default_data_collator,
        **extra(),
    )
    seen = []
    forward = trainer.adapter.forward

    def spy(core, batch):
        out = forward(core, batch)
        seen.append((torch.is_autocast_enabled("cpu"), out.features.dtype))
        return out

    trainer.adapter.forward = spy
    trainer.train()
    # pairs run CLIPModel's own forward, accelerate's patched one: computed in bf16, returned in float32
    half = torch.float32 if case == "pairs" else torch.bfloat16
    assert seen == [(True, half) if bf16 else (False, torch.float32)] * 2
    losses = [h for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 2 and all(math.isfinite(h[key]) for h in losses for key in LOGGED_KEYS)
    # evaluation outputs come back in float32, as from accelerate's patched forward
    batch = default_data_collator([make_data(4)[i] for i in range(4)])
    trainer.model.eval()
    with torch.no_grad(), trainer.compute_loss_context_manager():
        _, outputs = trainer.compute_loss(trainer.model, batch, return_outputs=True)
    assert seen[-1] == ((True, half) if bf16 else (False, torch.float32))
    leaves = _tensor_leaves(outputs)
    assert leaves and all(value.dtype == torch.float32 for value in leaves)


def _accumulation_run(tmp_path, case: str, accumulation: int, batch: int, *, n: int = 32, **overrides) -> InfoNCTrainer:
    """Train ``case`` with per-device batch ``batch`` and ``accumulation`` micro-batches per step."""
    make_model, make_data, extra = ACCUMULATION_CASES[case]
    settings = dict(per_device_train_batch_size=batch, max_steps=2, learning_rate=0.0)
    settings.update(overrides)  # information weights and options included: _common returns plain keywords
    trainer = InfoNCTrainer(
        model=make_model(),
        args=InfoNCTrainingArguments(
            **_common(tmp_path / f"{case}_{accumulation}_{batch}", **settings), gradient_accumulation_steps=accumulation
        ),
        train_dataset=make_data(n),
        data_collator=default_data_collator,
        **extra(),
    )
    trainer.train()
    return trainer


def _logged(trainer) -> list[dict]:
    return [h for h in trainer.state.log_history if "loss" in h]


@pytest.mark.parametrize(
    "case, weights",
    [("bert", {}), ("bert", INFO_WEIGHTS), ("clip", INFO_WEIGHTS), ("pairs", {}), ("pairs", INFO_WEIGHTS)],
    ids=["bert-base", "bert-info", "clip-info", "pairs-base", "pairs-info"],
)
def test_gradient_accumulation_logs_same_loss(tmp_path, case, weights):
    """Accumulation 1 vs 4 on the same global batch of 16, learning rate 0: the same logged loss and
    components (CMA, MI, entropy gap, MIR, HDR), as the whole accumulated batch is one Gram batch."""
    one = _logged(_accumulation_run(tmp_path, case, 1, 16, **weights))
    four = _logged(_accumulation_run(tmp_path, case, 4, 4, **weights))
    assert len(one) == len(four) == 2
    # without weights, MIR/HDR are still logged (before each log), the loss terms are not
    keys = LOGGED_KEYS if weights else ("loss", "loss/base", "mir", "hdr")
    for a, b in zip(one, four):
        assert set(keys) <= set(a) and set(keys) <= set(b)
        for key in keys:
            assert b[key] == pytest.approx(a[key], abs=1e-5), key
    # the two steps see different batches: the comparison is not between constants
    assert abs(one[0]["loss"] - one[1]["loss"]) > 1e-3


@pytest.mark.parametrize("case", ["bert", "clip", "pairs"])
def test_gradient_accumulation_same_parameters(tmp_path, case):
    """SGD, learning rate 0.1, 2 steps: accumulation 4 (exact) leaves the same parameters as accumulation 1,
    to float32 round-off (the features of 4 micro-batches vs 1 batch differ in the last bit)."""
    sgd = dict(learning_rate=0.1, optim="sgd", lr_scheduler_type="constant", **INFO_WEIGHTS)
    one = _accumulation_run(tmp_path, case, 1, 16, **sgd)
    four = _accumulation_run(tmp_path, case, 4, 4, **sgd)
    assert _param_gap(one.model, four.model) < 1e-6
    for a, b in zip(_logged(one), _logged(four)):
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-5)
    # the parameters did move, far more than the tolerance
    assert _param_gap(one.model, ACCUMULATION_CASES[case][0]()) > 1e-3


def test_gradient_accumulation_last_partial_cycle(tmp_path):
    """40 rows, batch 6, accumulation 4: micro-batches of 6,6,6,6 then a last cycle of 6,6,4 (3 micro-batches
    of unequal size). Same losses and parameters as one batch of 24 then one of 16."""
    settings = dict(max_steps=-1, num_train_epochs=1, dataloader_drop_last=False, learning_rate=0.1, optim="sgd",
                    lr_scheduler_type="constant", **INFO_WEIGHTS)
    one = _accumulation_run(tmp_path, "bert", 1, 24, n=40, **settings)
    four = _accumulation_run(tmp_path, "bert", 4, 6, n=40, **settings)
    assert len(_logged(one)) == len(_logged(four)) == 2
    for a, b in zip(_logged(one), _logged(four)):
        for key in LOGGED_KEYS:
            assert b[key] == pytest.approx(a[key], abs=1e-5), key
    assert _param_gap(one.model, four.model) < 1e-6


def test_per_micro_batch_accumulation_differs(tmp_path):
    """info_exact_accumulation=False computes the Gram terms per micro-batch: the logged loss and the
    parameters then differ from accumulation 1 (the base loss alone still matches)."""
    sgd = dict(learning_rate=0.1, optim="sgd", lr_scheduler_type="constant", **INFO_WEIGHTS)
    one = _accumulation_run(tmp_path, "bert", 1, 16, **sgd)
    four = _accumulation_run(tmp_path, "bert", 4, 4, info_exact_accumulation=False, **sgd)
    first_one, first_four = _logged(one)[0], _logged(four)[0]
    assert first_four["loss/base"] == pytest.approx(first_one["loss/base"], abs=1e-5)
    assert abs(first_four["loss"] - first_one["loss"]) > 1e-2
    assert abs(first_four["loss/cma"] - first_one["loss/cma"]) > 1e-2
    assert _param_gap(one.model, four.model) > 1e-4


def _micro_batches(data, size: int, count: int) -> list[dict]:
    return [default_data_collator([data[j] for j in range(i * size, (i + 1) * size)]) for i in range(count)]


def test_exact_accumulation_replays_dropout(tmp_path, monkeypatch):
    """Dropout 0.3: the two-pass step gives the gradient of the loss on the concatenated micro-batches as
    autograd computes it directly (forwards with gradients in the same RNG order). Accumulation 1 cannot
    be the reference here (a batch of 16 draws other dropout masks than 4 batches of 4); without
    replaying the RNG state, pass 2 would draw new masks and the gradient would differ."""
    import copy

    from hf_infonc import grad_cache
    from hf_infonc.adapters.base import AdapterOutput

    data = _text_dataset(n=16)
    batches = _micro_batches(data, 4, 4)
    model = tiny_bert_classifier(seed=5, dropout=0.3)
    reference_model = copy.deepcopy(model)
    trainer = InfoNCTrainer(
        model=model,
        args=InfoNCTrainingArguments(**_common(tmp_path, per_device_train_batch_size=4), gradient_accumulation_steps=4,
                                     **INFO_WEIGHTS),
        train_dataset=data,
        data_collator=default_data_collator,
    )

    def two_pass_gradients(seed: int) -> tuple[dict, float]:
        model.zero_grad(set_to_none=True)
        model.train()
        trainer.get_batch_samples(iter(batches), 4, trainer.args.device)
        trainer.current_gradient_accumulation_steps = 4
        torch.manual_seed(seed)
        logged = sum(float(trainer.training_step(model, batch)) for batch in batches)
        return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}, logged

    def direct_gradients(seed: int) -> tuple[dict, float]:
        reference_model.zero_grad(set_to_none=True)
        reference_model.train()
        torch.manual_seed(seed)
        outs = [trainer.adapter.forward(reference_model, batch) for batch in batches]
        merged = AdapterOutput(
            loss=torch.stack([o.loss for o in outs]).mean(),
            features=torch.cat([o.features for o in outs]),
            head_rows=outs[0].head_rows,
            labels=torch.cat([o.labels for o in outs]),
        )
        total, _ = trainer.information_loss(merged)
        total.backward()
        grads = {k: p.grad.clone() for k, p in reference_model.named_parameters() if p.grad is not None}
        return grads, float(total.detach())

    def gap(a: dict, b: dict) -> float:
        assert a.keys() == b.keys()
        return max(float((a[k] - b[k]).abs().max()) for k in a)

    exact, logged = two_pass_gradients(11)
    direct, total = direct_gradients(11)
    assert logged == pytest.approx(total, abs=1e-5)
    assert gap(exact, direct) < 1e-5
    assert gap(exact, direct_gradients(12)[0]) > 1e-3  # dropout does change the gradient
    monkeypatch.setattr(grad_cache.RngState, "restore", lambda self: None)
    assert gap(two_pass_gradients(11)[0], direct) > 1e-3  # the replay is what makes it exact


def test_exact_accumulation_buffers_updated_once(tmp_path):
    """Pass 1 restores module buffers (BatchNorm running statistics): a buffer counting the encoder's
    forwards reads 4 after one step of 4 micro-batches, not 8 (pass 1 + pass 2)."""
    model = tiny_bert_classifier(seed=5)
    model.bert.register_buffer("forwards", torch.zeros((), dtype=torch.long))

    def count(module, args) -> None:
        module.forwards.add_(1)

    model.bert.register_forward_pre_hook(count)
    trainer = InfoNCTrainer(
        model=model,
        args=InfoNCTrainingArguments(**_common(tmp_path, per_device_train_batch_size=4, max_steps=1),
                                     gradient_accumulation_steps=4, **INFO_WEIGHTS),
        train_dataset=_text_dataset(n=16),
        data_collator=default_data_collator,
    )
    trainer.train()
    assert int(model.bert.forwards) == 4


def test_accumulation_probe_leaves_no_trace(tmp_path):
    """No information loss and labelled batches: the first micro-batch is probed once (no-grad), then the
    RNG and buffers are restored. With dropout, the run equals transformers.Trainer with accumulation 4."""
    data = _text_dataset(n=32)
    common = _common(tmp_path, per_device_train_batch_size=4, max_steps=2, learning_rate=0.1, optim="sgd",
                     lr_scheduler_type="constant", gradient_accumulation_steps=4)
    plain = Trainer(model=tiny_bert_classifier(seed=5, dropout=0.2),
                    args=TrainingArguments(**common, remove_unused_columns=False),
                    train_dataset=data, data_collator=default_data_collator)
    plain.model_accepts_loss_kwargs = False  # else Trainer skips the division by the accumulation steps (ENV.md)
    plain.train()
    ours = InfoNCTrainer(model=tiny_bert_classifier(seed=5, dropout=0.2), args=InfoNCTrainingArguments(**common),
                         train_dataset=data, data_collator=default_data_collator)
    ours.train()
    assert ours._pairwise_batches is False
    assert _losses(ours) == pytest.approx(_losses(plain), abs=1e-6)
    assert _param_gap(ours.model, plain.model) < 1e-6


def test_exact_accumulation_off_with_deepspeed(tmp_path):
    """DeepSpeed accumulates inside its engine: fall back to per-micro-batch terms, warning once."""
    trainer = InfoNCTrainer(
        model=tiny_bert_classifier(),
        args=InfoNCTrainingArguments(**_common(tmp_path), gradient_accumulation_steps=4, **INFO_WEIGHTS),
        train_dataset=_text_dataset(),
        data_collator=default_data_collator,
    )
    assert trainer._exact_accumulation_wanted(4)
    assert not trainer._exact_accumulation_wanted(1)  # a last cycle of one micro-batch is exact anyway
    trainer.is_deepspeed_enabled = True
    assert not trainer._exact_accumulation_wanted(4)
    assert trainer._warned_deepspeed_accumulation


@pytest.mark.distributed
def test_one_process_equals_two_processes(tmp_path):
    """Same global batch on 1 and on 2 CPU processes (torchrun, gloo): same losses incl. CMA/MI, same parameters."""
    modes = "clip,pairs,bert"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    script = str(REPO / "tests" / "dist_scripts" / "trainer_worker.py")
    single, double = tmp_path / "one", tmp_path / "two"
    single.mkdir()
    double.mkdir()
    subprocess.run([sys.executable, script, str(single), modes], check=True, env=env, cwd=tmp_path, timeout=600)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517"]
    subprocess.run([*torchrun, script, str(double), modes], check=True, env=env, cwd=tmp_path, timeout=600)
    for mode in modes.split(","):
        one = json.loads((single / f"{mode}.json").read_text())
        two = json.loads((double / f"{mode}.json").read_text())
        assert (one["world"], two["world"]) == (1, 2)
        logs_one = [h for h in one["log_history"] if "loss" in h]
        logs_two = [h for h in two["log_history"] if "loss" in h]
        assert len(logs_one) == len(logs_two) == 3
        for a, b in zip(logs_one, logs_two):
            for key in ("loss", "loss/base", "loss/cma", "loss/mi", "loss/entropy_gap", "mir", "hdr"):
                assert b[key] == pytest.approx(a[key], abs=1e-5), (mode, key)
        for name, values in one["params"].items():
            assert torch.tensor(two["params"][name]) == pytest.approx(torch.tensor(values), abs=1e-5), (mode, name)


@pytest.mark.distributed
def test_two_processes_with_accumulation_equal_one_process(tmp_path):
    """2 processes x accumulation 2 x batch 4 = 1 process x batch 16: same losses (CMA, MI, contrastive)
    and parameters after three SGD steps — the exact accumulation composes with the gathering."""
    modes = "clip,pairs,bert"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    script = str(REPO / "tests" / "dist_scripts" / "trainer_worker.py")
    single, double = tmp_path / "one", tmp_path / "two"
    single.mkdir()
    double.mkdir()
    subprocess.run([sys.executable, script, str(single), modes, "1"], check=True, env=env, cwd=tmp_path, timeout=600)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29518"]
    subprocess.run([*torchrun, script, str(double), modes, "2"], check=True, env=env, cwd=tmp_path, timeout=600)
    for mode in modes.split(","):
        one = json.loads((single / f"{mode}.json").read_text())
        two = json.loads((double / f"{mode}.json").read_text())
        assert (one["world"], one["accumulation"], two["world"], two["accumulation"]) == (1, 1, 2, 2)
        logs_one = [h for h in one["log_history"] if "loss" in h]
        logs_two = [h for h in two["log_history"] if "loss" in h]
        assert len(logs_one) == len(logs_two) == 3
        for a, b in zip(logs_one, logs_two):
            for key in LOGGED_KEYS:
                assert b[key] == pytest.approx(a[key], abs=1e-5), (mode, key)
        for name, values in one["params"].items():
            assert torch.tensor(two["params"][name]) == pytest.approx(torch.tensor(values), abs=1e-5), (mode, name)


# --------------------------------------------------------------------------- errors


def test_labels_out_of_range_error(tmp_path):
    data = _text_dataset(num_labels=5)  # labels up to 4, model has 3 classes
    trainer = InfoNCTrainer(
        model=tiny_bert_classifier(num_labels=3),
        args=InfoNCTrainingArguments(**_common(tmp_path), mi_weight=0.1),
        train_dataset=data,
        data_collator=default_data_collator,
    )
    with pytest.raises((ValueError, IndexError), match=r"3 head rows|out of bounds|Target"):
        trainer.train()


def test_regulariser_without_labels_error(tmp_path):
    data = image_dataset()
    data = data.remove_columns("labels")
    trainer = InfoNCTrainer(
        model=tiny_vit_classifier(),
        args=InfoNCTrainingArguments(**_common(tmp_path), mi_weight=0.1),
        train_dataset=data,
        data_collator=default_data_collator,
    )
    with pytest.raises(ValueError, match="no 'labels'"):
        trainer.train()


def test_clip_classification_without_class_names_error(tmp_path):
    trainer = InfoNCTrainer(
        model=tiny_clip(),
        args=InfoNCTrainingArguments(**_common(tmp_path), cma_weight=0.5),
        train_dataset=image_dataset(),
        data_collator=default_data_collator,
        processing_class=minilm_tokenizer(),
    )
    with pytest.raises(ValueError, match="Class names are missing"):
        trainer.train()


def test_unsupported_model_error(tmp_path):
    class Plain(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(4, 2)

        def forward(self, x, labels=None):
            return self.linear(x)

    # with an information weight > 0: an error at construction that names the class, the families, the fix
    message = r"weight.*> 0 need features and head rows(.|\n)*No hf_infonc adapter supports Plain(.|\n)*"
    message += r"sequence-classification(.|\n)*register_adapter(.|\n)*docs/adapters.md"
    with pytest.raises(TypeError, match=message):
        InfoNCTrainer(model=Plain(), args=InfoNCTrainingArguments(**_common(tmp_path), mi_weight=0.1))
    # weights 0: it trains as transformers.Trainer does (tests/test_trainer_dropin.py), without an adapter
    assert InfoNCTrainer(model=Plain(), args=InfoNCTrainingArguments(**_common(tmp_path))).adapter is None


@pytest.mark.parametrize("bad", [dict(cma_weight=1.5), dict(mi_weight=-1.0), dict(entropy_gap_weight=float("nan"))])
def test_bad_weights_error(tmp_path, bad):
    with pytest.raises(ValueError, match="weight"):
        InfoNCTrainingArguments(**_common(tmp_path), **bad)


def test_class_names_from_classlabel(tmp_path):
    data = image_dataset()
    data = data.cast_column("labels", datasets.ClassLabel(names=CLASS_NAMES))
    data.set_format("torch")
    trainer = InfoNCTrainer(
        model=tiny_clip(),
        args=InfoNCTrainingArguments(**_common(tmp_path, max_steps=2), cma_weight=0.5, mi_weight=0.1),
        train_dataset=data,
        data_collator=default_data_collator,
        processing_class=minilm_tokenizer(),
    )
    assert trainer.class_names == CLASS_NAMES
    trainer.train()
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert all(torch.isfinite(torch.tensor([h["loss/cma"], h["loss/mi"]])).all() for h in logged)


def test_clip_classification_logits_and_eval(tmp_path):
    """predict() returns the logits scale·img·headᵀ alone (no features); the metrics helper gets the
    features another way; evaluation logs the components."""
    model = tiny_clip()
    data = image_dataset(n=16)
    trainer = InfoNCTrainer(
        model=model,
        args=InfoNCTrainingArguments(**_common(tmp_path, max_steps=1), cma_weight=0.5, per_device_eval_batch_size=8),
        train_dataset=data,
        eval_dataset=data,
        data_collator=default_data_collator,
        processing_class=minilm_tokenizer(),
        class_names=CLASS_NAMES,
    )
    information = add_information_metrics(trainer, plots=False)
    output = trainer.predict(data)
    logits, features = output.predictions, information.features
    assert isinstance(logits, np.ndarray) and logits.shape == (16, len(CLASS_NAMES))
    tok = minilm_tokenizer()
    with torch.no_grad():
        text = model.get_text_features(**tok([f"a photo of a {c}." for c in CLASS_NAMES], padding=True, return_tensors="pt")).pooler_output
        image = model.get_image_features(pixel_values=data[:]["pixel_values"]).pooler_output
        expected = model.logit_scale.exp() * torch.nn.functional.normalize(image, dim=-1) @ torch.nn.functional.normalize(text, dim=-1).T
    assert torch.tensor(logits) == pytest.approx(expected, abs=1e-4)
    assert features == pytest.approx(image, abs=1e-4)
    metrics = trainer.evaluate()
    assert "eval_loss/cma" in metrics and 0.0 <= metrics["eval_loss/cma"] <= 1.0
    assert metrics["eval_mir"] == metrics["eval_mir"]  # logged and not NaN


def test_resume_restores_renamed_vit_weights(tmp_path):
    """transformers 5 saves ViT under legacy weight names; resuming must still load every layer."""
    data = image_dataset(n=32)

    def run(folder: str, resume: str | None = None) -> InfoNCTrainer:
        args = _common(tmp_path, output_dir=str(tmp_path / folder), max_steps=3, save_strategy="steps", save_steps=2)
        trainer = InfoNCTrainer(
            model=tiny_vit_classifier(seed=1), args=InfoNCTrainingArguments(**args, mi_weight=0.1),
            train_dataset=data, data_collator=default_data_collator,
        )
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    straight = run("straight")
    checkpoint = tmp_path / "straight" / "checkpoint-2"
    from safetensors import safe_open

    with safe_open(str(checkpoint / "model.safetensors"), framework="pt") as handle:
        saved = set(handle.keys())
    assert not saved <= set(straight.model.state_dict())  # the renaming this guards against still happens
    resumed = run("resumed", resume=str(checkpoint))
    assert resumed.state.global_step == 3
    assert _param_gap(resumed.model, straight.model) < 1e-6


def test_load_best_model_restores_renamed_vit_weights(tmp_path):
    data = image_dataset(n=32)
    args = _common(
        tmp_path, max_steps=3, save_strategy="steps", save_steps=2, eval_strategy="steps", eval_steps=2,
        load_best_model_at_end=True, metric_for_best_model="loss",
    )
    trainer = InfoNCTrainer(
        model=tiny_vit_classifier(seed=1), args=InfoNCTrainingArguments(**args, mi_weight=0.1),
        train_dataset=data, eval_dataset=data, data_collator=default_data_collator,
    )
    trainer.train()
    best = trainer.state.best_model_checkpoint
    assert best is not None and best.endswith("checkpoint-2")
    expected = type(trainer.model).from_pretrained(best)
    assert _param_gap(trainer.model, expected) == 0.0


def test_save_load_same_outputs_bert(tmp_path):
    trainer = InfoNCTrainer(
        model=tiny_bert_classifier(seed=2),
        args=InfoNCTrainingArguments(**_common(tmp_path, max_steps=2), mi_weight=0.2),
        train_dataset=_text_dataset(),
        data_collator=default_data_collator,
    )
    trainer.train()
    trainer.save_model(str(tmp_path / "saved"))
    assert (tmp_path / "saved" / "model.safetensors").exists()
    from transformers import AutoModelForSequenceClassification

    loaded = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "saved")).eval()
    batch = default_data_collator([_text_dataset()[i] for i in range(4)])
    trainer.model.eval()
    with torch.no_grad():
        a = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        b = loaded(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert torch.allclose(a, b, atol=1e-6)
    shutil.rmtree(tmp_path / "saved")
