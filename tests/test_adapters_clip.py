"""CLIP-family adapters, the open_clip PreTrainedModel wrapper, training modes (LoRA, linear probe, CoOp).

Everything runs on tiny models built from configs (plus the real MiniLM text tower, offline).
Reference values are computed by hand from each model's own encode functions.
"""

from __future__ import annotations

import copy
import functools
import math
import os

import pytest
import torch
from torch import nn

from hf_infonc.adapters import HFCLIPAdapter, adapter_for
from hf_infonc.adapters.coop import CLIPLinearProbeAdapter, CoOpAdapter
from hf_infonc.adapters.clip import OpenCLIPAdapter
from hf_infonc.models import clip_towers
from hf_infonc.models import (
    CLIPLinearProbe,
    CoOpCLIP,
    OpenCLIPConfig,
    OpenCLIPModel,
    is_causal_mask,
    tiny_open_clip,
)
from hf_infonc.modes import CoOpSettings, LoraSettings, apply_training_mode
from hf_infonc.testing import minilm_tokenizer, tiny_bert_classifier, tiny_clip

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")  # peft internals

CLASS_NAMES = ["cat", "golden retriever", "sea_lion"]
TEMPLATES = ["a photo of a {}.", "a drawing of the {}."]
FAMILIES = ["hf_clip", "open_clip_raw", "open_clip_wrapped", "open_clip_minilm"]


@pytest.fixture(scope="module")
def hf_tokenizer():
    return _hf_tokenizer()


@functools.lru_cache(maxsize=None)
def _prototype(family: str, seed: int):
    if family == "hf_clip":
        return tiny_clip(seed=seed), _hf_tokenizer()
    wrapped = tiny_open_clip(minilm_text=family == "open_clip_minilm", seed=seed)
    return wrapped, wrapped.get_tokenizer()


@functools.lru_cache(maxsize=None)
def _hf_tokenizer():
    return minilm_tokenizer()


def build(family: str, seed: int = 0):
    """(model, tokenizer) for a family: a fresh copy of a cached prototype (same seed, same weights)."""
    prototype, tokenizer = _prototype("open_clip_wrapped" if family == "open_clip_raw" else family, seed)
    model = copy.deepcopy(prototype)
    return (model.clip if family == "open_clip_raw" else model), tokenizer


