"""Build the model, its tokenizer/processor and its image preprocessing from a recipe's ``model`` section;
the model of a run (training mode applied, parameters frozen); a saved run's model, reloaded.

Known Hub ids whose weights ship in a pip package load from that local copy (:mod:`hf_infonc.local_models`;
the saved ``name_or_path`` keeps the Hub id); offline, a missing model fails at once with a message that
suggests a local path.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from hf_infonc.errors import OutputDirError, UserError
from hf_infonc.local_models import resolve_local
from hf_infonc.modes import HEAD_ONLY_MODES, apply_training_mode
from hf_infonc.offline import hub_offline
from hf_infonc.recipe import CLIP_FAMILIES, ModelRecipe, Recipe, RecipeError

logger = logging.getLogger(__name__)


class ModelUnavailableError(UserError):
    """A model (or tokenizer) that needs the Hub while the Hub cannot be reached."""


def _load(what: str, name: str, loader, **kwargs: Any):
    """Call a ``from_pretrained``-style loader; turn an offline miss into a clear, immediate error."""
    try:
        return loader(name, **kwargs)
    except OSError as error:
        if Path(name).exists():
            raise
        reason = "HF_HUB_OFFLINE=1 is set" if hub_offline() else "the Hugging Face Hub could not be reached"
        raise ModelUnavailableError(
            f"Cannot load {what} '{name}': it is not a local directory, not in the cache, and {reason}. "
            f"Download it on a machine with network access (e.g. `huggingface-cli download {name}`) and point "
            f"model.name_or_path at the local folder, or build the model from a config (model.config)."
        ) from error


def _from_config(spec: ModelRecipe, build: Callable[[], nn.Module]) -> nn.Module:
    """``build()``, the model of ``spec.config``: a config it cannot be built from, or whose model has an empty
    weight (a size of 0), is a :class:`RecipeError` that names ``model.config``."""
    try:
        model = build()
    except (ArithmeticError, AssertionError, IndexError, KeyError, RuntimeError, TypeError, ValueError) as error:
        raise RecipeError(f"model.config: cannot build the {spec.family} model from it: {error}") from error
    empty = next(((name, p.shape) for name, p in model.named_parameters() if p.numel() == 0), None)
    if empty is not None:
        raise RecipeError(
            f"model.config: the {spec.family} model built from it has an empty weight {empty[0]} of shape "
            f"{tuple(empty[1])}: a size in the config is 0. Give every width, dimension and layer size a positive "
            f"value."
        )
    return model


@dataclass
class BuiltModel:
    """A model ready for the trainer, with what the data pipeline needs to feed it."""

    model: nn.Module
    processing_class: Any
    """Saved with the model by the Trainer (``CLIPProcessor``, the classifier's tokenizer or image processor, an
    ``OpenCLIPTokenizer``), so that the family's own client loads the output folder."""
    tokenizer: Any
    """Text tokenizer: a HF tokenizer, or an open_clip tokenizer (callable -> LongTensor ids)."""
    image_preprocessing: Any
    """A HF image processor or an open_clip model (its preprocess config), or None for text models."""


def _named_by_hub_id(model: nn.Module, requested: str | None) -> nn.Module:
    """Name a model loaded from a local copy (:func:`resolve_local`) by the Hub id it was asked for: peft and the
    CoOp / linear-probe heads save ``name_or_path``, which must be portable."""
    if requested and model.name_or_path != requested and resolve_local(requested) == model.name_or_path:
        model.name_or_path = requested
        model.config.name_or_path = requested
    return model


