"""An open_clip tokenizer that ``transformers.Trainer`` can save (``save_pretrained`` / ``from_pretrained``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from hf_infonc.local_models import resolve_text_cfg
from hf_infonc.models.open_clip.config import OpenCLIPConfig

OPEN_CLIP_TOKENIZER_CONFIG_NAME = "open_clip_tokenizer.json"


def build_tokenizer(spec: dict, directory: Path | None = None) -> Any:
    """The open_clip tokenizer a spec describes (HF tokenizer files, when ``"."``, read from ``directory``)."""
    from open_clip.tokenizer import HFTokenizer, SimpleTokenizer

    kind, length = spec.get("tokenizer_class"), spec.get("context_length")
    options = dict(spec.get("tokenizer_kwargs") or {})
    if kind == "HFTokenizer":
        name = spec.get("hf_tokenizer_name") or "."
        source = str(directory) if name == "." and directory is not None else name
        return HFTokenizer(source, context_length=length, tokenizer_mode=spec.get("tokenizer_mode"), **options)
    if kind == "SimpleTokenizer":
        return SimpleTokenizer(context_length=length, **options)
    import open_clip

    if not spec.get("model_name"):
        raise ValueError(f"Cannot rebuild an open_clip {kind} from {directory}: no model_name recorded.")
    return open_clip.get_tokenizer(spec["model_name"], context_length=length)


class OpenCLIPTokenizer:
    """Any open_clip tokenizer (called unchanged) plus ``save_pretrained`` / ``from_pretrained``, which write and
    read ``open_clip_tokenizer.json`` (and an HF text tower's tokenizer files), so ``Trainer`` can save it.
    E.g. ``OpenCLIPTokenizer(open_clip.get_tokenizer("ViT-B-32"))`` or ``OpenCLIPModel.get_tokenizer()``.
    """

    def __init__(self, tokenizer: Any, *, spec: dict | None = None) -> None:
        if not callable(tokenizer):
            raise TypeError(f"Expected an open_clip tokenizer (a callable), got {type(tokenizer).__name__}.")
        self.tokenizer = tokenizer
        kind = type(tokenizer).__name__
        if spec is None:
            spec = {"tokenizer_class": kind, "context_length": getattr(tokenizer, "context_length", None)}
            if kind == "HFTokenizer":
                spec["hf_tokenizer_name"] = getattr(tokenizer.tokenizer, "name_or_path", None)
                spec["tokenizer_mode"] = getattr(tokenizer, "tokenizer_mode", None) or None
        self.spec = dict(spec)

    @classmethod
    def from_config(cls, config: OpenCLIPConfig, **kwargs: Any) -> OpenCLIPTokenizer:
        """The tokenizer of an open_clip architecture (``kwargs``: ``context_length`` and tokenizer options)."""
        import open_clip

        text_cfg = resolve_text_cfg(config.text_cfg)
        context_length = kwargs.pop("context_length", text_cfg.get("context_length", 77))
        tokenizer_kwargs = {**(text_cfg.get("tokenizer_kwargs") or {}), **kwargs}
        spec = {"context_length": context_length, "tokenizer_kwargs": tokenizer_kwargs, "model_name": config.model_name}
        if text_cfg.get("hf_tokenizer_name"):
            spec.update(tokenizer_class="HFTokenizer", hf_tokenizer_name=text_cfg["hf_tokenizer_name"],
                        tokenizer_mode=text_cfg.get("tokenizer_mode"))
        elif config.model_name and "siglip" in config.model_name.lower():
            tokenizer = open_clip.get_tokenizer(config.model_name, context_length=context_length, **kwargs)
            return cls(tokenizer, spec={**spec, "tokenizer_class": type(tokenizer).__name__})
        else:
            spec["tokenizer_class"] = "SimpleTokenizer"
        return cls(build_tokenizer(spec), spec=spec)

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
        spec = dict(self.spec)
        if spec.get("tokenizer_class") == "HFTokenizer":
            self.tokenizer.tokenizer.save_pretrained(str(out))
            spec["hf_tokenizer_name"] = "."  # the HF files sit beside this json
        (out / OPEN_CLIP_TOKENIZER_CONFIG_NAME).write_text(json.dumps(spec, indent=2))
        return (str(out / OPEN_CLIP_TOKENIZER_CONFIG_NAME),)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> OpenCLIPTokenizer:
        spec = json.loads((Path(directory) / OPEN_CLIP_TOKENIZER_CONFIG_NAME).read_text())
        return cls(build_tokenizer(spec, Path(directory)), spec=spec)
