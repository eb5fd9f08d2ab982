"""Model cards, Hub pushes (offline, with HfApi patched at class level) and loading saved models back.

Everything here runs offline (``HF_HUB_OFFLINE=1`` from conftest) on tiny models built from configs.
The push tests patch ``HfApi.create_repo`` / ``HfApi.upload_folder`` on the class, so nothing leaves
the machine; they switch ``HF_HUB_OFFLINE`` off for the duration of the test only.
"""

from __future__ import annotations

import json
import logging
import math
import pickle
import re
import time
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import HfApi, ModelCard

from hf_infonc.card import TEMPLATE_ENV, InfoNCCardData, template_path, validate_model_card, write_model_card
from hf_infonc.hub import UPLOAD_ALLOW_PATTERNS, UPLOAD_IGNORE_PATTERNS, HubPushError, plan_upload, push_output_dir
from hf_infonc.secrets import clean_output_dir, redact, redact_text
from hf_infonc.recipe import apply_overrides, recipe_from_dict

SECRET = "hf_" + "S3cretT0kenValue" + "x" * 18  # shaped like a Hub user access token (hf_ + 34)
OTHER_SECRET = "hf_" + "An0therT0kenFromTheRecipe" + "y" * 9
CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
TINY_VIT = {"model_type": "vit", "image_size": 32, "patch_size": 8, "hidden_size": 32, "num_hidden_layers": 2,
            "num_attention_heads": 2, "intermediate_size": 64}  # fmt: skip


# ---------------------------------------------------------------------------- helpers


def _recipe(out: Path, model: dict, source: str, training: dict | None = None, hub: dict | None = None, seed: int = 3):
    raw = {
        "model": model,
        "data": {"source": source},
        "training": {"output_dir": str(out), "learning_rate": 1e-4, "num_train_epochs": 2, **(training or {})},
        "seed": seed,
    }
    if hub is not None:
        raw["hub"] = hub
    return recipe_from_dict(raw)


def _metrics(accuracy: float, mir: float, *, nc: bool = True) -> dict:
    values = {"accuracy": accuracy, "mir": mir, "hdr": 0.25, "class_mir": 0.81, "class_hdr": 0.12, "loss": 1.4}
    if nc:
        values.update({"nc1": 2.5, "nc2": 0.4, "nc3": 0.6, "nc4": 0.05, "loss/cma": 0.7})
    return values


def _results(class_names: list[str], *, eval_only: bool = False, nc: bool = True) -> dict:
    results = {"recipe": None, "seed": 3, "class_names": class_names, "before": _metrics(0.31, 0.9012, nc=nc)}
    if not eval_only:
        results["train"] = {"train_loss": 1.1, "train_runtime": 3.2}
        results["after"] = _metrics(0.875, 0.9432, nc=nc)
    results["wall_time_s"] = 12.5
    results["num_processes"] = 1
    return results


