"""Semi-supervised training with the information losses: FixMatch and FreeMatch on ``InfoNCTrainer``.

Each optimizer step sees ``B`` labelled examples and ``μ·B`` unlabelled ones (``μ`` =
``unlabeled_ratio``, 7 in both papers), every unlabelled example in a *weak* and a *strong* view.
One forward runs on the concatenation ``[labelled; weak; strong]`` (so BatchNorm sees the whole
step, as in FixMatch), through the model's adapter, so every adapter works: image and text
classifiers, a Wide ResNet, CLIP (HF, open_clip, CoOp, linear probe) used as a classifier.

The loss of a step::

    L = CE(labelled) + λ_u · mean_u[ mask_u · CE(strong_u, ŷ_u) ] + λ_f · L_fair      (base)
        - λ_mi · MI(K₁, K₂) + λ_gap · |H(K₁) - H(K₂)|                                 (information)

where ``ŷ_u = argmax p_u`` with ``p_u = softmax(weak_u)`` (from the EMA teacher when enabled), and
``K₁ = G(features)``, ``K₂ = G(head rows of the labels)`` on the rows picked by ``info_target``:

* ``labeled``: the labelled batch with its true labels (the default);
* ``pseudo``: the strong views of the confident unlabelled examples (``mask_u = 1``) with their
  pseudo-labels — the rows the consistency loss trains;
* ``both``: the two sets together.

The default, ``labeled``, was chosen by measurement (``docs/semi_supervised.md``: on the offline
Fashion-MNIST recipe the three targets were within 0.001 of each other over 3 seeds, ``labeled``
had the best mean and the smallest spread, and it is the cheapest).

Thresholds:

* **FixMatch** (Sohn et al., NeurIPS 2020, arXiv 2001.07685): ``mask_u = [max p_u ≥ τ]``, τ = 0.95.
* **FreeMatch** (Wang et al., ICLR 2023, arXiv 2205.07246), self-adaptive thresholds, all EMAs with
  momentum λ = 0.999 over the weak-view probabilities of the (globally gathered) unlabelled batch:
  global ``τ_t = λ τ_{t-1} + (1-λ) mean_u max p_u`` (τ_0 = 1/C), local
  ``p̃_t = λ p̃_{t-1} + (1-λ) mean_u p_u`` (p̃_0 = 1/C), and the class threshold
  ``τ_t(c) = τ_t · p̃_t(c) / max_c' p̃_t(c')``; ``mask_u = [max p_u ≥ τ_t(ŷ_u)]``. The thresholds are
  updated with the current batch before masking, as in the reference implementation (USB).
  Self-adaptive fairness: with ``h̃_t`` the EMA histogram of the weak-view pseudo-labels, ``p̄`` the
  mean strong-view probability over the masked examples and ``h̄`` their pseudo-label histogram,
  ``L_fair = -H(SumNorm(p̃_t / h̃_t), SumNorm(p̄ / h̄))`` (a negative cross-entropy), weight λ_f = 0.001.

Several processes: the threshold statistics use the weak-view probabilities of all processes, and
the fairness and information terms are computed on rows gathered with gradients, so a run on two
processes equals a run on one with the same global batch.
"""

from __future__ import annotations

import copy
import logging
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn
from transformers import TrainerCallback

from hf_infonc.adapters import call_through_wrapper
from hf_infonc.adapters.base import AdapterOutput, ClassifierOutput
from hf_infonc.distributed import all_gather_no_grad, all_gather_with_grad
from hf_infonc.losses import InformationComponents, check_labels
from hf_infonc.trainer import InfoNCTrainer

logger = logging.getLogger(__name__)

ALGORITHMS = ("supervised", "fixmatch", "freematch")
INFO_TARGETS = ("labeled", "pseudo", "both")

#: Keys of a semi-supervised batch that are not model inputs.
SSL_KEYS = ("labels", "ssl_num_labeled", "ssl_unlabeled_labels")


