"""``InfoNCTrainer``: ``transformers.Trainer`` with the CMA, MI and entropy-gap losses.

Drop-in use::

    from hf_infonc import InfoNCTrainer, InfoNCTrainingArguments

    args = InfoNCTrainingArguments("out", cma_weight=0.5, mi_weight=0.1, entropy_gap_weight=0.1)
    trainer = InfoNCTrainer(model=model, args=args, train_dataset=train, data_collator=collate,
                            processing_class=processor)
    trainer.train()

The loss of a batch (docs/theory.md §4) is ``(1 - w_cma)·L_base + w_cma·CMA - w_mi·MI + w_gap·|H₁ - H₂|``
(``info_normalized=True``: ``- w_mi·MIR + w_gap·HDR``), with ``L_base`` the model's own loss (CLIP's contrastive
loss for image–caption pairs); each component is logged (``loss/base``, ``loss/cma``, ``mir``…). The Gram terms
see the batch of all processes (:mod:`hf_infonc.distributed`) and of all accumulated micro-batches
(:mod:`hf_infonc.grad_cache`).
"""

from __future__ import annotations

import contextlib
import math
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import accelerate
import torch
import transformers
from accelerate.utils import convert_to_fp32
from packaging.version import Version
from torch import nn
from safetensors import safe_open
from transformers import PreTrainedModel, Trainer
from transformers.trainer import TRAINING_ARGS_NAME
from transformers.utils import SAFE_WEIGHTS_NAME, logging

from hf_infonc.adapters import ModelAdapter
from hf_infonc.adapters.base import (
    AdapterOutput, FeatureCapture, find_adapter, replaced_forward, unsupported_model_message,
)
from hf_infonc.callbacks import infer_class_names
from hf_infonc.card import CARD_NAME, InfoNCCardData, render_model_card
from hf_infonc.distributed import all_gather_no_grad, all_gather_with_grad
from hf_infonc.grad_cache import GradCacheMixin
from hf_infonc.hub import hub_uploads
from hf_infonc.info.gram import check_label_tensor
from hf_infonc.losses import InformationComponents, InformationLoss, check_loss_inputs, clip_contrastive_loss
from hf_infonc.secrets import redact_text
from hf_infonc.training_args import InfoNCTrainingArguments, InformationDefaults, read_information_settings

logger = logging.get_logger(__name__)

#: accelerate ≤ 1.16: a model prepared with ``evaluation_mode=True`` stays marked as prepared, so a later training
#: ``prepare`` skips DDP (:meth:`InfoNCTrainer._undo_evaluation_prepare`; tests/test_trainer_dropin.py tells when
#: the installed accelerate no longer needs it).
_EVALUATION_PREPARE_STICKS = Version(accelerate.__version__).release[:2] <= (1, 16)
#: transformers 5.24–5.25: ``Trainer`` loads a checkpoint saved under legacy weight names without renaming them
#: (:meth:`InfoNCTrainer._reload_renamed_weights`); newer versions use ``Trainer``'s own loading.
_TRAINER_SKIPS_RENAMING = Version(transformers.__version__).release[:2] <= (5, 25)


def _rows_with_classes(
    features: torch.Tensor, labels: torch.Tensor | None, head_rows: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, list[int]] | tuple[None, None, None]:
    """The rows of a batch whose label is a class of the head, validated, or ``None``s where none is usable."""
    with contextlib.suppress(TypeError, ValueError):
        check_label_tensor(labels, features.shape[0])  # integer class indices, one per row (pairs: None)
        keep = (labels >= 0) & (labels < head_rows.shape[0])
        if keep.any():
            features, labels = features[keep], labels[keep]
            return features, labels, check_loss_inputs(features, labels, head_rows)
    return None, None, None


