"""Build the model, its tokenizer/processor and its image preprocessing from a recipe's ``model`` section.

The real Hub loading code is used (``from_pretrained(name)``, open_clip's factory). Two
offline conveniences:

* known Hub ids whose weights ship in a pip package are resolved to that local copy at load
  time (:mod:`hf_infonc.local_models`), also inside open_clip ``text_cfg``; saved configs and the
  model's ``name_or_path`` (what peft writes as ``base_model_name_or_path``) keep the Hub id, so the
  saved model loads on any machine;
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

from hf_infonc.errors import UserError
from hf_infonc.local_models import resolve_local
from hf_infonc.recipe import ModelRecipe


class ModelUnavailableError(UserError):
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
    """Saved with the model by the Trainer, so that the family's own client loads the output folder:
    a ``CLIPProcessor`` (tokenizer + image processor) for HF CLIP, the tokenizer of a text classifier,
    the image processor of an image classifier, an ``OpenCLIPTokenizer`` for open_clip."""
    tokenizer: Any
    """Text tokenizer: a HF tokenizer, or an open_clip tokenizer (callable -> LongTensor ids)."""
    image_preprocessing: Any
    """A HF image processor or an open_clip model (its preprocess config), or None for text models."""


def _named_by_hub_id(model: nn.Module, requested: str | None) -> nn.Module:
    """Name a model loaded from a local copy (:func:`resolve_local`) by the Hub id it was asked for.

    ``from_pretrained`` records the path it read (``name_or_path``); peft writes that into
    ``adapter_config.json`` and CoOp / linear-probe heads into their config, so it must be the
    portable Hub id, not this machine's site-packages folder.
    """
    if requested and model.name_or_path != requested and resolve_local(requested) == model.name_or_path:
        model.name_or_path = requested
        model.config.name_or_path = requested
    return model


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
            image_processor = tf.CLIPImageProcessor(
                size={"shortest_edge": size}, crop_size={"height": size, "width": size}
            )
            # tokenizer + image processor saved together: pipeline("zero-shot-image-classification") needs both
            processor = tf.CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)
            return BuiltModel(model, processor, tokenizer, image_processor)
        model = _named_by_hub_id(_load("model", name, tf.CLIPModel.from_pretrained), spec.name_or_path)
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
            model = _named_by_hub_id(model, spec.name_or_path)
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
            model = _named_by_hub_id(model, spec.name_or_path)
            processor = _load("image processor", tokenizer_name, tf.AutoImageProcessor.from_pretrained)
        return BuiltModel(model, processor, None, processor)
    raise ValueError(f"Unknown model family {spec.family!r}.")
