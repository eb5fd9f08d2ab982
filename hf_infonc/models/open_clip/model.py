"""``OpenCLIPModel``: an open_clip ``CLIP`` / ``CustomTextCLIP`` as a ``transformers.PreTrainedModel``, and
open_clip's own files: checkpoints read in, open_clip's folder layout written out, Hub references."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn
from transformers import AutoTokenizer, PreTrainedModel
from transformers.utils import ModelOutput

from hf_infonc.files import json_safe
from hf_infonc.local_models import resolve_local, resolve_text_cfg
from hf_infonc.models.open_clip.config import OpenCLIPConfig, clean_model_cfg, resolve_model_cfg
from hf_infonc.models.open_clip.tokenizer import OpenCLIPTokenizer
from hf_infonc.testing import tiny_open_clip_cfg, tiny_open_clip_minilm_cfg

OPEN_CLIP_SCHEMAS = ("hf-hub:", "local-dir:")
OPEN_CLIP_WEIGHTS_NAME = "open_clip_model.safetensors"
OPEN_CLIP_CONFIG_NAME = "open_clip_config.json"
_PUSH_KWARGS = ("repo_id", "commit_message", "commit_description", "private", "token", "revision", "create_pr", "tags")


def build_open_clip(
    model_cfg: Mapping[str, Any], *, precision: str = "fp32", pretrained_text: bool = False,
    pretrained_image: bool = False,
) -> nn.Module:
    """Instantiate an open_clip ``CLIP`` / ``CustomTextCLIP`` from its config dict (as ``create_model`` does);
    ``pretrained_text`` / ``pretrained_image`` load the HF / timm tower weights the config names."""
    from open_clip.model import CLIP, CustomTextCLIP, get_cast_dtype

    cfg = clean_model_cfg(model_cfg)
    cfg["text_cfg"] = resolve_text_cfg(cfg["text_cfg"])  # Hub ids stay in the saved config
    if "multimodal_cfg" in cfg:
        raise ValueError("CoCa models (model_cfg with 'multimodal_cfg') are not supported by OpenCLIPModel.")
    custom_text = bool(cfg.pop("custom_text", False))
    is_hf_text = bool(cfg["text_cfg"].get("hf_model_name"))
    if is_hf_text:
        cfg["text_cfg"]["hf_model_pretrained"] = pretrained_text
    if cfg["vision_cfg"].get("timm_model_name"):
        cfg["vision_cfg"]["timm_model_pretrained"] = pretrained_image
    model_class = CustomTextCLIP if (custom_text or is_hf_text) else CLIP
    return model_class(**cfg, cast_dtype=get_cast_dtype(precision))


def _causal_mask(size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.full((size, size), float("-inf"), device=device, dtype=dtype).triu_(1)


def rebuild_causal_masks(clip: nn.Module) -> int:
    """Recompute every open_clip causal text mask (``attn_mask``, a non-persistent buffer that ``transformers`` 5
    ``from_pretrained`` leaves uninitialised) in place; returns how many. Towers without one are left alone."""
    from open_clip.model import CLIP
    from open_clip.transformer import TextTransformer

    rebuilt = 0
    for module in clip.modules():
        mask = getattr(module, "attn_mask", None) if isinstance(module, (CLIP, TextTransformer)) else None
        if not isinstance(mask, torch.Tensor):
            continue
        positions = module.positional_embedding
        device = positions.device if positions.device.type != "meta" else torch.device("cpu")
        dtype = mask.dtype if mask.is_floating_point() else torch.float32
        # assignment to a registered buffer name keeps it a (non-persistent) buffer
        module.attn_mask = _causal_mask(positions.shape[0], device, dtype)
        rebuilt += 1
    return rebuilt


def is_causal_mask(mask: torch.Tensor) -> bool:
    """True when ``mask`` is the additive causal mask (0 on and below the diagonal, -inf above)."""
    return torch.equal(mask, _causal_mask(mask.shape[-1], mask.device, mask.dtype))


def open_clip_token_embedding(clip: nn.Module) -> nn.Embedding:
    """The token embedding of an open_clip model's text tower (its output is what CoOp edits)."""
    if hasattr(clip, "token_embedding"):  # open_clip CLIP: text tower flattened into the model
        return clip.token_embedding
    text = clip.text
    if hasattr(text, "token_embedding"):  # TextTransformer
        return text.token_embedding
    if hasattr(text, "transformer") and hasattr(text.transformer, "get_input_embeddings"):  # HFTextEncoder
        return text.transformer.get_input_embeddings()
    raise TypeError(f"Cannot find the token embedding of the open_clip text tower {type(text).__name__}.")


