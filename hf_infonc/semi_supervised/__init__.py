"""Semi-supervised training with the information losses: FixMatch and FreeMatch on ``InfoNCTrainer``.

``config`` (:class:`SemiSupervisedConfig`, the ``ssl:`` section of a recipe), ``thresholds`` (FixMatch's
fixed and FreeMatch's self-adaptive thresholds, the fairness loss), ``data`` (the stream of labelled +
unlabelled units and its collator), ``teacher`` (the EMA teacher), ``trainer``
(:class:`SemiSupervisedTrainer`) and ``recipe`` (the training data of a recipe). Guide: docs/semi_supervised.md.

Names are imported on first access, so reading a recipe's ``ssl:`` section does not import the trainer.
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULES = {
    "config": ("ALGORITHMS", "INFO_TARGETS", "SemiSupervisedConfig"),
    "data": ("SSL_KEYS", "SemiSupervisedCollator", "SemiSupervisedDataset"),
    "recipe": ("semi_supervised_training_data", "split_labeled_unlabeled"),
    "teacher": ("ModelEMA",),
    "thresholds": ("FixedThreshold", "SelfAdaptiveThreshold", "build_threshold", "fairness_loss"),
    "trainer": ("SemiSupervisedTrainer",),
}
_LAZY = {name: module for module, names in _MODULES.items() for name in names}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
