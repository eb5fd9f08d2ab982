"""Semi-supervised training: FixMatch / FreeMatch thresholds, the losses, the data stream, processes."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from hf_infonc.semi_supervised import (
    FixedThreshold,
    ModelEMA,
    SelfAdaptiveThreshold,
    SemiSupervisedCollator,
    SemiSupervisedConfig,
    SemiSupervisedDataset,
    SemiSupervisedTrainer,
    fairness_loss,
)
from hf_infonc.testing import tiny_vit_classifier
from hf_infonc.training_args import InfoNCTrainingArguments

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- thresholds


def test_fixed_threshold_mask():
    probs = torch.tensor([[0.96, 0.04], [0.95, 0.05], [0.5, 0.5], [0.02, 0.98], [0.3, 0.7]])
    assert FixedThreshold(0.95).mask(probs).tolist() == [1.0, 1.0, 0.0, 1.0, 0.0]
    assert FixedThreshold(0.6).mask(probs).tolist() == [1.0, 1.0, 0.0, 1.0, 1.0]


def test_freematch_thresholds_update_as_specified():
    """One and two EMA steps of FreeMatch (Eq. 4-6), computed by hand with momentum 0.5."""
    threshold = SelfAdaptiveThreshold(num_classes=2, momentum=0.5)
    assert float(threshold.global_threshold) == 0.5  # τ_0 = 1/C
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4]])
    threshold.update(probs)
    # τ_1 = 0.5·0.5 + 0.5·mean(0.9, 0.6) = 0.625; p̃_1 = 0.5·[.5,.5] + 0.5·[.75,.25] = [.625, .375]
    assert float(threshold.global_threshold) == pytest.approx(0.625)
    assert threshold.class_probabilities.tolist() == pytest.approx([0.625, 0.375])
    # τ_1(c) = τ_1 · p̃_1(c) / max p̃_1 = [0.625, 0.375]
    assert threshold.class_thresholds().tolist() == pytest.approx([0.625, 0.375])
    # both rows are pseudo-labelled 0: histogram [1, 0] → h̃_1 = [0.75, 0.25]
    assert threshold.label_histogram.tolist() == pytest.approx([0.75, 0.25])
    assert threshold.mask(probs).tolist() == [1.0, 0.0]
    # class 1 has the lower threshold: 0.4 passes for class 1 but 0.6 does not for class 0
    assert threshold.mask(torch.tensor([[0.38, 0.62], [0.61, 0.39]])).tolist() == [1.0, 0.0]
    threshold.update(torch.tensor([[0.2, 0.8], [0.1, 0.9]]))
    # τ_2 = 0.5·0.625 + 0.5·0.85 = 0.7375; p̃_2 = 0.5·[.625,.375] + 0.5·[.15,.85] = [.3875, .6125]
    assert float(threshold.global_threshold) == pytest.approx(0.7375)
    assert threshold.class_probabilities.tolist() == pytest.approx([0.3875, 0.6125])
    assert threshold.class_thresholds().tolist() == pytest.approx([0.7375 * 0.3875 / 0.6125, 0.7375])
    assert threshold.label_histogram.tolist() == pytest.approx([0.375, 0.625])
    state = threshold.state_dict()
    restored = SelfAdaptiveThreshold(num_classes=2, momentum=0.5)
    restored.load_state_dict(state)
    assert restored.class_thresholds().tolist() == pytest.approx(threshold.class_thresholds().tolist())


def test_freematch_threshold_rejects_wrong_class_count():
    with pytest.raises(ValueError, match="3 classes"):
        SelfAdaptiveThreshold(num_classes=2).update(torch.full((4, 3), 1 / 3))


def test_fairness_loss_by_hand():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [3.0, 0.0, 1.0], [0.0, 0.0, 0.0]], requires_grad=True)
    mask = torch.tensor([1.0, 1.0, 1.0, 0.0])
    class_probabilities = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    label_histogram = torch.tensor([0.4, 0.4, 0.2], dtype=torch.float64)
    loss = fairness_loss(logits, mask, class_probabilities, label_histogram)
    probs = logits[:3].detach().softmax(-1)
    # strong argmax 0, 1, 0: histogram [2/3, 1/3, 0], inverse [1.5, 3, 0] (an absent class gets weight 0)
    current = probs.mean(0) * torch.tensor([1.5, 3.0, 0.0])
    current = current / current.sum()
    target = torch.tensor([0.5 / 0.4, 0.3 / 0.4, 0.2 / 0.2])
    target = target / target.sum()
    expected = (target * torch.log(current + 1e-12)).sum()
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-5)
    loss.backward()
    assert torch.isfinite(logits.grad).all() and float(logits.grad[3].abs().sum()) == 0.0


def test_fairness_loss_is_zero_without_masked_rows():
    logits = torch.randn(4, 3, requires_grad=True)
    loss = fairness_loss(logits, torch.zeros(4), torch.full((3,), 1 / 3), torch.full((3,), 1 / 3))
    loss.backward()
    assert float(loss.detach()) == 0.0 and float(logits.grad.abs().sum()) == 0.0


# --------------------------------------------------------------------------- data


def _rows(n: int, num_labels: int = 3, size: int = 16, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, size, size, generator=g)
    labels = torch.randint(0, num_labels, (n,), generator=g)
    return [{"image": images[i], "label": int(labels[i])} for i in range(n)]


def test_dataset_units_cover_the_unlabelled_pool_once():
    labeled, unlabeled = _rows(6), _rows(40, seed=1)
    dataset = SemiSupervisedDataset(labeled, unlabeled, unlabeled_ratio=4, seed=3)
    assert len(dataset) == 10  # 40 unlabelled / μ = 4
    seen = [id(row) for i in range(len(dataset)) for row in dataset[i]["unlabeled"]]
    assert sorted(seen) == sorted(id(row) for row in unlabeled)
    labeled_ids = [id(dataset[i]["labeled"]) for i in range(len(dataset))]
    counts = {i: labeled_ids.count(id(row)) for i, row in enumerate(labeled)}
    assert sorted(counts.values()) == [1, 1, 2, 2, 2, 2]  # 10 units cycle through 6 labelled rows
    assert len(SemiSupervisedDataset(labeled, None, unlabeled_ratio=0)) == 6


def test_dataset_errors():
    with pytest.raises(ValueError, match="labelled dataset is empty"):
        SemiSupervisedDataset([], _rows(4), unlabeled_ratio=2)
    with pytest.raises(ValueError, match="unlabelled dataset is empty"):
        SemiSupervisedDataset(_rows(4), [], unlabeled_ratio=2)


def _collator() -> SemiSupervisedCollator:
    return SemiSupervisedCollator(
        labeled_transform=lambda x: x, weak_transform=lambda x: x, strong_transform=lambda x: x.flip(-1) * 0.8
    )


def test_collator_layout():
    dataset = SemiSupervisedDataset(_rows(5), _rows(20, seed=1), unlabeled_ratio=3)
    units = [dataset[i] for i in range(4)]
    batch = _collator()(units)
    assert batch["pixel_values"].shape == (4 + 2 * 12, 3, 16, 16)
    assert batch["labels"].tolist() == [u["labeled"]["label"] for u in units]
    assert int(batch["ssl_num_labeled"]) == 4
    unl = [row for u in units for row in u["unlabeled"]]
    assert batch["ssl_unlabeled_labels"].tolist() == [row["label"] for row in unl]
    # rows 4..15 are the weak views, 16..27 the strong views of the same examples
    assert torch.equal(batch["pixel_values"][4], unl[0]["image"])
    assert torch.allclose(batch["pixel_values"][16], unl[0]["image"].flip(-1) * 0.8)


def test_text_collator_pads_all_views_together():
    from hf_infonc.testing import minilm_tokenizer

    class Views:
        def weak(self, text, rng):
            return text

        def strong(self, text, rng):
            return " ".join(reversed(text.split()))

    labeled = [{"text": "a good film", "label": 1}, {"text": "bad", "label": 0}]
    unlabeled = [{"text": "really not very good at all", "label": -1}, {"text": "fine", "label": 1}]
    collate = SemiSupervisedCollator(tokenizer=minilm_tokenizer(), text_views=Views(), max_length=32)
    batch = collate([{"labeled": labeled[0], "unlabeled": [unlabeled[0]]}, {"labeled": labeled[1], "unlabeled": [unlabeled[1]]}])
    assert batch["input_ids"].shape[0] == 6 and batch["attention_mask"].shape == batch["input_ids"].shape
    assert batch["labels"].tolist() == [1, 0] and batch["ssl_unlabeled_labels"].tolist() == [-1, 1]


# --------------------------------------------------------------------------- trainer


def _trainer(tmp_path: Path, config: SemiSupervisedConfig, *, labeled_n: int = 12, mu: int = 2, model=None, **weights):
    rows = _rows(48)
    dataset = SemiSupervisedDataset(rows[:labeled_n], rows if mu else None, unlabeled_ratio=mu, seed=0)
    args = InfoNCTrainingArguments(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, max_steps=2, learning_rate=0.05,
        optim="sgd", logging_steps=1, use_cpu=True, report_to=[], save_strategy="no", seed=0, disable_tqdm=True,
        dataloader_drop_last=True, **weights,
    )
    return SemiSupervisedTrainer(
        model=model if model is not None else tiny_vit_classifier(num_labels=3, image_size=16, seed=1), args=args,
        train_dataset=dataset,
        data_collator=_collator(), ssl_config=config,
    )


def _batch(trainer: SemiSupervisedTrainer) -> dict:
    dataset = trainer.train_dataset
    return _collator()([dataset[i] for i in range(4)])


def test_fixmatch_loss_values(tmp_path):
    """The logged components equal CE(labelled) and the masked consistency CE computed by hand."""
    config = SemiSupervisedConfig(algorithm="fixmatch", unlabeled_ratio=2, p_cutoff=0.34)
    trainer = _trainer(tmp_path, config)
    batch = _batch(trainer)
    loss = trainer.compute_loss(trainer.model, batch)
    with torch.no_grad():
        logits = trainer.model(pixel_values=batch["pixel_values"]).logits
    sup = nn.functional.cross_entropy(logits[:4], batch["labels"])
    probs = logits[4:12].softmax(-1)
    mask = (probs.max(-1).values >= 0.34).float()
    unsup = (nn.functional.cross_entropy(logits[12:], probs.argmax(-1), reduction="none") * mask).mean()
    assert float(loss) == pytest.approx(float(sup + unsup), abs=1e-5)
    comps = trainer._reduced_components("train")
    assert comps["loss/sup"] == pytest.approx(float(sup), abs=1e-5)
    assert comps["loss/unsup"] == pytest.approx(float(unsup), abs=1e-5)
    assert comps["ssl/mask_rate"] == pytest.approx(float(mask.mean()))
    assert comps["ssl/threshold"] == pytest.approx(0.34)
    truth = batch["ssl_unlabeled_labels"]
    assert comps["ssl/pseudo_label_acc_all"] == pytest.approx(float((probs.argmax(-1) == truth).float().mean()))


@pytest.mark.parametrize("target", ["labeled", "pseudo", "both"])
def test_nothing_passes_the_threshold(tmp_path, target):
    """τ = 1: no pseudo-label is kept; the unlabelled loss is exactly 0 and everything stays finite."""
    config = SemiSupervisedConfig(algorithm="fixmatch", unlabeled_ratio=2, p_cutoff=1.0, info_target=target)
    trainer = _trainer(tmp_path, config, mi_weight=0.1, entropy_gap_weight=0.1, cma_weight=0.2)
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2
    for h in logs:
        assert h["loss/unsup"] == 0.0 and h["ssl/mask_rate"] == 0.0
        assert math.isfinite(h["loss"]) and math.isfinite(h["grad_norm"])
        assert ("loss/mi" in h) == (target != "pseudo")  # no rows for the information terms with 'pseudo'
        assert "ssl/pseudo_label_acc" not in h  # no confident row to score
    for parameter in trainer.model.parameters():
        assert torch.isfinite(parameter).all()


def test_freematch_trainer_logs_and_info_terms(tmp_path):
    config = SemiSupervisedConfig(algorithm="freematch", unlabeled_ratio=2, threshold_ema=0.9, info_target="both")
    trainer = _trainer(tmp_path, config, mi_weight=0.1, entropy_gap_weight=0.1)
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    expected_keys = {"loss/sup", "loss/unsup", "loss/fairness", "loss/mi", "loss/entropy_gap", "mir", "hdr",
                     "ssl/mask_rate", "ssl/threshold", "ssl/class_threshold_min", "ssl/class_threshold_max",
                     "ssl/pseudo_label_acc_all"}
    assert expected_keys <= set(logs[0])
    for h in logs:
        # total = sup + λ_u·unsup + λ_f·fair - λ·MI + λ·gap (the info losses are logged as loss terms)
        expected = h["loss/sup"] + h["loss/unsup"] + 0.001 * h["loss/fairness"] + 0.1 * h["loss/mi"] + 0.1 * h["loss/entropy_gap"]
        assert h["loss"] == pytest.approx(expected, abs=1e-4)
        assert h["ssl/class_threshold_max"] == pytest.approx(h["ssl/threshold"], abs=1e-6)
    # after two EMA steps from 1/C = 1/3 with momentum 0.9, τ has moved towards the mean confidence
    assert 1 / 3 < logs[-1]["ssl/threshold"] < 1.0


def test_supervised_baseline_is_plain_cross_entropy(tmp_path):
    config = SemiSupervisedConfig(algorithm="supervised", unlabeled_ratio=0)
    trainer = _trainer(tmp_path, config, mu=0)
    batch = _collator()([trainer.train_dataset[i] for i in range(4)])
    assert batch["pixel_values"].shape[0] == 4
    loss = trainer.compute_loss(trainer.model, batch)
    with torch.no_grad():
        expected = trainer.model(pixel_values=batch["pixel_values"], labels=batch["labels"]).loss
    assert float(loss) == pytest.approx(float(expected), abs=1e-6)


def test_ema_teacher_update_formula():
    model = nn.Linear(3, 2)
    ema = ModelEMA(model, decay=0.9)
    before = ema.module.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)
    assert torch.allclose(ema.module.weight, 0.9 * before + 0.1 * model.weight.detach())
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_ema_teacher_gives_the_pseudo_labels(tmp_path):
    config = SemiSupervisedConfig(algorithm="fixmatch", unlabeled_ratio=2, p_cutoff=0.34, ema_decay=0.5)
    trainer = _trainer(tmp_path, config)
    assert trainer.teacher is not None
    with torch.no_grad():  # make the teacher differ from the student
        for p in trainer.teacher.module.parameters():
            p.mul_(-1.0)
    batch = _batch(trainer)
    trainer.compute_loss(trainer.model, batch)
    comps = trainer._reduced_components("train")
    with torch.no_grad():
        teacher_logits = trainer.teacher.module(pixel_values=batch["pixel_values"][4:12]).logits
    truth = batch["ssl_unlabeled_labels"]
    assert comps["ssl/pseudo_label_acc_all"] == pytest.approx(float((teacher_logits.argmax(-1) == truth).float().mean()))
    trainer.train()  # the callback keeps the teacher an EMA of the student
    student = dict(trainer.model.named_parameters())
    gap = max(float((p - student[n]).abs().max()) for n, p in trainer.teacher.module.named_parameters())
    assert math.isfinite(gap)


def test_config_errors():
    with pytest.raises(ValueError, match="not one of"):
        SemiSupervisedConfig(algorithm="meanteacher")
    with pytest.raises(ValueError, match="needs unlabelled data"):
        SemiSupervisedConfig(algorithm="fixmatch", unlabeled_ratio=0)
    with pytest.raises(ValueError, match="p_cutoff"):
        SemiSupervisedConfig(p_cutoff=0.0)
    with pytest.raises(ValueError, match="info_target"):
        SemiSupervisedConfig(info_target="unlabeled")


@pytest.mark.distributed
def test_one_process_equals_two_processes(tmp_path):
    """FreeMatch + CMA/MI/gap on 1 and on 2 CPU processes (torchrun, gloo), same global batch: same run."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    script = str(REPO / "tests" / "dist_scripts" / "ssl_worker.py")
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    subprocess.run([sys.executable, script, str(one)], check=True, env=env, cwd=tmp_path, timeout=600)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    subprocess.run([*torchrun, script, str(two)], check=True, env=env, cwd=tmp_path, timeout=600)
    a, b = json.loads(one.read_text()), json.loads(two.read_text())
    assert (a["world"], b["world"]) == (1, 2)
    logs_a = [h for h in a["log_history"] if "loss" in h]
    logs_b = [h for h in b["log_history"] if "loss" in h]
    assert len(logs_a) == len(logs_b) == 3
    keys = ("loss", "loss/sup", "loss/unsup", "loss/fairness", "loss/cma", "loss/mi", "loss/entropy_gap", "mir", "hdr",
            "ssl/mask_rate", "ssl/threshold", "ssl/pseudo_label_acc_all")
    for x, y in zip(logs_a, logs_b):
        for key in keys:
            assert y[key] == pytest.approx(x[key], abs=1e-5), key
    for name, values in a["params"].items():
        assert torch.tensor(b["params"][name]) == pytest.approx(torch.tensor(values), abs=1e-5), name


