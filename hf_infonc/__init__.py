"""hf_infonc: information-theoretic neural-collapse measures and losses for Hugging Face fine-tuning.

``import hf_infonc`` is cheap: the pure-torch core lives in ``hf_infonc.info`` (import it
directly), and the trainer and losses listed below are imported on first access.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "InfoNCTrainer": "hf_infonc.trainer",
    "InfoNCTrainingArguments": "hf_infonc.training_args",
    "InformationMetrics": "hf_infonc.evaluation",
    "add_information_metrics": "hf_infonc.evaluation",
    "CrossModalAlignmentLoss": "hf_infonc.losses",
    "MutualInformationLoss": "hf_infonc.losses",
    "EntropyGapLoss": "hf_infonc.losses",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hf_infonc' has no attribute {name!r}")
