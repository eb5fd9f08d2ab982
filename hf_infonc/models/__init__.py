"""Model wrappers: open_clip as a ``PreTrainedModel``, CoOp, a zero-shot-initialised linear probe, the Wide
ResNet (the open_clip and Wide ResNet classes register with the Auto classes on import)."""

from hf_infonc.models.coop import CoOpCLIP, CoOpConfig
from hf_infonc.models.frozen_clip import CLIPHeadOutput, CLIPLinearProbe, CLIPLinearProbeConfig, FrozenCLIPHeadModel
from hf_infonc.models.open_clip import (
    OpenCLIPConfig,
    OpenCLIPModel,
    OpenCLIPOutput,
    OpenCLIPTokenizer,
    build_open_clip,
    is_causal_mask,
    rebuild_causal_masks,
    tiny_open_clip,
)
from hf_infonc.models.wide_resnet import (
    WideResNetConfig,
    WideResNetForImageClassification,
    WideResNetModel,
    wide_resnet_num_parameters,
)
from hf_infonc.testing import tiny_open_clip_cfg, tiny_open_clip_minilm_cfg

__all__ = [
    "CLIPHeadOutput", "CLIPLinearProbe", "CLIPLinearProbeConfig", "CoOpCLIP", "CoOpConfig", "FrozenCLIPHeadModel",
    "OpenCLIPConfig", "OpenCLIPModel", "OpenCLIPOutput", "OpenCLIPTokenizer", "WideResNetConfig",
    "WideResNetForImageClassification", "WideResNetModel", "build_open_clip", "is_causal_mask",
    "rebuild_causal_masks", "tiny_open_clip", "tiny_open_clip_cfg", "tiny_open_clip_minilm_cfg",
    "wide_resnet_num_parameters",
]
