"""Secrets (Hub tokens, passwords): which keys and values are secret, and their redaction.

Every text or mapping that hf_infonc writes or prints (the card, ``recipe.yaml``, ``metrics.json``,
error messages) goes through :func:`redact_text` or :func:`redact`. This module imports nothing
else of the package, so every layer can use it.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

REDACTED = "<redacted>"

_SECRET_KEY = re.compile(r"(^|[_.-])(token|password|passwd|secret|api[_-]?key|access[_-]?key)$", re.IGNORECASE)
#: Hugging Face user access tokens: ``hf_`` followed by 34 letters and digits.
_HUB_TOKEN_VALUE = re.compile(r"\bhf_[A-Za-z0-9]{30,}\b")


def hub_token() -> str | None:
    """The saved or environment Hub token (``huggingface_hub.get_token``), ``None`` when there is none."""
    try:
        from huggingface_hub import get_token

        return get_token()
    except Exception:  # noqa: BLE001 - a broken login must not stop redaction
        return None


def known_secrets(extra: Iterable[str | None] = ()) -> list[str]:
    """Token values to redact: ``extra`` plus ``HF_TOKEN``/``HUGGING_FACE_HUB_TOKEN`` and the saved login."""
    values = [*extra, os.environ.get("HF_TOKEN"), os.environ.get("HUGGING_FACE_HUB_TOKEN"), hub_token()]
    # Redact long values first so that a token containing a shorter one is still caught whole.
    return sorted({v for v in values if isinstance(v, str) and len(v) >= 4}, key=len, reverse=True)


def is_secret_key(key: Any) -> bool:
    """Whether a mapping key names a secret (``hub_token``, ``token``, ``*_password``, ``api_key``, …)."""
    return isinstance(key, str) and bool(_SECRET_KEY.search(key))


def _redact_text(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return _HUB_TOKEN_VALUE.sub(REDACTED, text)


def _redact(value: Any, secrets: Sequence[str]) -> Any:
    if isinstance(value, Mapping):
        return {
            key: REDACTED if is_secret_key(key) and item not in (None, "", False) else _redact(item, secrets)
            for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        return type(value)(_redact(item, secrets) for item in value)
    return _redact_text(value, secrets) if isinstance(value, str) else value


def redact_text(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with every known token value and every ``hf_…`` token replaced by ``<redacted>``."""
    return _redact_text(text, known_secrets(secrets))


def redact(value: Any, secrets: Iterable[str | None] = ()) -> Any:
    """A deep copy of ``value`` with secret keys (``hub_token``, ``token``, ``*_password``, …) and token
    values redacted. Keys with an empty value (``hub_token: null``) are kept as they are."""
    return _redact(value, known_secrets(secrets))


def clean_output_dir(output_dir: str | os.PathLike, secrets: Iterable[str | None] = ()) -> list[str]:
    """Make a run's output directory safe to share; returns what was done: removes ``training_args.bin`` (the whole
    ``TrainingArguments`` pickled by ``Trainer._save``, ``hub_token`` included; nothing needs it to load the model),
    redacts secrets from ``recipe.yaml`` and ``metrics.json``. ``checkpoint-*`` folders are never uploaded: left alone.
    """
    folder = Path(output_dir)
    done = []
    if (folder / "training_args.bin").is_file():
        (folder / "training_args.bin").unlink()
        done.append("removed training_args.bin (pickled TrainingArguments)")
    for name in ("recipe.yaml", "metrics.json"):
        path = folder / name
        if not path.is_file():
            continue
        text = path.read_text()
        cleaned = redact_text(text, secrets)
        if name == "recipe.yaml":  # secret keys too, when it parses
            with contextlib.suppress(yaml.YAMLError):
                raw = yaml.safe_load(text)
                redacted = redact(raw, secrets) if isinstance(raw, dict) else raw
                cleaned = yaml.safe_dump(redacted, sort_keys=False) if redacted != raw else cleaned
        if cleaned != text:
            path.write_text(cleaned)
            done.append(f"redacted secrets in {name}")
    return done


__all__ = ["REDACTED", "clean_output_dir", "hub_token", "is_secret_key", "known_secrets", "redact", "redact_text"]