def build_model(spec: ModelRecipe, class_names: list[str]) -> BuiltModel:
    """Instantiate the model family named by ``spec.family``."""
    import transformers as tf

    name = resolve_local(spec.name_or_path)
    tokenizer_name = resolve_local(spec.tokenizer) or name
    if spec.family == "hf-clip":
        if spec.config is None:
            model = _named_by_hub_id(_load("model", name, tf.CLIPModel.from_pretrained), spec.name_or_path)
            processor = _load("processor", tokenizer_name, tf.CLIPProcessor.from_pretrained)
            return BuiltModel(model, processor, processor.tokenizer, processor.image_processor)
        model = _from_config(spec, lambda: tf.CLIPModel(tf.CLIPConfig(**spec.config)))
        tokenizer = _load("tokenizer", tokenizer_name, tf.AutoTokenizer.from_pretrained)
        size = model.config.vision_config.image_size
        image_processor = tf.CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
        # tokenizer + image processor saved together: pipeline("zero-shot-image-classification") needs both
        processor = tf.CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)
        return BuiltModel(model, processor, tokenizer, image_processor)
    if spec.family == "open-clip":
        from hf_infonc.models import OpenCLIPModel

        if spec.config is None:
            model = OpenCLIPModel.from_open_clip(spec.name_or_path, spec.pretrained)
        else:
            config = copy.deepcopy(spec.config)
            model = _from_config(spec, lambda: OpenCLIPModel.from_open_clip(config, spec.pretrained))
        tokenizer = model.get_tokenizer()  # an OpenCLIPTokenizer: the Trainer saves it with the model
        return BuiltModel(model, tokenizer, tokenizer, dict(model.config.preprocess_cfg))
    if spec.family == "image-classification":
        import hf_infonc.models.wide_resnet  # noqa: F401  (registers model_type "wide_resnet" with the Auto classes)
    auto = {
        "sequence-classification": tf.AutoModelForSequenceClassification,
        "image-classification": tf.AutoModelForImageClassification,
    }.get(spec.family)
    if auto is None:
        raise ValueError(f"Unknown model family {spec.family!r}.")
    labels = {"num_labels": len(class_names), "id2label": dict(enumerate(class_names))}
    labels["label2id"] = {label: i for i, label in enumerate(class_names)}
    if spec.config is not None:
        model = _from_config(spec, lambda: auto.from_config(tf.AutoConfig.for_model(**{**spec.config, **labels})))
    else:
        mismatched = {"ignore_mismatched_sizes": True} if spec.family == "image-classification" else {}
        model = _named_by_hub_id(_load("model", name, auto.from_pretrained, **mismatched, **labels), spec.name_or_path)
    if spec.family == "sequence-classification":
        tokenizer = _load("tokenizer", tokenizer_name, tf.AutoTokenizer.from_pretrained)
        return BuiltModel(model, tokenizer, tokenizer, None)
    if spec.config is not None:
        size = getattr(model.config, "image_size", 224)
        processor = tf.ViTImageProcessor(size={"height": size, "width": size})
    else:
        processor = _load("image processor", tokenizer_name, tf.AutoImageProcessor.from_pretrained)
    return BuiltModel(model, processor, None, processor)


# ---------------------------------------------------------------------------- the model of a run


def build_recipe_model(recipe: Recipe, class_names: list[str]) -> BuiltModel:
    """The model of a run: :func:`build_model`, the recipe's training mode applied, ``model.freeze`` frozen."""
    built = build_model(recipe.model, class_names)
    built.model = apply_recipe_mode(recipe, built, class_names)
    if recipe.model.freeze:
        frozen = freeze_parameters(built.model, recipe.model.freeze)
        logger.info("Froze %d parameters (%s)", frozen, ", ".join(recipe.model.freeze))
    return built


def apply_recipe_mode(recipe: Recipe, built, class_names: list[str]):
    """The model to train: ``built.model`` with the recipe's training mode applied (LoRA, CoOp, linear probe;
    a classifier trained in full is returned as it is)."""
    spec = recipe.model
    if spec.family not in CLIP_FAMILIES and spec.training_mode == "full":
        return built.model
    from hf_infonc.data.prompts import get_templates

    return apply_training_mode(
        built.model, spec.training_mode, lora=spec.lora, coop=spec.coop, class_names=class_names,
        tokenizer=built.tokenizer, templates=get_templates(recipe.data.prompt_templates),
    )


