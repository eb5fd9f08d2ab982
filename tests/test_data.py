"""The data layer: offline sources, splits, few-shot sampling, Hub errors, local files, config."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from datasets import ClassLabel, Image
from PIL import Image as PILImage

from hf_infonc.data import (
    DataConfig,
    DatasetUnavailableError,
    build_datasets,
    class_counts,
    class_names,
    get_source,
    label_array,
    load_source,
    resolve_hflip,
    sample_few_shot,
    subsample,
)
from hf_infonc.data.prompts import AMAZON_REVIEWS_CLASSNAMES, FASHION_MNIST_CLASSNAMES
from hf_infonc.data.sources import FASHION_MNIST_DIR

DIGIT_NAMES = [str(i) for i in range(10)]
FASHION_INSTALLED = all(
    (Path(FASHION_MNIST_DIR) / f"{p}-{k}-idx{d}-ubyte.gz").is_file()
    for p in ("train", "t10k")
    for k, d in (("images", 3), ("labels", 1))
)


def _check_image_split(ds, size: tuple[int, int], num_classes: int) -> None:
    assert isinstance(ds.features["image"], Image) and ds.features["image"].mode == "RGB"
    assert isinstance(ds.features["label"], ClassLabel)
    for i in (0, len(ds) // 2, len(ds) - 1):
        row = ds[i]
        assert isinstance(row["image"], PILImage.Image)
        assert row["image"].mode == "RGB" and row["image"].size == size
        assert 0 <= row["label"] < num_classes
    labels = label_array(ds)
    assert labels.min() >= 0 and labels.max() < num_classes


# ------------------------------------------------------------------------------ offline sources


@pytest.fixture(scope="module")
def digits():
    return build_datasets(DataConfig(source="digits"))


def test_digits_source(digits):
    assert list(digits) == ["train", "test"]
    assert len(digits["train"]) + len(digits["test"]) == 1797
    assert (len(digits["train"]), len(digits["test"])) == (1437, 360)
    assert class_names(digits) == DIGIT_NAMES
    _check_image_split(digits["train"], (8, 8), 10)
    # The real 1,797 digits: scikit-learn's class counts, split 80/20 per class.
    total = {k: class_counts(digits["train"])[k] + class_counts(digits["test"])[k] for k in DIGIT_NAMES}
    assert list(total.values()) == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    assert all(35 <= n <= 37 for n in class_counts(digits["test"]).values())
    # Grey-scale pixels 0..16 scaled to 0..255, replicated into the three channels.
    pixels = np.asarray(digits["train"][0]["image"])
    assert pixels.shape == (8, 8, 3) and pixels.max() > 200 and pixels.min() == 0
    assert (pixels[..., 0] == pixels[..., 2]).all()
    assert resolve_hflip(DataConfig(source="digits")) is False


def test_source_split_is_fixed_across_seeds(digits):
    other = build_datasets(DataConfig(source="digits", seed=5))
    assert np.array_equal(label_array(other["test"]), label_array(digits["test"]))
    assert other["test"][7]["image"].tobytes() == digits["test"][7]["image"].tobytes()


def test_mnist5k_source():
    dd = build_datasets(DataConfig(source="mnist5k"))
    assert (len(dd["train"]), len(dd["test"])) == (4000, 1000)
    assert class_names(dd) == DIGIT_NAMES
    assert set(class_counts(dd["train"]).values()) == {400}
    assert set(class_counts(dd["test"]).values()) == {100}
    _check_image_split(dd["test"], (28, 28), 10)
    pixels = np.asarray(dd["test"][0]["image"])[..., 0]
    assert pixels.max() == 255 and (pixels == 0).mean() > 0.5  # white digit strokes on black
    assert resolve_hflip(DataConfig(source="mnist5k")) is False


@pytest.mark.skipif(not FASHION_INSTALLED, reason=f"Fashion-MNIST not in {FASHION_MNIST_DIR}: apt-get install -y dataset-fashion-mnist")
def test_fashion_mnist_source():
    dd = build_datasets(DataConfig(source="fashion_mnist"))
    assert (len(dd["train"]), len(dd["test"])) == (60000, 10000)
    assert class_names(dd) == FASHION_MNIST_CLASSNAMES
    assert class_names(dd)[0] == "T-shirt/top" and class_names(dd)[9] == "Ankle boot"
    assert set(class_counts(dd["train"]).values()) == {6000}
    assert set(class_counts(dd["test"]).values()) == {1000}
    _check_image_split(dd["train"], (28, 28), 10)
    # The first training image of Fashion-MNIST is an ankle boot, the first test image too.
    assert dd["train"][0]["label"] == 9 and dd["test"][0]["label"] == 9
    assert resolve_hflip(DataConfig(source="fashion_mnist")) is True


def test_fashion_mnist_missing_files_say_how_to_install(tmp_path):
    with pytest.raises(DatasetUnavailableError, match="apt-get install -y dataset-fashion-mnist"):
        load_source(DataConfig(source="fashion_mnist", data_dir=str(tmp_path)))


def test_amazon_reviews_source():
    dd = build_datasets(DataConfig(source="amazon_reviews"))
    assert (len(dd["train"]), len(dd["test"])) == (4000, 1000)
    assert dd["train"].column_names == ["text", "label"]
    assert class_names(dd) == AMAZON_REVIEWS_CLASSNAMES == ["other", "great"]
    assert class_counts(dd["train"]) == {"other": 1400, "great": 2600}
    assert class_counts(dd["test"]) == {"other": 342, "great": 658}
    first = dd["train"][0]
    assert first["text"].startswith("this stuff is  not stuffing") and first["label"] == 0
    assert all(isinstance(t, str) and len(t) >= 50 for t in dd["test"]["text"][:50])
    assert get_source("amazon_reviews").modality == "text"


# ------------------------------------------------------------------------------ few-shot and caps


def test_few_shot_is_exact_seeded_and_nested(digits):
    train = digits["train"]
    a = sample_few_shot(train, 4, seed=0)
    assert len(a) == 40 and set(class_counts(a).values()) == {4}
    again = sample_few_shot(train, 4, seed=0)
    assert a["image"][0].tobytes() == again["image"][0].tobytes()
    assert np.array_equal(label_array(a), label_array(again))
    b = sample_few_shot(train, 4, seed=1)
    pixels = lambda ds: {im.tobytes() for im in ds["image"]}  # noqa: E731
    assert pixels(a) != pixels(b)
    # Nested draws: the 2-shot set is inside the 4-shot set for the same seed.
    assert pixels(sample_few_shot(train, 2, seed=0)) <= pixels(a)


def test_few_shot_names_the_short_class(digits):
    small = digits["test"].select(range(60))
    counts = class_counts(small)
    shortest = min(counts, key=counts.get)
    with pytest.raises(ValueError, match=rf"class {DIGIT_NAMES.index(shortest)} \('{shortest}'\) has only {counts[shortest]}"):
        sample_few_shot(small, counts[shortest] + 1, seed=0)


def test_subsample_is_stratified_and_seeded(digits):
    amazon = build_datasets(DataConfig(source="amazon_reviews"))["train"]
    sub = subsample(amazon, 500, seed=3)
    assert len(sub) == 500 and class_counts(sub) == {"other": 175, "great": 325}  # 35% / 65% kept
    assert sub["text"] == subsample(amazon, 500, seed=3)["text"]
    assert sub["text"] != subsample(amazon, 500, seed=4)["text"]
    assert subsample(amazon, 10_000, seed=0) is amazon
    plain = subsample(amazon, 100, seed=0, stratify=False)
    assert len(plain) == 100


def test_build_with_shots_validation_and_caps():
    cfg = DataConfig(source="digits", shots=8, validation_size=0.25, max_eval_samples=50, seed=2)
    dd = build_datasets(cfg)
    assert list(dd) == ["train", "validation", "test"]
    assert len(dd["train"]) == 80 and set(class_counts(dd["train"]).values()) == {8}
    assert len(dd["validation"]) == 50 and len(dd["test"]) == 50
    assert set(class_counts(dd["test"]).values()) == {5}
    capped = build_datasets(DataConfig(source="digits", max_train_samples=100))
    assert len(capped["train"]) == 100 and len(capped["test"]) == 360


def test_class_name_override(digits):
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    dd = build_datasets(DataConfig(source="digits", class_names=words))
    assert class_names(dd["train"]) == class_names(dd["test"]) == words
    assert np.array_equal(label_array(dd["test"]), label_array(digits["test"]))
    with pytest.raises(ValueError, match="has 3 names, but source 'digits' has 10 classes"):
        build_datasets(DataConfig(source="digits", class_names=["a", "b", "c"]))


# ------------------------------------------------------------------------------ Hub datasets offline


@pytest.mark.parametrize("source", ["cifar10", "glue/sst2", "imdb", "someone/some-dataset"])
def test_hub_dataset_offline_fails_fast_with_alternatives(source):
    start = time.perf_counter()
    with pytest.raises(DatasetUnavailableError) as info:
        build_datasets(DataConfig(source=source))
    assert time.perf_counter() - start < 10
    message = str(info.value)
    assert "Hugging Face Hub" in message and "offline" in message
    assert "imagefolder" in message or "data_files" in message
    if source == "cifar10":
        assert "'uoft-cs/cifar10'" in message and "digits" in message
    if source == "glue/sst2":
        assert "config 'sst2'" in message and "amazon_reviews" in message


def test_hub_unreachable_fails_fast(monkeypatch):
    """Without offline flags, an unreachable Hub is detected by a short probe, before load_dataset."""
    import datasets
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("HF_INFONC_HUB_PROBE_TIMEOUT", "3")

    def never(*args, **kwargs):
        raise AssertionError("load_dataset must not be called when the Hub is unreachable")

    monkeypatch.setattr(datasets, "load_dataset", never)
    start = time.perf_counter()
    with pytest.raises(DatasetUnavailableError, match=r"cannot be reached.*imagefolder"):
        build_datasets(DataConfig(source="cifar100"))
    assert time.perf_counter() - start < 10


def test_typo_source_is_suggested():
    with pytest.raises(DatasetUnavailableError, match="Did you mean the source 'digits'"):
        build_datasets(DataConfig(source="digts"))


# ------------------------------------------------------------------------------ local files


def _save_image(path: Path, mode: str, size=(12, 10), value: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    array = rng.integers(0, 256, size=(size[1], size[0], channels), dtype=np.uint8)
    PILImage.fromarray(array.squeeze(-1) if channels == 1 else array, mode=mode).save(path)


def test_imagefolder_with_splits(tmp_path):
    for split, n in (("train", 4), ("test", 2)):
        for c, (name, mode) in enumerate((("cat", "RGBA"), ("dog", "L"), ("owl", "RGB"))):
            for i in range(n):
                _save_image(tmp_path / split / name / f"{i}.png", mode, value=100 * c + i)
    dd = build_datasets(DataConfig(source="imagefolder", data_dir=str(tmp_path), shots=2))
    assert class_names(dd) == ["cat", "dog", "owl"]
    assert len(dd["train"]) == 6 and len(dd["test"]) == 6
    _check_image_split(dd["test"], (12, 10), 3)
    assert {dd["test"][i]["image"].mode for i in range(6)} == {"RGB"}


def test_imagefolder_without_test_split_holds_out(tmp_path):
    for name in ("a", "b"):
        for i in range(10):
            _save_image(tmp_path / name / f"{i}.png", "RGB", value=i)
    dd = build_datasets(DataConfig(source="imagefolder", data_dir=str(tmp_path), test_size=0.2))
    assert (len(dd["train"]), len(dd["test"])) == (16, 4)
    assert class_counts(dd["test"]) == {"a": 2, "b": 2}


def test_imagefolder_needs_an_existing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        build_datasets(DataConfig(source="imagefolder", data_dir=str(tmp_path / "missing")))


def test_csv_with_string_labels(tmp_path):
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    rows = [("good food", "pos"), ("awful", "neg"), ("tasty", "pos"), ("bland", "neg"), ("fine", "neutral")] * 4
    train.write_text("review,sentiment,extra\n" + "".join(f"{t} {i},{y},x\n" for i, (t, y) in enumerate(rows)))
    test.write_text("review,sentiment,extra\n" + "".join(f"{t},{y},x\n" for t, y in rows[:5]))
    files = {"train": str(train), "test": str(test)}
    dd = build_datasets(DataConfig(source="csv", data_files=files, text_column="review", label_column="sentiment"))
    assert dd["train"].column_names == ["text", "label"] and len(dd["train"]) == 20
    assert class_names(dd) == ["neg", "neutral", "pos"]  # sorted label values
    assert dd["test"][0] == {"text": "good food", "label": 2}
    ordered = build_datasets(
        DataConfig(
            source="csv",
            data_files=files,
            text_column="review",
            label_column="sentiment",
            class_names=["neg", "pos", "neutral"],
        )
    )
    assert class_names(ordered) == ["neg", "pos", "neutral"] and ordered["test"][0]["label"] == 1
    with pytest.raises(ValueError, match=r"label values \['neutral'\] are not in data.class_names"):
        build_datasets(
            DataConfig(source="csv", data_files=files, text_column="review", label_column="sentiment", class_names=["neg", "pos"])
        )


def test_jsonl_validation_split_is_disjoint(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps({"text": f"example {i}", "label": i % 3}) + "\n" for i in range(90)))
    dd = build_datasets(DataConfig(source="jsonl", data_files=str(path), validation_size=0.2, seed=1))
    assert class_names(dd) == ["0", "1", "2"]
    sizes = {k: len(v) for k, v in dd.items()}
    assert sizes == {"train": 57, "validation": 15, "test": 18}
    texts = {k: set(v["text"]) for k, v in dd.items()}
    assert not texts["train"] & texts["validation"] and not texts["train"] & texts["test"]
    assert not texts["validation"] & texts["test"]


def test_json_image_caption_pairs_with_relative_paths(tmp_path):
    rows = []
    for i in range(6):
        _save_image(tmp_path / "img" / f"{i}.png", "L", value=i)
        rows.append({"file": f"img/{i}.png", "caption": f"picture number {i}", "kind": ["x", "y"][i % 2]})
    path = tmp_path / "pairs.json"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    dd = load_source(
        DataConfig(source="json", data_files={"train": str(path), "test": str(path)}, image_column="file", label_column="kind")
    )
    row = dd["train"][3]
    assert set(row) == {"image", "caption", "label"}
    assert row["image"].mode == "RGB" and row["caption"] == "picture number 3" and row["label"] == 1


def test_missing_label_column_is_explained(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("text,score\na,1\nb,2\n")
    with pytest.raises(ValueError, match="has no label column.*data.label_column"):
        build_datasets(DataConfig(source="csv", data_files=str(path)))
    with pytest.raises(ValueError, match="Did you mean 'score'"):
        build_datasets(DataConfig(source="csv", data_files=str(path), label_column="scores"))


def test_unlabelled_eval_split_is_rejected(tmp_path):
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    train.write_text("text,label\n" + "".join(f"t{i},{i % 2}\n" for i in range(10)))
    test.write_text("text,label\n" + "".join(f"u{i},-1\n" for i in range(4)))
    with pytest.raises(ValueError, match="unlabelled examples.*eval_split"):
        build_datasets(DataConfig(source="csv", data_files={"train": str(train), "test": str(test)}))


def test_missing_data_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_datasets(DataConfig(source="csv", data_files=str(tmp_path / "nope.csv")))


# ------------------------------------------------------------------------------ config validation


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"source": ""}, "non-empty string"),
        ({"source": "imagefolder"}, "data.data_dir is required"),
        ({"source": "csv"}, "data.data_files is required"),
        ({"source": "digits", "validation_size": 1.5}, "strictly between 0 and 1"),
        ({"source": "digits", "test_size": 0.0}, "strictly between 0 and 1"),
        ({"source": "digits", "shots": 0}, "positive integer"),
        ({"source": "digits", "max_train_samples": 2.5}, "positive integer"),
        ({"source": "digits", "seed": -1}, "non-negative integer"),
        ({"source": "digits", "eval_split": "train"}, "evaluated on its own training data"),
        ({"source": "digits", "class_names": ["a", "a"]}, "unique"),
        ({"source": "digits", "class_names": "abc"}, "list of strings"),
        ({"source": "digits", "image_column": "img", "text_column": "t"}, "caption_column"),
        ({"source": "digits", "prompt_templates": ["a photo"]}, "0 placeholders"),
        ({"source": "digits", "prompt_templates": "nope"}, "unknown template set"),
        ({"source": "digits", "prompt_templates": []}, "non-empty list"),
        ({"source": "csv", "data_files": {"train": 3}}, "mapping from split name"),
    ],
)
def test_config_errors(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        DataConfig(**kwargs)


def test_config_defaults():
    cfg = DataConfig(source="digits")
    assert cfg.train_split == "train" and cfg.eval_split is None and cfg.seed == 0
    assert cfg.prompt_templates == ["a photo of a {}."] and cfg.augment is True and cfg.max_length == 128
    assert DataConfig(source="x", prompt_templates="openai_imagenet").prompt_templates == "openai_imagenet"
    assert get_source("glue/sst2").eval_split == "validation" and get_source("sst2").name == "glue/sst2"
    assert get_source("owner/anything").needs_hub
    assert os.environ.get("HF_DATASETS_OFFLINE") == "1"


# ------------------------------------------------------------------------------ Hub column mapping


def _fake_hub(monkeypatch, tables):
    """Replace datasets.load_dataset by a stand-in returning in-memory data for known ids."""
    import datasets

    calls = []

    def fake_load_dataset(path, name=None, **kwargs):
        calls.append((path, name))
        return datasets.DatasetDict({split: datasets.Dataset.from_dict(*spec) for split, spec in tables[path].items()})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    return calls


def test_hub_cifar100_and_sst2_column_mapping(monkeypatch):
    from datasets import Features, Value
    from datasets import Image as ImageFeature

    from hf_infonc.data import CIFAR100_CLASSNAMES

    raw_names = [n.replace(" ", "_") for n in CIFAR100_CLASSNAMES]
    png = PILImage.new("L", (32, 32), 7)
    cifar = (
        {"img": [png] * 4, "fine_label": [0, 1, 99, 47], "coarse_label": [0, 0, 1, 1]},
        Features({"img": ImageFeature(), "fine_label": ClassLabel(names=raw_names), "coarse_label": Value("int64")}),
    )
    sst = lambda labels: (  # noqa: E731
        {"sentence": [f"s{i}" for i in range(len(labels))], "label": labels, "idx": list(range(len(labels)))},
        Features({"sentence": Value("string"), "label": ClassLabel(names=["negative", "positive"]), "idx": Value("int32")}),
    )
    calls = _fake_hub(
        monkeypatch,
        {
            "uoft-cs/cifar100": {"train": cifar, "test": cifar},
            "nyu-mll/glue": {"train": sst([0, 1] * 4), "validation": sst([1, 0]), "test": sst([-1, -1])},
        },
    )
    dd = build_datasets(DataConfig(source="cifar100"))
    assert calls[-1] == ("uoft-cs/cifar100", None)
    assert dd["train"].column_names == ["image", "label"]
    assert class_names(dd) == CIFAR100_CLASSNAMES and class_names(dd)[47] == "maple tree"
    assert dd["test"][0]["image"].mode == "RGB" and dd["test"][2]["label"] == 99

    sst2 = build_datasets(DataConfig(source="glue/sst2"))
    assert calls[-1] == ("nyu-mll/glue", "sst2")
    assert sst2["test"]["text"] == ["s0", "s1"]  # the validation split: GLUE test labels are hidden
    assert class_names(sst2) == ["negative", "positive"] and sst2["train"].column_names == ["text", "label"]
    with pytest.raises(ValueError, match="unlabelled examples"):
        build_datasets(DataConfig(source="sst2", eval_split="test"))


def test_generic_hub_dataset_uses_config_columns(monkeypatch):
    from datasets import Features, Value

    table = (
        {"body": ["a", "b", "c", "d"], "topic": ["x", "y", "x", "y"]},
        Features({"body": Value("string"), "topic": Value("string")}),
    )
    calls = _fake_hub(monkeypatch, {"someone/topics": {"train": table, "test": table}})
    dd = build_datasets(DataConfig(source="someone/topics", config_name="v2", text_column="body", label_column="topic"))
    assert calls == [("someone/topics", "v2")]
    assert class_names(dd) == ["x", "y"] and dd["test"][1] == {"text": "b", "label": 1}
