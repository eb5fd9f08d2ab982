"""Exact gradient accumulation for batch-level (Gram) losses: a two-pass GradCache step.

GradCache (Gao et al. 2021, arXiv 2101.06983) for ``gradient_accumulation_steps = m > 1`` (docs/distributed.md,
"Gradient accumulation"). Pass 1 runs every micro-batch without gradients (RNG recorded, buffers restored),
computes ``L = information_loss(F, A|H, s, b)`` on the concatenated leaves, with ``b = Σ c_i·b_i``
(``c_i = n_i/N``, or 1 for a loss normalised by ``num_items_in_batch``), and its gradients. Pass 2 replays each
micro-batch and back-propagates the surrogate

    g_i = m·⟨F_i, ∂L/∂F_i⟩ + m·⟨A_i, ∂L/∂A_i⟩ + ⟨H_i, ∂L/∂H⟩ + ⟨s_i, ∂L/∂s⟩ + m·c_i·(∂L/∂b)·b_i

with ``(1/m)·Σ_i ∇θ g_i = ∇θ L``; ``g_i - g_i.detach() + L`` logs the loss of the whole batch. Without a Gram
loss (every weight 0, image–caption pairs with the model's own loss included) only the logged batch MIR/HDR are
computed on the whole batch, from the kept outputs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers.utils import logging

from hf_infonc.adapters.base import AdapterOutput

logger = logging.get_logger(__name__)


def _accelerator_rng_module(device: torch.device) -> Any:
    """The ``torch.cuda``-like module whose generator an op on ``device`` draws from, or ``None`` (CPU)."""
    module = None if device.type == "cpu" else getattr(torch, device.type, None)
    if module is None or not hasattr(module, "get_rng_state") or not hasattr(module, "set_rng_state"):
        return None
    return None if device.type == "cuda" and not torch.cuda.is_initialized() else module


@dataclass
class RngState:
    """The CPU and accelerator random states before a forward, to replay its dropout masks (``RandContext``)."""

    cpu: torch.Tensor
    device: torch.device
    accelerator: torch.Tensor | None = None

    @classmethod
    def capture(cls, device: torch.device) -> RngState:
        module = _accelerator_rng_module(device)
        state = None
        if module is not None:
            try:
                state = module.get_rng_state(device)
            except TypeError:  # torch.mps.get_rng_state() takes no device
                state = module.get_rng_state()
        return cls(torch.get_rng_state(), device, state)

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        module = _accelerator_rng_module(self.device)
        if module is not None and self.accelerator is not None:
            try:
                module.set_rng_state(self.accelerator, self.device)
            except TypeError:
                module.set_rng_state(self.accelerator)


@dataclass
class _AccumulatedStep:
    """The micro-batches of one optimizer step and what pass 1 cached for pass 2."""

    batches: list[Any]
    current: int | None = None  # index of the micro-batch inside training_step, else None
    engaged: bool | None = None  # decided by the first micro-batch of the step
    ratios_only: bool = False  # no Gram loss: only the logged MIR/HDR are computed on the whole batch
    stash: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = field(default_factory=list)
    rng: list[RngState] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    value: torch.Tensor | None = None  # the loss of the whole accumulated batch (detached)
    base_weights: list[float] = field(default_factory=list)  # c_i of b = Σ c_i·b_i
    # ∂L/∂(leaf) per AdapterOutput field: split per micro-batch (rows of each sample) or one shared tensor
    grads: dict[str, tuple[torch.Tensor, ...] | torch.Tensor] = field(default_factory=dict)


@contextlib.contextmanager
def kept_buffers(module: nn.Module) -> Iterator[None]:
    """Restore ``module``'s buffers (BatchNorm running statistics) on exit: extra forwards leave no trace."""
    saved = {name: buffer.detach().clone() for name, buffer in module.named_buffers()}
    try:
        yield
    finally:
        with torch.no_grad():
            for name, buffer in module.named_buffers():
                if name in saved:
                    buffer.copy_(saved[name])


def _shared_value(values: list[torch.Tensor]) -> torch.Tensor:
    """A tensor every micro-batch recomputes (head rows, logit scale): the first copy, or the mean of the copies
    when dropout made them differ."""
    first = values[0].detach()
    if all(torch.equal(first, v.detach()) for v in values[1:]):
        return first.clone()
    return torch.stack([v.detach() for v in values]).mean(dim=0)