@dataclass
class SemiSupervisedConfig:
    """Settings of semi-supervised training (the ``ssl:`` section of a recipe).

    Defaults follow FreeMatch on CIFAR-10 (USB ``freematch_cifar10_40_0.yaml``).
    """

    algorithm: str = "freematch"
    """``freematch``, ``fixmatch``, or ``supervised`` (the labelled stream only: the baseline)."""
    unlabeled_ratio: int = 7
    """μ: unlabelled examples per labelled example in a step."""
    unsup_weight: float = 1.0
    """λ_u, the weight of the consistency loss."""
    p_cutoff: float = 0.95
    """FixMatch's fixed confidence threshold τ."""
    threshold_ema: float = 0.999
    """FreeMatch's EMA momentum λ of the global/local thresholds and the label histogram."""
    fairness_weight: float = 0.001
    """FreeMatch's λ_f, the weight of the self-adaptive fairness loss (0 turns it off)."""
    info_target: str = "labeled"
    """Rows of the information losses: ``labeled`` (default, chosen by measurement), ``pseudo``
    (confident strong views with their pseudo-labels) or ``both``."""
    ema_decay: float | None = None
    """EMA teacher: pseudo-labels come from an exponential moving average of the weights (decay,
    e.g. 0.999); ``None`` uses the model itself, as FixMatch and FreeMatch do."""
    labels_per_class: int | None = None
    """Recipes: keep this many labelled examples per class (drawn with ``data.seed``, so every
    training seed sees the same labelled subset); the whole training split, labels hidden, is the
    unlabelled stream. ``None``: ``data.shots``."""
    max_unlabeled: int | None = None
    """Recipes: cap on the training-split part of the unlabelled pool (stratified, seeded)."""
    unlabeled_split: str | None = None
    """Recipes: another split of ``data.source`` added to the unlabelled pool (e.g. STL-10's
    ``unlabeled`` split of 100,000 images, in a Hub copy that has it); its labels may be -1."""

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"ssl.algorithm={self.algorithm!r} is not one of {ALGORITHMS}.")
        if self.info_target not in INFO_TARGETS:
            raise ValueError(f"ssl.info_target={self.info_target!r} is not one of {INFO_TARGETS}.")
        if isinstance(self.unlabeled_ratio, bool) or not isinstance(self.unlabeled_ratio, int) or self.unlabeled_ratio < 0:
            raise ValueError(f"ssl.unlabeled_ratio={self.unlabeled_ratio!r} must be an integer ≥ 0 (μ; 7 in FixMatch).")
        if self.algorithm != "supervised" and self.unlabeled_ratio == 0:
            raise ValueError(
                f"ssl.algorithm={self.algorithm!r} needs unlabelled data: set ssl.unlabeled_ratio ≥ 1 (7 in the papers), "
                f"or use algorithm 'supervised'."
            )
        for name in ("unsup_weight", "fairness_weight"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"ssl.{name}={value} must be a finite number ≥ 0.")
        if not 0.0 < self.p_cutoff <= 1.0:
            raise ValueError(f"ssl.p_cutoff={self.p_cutoff} must lie in (0, 1] (FixMatch uses 0.95).")
        if not 0.0 <= self.threshold_ema < 1.0:
            raise ValueError(f"ssl.threshold_ema={self.threshold_ema} must lie in [0, 1) (FreeMatch uses 0.999).")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ssl.ema_decay={self.ema_decay} must lie in (0, 1) (e.g. 0.999), or be null for no teacher.")
        for name in ("labels_per_class", "max_unlabeled"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"ssl.{name}={value!r} must be a positive integer or null.")

    @property
    def uses_unlabeled(self) -> bool:
        return self.algorithm != "supervised"


# --------------------------------------------------------------------------- thresholds