def images(n: int = 6, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def manual_image(model, family: str, pixel_values: torch.Tensor) -> torch.Tensor:
    if family == "hf_clip":
        return model.get_image_features(pixel_values=pixel_values).pooler_output
    clip = model if family == "open_clip_raw" else model.clip
    return clip.encode_image(pixel_values)


def manual_text(model, family: str, tokenizer, texts: list[str]) -> torch.Tensor:
    if family == "hf_clip":
        batch = tokenizer(texts, padding=True, return_tensors="pt")
        return model.get_text_features(**batch).pooler_output
    clip = model if family == "open_clip_raw" else model.clip
    return clip.encode_text(tokenizer(texts))


def manual_head(model, family: str, tokenizer) -> torch.Tensor:
    """Prompt ensembling by hand: mean of normalised prompt embeddings per class, re-normalised."""
    prompts = [t.format(c) for c in CLASS_NAMES for t in TEMPLATES]
    text = nn.functional.normalize(manual_text(model, family, tokenizer, prompts), dim=-1)
    mean = text.reshape(len(CLASS_NAMES), len(TEMPLATES), -1).mean(dim=1)
    return nn.functional.normalize(mean, dim=-1)


def text_side(model, family: str) -> list[nn.Parameter]:
    if family == "hf_clip":
        return [*model.text_model.parameters(), *model.text_projection.parameters()]
    clip = model if family == "open_clip_raw" else model.clip
    visual = {id(p) for p in clip.visual.parameters()} | {id(clip.logit_scale)}
    return [p for p in clip.parameters() if id(p) not in visual]


def adapter_outputs(model, tokenizer, pixel_values, labels):
    adapter = adapter_for(model)
    adapter.setup(model, class_names=CLASS_NAMES, templates=TEMPLATES, processing_class=tokenizer)
    with torch.no_grad():
        return adapter.forward(model, {"pixel_values": pixel_values, "labels": labels})


# ---------------------------------------------------------------------- adapter outputs
@pytest.mark.parametrize("family", FAMILIES)
def test_adapter_logits_equal_scaled_cosines_by_hand(family):
    model, tokenizer = build(family)
    expected_adapter = HFCLIPAdapter if family == "hf_clip" else OpenCLIPAdapter
    assert type(adapter_for(model)) is expected_adapter
    pixel_values, labels = images(6), torch.tensor([0, 1, 2, 0, 1, 2])
    out = adapter_outputs(model, tokenizer, pixel_values, labels)
    with torch.no_grad():
        image = manual_image(model, family, pixel_values)
        head = manual_head(model, family, tokenizer)
        scale = model.logit_scale.exp()
        logits = scale * nn.functional.normalize(image, dim=-1) @ head.T
    assert out.features.shape == (6, 16) and out.head_rows.shape == (3, 16) and out.logits.shape == (6, 3)
    torch.testing.assert_close(out.features, image)
    torch.testing.assert_close(out.head_rows, head, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.logits, logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out.loss, nn.functional.cross_entropy(logits, labels), atol=1e-5, rtol=1e-5)
    assert out.pairwise is None and torch.equal(out.labels, labels)
    torch.testing.assert_close(out.head_rows.norm(dim=-1), torch.ones(3))


@pytest.mark.parametrize("family", FAMILIES)
def test_head_cached_when_text_frozen_and_recomputed_when_it_trains(family):
    model, tokenizer = build(family)
    adapter = adapter_for(model)
    adapter.setup(model, class_names=CLASS_NAMES, templates=TEMPLATES, processing_class=tokenizer)
    for p in text_side(model, family):
        p.requires_grad_(False)
    first, second = adapter.head_rows(model), adapter.head_rows(model)
    assert first is second and not first.requires_grad
    for p in text_side(model, family):
        p.requires_grad_(True)
    trained = adapter.head_rows(model)
    assert trained is not first and trained.requires_grad
    torch.testing.assert_close(trained.detach(), first, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # a text-side update must show in the recomputed head
        for p in text_side(model, family):
            p.add_(0.1 * torch.randn_like(p))
    assert not torch.allclose(adapter.head_rows(model).detach(), first, atol=1e-4)


@pytest.mark.parametrize("family", ["open_clip_wrapped"])
def test_open_clip_caption_batches_are_pairwise(family):
    model, tokenizer = build(family)
    adapter = adapter_for(model)
    adapter.setup(model, class_names=None, templates=None, processing_class=tokenizer)
    captions = ["a cat on a mat", "two dogs", "a sea lion on a rock", "a red car"]
    ids = tokenizer(captions)
    with torch.no_grad():
        out = adapter.forward(model, {"pixel_values": images(4), "input_ids": ids})
        text = model.clip.encode_text(ids)
    # the wrapper's own forward ran (return_loss=True): its normalised embeddings and its loss
    assert out.pairwise is True and out.logit_scale is not None and out.outputs is not None
    torch.testing.assert_close(out.head_rows, nn.functional.normalize(text, dim=-1))
    with torch.no_grad():  # the wrapper's own forward mirrors transformers.CLIPModel
        full = model(pixel_values=images(4), input_ids=ids, return_loss=True)
        image_n = nn.functional.normalize(model.clip.encode_image(images(4)), dim=-1)
        expected = model.logit_scale.exp() * image_n @ nn.functional.normalize(text, dim=-1).T
    torch.testing.assert_close(full.logits_per_image, expected)
    torch.testing.assert_close(full.logits_per_text, expected.T)
    targets = torch.arange(4)
    expected_loss = (nn.functional.cross_entropy(expected, targets) + nn.functional.cross_entropy(expected.T, targets)) / 2
    torch.testing.assert_close(full.loss, expected_loss)
    torch.testing.assert_close(out.loss, expected_loss)
    with pytest.raises(ValueError, match="Class names are missing"):
        adapter.forward(model, {"pixel_values": images(2), "labels": torch.tensor([0, 1])})


# ---------------------------------------------------------------------- save / load
def test_hf_clip_save_load_same_features_and_logits(tmp_path, hf_tokenizer):
    from transformers import CLIPModel

    model = tiny_clip()
    model.save_pretrained(tmp_path)
    loaded = CLIPModel.from_pretrained(tmp_path)
    pixel_values, labels = images(4), torch.tensor([0, 1, 2, 0])
    a = adapter_outputs(model, hf_tokenizer, pixel_values, labels)
    b = adapter_outputs(loaded, hf_tokenizer, pixel_values, labels)
    torch.testing.assert_close(a.features, b.features)
    torch.testing.assert_close(a.logits, b.logits)


@pytest.mark.parametrize("family", ["open_clip_wrapped", "open_clip_minilm"])
def test_open_clip_wrapper_save_load_rebuilds_causal_mask(tmp_path, family):
    from transformers import AutoModel

    minilm_text = family == "open_clip_minilm"
    model, tokenizer = build(family)
    ids, pixel_values = tokenizer(["a photo of a cat.", "a dog", "x"]), images(3)
    model.save_pretrained(tmp_path)
    # the wrapper's files and open_clip's own layout, the weights stored once (hard link)
    written = {"config.json", "model.safetensors", "open_clip_config.json", "open_clip_model.safetensors"}
    assert set(os.listdir(tmp_path)) - {"tokenizer.json", "tokenizer_config.json"} == written
    assert (tmp_path / "model.safetensors").samefile(tmp_path / "open_clip_model.safetensors")
    loaded = OpenCLIPModel.from_pretrained(tmp_path)
    assert isinstance(loaded.config, OpenCLIPConfig) and loaded.config.model_cfg == model.config.model_cfg
    masks = [m.attn_mask for m in loaded.clip.modules() if isinstance(getattr(m, "attn_mask", None), torch.Tensor)]
    assert len(masks) == (0 if minilm_text else 1)  # the MiniLM tower is bidirectional
    assert all(is_causal_mask(mask) for mask in masks)
    with torch.no_grad():
        torch.testing.assert_close(loaded.get_text_features(ids), model.get_text_features(ids))
        torch.testing.assert_close(loaded.get_image_features(pixel_values), model.get_image_features(pixel_values))
        auto = AutoModel.from_pretrained(tmp_path)
        assert type(auto) is OpenCLIPModel
        torch.testing.assert_close(auto.get_text_features(ids), model.get_text_features(ids))


def test_causal_mask_rebuild_restores_text_features():
    model, tokenizer = build("open_clip_wrapped")
    ids = tokenizer(["a photo of a cat.", "a dog"])
    with torch.no_grad():
        reference = model.get_text_features(ids)
        model.clip.attn_mask = torch.empty_like(model.clip.attn_mask).fill_(float("nan"))  # what meta-init loading leaves
        assert torch.isnan(model.get_text_features(ids)).all()
        assert model.rebuild_attention_masks() == 1
        assert is_causal_mask(model.clip.attn_mask)
        torch.testing.assert_close(model.get_text_features(ids), reference)


@pytest.mark.parametrize("family", ["open_clip_wrapped", "open_clip_minilm"])
def test_open_clip_export_loads_in_plain_open_clip(tmp_path, family):
    import open_clip

    model, tokenizer = build(family)
    ids, pixel_values = tokenizer(["a photo of a cat.", "a dog"]), images(2)
    paths = model.save_open_clip_checkpoint(tmp_path, name=f"hf-infonc-test-{family}")
    assert paths["weights"].name == "open_clip_model.safetensors" and paths["config"].name == "open_clip_config.json"
    open_clip.add_model_config(tmp_path)
    by_name, _, preprocess = open_clip.create_model_and_transforms(paths["model_config"].stem, pretrained=str(paths["weights"]))
    loaded = [by_name]
    if family == "open_clip_wrapped":  # the other two routes (the MiniLM tower makes each load slow)
        loaded.append(open_clip.create_model_and_transforms(f"local-dir:{tmp_path}")[0])
        loaded.append(OpenCLIPModel.from_open_clip(paths["model_config"].stem, pretrained=str(paths["weights"])).clip)
    with torch.no_grad():
        text, image = model.get_text_features(ids), model.get_image_features(pixel_values)
        for other in loaded:
            other.eval()
            torch.testing.assert_close(other.encode_text(ids), text)
            torch.testing.assert_close(other.encode_image(pixel_values), image)
    assert torch.equal(open_clip.get_tokenizer(f"local-dir:{tmp_path}")(["a dog"]), tokenizer(["a dog"]))
    assert callable(preprocess)


def test_open_clip_tokenizer_is_saveable(tmp_path):
    import open_clip

    from hf_infonc.models import OpenCLIPTokenizer

    tokenizer = OpenCLIPTokenizer(open_clip.get_tokenizer("ViT-B-32", context_length=24))
    tokenizer.save_pretrained(tmp_path)
    loaded = OpenCLIPTokenizer.from_pretrained(tmp_path)
    ids = loaded(["a photo of a cat.", "two dogs"])
    assert ids.shape == (2, 24) and torch.equal(ids, tokenizer(["a photo of a cat.", "two dogs"]))


def test_open_clip_config_resolves_builtin_names_and_rejects_bad_input():
    config = OpenCLIPConfig(model_name="ViT-B-32")
    assert config.model_cfg["embed_dim"] == 512 and config.model_cfg["vision_cfg"]["patch_size"] == 32
    with pytest.raises(ValueError, match="Unknown open_clip model"):
        OpenCLIPConfig(model_name="no-such-architecture")
    with pytest.raises(ValueError, match="embed_dim"):
        OpenCLIPModel.from_open_clip({"vision_cfg": {}, "text_cfg": {}})
    with pytest.raises(FileNotFoundError, match="need a model name"):
        OpenCLIPModel.from_open_clip(build("open_clip_wrapped")[0].config.model_cfg, pretrained="openai")


# ---------------------------------------------------------------------- LoRA
def _peft_outputs(model, family, tokenizer, pixel_values):
    from hf_infonc.adapters import unwrap_peft

    core = unwrap_peft(model)
    with torch.no_grad():
        if family == "bert":
            return model(**tokenizer).logits
        return adapter_outputs(model, tokenizer, pixel_values, torch.tensor([0, 1, 2, 0])).logits, manual_image(
            core, family, pixel_values
        )


@pytest.mark.parametrize("family", ["hf_clip", "open_clip_wrapped", "bert"])
def test_lora_adapters_save_and_load(tmp_path, family, hf_tokenizer):
    from peft import PeftModel

    if family == "bert":
        base, tokenizer = tiny_bert_classifier(3), hf_tokenizer(["a fine film", "awful"], padding=True, return_tensors="pt")
        fresh = tiny_bert_classifier(3)
    else:
        (base, tokenizer), (fresh, _) = build(family), build(family)
    pixel_values = images(4)
    before = _peft_outputs(base, family, tokenizer, pixel_values)
    model = apply_training_mode(base, "lora", lora=LoraSettings(r=4, alpha=8))
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or "modules_to_save" in n for n in trainable)
    assert any("lora_" in n for n in trainable)
    assert (family == "bert") == any("modules_to_save" in n for n in trainable)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                p.normal_(0.0, 0.2)
    after = _peft_outputs(model, family, tokenizer, pixel_values)
    model.save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(fresh, tmp_path).eval()
    reloaded = _peft_outputs(loaded, family, tokenizer, pixel_values)
    for a, b, c in zip(*(x if isinstance(x, tuple) else (x,) for x in (before, after, reloaded))):
        torch.testing.assert_close(c, b)
        assert not torch.allclose(a, b, atol=1e-4)  # the LoRA weights act


def test_default_lora_targets_per_family():
    from hf_infonc.modes import default_lora_targets

    assert default_lora_targets(build("hf_clip")[0]) == ["q_proj", "k_proj", "v_proj", "out_proj"]
    assert default_lora_targets(build("open_clip_raw")[0]) == ["c_fc", "c_proj"]
    assert default_lora_targets(build("open_clip_minilm")[0]) == ["c_fc", "c_proj", "query", "value"]
    assert default_lora_targets(tiny_bert_classifier(2)) == ["query", "value"]


# ---------------------------------------------------------------------- CoOp
@pytest.mark.parametrize("family", FAMILIES)
def test_coop_phrase_init_reproduces_zero_shot_head(family):
    model, tokenizer = build(family)
    coop = CoOpCLIP.from_clip(model, tokenizer, CLASS_NAMES, n_ctx=None, init="a photo of a")
    assert coop.config.n_ctx == 4
    assert [n for n, p in coop.named_parameters() if p.requires_grad] == ["ctx"]
    assert type(adapter_for(coop)) is CoOpAdapter
    with torch.no_grad():
        reference = manual_text(model, family, tokenizer, [f"a photo of a {c.replace('_', ' ')}." for c in CLASS_NAMES])
        torch.testing.assert_close(coop.head_rows(), nn.functional.normalize(reference, dim=-1), atol=1e-5, rtol=1e-5)
        front = CoOpCLIP.from_clip(model, tokenizer, CLASS_NAMES, n_ctx=None, class_token_position="front")
        reference = manual_text(model, family, tokenizer, [f"{c.replace('_', ' ')} a photo of a." for c in CLASS_NAMES])
        torch.testing.assert_close(front.head_rows(), nn.functional.normalize(reference, dim=-1), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", ["hf_clip", "open_clip_wrapped"])
def test_coop_save_load_same_logits_and_only_prompts_saved(tmp_path, family):
    from safetensors.torch import load_file

    model, tokenizer = build(family)
    coop = CoOpCLIP.from_clip(model, tokenizer, CLASS_NAMES, n_ctx=16, init="a photo of a", seed=0)
    assert coop.ctx.shape == (16, 32)
    phrase = CoOpCLIP.from_clip(model, tokenizer, CLASS_NAMES, n_ctx=None)
    torch.testing.assert_close(coop.ctx[-4:], phrase.ctx)  # the phrase fills the last vectors
    assert 0.005 < coop.ctx[:12].std().item() < 0.04  # N(0, 0.02²) for the others
    coop.save_pretrained(tmp_path)
    assert set(load_file(tmp_path / "model.safetensors")) == {"ctx", "prompt_ids", "prompt_attention_mask", "name_lengths"}
    fresh, _ = build(family)
    loaded = CoOpCLIP.from_pretrained(tmp_path, fresh)
    assert loaded.class_names == CLASS_NAMES and loaded.config.n_ctx == 16
    pixel_values = images(5)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values).logits, coop.eval()(pixel_values).logits)
    other_width = tiny_clip(hidden=64)
    with pytest.raises(ValueError, match="width"):
        CoOpCLIP.from_pretrained(tmp_path, other_width)


