"""The EMA teacher: pseudo-labels from an exponential moving average of the weights (``ssl.ema_decay``)."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from transformers import TrainerCallback


class ModelEMA:
    """An exponential moving average of a model's weights: ``θ_ema ← d·θ_ema + (1-d)·θ``.

    Buffers (BatchNorm statistics) are copied. The copy stays in ``eval`` mode and never needs
    gradients; it gives the pseudo-labels of the weak views when ``ema_decay`` is set.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = float(decay)
        self.module = copy.deepcopy(model).eval()
        for parameter in self.module.parameters():
            parameter.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for ema, live in zip(self.module.parameters(), model.parameters()):
            if ema.dtype.is_floating_point:
                ema.mul_(self.decay).add_(live.detach().to(ema.dtype), alpha=1.0 - self.decay)
        for ema, live in zip(self.module.buffers(), model.buffers()):
            ema.copy_(live)


class EMAUpdate(TrainerCallback):
    """Updates the trainer's ``teacher`` after every optimizer step."""

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer

    def on_optimizer_step(self, args, state, control, **kwargs):
        teacher = self.trainer.teacher
        if teacher is not None:
            teacher.update(self.trainer.accelerator.unwrap_model(self.trainer.model))
