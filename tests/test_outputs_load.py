"""Saved runs load in each family's own client, from the output folder and from a pushed repo.

Each model is built the way ``hf-infonc finetune`` builds it (:func:`hf_infonc.factory.build_model`,
:func:`hf_infonc.modes.apply_training_mode`, tiny configs) and saved the way a run saves it
(``InfoNCTrainer.save_model``); the saved folder is then loaded with the family's own library only:

* HF CLIP: ``transformers.pipeline("zero-shot-image-classification", model=folder)``;
* classifiers: ``pipeline("text-classification" / "image-classification", model=folder)``, whose
  labels must be the class names;
* open_clip: ``open_clip.create_model_and_transforms("local-dir:…" / "hf-hub:…")`` and its tokenizer;
* LoRA: ``peft.AutoPeftModel*.from_pretrained(folder)``, which must find the base by itself
  (a Hub id, or the base saved with the run when it has none).

Outputs must equal the saved model's own (probabilities, logits, features to 1e-5). "From a pushed
repo": ``push_output_dir`` runs with ``HfApi.create_repo`` / ``HfApi.upload_folder`` patched on the
class; the uploaded files are laid out as a Hub cache and a fresh process loads them by repo id
with ``HF_HUB_OFFLINE=1``. Hub ids used as bases (all-MiniLM-L6-v2, a tiny ViT, a tiny open_clip
repo) are served from a temporary Hub cache in the same way.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from huggingface_hub import HfApi, ModelCard, constants

from hf_infonc.card import InfoNCCardData, write_model_card
from hf_infonc.hub import push_output_dir
from hf_infonc.factory import build_model
from hf_infonc.modes import LoraSettings, apply_training_mode
from hf_infonc.recipe import ModelRecipe, recipe_from_dict
from hf_infonc.testing import minilm_path

TESTS = Path(__file__).resolve().parent
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
TEXT_NAMES = ["negative", "neutral", "positive"]
IMAGE_NAMES = ["circle", "square", "triangle"]
TEXTS = ["the soup was cold and the service slow", "a fine meal and friendly staff", "ok"]
HYPOTHESIS = "a drawing of a {}."
TINY_CLIP = {
    "text_config": {"vocab_size": 30522, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                    "num_attention_heads": 2, "max_position_embeddings": 32, "pad_token_id": 0, "bos_token_id": 101,
                    "eos_token_id": 102},
    "vision_config": {"image_size": 16, "patch_size": 8, "hidden_size": 32, "intermediate_size": 64,
                      "num_hidden_layers": 1, "num_attention_heads": 2},
    "projection_dim": 16,
}  # fmt: skip
TINY_BERT = {"model_type": "bert", "vocab_size": 30522, "hidden_size": 32, "intermediate_size": 64,
             "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 64}  # fmt: skip
TINY_VIT = {"model_type": "vit", "image_size": 16, "patch_size": 8, "hidden_size": 32, "num_hidden_layers": 1,
            "num_attention_heads": 2, "intermediate_size": 64}  # fmt: skip
TINY_WRN = {"model_type": "wide_resnet", "depth": 10, "widen_factor": 1, "image_size": 16}
TINY_VIT_REPO = "hf-infonc-test/tiny-vit-10-classes"
TINY_CLIP_REPO = "hf-infonc-test/tiny-clip"
TINY_OPEN_CLIP_REPO = "hf-infonc-test/tiny-open-clip"


# ---------------------------------------------------------------------------- the Hub, offline


def add_to_hub_cache(hub_cache: Path, repo_id: str, files: dict[str, Path]) -> Path:
    """Lay ``files`` (name in repo -> file) out as the Hub cache holds a downloaded repo.

    A repo without ``config.json`` (a LoRA adapter on a Hub base) gets the marker that
    huggingface_hub leaves when the Hub answers 404 for it (``.no_exist/<commit>/config.json``):
    ``AutoTokenizer`` asks for the file, and offline only that marker tells "absent" from "not downloaded".
    """
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    root = hub_cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = root / "snapshots" / commit
    if snapshot.exists():
        shutil.rmtree(snapshot)
    snapshot.mkdir(parents=True)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    if "config.json" not in files:
        (root / ".no_exist" / commit).mkdir(parents=True, exist_ok=True)
        (root / ".no_exist" / commit / "config.json").touch()
    for name, source in files.items():
        target = snapshot / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    return snapshot


def folder_files(folder: Path) -> dict[str, Path]:
    return {p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def hub_home(tmp_path_factory):
    """A temporary ``HF_HOME`` whose Hub cache holds the base models the cases load by Hub id."""
    from hf_infonc.models import tiny_open_clip
    from hf_infonc.testing import tiny_vit_classifier

    home = tmp_path_factory.mktemp("hf_home")
    hub_cache = home / "hub"
    hub_cache.mkdir()
    patch = pytest.MonkeyPatch()
    patch.setattr(constants, "HF_HUB_CACHE", str(hub_cache))
    add_to_hub_cache(hub_cache, MINILM, folder_files(Path(minilm_path())))
    source = home / "sources"
    vit = tiny_vit_classifier(10, image_size=16)
    vit.save_pretrained(source / "vit")
    from transformers import ViTImageProcessor

    ViTImageProcessor(size={"height": 16, "width": 16}).save_pretrained(source / "vit")
    add_to_hub_cache(hub_cache, TINY_VIT_REPO, folder_files(source / "vit"))
    torch.manual_seed(0)
    clip = build_model(ModelRecipe(family="hf-clip", config=TINY_CLIP, tokenizer=MINILM), IMAGE_NAMES)
    clip.model.save_pretrained(source / "clip")
    clip.processing_class.save_pretrained(source / "clip")
    add_to_hub_cache(hub_cache, TINY_CLIP_REPO, folder_files(source / "clip"))
    tiny_open_clip().save_open_clip_checkpoint(source / "open_clip")
    add_to_hub_cache(hub_cache, TINY_OPEN_CLIP_REPO, folder_files(source / "open_clip"))
    yield home
    patch.undo()


# ---------------------------------------------------------------------------- inputs


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Two PNG images, fixed pixel values and token ids; files, so that a fresh process reads the same."""
    from PIL import Image
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray((rng.random((20, 24, 3)) * 255).astype("uint8")).save(folder / f"image{i}.png")
    generator = torch.Generator().manual_seed(0)
    save_file({"pixels16": torch.randn(2, 3, 16, 16, generator=generator),
               "pixels32": torch.randn(2, 3, 32, 32, generator=generator)}, str(folder / "tensors.safetensors"))  # fmt: skip
    return folder