def _fake_run_dir(out: Path, recipe, *, weights: str = "model.safetensors") -> Path:
    """A folder shaped like a finished run (weights are placeholders: the card does not read them)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / weights).write_bytes(b"\0" * 8)
    if weights != "adapter_model.safetensors":  # an adapter on a Hub base comes without config.json
        (out / "config.json").write_text("{}")
    if recipe.model.family == "open-clip" and recipe.model.training_mode == "full":  # OpenCLIPModel.save_pretrained
        (out / "open_clip_model.safetensors").write_bytes(b"\0" * 8)
        (out / "open_clip_config.json").write_text("{}")
    (out / "recipe.yaml").write_text(recipe.to_yaml())
    return out


def _code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)\n```", text, flags=re.S)


def _eval_values(card: ModelCard) -> dict[str, float]:
    return {r.metric_type: r.metric_value for r in card.data.eval_results or []}


CASES = {
    "hf-clip-full": (
        {"family": "hf-clip", "name_or_path": "openai/clip-vit-base-patch32"}, "cifar10", CIFAR10,
        "openai/clip-vit-base-patch32", "transformers", "CLIPModel.from_pretrained",
    ),
    "hf-clip-coop": (
        {"family": "hf-clip", "name_or_path": "openai/clip-vit-base-patch32", "training_mode": "coop"}, "cifar10",
        CIFAR10, "openai/clip-vit-base-patch32", "hf_infonc", "CoOpCLIP.from_pretrained",
    ),
    "hf-clip-linear-probe": (
        {"family": "hf-clip", "name_or_path": "openai/clip-vit-base-patch32", "training_mode": "linear_probe"},
        "cifar10", CIFAR10, "openai/clip-vit-base-patch32", "hf_infonc", "CLIPLinearProbe.from_pretrained",
    ),
    "open-clip-lora": (
        {"family": "open-clip", "name_or_path": "ViT-B-32", "pretrained": "laion2b_s34b_b79k", "training_mode": "lora"},
        "cifar10", CIFAR10, "laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "peft", "PeftModel.from_pretrained",
    ),
    "open-clip-config": (
        {"family": "open-clip", "config": {"embed_dim": 16, "vision_cfg": {"image_size": 32}, "text_cfg": {}}},
        "digits", [str(i) for i in range(10)], None, "open_clip", "OpenCLIPModel.from_pretrained",
    ),
    "open-clip-minilm-demo": (
        {"family": "open-clip", "freeze": ["clip.text.transformer"],
         "config": {"embed_dim": 16, "vision_cfg": {"image_size": 32},
                    "text_cfg": {"hf_model_name": "sentence-transformers/all-MiniLM-L6-v2",
                                 "hf_tokenizer_name": "sentence-transformers/all-MiniLM-L6-v2"}}},
        "digits", ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"],
        "sentence-transformers/all-MiniLM-L6-v2", "open_clip", "`clip.text.transformer`",
    ),
    "text-full": (
        {"family": "sequence-classification", "name_or_path": "sentence-transformers/all-MiniLM-L6-v2"},
        "amazon_reviews", ["other", "great"], "sentence-transformers/all-MiniLM-L6-v2", "transformers",
        "AutoModelForSequenceClassification.from_pretrained",
    ),
    "text-lora-sst2": (
        {"family": "sequence-classification", "name_or_path": "sentence-transformers/all-MiniLM-L6-v2",
         "training_mode": "lora"},
        "glue/sst2", ["negative", "positive"], "sentence-transformers/all-MiniLM-L6-v2", "peft",
        "PeftModel.from_pretrained",
    ),
    "image-config": (
        {"family": "image-classification", "config": TINY_VIT}, "digits", [str(i) for i in range(10)], None,
        "transformers", "AutoModelForImageClassification.from_pretrained",
    ),
}  # fmt: skip


# ---------------------------------------------------------------------------- rendering


@pytest.mark.parametrize("case", list(CASES))
def test_card_renders_parses_and_round_trips(tmp_path, case):
    model, source, names, base_model, library, loader = CASES[case]
    out = tmp_path / "run"
    recipe = _recipe(out, model, source, training={"cma_weight": 0.5, "mi_weight": 0.1})
    _fake_run_dir(out, recipe, weights="adapter_model.safetensors" if "lora" in case else "model.safetensors")
    results = _results(names)
    path = write_model_card(out, recipe, results)
    assert path == out / "README.md"

    card = ModelCard.load(path, ignore_metadata_errors=False)
    assert validate_model_card(path) == []
    data = card.data
    assert data.license == "apache-2.0"
    assert data.base_model == base_model
    assert data.library_name == library
    assert "hf_infonc" in data.tags and "arxiv:2409.16767" in data.tags and "arxiv:2406.03999" in data.tags
    # model-index: the final (after-training) values come back from the YAML
    values = _eval_values(card)
    assert values["accuracy"] == pytest.approx(0.875)
    assert values["mir"] == pytest.approx(0.9432)
    assert values["nc1"] == pytest.approx(2.5)
    assert "model-index" in data.to_dict()
    assert data.model_name == "run"
    # the same metadata survives a second save/load
    again = ModelCard(str(card))
    assert _eval_values(again) == values
    # the embedded recipe parses back to the recipe
    (embedded,) = _code_blocks(card.text, "yaml")
    assert yaml.safe_load(embedded) == recipe.raw
    # BibTeX of both papers, the loss table, the load snippet of the family
    assert "@article{song2024exploring" in card.text and "arXiv:2409.16767" in card.text
    assert "@inproceedings{song2024unveiling" in card.text and "arXiv:2406.03999" in card.text
    assert "| CMA (cross-modal alignment) | 0.5 |" in card.text
    assert loader in card.text
    assert "## Intended use and limitations" in card.text
    assert "trust_remote_code" in card.text and "trust_remote_code=True" not in card.text
    for name in names[:5]:
        assert name in card.text


def test_dataset_and_task_metadata(tmp_path):
    out = tmp_path / "run"
    recipe = _recipe(out, {"family": "sequence-classification", "name_or_path": "sentence-transformers/all-MiniLM-L6-v2"},
                     "glue/sst2")  # fmt: skip
    _fake_run_dir(out, recipe)
    card = ModelCard.load(write_model_card(out, recipe, _results(["negative", "positive"])))
    assert card.data.datasets == ["nyu-mll/glue"]
    assert card.data.pipeline_tag == "text-classification"
    (result, *_) = card.data.eval_results
    assert (result.task_type, result.dataset_type, result.dataset_config, result.dataset_split) == (
        "text-classification", "nyu-mll/glue", "sst2", "validation",
    )
    # an offline source is named, but not claimed as a Hub dataset
    out2 = tmp_path / "digits"
    recipe2 = _recipe(out2, {"family": "image-classification", "config": TINY_VIT}, "digits")
    _fake_run_dir(out2, recipe2)
    card2 = ModelCard.load(write_model_card(out2, recipe2, _results([str(i) for i in range(10)])))
    assert card2.data.datasets is None
    assert card2.data.eval_results[0].dataset_type == "digits"
    assert "random initialisation" in card2.text and card2.data.base_model is None


def test_metric_table_plots_nan_and_missing_measures(tmp_path):
    out = tmp_path / "run"
    recipe = _recipe(out, {"family": "hf-clip", "name_or_path": "openai/clip-vit-base-patch32"}, "cifar10")
    _fake_run_dir(out, recipe)
    (out / "info_dynamics.png").write_bytes(b"\x89PNG")
    results = _results(CIFAR10, nc=False)
    results["after"]["hdr"] = math.nan
    card = ModelCard.load(write_model_card(out, recipe, results))
    assert "| Metric | Before | After |" in card.text
    assert "| Accuracy | 0.3100 | 0.8750 |" in card.text
    assert "| HDR (samples vs head rows) | 0.2500 | — |" in card.text  # undefined: "—", explained under the table
    assert "— marks a value that is undefined" in card.text
    assert "| NC1" not in card.text and "NC1–NC4 are" not in card.text  # not computed: not mentioned
    assert "hdr" not in _eval_values(card)  # NaN never goes into the model-index
    assert "![Info dynamics](info_dynamics.png)" in card.text
    assert "MIR = 0.9524" in card.text  # closed-form value at collapse for C = 10


def test_card_plots_are_the_runs_dynamics_figures_not_analysis_outputs(tmp_path):
    """`hf-infonc analyze prune RUN` writes RUN/analysis/prune/prune.png: not an information-dynamics plot."""
    out = tmp_path / "run"
    recipe = _recipe(out, {"family": "hf-clip", "name_or_path": "openai/clip-vit-base-patch32"}, "cifar10")
    _fake_run_dir(out, recipe)
    for name in ("info_dynamics.png", "neural_collapse.png", "analysis/prune/prune.png", "analysis/lmc/lmc.png"):
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(b"\x89PNG")
    text = ModelCard.load(write_model_card(out, recipe, _results(CIFAR10))).text
    dynamics = text[text.index("### Information dynamics"):text.index("## How to load")]
    assert dynamics.split() == ["###", "Information", "dynamics", "![Info", "dynamics](info_dynamics.png)",
                                "![Neural", "collapse](neural_collapse.png)"]
    assert "analysis/" not in text


def test_card_says_how_to_install_hf_infonc(tmp_path):
    """hf-infonc is not on PyPI: the card points to an install from the source repository."""
    out = tmp_path / "run"
    recipe = _recipe(out, {"family": "hf-clip", "name_or_path": "openai/clip-vit-base-patch32", "training_mode": "coop"},
                     "cifar10")  # fmt: skip
    _fake_run_dir(out, recipe)
    text = ModelCard.load(write_model_card(out, recipe, _results(CIFAR10))).text
    assert "pip install hf-infonc" not in text
    assert "It was made with hf_infonc (install it from its source repository: `pip install -e .` in a" in text
    assert "- Loading this model needs hf_infonc (install it from its source repository: `pip install -e .` in a clone): `CoOpCLIP`" in text


def test_eval_only_card(tmp_path):
    out = tmp_path / "run"
    recipe = _recipe(out, {"family": "hf-clip", "name_or_path": "openai/clip-vit-base-patch32"}, "cifar10")
    _fake_run_dir(out, recipe)
    card = ModelCard.load(write_model_card(out, recipe, _results(CIFAR10, eval_only=True)))
    assert "evaluated only" in card.text
    assert "| Metric | Value |" in card.text
    assert _eval_values(card)["accuracy"] == pytest.approx(0.31)
    assert validate_model_card(card) == []


def test_template_ships_as_package_data(monkeypatch):
    """The template lies in the package and matches a package-data glob of pyproject.toml, so
    pip-installed (non-editable) copies render cards too (it was outside the wheel before)."""
    tomllib = pytest.importorskip("tomllib")
    import fnmatch

    import hf_infonc

    monkeypatch.delenv(TEMPLATE_ENV, raising=False)
    package = Path(hf_infonc.__file__).resolve().parent
    relative = template_path().relative_to(package).as_posix()  # ValueError if outside the package
    with open(Path(__file__).resolve().parents[1] / "pyproject.toml", "rb") as f:
        globs = tomllib.load(f)["tool"]["setuptools"]["package-data"]["hf_infonc"]
    assert any(fnmatch.fnmatch(relative, pattern) for pattern in globs), (relative, globs)


def test_template_override_is_used_and_a_missing_one_is_named(tmp_path, monkeypatch):
    out = tmp_path / "run"
    recipe = _recipe(out, {"family": "hf-clip", "name_or_path": "openai/clip-vit-base-patch32"}, "cifar10")
    _fake_run_dir(out, recipe)
    custom = tmp_path / "mine.md.j2"
    custom.write_text("---\n{{ card_data }}\n---\n# My card for {{ class_names_md }}\n")
    monkeypatch.setenv(TEMPLATE_ENV, str(custom))
    assert template_path() == custom
    card = ModelCard.load(write_model_card(out, recipe, _results(CIFAR10, eval_only=True)))
    assert card.text.strip().startswith("# My card for")
    monkeypatch.setenv(TEMPLATE_ENV, str(tmp_path / "missing.md.j2"))
    with pytest.raises(FileNotFoundError, match=f"missing.md.j2.*{TEMPLATE_ENV}"):
        template_path()


def test_card_data_class_collects_the_run(tmp_path):
    out = tmp_path / "run"
    recipe = _recipe(out, {"family": "sequence-classification", "name_or_path": "sentence-transformers/all-MiniLM-L6-v2",
                           "training_mode": "lora", "lora": {"r": 4, "alpha": 8}},
                     "amazon_reviews", training={"entropy_gap_weight": 0.2, "info_normalized": True},
                     hub={"repo_id": "someone/minilm-reviews", "license": "mit"})  # fmt: skip
    _fake_run_dir(out, recipe, weights="adapter_model.safetensors")
    data = InfoNCCardData.from_run(out, recipe, _results(["other", "great"]))
    assert data.model_ref == "someone/minilm-reviews" and data.model_name == "minilm-reviews"
    assert data.loss_weights == {"cma_weight": 0.0, "mi_weight": 0.0, "entropy_gap_weight": 0.2}
    assert data.lora == {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "the family's default"}
    assert data.metrics_after["accuracy"] == 0.875 and data.seed == 3
    assert ("transformers", __import__("transformers").__version__) in data.versions
    card = ModelCard.load(write_model_card(out, recipe, _results(["other", "great"])))
    assert card.data.license == "mit"
    assert card.data.base_model_relation == "adapter"
    assert 'PeftModel.from_pretrained(base, "someone/minilm-reviews")' in card.text
    assert "HDR(K₁, K₂)" in card.text and "@inproceedings{hu2022lora" in card.text


def test_validate_model_card_reports_problems():
    bad = "---\nlicense: not-a-license\nbase_model: 'not a repo id!'\n---\n# x\n" + SECRET
    problems = validate_model_card(bad)
    assert any("license" in p for p in problems)
    assert any("base_model" in p for p in problems)
    assert any("token" in p for p in problems)
    broken = "---\nmodel-index:\n- name: x\n  results:\n  - task: {}\n---\n# x\n"
    assert validate_model_card(broken)[0].startswith("the card does not parse")


# ---------------------------------------------------------------------------- secrets


def test_redaction_helpers(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    mapping = {
        "training": {"hub_token": OTHER_SECRET, "average_tokens_across_devices": True, "push_to_hub_token": None},
        "note": f"token {SECRET} inside",
    }
    red = redact(mapping)
    assert red["training"]["hub_token"] == "<redacted>"
    assert red["training"]["average_tokens_across_devices"] is True
    assert red["training"]["push_to_hub_token"] is None
    assert SECRET not in red["note"]
    assert redact_text("model_type hf_infonc_open_clip") == "model_type hf_infonc_open_clip"
    assert OTHER_SECRET not in redact_text(f"x {OTHER_SECRET} y")


def test_token_never_in_card_recipe_or_saved_arguments(tmp_path, monkeypatch):
    """HF_TOKEN in the environment and ``--set training.hub_token=...`` on the command line."""
    from transformers import Trainer, TrainingArguments

    from hf_infonc.testing import tiny_bert_classifier

    monkeypatch.setenv("HF_TOKEN", SECRET)
    out = tmp_path / "run"
    raw = {
        "model": {"family": "sequence-classification", "name_or_path": "sentence-transformers/all-MiniLM-L6-v2"},
        "data": {"source": "amazon_reviews"},
        "training": {"output_dir": str(out)},
    }
    recipe = recipe_from_dict(apply_overrides(raw, [f"training.hub_token={OTHER_SECRET}"]))
    assert recipe.training["hub_token"] == OTHER_SECRET
    # what finetune.py does: Trainer.save_model (pickles TrainingArguments), recipe.yaml, metrics.json
    args = TrainingArguments(str(out), hub_token=OTHER_SECRET, report_to=[], use_cpu=True)
    trainer = Trainer(model=tiny_bert_classifier(2), args=args)
    trainer.save_model(str(out))
    assert (out / "training_args.bin").is_file()  # transformers 5 writes it in Trainer._save
    assert OTHER_SECRET not in recipe.to_yaml() and "hub_token: <redacted>" in recipe.to_yaml()  # what finetune writes
    (out / "recipe.yaml").write_text(recipe.to_yaml(redact_secrets=False))  # a raw file: clean_output_dir redacts it
    (out / "metrics.json").write_text(json.dumps(_results(["other", "great"])))
    assert OTHER_SECRET in (out / "recipe.yaml").read_text()

    write_model_card(out, recipe, _results(["other", "great"]))

    assert not (out / "training_args.bin").exists()
    for path in out.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert SECRET.encode() not in content and OTHER_SECRET.encode() not in content, path
    assert yaml.safe_load((out / "recipe.yaml").read_text())["training"]["hub_token"] == "<redacted>"
    card = ModelCard.load(out / "README.md")
    assert "hub_token: <redacted>" in card.text
    assert sorted(p.name for p in out.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".pkl")) == []


def test_clean_output_dir_leaves_clean_folders_alone(tmp_path):
    (tmp_path / "recipe.yaml").write_text("model:\n  family: hf-clip\n")
    assert clean_output_dir(tmp_path) == []
    assert (tmp_path / "recipe.yaml").read_text() == "model:\n  family: hf-clip\n"


# ---------------------------------------------------------------------------- pushing


class FakeHub:
    """Records what HfApi.create_repo / upload_folder were asked to do (patched on the class)."""

    def __init__(self, monkeypatch, *, create_delay: float = 0.0):
        self.created: list[dict] = []
        self.uploads: list[dict] = []
        self.tokens: list[str | None] = []
        hub = self

        def create_repo(api, repo_id, **kwargs):
            if create_delay:
                time.sleep(create_delay)
            hub.tokens.append(api.token)
            hub.created.append({"repo_id": repo_id, **kwargs})
            return f"https://huggingface.co/{repo_id}"

        def upload_folder(api, *, repo_id, folder_path, allow_patterns=None, ignore_patterns=None, **kwargs):
            from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects

            folder = Path(folder_path)
            everything = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
            files = list(
                filter_repo_objects(everything, allow_patterns=allow_patterns,
                                    ignore_patterns=list(ignore_patterns or []) + DEFAULT_IGNORE_PATTERNS)
            )  # fmt: skip
            hub.tokens.append(api.token)
            hub.uploads.append({
                "repo_id": repo_id, "files": files, "allow_patterns": allow_patterns,
                "ignore_patterns": ignore_patterns, "card": (folder / "README.md").read_text(), **kwargs,
            })  # fmt: skip
            return None

        monkeypatch.setattr(HfApi, "create_repo", create_repo)
        monkeypatch.setattr(HfApi, "upload_folder", upload_folder)


@pytest.fixture
def online(monkeypatch):
    """Offline mode off for this test, a token in HF_TOKEN; the Hub itself is patched by FakeHub."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", SECRET)