class InfoNCTrainer(GradCacheMixin, Trainer):
    """A ``transformers.Trainer`` that adds the information losses through a model adapter.

    Drop-in: the adapter runs *as the model's forward* (:func:`~hf_infonc.adapters.base.replaced_forward`), so
    the base loss, predictions and checkpoints are ``Trainer``'s own (``training_args.json`` instead of the pickled
    ``training_args.bin``). A model that no adapter supports trains as with ``Trainer`` (with a warning; a weight
    > 0 is then an error).

    Args:
        trainer_args, kwargs: ``Trainer``'s, positional or by keyword; ``args`` of any ``TrainingArguments`` class,
            with the information settings of an :class:`InfoNCTrainingArguments` (else the defaults: weights 0).
        adapter: a :class:`~hf_infonc.adapters.ModelAdapter`; by default picked from the model type.
        class_names: class names for CLIP classification heads; by default the ``label`` ClassLabel's.
        text_tokenizer: the tokenizer of the class prompts (open_clip); defaults to ``processing_class``.
        eval_data_collator: collator for evaluation and prediction; defaults to ``data_collator``.
    """

    def __init__(
        self, *trainer_args: Any, adapter: ModelAdapter | None = None, class_names: list[str] | None = None,
        text_tokenizer: Any = None, eval_data_collator: Any = None, **kwargs: Any,
    ) -> None:
        super().__init__(*trainer_args, **kwargs)  # Trainer's own arguments, positional or not, and defaults
        self.eval_data_collator = eval_data_collator
        self.adapter = adapter if adapter is not None else find_adapter(self.model)
        if self.adapter is None and self.information_settings.info_losses_active:
            raise TypeError(
                f"cma_weight/mi_weight/entropy_gap_weight > 0 need features and head rows, but "
                f"{unsupported_model_message(self.model)}"
            )
        #: the features of the latest evaluation forward (see :func:`hf_infonc.evaluation.add_information_metrics`)
        self.feature_capture = FeatureCapture()
        self._adapter_output: AdapterOutput | None = None
        self.class_names = class_names or infer_class_names(self.train_dataset) or infer_class_names(self.eval_dataset)
        self.text_tokenizer = text_tokenizer
        #: False: the Gram-based terms are computed per micro-batch whatever ``info_exact_accumulation`` says
        self.exact_accumulation = True
        if self.adapter is None:
            logger.warning(
                "InfoNCTrainer: no hf_infonc adapter supports %s; it trains exactly as transformers.Trainer, without the "
                "information terms and measures (see docs/adapters.md to add one).", type(self.model).__name__
            )
        else:
            self._set_up_adapter(self.model)
        self._information_loss: tuple[tuple, InformationLoss] | None = None
        # per split: logged component (or InformationComponents layout) -> [(detached value, weight)]
        self._component_records = {"train": defaultdict(list), "eval": defaultdict(list)}
        self._information_records = {"train": defaultdict(list), "eval": defaultdict(list)}

    def _set_up_adapter(self, model: nn.Module) -> None:
        self.adapter.setup(
            model, class_names=self.class_names, templates=self.information_settings.class_prompt_templates,
            processing_class=self.text_tokenizer if self.text_tokenizer is not None else self.processing_class,
        )
        if self.args.label_names is None and self.adapter.label_names is not None:
            self.label_names = list(self.adapter.label_names)
        if self.adapter.computes_loss:  # its own loss ignores num_items_in_batch: a per-batch mean
            self.model_accepts_loss_kwargs = False

    def call_model_init(self, trial: Any = None) -> nn.Module:
        """``Trainer.call_model_init``, with the adapter set up on the new model when ``train()`` re-initialises it
        (``__init__`` sets it up on the first)."""
        model = super().call_model_init(trial)
        if getattr(self, "adapter", None) is not None:
            self._set_up_adapter(model)
        return model

    @property
    def information_settings(self) -> InfoNCTrainingArguments | InformationDefaults:
        """The information settings of ``self.args``, read at use time (``hyperparameter_search`` changes them):
        ``args`` itself for :class:`InfoNCTrainingArguments`, else the defaults (every weight 0)."""
        return read_information_settings(self.args)

    @property
    def information_loss_module(self) -> InformationLoss:
        """The :class:`~hf_infonc.losses.InformationLoss` of the current arguments (rebuilt when
        ``hyperparameter_search`` changes them)."""
        args = self.information_settings
        settings = (args.cma_weight, args.mi_weight, args.entropy_gap_weight, args.info_normalized, args.info_center,
                    args.info_alpha, args.info_dtype)
        if self._information_loss is None or self._information_loss[0] != settings:
            module = InformationLoss(*settings[:3], normalized=args.info_normalized, center=args.info_center,
                                     alpha=args.info_alpha, dtype=getattr(torch, args.info_dtype))
            self._information_loss = (settings, module)
        return self._information_loss[1]

    @property
    def cma_loss(self) -> nn.Module:
        return self.information_loss_module.cma

    @property
    def mi_loss(self) -> nn.Module:
        return self.information_loss_module.mi

    @property
    def gap_loss(self) -> nn.Module:
        return self.information_loss_module.gap

    def _set_signature_columns_if_needed(self) -> None:
        """``Trainer``'s columns (the forward's arguments and the labels) plus those the adapter reads."""
        super()._set_signature_columns_if_needed()
        if self.adapter is not None:
            self._signature_columns += [name for name in self.adapter.input_names if name not in self._signature_columns]

    def autocast_smart_context_manager(self, cache_enabled: bool | None = True) -> contextlib.AbstractContextManager:
        """The accelerator's autocast around the whole loss computation: the adapter calls methods of the model
        besides the ``forward`` that accelerate patches (``get_image_features``…)."""
        return self.accelerator.autocast()

    # ------------------------------------------------------------------ loss
    def _ratios_due(self) -> bool:
        """Batch MIR/HDR are computed for free with the MI/gap terms, else only on the steps ``Trainer`` logs
        (``logging_first_step``, and every ``logging_steps``, a fraction of the steps rounded up as ``Trainer`` does)."""
        if not self.model.training:
            return True
        args, step = self.args, self.state.global_step + 1
        if args.logging_first_step and step == 1:
            return True
        if args.logging_strategy != "steps" or not args.logging_steps:
            return False
        every = args.logging_steps if args.logging_steps >= 1 else math.ceil(args.logging_steps * self.state.max_steps)
        return step % max(every, 1) == 0

    def _gathered(self, out: AdapterOutput) -> tuple[torch.Tensor, torch.Tensor]:
        """The features (with gradients) and, for image–caption pairs, the captions of all processes (once per
        output); else the head rows."""
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
    ) -> tuple[torch.Tensor, Mapping[str, torch.Tensor]]:
        """``(1 - w_cma)·base + info_scale·info`` on the gathered batch (in the base loss's dtype), and components.

        ``out.loss`` is the base loss (for image–caption pairs without one, CLIP's contrastive loss of the
        gathered batch); :class:`~hf_infonc.losses.InformationLoss` computes the terms in ``info_dtype``.
        """
        log_ratios = self._ratios_due()
        wanted = self.information_settings.info_losses_active or log_ratios
        if (out.loss is not None and not wanted) or (not out.pairwise and out.labels is None):
            self._check_labels_present(out)
            return out.loss, {"loss/base": out.loss.detach()}
        labels = None if out.pairwise else all_gather_no_grad(out.labels)  # None: anchor i belongs to sample i
        features, anchors = self._gathered(out)
        base = out.loss if out.loss is not None else self._contrastive_base(out)
        if not wanted:  # pairs, contrastive base only
            return base, {"loss/base": base.detach()}
        try:
            host_labels = check_loss_inputs(features, labels, anchors)  # once per step, on the gathered batch
        except (TypeError, ValueError):
            if self.information_settings.info_losses_active:
                raise
            # every weight 0: MIR/HDR are only logged, and Trainer trains on any batch (ignored -100 labels, the
            # float labels of regression or multi-label heads, a NaN activation): they come from the rows that
            # hold a class label, or are NaN, which the logs leave out
            features, labels, host_labels = _rows_with_classes(features, labels, anchors)
            if features is None:
                undefined = base.detach().new_full((), math.nan)
                return base, {"loss/base": base.detach(), "mir": undefined, "hdr": undefined}
        info, components = self.information_loss_module(
            features, labels, anchors, log_ratios=log_ratios, host_labels=host_labels, base=base.detach()
        )
        if info is None:
            return base, components
        if info_scale != 1.0:
            info = info * info_scale
        return info.to(base.dtype).add(base, alpha=1.0 - self.information_settings.cma_weight), components

    def _check_labels_present(self, out: AdapterOutput) -> None:
        if self.information_settings.info_losses_active and not out.pairwise and out.labels is None:
            raise ValueError(
                "An information loss (cma_weight/mi_weight/entropy_gap_weight > 0) is switched on but the batch has no "
                "'labels'. Provide class labels in the batch (the collator's 'labels' key), or set the weights to 0."
            )

    def _run_adapter(self, core: nn.Module, *, unlabelled_loss: bool | None = None):
        """The adapter as ``core``'s forward, keeping its output (and, in evaluation, the features).
        ``unlabelled_loss``: from ``compute_loss``, whether its batch has no labels; ``None``: ``Trainer`` calls
        the model for predictions, whose outputs carry a loss only where the model's own call returns one."""

        def forward(**batch: Any) -> Any:
            out = self.adapter.forward(core, batch)
            if unlabelled_loss:
                self._check_labels_present(out)
            if out.pairwise:  # the adapter asks a model of its own forward for its loss
                asked = out.outputs is None or self._model_returns_loss(batch)
                # else the model's own loss, as in Trainer
                whole = self.information_settings.info_losses_active or not asked
                if unlabelled_loss is None and not asked:
                    out.loss = None  # predictions: Trainer's call of the model returns no loss
                elif out.loss is None or (whole and self.accelerator.num_processes > 1):
                    out.loss = self._contrastive_base(out)  # the loss of the batch gathered from all processes
            if not core.training and out.features is not None:
                self.feature_capture.put(out.features)
            self._adapter_output = out
            outputs = out.model_outputs()
            # as accelerate's patched forward returns a model's outputs under mixed precision
            return convert_to_fp32(outputs) if self.accelerator.mixed_precision in ("fp16", "bf16") else outputs

        return forward

    def _forward_with_base(
        self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch: Any
    ) -> tuple[Any, AdapterOutput]:
        """``Trainer.compute_loss`` with the adapter as the model's forward: the model's outputs and the adapter's
        output, whose ``loss`` is the base loss exactly as ``Trainer`` computes it (label smoothing,
        ``compute_loss_func``, ``num_items_in_batch``) and whose ``labels`` stay even when ``Trainer`` pops them."""
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
        return outputs, out

    def compute_loss(
        self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ):
        """``Trainer.compute_loss`` plus the information terms (divided by the accumulation steps when
        ``Trainer`` does not divide the base loss: :meth:`_base_scaled_for_ga`)."""
        if model.training and not self._loss_kwargs_probed:
            self._probe_loss_kwargs(model, inputs, num_items_in_batch)
        if self.adapter is None:
            return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        cached = self._cached_step_loss(model, inputs, num_items_in_batch)  # exact gradient accumulation
        if cached is not None:
            return cached if return_outputs else cached[0]
        outputs, out = self._forward_with_base(model, inputs, num_items_in_batch)
        scaled = model.training and self._base_scaled_for_ga(num_items_in_batch)
        steps = self.current_gradient_accumulation_steps if scaled else 1
        loss, components = self.information_loss(out, info_scale=1.0 / steps)
        if scaled and isinstance(components, InformationComponents):  # base logged as the step's mean, like the terms
            components = InformationComponents(out.loss.detach() * steps, components.raw, components.layout)
        elif scaled:
            components = {**components, "loss/base": out.loss.detach() * steps}
        if model.training:
            self._pairwise_batches = bool(out.pairwise)
            self.record_components(self._accumulated_ratios(model, out, components), "train")
        else:
            self.record_components(components, "eval", rows=int(out.features.shape[0]) if out.features is not None else 1)
        return (loss, outputs) if return_outputs else loss

    def prediction_step(self, model: nn.Module, inputs: dict[str, Any], prediction_loss_only: bool, ignore_keys=None):
        """``Trainer.prediction_step`` with the adapter as the forward (unlabelled batches too: CLIP's prompt head)."""
        core = self.accelerator.unwrap_model(model)
        with contextlib.nullcontext() if self.adapter is None else replaced_forward(core, self._run_adapter(core)):
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)

    # ------------------------------------------------------------------ training
    def train(self, *args: Any, **kwargs: Any):
        self._undo_evaluation_prepare()
        try:
            return super().train(*args, **kwargs)
        finally:
            self._accumulated_step = None  # release the last step's micro-batches

    def _undo_evaluation_prepare(self) -> None:
        """Let ``train()`` wrap the model in DDP after an ``evaluate()`` on several processes, which left it marked
        as prepared (:data:`_EVALUATION_PREPARE_STICKS`; accelerate has no public way to undo the mark).
        DeepSpeed and FSDP prepare fully in evaluation."""
        model = self.model
        if (
            _EVALUATION_PREPARE_STICKS
            and self.accelerator.num_processes > 1
            and self.model_wrapped is model
            and getattr(model, "_is_accelerate_prepared", False)
            and not (self.is_deepspeed_enabled or self.is_fsdp_enabled)
        ):
            model._is_accelerate_prepared = False
            if model in self.accelerator._models:
                self.accelerator._models.remove(model)

    # ------------------------------------------------------------------ saving
    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Save as ``Trainer`` does, with the arguments as JSON (``hub_token`` blanked, token values redacted) instead
        of the pickled ``training_args.bin``."""
        super()._save(output_dir, state_dict=state_dict)
        if not self.args.should_save:
            return
        folder = Path(output_dir if output_dir is not None else self.args.output_dir)
        (folder / TRAINING_ARGS_NAME).unlink(missing_ok=True)
        (folder / "training_args.json").write_text(redact_text(self.args.to_json_string()))

    def create_model_card(
        self, language: str | None = None, license: str | None = None, tags: str | list[str] | None = None,
        model_name: str | None = None, finetuned_from: str | None = None, tasks: str | list[str] | None = None,
        dataset_tags: str | list[str] | None = None, dataset: str | list[str] | None = None,
        dataset_args: str | list[str] | None = None,
    ) -> None:
        """Write hf_infonc's model card (:class:`~hf_infonc.card.InfoNCCardData`) to ``output_dir/README.md``
        (``Trainer``'s card for a model without an adapter); ``Trainer.push_to_hub`` calls this."""
        if self.adapter is None:
            return super().create_model_card(
                language=language, license=license, tags=tags, model_name=model_name, finetuned_from=finetuned_from,
                tasks=tasks, dataset_tags=dataset_tags, dataset=dataset, dataset_args=dataset_args,
            )
        if not self.is_world_process_zero():
            return
        if isinstance(dataset, (list, tuple)):
            dataset = dataset[0]
        card = render_model_card(InfoNCCardData.from_trainer(
            self, model_name=model_name, dataset=dataset, finetuned_from=finetuned_from, license=license
        ))
        if tags:
            card.data.tags = list(dict.fromkeys([*(card.data.tags or []), *([tags] if isinstance(tags, str) else tags)]))
        if language:
            card.data.language = language
        Path(self.args.output_dir).mkdir(parents=True, exist_ok=True)
        card.save(Path(self.args.output_dir) / CARD_NAME)

    def push_to_hub(self, *args: Any, **kwargs: Any) -> Any:
        """``Trainer.push_to_hub``: hf_infonc's card (:meth:`create_model_card`), no pickled file uploaded, and a
        LoRA adapter whose base is saved with the run names the repo as its base."""
        with hub_uploads():
            return super().push_to_hub(*args, **kwargs)

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        """``Trainer``'s checkpoint push (``hub_strategy``) without pickled files (``training_args.bin``,
        ``optimizer.pt``, ``rng_state.pth``…): a Hub checkpoint holds the weights, not the optimizer state."""
        with hub_uploads():
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
        """Reload a checkpoint saved under legacy weight names (ViT: ``vit.encoder.layer.*``) through
        ``from_pretrained``, which renames them, where ``Trainer`` only warns (:data:`_TRAINER_SKIPS_RENAMING`).
        DeepSpeed, FSDP and PEFT checkpoints are left to ``Trainer``."""
        core = self.accelerator.unwrap_model(model)
        weights = Path(folder) / SAFE_WEIGHTS_NAME
        handled_by_trainer = (
            not _TRAINER_SKIPS_RENAMING or self.is_deepspeed_enabled or self.is_fsdp_enabled
            or not isinstance(core, PreTrainedModel)
        )
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
    def _with_eval_collator(self, build, *args: Any):
        """``build(*args)`` with ``eval_data_collator`` (when given) in place of ``data_collator``."""
        train_collator = self.data_collator
        if self.eval_data_collator is not None:
            self.data_collator = self.eval_data_collator
        try:
            return build(*args)
        finally:
            self.data_collator = train_collator

    def get_eval_dataloader(self, eval_dataset: Any = None):
        return self._with_eval_collator(super().get_eval_dataloader, eval_dataset)

    def get_test_dataloader(self, test_dataset: Any):
        return self._with_eval_collator(super().get_test_dataloader, test_dataset)

    # ------------------------------------------------------------------ logging
    def record_components(self, components: Mapping[str, torch.Tensor], split: str, rows: int = 1) -> None:
        """Keep the detached values of logged components (no host sync) for :meth:`log` to average, weighted by
        ``rows`` (1 per training step, the local rows of an evaluation batch)."""
        if split == "train" and self.args.logging_strategy == "no":
            return  # no training log will read them
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
        values: dict[str, list[torch.Tensor]] = defaultdict(list)
        weights: dict[str, list[float]] = defaultdict(list)
        for key, items in records.items():
            values[key] += [value.reshape(1).double() for value, _ in items]
            weights[key] += [weight for _, weight in items]
        for layout, items in information.items():
            for key, column in layout.derive(torch.stack([raw for raw, _ in items]).double()).items():
                values[key].append(column.reshape(-1).double())
                weights[key] += [weight for _, weight in items]
        keys = sorted(values)
        sums = []
        for key in keys:
            column = torch.cat(values[key])
            weight = torch.tensor(weights[key], dtype=torch.float64, device=column.device)
            weight = weight.masked_fill(column.isnan(), 0.0)
            sums.append(torch.stack([(column.nan_to_num() * weight).sum(), weight.sum()]))
        totals = torch.stack(sums).to(self.args.device)
        if self.accelerator.num_processes > 1:
            totals = self.accelerator.reduce(totals, reduction="sum")
        records.clear()
        information.clear()
        # a component with no defined value since the last log (batch MIR/HDR of one-row batches, of labels that
        # are not classes) is left out
        return {key: round(float(num / den), 6) for key, (num, den) in zip(keys, totals.tolist()) if den > 0}

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
