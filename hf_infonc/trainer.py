"""``InfoNCTrainer``: ``transformers.Trainer`` with the CMA, MI and entropy-gap losses.

Drop-in use::

    from hf_infonc import InfoNCTrainer, InfoNCTrainingArguments

    args = InfoNCTrainingArguments("out", cma_weight=0.5, mi_weight=0.1, entropy_gap_weight=0.1)
    trainer = InfoNCTrainer(model=model, args=args, train_dataset=train, data_collator=collate,
                            processing_class=processor)
    trainer.train()

The loss of a batch (SPEC §4) is::

    L = (1 - w_cma)·L_base + w_cma·CMA  -  w_mi·MI  +  w_gap·|H₁ - H₂|

(with ``info_normalized=True``: ``- w_mi·MIR + w_gap·HDR``), where ``L_base`` is the model's
cross-entropy (or CLIP's contrastive loss for image–caption pairs) and the information terms
use ``K₁ = G(features)``, ``K₂ = G(head rows of the labels)``. Every component is logged through
the Trainer's own ``log`` (``loss/base``, ``loss/cma``, ``loss/mi``, ``loss/entropy_gap``, ``mir``,
``hdr``), so TensorBoard, trackio and the JSON log history all see them.

Several processes: features (and caption anchors) are gathered from every process with
gradients before any Gram-based term is computed, so the loss equals that of one process on the
concatenated batch. Gradient accumulation (``gradient_accumulation_steps > 1``): by default
(``info_exact_accumulation=True``) the Gram terms are computed on the whole accumulated batch with
a two-pass GradCache step (Gao et al. 2021), so the logged loss, its components and the gradient
equal those of one step on the concatenated batch, at the cost of one extra no-grad forward per
micro-batch (see :meth:`InfoNCTrainer._exact_accumulation_loss`); with
``info_exact_accumulation=False`` they are computed per micro-batch (as the non-cached losses of
sentence-transformers do) and the base loss is averaged as usual.
"""

from __future__ import annotations

import contextlib
import math
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from accelerate.utils import convert_to_fp32
from torch import nn
from safetensors import safe_open
from transformers import PreTrainedModel, Trainer, TrainingArguments
from transformers.trainer import TRAINING_ARGS_NAME
from transformers.utils import SAFE_WEIGHTS_NAME, logging

from hf_infonc.adapters import ModelAdapter
from hf_infonc.adapters.base import (
    AdapterOutput,
    FeatureCapture,
    find_adapter,
    replaced_forward,
    unsupported_model_message,
)
from hf_infonc.distributed import all_gather_no_grad, all_gather_with_grad
from hf_infonc.info.fused import fused_information_loss, fused_supported
from hf_infonc.losses import (
    ComponentLayout,
    CrossModalAlignmentLoss,
    EntropyGapLoss,
    InformationComponents,
    MutualInformationLoss,
    batch_ratios,
    clip_contrastive_loss,
    check_loss_inputs,
    information_terms,
    sample_entropy_terms,
)

logger = logging.get_logger(__name__)


def check_information_settings(
    *,
    cma_weight: float = 0.0,
    mi_weight: float = 0.0,
    entropy_gap_weight: float = 0.0,
    info_alpha: float = 1.0,
    info_dtype: str = "float64",
) -> None:
    """Validate the information-loss settings (also used by recipes, without building the arguments)."""
    if not (math.isfinite(cma_weight) and 0.0 <= cma_weight <= 1.0):
        raise ValueError(f"cma_weight={cma_weight} must lie in [0, 1]: it is w of (1-w)·base + w·CMA.")
    for name, value in (("mi_weight", mi_weight), ("entropy_gap_weight", entropy_gap_weight)):
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name}={value} must be a finite number ≥ 0 (0 disables the loss).")
    if not (math.isfinite(info_alpha) and info_alpha >= 0):
        raise ValueError(f"info_alpha={info_alpha} must be a finite Rényi order ≥ 0.")
    if info_dtype not in ("float64", "float32"):
        raise ValueError(
            f"info_dtype={info_dtype!r} is not supported: use 'float64' (default) or 'float32' for the spectra of the "
            f"information losses (eigen-solvers never run in half precision; metrics are always float64)."
        )


@dataclass
class InfoNCTrainingArguments(TrainingArguments):
    """``TrainingArguments`` plus the weights and options of the information losses."""

    cma_weight: float = field(
        default=0.0,
        metadata={"help": "w of the convex combination (1-w)·base + w·CMA (arXiv 2409.16767); 0 disables CMA."},
    )
    mi_weight: float = field(default=0.0, metadata={"help": "λ of -λ·MI(features, head rows) (arXiv 2406.03999 §6)."})
    entropy_gap_weight: float = field(
        default=0.0, metadata={"help": "λ of +λ·|H(features) - H(head rows)| (arXiv 2406.03999 §6)."}
    )
    info_normalized: bool = field(
        default=False, metadata={"help": "Use the normalised forms -λ·MIR and +λ·HDR instead of MI and |ΔH|."}
    )
    info_center: bool = field(default=False, metadata={"help": "Centre sample features before the cosine Gram."})
    info_alpha: float = field(default=1.0, metadata={"help": "Rényi order of the matrix entropies (1 = von Neumann)."})
    info_dtype: str = field(
        default="float64",
        metadata={
            "help": "dtype of the spectra of the information losses: 'float64' (default) or 'float32' (faster, "
            "|Δ loss| ~1e-6). Logged MIR/HDR use the same spectra; evaluation metrics are always float64."
        },
    )
    class_prompt_templates: list[str] = field(
        default_factory=lambda: ["a photo of a {}."],
        metadata={"help": "Prompt templates for CLIP class heads; '{}' is replaced by the class name."},
    )
    info_exact_accumulation: bool = field(
        default=True,
        metadata={
            "help": "With gradient_accumulation_steps > 1, compute the Gram-based terms (CMA, MI, entropy gap, and "
            "the contrastive loss of image-caption pairs) on the whole accumulated batch with a two-pass GradCache "
            "step (Gao et al. 2021, 'Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup'): one "
            "extra no-grad forward per micro-batch. False = per-micro-batch terms, as sentence-transformers' "
            "non-cached losses."
        },
    )
    def __post_init__(self) -> None:
        check_information_settings(
            cma_weight=self.cma_weight,
            mi_weight=self.mi_weight,
            entropy_gap_weight=self.entropy_gap_weight,
            info_alpha=self.info_alpha,
            info_dtype=self.info_dtype,
        )
        super().__post_init__()

    @property
    def info_losses_active(self) -> bool:
        return self.cma_weight > 0 or self.mi_weight > 0 or self.entropy_gap_weight > 0