def write_open_clip_layout(
    clip: nn.Module, config: Any, out: Path, *, weights_from: Path | None = None
) -> dict[str, Path]:
    """``open_clip_model.safetensors`` + ``open_clip_config.json`` (+ the HF text tower's tokenizer files);
    the weights are a hard link to ``weights_from`` (a file in ``out`` holding open_clip's state dict) if given."""
    if config.model_cfg is None:
        raise ValueError("This OpenCLIPModel has no model_cfg in its config; cannot write open_clip_config.json.")
    out.mkdir(parents=True, exist_ok=True)
    paths = {"weights": out / OPEN_CLIP_WEIGHTS_NAME, "config": out / OPEN_CLIP_CONFIG_NAME}
    if weights_from is not None:  # the same bytes stored once (a copy where links are refused)
        paths["weights"].unlink(missing_ok=True)
        try:
            os.link(weights_from, paths["weights"])
        except OSError:
            shutil.copyfile(weights_from, paths["weights"])
    else:
        state = {k: v.detach().to("cpu").contiguous().clone() for k, v in clip.state_dict().items()}
        save_file(state, str(paths["weights"]), metadata={"format": "pt"})
    layout = {"model_cfg": config.model_cfg, "preprocess_cfg": config.preprocess_cfg or {}}
    paths["config"].write_text(json.dumps(layout, indent=2))
    hf_tokenizer = config.text_cfg.get("hf_tokenizer_name")
    if hf_tokenizer:
        AutoTokenizer.from_pretrained(resolve_local(hf_tokenizer)).save_pretrained(str(out))
    return paths


def open_clip_hub_reference(
    name: str, pretrained: str | os.PathLike | None, model_cfg: Mapping[str, Any]
) -> str | None:
    """``"hf-hub:<repo>"`` when the weights of ``(name, pretrained)`` are a Hub repo in open_clip's layout
    (``name`` itself, or the registry entry of a pretrained tag when loading that repo gives the same
    model: default weights file, same QuickGELU); else ``None``."""
    import open_clip
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    schema, identifier = open_clip.factory.parse_model_name(name)
    if schema == "hf-hub":
        return name
    if schema is not None or pretrained is None or os.path.exists(str(pretrained)):
        return None
    tag = open_clip.get_pretrained_cfg(identifier.replace("/", "-"), str(pretrained)) or {}
    parts = str(tag.get("hf_hub") or "").strip("/").split("/")
    repo, filename = "/".join(parts[:2]), "/".join(parts[2:])
    if len(parts) < 2 or filename not in ("", HF_WEIGHTS_NAME, HF_SAFE_WEIGHTS_NAME):
        return None
    if bool(tag.get("quick_gelu", False)) != bool(model_cfg.get("quick_gelu", False)):
        return None
    return f"hf-hub:{repo}"


def resolve_checkpoint(pretrained: str | os.PathLike) -> str:
    """A checkpoint file: ``pretrained`` itself, or the preferred one inside a folder."""
    path = Path(pretrained)
    if path.is_file():
        return str(path)
    if path.is_dir():
        import open_clip.factory

        found = open_clip.factory._find_checkpoint_in_dir(path)
        if found is None:
            raise FileNotFoundError(f"No checkpoint (*.safetensors, *.bin, *.pth) in {path}.")
        return found
    raise FileNotFoundError(
        f"pretrained={str(pretrained)!r} is not a file or folder. With a config dict, pretrained must be a local "
        f"checkpoint; pretrained tags ('openai', 'laion2b_…') need a model name, e.g. from_open_clip('ViT-B-32', "
        f"pretrained='openai')."
    )