def test_coop_errors(hf_tokenizer):
    wrapped, tokenizer = build("open_clip_wrapped")
    with pytest.raises(ValueError, match="do not fit the text context length"):
        CoOpCLIP.from_clip(wrapped, tokenizer, CLASS_NAMES, n_ctx=40)
    with pytest.raises(ValueError, match="n_ctx >= 4"):
        CoOpCLIP.from_clip(tiny_clip(), hf_tokenizer, CLASS_NAMES, n_ctx=2, init="a photo of a")
    with pytest.raises(TypeError, match="CoOp prompt learning needs a CLIP model"):
        apply_training_mode(tiny_bert_classifier(3), "coop", class_names=CLASS_NAMES, tokenizer=hf_tokenizer)
    with pytest.raises(ValueError, match="Did you mean 'lora'"):
        apply_training_mode(tiny_clip(), "lorra")
    coop = apply_training_mode(tiny_clip(), "coop", coop=CoOpSettings(n_ctx=4), class_names=CLASS_NAMES, tokenizer=hf_tokenizer)
    with pytest.raises(ValueError, match="class order"):
        CoOpAdapter().setup(coop, class_names=list(reversed(CLASS_NAMES)), templates=None)
    with pytest.raises(ValueError, match="needs class_names"):
        apply_training_mode(tiny_clip(), "linear_probe", tokenizer=hf_tokenizer)


