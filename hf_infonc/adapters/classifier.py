"""Adapters for models with a linear classification head (text and image classifiers): features are the
input of the final ``nn.Linear`` at one of :data:`HEAD_PATHS` (captured by a hook; the model's own forward
and loss run unchanged), head rows its weight rows (docs/theory.md §2.4). Token-level heads are not covered.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from hf_infonc.adapters.base import AdapterOutput, FeatureCapture, ModelAdapter, register_adapter, unwrap_peft

#: Attribute paths tried, in order, to find the final linear layer.
HEAD_PATHS: tuple[str, ...] = ("classifier.out_proj", "classifier", "classifier.dense")


def _as_linear(module: nn.Module | None) -> nn.Linear | None:
    """An ``nn.Linear`` (or a PEFT ``ModulesToSaveWrapper`` / LoRA layer around one)."""
    if isinstance(module, nn.Linear):
        return module
    for attr in ("modules_to_save", "base_layer"):
        inner = getattr(module, attr, None)
        if isinstance(inner, nn.ModuleDict) and len(inner) > 0:
            active = getattr(module, "active_adapter", None)
            key = active[0] if isinstance(active, list) else active
            candidate = inner[key] if key in inner else next(iter(inner.values()))
            return _as_linear(candidate)
        if isinstance(inner, nn.Linear):
            return inner
    return None


class LinearHeadAdapter(ModelAdapter):
    """Shared logic: hook the final linear layer, read its input and its weight rows."""

    _model_classes: tuple[str, ...] = ()

    @classmethod
    def find_head(cls, model: nn.Module) -> tuple[nn.Module, nn.Linear] | None:
        """The module to hook and the ``nn.Linear`` whose weight rows are the head (override for other layouts)."""
        num_labels = getattr(getattr(model, "config", None), "num_labels", None)
        for path in HEAD_PATHS:
            try:
                module = model.get_submodule(path)
            except AttributeError:
                continue
            linear = _as_linear(module)
            if linear is not None and (num_labels is None or linear.out_features == num_labels):
                return module, linear
        return None

    @classmethod
    def supports(cls, model: nn.Module) -> bool:
        return (isinstance(model, PreTrainedModel) and type(model).__name__.endswith(cls._model_classes)
                and cls.find_head(model) is not None)

    def head_rows(self, model: nn.Module) -> torch.Tensor:
        return self._head(model)[1].weight

    def _head(self, model: nn.Module) -> tuple[nn.Module, nn.Linear]:
        core = unwrap_peft(model)
        found = self.find_head(core)
        if found is None:
            raise TypeError(f"{type(core).__name__}: no linear classification head found at {HEAD_PATHS}.")
        return found

    @staticmethod
    def _one_vector_per_example(model: nn.Module, features: torch.Tensor) -> torch.Tensor:
        if features.dim() != 2:
            raise TypeError(
                f"{type(unwrap_peft(model)).__name__}: the classification head receives a tensor of shape "
                f"{tuple(features.shape)}; hf_infonc needs one vector per example (batch x hidden). Token-level heads "
                f"(GPT-2, Llama) are not supported: write an adapter that pools the features (see docs/adapters.md)."
            )
        return features

    def forward(self, model: nn.Module, inputs: dict[str, Any]) -> AdapterOutput:
        hooked, linear = self._head(model)
        captured: list[torch.Tensor] = []
        handle = hooked.register_forward_pre_hook(lambda _module, args: captured.append(args[0]))
        try:
            outputs = model(**inputs)  # the model's own forward and loss, exactly as Trainer calls it
        finally:
            handle.remove()
        if not captured:
            name = type(unwrap_peft(model)).__name__
            raise RuntimeError(f"{name}: the classification head was not called in forward.")
        return AdapterOutput(
            loss=outputs.get("loss") if isinstance(outputs, dict) else None,
            logits=outputs.get("logits") if isinstance(outputs, dict) else outputs[0],
            features=self._one_vector_per_example(model, captured[-1]),
            head_rows=linear.weight,
            labels=inputs.get("labels"),
            outputs=outputs,
        )

    def is_pairwise(self, inputs: dict[str, Any]) -> bool:
        return False

    def capture_features(self, model: nn.Module, capture: FeatureCapture) -> Any:
        hooked, _ = self._head(model)

        def grab_input(module: nn.Module, args: tuple) -> None:
            if not module.training:
                capture.put(self._one_vector_per_example(model, args[0]))

        return hooked.register_forward_pre_hook(grab_input)


@register_adapter
class SequenceClassificationAdapter(LinearHeadAdapter):
    family = "sequence-classification"
    description = "AutoModelForSequenceClassification with a linear head (BERT, RoBERTa, DistilBERT, DeBERTa, …)"
    _model_classes = ("ForSequenceClassification",)


@register_adapter
class ImageClassificationAdapter(LinearHeadAdapter):
    family = "image-classification"
    description = "AutoModelForImageClassification with a linear head (ViT, DeiT, BEiT, Swin, ConvNeXt, …)"
    _model_classes = ("ForImageClassification",)