def _pushable_run(tmp_path: Path, **recipe_kwargs) -> Path:
    out = tmp_path / "run"
    recipe = _recipe(out, {"family": "hf-clip", "name_or_path": "openai/clip-vit-base-patch32"}, "cifar10",
                     training={"cma_weight": 0.5}, **recipe_kwargs)  # fmt: skip
    _fake_run_dir(out, recipe)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "preprocessor_config.json"):
        (out / name).write_text("{}")
    (out / "vocab.txt").write_text("[PAD]\n")
    (out / "merges.txt").write_text("#version\n")
    (out / "metrics.json").write_text(json.dumps(_results(CIFAR10)))
    (out / "info_dynamics.png").write_bytes(b"\x89PNG")
    (out / "training_args.bin").write_bytes(pickle.dumps({"hub_token": SECRET}))
    (out / "pytorch_model.bin").write_bytes(b"pickle")
    (out / "notes.pkl").write_bytes(b"pickle")
    (out / "checkpoint-10").mkdir()
    for name in ("model.safetensors", "config.json", "optimizer.pt", "rng_state.pth", "trainer_state.json"):
        (out / "checkpoint-10" / name).write_bytes(b"x")
    (out / "runs").mkdir()
    (out / "runs" / "events.out.tfevents.1").write_bytes(b"x")
    (out / ".hidden.json").write_text("{}")
    write_model_card(out, recipe, _results(CIFAR10))
    return out


