"""Semi-supervised training (FixMatch, FreeMatch) with the information losses; guide: docs/semi_supervised.md.

Names are imported on first access, so reading a recipe's ``ssl:`` section does not import the trainer.
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULES = {
    "config": ("ALGORITHMS", "INFO_TARGETS", "SemiSupervisedConfig"),
    "data": (
        "SSL_KEYS", "SemiSupervisedCollator", "SemiSupervisedDataset", "semi_supervised_training_data",
        "split_labeled_unlabeled",
    ),
    "thresholds": ("FixedThreshold", "SelfAdaptiveThreshold", "build_threshold", "fairness_loss"),
    "trainer": ("ModelEMA", "SemiSupervisedTrainer"),
}
_LAZY = {name: module for module, names in _MODULES.items() for name in names}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
