"""The adapter contract: how the trainer gets (features, head rows, logits) from a batch.

The trainer knows nothing of CLIP or BERT. For each batch it asks an adapter for an
:class:`AdapterOutput`:

* ``features`` ``n x d``: the representation fed to the classifier (for CLIP, the projected
  image embedding);
* ``head_rows`` ``C x d``: the classifier-head rows (for CLIP, the normalised text embeddings of
  the class prompts; for a sequence classifier, the weight rows of its final linear layer) —
  or, for image–caption pairs (``pairwise=True``), the ``n x d`` caption embeddings, row i
  being sample i's own anchor;
* ``logits``, ``labels`` and the base ``loss`` (``None`` when the trainer must compute it, e.g.
  the contrastive loss over the gathered batch).

A new model family is a new :class:`ModelAdapter` subclass registered with
:func:`register_adapter`; the trainer needs no edit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from transformers.utils import ModelOutput


@dataclass
class AdapterOutput(ModelOutput):
    """What an adapter returns for one batch (a ``ModelOutput``, so DDP/FSDP can traverse it)."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    features: torch.Tensor | None = None
    head_rows: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    logit_scale: torch.Tensor | None = None
    pairwise: bool | None = None  # True for image–caption pairs (ModelOutput fields default to None)


def unwrap_peft(model: nn.Module) -> nn.Module:
    """The underlying transformers / open_clip model of a ``peft.PeftModel`` (or the model itself).

    LoRA layers are injected in place, so calling the base model runs them.
    """
    get_base = getattr(model, "get_base_model", None)
    if callable(get_base) and type(model).__module__.startswith("peft"):
        return get_base()
    return model


class ModelAdapter:
    """Base class. Subclasses implement :meth:`supports` and :meth:`forward`.

    ``forward`` receives the *unwrapped* model (no DDP/FSDP/DeepSpeed wrapper, PEFT allowed);
    the trainer runs it through the wrapper's forward so that gradient synchronisation and
    parameter gathering still happen.
    """

    #: Short family name shown in error messages and logs.
    family: ClassVar[str] = "base"
    #: One line saying which models it covers.
    description: ClassVar[str] = ""

    @classmethod
    def supports(cls, model: nn.Module) -> bool:
        raise NotImplementedError

    def setup(self, model: nn.Module, *, class_names: list[str] | None, templates: list[str] | None, processing_class: Any = None) -> None:
        """Called once by the trainer before training (e.g. to tokenise class prompts)."""

    def forward(self, model: nn.Module, inputs: dict[str, Any]) -> AdapterOutput:
        raise NotImplementedError

    def head_rows(self, model: nn.Module) -> torch.Tensor | None:
        """The current ``C x d`` head rows (for evaluation metrics), or ``None`` when pairwise."""
        return None


_REGISTRY: list[type[ModelAdapter]] = []


def register_adapter(adapter_cls: type[ModelAdapter], *, first: bool = False) -> type[ModelAdapter]:
    """Register an adapter class (usable as a decorator). ``first=True`` gives it priority."""
    if adapter_cls in _REGISTRY:
        return adapter_cls
    if first:
        _REGISTRY.insert(0, adapter_cls)
    else:
        _REGISTRY.append(adapter_cls)
    return adapter_cls


def registered_adapters() -> list[type[ModelAdapter]]:
    return list(_REGISTRY)


def adapter_for(model: nn.Module) -> ModelAdapter:
    """Instantiate the first registered adapter that supports ``model`` (PEFT models are unwrapped)."""
    core = unwrap_peft(model)
    for adapter_cls in _REGISTRY:
        if adapter_cls.supports(core):
            return adapter_cls()
    families = "\n".join(f"  - {a.family}: {a.description}" for a in _REGISTRY)
    raise TypeError(
        f"No hf_infonc adapter supports {type(core).__name__}. Supported model families:\n{families}\n"
        f"To add one, subclass hf_infonc.adapters.ModelAdapter (implement supports() and forward() returning "
        f"features, head_rows, logits and the base loss), decorate it with @register_adapter, and/or pass "
        f"InfoNCTrainer(..., adapter=MyAdapter()). See docs/adapters.md."
    )


def call_through_wrapper(wrapped: nn.Module, core: nn.Module, fn, *args: Any, **kwargs: Any) -> Any:
    """Run ``fn(*args, **kwargs)`` as the forward of ``wrapped`` (DDP, FSDP, DeepSpeed…).

    Distributed wrappers do work in their own ``forward`` (DDP prepares gradient
    synchronisation, FSDP gathers parameter shards); calling methods of the inner model
    directly would skip it. The inner module's ``forward`` is swapped for a one-shot function
    that restores the original forward (accelerate may have patched it for mixed precision)
    before running ``fn``, so ``fn`` may call ``core(**inputs)`` itself.
    """
    if wrapped is core:
        return fn(*args, **kwargs)
    sentinel = object()
    patched = core.__dict__.get("forward", sentinel)

    def restore() -> None:
        if patched is sentinel:
            core.__dict__.pop("forward", None)
        else:
            core.forward = patched  # type: ignore[method-assign]

    def one_shot(*inner_args: Any, **inner_kwargs: Any) -> Any:
        restore()
        return fn(*inner_args, **inner_kwargs)

    core.forward = one_shot  # type: ignore[method-assign]
    try:
        return wrapped(*args, **kwargs)
    finally:
        restore()