# ---------------------------------------------------------------------- linear probe
@pytest.mark.parametrize("family", ["hf_clip", "open_clip_raw"])
def test_linear_probe_starts_at_zero_shot_and_trains_only_the_head(family):
    model, tokenizer = build(family)
    pixel_values, labels = images(6), torch.tensor([0, 1, 2, 0, 1, 2])
    zero_shot = adapter_outputs(model, tokenizer, pixel_values, labels)
    probe = apply_training_mode(
        model, "linear_probe", class_names=CLASS_NAMES, tokenizer=tokenizer, templates=TEMPLATES
    )
    assert isinstance(probe, CLIPLinearProbe) and type(adapter_for(probe)) is CLIPLinearProbeAdapter
    assert [n for n, p in probe.named_parameters() if p.requires_grad] == ["classifier.weight"]
    out = adapter_outputs(probe, tokenizer, pixel_values, labels)
    torch.testing.assert_close(out.logits, zero_shot.logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out.head_rows, probe.classifier.weight)


def test_linear_probe_mode_on_a_classifier_freezes_all_but_the_head():
    model = apply_training_mode(tiny_bert_classifier(3), "linear_probe")
    assert sorted(n for n, p in model.named_parameters() if p.requires_grad) == ["classifier.bias", "classifier.weight"]
    model = apply_training_mode(model, "full")
    assert all(p.requires_grad for p in model.parameters())


