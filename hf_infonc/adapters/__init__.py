"""Model adapters: per model family, how to get (features, head rows, logits) from a batch. Importing this
package registers every built-in adapter (those of heads on frozen CLIP towers first)."""

from hf_infonc.adapters.base import (
    AdapterOutput,
    ModelAdapter,
    adapter_for,
    call_through_wrapper,
    register_adapter,
    registered_adapters,
    unwrap_peft,
)
from hf_infonc.adapters.classifier import ImageClassificationAdapter, LinearHeadAdapter, SequenceClassificationAdapter
from hf_infonc.adapters.clip import HFCLIPAdapter, OpenCLIPAdapter
from hf_infonc.adapters.coop import CLIPLinearProbeAdapter, CoOpAdapter
from hf_infonc.models.clip_towers import ClassPrompts, build_prompts

__all__ = [
    "AdapterOutput", "CLIPLinearProbeAdapter", "ClassPrompts", "CoOpAdapter", "HFCLIPAdapter",
    "ImageClassificationAdapter", "LinearHeadAdapter", "ModelAdapter", "OpenCLIPAdapter",
    "SequenceClassificationAdapter", "adapter_for", "build_prompts", "call_through_wrapper", "register_adapter",
    "registered_adapters", "unwrap_peft",
]