def test_push_uploads_only_the_allow_list(tmp_path, monkeypatch, online, capsys, caplog):
    out = _pushable_run(tmp_path)
    hub = FakeHub(monkeypatch)
    with caplog.at_level(logging.DEBUG):
        url = push_output_dir(out, repo_id="someone/clip-cifar", private=True)
    assert url == "https://huggingface.co/someone/clip-cifar"
    (created,) = hub.created
    assert created == {"repo_id": "someone/clip-cifar", "private": True, "exist_ok": True, "repo_type": "model"}
    (upload,) = hub.uploads
    assert upload["repo_id"] == "someone/clip-cifar" and upload["repo_type"] == "model"
    assert upload["allow_patterns"] == list(UPLOAD_ALLOW_PATTERNS)
    assert upload["ignore_patterns"] == list(UPLOAD_IGNORE_PATTERNS)
    assert sorted(upload["files"]) == sorted([
        "README.md", "config.json", "info_dynamics.png", "merges.txt", "metrics.json", "model.safetensors",
        "preprocessor_config.json", "recipe.yaml", "special_tokens_map.json", "tokenizer.json",
        "tokenizer_config.json", "vocab.txt",
    ])  # fmt: skip
    assert not any(f.endswith((".bin", ".pt", ".pth", ".pkl")) for f in upload["files"])
    assert plan_upload(out).files == upload["files"]
    # the token came from HF_TOKEN and never showed up anywhere
    assert hub.tokens == [SECRET, SECRET]
    captured = capsys.readouterr()
    assert SECRET not in captured.out + captured.err + caplog.text
    assert "pytorch_model.bin" in caplog.text  # the skipped pickle is named
    # the uploaded card was re-rendered for the repo id and is still valid
    card = ModelCard(upload["card"])
    assert 'CLIPModel.from_pretrained("someone/clip-cifar"' in card.text
    assert card.data.model_name == "clip-cifar"
    assert _eval_values(card)["accuracy"] == pytest.approx(0.875)
    assert validate_model_card(card) == []
    assert SECRET not in upload["card"]