# ---------------------------------------------------------------------- InfoNCTrainer end to end
def _image_data(n: int = 16):
    g = torch.Generator().manual_seed(0)
    return [{"pixel_values": torch.randn(3, 32, 32, generator=g), "labels": i % 3} for i in range(n)]


def _train(model, tokenizer, data, tmp_path, **overrides):
    from transformers import default_data_collator

    from hf_infonc import InfoNCTrainer, InfoNCTrainingArguments

    settings = dict(
        cma_weight=0.5, mi_weight=0.1, use_cpu=True, report_to=[], max_steps=2, per_device_train_batch_size=8,
        logging_steps=1, save_strategy="no", disable_tqdm=True, learning_rate=0.01, seed=0,
    )
    settings.update(overrides)
    args = InfoNCTrainingArguments(str(tmp_path / "run"), **settings)
    trainer = InfoNCTrainer(
        model=model, args=args, train_dataset=data, data_collator=default_data_collator,
        processing_class=tokenizer, class_names=CLASS_NAMES,
    )
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss/cma" in h]
    assert len(logs) == 2
    for entry in logs:
        for key in ("loss", "loss/base", "loss/cma", "loss/mi"):
            assert math.isfinite(entry[key]), (key, entry)
        assert 0.0 < entry["loss/cma"] <= 1.0
        assert entry["loss"] == pytest.approx(0.5 * entry["loss/base"] + 0.5 * entry["loss/cma"] + 0.1 * entry["loss/mi"], rel=1e-3, abs=1e-4)
    return trainer