@pytest.mark.parametrize("family", ["wide-resnet", "vit"])
def test_resume_restores_thresholds_teacher_and_model(tmp_path, family):
    """2 steps + checkpoint + resume to 3 steps = 3 uninterrupted steps (FreeMatch state, EMA teacher, model).

    The tiny ViT too: transformers 5.25 saves ViT's weights under renamed keys, which
    ``Trainer._load_from_checkpoint`` does not map back (``InfoNCTrainer`` reloads them).
    """
    from hf_infonc.models import WideResNetConfig, WideResNetForImageClassification

    def wrn():
        if family == "vit":
            return tiny_vit_classifier(num_labels=3, image_size=16, seed=1)
        torch.manual_seed(1)
        return WideResNetForImageClassification(WideResNetConfig(depth=10, widen_factor=1, num_labels=3))

    config = SemiSupervisedConfig(algorithm="freematch", unlabeled_ratio=2, threshold_ema=0.5, ema_decay=0.5)
    straight = _trainer(tmp_path / "a", config, model=wrn())
    straight.args.max_steps = 3
    straight.train()
    first = _trainer(tmp_path / "b", config, model=wrn())
    first.args.save_strategy, first.args.save_steps = "steps", 2
    first.args.max_steps = 3
    from transformers import TrainerCallback

    class StopAtTwo(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            control.should_training_stop = state.global_step >= 2

    first.add_callback(StopAtTwo())
    first.train()
    checkpoint = tmp_path / "b" / "out" / "checkpoint-2"
    assert (checkpoint / "ssl_state.pt").is_file()
    resumed = _trainer(tmp_path / "b", config, model=wrn())
    resumed.args.max_steps = 3
    resumed.train(resume_from_checkpoint=str(checkpoint))
    for name in ("global_threshold", "class_probabilities", "label_histogram"):
        assert torch.allclose(getattr(resumed.threshold, name), getattr(straight.threshold, name), atol=1e-6), name
    teacher_a = dict(straight.teacher.module.named_parameters())
    for name, value in resumed.teacher.module.named_parameters():
        assert torch.allclose(value, teacher_a[name], atol=1e-5), name
    model_a, initial = dict(straight.model.named_parameters()), dict(wrn().named_parameters())
    moved = 0
    for name, value in resumed.model.named_parameters():
        assert torch.allclose(value, model_a[name], atol=1e-5), name
        moved += not torch.equal(value, initial[name])
    assert moved > 0  # training changed the weights, so the comparison above is not trivially true


def test_text_classifier_fixmatch_step(tmp_path):
    """FixMatch on a BERT-style text classifier with the network-free text views."""
    from hf_infonc.data.augment import TextViews
    from hf_infonc.testing import minilm_tokenizer, tiny_bert_classifier

    words = ["good", "bad", "film", "plot", "great", "awful", "acting", "music", "long", "short"]
    g = torch.Generator().manual_seed(0)
    rows = [
        {"text": " ".join(words[int(i)] for i in torch.randint(0, 10, (6,), generator=g)), "label": int(k % 2)}
        for k in range(24)
    ]
    dataset = SemiSupervisedDataset(rows[:6], rows, unlabeled_ratio=3, seed=0)
    collate = SemiSupervisedCollator(tokenizer=minilm_tokenizer(), text_views=TextViews(), max_length=16)
    args = InfoNCTrainingArguments(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=2, max_steps=2, learning_rate=0.01,
        logging_steps=1, use_cpu=True, report_to=[], save_strategy="no", seed=0, disable_tqdm=True, mi_weight=0.1,
    )
    trainer = SemiSupervisedTrainer(
        model=tiny_bert_classifier(num_labels=2, seed=1), args=args, train_dataset=dataset, data_collator=collate,
        ssl_config=SemiSupervisedConfig(algorithm="fixmatch", unlabeled_ratio=3, p_cutoff=0.5),
    )
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2 and all(math.isfinite(h["loss"]) and "loss/unsup" in h and "loss/mi" in h for h in logs)


def _clip_family(family: str):
    """(model, tokenizer) of each CLIP adapter: HF CLIP, open_clip, CoOp prompts, zero-shot linear probe."""
    from hf_infonc.models import CLIPLinearProbe, CoOpCLIP, tiny_open_clip
    from hf_infonc.testing import minilm_tokenizer, tiny_clip

    if family == "open_clip":
        model = tiny_open_clip(seed=1)
        return model, model.get_tokenizer()
    clip, tokenizer = tiny_clip(seed=1), minilm_tokenizer()
    if family == "coop":
        return CoOpCLIP.from_clip(clip, tokenizer, ["cat", "dog", "car"], n_ctx=4, seed=0), tokenizer
    if family == "linear_probe":
        return CLIPLinearProbe.from_clip(clip, tokenizer, ["cat", "dog", "car"]), tokenizer
    return clip, tokenizer


@pytest.mark.parametrize("family", ["hf_clip", "open_clip", "coop", "linear_probe"])
def test_clip_adapters_freematch_step(tmp_path, family):
    """Every CLIP adapter (class-prompt or probe head) works as the classifier of FreeMatch."""
    model, tokenizer = _clip_family(family)
    rows = _rows(24, size=32)
    dataset = SemiSupervisedDataset(rows[:6], rows, unlabeled_ratio=2, seed=0)
    args = InfoNCTrainingArguments(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=3, max_steps=2, learning_rate=1e-3,
        logging_steps=1, use_cpu=True, report_to=[], save_strategy="no", seed=0, disable_tqdm=True,
        mi_weight=0.1, cma_weight=0.2,
    )
    trainer = SemiSupervisedTrainer(
        model=model, args=args, train_dataset=dataset, data_collator=_collator(),
        class_names=["cat", "dog", "car"], processing_class=tokenizer,
        ssl_config=SemiSupervisedConfig(algorithm="freematch", unlabeled_ratio=2, info_target="both"),
    )
    before = [p.detach().clone() for p in trainer.model.parameters() if p.requires_grad]
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2
    for h in logs:
        assert math.isfinite(h["loss"]) and {"loss/cma", "loss/mi", "loss/unsup", "ssl/threshold"} <= set(h)
    after = [p.detach() for p in trainer.model.parameters() if p.requires_grad]
    assert before and any(not torch.equal(a, b) for a, b in zip(before, after))  # the trainable part moved


# --------------------------------------------------------------------------- recipes


def _ssl_recipe(tmp_path: Path, **ssl) -> dict:
    return {
        "model": {"family": "image-classification",
                  "config": {"model_type": "wide_resnet", "depth": 10, "widen_factor": 1, "image_size": 16}},
        "data": {"source": "digits", "image_size": 16, "max_eval_samples": 40, "seed": 0},
        "ssl": {"algorithm": "freematch", "labels_per_class": 2, "unlabeled_ratio": 2, "max_unlabeled": 60, **ssl},
        "training": {"output_dir": str(tmp_path / "run"), "max_steps": 3, "per_device_train_batch_size": 4,
                     "per_device_eval_batch_size": 40, "learning_rate": 0.03, "optim": "sgd", "logging_steps": 1,
                     "save_strategy": "no", "use_cpu": True, "report_to": [], "disable_tqdm": True,
                     "mi_weight": 0.1, "entropy_gap_weight": 0.1},
        "seed": 0,
    }


def test_recipe_with_ssl_section_end_to_end(tmp_path):
    from hf_infonc.finetune import run_recipe
    from hf_infonc.recipe import recipe_from_dict

    recipe = recipe_from_dict(_ssl_recipe(tmp_path))
    assert recipe.ssl.algorithm == "freematch" and recipe.ssl.labels_per_class == 2
    results = run_recipe(recipe)
    assert results["ssl"] == {"algorithm": "freematch", "labeled_examples": 20, "unlabeled_examples": 60,
                              "info_target": "labeled"}
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert 0.0 <= saved["after"]["accuracy"] <= 1.0 and "ssl" in saved
    from transformers import AutoModelForImageClassification

    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path / "run")
    assert type(reloaded).__name__ == "WideResNetForImageClassification"
    card = (tmp_path / "run" / "README.md").read_text()
    assert "**Semi-supervised** (FreeMatch" in card and "20 labelled and\n60 unlabelled" in card
    assert "import hf_infonc.models" in card