def test_push_command_line(tmp_path, monkeypatch, online, capsys, caplog):
    from hf_infonc.cli import main

    out = _pushable_run(tmp_path)
    hub = FakeHub(monkeypatch)
    with caplog.at_level(logging.DEBUG):
        assert main(["push", str(out), "--repo-id", "someone/clip-cifar", "--private", "--token", OTHER_SECRET]) == 0
    assert hub.created[0]["private"] is True
    assert hub.tokens == [OTHER_SECRET, OTHER_SECRET]  # an explicit token wins over HF_TOKEN
    captured = capsys.readouterr()
    assert "https://huggingface.co/someone/clip-cifar" in captured.out
    for secret in (SECRET, OTHER_SECRET):
        assert secret not in captured.out + captured.err + caplog.text + hub.uploads[0]["card"]


def test_recipe_push_settings_reach_the_hub(tmp_path, monkeypatch, online):
    """``hub.push_to_hub: true`` in a recipe: finetune.py calls push_output_dir with the recipe's hub section."""
    out = _pushable_run(tmp_path, hub={"push_to_hub": True, "repo_id": "someone/from-recipe", "private": True})
    hub = FakeHub(monkeypatch)
    recipe = recipe_from_dict(yaml.safe_load((out / "recipe.yaml").read_text()))
    push_output_dir(str(out), repo_id=recipe.hub.repo_id, private=recipe.hub.private)
    assert hub.created[0]["repo_id"] == "someone/from-recipe" and hub.created[0]["private"] is True
    assert 'from_pretrained("someone/from-recipe"' in hub.uploads[0]["card"]