@pytest.mark.parametrize("case", ["hf_clip_full", "open_clip_raw_full", "minilm_lora"])
def test_infonc_trainer_runs_on_clip_models(tmp_path, case):
    family, mode = case.rsplit("_", 1)
    family = {"minilm": "open_clip_minilm"}.get(family, family)
    model, tokenizer = build(family)
    model = apply_training_mode(model, mode)
    snapshot = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    _train(model, tokenizer, _image_data(), tmp_path)
    changed = [n for n, p in model.named_parameters() if n in snapshot and not torch.equal(p, snapshot[n])]
    assert changed  # the optimiser stepped


def test_infonc_trainer_on_a_lora_text_classifier(tmp_path, hf_tokenizer):
    batch = hf_tokenizer(["good", "bad", "fine film", "awful plot"] * 4, padding="max_length", max_length=8)
    data = [{"input_ids": batch["input_ids"][i], "attention_mask": batch["attention_mask"][i], "labels": i % 3} for i in range(16)]
    model = apply_training_mode(tiny_bert_classifier(3), "lora")
    _train(model, hf_tokenizer, data, tmp_path)


@pytest.mark.parametrize("family", ["hf_clip", "open_clip_wrapped"])
def test_coop_training_changes_only_the_context(tmp_path, family):
    model, tokenizer = build(family)
    coop = apply_training_mode(model, "coop", coop=CoOpSettings(n_ctx=16, seed=0), class_names=CLASS_NAMES, tokenizer=tokenizer)
    before = {k: v.clone() for k, v in coop.state_dict().items()}
    trainer = _train(coop, tokenizer, _image_data(), tmp_path, optim="sgd", learning_rate=0.002, max_steps=2)
    after = coop.state_dict()
    changed = sorted(k for k in before if not torch.equal(before[k], after[k]))
    assert changed == ["ctx"]
    trainer.save_model(str(tmp_path / "saved"))
    from safetensors.torch import load_file

    assert "ctx" in load_file(tmp_path / "saved" / "model.safetensors")
    assert not any(k.startswith("clip.") for k in load_file(tmp_path / "saved" / "model.safetensors"))
    loaded = CoOpCLIP.from_pretrained(tmp_path / "saved", build(family)[0])
    with torch.no_grad():
        torch.testing.assert_close(loaded(images(4)).logits, coop.eval()(images(4)).logits)


