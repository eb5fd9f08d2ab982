"""Frozen CLIP towers (eval mode) with a small trained head: the shared base of CoOp and the linear probe.

``logits = scale · normalize(image) · headᵀ`` with CLIP's frozen ``logit_scale``. ``save_pretrained`` (and
so ``Trainer``) keeps only the head, the class names and a reference to the base model (docs/adapters.md).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from safetensors.torch import load_file
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput, cached_file

from hf_infonc.models import clip_towers
from hf_infonc.models.open_clip import OpenCLIPModel

HEAD_WEIGHTS_NAME = "model.safetensors"


@dataclass
class CLIPHeadOutput(ModelOutput):
    """Cross-entropy ``loss``, ``logits``, ``image_embeds`` (not normalised), ``head_rows`` (``C x d``) and
    ``logit_scale`` (``exp`` applied)."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    image_embeds: torch.Tensor | None = None
    head_rows: torch.Tensor | None = None
    logit_scale: torch.Tensor | None = None


class FrozenCLIPHeadConfig(PretrainedConfig):
    """Fields shared by the heads on frozen CLIP towers."""

    #: ``Trainer`` leaves these outputs out of the predictions: they are the logits alone
    keys_to_ignore_at_inference = ["image_embeds", "head_rows", "logit_scale"]
    class_names: list[str] | None = None
    base_model_name_or_path: str | None = None
    base_model_class: str | None = None


def load_base_clip(name_or_path: str | None, class_name: str | None, **kwargs: Any) -> nn.Module:
    """Load the base CLIP model a saved head refers to (``CLIPModel`` or ``OpenCLIPModel``)."""
    if not name_or_path:
        raise ValueError(
            "This head was saved without a reference to its base CLIP model (it was built on a model that was not "
            "loaded with from_pretrained). Pass the base model: "
            "from_pretrained(directory, clip_model=<the CLIP model>)."
        )
    if class_name == "CLIPModel":
        from transformers import CLIPModel

        return CLIPModel.from_pretrained(name_or_path, **kwargs)
    if class_name == "OpenCLIPModel":
        return OpenCLIPModel.from_pretrained(name_or_path, **kwargs)
    raise ValueError(
        f"Cannot load a base model of class {class_name!r} by reference ({name_or_path!r}); pass it with "
        f"from_pretrained(directory, clip_model=...)."
    )


class FrozenCLIPHeadModel(PreTrainedModel):
    """Base class: frozen ``self.clip`` + trained head tensors; saves and loads the head only."""

    config_class = FrozenCLIPHeadConfig
    base_model_prefix = "head_model"
    main_input_name = "pixel_values"
    _keys_to_ignore_on_load_missing = [r"^clip\."]
    #: Prefix of the frozen model's entries in the state dict (never saved).
    frozen_prefix: ClassVar[str] = "clip."

    def __init__(self, config: FrozenCLIPHeadConfig, clip_model: nn.Module) -> None:
        super().__init__(config)
        clip_towers.require_clip(clip_model, type(self).__name__)
        if not config.class_names:
            raise ValueError(f"{type(self).__name__} needs class_names (one per class, in label order).")
        if config.base_model_class is None:
            name = getattr(clip_model, "name_or_path", None)
            config.base_model_name_or_path = str(name) if name else None
            config.base_model_class = type(clip_model).__name__
        self.clip = clip_model.requires_grad_(False).eval()

    def _init_weights(self, module: nn.Module) -> None:
        """The head is initialised explicitly by each subclass; the frozen CLIP is never touched."""

    def initialize_weights(self) -> None:
        """No generic re-initialisation: it must never reach the (pretrained, frozen) CLIP towers."""

    def train(self, mode: bool = True) -> FrozenCLIPHeadModel:
        super().train(mode)
        self.clip.eval()  # frozen feature extractors: no dropout noise
        return self

    @property
    def class_names(self) -> list[str]:
        return list(self.config.class_names or [])

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.clip.logit_scale

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Projected image embeddings; no autograd graph while the vision tower is frozen."""
        trains = any(p.requires_grad for p in clip_towers.vision_parameters(self.clip))
        with torch.set_grad_enabled(torch.is_grad_enabled() and trains):
            return clip_towers.encode_image(self.clip, pixel_values)

    def head_rows(self) -> torch.Tensor:
        """The ``C x d`` head rows."""
        raise NotImplementedError

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None) -> CLIPHeadOutput:
        image = self.encode_images(pixel_values)
        head = self.head_rows()
        scale = self.logit_scale.exp().detach()
        logits = clip_towers.classification_logits(image, head, scale)
        loss = None if labels is None else nn.functional.cross_entropy(logits, labels)
        return CLIPHeadOutput(loss=loss, logits=logits, image_embeds=image, head_rows=head, logit_scale=scale)

    def head_state_dict(self, state_dict: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """The entries that are saved: everything outside the frozen ``clip.``."""
        state = self.state_dict() if state_dict is None else state_dict
        return {k: v for k, v in state.items() if not k.startswith(self.frozen_prefix)}

    def save_pretrained(
        self, save_directory: str | os.PathLike, *args: Any, state_dict: dict | None = None, **kwargs: Any
    ):
        """Write ``config.json`` and ``model.safetensors`` holding the head only (so do ``Trainer``'s checkpoints)."""
        return super().save_pretrained(save_directory, *args, state_dict=self.head_state_dict(state_dict), **kwargs)

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, clip_model: nn.Module | None = None, *,
        base_model_kwargs: dict | None = None, **hub_kwargs: Any,
    ):
        """Rebuild a saved head (folder or Hub repo id) around ``clip_model`` (default: the base model it names)."""
        config = cls.config_class.from_pretrained(pretrained_model_name_or_path, **hub_kwargs)
        if clip_model is None:
            clip_model = load_base_clip(
                config.base_model_name_or_path, config.base_model_class, **(base_model_kwargs or {})
            )
        model = cls(config, clip_model)  # head tensors of the saved shapes; their values are loaded below
        state = load_file(cached_file(pretrained_model_name_or_path, HEAD_WEIGHTS_NAME, **hub_kwargs))
        expected = set(model.head_state_dict())
        missing, unexpected = expected - set(state), set(state) - expected
        if missing or unexpected:
            raise ValueError(
                f"{pretrained_model_name_or_path} does not hold a {cls.__name__} head: missing {sorted(missing)}, "
                f"unexpected {sorted(unexpected)}."
            )
        device = next(clip_model.parameters()).device
        model.load_state_dict({k: v.to(device) for k, v in state.items()}, strict=False)
        return model.eval()


