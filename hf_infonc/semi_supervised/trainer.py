"""``SemiSupervisedTrainer``: FixMatch and FreeMatch on ``InfoNCTrainer``, with the information losses and an
optional EMA teacher (``ModelEMA``).

One forward per step on ``[labelled; weak; strong]`` through the model's adapter; the loss::

    L = CE(labelled) + λ_u · mean_u[ mask_u · CE(strong_u, ŷ_u) ] + λ_f · L_fair      (base)
        - λ_mi · MI(K₁, K₂) + λ_gap · |H(K₁) - H(K₂)|                                 (information)

on the rows picked by ``info_target``. Details, and the multi-process rules: docs/semi_supervised.md.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from hf_infonc.adapters import call_through_wrapper
from hf_infonc.adapters.base import AdapterOutput, ClassifierOutput
from hf_infonc.distributed import all_gather_no_grad, all_gather_with_grad
from hf_infonc.losses import InformationComponents, check_labels
from hf_infonc.semi_supervised.config import SemiSupervisedConfig
from hf_infonc.semi_supervised.data import SSL_KEYS
from hf_infonc.semi_supervised.thresholds import SelfAdaptiveThreshold, build_threshold, fairness_loss
from hf_infonc.trainer import InfoNCTrainer

logger = logging.getLogger(__name__)


class ModelEMA:
    """An exponential moving average of a model's weights: ``θ_ema ← d·θ_ema + (1-d)·θ``.

    Buffers (BatchNorm statistics) are copied. The copy stays in ``eval`` mode and never needs
    gradients; it gives the pseudo-labels of the weak views when ``ema_decay`` is set.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = float(decay)
        self.module = copy.deepcopy(model).eval()
        for parameter in self.module.parameters():
            parameter.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for ema, live in zip(self.module.parameters(), model.parameters()):
            if ema.dtype.is_floating_point:
                ema.mul_(self.decay).add_(live.detach().to(ema.dtype), alpha=1.0 - self.decay)
        for ema, live in zip(self.module.buffers(), model.buffers()):
            ema.copy_(live)


class EMAUpdate(TrainerCallback):
    """Updates the trainer's ``teacher`` after every optimizer step."""

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer

    def on_optimizer_step(self, args, state, control, **kwargs):
        teacher = self.trainer.teacher
        if teacher is not None:
            teacher.update(self.trainer.accelerator.unwrap_model(self.trainer.model))


