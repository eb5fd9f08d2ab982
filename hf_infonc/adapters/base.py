"""The adapter contract: how the trainer gets (features, head rows, logits) from a batch.

The trainer runs the adapter *as the model's forward* (:func:`replaced_forward`), through any
DDP/FSDP/DeepSpeed wrapper. A new model family is a new :class:`ModelAdapter` registered with
:func:`register_adapter` (docs/adapters.md, "Adding an adapter for a new family").
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from transformers.utils import ModelOutput


@dataclass
class ClassifierOutput(ModelOutput):
    """The model output of an adapter that computes the classification itself (CLIP with prompt heads)."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None


@dataclass
class AdapterOutput(ModelOutput):
    """What an adapter returns for one batch (a ``ModelOutput``, so DDP/FSDP can traverse it): ``features``
    (``n x d``, fed to the classifier), ``head_rows`` (``C x d``, or the ``n x d`` caption embeddings of pairs)."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    features: torch.Tensor | None = None
    head_rows: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    logit_scale: torch.Tensor | None = None
    pairwise: bool | None = None  # True for image–caption pairs (ModelOutput fields default to None)
    outputs: Any = None  # the model's own forward output; None: a ClassifierOutput of ``loss`` and ``logits``

    def model_outputs(self) -> Any:
        """What ``model(**inputs)`` returns to ``Trainer``: the model's own outputs, with this ``loss`` (none
        when it is ``None``, e.g. a loss the adapter asked for but the batch did not)."""
        if self.outputs is None:
            return ClassifierOutput(loss=self.loss, logits=self.logits)
        if not isinstance(self.outputs, ModelOutput):
            return self.outputs
        if self.loss is None and self.outputs.get("loss") is not None:
            return type(self.outputs)(**{key: value for key, value in self.outputs.items() if key != "loss"})
        if self.loss is not None:
            self.outputs["loss"] = self.loss  # e.g. the contrastive loss of the gathered batch
        return self.outputs


class FeatureCapture:
    """The features of the latest evaluation forward, for metrics that need them beside the logits (filled
    by ``InfoNCTrainer``, or by a hook from :meth:`ModelAdapter.capture_features` under ``Trainer``)."""

    def __init__(self) -> None:
        self.latest: torch.Tensor | None = None

    def put(self, features: torch.Tensor) -> None:
        self.latest = features.detach()

    def take(self) -> torch.Tensor | None:
        features, self.latest = self.latest, None
        return features


def unwrap_peft(model: nn.Module) -> nn.Module:
    """The underlying model of a ``peft.PeftModel`` (LoRA layers are injected in place), or the model itself."""
    get_base = getattr(model, "get_base_model", None)
    if callable(get_base) and type(model).__module__.startswith("peft"):
        return get_base()
    return model


class ModelAdapter:
    """Base class. Subclasses implement :meth:`supports` and :meth:`forward`, which receives the *unwrapped*
    model (no DDP/FSDP/DeepSpeed wrapper, PEFT allowed)."""

    #: Short family name shown in error messages and logs.
    family: ClassVar[str] = "base"
    #: One line saying which models it covers.
    description: ClassVar[str] = ""

    @classmethod
    def supports(cls, model: nn.Module) -> bool:
        raise NotImplementedError

    def setup(
        self, model: nn.Module, *, class_names: list[str] | None, templates: list[str] | None,
        processing_class: Any = None,
    ) -> None:
        """Called once by the trainer before training (e.g. to tokenise class prompts)."""

    def forward(self, model: nn.Module, inputs: dict[str, Any]) -> AdapterOutput:
        raise NotImplementedError

    def head_rows(self, model: nn.Module) -> torch.Tensor | None:
        """The current ``C x d`` head rows (for evaluation metrics), or ``None`` when pairwise."""
        return None

    def is_pairwise(self, inputs: dict[str, Any]) -> bool | None:
        """Whether a batch holds image–caption pairs (``True``) or labelled examples (``False``);
        ``None``: known only after the forward (the trainer then learns it from the first batch)."""
        return None

    def capture_features(self, model: nn.Module, capture: FeatureCapture) -> Any:
        """A hook (handle with ``remove()``) that puts the features of each evaluation forward of ``model``
        into ``capture``; ``TypeError`` where the model's own forward does not compute them."""
        raise TypeError(
            f"The {self.family} adapter cannot read features from {type(model).__name__}'s own forward: its "
            f"classification runs through the adapter. Train and evaluate it with hf_infonc.InfoNCTrainer."
        )

    #: Batch keys holding the labels when the model's ``forward`` does not name them (``None``: ``Trainer``'s).
    label_names: list[str] | None = None
    #: Batch keys the adapter reads beyond the forward's arguments (kept by ``remove_unused_columns``).
    input_names: list[str] = []
    #: True when the adapter computes the classification loss itself (a per-batch mean, no ``num_items_in_batch``).
    computes_loss: bool = False