class CLIPLinearProbeConfig(FrozenCLIPHeadConfig):
    model_type = "hf_infonc_clip_linear_probe"

    embed_dim: int | None = None
    templates: list[str] | None = None


class CLIPLinearProbe(FrozenCLIPHeadModel):
    """A linear classifier ``W`` (``C x d``, no bias, the head rows, docs/theory.md §2.4) on frozen CLIP image
    embeddings, starting as the zero-shot head (as in LP-FT / WiSE-FT) **[choice]**. Build with :meth:`from_clip`.
    """

    config_class = CLIPLinearProbeConfig

    def __init__(self, config: CLIPLinearProbeConfig, clip_model: nn.Module) -> None:
        super().__init__(config, clip_model)
        if config.embed_dim is None:
            raise ValueError(
                "CLIPLinearProbeConfig.embed_dim is not set (the CLIP embedding dimension); build the probe with "
                "CLIPLinearProbe.from_clip(clip_model, tokenizer, class_names)."
            )
        width = clip_towers.embed_dim(clip_model)
        if width is not None and width != config.embed_dim:
            base = config.base_model_name_or_path
            raise ValueError(
                f"This probe's head has width {config.embed_dim} but the CLIP model's embeddings have width {width}: "
                f"it was trained on another base model. Pass that model as clip_model"
                + (f" (or leave clip_model out to load {base!r})." if base else ".")
            )
        reference = next(clip_model.parameters())
        self.classifier = nn.Linear(config.embed_dim, len(config.class_names), bias=False)
        self.classifier.to(device=reference.device, dtype=reference.dtype)
        self.post_init()

    @classmethod
    def from_clip(
        cls, clip_model: nn.Module, tokenizer: Any, class_names: list[str], *, templates: list[str] | None = None
    ) -> CLIPLinearProbe:
        """Zero-shot-initialised probe: ``W`` = the normalised class-prompt embeddings (ensembled over templates)."""
        clip_towers.require_clip(clip_model, "CLIPLinearProbe")
        length = clip_towers.context_length(clip_model)
        prompts = clip_towers.ClassPrompts.tokenize(class_names, templates, tokenizer, length=length)
        with torch.no_grad():
            head = prompts.head(clip_model)
        config = CLIPLinearProbeConfig(
            class_names=prompts.class_names, embed_dim=head.shape[-1], templates=prompts.templates
        )
        probe = cls(config, clip_model)
        with torch.no_grad():
            probe.classifier.weight.copy_(head.to(probe.classifier.weight.dtype))
        return probe

    def head_rows(self) -> torch.Tensor:
        return self.classifier.weight
