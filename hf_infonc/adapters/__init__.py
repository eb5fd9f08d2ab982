"""Model adapters: per model family, how to get (features, head rows, logits) from a batch."""

from hf_infonc.adapters.base import (
    AdapterOutput,
    ModelAdapter,
    adapter_for,
    call_through_wrapper,
    register_adapter,
    registered_adapters,
    unwrap_peft,
)
from hf_infonc.adapters.classifier import (
    ImageClassificationAdapter,
    LinearHeadAdapter,
    SequenceClassificationAdapter,
)
from hf_infonc.adapters.hf_clip import HFCLIPAdapter
from hf_infonc.adapters.open_clip import OpenCLIPAdapter
from hf_infonc.adapters.coop import CLIPLinearProbeAdapter, CoOpAdapter
from hf_infonc.adapters.prompts import ClassPrompts, build_prompts

__all__ = [
    "AdapterOutput",
    "CLIPLinearProbeAdapter",
    "CoOpAdapter",
    "OpenCLIPAdapter",
    "ClassPrompts",
    "HFCLIPAdapter",
    "ImageClassificationAdapter",
    "LinearHeadAdapter",
    "ModelAdapter",
    "SequenceClassificationAdapter",
    "adapter_for",
    "build_prompts",
    "call_through_wrapper",
    "register_adapter",
    "registered_adapters",
    "unwrap_peft",
]
