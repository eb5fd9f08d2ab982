"""Configuration of :class:`~hf_infonc.models.OpenCLIPModel`: open_clip's own model config dict."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from transformers import PretrainedConfig

MODEL_TYPE = "hf_infonc_open_clip"
BUILD_FLAGS = ("hf_model_pretrained", "timm_model_pretrained")


class OpenCLIPConfig(PretrainedConfig):
    """Configuration of :class:`OpenCLIPModel`.

    Args:
        model_name: open_clip architecture name (``"ViT-B-32"``, ``"hf-hub:org/repo"``, ``"local-dir:/path"``);
            picks the tokenizer, and gives ``model_cfg`` when that is not given.
        model_cfg: the open_clip model config dict, as in open_clip's ``model_configs/*.json``.
        precision: open_clip precision string (``"fp16"``/``"bf16"``: fp32 LayerNorms, open_clip's
            ``cast_dtype``); the weight dtype comes from ``from_pretrained(dtype=…)``.
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
            self.model_cfg = clean_model_cfg(self.model_cfg)

    @property
    def text_cfg(self) -> dict:
        return dict((self.model_cfg or {}).get("text_cfg", {}))


def clean_model_cfg(model_cfg: Mapping[str, Any]) -> dict:
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
        for flag in BUILD_FLAGS:
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