def test_push_offline_fails_fast_with_a_clear_message(tmp_path, monkeypatch, capsys):
    out = _pushable_run(tmp_path)
    hub = FakeHub(monkeypatch)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_TOKEN", SECRET)
    start = time.perf_counter()
    with pytest.raises(HubPushError, match="HF_HUB_OFFLINE=1") as info:
        push_output_dir(out, repo_id="someone/clip-cifar")
    assert time.perf_counter() - start < 5
    assert "hf-infonc push" in str(info.value) and SECRET not in str(info.value)
    assert hub.created == [] and hub.uploads == []
    # the same through the command line
    from hf_infonc.cli import main

    start = time.perf_counter()
    try:
        code = main(["push", str(out), "--repo-id", "someone/clip-cifar"])
    except HubPushError as error:
        message = str(error)
    else:
        assert code != 0
        message = capsys.readouterr().err
    assert time.perf_counter() - start < 5
    assert "HF_HUB_OFFLINE" in message and SECRET not in message


def test_push_unreachable_hub_fails_fast(tmp_path, online):
    out = _pushable_run(tmp_path)
    start = time.perf_counter()
    with pytest.raises(HubPushError, match="cannot be reached") as info:
        push_output_dir(out, repo_id="someone/clip-cifar", endpoint="http://127.0.0.1:9", update_card=False)
    assert time.perf_counter() - start < 5
    assert SECRET not in str(info.value) and info.value.__cause__ is None