_REGISTRY: list[type[ModelAdapter]] = []


def register_adapter(adapter_cls: type[ModelAdapter], *, first: bool = False) -> type[ModelAdapter]:
    """Register an adapter class (usable as a decorator). ``first=True`` gives it priority."""
    if adapter_cls not in _REGISTRY:
        _REGISTRY.insert(0 if first else len(_REGISTRY), adapter_cls)
    return adapter_cls


def registered_adapters() -> list[type[ModelAdapter]]:
    return list(_REGISTRY)


def find_adapter(model: nn.Module) -> ModelAdapter | None:
    """The first registered adapter that supports ``model`` (PEFT models are unwrapped), or ``None``."""
    core = unwrap_peft(model)
    return next((adapter_cls() for adapter_cls in _REGISTRY if adapter_cls.supports(core)), None)


def unsupported_model_message(model: nn.Module) -> str:
    """What to do when no adapter supports ``model``: the supported families and how to add one."""
    families = "\n".join(f"  - {a.family}: {a.description}" for a in _REGISTRY)
    return (
        f"No hf_infonc adapter supports {type(unwrap_peft(model)).__name__}. Supported model families:\n{families}\n"
        f"To add one, subclass hf_infonc.adapters.ModelAdapter (implement supports() and forward() returning "
        f"features, head_rows, logits and the base loss), decorate it with @register_adapter, and/or pass "
        f"InfoNCTrainer(..., adapter=MyAdapter()). See docs/adapters.md (\"Writing an adapter\")."
    )


def adapter_for(model: nn.Module) -> ModelAdapter:
    """Instantiate the first registered adapter that supports ``model``; ``TypeError`` if none does."""
    adapter = find_adapter(model)
    if adapter is None:
        raise TypeError(unsupported_model_message(model))
    return adapter


_CLASS_FORWARD = object()  # "no instance attribute forward": the class's own forward runs


@contextlib.contextmanager
def replaced_forward(core: nn.Module, fn: Callable[..., Any]) -> Iterator[None]:
    """Within the block, the next call of ``core``'s forward runs ``fn`` instead (once), so a call of the
    wrapper (DDP, FSDP) reaches ``fn`` after the wrapper's own work. The one-shot forward puts the original
    (maybe patched by accelerate) back first, so ``fn`` may call ``core(**inputs)``; nesting is safe."""
    current = core.__dict__.get("forward", _CLASS_FORWARD)
    original = getattr(current, "_replaced_original", current)

    def set_forward(value: Any) -> None:
        if value is _CLASS_FORWARD:
            core.__dict__.pop("forward", None)
        else:
            core.forward = value  # type: ignore[method-assign]

    def one_shot(*args: Any, **kwargs: Any) -> Any:
        set_forward(original)
        return fn(*args, **kwargs)

    one_shot._replaced_original = original  # type: ignore[attr-defined]
    core.forward = one_shot  # type: ignore[method-assign]
    try:
        yield
    finally:
        set_forward(current)


def call_through_wrapper(wrapped: nn.Module, core: nn.Module, fn, *args: Any, **kwargs: Any) -> Any:
    """Run ``fn(*args, **kwargs)`` as the forward of ``wrapped`` (DDP, FSDP, DeepSpeed…); see
    :func:`replaced_forward`."""
    if wrapped is core:
        return fn(*args, **kwargs)
    with replaced_forward(core, fn):
        return wrapped(*args, **kwargs)