def test_linear_probe_training_changes_only_the_head(tmp_path, hf_tokenizer):
    probe = apply_training_mode(tiny_clip(), "linear_probe", class_names=CLASS_NAMES, tokenizer=hf_tokenizer)
    before = {k: v.clone() for k, v in probe.state_dict().items()}
    trainer = _train(probe, hf_tokenizer, _image_data(), tmp_path)
    after = probe.state_dict()
    assert sorted(k for k in before if not torch.equal(before[k], after[k])) == ["classifier.weight"]
    trainer.save_model(str(tmp_path / "saved"))
    from safetensors.torch import load_file

    assert set(load_file(tmp_path / "saved" / "model.safetensors")) == {"classifier.weight"}
    loaded = CLIPLinearProbe.from_pretrained(tmp_path / "saved", tiny_clip())
    assert loaded.class_names == CLASS_NAMES
    with torch.no_grad():
        torch.testing.assert_close(loaded(images(4)).logits, probe.eval()(images(4)).logits)


@pytest.mark.parametrize("family", ["hf_clip", "open_clip_wrapped", "open_clip_raw"])
def test_linear_probe_refuses_a_base_model_of_another_width(tmp_path, family):
    model, tokenizer = build(family)
    probe = CLIPLinearProbe.from_clip(model, tokenizer, CLASS_NAMES)
    assert probe.config.embed_dim == clip_towers.embed_dim(model) == 16
    probe.save_pretrained(tmp_path)
    wider = tiny_clip(projection=24)
    assert clip_towers.embed_dim(wider) == 24
    with pytest.raises(ValueError, match="head has width 16 but the CLIP model's embeddings have width 24"):
        CLIPLinearProbe.from_pretrained(tmp_path, wider)
    fresh, _ = build(family)
    with torch.no_grad():
        torch.testing.assert_close(
            CLIPLinearProbe.from_pretrained(tmp_path, fresh)(images(3)).logits, probe.eval()(images(3)).logits
        )