class FixedThreshold:
    """FixMatch: an example is confident when its top weak-view probability is ≥ τ."""

    def __init__(self, p_cutoff: float = 0.95) -> None:
        self.p_cutoff = float(p_cutoff)

    def update(self, probs: torch.Tensor) -> None:
        """Nothing to learn (kept for a common interface)."""

    def class_thresholds(self, num_classes: int, device: torch.device | None = None) -> torch.Tensor:
        return torch.full((num_classes,), self.p_cutoff, device=device)

    def mask(self, probs: torch.Tensor) -> torch.Tensor:
        """``1.0`` where ``max p ≥ τ``, else ``0.0`` (float, one per row of ``probs``)."""
        return (probs.max(dim=-1).values >= self.p_cutoff).to(probs.dtype)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class SelfAdaptiveThreshold:
    """FreeMatch's self-adaptive thresholds (Wang et al., ICLR 2023, §3.2) and label histogram.

    State (all EMAs with momentum ``momentum``, initialised to the uniform 1/C):
    ``global_threshold`` τ_t, ``class_probabilities`` p̃_t (the local estimate) and
    ``label_histogram`` h̃_t (of the pseudo-labels, for the fairness loss).
    """

    def __init__(self, num_classes: int, momentum: float = 0.999) -> None:
        if num_classes < 2:
            raise ValueError(f"FreeMatch needs at least 2 classes, got {num_classes}.")
        self.num_classes = num_classes
        self.momentum = float(momentum)
        self.class_probabilities = torch.full((num_classes,), 1.0 / num_classes, dtype=torch.float64)
        self.label_histogram = torch.full((num_classes,), 1.0 / num_classes, dtype=torch.float64)
        self.global_threshold = torch.tensor(1.0 / num_classes, dtype=torch.float64)

    def _to(self, device: torch.device) -> None:
        if self.global_threshold.device != device:
            self.class_probabilities = self.class_probabilities.to(device)
            self.label_histogram = self.label_histogram.to(device)
            self.global_threshold = self.global_threshold.to(device)

    @torch.no_grad()
    def update(self, probs: torch.Tensor) -> None:
        """One EMA step from the weak-view probabilities ``probs`` (n × C) of the global batch."""
        if probs.shape[-1] != self.num_classes:
            raise ValueError(f"probabilities have {probs.shape[-1]} classes, the threshold was built for {self.num_classes}.")
        if probs.shape[0] == 0:
            return
        self._to(probs.device)
        p = probs.detach().to(torch.float64)
        top, pseudo = p.max(dim=-1)
        m = self.momentum
        self.global_threshold = m * self.global_threshold + (1 - m) * top.mean()
        self.class_probabilities = m * self.class_probabilities + (1 - m) * p.mean(dim=0)
        histogram = torch.bincount(pseudo, minlength=self.num_classes).to(torch.float64) / p.shape[0]
        self.label_histogram = m * self.label_histogram + (1 - m) * histogram

    def class_thresholds(self, num_classes: int | None = None, device: torch.device | None = None) -> torch.Tensor:
        """``τ_t(c) = τ_t · p̃_t(c) / max_c' p̃_t(c')`` (FreeMatch Eq. 6)."""
        values = self.global_threshold * self.class_probabilities / self.class_probabilities.max()
        return values if device is None else values.to(device)

    def mask(self, probs: torch.Tensor) -> torch.Tensor:
        top, pseudo = probs.detach().max(dim=-1)
        thresholds = self.class_thresholds(device=probs.device)
        return (top.to(torch.float64) >= thresholds[pseudo]).to(probs.dtype)

    def state_dict(self) -> dict[str, Any]:
        return {
            "global_threshold": self.global_threshold.cpu(),
            "class_probabilities": self.class_probabilities.cpu(),
            "label_histogram": self.label_histogram.cpu(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.global_threshold = state["global_threshold"].to(torch.float64)
        self.class_probabilities = state["class_probabilities"].to(torch.float64)
        self.label_histogram = state["label_histogram"].to(torch.float64)


def _sum_normalise(x: torch.Tensor) -> torch.Tensor:
    return x / x.sum(dim=-1, keepdim=True)


def fairness_loss(strong_logits: torch.Tensor, mask: torch.Tensor, class_probabilities: torch.Tensor,
                  label_histogram: torch.Tensor) -> torch.Tensor:
    """FreeMatch's self-adaptive fairness loss (Wang et al., ICLR 2023, Eq. 8).

    ``L_f = -H(SumNorm(p̃/h̃), SumNorm(p̄/h̄)) = Σ_c q_c log r_c`` with ``q = SumNorm(p̃/h̃)`` (the EMA
    class probabilities over the EMA pseudo-label histogram) and ``r = SumNorm(p̄/h̄)``, where ``p̄``
    is the mean strong-view probability of the masked rows and ``h̄`` their pseudo-label (strong
    argmax) histogram. Classes absent from ``h̄`` get weight 0, as in USB. Returns 0 (with a zero
    gradient) when no row is masked.
    """
    keep = mask > 0
    if not bool(keep.any()):
        return strong_logits.sum() * 0.0
    probs = strong_logits[keep].float().softmax(dim=-1)
    num_classes = probs.shape[-1]
    histogram = torch.bincount(probs.argmax(dim=-1), minlength=num_classes).to(probs.dtype)
    histogram = histogram / histogram.sum()
    inverse_histogram = torch.where(histogram > 0, 1.0 / histogram.clamp_min(1e-12), torch.zeros_like(histogram))
    inverse_ema = torch.where(label_histogram > 0, 1.0 / label_histogram.clamp_min(1e-12), 0.0).to(probs)
    target = _sum_normalise(class_probabilities.to(probs) * inverse_ema).detach()
    current = _sum_normalise(probs.mean(dim=0) * inverse_histogram.detach())
    return (target * torch.log(current + 1e-12)).sum()


def build_threshold(config: SemiSupervisedConfig, num_classes: int) -> FixedThreshold | SelfAdaptiveThreshold | None:
    if config.algorithm == "fixmatch":
        return FixedThreshold(config.p_cutoff)
    if config.algorithm == "freematch":
        return SelfAdaptiveThreshold(num_classes, config.threshold_ema)
    return None


# --------------------------------------------------------------------------- data


class SemiSupervisedDataset(torch.utils.data.Dataset):
    """Pairs a labelled and an unlabelled dataset into units of 1 labelled + μ unlabelled examples.

    A batch of ``B`` units therefore holds ``B`` labelled and ``μ·B`` unlabelled examples. One pass
    over the units visits every unlabelled example once (grouped by a seeded permutation) and
    cycles through the labelled set, so a small labelled set is repeated as in FixMatch. Items are
    the raw rows (``image``/``text``, ``label``); the collator makes the views. ``μ = 0`` gives the
    labelled stream alone (the supervised baseline).
    """

    def __init__(self, labeled: Sequence[Any], unlabeled: Sequence[Any] | None, unlabeled_ratio: int, seed: int = 0) -> None:
        if len(labeled) == 0:
            raise ValueError("The labelled dataset is empty: semi-supervised training needs at least one labelled example.")
        if unlabeled_ratio > 0 and (unlabeled is None or len(unlabeled) == 0):
            raise ValueError(f"unlabeled_ratio={unlabeled_ratio} but the unlabelled dataset is empty or missing.")
        self.labeled = labeled
        self.unlabeled = unlabeled
        self.unlabeled_ratio = unlabeled_ratio
        generator = torch.Generator().manual_seed(seed)
        self._labeled_order = torch.randperm(len(labeled), generator=generator).tolist()
        self._unlabeled_order = (
            torch.randperm(len(unlabeled), generator=generator).tolist() if unlabeled_ratio > 0 else []
        )

    def __len__(self) -> int:
        if self.unlabeled_ratio == 0:
            return len(self.labeled)
        return max(math.ceil(len(self.unlabeled) / self.unlabeled_ratio), len(self.labeled))

    def __getitem__(self, index: int) -> dict[str, Any]:
        labeled = self.labeled[self._labeled_order[index % len(self.labeled)]]
        mu = self.unlabeled_ratio
        order = self._unlabeled_order
        unlabeled = [self.unlabeled[order[(index * mu + j) % len(order)]] for j in range(mu)]
        return {"labeled": labeled, "unlabeled": unlabeled}


class SemiSupervisedCollator:
    """Units → one model batch ``[labelled; weak views; strong views]`` plus the SSL bookkeeping.

    Output keys: the model inputs for all ``B + 2·μB`` rows (``pixel_values``, or the tokenizer's
    ``input_ids``/``attention_mask``/…, padded together), ``labels`` (the ``B`` labelled classes),
    ``ssl_num_labeled`` and ``ssl_unlabeled_labels`` (the true classes of the unlabelled rows when
    the data has them, else -1: used only to log the pseudo-label accuracy).

    Images: ``labeled_transform`` (FixMatch uses the weak augmentation), ``weak_transform`` and
    ``strong_transform`` are callables from a PIL image to a tensor. Text: ``tokenizer`` and
    ``text_views`` (an object with ``weak(text, rng)`` and ``strong(text, rng)``, see
    :class:`hf_infonc.data.augment.TextViews`); the labelled text is used as is.
    """

    def __init__(
        self,
        *,
        labeled_transform: Callable[[Any], torch.Tensor] | None = None,
        weak_transform: Callable[[Any], torch.Tensor] | None = None,
        strong_transform: Callable[[Any], torch.Tensor] | None = None,
        tokenizer: Any = None,
        text_views: Any = None,
        max_length: int | None = 128,
        image_column: str = "image",
        text_column: str = "text",
        label_column: str = "label",
    ) -> None:
        self.labeled_transform = labeled_transform
        self.weak_transform = weak_transform
        self.strong_transform = strong_transform
        self.tokenizer = tokenizer
        self.text_views = text_views
        self.max_length = max_length
        self.image_column = image_column
        self.text_column = text_column
        self.label_column = label_column
        if tokenizer is None and labeled_transform is None:
            raise ValueError("SemiSupervisedCollator needs image transforms (images) or a tokenizer (text).")
        if tokenizer is not None and text_views is None:
            raise ValueError("SemiSupervisedCollator: text data needs text_views (hf_infonc.data.augment.TextViews).")

    def _true_label(self, row: dict[str, Any]) -> int:
        value = row.get(self.label_column, -1)
        return -1 if value is None else int(value)

    def __call__(self, units: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        labeled = [unit["labeled"] for unit in units]
        unlabeled = [row for unit in units for row in unit["unlabeled"]]
        labels = torch.tensor([int(row[self.label_column]) for row in labeled], dtype=torch.long)
        if self.tokenizer is not None:
            from hf_infonc.data.collate import tokenize_texts

            rng = random.Random(int(torch.randint(0, 2**62, (1,))))
            texts = [str(row[self.text_column]) for row in labeled]
            texts += [self.text_views.weak(str(row[self.text_column]), rng) for row in unlabeled]
            texts += [self.text_views.strong(str(row[self.text_column]), rng) for row in unlabeled]
            batch = tokenize_texts(self.tokenizer, texts, self.max_length)
        else:
            images = [self.labeled_transform(row[self.image_column]) for row in labeled]
            if unlabeled:
                images += [self.weak_transform(row[self.image_column]) for row in unlabeled]
                images += [self.strong_transform(row[self.image_column]) for row in unlabeled]
            batch = {"pixel_values": torch.stack(images).float()}
        batch["labels"] = labels
        batch["ssl_num_labeled"] = torch.tensor(len(labeled))
        batch["ssl_unlabeled_labels"] = torch.tensor([self._true_label(row) for row in unlabeled], dtype=torch.long)
        return batch


# --------------------------------------------------------------------------- EMA teacher


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


class _EMAUpdate(TrainerCallback):
    def __init__(self, trainer: "SemiSupervisedTrainer") -> None:
        self.trainer = trainer

    def on_optimizer_step(self, args, state, control, **kwargs):
        teacher = self.trainer.teacher
        if teacher is not None:
            teacher.update(self.trainer.accelerator.unwrap_model(self.trainer.model))


# --------------------------------------------------------------------------- trainer


def _split_rows(inputs: dict[str, Any], start: int, stop: int) -> dict[str, Any]:
    return {k: v[start:stop] for k, v in inputs.items() if isinstance(v, torch.Tensor) and v.dim() > 0}


class SemiSupervisedTrainer(InfoNCTrainer):
    """``InfoNCTrainer`` for FixMatch / FreeMatch (module docstring), with the information losses.

    Use a :class:`SemiSupervisedDataset` as ``train_dataset`` and a :class:`SemiSupervisedCollator`
    as ``data_collator`` (``per_device_train_batch_size`` counts labelled examples); evaluation uses
    ordinary labelled batches (``eval_data_collator``). Logged beside the usual components:
    ``loss/sup``, ``loss/unsup``, ``loss/fairness``, ``ssl/mask_rate``, ``ssl/threshold`` (FreeMatch's
    global τ_t, or FixMatch's τ), ``ssl/class_threshold_min``/``max``, and, when the unlabelled
    rows carry their true labels, ``ssl/pseudo_label_acc`` (over the masked rows) and
    ``ssl/pseudo_label_acc_all``.
    """

    # the loss of an SSL step is a per-batch mean: Trainer divides it by the accumulation steps
    loss_is_scaled_for_ga = False

    def __init__(self, *args: Any, ssl_config: SemiSupervisedConfig | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ssl_config = ssl_config if ssl_config is not None else SemiSupervisedConfig()
        # the collators build the model inputs from raw rows (units of labelled + unlabelled examples)
        self.args.remove_unused_columns = False
        if getattr(self.args, "info_exact_accumulation", False) and self.args.gradient_accumulation_steps > 1:
            # the consistency, fairness and threshold statistics are per step; keep all terms per micro-batch
            self.args.info_exact_accumulation = False
        self.threshold = None
        self.teacher: ModelEMA | None = None
        if self.ssl_config.ema_decay is not None and self.ssl_config.uses_unlabeled:
            self.teacher = ModelEMA(self.accelerator.unwrap_model(self.model), self.ssl_config.ema_decay)
            self.add_callback(_EMAUpdate(self))

    # ------------------------------------------------------------------ checkpoints
    SSL_STATE_NAME = "ssl_state.pt"

    def _save_checkpoint(self, model: nn.Module, trial: Any) -> None:
        """Checkpoints also hold the thresholds' statistics and the EMA teacher (``ssl_state.pt``)."""
        super()._save_checkpoint(model, trial)
        if not self.args.should_save:
            return
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

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

    def _teacher_logits(self, inputs: dict[str, Any], start: int, stop: int) -> torch.Tensor:
        teacher = self.teacher
        assert teacher is not None
        device = next(iter(v for v in inputs.values() if isinstance(v, torch.Tensor))).device
        teacher.module.to(device)
        with torch.no_grad():
            return self.adapter.forward(teacher.module, _split_rows(inputs, start, stop)).logits

    def compute_loss(self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None):
        if "ssl_num_labeled" not in inputs:  # evaluation batches are ordinary labelled batches
            return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        config = self.ssl_config
        labels = inputs["labels"]
        true_unlabeled = inputs["ssl_unlabeled_labels"]
        n_labeled = int(inputs["ssl_num_labeled"])
        n_unlabeled = int(true_unlabeled.shape[0])
        model_inputs = {k: v for k, v in inputs.items() if k not in SSL_KEYS}
        core = self.accelerator.unwrap_model(model)
        out: AdapterOutput = call_through_wrapper(model, core, lambda batch: self.adapter.forward(core, batch), model_inputs)
        if out.logits is None or out.features is None or out.head_rows is None or out.pairwise:
            raise TypeError(
                f"Semi-supervised training needs a classifier (logits, features and C x d head rows per row); the "
                f"{self.adapter.family} adapter returned {'image-caption pairs' if out.pairwise else 'no logits'}."
            )
        logits, features = out.logits, out.features
        num_classes = logits.shape[-1]
        check_labels(labels, n_labeled, num_classes)  # one host sync; says how to fix a bad label mapping
        components: dict[str, torch.Tensor] = {}
        sup = nn.functional.cross_entropy(logits[:n_labeled], labels)
        components["loss/sup"] = sup.detach()
        base = sup
        info_features, info_labels = features[:n_labeled], labels
        if config.uses_unlabeled and n_unlabeled > 0:
            weak_slice = slice(n_labeled, n_labeled + n_unlabeled)
            strong_slice = slice(n_labeled + n_unlabeled, n_labeled + 2 * n_unlabeled)
            if self.teacher is not None:
                weak_logits = self._teacher_logits(model_inputs, weak_slice.start, weak_slice.stop)
            else:
                weak_logits = logits[weak_slice].detach()
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
            components.update(self._threshold_logs(global_mask, global_pseudo, global_truth, num_classes, logits.device))
            keep = mask > 0
            if config.info_target == "pseudo":
                info_features = features[strong_slice][keep]
                info_labels = pseudo[keep]
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
        """The information terms on the chosen rows; skipped (base only) when no process has any.

        Only ``info_target='pseudo'`` can leave a process without rows, so only then is the row
        count gathered (one collective and one host sync per step).
        """
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
        logs = {
            "ssl/mask_rate": mask.double().mean(),
            "ssl/class_threshold_min": thresholds.min(),
            "ssl/class_threshold_max": thresholds.max(),
        }
        if isinstance(self.threshold, SelfAdaptiveThreshold):
            logs["ssl/threshold"] = self.threshold.global_threshold.to(device)
        else:
            logs["ssl/threshold"] = thresholds.max()
        known = truth >= 0
        if bool(known.any()):
            correct = (pseudo == truth).double()
            logs["ssl/pseudo_label_acc_all"] = correct[known].mean()
            confident = known & (mask > 0)
            if bool(confident.any()):
                logs["ssl/pseudo_label_acc"] = correct[confident].mean()
        return logs


# --------------------------------------------------------------------------- recipes


def split_labeled_unlabeled(train: Any, labels_per_class: int, *, seed: int, max_unlabeled: int | None = None):
    """The labelled subset (``labels_per_class`` per class, drawn with ``seed``) and the unlabelled pool.

    As in FixMatch and USB, the unlabelled pool is the whole training split (the labelled examples
    included); its labels stay in the rows only to log the pseudo-label accuracy and are never
    used by the losses. ``max_unlabeled`` caps the pool (stratified, same ``seed``).
    """
    from hf_infonc.data import sample_few_shot, subsample

    labeled = sample_few_shot(train, labels_per_class, seed=seed)
    unlabeled = subsample(train, max_unlabeled, seed=seed)
    return labeled, unlabeled


def _with_extra_split(unlabeled: Any, data_config: Any, split: str) -> Any:
    """The unlabelled pool plus the rows of another split of the same source (labels kept or -1)."""
    from datasets import concatenate_datasets

    from hf_infonc.data import load_source

    splits = load_source(data_config)
    if split not in splits:
        raise ValueError(
            f"ssl.unlabeled_split={split!r}: source '{data_config.source}' has the splits {list(splits)}. Use one of them, "
            f"or a copy of the dataset that has the split."
        )
    extra = splits[split].select_columns(unlabeled.column_names).cast(unlabeled.features)
    return concatenate_datasets([unlabeled, extra])


def semi_supervised_training_data(recipe: Any, built: Any, datasets: Any) -> tuple[SemiSupervisedDataset, SemiSupervisedCollator]:
    """The training dataset and collator of a recipe with an ``ssl:`` section.

    ``datasets["train"]`` must be the full training split (``run_recipe`` builds it without
    ``data.shots``). Images: the labelled rows get the weak view; the unlabelled rows a weak and a
    strong view (:mod:`hf_infonc.data.augment`), both ending like the evaluation transform. Text:
    the labelled text as is, and :class:`~hf_infonc.data.augment.TextViews` for the two views.
    """
    from hf_infonc.data import build_image_transform, resolve_hflip
    from hf_infonc.data.augment import TextViews, view_transforms_from

    config: SemiSupervisedConfig = recipe.ssl
    k = config.labels_per_class or recipe.data.shots
    labeled, unlabeled = split_labeled_unlabeled(
        datasets["train"], k, seed=recipe.data.seed, max_unlabeled=config.max_unlabeled
    )
    if config.unlabeled_split is not None and config.uses_unlabeled:
        unlabeled = _with_extra_split(unlabeled, recipe.data, config.unlabeled_split)
    dataset = SemiSupervisedDataset(
        labeled, unlabeled if config.uses_unlabeled else None,
        config.unlabeled_ratio if config.uses_unlabeled else 0, seed=recipe.seed,
    )
    if "text" in labeled.column_names:
        collator = SemiSupervisedCollator(tokenizer=built.tokenizer, text_views=TextViews(), max_length=recipe.data.max_length)
    else:
        eval_transform = build_image_transform(recipe.data, built.image_preprocessing, train=False)
        weak, strong = view_transforms_from(eval_transform, hflip=resolve_hflip(recipe.data))
        collator = SemiSupervisedCollator(labeled_transform=weak, weak_transform=weak, strong_transform=strong)
    return dataset, collator
