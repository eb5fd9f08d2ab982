"""Adapter for open_clip models: a raw ``open_clip.model.CLIP`` / ``CustomTextCLIP``, or ``OpenCLIPModel``.

The same two uses as :mod:`hf_infonc.adapters.hf_clip`, chosen by the batch:

* **classification** (``pixel_values`` and ``labels``): the head is the ``C x d`` matrix of
  normalised text embeddings of the class prompts, ensembled over the templates
  (:class:`~hf_infonc.adapters.prompts.ClassPrompts`); ``logits = scale · img_n · headᵀ``; base
  loss = cross-entropy. The head is cached while no text-side parameter trains (the text side is
  every parameter except the vision tower and the logit scale/bias), recomputed with gradients
  otherwise.
* **image–caption pairs** (``pixel_values`` and ``input_ids``): the caption embeddings are the
  anchors (``pairwise=True``, ``loss=None``); the trainer computes the gathered contrastive loss.
  An ``OpenCLIPModel`` runs its own forward with ``return_loss=True`` (its loss and outputs, as under
  ``Trainer``; on several processes the trainer replaces the loss with the gathered one).

Tokenizer (``processing_class``): open_clip's tokenizer, a callable returning a LongTensor of ids
padded to the context length (``open_clip.get_tokenizer(name)``, ``open_clip.tokenizer.HFTokenizer``
for an HF text tower, or ``OpenCLIPModel.get_tokenizer()``, used when none is given). A
``transformers`` tokenizer also works: its output is padded to the model's context length.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from hf_infonc.adapters.base import AdapterOutput, ModelAdapter, register_adapter, unwrap_peft
from hf_infonc.adapters.prompts import ClassPrompts, classification_logits
from hf_infonc.models import clip_towers


@register_adapter
class OpenCLIPAdapter(ModelAdapter):
    family = "open_clip"
    description = "open_clip CLIP / CustomTextCLIP (ViT, HF text towers) and hf_infonc.models.OpenCLIPModel"

    computes_loss = True  # classification: cross-entropy of the prompt-head logits

    def __init__(self) -> None:
        self.prompts: ClassPrompts | None = None

    @classmethod
    def supports(cls, model: nn.Module) -> bool:
        return clip_towers.inner_open_clip(model) is not None

    #: a raw open_clip model's forward names ``image``/``text``: keep the batch keys the adapter reads
    input_names = ["pixel_values", "input_ids", "attention_mask"]

    def setup(self, model, *, class_names=None, templates=None, processing_class=None) -> None:
        self.label_names = None if class_names is None else ["labels"]
        if class_names is None:
            self.prompts = None
            return
        core = unwrap_peft(model)
        tokenizer = processing_class
        if tokenizer is None and hasattr(core, "get_tokenizer"):
            tokenizer = core.get_tokenizer()
        if tokenizer is None:
            raise ValueError(
                "An open_clip classification run needs the model's tokenizer for the class prompts: pass "
                "processing_class=open_clip.get_tokenizer('<model name>') (or open_clip.tokenizer.HFTokenizer(<path>) "
                "for an HF text tower) to InfoNCTrainer, or wrap the model in hf_infonc.models.OpenCLIPModel."
            )
        length = clip_towers.context_length(core)
        self.prompts = ClassPrompts.from_token_ids(
            class_names, templates, lambda texts: clip_towers.tokenize(tokenizer, texts, length=length)[0]
        )

    def is_pairwise(self, inputs: dict[str, Any]) -> bool:
        return "input_ids" in inputs  # captions: image–caption pairs; else classification with the prompt head

    def head_rows(self, model: nn.Module) -> torch.Tensor | None:
        if self.prompts is None:
            return None
        core = unwrap_peft(model)
        scale = clip_towers.logit_scale(core)
        return self.prompts.head(
            lambda ids, mask: clip_towers.encode_text(core, ids, mask), clip_towers.text_parameters(core), scale.device
        )

    def forward(self, model: nn.Module, inputs: dict[str, Any]) -> AdapterOutput:
        from transformers import PreTrainedModel

        core = unwrap_peft(model)
        scale = clip_towers.logit_scale(core).exp()
        labels = inputs.get("labels")
        if "input_ids" in inputs:  # image–caption pairs
            if isinstance(core, PreTrainedModel):  # OpenCLIPModel: its own forward, as Trainer runs it
                outputs = model(**{**{k: v for k, v in inputs.items() if k != "labels"}, "return_loss": True})
                image, text = outputs.image_embeds, outputs.text_embeds
            else:
                outputs = None
                image = clip_towers.encode_image(core, inputs["pixel_values"])
                text = clip_towers.encode_text(core, inputs["input_ids"], inputs.get("attention_mask"))
            return AdapterOutput(
                loss=None if outputs is None else outputs.loss, features=image, head_rows=text, logit_scale=scale,
                pairwise=True, labels=labels, outputs=outputs,
            )
        image = clip_towers.encode_image(core, inputs["pixel_values"])
        if self.prompts is None:
            raise ValueError(
                "Class names are missing for an open_clip classification run: pass class_names=[...] to InfoNCTrainer, "
                "or use a train_dataset whose 'label' column is a datasets.ClassLabel with names."
            )
        head = self.head_rows(model)
        logits = classification_logits(image, head, scale)
        loss = None if labels is None else nn.functional.cross_entropy(logits, labels)
        return AdapterOutput(loss=loss, logits=logits, features=image, head_rows=head, labels=labels, logit_scale=scale)


__all__ = ["OpenCLIPAdapter"]
