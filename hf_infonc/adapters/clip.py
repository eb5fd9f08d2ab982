"""Adapters for CLIP models: ``transformers.CLIPModel`` and open_clip (raw ``CLIP`` / ``CustomTextCLIP``, or
``OpenCLIPModel``). The batch picks the use (docs/adapters.md, "Supported families"): classification
(``labels``; head: :class:`ClassPrompts`, docs/theory.md §2.4) or image–caption pairs (``input_ids``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn
from transformers import PreTrainedModel

from hf_infonc.adapters.base import AdapterOutput, ModelAdapter, register_adapter, unwrap_peft
from hf_infonc.models import clip_towers
from hf_infonc.models.clip_towers import ClassPrompts

__all__ = ["CLIPAdapter", "HFCLIPAdapter", "OpenCLIPAdapter"]


class CLIPAdapter(ModelAdapter):
    """Shared logic of the CLIP families; :mod:`hf_infonc.models.clip_towers` does the family dispatch."""

    computes_loss = True  # classification: cross-entropy of the prompt-head logits
    #: how the error messages name a classification run of this family
    run_name: ClassVar[str] = "a CLIP"

    def __init__(self) -> None:
        self.prompts: ClassPrompts | None = None

    def prompt_tokenizer(self, core: nn.Module, processing_class: Any) -> Any:
        """The tokenizer of the class prompts; raises ``ValueError`` when there is none."""
        raise NotImplementedError

    def setup(self, model, *, class_names=None, templates=None, processing_class=None) -> None:
        # the CLIP forwards name no labels: with class names, the batches' labels are the targets
        self.label_names = None if class_names is None else ["labels"]
        self.prompts = None
        if class_names is not None:
            core = unwrap_peft(model)
            tokenizer = self.prompt_tokenizer(core, processing_class)
            length = clip_towers.context_length(core)
            self.prompts = ClassPrompts.tokenize(class_names, templates, tokenizer, length=length)

    def is_pairwise(self, inputs: dict[str, Any]) -> bool:
        return "input_ids" in inputs  # captions: image–caption pairs; else classification with the prompt head

    def head_rows(self, model: nn.Module) -> torch.Tensor | None:
        return None if self.prompts is None else self.prompts.head(unwrap_peft(model))

    def forward(self, model: nn.Module, inputs: dict[str, Any]) -> AdapterOutput:
        core = unwrap_peft(model)
        scale = core.logit_scale.exp()
        labels = inputs.get("labels")
        if "input_ids" in inputs:  # image–caption pairs: the captions are the anchors
            if isinstance(core, PreTrainedModel):  # the model's own forward (return_loss), as Trainer runs it
                outputs = model(**{**{k: v for k, v in inputs.items() if k != "labels"}, "return_loss": True})
                image, text = outputs.image_embeds, outputs.text_embeds
            else:  # a raw open_clip model: the trainer computes the contrastive loss
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
                f"Class names are missing for {self.run_name} classification run: pass class_names=[...] to "
                f"InfoNCTrainer, or use a train_dataset whose 'label' column is a datasets.ClassLabel with names."
            )
        head = self.head_rows(model)
        logits = clip_towers.classification_logits(image, head, scale)
        loss = None if labels is None else nn.functional.cross_entropy(logits, labels)
        return AdapterOutput(loss=loss, logits=logits, features=image, head_rows=head, labels=labels, logit_scale=scale)


@register_adapter
class HFCLIPAdapter(CLIPAdapter):
    family = "hf-clip"
    description = "transformers.CLIPModel (and CLIP-like models with get_image_features/get_text_features)"

    @classmethod
    def supports(cls, model: nn.Module) -> bool:
        return clip_towers.clip_family(model) == "hf-clip"

    def prompt_tokenizer(self, core: nn.Module, processing_class: Any) -> Any:
        tokenizer = getattr(processing_class, "tokenizer", processing_class)
        if tokenizer is None:
            raise ValueError(
                "A CLIP classification run needs a tokenizer for the class prompts: pass "
                "processing_class=CLIPProcessor/CLIPTokenizer to InfoNCTrainer."
            )
        return tokenizer


@register_adapter
class OpenCLIPAdapter(CLIPAdapter):
    family = "open-clip"
    description = "open_clip CLIP / CustomTextCLIP (ViT, HF text towers) and hf_infonc.models.OpenCLIPModel"
    run_name = "an open_clip"
    #: a raw open_clip model's forward names ``image``/``text``: keep the batch keys the adapter reads
    input_names = ["pixel_values", "input_ids", "attention_mask"]

    @classmethod
    def supports(cls, model: nn.Module) -> bool:
        return clip_towers.inner_open_clip(model) is not None

    def prompt_tokenizer(self, core: nn.Module, processing_class: Any) -> Any:
        tokenizer = processing_class
        if tokenizer is None and hasattr(core, "get_tokenizer"):
            tokenizer = core.get_tokenizer()
        if tokenizer is None:
            raise ValueError(
                "An open_clip classification run needs the model's tokenizer for the class prompts: pass "
                "processing_class=open_clip.get_tokenizer('<model name>') (or open_clip.tokenizer.HFTokenizer(<path>) "
                "for an HF text tower) to InfoNCTrainer, or wrap the model in hf_infonc.models.OpenCLIPModel."
            )
        return tokenizer
