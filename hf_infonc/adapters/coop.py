"""Adapters for heads on frozen CLIP towers (CoOp, the linear probe): the model computes its own head, the
adapter maps its output onto :class:`AdapterOutput`. Registered *first*, ahead of the CLIP adapters;
classification only.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from hf_infonc.adapters.base import AdapterOutput, FeatureCapture, ModelAdapter, register_adapter, unwrap_peft
from hf_infonc.models.coop import CoOpCLIP
from hf_infonc.models.frozen_clip import CLIPLinearProbe, FrozenCLIPHeadModel


class FrozenCLIPHeadAdapter(ModelAdapter):
    """Shared logic for :class:`~hf_infonc.models.frozen_clip.FrozenCLIPHeadModel` subclasses."""

    family = "frozen-clip-head"
    description = "hf_infonc.models.FrozenCLIPHeadModel subclasses"
    model_class: ClassVar[type[nn.Module]] = FrozenCLIPHeadModel

    @classmethod
    def supports(cls, model: nn.Module) -> bool:
        return isinstance(model, cls.model_class)

    def setup(self, model, *, class_names=None, templates=None, processing_class=None) -> None:
        core = unwrap_peft(model)
        if class_names is not None and list(class_names) != core.class_names:
            raise ValueError(
                f"The {type(core).__name__} was built for the classes {core.class_names[:5]}… but the trainer's class "
                f"names are {list(class_names)[:5]}…: the label ids of the data must follow the model's class order. "
                f"Build the model with the dataset's class names (in ClassLabel order)."
            )

    def head_rows(self, model: nn.Module) -> torch.Tensor:
        return unwrap_peft(model).head_rows()

    def forward(self, model: nn.Module, inputs: dict[str, Any]) -> AdapterOutput:
        core = unwrap_peft(model)
        if "input_ids" in inputs:
            raise ValueError(
                f"{type(core).__name__} is a classifier on frozen CLIP towers; image–caption batches (with input_ids) "
                f"need the plain CLIP model (mode 'full' or 'lora')."
            )
        labels = inputs.get("labels")
        out = model(**inputs)  # the model's own forward (and loss), as Trainer calls it
        return AdapterOutput(loss=out.loss, logits=out.logits, features=out.image_embeds, head_rows=out.head_rows,
                             labels=labels, logit_scale=out.logit_scale, outputs=out)

    def is_pairwise(self, inputs: dict[str, Any]) -> bool:
        return False

    def capture_features(self, model: nn.Module, capture: FeatureCapture) -> Any:
        def grab_output(module: nn.Module, _args: tuple, output: Any) -> None:
            if not module.training:
                capture.put(output.image_embeds)

        return unwrap_peft(model).register_forward_hook(grab_output)


class CoOpAdapter(FrozenCLIPHeadAdapter):
    family = "coop"
    description = "hf_infonc.models.CoOpCLIP (CoOp prompt learning on a frozen HF or open_clip CLIP)"
    model_class = CoOpCLIP


class CLIPLinearProbeAdapter(FrozenCLIPHeadAdapter):
    family = "clip-linear-probe"
    description = "hf_infonc.models.CLIPLinearProbe (linear head on frozen CLIP image embeddings)"
    model_class = CLIPLinearProbe


register_adapter(CLIPLinearProbeAdapter, first=True)
register_adapter(CoOpAdapter, first=True)

__all__ = ["CLIPLinearProbeAdapter", "CoOpAdapter", "FrozenCLIPHeadAdapter"]