def _images(folder: Path) -> list[str]:
    return [str(folder / f"image{i}.png") for i in range(2)]


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "tensors.safetensors"))


# ---------------------------------------------------------------------------- the families' own clients

_HF_INFONC_FOR_AUTO_PEFT = ["transformers", "hf_infonc"]


def _label_kwargs(names: list[str]) -> dict[str, Any]:
    return {"num_labels": len(names), "id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}


def client_outputs(kind: str, ref: str, names: list[str], inputs_dir: str | Path) -> dict[str, Any]:
    """What the family's own client gives for ``ref`` (a folder or a repo id); plain lists, JSON-able.

    Runs in the test process (folders) and in a fresh process (pushed repos, by id).
    """
    import transformers as tf

    inputs_dir = Path(inputs_dir)
    images = _images(inputs_dir)
    with torch.no_grad():
        if kind == "zero-shot":
            classify = tf.pipeline("zero-shot-image-classification", model=ref)
            return {"scores": [{r["label"]: r["score"] for r in classify(image, candidate_labels=names,
                                                                       hypothesis_template=HYPOTHESIS)}
                               for image in images]}  # fmt: skip
        if kind == "text-classification":
            classify = tf.pipeline("text-classification", model=ref, top_k=None)
            return {"scores": [{r["label"]: r["score"] for r in result} for result in classify(TEXTS)]}
        if kind == "image-classification":
            import hf_infonc.models  # noqa: F401  (registers the wide_resnet model type with the Auto classes)

            classify = tf.pipeline("image-classification", model=ref, top_k=None)
            return {"scores": [{r["label"]: r["score"] for r in classify(image)} for image in images]}
        if kind == "open-clip":
            import open_clip
            from PIL import Image

            name = ref if ref.startswith("hf-hub:") else f"local-dir:{ref}"
            model, _, preprocess = open_clip.create_model_and_transforms(name)
            model.eval()
            tokenizer = open_clip.get_tokenizer(name)
            pixels = torch.stack([preprocess(Image.open(p)) for p in images])
            return {"image": model.encode_image(pixels).tolist(), "text": model.encode_text(tokenizer(TEXTS)).tolist()}
        if kind == "lora-text":
            model = load_lora(kind, ref, names)
            batch = tf.AutoTokenizer.from_pretrained(ref)(TEXTS, padding=True, return_tensors="pt")
            return {"logits": model(**batch).logits.tolist(), "labels": [model.config.id2label[i] for i in range(len(names))]}
        if kind == "lora-image":
            model = load_lora(kind, ref, names)
            return {"logits": model(pixel_values=_tensors(inputs_dir)["pixels16"]).logits.tolist()}
        if kind == "lora-clip":
            from PIL import Image

            model = load_lora(kind, ref, names)
            processor = tf.CLIPProcessor.from_pretrained(ref)
            batch = processor(text=[HYPOTHESIS.format(n) for n in names], images=[Image.open(p) for p in images],
                              return_tensors="pt", padding=True)  # fmt: skip
            return {"logits": model(**batch).logits_per_image.tolist()}
        if kind == "lora-open-clip":
            model = load_lora(kind, ref, names)
            ids = open_clip_ids()
            return {"image": model.get_image_features(_tensors(inputs_dir)["pixels32"]).tolist(),
                    "text": model.get_text_features(ids).tolist()}  # fmt: skip
    raise ValueError(f"unknown kind {kind!r}")


def saves_its_base(ref: str) -> bool:
    """Whether the adapter at ``ref`` names ``ref`` itself as its base (a base saved with the run)."""
    from peft import PeftConfig

    base = PeftConfig.from_pretrained(ref).base_model_name_or_path
    return base == ref or (Path(ref).is_dir() and Path(base).is_dir() and Path(base).samefile(ref))


def load_lora(kind: str, ref: str, names: list[str], *, with_peft: bool | None = None):
    """A LoRA output with its family's client: peft when the adapter names another base; ``transformers``
    (which loads the base and applies the adapter once) when the base is saved with it, unless ``with_peft``."""
    import transformers as tf
    from peft import AutoPeftModel, AutoPeftModelForSequenceClassification, PeftConfig, PeftModel

    if kind == "lora-open-clip":
        import hf_infonc.models  # noqa: F401  (registers OpenCLIPModel with AutoModel)
    if saves_its_base(ref) if with_peft is None else not with_peft:
        auto = {"lora-text": tf.AutoModelForSequenceClassification, "lora-image": tf.AutoModelForImageClassification,
                "lora-clip": tf.CLIPModel, "lora-open-clip": tf.AutoModel}[kind]  # fmt: skip
        return auto.from_pretrained(ref).eval()
    if kind == "lora-text":
        return AutoPeftModelForSequenceClassification.from_pretrained(ref, **_label_kwargs(names)).eval()
    if kind == "lora-image":
        return AutoPeftModel.from_pretrained(ref, **_label_kwargs(names), ignore_mismatched_sizes=True).eval()
    if kind == "lora-clip":  # AutoPeftModel calls CLIPModel.get_input_embeddings, which transformers 5 refuses
        base = tf.CLIPModel.from_pretrained(PeftConfig.from_pretrained(ref).base_model_name_or_path)
        return PeftModel.from_pretrained(base, ref).eval()
    return AutoPeftModel.from_pretrained(ref, import_allowlist=_HF_INFONC_FOR_AUTO_PEFT).eval()


def open_clip_ids() -> torch.Tensor:
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(context_length=32)(TEXTS)


# ---------------------------------------------------------------------------- saving as a run does


@dataclass
class Saved:
    folder: Path
    kind: str
    names: list[str]
    spec: dict[str, Any]
    """The recipe's ``model`` section."""
    expected: dict[str, Any] = field(default_factory=dict)
    model: Any = None


def save_like_a_run(model, folder: Path, built, names: list[str]) -> None:
    """``InfoNCTrainer.save_model``, as ``hf-infonc finetune`` calls it (weights and processing class)."""
    from hf_infonc import InfoNCTrainer, InfoNCTrainingArguments

    args = InfoNCTrainingArguments(output_dir=str(folder), report_to=[], use_cpu=True, save_strategy="no", disable_tqdm=True)
    trainer = InfoNCTrainer(model=model, args=args, processing_class=built.processing_class, class_names=names,
                            text_tokenizer=built.tokenizer)  # fmt: skip
    trainer.save_model(str(folder))
    model.eval()


def move_adapter(model, seed: int = 1) -> None:
    """LoRA B starts at 0 (the adapter is then the identity): move it and the trained head away from that."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                parameter.add_(0.3 * torch.randn(parameter.shape, generator=generator))


def expected_outputs(saved: Saved, built, inputs_dir: Path) -> dict[str, Any]:
    """The saved model's own outputs on the inputs that :func:`client_outputs` feeds its client."""
    from PIL import Image

    model, names, kind = saved.model, saved.names, saved.kind
    images = [Image.open(p) for p in _images(inputs_dir)]
    with torch.no_grad():
        if kind in ("zero-shot", "lora-clip"):
            processor = built.processing_class
            logits = [model(**processor(text=[HYPOTHESIS.format(n) for n in names], images=image, return_tensors="pt",
                                        padding=True)).logits_per_image[0] for image in images]  # fmt: skip
            if kind == "lora-clip":
                return {"logits": torch.stack(logits).tolist()}
            return {"scores": [dict(zip(names, row.softmax(-1).tolist())) for row in logits]}
        if kind in ("text-classification", "lora-text"):
            logits = model(**built.tokenizer(TEXTS, padding=True, return_tensors="pt")).logits
            if kind == "lora-text":
                return {"logits": logits.tolist(), "labels": names}
            return {"scores": [dict(zip(names, row.softmax(-1).tolist())) for row in logits]}
        if kind == "image-classification":
            logits = model(**built.processing_class(images=images, return_tensors="pt")).logits
            return {"scores": [dict(zip(names, row.softmax(-1).tolist())) for row in logits]}
        if kind == "lora-image":
            return {"logits": model(pixel_values=_tensors(inputs_dir)["pixels16"]).logits.tolist()}
        if kind == "open-clip":
            pixels = torch.stack([model.image_transform()(image.convert("RGB")) for image in images])
            text = model.get_text_features(built.tokenizer(TEXTS))
            return {"image": model.get_image_features(pixels).tolist(), "text": text.tolist()}
        if kind == "lora-open-clip":
            return {"image": model.get_image_features(_tensors(inputs_dir)["pixels32"]).tolist(),
                    "text": model.get_text_features(open_clip_ids()).tolist()}  # fmt: skip
    raise ValueError(kind)


def assert_same_outputs(got: dict[str, Any], expected: dict[str, Any], what: str) -> None:
    assert got.keys() == expected.keys(), what
    for key, value in expected.items():
        if key == "scores":  # one {label: probability} per input: the labels are the class names
            assert [sorted(row) for row in got[key]] == [sorted(row) for row in value], f"{what}: labels"
            for row_got, row_expected in zip(got[key], value):
                for label, probability in row_expected.items():
                    assert row_got[label] == pytest.approx(probability, abs=1e-5), f"{what}: {label}"
        elif key == "labels":
            assert got[key] == value, f"{what}: labels"
        else:
            torch.testing.assert_close(torch.tensor(got[key]), torch.tensor(value), atol=1e-5, rtol=1e-5, msg=what)


CASES: dict[str, tuple[str, dict[str, Any], list[str]]] = {
    # case: (kind, the recipe's model section, class names)
    "hf-clip": ("zero-shot", {"family": "hf-clip", "config": TINY_CLIP, "tokenizer": MINILM}, IMAGE_NAMES),
    "text": ("text-classification", {"family": "sequence-classification", "config": TINY_BERT, "tokenizer": MINILM},
             TEXT_NAMES),
    "vit": ("image-classification", {"family": "image-classification", "config": TINY_VIT}, IMAGE_NAMES),
    "wide-resnet": ("image-classification", {"family": "image-classification", "config": TINY_WRN}, IMAGE_NAMES),
    "vit-hub": ("image-classification", {"family": "image-classification", "name_or_path": TINY_VIT_REPO}, IMAGE_NAMES),
    "open-clip": ("open-clip", {"family": "open-clip", "config": "tiny"}, IMAGE_NAMES),
    "lora-text": ("lora-text", {"family": "sequence-classification", "config": TINY_BERT, "tokenizer": MINILM,
                                "training_mode": "lora"}, TEXT_NAMES),
    "lora-text-hub": ("lora-text", {"family": "sequence-classification", "name_or_path": MINILM,
                                    "training_mode": "lora"}, TEXT_NAMES),
    "lora-clip": ("lora-clip", {"family": "hf-clip", "config": TINY_CLIP, "tokenizer": MINILM, "training_mode": "lora"},
                  IMAGE_NAMES),
    "lora-clip-hub": ("lora-clip", {"family": "hf-clip", "name_or_path": TINY_CLIP_REPO, "training_mode": "lora"},
                      IMAGE_NAMES),
    "lora-vit": ("lora-image", {"family": "image-classification", "config": TINY_VIT, "training_mode": "lora"},
                 IMAGE_NAMES),
    "lora-vit-hub": ("lora-image", {"family": "image-classification", "name_or_path": TINY_VIT_REPO,
                                    "training_mode": "lora"}, IMAGE_NAMES),
    "lora-open-clip": ("lora-open-clip", {"family": "open-clip", "config": "tiny", "training_mode": "lora"}, IMAGE_NAMES),
    "lora-open-clip-hub": ("lora-open-clip", {"family": "open-clip", "name_or_path": f"hf-hub:{TINY_OPEN_CLIP_REPO}",
                                              "training_mode": "lora"}, IMAGE_NAMES),
}  # fmt: skip


def _model_spec(spec: dict[str, Any]) -> ModelRecipe:
    from hf_infonc.models import tiny_open_clip_cfg

    values = dict(spec)
    if values.get("config") == "tiny":
        values["config"] = tiny_open_clip_cfg()
    return ModelRecipe(**values)


def build_and_save(case: str, root: Path, inputs_dir: Path) -> Saved:
    kind, spec, names = CASES[case]
    model_spec = _model_spec(spec)
    torch.manual_seed(0)
    built = build_model(model_spec, names)
    model = built.model
    if model_spec.training_mode == "lora":
        model = apply_training_mode(model, "lora", lora=LoraSettings(r=4, alpha=8))
        move_adapter(model)
    recipe_spec = {**spec, "config": model_spec.config} if "config" in spec else spec
    saved = Saved(root / case, kind, names, recipe_spec, model=model)
    save_like_a_run(model, saved.folder, built, names)
    saved.expected = expected_outputs(saved, built, inputs_dir)
    return saved


@pytest.fixture(scope="module")
def saved_runs(hub_home, inputs, tmp_path_factory) -> dict[str, Saved]:
    root = tmp_path_factory.mktemp("runs")
    return {case: build_and_save(case, root, inputs) for case in CASES}


# ---------------------------------------------------------------------------- from the output folder


@pytest.mark.parametrize("case", list(CASES))
def test_output_folder_loads_in_the_family_client(saved_runs, inputs, case):
    saved = saved_runs[case]
    got = client_outputs(saved.kind, str(saved.folder), saved.names, inputs)
    assert_same_outputs(got, saved.expected, f"{case} from {saved.folder}")


def test_what_each_output_folder_holds(saved_runs):
    files = {case: {p.name for p in saved.folder.iterdir()} for case, saved in saved_runs.items()}
    # HF CLIP: the processor (tokenizer + image processor) beside the model
    assert {"config.json", "model.safetensors", "processor_config.json", "tokenizer.json"} <= files["hf-clip"]
    # classifiers: the class names are the labels, however the model was built
    for case in ("text", "vit", "wide-resnet", "vit-hub"):
        config = json.loads((saved_runs[case].folder / "config.json").read_text())
        assert config["id2label"] == {str(i): n for i, n in enumerate(saved_runs[case].names)}, case
    # open_clip: open_clip's layout beside the wrapper, the weights stored once
    folder = saved_runs["open-clip"].folder
    assert {"open_clip_config.json", "open_clip_model.safetensors", "open_clip_tokenizer.json"} <= files["open-clip"]
    assert (folder / "open_clip_model.safetensors").samefile(folder / "model.safetensors")
    # LoRA: a Hub base is named by its Hub id (not the local pip copy it was read from) and not saved
    references = {case: json.loads((saved_runs[case].folder / "adapter_config.json").read_text())["base_model_name_or_path"]
                  for case in CASES if case.startswith("lora")}  # fmt: skip
    assert references["lora-text-hub"] == MINILM and "base_model.safetensors" not in files["lora-text-hub"]
    assert references["lora-clip-hub"] == TINY_CLIP_REPO and references["lora-vit-hub"] == TINY_VIT_REPO
    assert references["lora-open-clip-hub"] == f"hf-hub:{TINY_OPEN_CLIP_REPO}"
    assert "config.json" not in files["lora-open-clip-hub"]
    # … a base with no Hub id (built from a config) is saved with the run and named by the folder
    for case in ("lora-text", "lora-clip", "lora-vit", "lora-open-clip"):
        folder = saved_runs[case].folder
        assert references[case] == str(folder.resolve()), case
        assert {"config.json", "base_model.safetensors", "adapter_model.safetensors"} <= files[case], case
        assert "model.safetensors" not in files[case], f"{case}: Trainer would load it into the peft model on resume"
        assert json.loads((folder / "config.json").read_text())["transformers_weights"] == "base_model.safetensors"
    assert "open_clip_config.json" not in files["lora-open-clip"]  # the untrained base is not offered to open_clip


@pytest.mark.parametrize("case", ["lora-text", "lora-clip", "lora-open-clip"])
def test_saved_base_is_the_untrained_base(saved_runs, case):
    """The base saved beside an adapter is the base's own state dict, exactly: no LoRA tensor, no wrapper name."""
    from safetensors.torch import load_file

    torch.manual_seed(0)
    fresh = build_model(_model_spec(CASES[case][1]), saved_runs[case].names).model
    saved = load_file(str(saved_runs[case].folder / "base_model.safetensors"))
    expected = fresh.state_dict()
    if case == "lora-open-clip":  # OpenCLIPModel saves open_clip's own keys
        expected = {key.removeprefix("clip."): value for key, value in expected.items()}
    assert saved.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(saved[key], value), key


def test_pipelines_load_lora_folders_with_a_saved_base(saved_runs, inputs):
    """transformers loads a folder holding a base and an adapter as one model: the pipelines work on it."""
    import transformers as tf

    text = saved_runs["lora-text"]
    result = tf.pipeline("text-classification", model=str(text.folder), top_k=None)(TEXTS)
    expected = torch.tensor(text.expected["logits"]).softmax(-1)
    for row, probabilities in zip(result, expected):
        assert {r["label"]: r["score"] for r in row} == pytest.approx(dict(zip(TEXT_NAMES, probabilities.tolist())), abs=1e-5)
    clip = saved_runs["lora-clip"]
    zero_shot = tf.pipeline("zero-shot-image-classification", model=str(clip.folder))
    scores = zero_shot(_images(inputs)[0], candidate_labels=IMAGE_NAMES, hypothesis_template=HYPOTHESIS)
    expected = torch.tensor(clip.expected["logits"][0]).softmax(-1)
    assert {r["label"]: r["score"] for r in scores} == pytest.approx(dict(zip(IMAGE_NAMES, expected.tolist())), abs=1e-5)


@pytest.mark.parametrize("case", ["lora-text", "lora-vit", "lora-open-clip"])
def test_auto_peft_model_finds_a_saved_base(saved_runs, inputs, case):
    """peft's own loader finds a base saved with the run (it applies the adapter over transformers', same outputs)."""
    saved = saved_runs[case]
    model = load_lora(saved.kind, str(saved.folder), saved.names, with_peft=True)
    assert type(model).__module__.startswith("peft")
    with torch.no_grad():
        if saved.kind == "lora-text":
            batch = build_model(_model_spec(CASES[case][1]), saved.names).tokenizer(TEXTS, padding=True, return_tensors="pt")
            got = model(**batch).logits
        elif saved.kind == "lora-image":
            got = model(pixel_values=_tensors(inputs)["pixels16"]).logits
        else:
            got = model.get_text_features(open_clip_ids())
    expected = saved.expected["text"] if saved.kind == "lora-open-clip" else saved.expected["logits"]
    torch.testing.assert_close(got, torch.tensor(expected), atol=1e-5, rtol=1e-5)


def test_resuming_a_lora_checkpoint_restores_the_adapter(saved_runs):
    """The base beside the adapter is not ``model.safetensors``: ``Trainer`` resumes through the adapter."""
    from hf_infonc import InfoNCTrainer, InfoNCTrainingArguments

    saved = saved_runs["lora-text"]
    torch.manual_seed(0)
    built = build_model(_model_spec(CASES["lora-text"][1]), TEXT_NAMES)
    fresh = apply_training_mode(built.model, "lora", lora=LoraSettings(r=4, alpha=8))
    args = InfoNCTrainingArguments(
        output_dir=str(saved.folder.parent / "resume"), report_to=[], use_cpu=True, save_strategy="no"
    )
    trainer = InfoNCTrainer(model=fresh, args=args, processing_class=built.tokenizer, class_names=TEXT_NAMES)
    batch = built.tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        assert not torch.allclose(fresh.eval()(**batch).logits, torch.tensor(saved.expected["logits"]), atol=1e-3)
        trainer._load_from_checkpoint(str(saved.folder))  # what train(resume_from_checkpoint=…) does first
        torch.testing.assert_close(fresh.eval()(**batch).logits, torch.tensor(saved.expected["logits"]), atol=1e-5, rtol=1e-5)


def test_open_clip_save_round_trip_and_trainer_loading(saved_runs):
    """The wrapper still loads its folder (causal mask rebuilt), and ``load_state_dict`` takes open_clip's keys."""
    from safetensors.torch import load_file

    from hf_infonc import InfoNCTrainer, InfoNCTrainingArguments
    from hf_infonc.models import OpenCLIPModel, is_causal_mask, tiny_open_clip

    saved = saved_runs["open-clip"]
    loaded = OpenCLIPModel.from_pretrained(saved.folder).eval()
    masks = [m.attn_mask for m in loaded.clip.modules() if isinstance(getattr(m, "attn_mask", None), torch.Tensor)]
    assert masks and all(is_causal_mask(mask) for mask in masks)
    assert not any(key.startswith("clip.") for key in load_file(str(saved.folder / "model.safetensors")))  # open_clip's
    other = tiny_open_clip(seed=7)
    args = InfoNCTrainingArguments(output_dir=str(saved.folder.parent / "resume-oc"), report_to=[], use_cpu=True)
    trainer = InfoNCTrainer(model=other, args=args, processing_class=other.get_tokenizer(), class_names=IMAGE_NAMES)
    trainer._load_from_checkpoint(str(saved.folder))  # resume / best model: model.load_state_dict(open_clip's keys)
    ids, pixels = open_clip_ids(), torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for model in (loaded, other):
            torch.testing.assert_close(model.get_text_features(ids), saved.model.get_text_features(ids))
            torch.testing.assert_close(model.get_image_features(pixels), saved.model.get_image_features(pixels))


# ---------------------------------------------------------------------------- cards


def _recipe(saved: Saved):
    source = "amazon_reviews" if saved.names == TEXT_NAMES else "digits"
    return recipe_from_dict({"model": saved.spec, "data": {"source": source}, "training": {"output_dir": str(saved.folder)},
                             "seed": 0})  # fmt: skip


def _results(names: list[str]) -> dict[str, Any]:
    metrics = {"accuracy": 0.5, "mir": 0.9, "hdr": 0.2}
    return {"class_names": names, "seed": 0, "before": metrics, "after": metrics, "wall_time_s": 1.0, "num_processes": 1}


LIBRARIES = {
    "hf-clip": ("transformers", None), "text": ("transformers", None), "vit": ("transformers", None),
    "wide-resnet": ("transformers", "WideResNetForImageClassification"), "vit-hub": ("transformers", None),
    "open-clip": ("open_clip", None), "lora-text": ("peft", None), "lora-text-hub": ("peft", None),
    "lora-clip": ("peft", None), "lora-clip-hub": ("peft", None), "lora-vit": ("peft", None),
    "lora-vit-hub": ("peft", None), "lora-open-clip": ("peft", "OpenCLIPModel"),
    "lora-open-clip-hub": ("peft", "OpenCLIPModel"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_card_names_a_library_that_loads_the_files(saved_runs, case):
    saved = saved_runs[case]
    data = InfoNCCardData.from_run(saved.folder, _recipe(saved), _results(saved.names))
    assert (data.library_name, data.hf_infonc_wrapper) == LIBRARIES[case]


def test_card_library_for_heads_and_folders_without_open_clip_layout(tmp_path):
    def card(model: dict, files: list[str]) -> InfoNCCardData:
        out = tmp_path / str(len(list(tmp_path.iterdir())))
        out.mkdir()
        for name in files:
            (out / name).write_text("{}")
        recipe = recipe_from_dict({"model": model, "data": {"source": "digits"}, "training": {"output_dir": str(out)}})
        return InfoNCCardData.from_run(out, recipe, _results(IMAGE_NAMES))

    clip = {"family": "hf-clip", "name_or_path": "openai/clip-vit-base-patch32"}
    for mode, wrapper in (("coop", "CoOpCLIP"), ("linear_probe", "CLIPLinearProbe")):
        data = card({**clip, "training_mode": mode}, ["config.json", "model.safetensors"])
        assert (data.library_name, data.hf_infonc_wrapper, data.load_kind) == ("hf_infonc", wrapper, mode)
    # an open_clip folder saved without open_clip's layout loads only through hf_infonc's wrapper
    data = card({"family": "open-clip", "config": {"embed_dim": 16, "vision_cfg": {}, "text_cfg": {}}}, ["config.json"])
    assert (data.library_name, data.hf_infonc_wrapper) == ("hf_infonc", "OpenCLIPModel")


def _python_blocks(text: str) -> list[str]:
    import re

    return re.findall(r"```python\n(.*?)\n```", text, flags=re.S)


@pytest.mark.parametrize("case", ["hf-clip", "lora-text", "lora-text-hub"])
def test_card_load_snippet_runs_on_the_output_folder(saved_runs, inputs, case, monkeypatch):
    saved = saved_runs[case]
    card = ModelCard.load(write_model_card(saved.folder, _recipe(saved), _results(saved.names)))
    snippet = _python_blocks(card.text.split("## How to load")[1])[0]
    monkeypatch.chdir(saved.folder.parent)
    shutil.copyfile(_images(inputs)[0], saved.folder.parent / "image.png")
    namespace: dict[str, Any] = {}
    exec(compile(snippet, f"card-snippet-{case}", "exec"), namespace)
    if case == "hf-clip":
        assert namespace["probs"].shape == (1, len(IMAGE_NAMES))
        assert namespace["classifier"].task == "zero-shot-image-classification"
    elif case == "lora-text":  # the base is saved with the run: transformers' pipeline loads base and adapter
        assert namespace["classifier"](TEXTS[0])[0]["label"] in TEXT_NAMES
    else:  # a Hub base: peft
        assert namespace["model"].config.id2label == dict(enumerate(TEXT_NAMES))
        assert type(namespace["merged"]).__name__ == "BertForSequenceClassification"


# ---------------------------------------------------------------------------- from a pushed repo

PUSHED = ["hf-clip", "text", "wide-resnet", "open-clip", "lora-text", "lora-text-hub", "lora-open-clip"]


def test_pushed_repos_load_by_id_in_a_fresh_process(saved_runs, inputs, hub_home, monkeypatch, tmp_path):
    """``push_output_dir`` uploads what loads: the uploaded files, as a Hub cache, load by repo id offline."""
    from huggingface_hub.utils import filter_repo_objects

    try:
        from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS
    except ImportError:  # pragma: no cover
        DEFAULT_IGNORE_PATTERNS = [".git", ".git/*", "*/.git", "**/.git/**"]
    uploaded: dict[str, dict[str, Path]] = {}

    def create_repo(self, repo_id, **kwargs):
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, *, repo_id, folder_path, allow_patterns=None, ignore_patterns=None, **kwargs):
        files = folder_files(Path(folder_path))
        kept = list(filter_repo_objects(sorted(files), allow_patterns=allow_patterns,
                                        ignore_patterns=list(ignore_patterns or []) + list(DEFAULT_IGNORE_PATTERNS)))  # fmt: skip
        # the staged folder may be gone after the call: keep a copy of the file set
        copy = tmp_path / "uploads" / repo_id
        uploaded[repo_id] = {name: copy / name for name in kept}
        for name in kept:
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(files[name], copy / name)

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", "hf_" + "x" * 34)
    jobs = []
    for case in PUSHED:
        saved = saved_runs[case]
        write_model_card(saved.folder, _recipe(saved), _results(saved.names))
        adapter_before = (saved.folder / "adapter_config.json").read_text() if case.startswith("lora") else None
        repo_id = f"someone/{case}"
        push_output_dir(saved.folder, repo_id=repo_id, update_card=False)
        if adapter_before is not None:  # the output folder keeps its local reference; the repo names itself
            assert (saved.folder / "adapter_config.json").read_text() == adapter_before
            pushed = json.loads(uploaded[repo_id]["adapter_config.json"].read_text())["base_model_name_or_path"]
            local = json.loads(adapter_before)["base_model_name_or_path"]
            assert pushed == (repo_id if local == str(saved.folder.resolve()) else local) == (
                repo_id if case == "lora-text" or case == "lora-open-clip" else MINILM
            )
        add_to_hub_cache(hub_home / "hub", repo_id, uploaded[repo_id])
        ref = f"hf-hub:{repo_id}" if saved.kind == "open-clip" else repo_id
        jobs.append({"case": case, "kind": saved.kind, "ref": ref, "names": saved.names})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    script = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(TESTS)!r})\n"
        "from test_outputs_load import client_outputs\n"
        "jobs = json.loads(sys.argv[1])\n"
        "results = {j['case']: client_outputs(j['kind'], j['ref'], j['names'], sys.argv[2]) for j in jobs}\n"
        "print('RESULTS ' + json.dumps(results))\n"
    )
    env = {**os.environ, "HF_HOME": str(hub_home), "HF_HUB_CACHE": str(hub_home / "hub"), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "HF_TOKEN": ""}  # fmt: skip
    done = subprocess.run([sys.executable, "-c", script, json.dumps(jobs), str(inputs)], env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("RESULTS ")]
    results = json.loads(line[len("RESULTS ") :])
    for case in PUSHED:
        assert_same_outputs(results[case], saved_runs[case].expected, f"{case} pushed as someone/{case}")