@dataclass
class OpenCLIPOutput(ModelOutput):
    """Output of :meth:`OpenCLIPModel.forward` (the fields of ``transformers.CLIPOutput``)."""

    loss: torch.Tensor | None = None
    logits_per_image: torch.Tensor | None = None
    logits_per_text: torch.Tensor | None = None
    image_embeds: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None
    logit_scale: torch.Tensor | None = None


class OpenCLIPModel(PreTrainedModel):
    """An open_clip model (``self.clip``) with the ``PreTrainedModel`` save/load machinery.

    ``forward`` mirrors ``transformers.CLIPModel``; ``save_pretrained`` also writes open_clip's own
    layout, so the folder loads in plain open_clip. Details: docs/adapters.md ("open_clip").
    """

    config_class = OpenCLIPConfig
    base_model_prefix = "clip"
    main_input_name = "pixel_values"
    supports_gradient_checkpointing = True

    def __init__(self, config: OpenCLIPConfig, clip: nn.Module | None = None) -> None:
        super().__init__(config)
        if clip is None:
            if config.model_cfg is None:
                raise ValueError(
                    "OpenCLIPConfig has neither model_cfg nor model_name: give the open_clip architecture, e.g. "
                    "OpenCLIPConfig(model_name='ViT-B-32') or OpenCLIPConfig(model_cfg={...})."
                )
            clip = build_open_clip(config.model_cfg, precision=config.precision)
        self.clip = clip
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """Only restore the causal masks (open_clip initialises its modules in their constructors)."""
        rebuild_causal_masks(module)

    def rebuild_attention_masks(self) -> int:
        """Recompute the causal text masks (:func:`rebuild_causal_masks`); returns how many were rebuilt."""
        return rebuild_causal_masks(self.clip)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *model_args: Any, **kwargs: Any):
        """``PreTrainedModel.from_pretrained`` followed by :meth:`rebuild_attention_masks`; an open_clip name
        (``"hf-hub:org/repo"``, ``"local-dir:/path"``) is built with :meth:`from_open_clip` instead."""
        name = pretrained_model_name_or_path
        if not (isinstance(name, str) and name.startswith(OPEN_CLIP_SCHEMAS)):
            loaded = super().from_pretrained(name, *model_args, **kwargs)
            (loaded[0] if isinstance(loaded, tuple) else loaded).rebuild_attention_masks()
            return loaded
        dtype = kwargs.pop("dtype", None)
        dtype = kwargs.pop("torch_dtype", None) or dtype
        cache_dir = kwargs.pop("cache_dir", None)
        unsupported = sorted(key for key, value in kwargs.items() if value is not None)
        if unsupported:
            raise TypeError(
                f"OpenCLIPModel.from_pretrained({name!r}): {unsupported} cannot be applied to an open_clip name; "
                f"open_clip takes only cache_dir (and dtype is applied after loading). Load the model without them."
            )
        model = cls.from_open_clip(name, cache_dir=cache_dir)
        if dtype is not None and dtype != "auto":
            model = model.to(getattr(torch, dtype) if isinstance(dtype, str) else dtype)
        return model.eval()

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """``nn.Module.load_state_dict`` that also takes open_clip's own state dict (keys without ``clip.``),
        as ``model.safetensors`` holds it (``Trainer`` loads it so to resume or load the best model)."""
        prefix = f"{self.base_model_prefix}."
        if state_dict and not any(key.startswith(prefix) for key in state_dict):
            state_dict = {prefix + key: value for key, value in state_dict.items()}
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def save_pretrained(
        self, save_directory: str | os.PathLike, is_main_process: bool = True,
        state_dict: dict[str, torch.Tensor] | None = None, push_to_hub: bool = False, *,
        open_clip_layout: bool = True, **kwargs: Any,
    ):
        """Write ``config.json``, ``model.safetensors`` (open_clip's keys) and, with ``open_clip_layout``,
        open_clip's own files. ``push_to_hub=True`` saves, then uploads with :meth:`push_to_hub`."""
        out = Path(save_directory)
        state = self.state_dict() if state_dict is None else state_dict
        prefix = f"{self.base_model_prefix}."
        state = {key[len(prefix) :] if key.startswith(prefix) else key: value for key, value in state.items()}
        if is_main_process:  # a hard link to earlier weights must not follow model.safetensors being rewritten
            (out / OPEN_CLIP_WEIGHTS_NAME).unlink(missing_ok=True)
        hub_kwargs = {key: kwargs.pop(key) for key in _PUSH_KWARGS if key in kwargs}
        result = super().save_pretrained(save_directory, is_main_process=is_main_process, state_dict=state, **kwargs)
        if open_clip_layout and is_main_process:
            single_file = out / "model.safetensors"
            weights_from = single_file if single_file.is_file() else None
            write_open_clip_layout(self.clip, self.config, out, weights_from=weights_from)
        if push_to_hub:
            repo_id = hub_kwargs.pop("repo_id", None) or out.resolve().name
            self.push_to_hub(repo_id, **hub_kwargs)
        return result

    def activation_checkpointing_enable(
        self, activation_checkpointing_kwargs: dict | None = None, every_n_layers: int = 1, offload: bool = False
    ) -> None:
        """open_clip's own block checkpointing (``set_grad_checkpointing``); the kwargs are not used."""
        self.clip.set_grad_checkpointing(True)

    def activation_checkpointing_disable(self) -> None:
        self.clip.set_grad_checkpointing(False)

    @property
    def is_activation_checkpointing(self) -> bool:
        return any(getattr(m, "grad_checkpointing", False) or getattr(m, "gradient_checkpointing", False)
                   for m in self.clip.modules())

    def get_input_embeddings(self) -> nn.Module:
        """The text tower's token embedding (what ``transformers`` and peft resize or adapt)."""
        return open_clip_token_embedding(self.clip)

    @property
    def logit_scale(self) -> nn.Parameter:
        return self.clip.logit_scale

    @property
    def logit_bias(self) -> nn.Parameter | None:
        return getattr(self.clip, "logit_bias", None)

    def get_image_features(self, pixel_values: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Projected image embeddings (``clip.encode_image``), ``n x embed_dim``."""
        return self.clip.encode_image(pixel_values, normalize=normalize)

    def get_text_features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, normalize: bool = False
    ) -> torch.Tensor:
        """Projected text embeddings (``clip.encode_text``); open_clip derives padding from the ids."""
        return self.clip.encode_text(input_ids, normalize=normalize)

    def forward(
        self, pixel_values: torch.Tensor | None = None, input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None, return_loss: bool | None = None,
    ) -> OpenCLIPOutput:
        if pixel_values is None and input_ids is None:
            raise ValueError("OpenCLIPModel.forward needs pixel_values, input_ids, or both.")
        image = self.get_image_features(pixel_values, normalize=True) if pixel_values is not None else None
        text = self.get_text_features(input_ids, normalize=True) if input_ids is not None else None
        scale = self.logit_scale.exp()
        out = OpenCLIPOutput(image_embeds=image, text_embeds=text, logit_scale=scale)
        if image is not None and text is not None:
            logits = scale * image @ text.T
            if self.logit_bias is not None:
                logits = logits + self.logit_bias
            out.logits_per_image, out.logits_per_text = logits, logits.T
            if return_loss:
                from hf_infonc.losses import clip_contrastive_loss

                out.loss = clip_contrastive_loss(image, text, scale)
        return out

    def get_tokenizer(self, **kwargs: Any) -> OpenCLIPTokenizer:
        """The open_clip tokenizer of this architecture (callable -> LongTensor of ids), saveable by the Trainer."""
        return OpenCLIPTokenizer.from_config(self.config, **kwargs)

    def image_transform(self, is_train: bool = False):
        """open_clip's torchvision preprocessing for this model (``image_transform_v2``)."""
        from open_clip.transform import PreprocessCfg, image_transform_v2

        cfg = dict(self.config.preprocess_cfg or {})
        cfg.setdefault("size", self.clip.visual.image_size)
        return image_transform_v2(PreprocessCfg(**cfg), is_train=is_train)

    @classmethod
    def from_open_clip(
        cls, model_name_or_cfg: str | Mapping[str, Any], pretrained: str | os.PathLike | None = None, *,
        pretrained_text: bool = True, pretrained_image: bool = False, precision: str = "fp32",
        force_quick_gelu: bool = False, force_image_size: int | tuple[int, int] | None = None,
        force_context_length: int | None = None, cache_dir: str | None = None,
    ) -> OpenCLIPModel:
        """Build (and load) an open_clip model and wrap it.

        Args:
            model_name_or_cfg: an open_clip model name (``"ViT-B-32"``, ``"hf-hub:org/repo"``,
                ``"local-dir:/path"``, or one added with ``open_clip.add_model_config``) or a model config dict.
            pretrained: a pretrained tag of that name (``"openai"``, downloaded by open_clip), or a local
                checkpoint file or folder. ``None``: random weights, except the towers below.
            pretrained_text / pretrained_image: without a full checkpoint, load the pretrained HF text tower
                (``text_cfg.hf_model_name``) / timm vision tower (``vision_cfg.timm_model_name``).
        """
        from dataclasses import asdict

        import open_clip
        from open_clip.model import get_model_preprocess_cfg
        from open_clip.transform import PreprocessCfg

        name = None if isinstance(model_name_or_cfg, Mapping) else str(model_name_or_cfg)
        cfg = clean_model_cfg(model_name_or_cfg) if name is None else resolve_model_cfg(name)
        if force_image_size is not None:
            cfg["vision_cfg"]["image_size"] = force_image_size
        if force_context_length is not None:
            cfg["text_cfg"]["context_length"] = force_context_length
        if force_quick_gelu:
            cfg["quick_gelu"] = True
        preprocess_cfg = None
        if name is None:
            checkpoint = resolve_checkpoint(pretrained) if pretrained is not None else None
            clip = build_open_clip(
                cfg, precision=precision,
                pretrained_text=pretrained_text and checkpoint is None,
                pretrained_image=pretrained_image and checkpoint is None,
            )
            if checkpoint is not None:
                open_clip.load_checkpoint(clip, checkpoint, strict=True)
        else:
            if pretrained is not None and os.path.isdir(pretrained):
                pretrained = resolve_checkpoint(pretrained)
            clip = open_clip.create_model(
                name, pretrained=None if pretrained is None else str(pretrained), precision=precision,
                force_quick_gelu=force_quick_gelu, force_image_size=force_image_size,
                force_context_length=force_context_length, pretrained_text=pretrained_text,
                pretrained_image=pretrained_image, cache_dir=cache_dir,
            )
            preprocess_cfg = get_model_preprocess_cfg(clip)
        if preprocess_cfg is None:
            preprocess_cfg = {**asdict(PreprocessCfg()), "size": clip.visual.image_size}
        config = OpenCLIPConfig(
            model_name=name, model_cfg=cfg, precision=precision, preprocess_cfg=json_safe(preprocess_cfg)
        )
        if name is not None and force_image_size is None and force_context_length is None:
            config.name_or_path = open_clip_hub_reference(name, pretrained, cfg) or ""
        return cls(config, clip=clip)

    def save_open_clip_checkpoint(self, directory: str | os.PathLike, *, name: str | None = None) -> dict[str, Path]:
        """Export ``self.clip`` as a plain open_clip checkpoint: open_clip's layout (``"local-dir:<directory>"``)
        and ``<name>.json`` (for ``open_clip.add_model_config(directory)``); returns the paths written."""
        if name is None and self.config.model_name:
            import open_clip

            _, identifier = open_clip.factory.parse_model_name(self.config.model_name)
            name = Path(identifier.rstrip("/")).name.replace("/", "-")
        out = Path(directory)
        paths = write_open_clip_layout(self.clip, self.config, out)
        paths["model_config"] = out / f"{name or 'hf-infonc-open-clip'}.json"
        paths["model_config"].write_text(json.dumps(self.config.model_cfg, indent=2))
        return paths


def tiny_open_clip(*, minilm_text: bool = False, wrapped: bool = True, seed: int = 0) -> nn.Module:
    """A tiny open_clip model in eval mode (configs in :mod:`hf_infonc.testing`): wrapped in :class:`OpenCLIPModel`
    (default) or the raw open_clip model. ``minilm_text=True``: the pretrained MiniLM text tower."""
    torch.manual_seed(seed)
    model = OpenCLIPModel.from_open_clip(tiny_open_clip_minilm_cfg() if minilm_text else tiny_open_clip_cfg())
    return model.eval() if wrapped else model.eval().clip