def freeze_parameters(model, prefixes: list[str]) -> int:
    """Set ``requires_grad=False`` on parameters whose name starts with one of ``prefixes``."""
    parameters = dict(model.named_parameters())
    frozen = 0
    for prefix in prefixes:
        matched = [parameter for name, parameter in parameters.items() if name.startswith(prefix)]
        if not matched:
            roots = sorted({n.split(".")[0] for n in parameters})
            raise RecipeError(f"model.freeze: no parameter name starts with '{prefix}' (top-level modules: {roots}).")
        for parameter in matched:
            parameter.requires_grad_(False)
            frozen += parameter.numel()
    return frozen


def _load_head(model, folder: Path) -> None:
    """Load a frozen-CLIP wrapper's saved head (every entry outside ``clip.``) into ``model``."""
    from safetensors.torch import load_file

    path = folder / "model.safetensors"
    if not path.is_file():
        raise OutputDirError(f"{folder}: no model.safetensors with the {type(model).__name__} head in it.")
    state = load_file(str(path))
    expected = model.head_state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise OutputDirError(
            f"{path} does not hold the head of this {type(model).__name__} (missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}); is the recipe the one the run was trained with?"
        )
    for key, value in state.items():
        if expected[key].shape != value.shape:
            raise OutputDirError(
                f"{path}: {key} has shape {tuple(value.shape)}, the model expects {tuple(expected[key].shape)}."
            )
    model.load_state_dict(state, strict=False)


def load_saved_model(recipe: Recipe, folder: str | Path, class_names: list[str]):
    """Rebuild the model of ``recipe`` as :func:`run_recipe` does and load the weights saved in ``folder`` (a run's
    output folder or a ``checkpoint-N``): ``from_pretrained(folder)`` (``full``, classifier ``linear_probe``), the
    head into the frozen-CLIP wrapper (``coop``, CLIP ``linear_probe``) or the adapter into the ``peft`` model
    (``lora``). Returns ``(model, BuiltModel)``, the model in eval mode with no parameter requiring gradients."""
    from transformers import set_seed

    folder = Path(folder)
    spec = recipe.model
    set_seed(recipe.seed)  # the frozen parts of a head-only run are rebuilt exactly as in training
    built = build_model(spec, class_names)
    head_only = spec.family in CLIP_FAMILIES and spec.training_mode in HEAD_ONLY_MODES
    lora = spec.training_mode == "lora"
    adapters = [folder / name for name in ("adapter_model.safetensors", "adapter_model.bin")]
    peft_weights = next((path for path in adapters if path.is_file()), None)
    if lora and peft_weights is None:
        raise OutputDirError(f"{folder}: the recipe trains with LoRA but there is no adapter_model.safetensors here.")
    if not head_only and not lora:
        if not (folder / "config.json").is_file():
            raise OutputDirError(
                f"{folder}: no saved model (config.json and weights) in it; pass the output directory of "
                f"`hf-infonc finetune` or one of its checkpoint-N folders."
            )
        built.model = type(built.model).from_pretrained(str(folder))
    model = built.model = apply_recipe_mode(recipe, built, class_names)
    if head_only:
        _load_head(model, folder)
    elif lora:  # peft reads adapter_model.safetensors, or the older adapter_model.bin
        from peft import set_peft_model_state_dict
        from peft.utils import load_peft_weights

        result = set_peft_model_state_dict(model, load_peft_weights(str(folder), device="cpu"))
        unexpected = list(getattr(result, "unexpected_keys", []) or [])
        if unexpected:
            raise OutputDirError(f"{peft_weights}: entries that this LoRA model does not have: {unexpected[:5]}.")
    model.eval().requires_grad_(False)
    return model, built