def test_push_hub_that_never_answers_times_out(tmp_path, monkeypatch, online):
    out = _pushable_run(tmp_path)
    FakeHub(monkeypatch, create_delay=30)
    start = time.perf_counter()
    with pytest.raises(HubPushError, match="did not answer"):
        push_output_dir(out, repo_id="someone/clip-cifar", timeout=0.5, update_card=False)
    assert time.perf_counter() - start < 5


def test_push_without_a_token(tmp_path, monkeypatch, online):
    out = _pushable_run(tmp_path)
    hub = FakeHub(monkeypatch)
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    card = (out / "README.md").read_bytes()
    with pytest.raises(HubPushError, match="hf auth login"):
        push_output_dir(out, repo_id="someone/clip-cifar")
    assert hub.created == []
    assert (out / "README.md").read_bytes() == card, "a push that fails leaves the card as it was"


def test_a_push_that_fails_puts_the_card_back(tmp_path, online):
    out = _pushable_run(tmp_path)
    card = (out / "README.md").read_bytes()
    with pytest.raises(HubPushError, match="cannot be reached"):
        push_output_dir(out, repo_id="someone/never-created", endpoint="http://127.0.0.1:9")
    assert (out / "README.md").read_bytes() == card


def test_push_refuses_folders_that_are_not_runs(tmp_path, monkeypatch, online):
    FakeHub(monkeypatch)
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "pytorch_model.bin").write_bytes(b"x")
    (pickled / "README.md").write_text("---\nlicense: mit\n---\n# x\n")
    with pytest.raises(ValueError, match="pickled weights"):
        push_output_dir(pickled, repo_id="someone/x")
    no_card = tmp_path / "no_card"
    no_card.mkdir()
    (no_card / "model.safetensors").write_bytes(b"x")
    with pytest.raises(ValueError, match="README.md"):
        push_output_dir(no_card, repo_id="someone/x")
    with pytest.raises(FileNotFoundError):
        push_output_dir(tmp_path / "missing", repo_id="someone/x")
    with pytest.raises(ValueError, match="repo id"):
        push_output_dir(no_card, repo_id="not a repo id")


# ---------------------------------------------------------------------------- loading back


@pytest.fixture
def no_pickle(monkeypatch):
    """Fail the test if anything is unpickled while loading."""

    def refuse(*args, **kwargs):
        raise AssertionError("something was loaded with pickle")

    def arm():
        monkeypatch.setattr(torch, "load", refuse)
        monkeypatch.setattr(pickle, "load", refuse)
        monkeypatch.setattr(pickle, "loads", refuse)

    return arm


def _weight_files(folder: Path) -> list[str]:
    suffixes = (".safetensors", ".bin", ".pt", ".pth", ".pkl", ".ckpt")
    return sorted(p.name for p in folder.iterdir() if p.suffix in suffixes)


def _image(path: Path) -> Path:
    import numpy as np
    from PIL import Image

    Image.fromarray((np.random.default_rng(0).random((32, 32, 3)) * 255).astype("uint8")).save(path)
    return path