# ---------------------------------------------------------------------------- a real run


RUN_MODELS = {
    "clip-lora": ({**CASES["lora-clip"][1]}, 16),
    "open-clip": ({"family": "open-clip", "config": "tiny"}, 32),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(RUN_MODELS))
def test_finetune_run_outputs_load(tmp_path, inputs, case):
    """``hf-infonc finetune`` (2 steps) writes a folder that the family's client loads, with the class names."""
    import transformers as tf
    import yaml

    from hf_infonc.cli import main
    from hf_infonc.models import OpenCLIPModel

    model, image_size = RUN_MODELS[case]
    out = tmp_path / "run"
    raw = {
        "model": {**model, "config": _model_spec(model).config},
        "data": {"source": "digits", "max_train_samples": 16, "max_eval_samples": 16, "image_size": image_size},
        "training": {"output_dir": str(out), "max_steps": 2, "per_device_train_batch_size": 8,
                     "per_device_eval_batch_size": 16, "use_cpu": True, "report_to": [], "disable_tqdm": True,
                     "save_strategy": "no", "cma_weight": 0.3},
        "seed": 0,
    }  # fmt: skip
    recipe = tmp_path / f"{case}.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    assert main(["finetune", str(recipe)]) == 0
    card = ModelCard.load(out / "README.md")
    digits = json.loads((out / "metrics.json").read_text())["class_names"]
    if case == "clip-lora":
        assert card.data.library_name == "peft"
        assert len(client_outputs("lora-clip", str(out), digits, inputs)["logits"]) == 2
        zero_shot = tf.pipeline("zero-shot-image-classification", model=str(out))
        assert sorted(r["label"] for r in zero_shot(_images(inputs)[0], candidate_labels=digits)) == sorted(digits)
        return
    assert card.data.library_name == "open_clip"
    got = client_outputs("open-clip", str(out), digits, inputs)
    import open_clip

    wrapper = OpenCLIPModel.from_pretrained(out).eval()
    with torch.no_grad():
        text = wrapper.get_text_features(open_clip.get_tokenizer(f"local-dir:{out}")(TEXTS))
    torch.testing.assert_close(torch.tensor(got["text"]), text, atol=1e-5, rtol=1e-5)