class GradCacheMixin:
    """Gradient accumulation of :class:`~hf_infonc.trainer.InfoNCTrainer`: the exact two-pass step and the scaling
    of the base loss."""

    _accumulated_step: _AccumulatedStep | None = None
    _pairwise_batches: bool | None = None  # whether the batches are image–caption pairs (learnt once)
    _warned_deepspeed_accumulation: bool = False
    _loss_kwargs_probed: bool = False
    _step_first_batch: Any = None  # the first micro-batch of the step, while the loss kwargs are not probed
    _later_micro_batch: bool = False  # inside training_step for a later micro-batch of the step

    def _base_scaled_for_ga(self, num_items_in_batch: Any) -> bool:
        """``Trainer.training_step``'s rule: whether the base loss is already scaled for accumulation (normalised
        by ``num_items_in_batch``), so not divided by the accumulation steps."""
        if self.loss_is_scaled_for_ga is not None:
            return bool(self.loss_is_scaled_for_ga)
        return bool(self.model_accepts_loss_kwargs and num_items_in_batch is not None) or self.compute_loss_func is not None

    def _probe_loss_kwargs(self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch: Any) -> None:
        """Set ``model_accepts_loss_kwargs = False`` for heads that take ``**kwargs`` but compute a plain mean
        (BERT, ViT; transformers #47688): two no-grad forwards with n and 2n items give the same loss. Decided
        at the first micro-batch of a step whose loss is finite and non-zero (a batch without target tokens
        tells nothing); until then the flag stays as ``Trainer`` set it."""
        if self._later_micro_batch:  # one scaling per optimizer step
            return
        if not (
            self.model_accepts_loss_kwargs and num_items_in_batch is not None and "labels" in inputs
            and self.compute_loss_func is None and self.label_smoother is None and self.loss_is_scaled_for_ga is None
        ):
            self._loss_kwargs_probed = True
            return
        core = self.accelerator.unwrap_model(model)
        rng = RngState.capture(self.args.device)
        losses = []
        try:
            with kept_buffers(core), torch.no_grad(), self.compute_loss_context_manager():
                for items in (num_items_in_batch, num_items_in_batch * 2):
                    rng.restore()
                    outputs = model(**inputs, num_items_in_batch=items)
                    loss = outputs["loss"] if isinstance(outputs, dict) else outputs[0]
                    losses.append(loss.detach().double())
        finally:
            rng.restore()
        losses = torch.stack(losses)
        if not bool((losses.isfinite() & (losses != 0)).all()):
            return  # probed again at the next step
        self._loss_kwargs_probed = True
        if torch.equal(losses[0], losses[1]):
            self.model_accepts_loss_kwargs = False
            logger.info(
                "%s takes **kwargs but its loss ignores num_items_in_batch: the loss is divided by the gradient "
                "accumulation steps (transformers.Trainer would not divide it; transformers issue #47688).",
                type(core).__name__,
            )

    def _model_returns_loss(self, inputs: Mapping[str, Any]) -> bool:
        """Whether ``Trainer``'s call of the model on a batch of image–caption pairs returns the model's own loss:
        the batch asks for it (``return_loss``, by default ``Trainer.can_return_loss``)."""
        return bool(inputs.get("return_loss", self.can_return_loss))

    def _whole_batch_base(self, inputs: Mapping[str, Any]) -> bool | None:
        """Whether the base loss is the contrastive loss of the whole (accumulated, gathered) batch: image–caption
        pairs with an information weight > 0, or whose model returns no loss of its own; ``None``: the kind of
        batch is not known yet. With every weight 0 the model's own loss stays, per micro-batch, as in ``Trainer``."""
        if self._pairwise_batches is None:
            return None
        return self._pairwise_batches and (
            self.information_settings.info_losses_active or not self._model_returns_loss(inputs)
        )

    def _exact_accumulation_wanted(self, num_batches: int, first: Mapping[str, Any] | None = None) -> bool:
        """Whether the next step (``num_batches`` micro-batches, the ``first`` of them given) accumulates exactly:
        something Gram-based is computed or logged, not DeepSpeed."""
        settings = self.information_settings
        if not (self.exact_accumulation and settings.info_exact_accumulation and num_batches > 1
                and self.args.gradient_accumulation_steps > 1):
            return False
        whole_batch_base = self._whole_batch_base(first or {})
        if not settings.info_losses_active and whole_batch_base is False and not self._ratios_due():
            return False
        if self.is_deepspeed_enabled:
            if not self._warned_deepspeed_accumulation and (settings.info_losses_active or whole_batch_base):
                logger.warning(
                    "info_exact_accumulation is not supported with DeepSpeed (its engine accumulates the gradients): "
                    "the Gram-based terms are computed per micro-batch. For exact terms, raise the per-device batch "
                    "size instead of gradient_accumulation_steps, or set info_exact_accumulation=False to silence this."
                )
                self._warned_deepspeed_accumulation = True
            return False
        return True

    def get_batch_samples(self, epoch_iterator: Any, num_batches: int, device: torch.device) -> tuple[list, Any]:
        """``Trainer.get_batch_samples``, remembering the micro-batches of the step."""
        batch_samples, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
        if self._pairwise_batches is None and self.adapter is not None and batch_samples:
            self._pairwise_batches = self.adapter.is_pairwise(batch_samples[0])  # None: learnt from the forward
        wanted = self.adapter is not None and self._exact_accumulation_wanted(
            len(batch_samples), batch_samples[0] if batch_samples else None
        )
        self._accumulated_step = _AccumulatedStep(batches=list(batch_samples)) if wanted else None
        self._step_first_batch = batch_samples[0] if batch_samples and not self._loss_kwargs_probed else None
        return batch_samples, num_items_in_batch

    def training_step(self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None) -> torch.Tensor:
        """``Trainer.training_step``; tells ``compute_loss`` which micro-batch of the step it receives."""
        step = self._accumulated_step
        if step is not None:
            step.current = next((i for i, batch in enumerate(step.batches) if batch is inputs), None)
        self._later_micro_batch = self._step_first_batch is not None and inputs is not self._step_first_batch
        try:
            return super().training_step(model, inputs, num_items_in_batch)
        finally:
            self._later_micro_batch = False
            if step is not None:
                step.current = None

    def _micro_batch_step(self, model: nn.Module) -> _AccumulatedStep | None:
        step = self._accumulated_step
        return step if model.training and step is not None and step.current is not None else None

    def _cached_step_loss(
        self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch: Any
    ) -> tuple[torch.Tensor, Any] | None:
        """``(loss, outputs)`` of pass 2 for this micro-batch (after pass 1 at the first one), or ``None``: the
        plain path."""
        step = self._micro_batch_step(model)
        if step is None:
            return None
        if step.engaged is None:
            self._exact_accumulation_first_pass(model, step, num_items_in_batch)
        if not step.engaged:
            return None
        step.rng[step.current].restore()  # same dropout masks as pass 1
        outputs, out = self._forward_with_base(model, inputs, num_items_in_batch)
        return self._exact_accumulation_loss(out, step, self._base_scaled_for_ga(num_items_in_batch)), outputs

    def _exact_accumulation_first_pass(self, model: nn.Module, step: _AccumulatedStep, num_items_in_batch: Any) -> None:
        """Pass 1: the no-grad forwards, then :meth:`_cache_accumulated_gradients`; the plain path (RNG restored)
        when the first one shows neither an information loss nor pairs whose base is the whole batch's contrastive
        loss (:meth:`_whole_batch_base`)."""
        step.engaged = False
        if not self.information_settings.info_losses_active and self._whole_batch_base(step.batches[0]) is False:
            step.ratios_only = self._ratios_due()
            return
        outputs: list[AdapterOutput] = []
        with kept_buffers(self.accelerator.unwrap_model(model)), torch.no_grad():
            for index, batch in enumerate(step.batches):
                step.rng.append(RngState.capture(self.args.device))
                # a copy: Trainer.compute_loss pops the labels for label smoothing / compute_loss_func
                _, out = self._forward_with_base(model, dict(self._prepare_inputs(batch)), num_items_in_batch)
                if out.pairwise and self.compute_loss_func is None:
                    out.loss = None  # the contrastive base is computed on the whole accumulated batch
                if index == 0:
                    self._pairwise_batches = bool(out.pairwise)
                    if not (self.information_settings.info_losses_active or self._whole_batch_base(batch)):
                        step.rng[0].restore()
                        step.ratios_only = self._ratios_due()
                        return
                if bool(out.pairwise) != self._pairwise_batches:
                    raise ValueError(
                        "The micro-batches of one optimizer step mix image–caption pairs and labelled images; "
                        "the exact accumulation needs one kind per step. Use one kind of batch per dataset, or "
                        "set info_exact_accumulation=False."
                    )
                outputs.append(out)
        self._cache_accumulated_gradients(step, outputs, self._base_scaled_for_ga(num_items_in_batch))
        step.engaged = True

    def _cache_accumulated_gradients(self, step: _AccumulatedStep, outputs: list[AdapterOutput], scaled: bool) -> None:
        """The loss of the whole batch, its logged components and ``∂L/∂(leaves)`` for pass 2."""
        pairwise = bool(self._pairwise_batches)
        step.sizes = [int(out.features.shape[0]) for out in outputs]
        step.base_weights = [1.0 if scaled else size / sum(step.sizes) for size in step.sizes]
        has_loss = [out.loss is not None for out in outputs]
        if any(has_loss) and not all(has_loss):
            raise ValueError(
                f"The adapter returned a base loss for {sum(has_loss)} of {len(outputs)} micro-batches of one step; "
                "the exact accumulation needs it for all or none. Check the batches' labels, or set "
                "info_exact_accumulation=False."
            )
        per_sample = {"features": True, "head_rows": pairwise, "logit_scale": False}  # else shared by the step
        with torch.enable_grad():
            leaves: dict[str, torch.Tensor] = {}
            for name, split in per_sample.items():
                values = [getattr(out, name) for out in outputs]
                if values[0] is not None:
                    leaf = torch.cat([value.detach() for value in values]) if split else _shared_value(values)
                    leaves[name] = leaf.requires_grad_(True)
            if all(has_loss):
                losses = torch.stack([out.loss.detach().double().reshape(()) for out in outputs])
                weights = torch.tensor(step.base_weights, dtype=torch.float64, device=losses.device)
                leaves["loss"] = (weights * losses).sum().to(outputs[0].loss.dtype).requires_grad_(True)
            labels = torch.cat([out.labels for out in outputs]) if all(o.labels is not None for o in outputs) else None
            total, components = self.information_loss(AdapterOutput(labels=labels, pairwise=pairwise, **leaves))
            grads = [None] * len(leaves)
            if total.requires_grad:
                grads = torch.autograd.grad(total, list(leaves.values()), allow_unused=True)
        step.value = total.detach()
        step.grads = {
            name: grad.split(step.sizes) if per_sample.get(name) else grad
            for name, grad in zip(leaves, grads) if grad is not None
        }
        self.record_components(components, "train")

    def _exact_accumulation_loss(self, out: AdapterOutput, step: _AccumulatedStep, scaled: bool) -> torch.Tensor:
        """Pass 2 for micro-batch ``step.current``: ``g_i - g_i.detach() + L``, divided by m here when ``Trainer``
        does not (a ``scaled`` base loss)."""
        index = step.current
        size = int(out.features.shape[0])
        if index >= len(step.sizes) or size != step.sizes[index]:
            raise RuntimeError(
                f"Exact gradient accumulation: micro-batch {index} has {size} rows in pass 2 but "
                f"{step.sizes[index] if index < len(step.sizes) else 'no'} rows in pass 1. compute_loss must be "
                "called once per micro-batch with the batch the Trainer passed to training_step; if a subclass "
                "changes that, set info_exact_accumulation=False."
            )
        m = len(step.batches)
        value = step.value
        dtype = torch.promote_types(value.dtype, torch.float32)
        terms: list[torch.Tensor] = []
        for name, grad in step.grads.items():  # features, head rows, logit scale, base: the order of g_i
            weight = m * step.base_weights[index] if name == "loss" else 1.0
            if isinstance(grad, tuple):  # per-sample rows: this micro-batch's slice
                grad, weight = grad[index], m
            tensor = getattr(out, name)
            if tensor is not None and tensor.requires_grad:
                terms.append(weight * (tensor * grad.to(tensor.dtype)).sum().to(dtype))
        if not terms:  # nothing trainable reaches the loss: same error as the plain path at backward
            loss = value.to(dtype).clone()
        else:
            surrogate = torch.stack(terms).sum()
            loss = surrogate - surrogate.detach() + value.to(dtype)
        return loss / m if scaled else loss

    def _accumulated_ratios(
        self, model: nn.Module, out: AdapterOutput, components: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Without a Gram loss, the logged MIR/HDR of the whole accumulated batch, computed at the last
        micro-batch from the kept outputs (no gradient), instead of the per-micro-batch values."""
        step = self._micro_batch_step(model)
        if step is None or not step.ratios_only:
            return components
        components = {key: value for key, value in components.items() if key not in ("mir", "hdr")}
        if (out.labels is None and not out.pairwise) or out.head_rows is None or out.features is None:
            return components
        labels = None if out.pairwise else out.labels.detach()  # pairs: anchor i belongs to sample i
        step.stash.append((out.features.detach(), labels, out.head_rows.detach()))
        if step.current != len(step.batches) - 1 or len(step.stash) != len(step.batches):
            return components
        features, labels, rows = zip(*step.stash)
        step.stash = []
        merged = AdapterOutput(  # with a base loss given, information_loss adds no contrastive term
            loss=features[0].new_zeros(()), features=torch.cat(features), pairwise=out.pairwise,
            head_rows=torch.cat(rows) if out.pairwise else _shared_value(list(rows)),
            labels=None if out.pairwise else torch.cat(labels),
        )
        with torch.no_grad():
            _, whole = self.information_loss(merged)
        components.update({key: whole[key] for key in ("mir", "hdr") if key in whole})
        return components