def test_hf_clip_saved_model_loads_back_with_the_standard_api(tmp_path, monkeypatch, no_pickle):
    from transformers import CLIPModel

    from hf_infonc.testing import minilm_tokenizer, tiny_clip

    out = tmp_path / "clip"
    model = tiny_clip()
    model.save_pretrained(out)
    tokenizer = minilm_tokenizer()
    tokenizer.save_pretrained(out)
    assert _weight_files(out) == ["model.safetensors"]
    pixels = torch.randn(2, 3, 32, 32)
    text = tokenizer(["a photo of a cat.", "a photo of a dog."], return_tensors="pt", padding=True)
    no_pickle()
    loaded = CLIPModel.from_pretrained(out, use_safetensors=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.get_image_features(pixel_values=pixels), model.get_image_features(pixel_values=pixels))
        torch.testing.assert_close(
            loaded.get_text_features(input_ids=text.input_ids, attention_mask=text.attention_mask),
            model.get_text_features(input_ids=text.input_ids, attention_mask=text.attention_mask),
        )
    # the card's own snippet runs against the saved folder
    recipe = _recipe(out, {"family": "hf-clip", "config": {}, "tokenizer": "sentence-transformers/all-MiniLM-L6-v2"},
                     "cifar10")  # fmt: skip
    card = ModelCard.load(write_model_card(out, recipe, _results(CIFAR10)))
    (snippet,) = _code_blocks(card.text, "python")
    monkeypatch.chdir(tmp_path)
    _image(tmp_path / "image.png")
    namespace: dict = {}
    exec(compile(snippet, "card-snippet", "exec"), namespace)
    assert namespace["probs"].shape == (1, 10)


def test_text_classifier_loads_back_and_card_snippet_runs(tmp_path, monkeypatch, no_pickle):
    from transformers import AutoModelForSequenceClassification

    from hf_infonc.testing import minilm_tokenizer, tiny_bert_classifier

    out = tmp_path / "bert"
    model = tiny_bert_classifier(2).eval()
    model.config.id2label, model.config.label2id = {0: "other", 1: "great"}, {"other": 0, "great": 1}
    model.save_pretrained(out)
    tokenizer = minilm_tokenizer()
    tokenizer.save_pretrained(out)
    assert _weight_files(out) == ["model.safetensors"]
    batch = tokenizer(["good food", "bad service, cold soup"], return_tensors="pt", padding=True)
    no_pickle()
    loaded = AutoModelForSequenceClassification.from_pretrained(out, use_safetensors=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits)
    assert loaded.config.id2label == {0: "other", 1: "great"}
    recipe = _recipe(out, {"family": "sequence-classification", "config": {"model_type": "bert"},
                           "tokenizer": "sentence-transformers/all-MiniLM-L6-v2"}, "amazon_reviews")  # fmt: skip
    card = ModelCard.load(write_model_card(out, recipe, _results(["other", "great"])))
    (snippet,) = _code_blocks(card.text, "python")
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet, "card-snippet", "exec"), {})


def test_lora_adapter_loads_back_with_peft(tmp_path, no_pickle):
    from peft import PeftModel

    from hf_infonc.modes import apply_training_mode
    from hf_infonc.testing import minilm_tokenizer, tiny_bert_classifier

    out = tmp_path / "lora"
    peft_model = apply_training_mode(tiny_bert_classifier(2, seed=0), "lora")
    torch.manual_seed(1)
    with torch.no_grad():  # LoRA B starts at 0; move it so the adapter changes the outputs
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                parameter.add_(0.1 * torch.randn_like(parameter))
    peft_model.eval()
    peft_model.save_pretrained(out)
    # the base was built from a config (no Hub id): it is saved beside the adapter (hf_infonc.modes)
    assert _weight_files(out) == ["adapter_model.safetensors", "base_model.safetensors"]
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == str(out.resolve())
    batch = minilm_tokenizer()(["good food", "bad service"], return_tensors="pt", padding=True)
    base = tiny_bert_classifier(2, seed=0).eval()
    with torch.no_grad():
        base_logits = base(**batch).logits.clone()
    no_pickle()
    loaded = PeftModel.from_pretrained(base, out).eval()
    with torch.no_grad():
        expected = peft_model(**batch).logits
        torch.testing.assert_close(loaded(**batch).logits, expected)
        assert not torch.allclose(expected, base_logits)  # the adapter does something
        merged = loaded.merge_and_unload()
        torch.testing.assert_close(merged(**batch).logits, expected, rtol=1e-4, atol=1e-5)
