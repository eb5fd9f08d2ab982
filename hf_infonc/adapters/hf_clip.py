"""Adapter for ``transformers.CLIPModel`` (full fine-tuning, LoRA through peft, frozen towers).

Two uses, chosen by the batch:

* **classification** (batch has ``pixel_values`` and ``labels``): the head is the matrix of
  normalised text embeddings of the class prompts (SPEC §2.4), averaged over the prompt
  templates and re-normalised (CLIP's prompt ensembling); ``logits = scale · img · headᵀ`` and
  the base loss is cross-entropy. The head is recomputed every step when any text-side
  parameter trains, and cached when the text side is frozen.
* **image–caption pairs** (batch has ``pixel_values`` and ``input_ids``): the model's own forward
  runs with ``return_loss=True`` (so the loss and predictions are ``CLIPModel``'s, as under
  ``Trainer``); the anchors are its caption embeddings (``pairwise=True``). On several processes
  the trainer replaces the loss with CLIP's contrastive loss over the batch gathered from all of
  them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from hf_infonc.adapters.base import AdapterOutput, ModelAdapter, register_adapter, unwrap_peft
from hf_infonc.adapters.prompts import ClassPrompts, classification_logits


def _pooled(output: Any) -> torch.Tensor:
    """``get_*_features`` returns a ``BaseModelOutputWithPooling`` in transformers 5, a tensor before."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


@register_adapter
class HFCLIPAdapter(ModelAdapter):
    family = "hf-clip"
    description = "transformers.CLIPModel (and CLIP-like models with get_image_features/get_text_features)"

    computes_loss = True  # classification: cross-entropy of the prompt-head logits

    def __init__(self) -> None:
        self.prompts: ClassPrompts | None = None

    @classmethod
    def supports(cls, model: nn.Module) -> bool:
        from transformers import CLIPModel

        return isinstance(model, CLIPModel)

    def setup(self, model, *, class_names=None, templates=None, processing_class=None) -> None:
        # CLIPModel.forward names no labels: with class names, the batches' labels are the targets
        self.label_names = None if class_names is None else ["labels"]
        if class_names is None:
            self.prompts = None
            return
        tokenizer = getattr(processing_class, "tokenizer", processing_class)
        if tokenizer is None:
            raise ValueError(
                "A CLIP classification run needs a tokenizer for the class prompts: pass "
                "processing_class=CLIPProcessor/CLIPTokenizer to InfoNCTrainer."
            )
        self.prompts = ClassPrompts.from_hf_tokenizer(class_names, templates, tokenizer)

    def _encode_text(self, core: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        return _pooled(core.get_text_features(input_ids=input_ids, attention_mask=attention_mask))

    def is_pairwise(self, inputs: dict[str, Any]) -> bool:
        return "input_ids" in inputs  # captions: image–caption pairs; else classification with the prompt head

    def head_rows(self, model: nn.Module) -> torch.Tensor | None:
        if self.prompts is None:
            return None
        core = unwrap_peft(model)
        text_parameters = [*core.text_model.parameters(), *core.text_projection.parameters()]
        return self.prompts.head(
            lambda ids, mask: self._encode_text(core, ids, mask), text_parameters, core.logit_scale.device
        )

    def forward(self, model: nn.Module, inputs: dict[str, Any]) -> AdapterOutput:
        core = unwrap_peft(model)
        scale = core.logit_scale.exp()
        if "input_ids" in inputs:  # image–caption pairs: the model's own forward, as Trainer runs it
            outputs = model(**{**{k: v for k, v in inputs.items() if k != "labels"}, "return_loss": True})
            return AdapterOutput(
                loss=outputs.loss, features=outputs.image_embeds, head_rows=outputs.text_embeds, logit_scale=scale,
                pairwise=True, labels=inputs.get("labels"), outputs=outputs,
            )
        image = _pooled(core.get_image_features(pixel_values=inputs["pixel_values"]))
        if self.prompts is None:
            raise ValueError(
                "Class names are missing for a CLIP classification run: pass class_names=[...] to InfoNCTrainer, or "
                "use a train_dataset whose 'label' column is a datasets.ClassLabel with names."
            )
        head = self.head_rows(model)
        labels = inputs.get("labels")
        logits = classification_logits(image, head, scale)
        loss = None if labels is None else nn.functional.cross_entropy(logits, labels)
        return AdapterOutput(loss=loss, logits=logits, features=image, head_rows=head, labels=labels, logit_scale=scale)
