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
concatenated batch. Gradient accumulation: the Gram terms are computed per micro-batch (as the
non-cached losses of sentence-transformers do); the base loss is averaged as usual.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import nn
from transformers import Trainer, TrainingArguments
from transformers.trainer import TRAINING_ARGS_NAME
from transformers.utils import logging

from hf_infonc.adapters import ModelAdapter, adapter_for, call_through_wrapper
from hf_infonc.adapters.base import AdapterOutput
from hf_infonc.distributed import all_gather_no_grad, all_gather_with_grad
from hf_infonc.losses import (
    CrossModalAlignmentLoss,
    EntropyGapLoss,
    MutualInformationLoss,
    batch_ratios,
    clip_contrastive_loss,
    sample_entropy_terms,
)

logger = logging.get_logger(__name__)


def check_information_settings(
    *, cma_weight: float = 0.0, mi_weight: float = 0.0, entropy_gap_weight: float = 0.0, info_alpha: float = 1.0
) -> None:
    """Validate the information-loss settings (also used by recipes, without building the arguments)."""
    if not (math.isfinite(cma_weight) and 0.0 <= cma_weight <= 1.0):
        raise ValueError(f"cma_weight={cma_weight} must lie in [0, 1]: it is w of (1-w)·base + w·CMA.")
    for name, value in (("mi_weight", mi_weight), ("entropy_gap_weight", entropy_gap_weight)):
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name}={value} must be a finite number ≥ 0 (0 disables the loss).")
    if not (math.isfinite(info_alpha) and info_alpha >= 0):
        raise ValueError(f"info_alpha={info_alpha} must be a finite Rényi order ≥ 0.")


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
    class_prompt_templates: list[str] = field(
        default_factory=lambda: ["a photo of a {}."],
        metadata={"help": "Prompt templates for CLIP class heads; '{}' is replaced by the class name."},
    )
    remove_unused_columns: bool = field(
        default=False,
        metadata={"help": "Kept False: adapters read batch keys (labels, pixel_values) the model forward does not list."},
    )

    def __post_init__(self) -> None:
        check_information_settings(
            cma_weight=self.cma_weight,
            mi_weight=self.mi_weight,
            entropy_gap_weight=self.entropy_gap_weight,
            info_alpha=self.info_alpha,
        )
        if self.label_names is None:
            self.label_names = ["labels"]
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