def test_recipe_ssl_errors(tmp_path):
    from hf_infonc.recipe import RecipeError, recipe_from_dict

    with pytest.raises(RecipeError, match=r"ssl\.threshold_emaa.*threshold_ema"):
        recipe_from_dict(_ssl_recipe(tmp_path, threshold_emaa=0.9))
    raw = _ssl_recipe(tmp_path)
    del raw["ssl"]["labels_per_class"]
    with pytest.raises(RecipeError, match="labels_per_class"):
        recipe_from_dict(raw)
    with pytest.raises(RecipeError, match="needs unlabelled data"):
        recipe_from_dict(_ssl_recipe(tmp_path, unlabeled_ratio=0))


def test_recipe_unlabeled_split_joins_the_pool(tmp_path):
    from hf_infonc.data import build_datasets, class_names
    from hf_infonc.factory import build_model
    from hf_infonc.recipe import recipe_from_dict
    from hf_infonc.semi_supervised import semi_supervised_training_data
    import dataclasses

    recipe = recipe_from_dict(_ssl_recipe(tmp_path, unlabeled_split="test"))
    datasets = build_datasets(dataclasses.replace(recipe.data, shots=None))
    built = build_model(recipe.model, class_names(datasets["train"]))
    dataset, _ = semi_supervised_training_data(recipe, built, datasets)
    full_test = len(build_datasets(dataclasses.replace(recipe.data, max_eval_samples=None))["test"])
    assert len(dataset.unlabeled) == 60 + full_test
    bad = recipe_from_dict(_ssl_recipe(tmp_path, unlabeled_split="unlabeled"))
    with pytest.raises(ValueError, match="has the splits"):
        semi_supervised_training_data(bad, built, datasets)
