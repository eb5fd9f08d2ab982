"""A tiny open_clip model for tests, benchmarks and offline demos (configs in :mod:`hf_infonc.testing`)."""

from __future__ import annotations

import torch
from torch import nn

from hf_infonc.models.open_clip.model import OpenCLIPModel
from hf_infonc.testing import tiny_open_clip_cfg, tiny_open_clip_minilm_cfg


def tiny_open_clip(*, minilm_text: bool = False, wrapped: bool = True, seed: int = 0) -> nn.Module:
    """A tiny open_clip model in eval mode: wrapped in :class:`OpenCLIPModel` (default) or the raw open_clip model.

    ``minilm_text=True``: the pretrained MiniLM text tower (:func:`~hf_infonc.testing.tiny_open_clip_minilm_cfg`).
    """
    torch.manual_seed(seed)
    model = OpenCLIPModel.from_open_clip(tiny_open_clip_minilm_cfg() if minilm_text else tiny_open_clip_cfg())
    return model.eval() if wrapped else model.eval().clip