class InfoNCTrainer(Trainer):
    """A ``transformers.Trainer`` that adds the information losses through a model adapter.

    Args (beyond ``Trainer``'s):
        adapter: a :class:`~hf_infonc.adapters.ModelAdapter`; by default picked from the model type.
        class_names: class names for CLIP classification heads; by default read from the
            ``label`` ClassLabel of ``train_dataset``.
        text_tokenizer: the tokenizer of the class prompts when ``processing_class`` is not one
            (open_clip tokenizers); defaults to ``processing_class``.
        eval_data_collator: collator for evaluation and prediction (e.g. without augmentation);
            defaults to ``data_collator``.
    """

    # The losses returned by compute_loss are per-batch means; let Trainer divide by GA steps.
    loss_is_scaled_for_ga = False

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
        super().__init__(model=model, args=args, **kwargs)
        self.eval_data_collator = eval_data_collator
        # Our compute_loss never passes num_items_in_batch to the model: no hidden rescaling.
        self.model_accepts_loss_kwargs = False
        self.adapter = adapter if adapter is not None else adapter_for(self.model)
        self.class_names = class_names or infer_class_names(self.train_dataset) or infer_class_names(self.eval_dataset)
        self.adapter.setup(
            self.model,
            class_names=self.class_names,
            templates=self.args.class_prompt_templates,
            processing_class=text_tokenizer if text_tokenizer is not None else self.processing_class,
        )
        self.cma_loss = CrossModalAlignmentLoss(alpha=self.args.info_alpha)
        self.mi_loss = MutualInformationLoss(normalized=self.args.info_normalized, center=self.args.info_center)
        self.gap_loss = EntropyGapLoss(normalized=self.args.info_normalized, center=self.args.info_center)
        # detached 0-d tensors per logged component, summarised (one host sync) at log time
        self._component_sums: dict[str, dict[str, list[torch.Tensor]]] = {"train": defaultdict(list), "eval": defaultdict(list)}

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

    def information_loss(self, out: AdapterOutput) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Combine the base loss with the information terms on the globally gathered batch."""
        args = self.args
        wants_terms = args.mi_weight > 0 or args.entropy_gap_weight > 0
        log_ratios = self._ratios_due()
        if out.loss is not None and not (args.info_losses_active or log_ratios):
            return out.loss, {"loss/base": out.loss.detach()}
        features = all_gather_with_grad(out.features)
        if out.pairwise:
            anchors = all_gather_with_grad(out.head_rows)
            labels = torch.arange(features.shape[0], device=features.device)
        elif out.labels is None:
            if args.info_losses_active:
                raise ValueError(
                    "An information loss (cma_weight/mi_weight/entropy_gap_weight > 0) is switched on but the batch has "
                    "no 'labels'. Provide class labels in the batch (the collator's 'labels' key), or set the weights to 0."
                )
            return out.loss, {"loss/base": out.loss.detach()}
        else:
            anchors = out.head_rows
            labels = all_gather_no_grad(out.labels)
        base = out.loss
        if base is None:
            if out.logit_scale is None:
                raise ValueError("The adapter returned neither a base loss nor a logit_scale for the contrastive loss.")
            base = clip_contrastive_loss(features, anchors, out.logit_scale)
        components: dict[str, torch.Tensor] = {"loss/base": base.detach()}
        total = base
        if args.cma_weight > 0:
            cma = self.cma_loss(features, labels, anchors).to(base.dtype)
            total = (1.0 - args.cma_weight) * total + args.cma_weight * cma
            components["loss/cma"] = cma.detach()
        if wants_terms or log_ratios:
            with torch.set_grad_enabled(torch.is_grad_enabled() and wants_terms):
                terms = sample_entropy_terms(features, labels, anchors, center=args.info_center)
            if args.mi_weight > 0:
                mi = self.mi_loss.from_terms(terms).to(base.dtype)
                total = total + args.mi_weight * mi
                components["loss/mi"] = mi.detach()
            if args.entropy_gap_weight > 0:
                gap = self.gap_loss.from_terms(terms).to(base.dtype)
                total = total + args.entropy_gap_weight * gap
                components["loss/entropy_gap"] = gap.detach()
            components.update(batch_ratios(terms))
        return total, components

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ):
        core = self.accelerator.unwrap_model(model)
        out: AdapterOutput = call_through_wrapper(model, core, lambda batch: self.adapter.forward(core, batch), inputs)
        loss, components = self.information_loss(out)
        bucket = self._component_sums["train" if model.training else "eval"]
        for key, value in components.items():
            bucket[key].append(value.detach().double().reshape(()))
        if return_outputs:
            extras = {"logits": out.logits, "features": out.features}
            return loss, {k: v for k, v in extras.items() if v is not None}
        return loss

    # ------------------------------------------------------------------ training
    def train(self, *args: Any, **kwargs: Any):
        self._undo_evaluation_prepare()
        return super().train(*args, **kwargs)

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
    def _reduced_components(self, split: str) -> dict[str, float]:
        """Mean of each logged component since the last log, averaged over processes."""
        bucket = self._component_sums[split]
        if not bucket:
            return {}
        keys = sorted(bucket)
        means = torch.stack([torch.stack(bucket[k]).nanmean() for k in keys]).to(self.args.device)
        if self.accelerator.num_processes > 1:
            means = self.accelerator.reduce(means, reduction="mean")
        bucket.clear()
        return {k: round(float(v), 6) for k, v in zip(keys, means.tolist())}

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            logs = {**logs, **self._reduced_components("train")}
        super().log(logs, start_time)

    def evaluation_loop(self, *args: Any, **kwargs: Any):
        """Adds the mean information components over the evaluation set (``eval_loss/cma``, ``eval_mir``…)."""
        self._component_sums["eval"].clear()
        output = super().evaluation_loop(*args, **kwargs)
        prefix = kwargs.get("metric_key_prefix", args[4] if len(args) > 4 else "eval")
        for key, value in self._reduced_components("eval").items():
            # compute_metrics' dataset-level values (e.g. the paper's MIR over batches of 64) win
            # over the mean of the per-evaluation-batch ratios logged here.
            output.metrics.setdefault(f"{prefix}_{key}", value)
        return output