def _as_infonc_args(args: TrainingArguments | None, model: nn.Module | None) -> InfoNCTrainingArguments:
    if args is None:
        return InfoNCTrainingArguments(output_dir="trainer_output")
    if isinstance(args, InfoNCTrainingArguments):
        return args
    if isinstance(args, TrainingArguments):
        values = {f.name: getattr(args, f.name) for f in fields(args) if f.init and hasattr(args, f.name)}
        return InfoNCTrainingArguments(**values)
    raise TypeError(f"args must be InfoNCTrainingArguments (or TrainingArguments), got {type(args).__name__}.")


def infer_class_names(dataset: Any, label_column: str = "label") -> list[str] | None:
    """Class names from a ``datasets.ClassLabel`` column (``label`` or ``labels``), else ``None``."""
    features = getattr(dataset, "features", None)
    if not features:
        return None
    for column in (label_column, "labels"):
        names = getattr(features.get(column), "names", None) if column in features else None
        if names:
            return list(names)
    return None



def _accelerator_rng_module(device: torch.device) -> Any:
    """The ``torch.cuda``-like module whose generator an op on ``device`` draws from, or ``None`` (CPU)."""
    if device.type == "cpu":
        return None
    module = getattr(torch, device.type, None)
    if module is None or not hasattr(module, "get_rng_state") or not hasattr(module, "set_rng_state"):
        return None
    if device.type == "cuda" and not torch.cuda.is_initialized():
        return None
    return module


@dataclass
class _RngState:
    """The CPU and accelerator random states before a forward, to replay its dropout masks.

    The construction of GradCache's ``RandContext`` (Gao et al. 2021): the no-grad forward of
    pass 1 and the forward with gradients of pass 2 must draw the same random numbers, otherwise
    the cached gradient belongs to other features than those pass 2 differentiates.
    """

    cpu: torch.Tensor
    device: torch.device
    accelerator: torch.Tensor | None = None

    @classmethod
    def capture(cls, device: torch.device) -> _RngState:
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
    rng: list[_RngState] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    value: torch.Tensor | None = None  # the loss of the whole accumulated batch (detached)
    base_weights: list[float] = field(default_factory=list)  # c_i of b = Σ c_i·b_i (see the first pass)
    rows_per_sample: bool = False  # head rows are per-sample anchors (pairs) rather than a shared head
    grad_features: tuple[torch.Tensor, ...] = ()
    grad_rows: tuple[torch.Tensor, ...] | torch.Tensor | None = None
    grad_scale: torch.Tensor | None = None
    grad_base: torch.Tensor | None = None


def _shared_value(values: list[torch.Tensor]) -> torch.Tensor:
    """The value of a tensor every micro-batch recomputes from the same parameters (head rows, logit scale).

    Identical across micro-batches unless a stochastic layer (text-tower dropout) acts on it;
    then the mean of the micro-batch samples is used (see ``_exact_accumulation_first_pass``).
    """
    first = values[0].detach()
    if all(torch.equal(first, v.detach()) for v in values[1:]):
        return first.clone()
    return torch.stack([v.detach() for v in values]).mean(dim=0)


@contextlib.contextmanager
def _hub_uploads():
    """Within the block, ``Trainer``'s uploads (``transformers.trainer.hf_api().upload_folder``) skip
    pickled files, and a folder whose LoRA adapter names its own folder as base is uploaded as
    :func:`hf_infonc.card.hub_file_set` stages it (the adapter then names the repo); such a staged
    upload runs to completion before it returns (a finished future when one was asked for)."""
    from concurrent.futures import Future

    import transformers.trainer as trainer_module

    from hf_infonc.card import PICKLE_SUFFIXES, hub_file_set

    make_api = trainer_module.hf_api
    pickles = [f"*{suffix}" for suffix in PICKLE_SUFFIXES]  # files that torch.load / pickle would read

    class HubApi:
        def __init__(self) -> None:
            self._api = make_api()

        def __getattr__(self, name: str) -> Any:
            return getattr(self._api, name)

        def upload_folder(self, *, repo_id: str, folder_path: str, ignore_patterns: Any = None, **kwargs: Any) -> Any:
            patterns = [ignore_patterns] if isinstance(ignore_patterns, str) else list(ignore_patterns or [])
            kwargs["ignore_patterns"] = [*patterns, *pickles]
            with hub_file_set(folder_path, repo_id) as folder:
                if Path(folder) == Path(folder_path):
                    return self._api.upload_folder(repo_id=repo_id, folder_path=folder_path, **kwargs)
                future = kwargs.pop("run_as_future", False)
                result = self._api.upload_folder(repo_id=repo_id, folder_path=str(folder), **kwargs)
            if not future:
                return result
            done: Future = Future()
            done.set_result(result)
            return done

    trainer_module.hf_api = HubApi
    try:
        yield
    finally:
        trainer_module.hf_api = make_api


def _with_base(components: Mapping[str, torch.Tensor], base: torch.Tensor) -> Mapping[str, torch.Tensor]:
    """``components`` with ``loss/base`` replaced."""
    if isinstance(components, InformationComponents):
        return InformationComponents(base, components.raw, components.layout)
    return {**components, "loss/base": base}


