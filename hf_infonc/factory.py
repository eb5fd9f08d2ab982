"""Build the model, its tokenizer/processor and its image preprocessing from a recipe's ``model`` section.

The real Hub loading code is used (``from_pretrained(name)``, open_clip's factory). Two
offline conveniences:

* known Hub ids whose weights ship in a pip package are resolved to that local copy at load
  time (:mod:`hf_infonc.local_models`), also inside open_clip ``text_cfg``; saved configs keep the
  Hub id, so the saved model loads on any machine;
* when the Hub is offline (``HF_HUB_OFFLINE=1``) or unreachable, a missing model fails at once
  with a message that suggests a local path, instead of retrying for a minute.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from hf_infonc.local_models import resolve_local
from hf_infonc.recipe import ModelRecipe


class ModelUnavailableError(RuntimeError):
    """A model (or tokenizer) that needs the Hub while the Hub cannot be reached."""


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def _load(what: str, name: str, loader, *args: Any, **kwargs: Any):
    """Call a ``from_pretrained``-style loader; turn an offline miss into a clear, immediate error."""
    try:
        return loader(name, *args, **kwargs)
    except OSError as error:
        if Path(name).exists():
            raise
        reason = "HF_HUB_OFFLINE=1 is set" if hub_offline() else "the Hugging Face Hub could not be reached"
        raise ModelUnavailableError(
            f"Cannot load {what} '{name}': it is not a local directory, not in the cache, and {reason}. "
            f"Download it on a machine with network access (e.g. `huggingface-cli download {name}`) and point "
            f"model.name_or_path at the local folder, or build the model from a config (model.config)."
        ) from error


@dataclass
class BuiltModel:
    """A model ready for the trainer, with what the data pipeline needs to feed it."""

    model: nn.Module
    processing_class: Any
    """Saved with the model by the Trainer (processor or tokenizer); may be None for open_clip."""
    tokenizer: Any
    """Text tokenizer: a HF tokenizer, or an open_clip tokenizer (callable -> LongTensor ids)."""
    image_preprocessing: Any
    """A HF image processor or an open_clip model (its preprocess config), or None for text models."""


def _label_maps(class_names: list[str]) -> dict[str, Any]:
    return {
        "num_labels": len(class_names),
        "id2label": dict(enumerate(class_names)),
        "label2id": {name: i for i, name in enumerate(class_names)},
    }


def build_model(spec: ModelRecipe, class_names: list[str]) -> BuiltModel:
    """Instantiate the model family named by ``spec.family``."""
    import transformers as tf

    name = resolve_local(spec.name_or_path)
    tokenizer_name = resolve_local(spec.tokenizer) or name
    if spec.family == "hf-clip":
        if spec.config is not None:
            model = tf.CLIPModel(tf.CLIPConfig(**spec.config))
            tokenizer = _load("tokenizer", tokenizer_name, tf.AutoTokenizer.from_pretrained)
            vision = model.config.vision_config
            size = vision.image_size
            processor = tf.CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
            return BuiltModel(model, tokenizer, tokenizer, processor)
        model = _load("model", name, tf.CLIPModel.from_pretrained)
        processor = _load("processor", tokenizer_name, tf.CLIPProcessor.from_pretrained)
        return BuiltModel(model, processor, processor.tokenizer, processor.image_processor)
    if spec.family == "open-clip":
        from hf_infonc.models.open_clip_hf import OpenCLIPModel

        source = copy.deepcopy(spec.config) if spec.config is not None else spec.name_or_path
        model = OpenCLIPModel.from_open_clip(source, spec.pretrained)
        tokenizer = model.get_tokenizer()  # an OpenCLIPTokenizer: the Trainer saves it with the model
        return BuiltModel(model, tokenizer, tokenizer, dict(model.config.preprocess_cfg))
    if spec.family == "sequence-classification":
        labels = _label_maps(class_names)
        if spec.config is not None:
            config = tf.AutoConfig.for_model(**{**spec.config, **labels})
            model = tf.AutoModelForSequenceClassification.from_config(config)
        else:
            model = _load("model", name, tf.AutoModelForSequenceClassification.from_pretrained, **labels)
        tokenizer = _load("tokenizer", tokenizer_name, tf.AutoTokenizer.from_pretrained)
        return BuiltModel(model, tokenizer, tokenizer, None)
    if spec.family == "image-classification":
        import hf_infonc.models.wide_resnet  # noqa: F401  (registers model_type "wide_resnet" with the Auto classes)

        labels = _label_maps(class_names)
        if spec.config is not None:
            config = tf.AutoConfig.for_model(**{**spec.config, **labels})
            model = tf.AutoModelForImageClassification.from_config(config)
            size = getattr(config, "image_size", 224)
            processor = tf.ViTImageProcessor(size={"height": size, "width": size})
        else:
            model = _load(
                "model", name, tf.AutoModelForImageClassification.from_pretrained, ignore_mismatched_sizes=True, **labels
            )
            processor = _load("image processor", tokenizer_name, tf.AutoImageProcessor.from_pretrained)
        return BuiltModel(model, processor, None, processor)
    raise ValueError(f"Unknown model family {spec.family!r}.")