class SemiSupervisedTrainer(InfoNCTrainer):
    """``InfoNCTrainer`` for FixMatch / FreeMatch (module docstring), with the information losses.

    ``train_dataset``: a :class:`SemiSupervisedDataset`; ``data_collator``: a :class:`SemiSupervisedCollator`
    (``per_device_train_batch_size`` counts labelled examples); evaluation uses ordinary labelled
    batches. What is logged: docs/semi_supervised.md ("Logged").
    """

    # the loss of an SSL step is a per-batch mean: Trainer divides it by the accumulation steps
    loss_is_scaled_for_ga = False

    def __init__(self, *args: Any, ssl_config: SemiSupervisedConfig | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ssl_config = ssl_config if ssl_config is not None else SemiSupervisedConfig()
        # the collators build the model inputs from raw rows (units of labelled + unlabelled examples)
        self.args.remove_unused_columns = False
        # the consistency, fairness and threshold statistics are per step; keep all terms per micro-batch
        self.exact_accumulation = False
        self.threshold = None
        self.teacher: ModelEMA | None = None
        if self.ssl_config.ema_decay is not None and self.ssl_config.uses_unlabeled:
            self.teacher = ModelEMA(self.accelerator.unwrap_model(self.model), self.ssl_config.ema_decay)
            self.add_callback(EMAUpdate(self))

    # ------------------------------------------------------------------ checkpoints
    SSL_STATE_NAME = "ssl_state.pt"

    def _save_checkpoint(self, model: nn.Module, trial: Any) -> None:
        """Checkpoints also hold the thresholds' statistics and the EMA teacher (``ssl_state.pt``)."""
        super()._save_checkpoint(model, trial)
        if not self.args.should_save:
            return
        folder = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        state = {
            "threshold": self.threshold.state_dict() if self.threshold is not None else None,
            "teacher": self.teacher.module.state_dict() if self.teacher is not None else None,
        }
        torch.save(state, folder / self.SSL_STATE_NAME)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        super()._load_from_checkpoint(resume_from_checkpoint, model=model)
        path = Path(resume_from_checkpoint) / self.SSL_STATE_NAME
        if not path.is_file():
            logger.warning("%s has no %s: the SSL thresholds and EMA teacher start afresh.", resume_from_checkpoint,
                           self.SSL_STATE_NAME)
            return
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("threshold") is not None:
            # FixMatch's threshold has no state and ignores the class count
            self._ensure_threshold(len(state["threshold"].get("class_probabilities", (0, 0))))
            self.threshold.load_state_dict(state["threshold"])
        if state.get("teacher") is not None and self.teacher is not None:
            self.teacher.module.load_state_dict(state["teacher"])

    def _ensure_threshold(self, num_classes: int) -> None:
        if self.threshold is None:
            self.threshold = build_threshold(self.ssl_config, num_classes)

    @torch.no_grad()
    def _teacher_logits(self, inputs: dict[str, Any], rows: slice) -> torch.Tensor:
        """The EMA teacher's logits for ``rows`` of the batch."""
        tensors = {k: v[rows] for k, v in inputs.items() if isinstance(v, torch.Tensor) and v.dim() > 0}
        self.teacher.module.to(next(iter(tensors.values())).device)
        return self.adapter.forward(self.teacher.module, tensors).logits

    def compute_loss(self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None):
        if "ssl_num_labeled" not in inputs:  # evaluation batches are ordinary labelled batches
            return super().compute_loss(
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )
        config = self.ssl_config
        labels, true_unlabeled = inputs["labels"], inputs["ssl_unlabeled_labels"]
        n_labeled, n_unlabeled = int(inputs["ssl_num_labeled"]), int(true_unlabeled.shape[0])
        model_inputs = {k: v for k, v in inputs.items() if k not in SSL_KEYS}
        core = self.accelerator.unwrap_model(model)
        out: AdapterOutput = call_through_wrapper(
            model, core, lambda batch: self.adapter.forward(core, batch), model_inputs
        )
        if out.logits is None or out.features is None or out.head_rows is None or out.pairwise:
            raise TypeError(
                f"Semi-supervised training needs a classifier (logits, features and C x d head rows per row); the "
                f"{self.adapter.family} adapter returned {'image-caption pairs' if out.pairwise else 'no logits'}."
            )
        logits, features = out.logits, out.features
        num_classes = logits.shape[-1]
        check_labels(labels, n_labeled, num_classes)  # one host sync; says how to fix a bad label mapping
        base = nn.functional.cross_entropy(logits[:n_labeled], labels)
        components: dict[str, torch.Tensor] = {"loss/sup": base.detach()}
        info_features, info_labels = features[:n_labeled], labels
        if config.uses_unlabeled and n_unlabeled > 0:
            weak_slice = slice(n_labeled, n_labeled + n_unlabeled)
            strong_slice = slice(n_labeled + n_unlabeled, n_labeled + 2 * n_unlabeled)
            weak_logits = (self._teacher_logits(model_inputs, weak_slice) if self.teacher is not None
                           else logits[weak_slice].detach())
            strong_logits = logits[strong_slice]
            probs = weak_logits.float().softmax(dim=-1)
            pseudo = probs.argmax(dim=-1)
            self._ensure_threshold(num_classes)
            self.threshold.update(all_gather_no_grad(probs))
            mask = self.threshold.mask(probs)
            unsup = (nn.functional.cross_entropy(strong_logits.float(), pseudo, reduction="none") * mask).mean()
            base = base + config.unsup_weight * unsup.to(base.dtype)
            components["loss/unsup"] = unsup.detach()
            # one gather for the global mask, pseudo-labels and true labels (fairness loss and logs)
            stats = all_gather_no_grad(torch.stack([mask.double(), pseudo.double(), true_unlabeled.double()], dim=1))
            global_mask, global_pseudo, global_truth = stats[:, 0], stats[:, 1].long(), stats[:, 2].long()
            if config.algorithm == "freematch" and config.fairness_weight > 0:
                fair = fairness_loss(
                    all_gather_with_grad(strong_logits), global_mask,
                    self.threshold.class_probabilities, self.threshold.label_histogram,
                )
                base = base + config.fairness_weight * fair.to(base.dtype)
                components["loss/fairness"] = fair.detach()
            components |= self._threshold_logs(global_mask, global_pseudo, global_truth, num_classes, logits.device)
            keep = mask > 0
            if config.info_target == "pseudo":
                info_features, info_labels = features[strong_slice][keep], pseudo[keep]
            elif config.info_target == "both":
                info_features = torch.cat([features[:n_labeled], features[strong_slice][keep]])
                info_labels = torch.cat([labels, pseudo[keep]])
        total, info_components = self._information_on(base, info_features, info_labels, out.head_rows, out)
        components["loss/base"] = base.detach()
        split = "train" if model.training else "eval"
        self.record_components(components, split)
        self.record_components(info_components, split)
        return (total, ClassifierOutput(loss=total, logits=logits[:n_labeled])) if return_outputs else total

    def _information_on(self, base: torch.Tensor, features: torch.Tensor, labels: torch.Tensor,
                        head_rows: torch.Tensor, out: AdapterOutput) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The information terms on the chosen rows; skipped (base only) when no process has any
        (possible only with ``info_target='pseudo'``, so only then is the row count gathered)."""
        if self.ssl_config.info_target == "pseudo":
            count = all_gather_no_grad(torch.tensor([features.shape[0]], device=features.device))
            if int(count.sum()) == 0:
                return base, {}
        chosen = AdapterOutput(loss=base, logits=None, features=features, head_rows=head_rows, labels=labels,
                               logit_scale=out.logit_scale)
        total, components = self.information_loss(chosen)
        if isinstance(components, InformationComponents):
            return total, components.without_base()
        return total, {key: value for key, value in components.items() if key != "loss/base"}

    @torch.no_grad()
    def _threshold_logs(self, mask: torch.Tensor, pseudo: torch.Tensor, truth: torch.Tensor, num_classes: int,
                        device: torch.device) -> dict[str, torch.Tensor]:
        thresholds = self.threshold.class_thresholds(num_classes, device=device).double()
        adaptive = isinstance(self.threshold, SelfAdaptiveThreshold)
        logs = {
            "ssl/mask_rate": mask.double().mean(),
            "ssl/threshold": self.threshold.global_threshold.to(device) if adaptive else thresholds.max(),
            "ssl/class_threshold_min": thresholds.min(),
            "ssl/class_threshold_max": thresholds.max(),
        }
        known = truth >= 0
        if bool(known.any()):
            correct = (pseudo == truth).double()
            logs["ssl/pseudo_label_acc_all"] = correct[known].mean()
            confident = known & (mask > 0)
            if bool(confident.any()):
                logs["ssl/pseudo_label_acc"] = correct[confident].mean()
        return logs