class InfoNCTrainer(Trainer):
    """A ``transformers.Trainer`` that adds the information losses through a model adapter.

    Drop-in: the base loss is ``Trainer``'s own (``compute_loss`` with label smoothing,
    ``compute_loss_func``, ``num_items_in_batch`` and the loss kwargs of the model), predictions are
    the model's own outputs, and checkpoints are ``Trainer``'s (with ``training_args.json`` instead of
    the pickled ``training_args.bin``). The adapter runs *as the model's forward*
    (:func:`~hf_infonc.adapters.base.replaced_forward`), so ``Trainer.compute_loss`` sees exactly the
    outputs it would see without it, and the information terms are added on top. A model that no
    adapter supports trains as with ``Trainer`` (a warning says the information terms are not
    available); with a weight > 0 it is an error at construction.

    Args (beyond ``Trainer``'s):
        adapter: a :class:`~hf_infonc.adapters.ModelAdapter`; by default picked from the model type.
        class_names: class names for CLIP classification heads; by default read from the
            ``label`` ClassLabel of ``train_dataset``.
        text_tokenizer: the tokenizer of the class prompts when ``processing_class`` is not one
            (open_clip tokenizers); defaults to ``processing_class``.
        eval_data_collator: collator for evaluation and prediction (e.g. without augmentation);
            defaults to ``data_collator``.
    """

    # Exact gradient accumulation (info_exact_accumulation): the micro-batches of the current
    # optimizer step, whether the batches are image-caption pairs (learnt from the first forward).
    _accumulated_step: _AccumulatedStep | None = None
    _pairwise_batches: bool | None = None
    _warned_deepspeed_accumulation: bool = False
    _loss_kwargs_probed: bool = False

    def __init__(
        self,
        model: nn.Module | None = None,
        args: TrainingArguments | None = None,
        *,
        adapter: ModelAdapter | None = None,
        class_names: list[str] | None = None,
        text_tokenizer: Any = None,
        eval_data_collator: Any = None,
        **kwargs: Any,
    ) -> None:
        args = _as_infonc_args(args, model)
        adapter = adapter if adapter is not None or model is None else find_adapter(model)
        if adapter is None and args.info_losses_active:
            raise TypeError(
                f"cma_weight/mi_weight/entropy_gap_weight > 0 need features and head rows, but "
                f"{unsupported_model_message(model)}"
            )
        super().__init__(model=model, args=args, **kwargs)
        self.eval_data_collator = eval_data_collator
        self.adapter = adapter
        #: the features of the latest evaluation forward (see :func:`hf_infonc.evaluation.add_information_metrics`)
        self.feature_capture = FeatureCapture()
        self._adapter_output: AdapterOutput | None = None
        self.class_names = class_names or infer_class_names(self.train_dataset) or infer_class_names(self.eval_dataset)
        if adapter is None:
            logger.warning(
                "InfoNCTrainer: no hf_infonc adapter supports %s; it trains exactly as transformers.Trainer, without the "
                "information terms and measures (see docs/adapters.md to add one).", type(self.model).__name__
            )
        else:
            adapter.setup(
                self.model,
                class_names=self.class_names,
                templates=self.args.class_prompt_templates,
                processing_class=text_tokenizer if text_tokenizer is not None else self.processing_class,
            )
            if args.label_names is None and adapter.label_names is not None:
                self.label_names = list(adapter.label_names)
            if adapter.computes_loss:  # its own loss ignores num_items_in_batch: a per-batch mean
                self.model_accepts_loss_kwargs = False
        info_dtype = getattr(torch, getattr(self.args, "info_dtype", "float64"))
        self.cma_loss = CrossModalAlignmentLoss(alpha=self.args.info_alpha, dtype=info_dtype)
        self.mi_loss = MutualInformationLoss(
            normalized=self.args.info_normalized, center=self.args.info_center, dtype=info_dtype
        )
        self.gap_loss = EntropyGapLoss(
            normalized=self.args.info_normalized, center=self.args.info_center, dtype=info_dtype
        )
        # per split: logged component -> [(detached 0-d value, weight)], summarised (one host sync) at log
        # time; weight 1 per training step, the number of rows per evaluation batch (per-sample means)
        self._component_records: dict[str, dict[str, list[tuple[torch.Tensor, float]]]] = {
            "train": defaultdict(list), "eval": defaultdict(list)
        }
        self._information_records: dict[str, dict[ComponentLayout, list[tuple[torch.Tensor, float]]]] = {
            "train": defaultdict(list), "eval": defaultdict(list)
        }

    def _set_signature_columns_if_needed(self) -> None:
        """``Trainer``'s columns (the forward's arguments and the labels) plus those the adapter reads."""
        super()._set_signature_columns_if_needed()
        if self.adapter is not None:
            self._signature_columns += [name for name in self.adapter.input_names if name not in self._signature_columns]

    # ------------------------------------------------------------------ mixed precision
    def autocast_smart_context_manager(self, cache_enabled: bool | None = True) -> contextlib.AbstractContextManager:
        """The accelerator's autocast (``bf16=True`` / ``fp16=True``) around the whole loss computation.

        ``transformers.Trainer`` relies on accelerate, which applies mixed precision by patching the
        model's ``forward``. The adapter runs in place of that forward (:meth:`_forward_with_base`)
        and calls other methods of the model (``get_image_features``, ``encode_text``, the
        classifier's parts), so without this the model would train in float32 under ``bf16=True``.
        ``compute_loss_context_manager`` (training and evaluation steps) enters this context. The
        information losses leave autocast themselves for their spectra (float64 / float32).
        """
        return self.accelerator.autocast()

    # ------------------------------------------------------------------ loss
    def _ratios_due(self) -> bool:
        """Batch MIR/HDR are computed for free with the MI/gap terms, else only before a log."""
        if not self.model.training:
            return True
        steps = self.args.logging_steps
        if self.args.logging_strategy != "steps" or not steps:
            return False
        every = max(1, int(steps)) if steps >= 1 else max(1, int(steps * max(self.state.max_steps, 1)))
        return (self.state.global_step + 1) % every == 0

    def _gathered(self, out: AdapterOutput) -> tuple[torch.Tensor, torch.Tensor]:
        """The features of all processes (with gradients) and the head rows: for image–caption pairs,
        the captions of all processes. Gathered once per adapter output."""
        gathered = out.__dict__.get("_gathered")
        if gathered is None:
            anchors = all_gather_with_grad(out.head_rows) if out.pairwise else out.head_rows
            gathered = out.__dict__["_gathered"] = (all_gather_with_grad(out.features), anchors)
        return gathered

    def _contrastive_base(self, out: AdapterOutput) -> torch.Tensor:
        """CLIP's contrastive loss of image–caption pairs over the batch gathered from all processes."""
        if out.logit_scale is None:
            raise ValueError("The adapter returned neither a base loss nor a logit_scale for the contrastive loss.")
        return clip_contrastive_loss(*self._gathered(out), out.logit_scale)

    def information_loss(
        self, out: AdapterOutput, *, info_scale: float = 1.0
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Combine the base loss with the information terms on the globally gathered batch.

        ``out.loss`` is the base loss (for image–caption pairs without one, CLIP's contrastive loss
        of the gathered batch is computed here). The gathered batch is validated once
        (:func:`~hf_infonc.losses.check_loss_inputs`), then CMA's group entropies and H₁, H₂, H₁₂
        (MI, entropy gap, the logged MIR/HDR) are computed without re-validation in one
        autograd.Function with a closed-form backward (:func:`~hf_infonc.losses.information_terms`).
        The information terms are summed in the spectrum dtype (``info_dtype``), multiplied by
        ``info_scale`` and cast to the base loss's dtype once: ``(1 - w_cma)·base + info_scale·info``.
        """
        args = self.args
        wants_terms = args.mi_weight > 0 or args.entropy_gap_weight > 0
        log_ratios = self._ratios_due()
        if out.loss is not None and not (args.info_losses_active or log_ratios):
            return out.loss, {"loss/base": out.loss.detach()}
        labels: torch.Tensor | None = None  # None: image–caption pairs, anchor i belongs to sample i
        if not out.pairwise:
            if out.labels is None:
                self._check_labels_present(out)
                return out.loss, {"loss/base": out.loss.detach()}
            labels = all_gather_no_grad(out.labels)
        features, anchors = self._gathered(out)
        base = out.loss if out.loss is not None else self._contrastive_base(out)
        components: dict[str, torch.Tensor] = {"loss/base": base.detach()}
        cma_loss = self.cma_loss if args.cma_weight > 0 else None
        if cma_loss is None and not (wants_terms or log_ratios):  # pairs, contrastive base only
            return base, components
        host_labels = check_loss_inputs(features, labels, anchors)  # once per step, on the gathered batch
        dtype, center = self.mi_loss.dtype, args.info_center
        if self._fused_loss_applies(features, labels, anchors, wants_terms or log_ratios):
            info, values = fused_information_loss(
                features, anchors, labels, cma_weight=args.cma_weight if cma_loss is not None else 0.0,
                mi_weight=args.mi_weight, gap_weight=args.entropy_gap_weight, entropy_terms=wants_terms or log_ratios,
                dtype=dtype, host_labels=host_labels,
            )
            layout = ComponentLayout(
                cma=cma_loss is not None, terms=wants_terms or log_ratios, mi=args.mi_weight > 0,
                gap=args.entropy_gap_weight > 0,
            )
            return self._combined(base, info, info_scale), InformationComponents(components["loss/base"], values, layout)
        if cma_loss is not None and not wants_terms:  # CMA with gradients; the logged MIR/HDR, when due, without
            cma, _ = information_terms(
                features, labels, anchors, cma=cma_loss, entropy_terms=False, dtype=dtype, validate=False
            )
            terms = None
            if log_ratios:
                with torch.no_grad():
                    terms = sample_entropy_terms(features, labels, anchors, center=center, dtype=dtype, validate=False)
        else:  # one pass for CMA (if on) and H₁, H₂, H₁₂ (with gradients only for MI / gap)
            with torch.set_grad_enabled(torch.is_grad_enabled() and wants_terms):
                cma, terms = information_terms(
                    features, labels, anchors, cma=cma_loss, entropy_terms=True, center=center, dtype=dtype,
                    validate=False,
                )
        info: torch.Tensor | None = None  # Σ weight·term, in the spectrum dtype
        if cma is not None:
            info = cma * args.cma_weight
            components["loss/cma"] = cma.detach()
        if terms is not None:
            for weight, loss, key in (
                (args.mi_weight, self.mi_loss, "loss/mi"),
                (args.entropy_gap_weight, self.gap_loss, "loss/entropy_gap"),
            ):
                if weight > 0:
                    value = loss.from_terms(terms)
                    info = value * weight if info is None else info.add(value, alpha=weight)
                    components[key] = value.detach()
            components.update(batch_ratios(terms))
        return self._combined(base, info, info_scale), components

    def _check_labels_present(self, out: AdapterOutput) -> None:
        if self.args.info_losses_active and not out.pairwise and out.labels is None:
            raise ValueError(
                "An information loss (cma_weight/mi_weight/entropy_gap_weight > 0) is switched on but the batch has no "
                "'labels'. Provide class labels in the batch (the collator's 'labels' key), or set the weights to 0."
            )

    def _combined(self, base: torch.Tensor, info: torch.Tensor | None, info_scale: float) -> torch.Tensor:
        """``(1 - w_cma)·base + info_scale·info`` in the base loss's dtype (``base`` itself when no term is on)."""
        if info is None:
            return base
        if info_scale != 1.0:
            info = info * info_scale
        return info.to(base.dtype).add(base, alpha=1.0 - self.args.cma_weight)

    def _fused_loss_applies(
        self, features: torch.Tensor, labels: torch.Tensor | None, anchors: torch.Tensor, terms: bool
    ) -> bool:
        """Whether :func:`~hf_infonc.info.fused.fused_information_loss` computes this step's information loss.

        It does for the unnormalised losses (``info_normalized=False``) with von Neumann entropies and no
        centring when the joint is taken on its ``n x n`` Hadamard product; everything else (−MIR / HDR
        losses, Rényi orders, centring, the Kronecker route of large batches with small ``d``) goes
        through :func:`~hf_infonc.losses.information_terms`. Both give the same values and gradients.
        """
        args = self.args
        if not args.info_losses_active or args.info_normalized or args.info_center:
            return False
        cma_alpha = self.cma_loss.alpha if args.cma_weight > 0 else None
        return fused_supported(
            features.shape[0], features.shape[1], anchors.shape[0], labels is not None, cma_alpha=cma_alpha,
            entropy_terms=terms, joint=True, center=False,
        )

    def _base_scaled_for_ga(self, num_items_in_batch: Any) -> bool:
        """Whether ``Trainer`` takes the base loss as already scaled for gradient accumulation (normalised by
        ``num_items_in_batch``, by the model or ``compute_loss_func``) and so does not divide it by the
        number of accumulation steps; ``Trainer.training_step``'s rule."""
        if self.loss_is_scaled_for_ga is not None:
            return bool(self.loss_is_scaled_for_ga)
        return bool(self.model_accepts_loss_kwargs and num_items_in_batch is not None) or self.compute_loss_func is not None

    def _run_adapter(self, core: nn.Module, *, unlabelled_loss: bool = False):
        """The function that runs in place of ``core``'s forward: the adapter, then what the trainer keeps
        of its output (the adapter output; in evaluation, the features for the metrics).
        ``unlabelled_loss``: a loss is asked for a batch without labels (checked before ``Trainer``'s
        less helpful "the model did not return a loss")."""

        def forward(**batch: Any) -> Any:
            out = self.adapter.forward(core, batch)
            if unlabelled_loss:
                self._check_labels_present(out)
            if out.pairwise and (out.loss is None or self.accelerator.num_processes > 1):
                out.loss = self._contrastive_base(out)  # what Trainer reads as the model's loss: the global one
            if not core.training and out.features is not None:
                self.feature_capture.put(out.features)
            self._adapter_output = out
            outputs = out.model_outputs()
            # as accelerate's patched forward returns a model's outputs under mixed precision
            return convert_to_fp32(outputs) if self.accelerator.mixed_precision in ("fp16", "bf16") else outputs

        return forward

    def _forward_with_base(
        self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch: Any
    ) -> tuple[torch.Tensor, Any, AdapterOutput]:
        """``Trainer.compute_loss`` with the adapter as the model's forward: the base loss exactly as
        ``Trainer`` computes it (label smoothing, ``compute_loss_func``, ``num_items_in_batch``), the
        model's outputs, and the adapter's output (its ``labels`` kept even when ``Trainer`` pops them)."""
        core = self.accelerator.unwrap_model(model)
        labels = inputs.get("labels")
        self._adapter_output = None
        with replaced_forward(core, self._run_adapter(core, unlabelled_loss=labels is None)):
            base, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        out = self._adapter_output
        if out is None:
            raise RuntimeError(
                f"The model wrapper of {type(core).__name__} did not call the model's forward; the {self.adapter.family} "
                f"adapter could not run."
            )
        if out.labels is None:
            out.labels = labels
        out.loss = base
        return base, outputs, out

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ):
        """``Trainer.compute_loss`` plus the information terms (``(1 - w_cma)·base + info``).

        Under gradient accumulation with a base loss normalised by ``num_items_in_batch`` (which
        ``Trainer`` does not divide by the number of accumulation steps), the per-micro-batch
        information terms are divided by it here, so they still average over the micro-batches.
        """
        if model.training and not self._loss_kwargs_probed:
            self._probe_loss_kwargs(model, inputs, num_items_in_batch)
        if self.adapter is None:
            return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        step = self._accumulated_step
        if model.training and step is not None and step.current is not None:
            if step.engaged is None:
                self._exact_accumulation_first_pass(model, step, num_items_in_batch)
            if step.engaged:
                step.rng[step.current].restore()  # same dropout masks as pass 1
                _, outputs, out = self._forward_with_base(model, inputs, num_items_in_batch)
                loss = self._exact_accumulation_loss(out, step, step.current, self._base_scaled_for_ga(num_items_in_batch))
                return (loss, outputs) if return_outputs else loss
        base, outputs, out = self._forward_with_base(model, inputs, num_items_in_batch)
        scaled = model.training and self._base_scaled_for_ga(num_items_in_batch)
        if model.training:
            self._pairwise_batches = bool(out.pairwise)
        loss, components = self.information_loss(out, info_scale=1.0 / self.current_gradient_accumulation_steps if scaled else 1.0)
        if scaled and "loss/base" in components:  # logged as the mean over the step, like the terms
            components = _with_base(components, base.detach() * self.current_gradient_accumulation_steps)
        if model.training and step is not None and step.current is not None and step.ratios_only:
            components = self._accumulated_ratios(out, components, step, step.current)
        if model.training:
            self.record_components(components, "train")
        else:
            self.record_components(components, "eval", rows=int(out.features.shape[0]) if out.features is not None else 1)
        return (loss, outputs) if return_outputs else loss

    def _probe_loss_kwargs(self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch: Any) -> None:
        """Whether the model's own loss really uses ``num_items_in_batch`` (once, at the first training batch).

        ``Trainer`` passes ``num_items_in_batch`` to any model whose ``forward`` takes ``**kwargs`` and
        then skips the division by the gradient-accumulation steps (and multiplies by the process
        count). Heads that take ``**kwargs`` but compute a plain mean (BERT's and ViT's classifiers,
        transformers issue #47688) so train with a loss and gradient ``m`` times too large. Two
        no-grad forwards with ``num_items_in_batch`` n and 2n (same RNG state, buffers restored) tell
        which kind the model is; when the loss does not change, ``model_accepts_loss_kwargs`` is
        set to ``False``, so ``Trainer`` divides the loss as it does for models without loss kwargs.
        Not done when the loss comes from ``compute_loss_func`` or label smoothing (both normalise by
        ``num_items_in_batch``) or ``loss_is_scaled_for_ga`` is set.
        """
        self._loss_kwargs_probed = True
        if not (
            self.model_accepts_loss_kwargs and num_items_in_batch is not None and "labels" in inputs
            and self.compute_loss_func is None and self.label_smoother is None and self.loss_is_scaled_for_ga is None
        ):
            return
        core = self.accelerator.unwrap_model(model)
        buffers = {name: buffer.detach().clone() for name, buffer in core.named_buffers()}
        rng = _RngState.capture(self.args.device)
        losses = []
        try:
            with torch.no_grad(), self.compute_loss_context_manager():
                for items in (num_items_in_batch, num_items_in_batch * 2):
                    rng.restore()
                    outputs = model(**inputs, num_items_in_batch=items)
                    losses.append(outputs["loss"] if isinstance(outputs, dict) else outputs[0])
        finally:
            rng.restore()
            with torch.no_grad():
                for name, buffer in core.named_buffers():
                    if name in buffers:
                        buffer.copy_(buffers[name])
        if torch.equal(losses[0], losses[1]):
            self.model_accepts_loss_kwargs = False
            logger.info(
                "%s takes **kwargs but its loss ignores num_items_in_batch: the loss is divided by the gradient "
                "accumulation steps (transformers.Trainer would not divide it; transformers issue #47688).",
                type(core).__name__,
            )

    def prediction_step(self, model: nn.Module, inputs: dict[str, Any], prediction_loss_only: bool, ignore_keys=None):
        """``Trainer.prediction_step``; a batch without labels (``predict()`` on unlabelled data) runs
        ``model(**inputs)`` there, which runs the adapter too (CLIP classifies through its prompt head)."""
        if self.adapter is None:
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)
        core = self.accelerator.unwrap_model(model)
        with replaced_forward(core, self._run_adapter(core)):
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)

    # ------------------------------------------------------------------ exact gradient accumulation
    def _exact_accumulation_wanted(self, num_batches: int) -> bool:
        """Whether the next optimizer step is followed micro-batch by micro-batch (``_AccumulatedStep``).

        Training with ``gradient_accumulation_steps > 1``, more than one micro-batch in this step and
        ``info_exact_accumulation=True``. The first micro-batch then decides: the two-pass GradCache
        step when a Gram-based term is active (an information loss, or image–caption pairs whose
        contrastive base loss is one; the kind of batch is probed once), else only the logged batch
        MIR/HDR are computed on the whole accumulated batch (no extra forward). Not with DeepSpeed,
        whose engine accumulates by itself: per-micro-batch terms, with a warning.
        """
        args = self.args
        if not (args.info_exact_accumulation and args.gradient_accumulation_steps > 1 and num_batches > 1):
            return False
        if not args.info_losses_active and self._pairwise_batches is False and not self._ratios_due():
            return False  # nothing Gram-based to compute or log in this step
        if self.is_deepspeed_enabled:
            if not self._warned_deepspeed_accumulation and (args.info_losses_active or self._pairwise_batches):
                logger.warning(
                    "info_exact_accumulation is not supported with DeepSpeed (its engine accumulates the gradients): "
                    "the Gram-based terms are computed per micro-batch. For exact terms, raise the per-device batch "
                    "size instead of gradient_accumulation_steps, or set info_exact_accumulation=False to silence this."
                )
                self._warned_deepspeed_accumulation = True
            return False
        return True

    def get_batch_samples(self, epoch_iterator: Any, num_batches: int, device: torch.device) -> tuple[list, Any]:
        """``Trainer.get_batch_samples``, remembering the micro-batches of the step for the exact accumulation."""
        batch_samples, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
        if self._pairwise_batches is None and self.adapter is not None and batch_samples:
            self._pairwise_batches = self.adapter.is_pairwise(batch_samples[0])  # None: learnt from the forward
        wanted = self.adapter is not None and self._exact_accumulation_wanted(len(batch_samples))
        self._accumulated_step = _AccumulatedStep(batches=list(batch_samples)) if wanted else None
        return batch_samples, num_items_in_batch

    def training_step(self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None) -> torch.Tensor:
        """``Trainer.training_step``; tells :meth:`compute_loss` which micro-batch of the step it receives."""
        step = self._accumulated_step
        if step is not None:
            step.current = next((i for i, batch in enumerate(step.batches) if batch is inputs), None)
        try:
            return super().training_step(model, inputs, num_items_in_batch)
        finally:
            if step is not None:
                step.current = None

    def _exact_accumulation_first_pass(self, model: nn.Module, step: _AccumulatedStep, num_items_in_batch: Any) -> None:
        """Pass 1 of the GradCache step (Gao et al. 2021, arXiv 2101.06983): the loss of the whole
        accumulated batch and its gradient with respect to the adapter outputs.

        For every micro-batch i (n_i rows, N = Σ n_i, m micro-batches), with ``torch.no_grad()``, run
        the adapter forward (through the DDP/FSDP wrapper, as :meth:`compute_loss` does), recording the
        CPU and accelerator RNG states first so that pass 2 replays the same dropout masks. Module
        buffers (BatchNorm running statistics) are saved before and restored after, so that only
        pass 2 updates them. Then, from detached leaf copies:

        * ``F = [F_1; …; F_m]`` the features (and, for image–caption pairs, ``A = [A_1; …; A_m]`` the
          per-sample caption anchors);
        * ``H`` the shared head rows and ``s`` the logit scale: every micro-batch recomputes them
          from the same parameters, so they are equal (the mean ``(1/m)·Σ H_i`` if a stochastic
          layer made them differ);
        * ``b = Σ_i c_i·b_i`` the base loss of ``Trainer.compute_loss`` per micro-batch, with
          ``c_i = n_i/N`` for a per-batch mean (the mean over N rows is the size-weighted mean of
          micro-batch means) and ``c_i = 1`` for a loss normalised by ``num_items_in_batch`` (already
          a share of the whole step's loss); for image–caption pairs (no ``compute_loss_func``)
          ``information_loss`` computes the contrastive base on the leaves instead,

        ``L = information_loss(F, A|H, s, b)`` is the loss of one step on the concatenated batch
        (SPEC §4), recorded once as the step's logged components, and ``torch.autograd.grad``
        gives ``∂L/∂F``, ``∂L/∂A``, ``∂L/∂H``, ``∂L/∂s`` and ``∂L/∂b`` (``= 1 - w_cma``). Across
        processes ``information_loss`` gathers the leaves itself, so ``∂L/∂F`` is already the sum
        over processes that DDP's average turns into the single-process gradient
        (:mod:`hf_infonc.distributed`). :meth:`_exact_accumulation_loss` is pass 2.

        If the first forward shows neither an information loss nor image–caption pairs, the RNG
        and buffers are restored and the step falls back to the plain path (once per run: the
        batch kind is remembered).
        """
        step.engaged = False
        if not self.args.info_losses_active and self._pairwise_batches is False:
            step.ratios_only = self._ratios_due()
            return
        core = self.accelerator.unwrap_model(model)
        saved_buffers = {name: buffer.detach().clone() for name, buffer in core.named_buffers()}
        outputs: list[AdapterOutput] = []
        try:
            with torch.no_grad():
                for index, batch in enumerate(step.batches):
                    step.rng.append(_RngState.capture(self.args.device))
                    # a copy: Trainer.compute_loss pops the labels for label smoothing / compute_loss_func
                    _, _, out = self._forward_with_base(model, dict(self._prepare_inputs(batch)), num_items_in_batch)
                    if out.pairwise and self.compute_loss_func is None:
                        out.loss = None  # the contrastive base is computed on the whole accumulated batch
                    if index == 0:
                        self._pairwise_batches = bool(out.pairwise)
                        if not (self.args.info_losses_active or self._pairwise_batches):
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
        finally:
            with torch.no_grad():
                for name, buffer in core.named_buffers():
                    if name in saved_buffers:
                        buffer.copy_(saved_buffers[name])
        self._cache_accumulated_gradients(step, outputs, self._base_scaled_for_ga(num_items_in_batch))
        step.engaged = True

    def _cache_accumulated_gradients(self, step: _AccumulatedStep, outputs: list[AdapterOutput], scaled: bool) -> None:
        """Global loss value, logged components and ``∂L/∂(leaves)`` for pass 2 (see the first pass)."""
        pairwise = bool(self._pairwise_batches)
        step.sizes = [int(out.features.shape[0]) for out in outputs]
        step.rows_per_sample = pairwise
        total_rows = sum(step.sizes)
        step.base_weights = [1.0 if scaled else size / total_rows for size in step.sizes]
        has_loss = [out.loss is not None for out in outputs]
        if any(has_loss) and not all(has_loss):
            raise ValueError(
                f"The adapter returned a base loss for {sum(has_loss)} of {len(outputs)} micro-batches of one step; "
                "the exact accumulation needs it for all or none. Check the batches' labels, or set "
                "info_exact_accumulation=False."
            )
        with torch.enable_grad():
            leaves: dict[str, torch.Tensor] = {
                "features": torch.cat([out.features.detach() for out in outputs]).requires_grad_(True)
            }
            if outputs[0].head_rows is not None:
                rows = (
                    torch.cat([out.head_rows.detach() for out in outputs])
                    if pairwise
                    else _shared_value([out.head_rows for out in outputs])
                )
                leaves["head_rows"] = rows.requires_grad_(True)
            if outputs[0].logit_scale is not None:
                leaves["logit_scale"] = _shared_value([out.logit_scale for out in outputs]).requires_grad_(True)
            if all(has_loss):
                losses = torch.stack([out.loss.detach().double().reshape(()) for out in outputs])
                weights = torch.tensor(step.base_weights, dtype=torch.float64, device=losses.device)
                leaves["base"] = (weights * losses).sum().to(outputs[0].loss.dtype).requires_grad_(True)
            labels = None
            if all(out.labels is not None for out in outputs):
                labels = torch.cat([out.labels for out in outputs])
            merged = AdapterOutput(
                loss=leaves.get("base"),
                features=leaves["features"],
                head_rows=leaves.get("head_rows"),
                labels=labels,
                logit_scale=leaves.get("logit_scale"),
                pairwise=pairwise,
            )
            total, components = self.information_loss(merged)
            names = list(leaves)
            if total.requires_grad:
                grads = torch.autograd.grad(total, [leaves[k] for k in names], allow_unused=True)
            else:
                grads = (None,) * len(names)
        grad = dict(zip(names, grads))
        step.value = total.detach()
        features_grad = grad["features"]
        step.grad_features = () if features_grad is None else features_grad.split(step.sizes)
        rows_grad = grad.get("head_rows")
        step.grad_rows = rows_grad.split(step.sizes) if (pairwise and rows_grad is not None) else rows_grad
        step.grad_scale = grad.get("logit_scale")
        step.grad_base = grad.get("base")
        self.record_components(components, "train")

    def _exact_accumulation_loss(
        self, out: AdapterOutput, step: _AccumulatedStep, index: int, scaled: bool
    ) -> torch.Tensor:
        """Pass 2 of the GradCache step for micro-batch ``index``: a loss with the right value and gradient.

        The Trainer divides each micro-batch loss by m (``current_gradient_accumulation_steps``)
        unless the base loss is ``scaled`` for accumulation (:meth:`_base_scaled_for_ga`; then the
        division by m is done here) and sums the gradients. With the gradients cached by pass 1
        and the outputs ``F_i, A_i, H_i, s_i, b_i`` of this forward (same RNG state, so the same
        values), the surrogate

            g_i = m·⟨F_i, ∂L/∂F_i⟩ + m·⟨A_i, ∂L/∂A_i⟩ + ⟨H_i, ∂L/∂H⟩ + ⟨s_i, ∂L/∂s⟩ + m·c_i·(∂L/∂b)·b_i

        satisfies ``(1/m)·Σ_i ∇θ g_i = ∇θ L`` by the chain rule: F and A are the concatenations of
        the F_i and A_i; H and s are the mean of m equal copies (each copy gets 1/m of ∂L/∂H);
        b = Σ_i c_i·b_i, whose own gradient (the base loss's) comes from this forward. The
        value ``g_i - g_i.detach() + L`` is L for every micro-batch, so the Trainer's logged
        loss ``(1/m)·Σ_i L`` is the loss of the whole batch, as with one accumulation step.
        """
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

        def add(tensor: torch.Tensor | None, grad: torch.Tensor | None, weight: float) -> None:
            if tensor is not None and grad is not None and tensor.requires_grad:
                terms.append(weight * (tensor * grad.to(tensor.dtype)).sum().to(dtype))

        add(out.features, step.grad_features[index] if step.grad_features else None, m)
        if step.rows_per_sample:
            add(out.head_rows, step.grad_rows[index] if step.grad_rows is not None else None, m)
        else:
            add(out.head_rows, step.grad_rows, 1.0)
        add(out.logit_scale, step.grad_scale, 1.0)
        add(out.loss, step.grad_base, m * step.base_weights[index])
        if not terms:  # nothing trainable reaches the loss: same error as the plain path at backward
            loss = value.to(dtype).clone()
        else:
            surrogate = torch.stack(terms).sum()
            loss = surrogate - surrogate.detach() + value.to(dtype)
        return loss / m if scaled else loss

    def _accumulated_ratios(
        self, out: AdapterOutput, components: dict[str, torch.Tensor], step: _AccumulatedStep, index: int
    ) -> dict[str, torch.Tensor]:
        """The logged batch MIR/HDR of the whole accumulated batch when no Gram loss is active.

        The micro-batch values are dropped; the detached features, labels and head rows are kept,
        and at the last micro-batch the ratios are computed once on their concatenation (no extra
        forward, no gradient), as one step on the whole batch would log them.
        """
        components = {key: value for key, value in components.items() if key not in ("mir", "hdr")}
        if out.labels is None or out.head_rows is None or out.features is None:
            return components
        step.stash.append((out.features.detach(), out.labels.detach(), out.head_rows.detach()))
        if index != len(step.batches) - 1 or len(step.stash) != len(step.batches):
            return components
        features, labels, rows = zip(*step.stash)
        step.stash = []
        merged = AdapterOutput(
            loss=features[0].new_zeros(()),  # a base is given: information_loss adds no contrastive term
            features=torch.cat(features),
            head_rows=_shared_value(list(rows)),
            labels=torch.cat(labels),
        )
        with torch.no_grad():
            _, whole = self.information_loss(merged)
        components.update({key: whole[key] for key in ("mir", "hdr") if key in whole})
        return components

    # ------------------------------------------------------------------ training
    def train(self, *args: Any, **kwargs: Any):
        self._undo_evaluation_prepare()
        try:
            return super().train(*args, **kwargs)
        finally:
            self._accumulated_step = None  # release the last step's micro-batches

    def _undo_evaluation_prepare(self) -> None:
        """Let ``train()`` wrap the model in DDP after an ``evaluate()`` on several processes.

        ``Trainer.evaluate()`` before ``train()`` calls ``accelerator.prepare_model(model,
        evaluation_mode=True)``, which marks the bare model as prepared without wrapping it; the
        training loop's ``prepare`` then returns the bare model and gradients are never
        synchronised across processes (transformers 5.24 / accelerate 1.15). Clearing the mark
        restores the normal DDP wrapping. DeepSpeed and FSDP prepare fully in evaluation and are
        left alone.
        """
        model = self.model
        if (
            self.accelerator.num_processes > 1
            and self.model_wrapped is model
            and getattr(model, "_is_accelerate_prepared", False)
            and not (self.is_deepspeed_enabled or self.is_fsdp_enabled)
        ):
            model._is_accelerate_prepared = False
            if model in self.accelerator._models:
                self.accelerator._models.remove(model)

    # ------------------------------------------------------------------ saving
    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Save as ``Trainer`` does, but write the arguments as JSON instead of a pickle.

        ``Trainer._save`` ends with ``torch.save(self.args, "training_args.bin")``, a pickle that
        ``hub.push_to_hub`` would have to exclude; ``to_json_string`` also blanks ``hub_token``.
        """
        super()._save(output_dir, state_dict=state_dict)
        if not self.args.should_save:
            return
        folder = Path(output_dir if output_dir is not None else self.args.output_dir)
        (folder / TRAINING_ARGS_NAME).unlink(missing_ok=True)
        (folder / "training_args.json").write_text(self.args.to_json_string())

    def create_model_card(
        self,
        language: str | None = None,
        license: str | None = None,
        tags: str | list[str] | None = None,
        model_name: str | None = None,
        finetuned_from: str | None = None,
        tasks: str | list[str] | None = None,
        dataset_tags: str | list[str] | None = None,
        dataset: str | list[str] | None = None,
        dataset_args: str | list[str] | None = None,
    ) -> None:
        """Write hf_infonc's model card to ``output_dir/README.md`` (``Trainer.push_to_hub`` calls this).

        The card (:class:`hf_infonc.card.InfoNCCardData`) has the Hub metadata, the base model, the
        loss formula with its weights, the last evaluation's metrics (accuracy, MIR/HDR, NC1–NC4),
        how to load the model, and the citations. A model without an adapter gets ``Trainer``'s card.
        """
        if self.adapter is None:
            return super().create_model_card(
                language=language, license=license, tags=tags, model_name=model_name, finetuned_from=finetuned_from,
                tasks=tasks, dataset_tags=dataset_tags, dataset=dataset, dataset_args=dataset_args,
            )
        if not self.is_world_process_zero():
            return
        from hf_infonc.card import CARD_NAME, InfoNCCardData, render_model_card

        first = (lambda value: value[0] if isinstance(value, (list, tuple)) else value)
        data = InfoNCCardData.from_trainer(
            self, model_name=model_name, dataset=first(dataset), finetuned_from=finetuned_from, license=license
        )
        card = render_model_card(data)
        if tags:
            card.data.tags = list(dict.fromkeys([*(card.data.tags or []), *([tags] if isinstance(tags, str) else tags)]))
        if language:
            card.data.language = language
        Path(self.args.output_dir).mkdir(parents=True, exist_ok=True)
        card.save(Path(self.args.output_dir) / CARD_NAME)

    def push_to_hub(self, *args: Any, **kwargs: Any) -> Any:
        """``Trainer.push_to_hub``: hf_infonc's card (:meth:`create_model_card`), no pickled file uploaded, and a
        LoRA adapter whose base is saved with the run names the repo as its base."""
        with _hub_uploads():
            return super().push_to_hub(*args, **kwargs)

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        """``Trainer``'s checkpoint push (``hub_strategy``), without pickles: ``Trainer`` writes the pickled
        ``training_args.bin`` beside the model and uploads checkpoints with ``optimizer.pt``,
        ``scheduler.pt`` and ``rng_state.pth``; here every upload skips pickled files (so a Hub
        checkpoint holds the weights, not the optimizer state) and the pickle is removed again."""
        with _hub_uploads():
            super()._push_from_checkpoint(checkpoint_folder)
        (Path(self.args.output_dir) / TRAINING_ARGS_NAME).unlink(missing_ok=True)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        """Load a ``checkpoint-*`` folder as ``Trainer`` does, then repair renamed weights (see below)."""
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        self._reload_renamed_weights(resume_from_checkpoint, self.model if model is None else model)

    def _load_best_model(self) -> None:
        super()._load_best_model()
        if self.state.best_model_checkpoint is not None:
            self._reload_renamed_weights(self.state.best_model_checkpoint, self.model)

    def _reload_renamed_weights(self, folder: str, model: nn.Module) -> None:
        """Reload a checkpoint through ``from_pretrained`` when its weight names differ from the model's.

        transformers 5 saves some models under their legacy weight names (ViT: ``vit.encoder.layer.*``
        for ``vit.layers.*``), which ``from_pretrained`` renames back but ``Trainer`` does not when it
        resumes or loads the best model: it loads with ``strict=False`` and only warns, so those
        layers silently stay at their current values (transformers 5.24–5.25). Here the checkpoint's
        names are compared with the model's; if they differ, the weights are loaded with the model
        class's ``from_pretrained`` (which applies the renaming) and copied in strictly. DeepSpeed,
        FSDP and PEFT checkpoints are left to ``Trainer``.
        """
        core = self.accelerator.unwrap_model(model)
        weights = Path(folder) / SAFE_WEIGHTS_NAME
        handled_by_trainer = self.is_deepspeed_enabled or self.is_fsdp_enabled or not isinstance(core, PreTrainedModel)
        if handled_by_trainer or not weights.is_file():
            return
        with safe_open(str(weights), framework="pt") as handle:
            saved = set(handle.keys())
        if saved <= set(core.state_dict()):
            return  # loaded as saved (tied weights may be missing from the file)
        reloaded = type(core).from_pretrained(folder)
        missing, unexpected = core.load_state_dict(reloaded.state_dict(), strict=False)
        if missing or unexpected:
            raise RuntimeError(
                f"The checkpoint {folder} does not match {type(core).__name__}: missing {sorted(missing)[:5]}, "
                f"unexpected {sorted(unexpected)[:5]} (even after from_pretrained's renaming). Was it saved from "
                f"another architecture or configuration?"
            )
        logger.info("Reloaded %s through from_pretrained: its weight names differ from the model's.", folder)

    # ------------------------------------------------------------------ data
    def _with_eval_collator(self, build, *args: Any, **kwargs: Any):
        if self.eval_data_collator is None:
            return build(*args, **kwargs)
        train_collator, self.data_collator = self.data_collator, self.eval_data_collator
        try:
            return build(*args, **kwargs)
        finally:
            self.data_collator = train_collator

    def get_eval_dataloader(self, eval_dataset: Any = None):
        return self._with_eval_collator(super().get_eval_dataloader, eval_dataset)

    def get_test_dataloader(self, test_dataset: Any):
        return self._with_eval_collator(super().get_test_dataloader, test_dataset)

    # ------------------------------------------------------------------ logging
    def record_components(self, components: Mapping[str, torch.Tensor], split: str, rows: int = 1) -> None:
        """Keep the detached values of logged components (no host sync); :meth:`log` averages them.

        ``rows``: the weight of these values in the average, 1 per training step and the number of
        (local) rows of an evaluation batch, so that evaluation components are per-sample means
        whatever the batch size and process count. :class:`~hf_infonc.losses.InformationComponents`
        are kept as their raw values, from which the components of the whole window are derived at
        once when they are logged.
        """
        if isinstance(components, InformationComponents):
            self._information_records[split][components.layout].append((components.raw, float(rows)))
            if components.base is None:
                return
            components = {"loss/base": components.base}
        records = self._component_records[split]
        for key, value in components.items():
            records[key].append((value.detach(), float(rows)))

    def _reduced_components(self, split: str) -> dict[str, float]:
        """Weighted mean of each logged component since the last log over all processes (NaN values skipped)."""
        records, information = self._component_records[split], self._information_records[split]
        if not records and not information:
            return {}
        series: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}

        def add(key: str, values: torch.Tensor, weights: list[float]) -> None:
            weights_t = torch.tensor(weights, dtype=torch.float64, device=values.device)
            series.setdefault(key, []).append((values.reshape(-1).double(), weights_t))

        for key, items in records.items():
            add(key, torch.stack([value.reshape(()) for value, _ in items]), [w for _, w in items])
        for layout, items in information.items():
            for key, column in layout.derive(torch.stack([raw for raw, _ in items]).double()).items():
                add(key, column, [w for _, w in items])
        keys = sorted(series)
        sums = []
        for key in keys:
            values, weights = (torch.cat(parts) for parts in zip(*series[key]))
            weights = weights.masked_fill(values.isnan(), 0.0)
            sums.append(torch.stack([(values.nan_to_num() * weights).sum(), weights.sum()]))
        totals = torch.stack(sums).to(self.args.device)
        if self.accelerator.num_processes > 1:
            totals = self.accelerator.reduce(totals, reduction="sum")
        records.clear()
        information.clear()
        return {key: round(float(num / den), 6) if den > 0 else math.nan for key, (num, den) in zip(keys, totals.tolist())}

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            logs = {**logs, **self._reduced_components("train")}
        super().log(logs, start_time)

    def evaluation_loop(self, *args: Any, **kwargs: Any):
        """Adds the mean information components over the evaluation set (``eval_loss/cma``, ``eval_mir``…)."""
        self._component_records["eval"].clear()
        self._information_records["eval"].clear()
        output = super().evaluation_loop(*args, **kwargs)
        prefix = kwargs.get("metric_key_prefix", args[4] if len(args) > 4 else "eval")
        for key, value in self._reduced_components("eval").items():
            # compute_metrics' dataset-level values (e.g. the paper's MIR over batches of 64) win
            # over the mean of the per-evaluation-batch ratios logged here.
            output.metrics.setdefault(f"{prefix}_{key}", value)
        return output
