"""Whether the Hugging Face Hub may be used, and whether an error means it could not be reached.

One definition for the model factory, the data sources and the Hub upload. The environment is
read at each call (not at import), so a test or a script may set ``HF_HUB_OFFLINE`` late.
"""

from __future__ import annotations

import os
import sys

#: The values of an ``HF_*_OFFLINE`` variable that switch offline mode on (huggingface_hub's own list).
TRUE_VALUES = frozenset({"1", "true", "yes", "on", "y", "t"})

#: Exception class names (anywhere in the MRO) of the HTTP clients behind huggingface_hub that mean
#: "the network failed", matched by name so that neither httpx nor requests needs importing.
NETWORK_ERROR_NAMES = frozenset({
    "ConnectError", "ConnectTimeout", "ReadTimeout", "TimeoutException", "NetworkError", "TransportError",
    "ProxyError", "ConnectionError", "Timeout", "OfflineModeIsEnabled",
})


def offline_reason(*, datasets_too: bool = True) -> str | None:
    """Why the Hub must not be used, or ``None``: an offline variable is set (``HF_HUB_OFFLINE``, and
    ``HF_DATASETS_OFFLINE`` when ``datasets_too``), or huggingface_hub / datasets were imported offline."""
    variables = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE") if datasets_too else ("HF_HUB_OFFLINE",)
    for variable in variables:
        if os.environ.get(variable, "").strip().lower() in TRUE_VALUES:
            return f"offline mode is on ({variable}={os.environ[variable]})"
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "offline mode is on (huggingface_hub.constants.HF_HUB_OFFLINE)"
    if datasets_too:
        datasets = sys.modules.get("datasets")  # only when already imported: its config is read at import
        if datasets is not None and getattr(datasets.config, "HF_HUB_OFFLINE", False):
            return "offline mode is on (datasets.config.HF_HUB_OFFLINE)"
    return None


def hub_offline() -> bool:
    """Whether the Hub is off for models and uploads (``HF_HUB_OFFLINE`` or huggingface_hub's constant)."""
    return offline_reason(datasets_too=False) is not None


def is_network_error(error: BaseException) -> bool:
    """Whether ``error`` means the Hub could not be reached (or offline mode refused the call)."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    known = isinstance(error, (ConnectionError, TimeoutError, LocalEntryNotFoundError))
    return known or any(cls.__name__ in NETWORK_ERROR_NAMES for cls in type(error).__mro__)
