"""open_clip's own files: checkpoints read in, open_clip's folder layout written out, Hub references."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

OPEN_CLIP_WEIGHTS_NAME = "open_clip_model.safetensors"
OPEN_CLIP_CONFIG_NAME = "open_clip_config.json"


def write_open_clip_layout(
    clip: nn.Module, config: Any, out: Path, *, weights_from: Path | None = None
) -> dict[str, Path]:
    """``open_clip_model.safetensors`` + ``open_clip_config.json`` (+ the HF text tower's tokenizer files);
    the weights are a hard link to ``weights_from`` (a file in ``out`` holding open_clip's state dict) if given."""
    from safetensors.torch import save_file

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
        from transformers import AutoTokenizer

        from hf_infonc.local_models import resolve_local

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
