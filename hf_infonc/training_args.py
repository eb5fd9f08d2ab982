"""``InfoNCTrainingArguments``: ``TrainingArguments`` plus the settings of the information losses."""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from types import SimpleNamespace
from typing import Any

from transformers import TrainingArguments

from hf_infonc.losses import INFORMATION_SETTINGS, check_information_settings


def _option(default: Any, help: str) -> Any:
    """A field with its help text, which also documents it in the class docstring (:func:`_parameters_doc`)."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class InfoNCTrainingArguments(TrainingArguments):
    """``TrainingArguments`` plus the weights and options of the information losses (docs/theory.md §4):
    the loss of a batch is ``(1 - cma_weight)·base + cma_weight·CMA - mi_weight·MI + entropy_gap_weight·|ΔH|``.

    Parameters:
    """

    cma_weight: float = _option(
        0.0, "w of the convex combination (1-w)·base + w·CMA (arXiv 2409.16767); 0 disables CMA."
    )
    mi_weight: float = _option(0.0, "λ of -λ·MI(features, head rows) (arXiv 2406.03999 §6).")
    entropy_gap_weight: float = _option(0.0, "λ of +λ·|H(features) - H(head rows)| (arXiv 2406.03999 §6).")
    info_normalized: bool = _option(False, "Use the normalised forms -λ·MIR and +λ·HDR instead of MI and |ΔH|.")
    info_center: bool = _option(False, "Centre sample features before the cosine Gram.")
    info_alpha: float = _option(1.0, "Rényi order of the matrix entropies (1 = von Neumann).")
    info_dtype: str = _option(
        "float64",
        "dtype of the spectra of the information losses: 'float64' (default) or 'float32' (faster, |Δ loss| ~1e-6). "
        "Logged MIR/HDR use the same spectra; evaluation metrics are always float64.",
    )
    class_prompt_templates: list[str] = _option(
        ["a photo of a {}."], "Prompt templates for CLIP class heads; '{}' is replaced by the class name."
    )
    info_exact_accumulation: bool = _option(
        True,
        "With gradient_accumulation_steps > 1, compute the Gram-based terms (CMA, MI, entropy gap, and the contrastive "
        "loss of image-caption pairs) on the whole accumulated batch with a two-pass GradCache step (Gao et al. 2021; "
        "hf_infonc.grad_cache): one extra no-grad forward per micro-batch. False = per-micro-batch terms.",
    )

    def __post_init__(self) -> None:
        check_information_settings(**{name: getattr(self, name) for name in INFORMATION_SETTINGS})
        super().__post_init__()

    @property
    def info_losses_active(self) -> bool:
        return self.cma_weight > 0 or self.mi_weight > 0 or self.entropy_gap_weight > 0


def _own_defaults(cls: type) -> dict[str, Any]:
    """The defaults of ``cls``'s own fields (not those of its bases), fresh lists included."""
    return {
        f.name: f.default_factory() if f.default_factory is not MISSING else f.default
        for f in fields(cls) if f.name in cls.__annotations__
    }


class InformationDefaults(SimpleNamespace):
    """The information settings of :class:`InfoNCTrainingArguments` at their defaults (every weight 0)."""

    info_losses_active = InfoNCTrainingArguments.info_losses_active


_DEFAULTS = InformationDefaults(**_own_defaults(InfoNCTrainingArguments))  # read once per step or more: built once


def read_information_settings(args: TrainingArguments) -> InfoNCTrainingArguments | InformationDefaults:
    """The information settings of ``args``: ``args`` itself when it is :class:`InfoNCTrainingArguments`, else
    (``TrainingArguments``, ``Seq2SeqTrainingArguments``, a user's subclass) the defaults: every weight 0."""
    return args if isinstance(args, InfoNCTrainingArguments) else _DEFAULTS


def _parameters_doc(cls: type) -> str:
    """TRL's ``name (`type`, *optional*, defaults to `value`):`` entries, from the fields' types, defaults and help."""
    docs = {f.name: f for f in fields(cls)}
    return "".join(
        f"        {name} (`{docs[name].type}`, *optional*, defaults to `{default!r}`):\n"
        f"            {docs[name].metadata['help']}\n"
        for name, default in _own_defaults(cls).items()
    )


InfoNCTrainingArguments.__doc__ = InfoNCTrainingArguments.__doc__.rstrip() + "\n"
InfoNCTrainingArguments.__doc__ += _parameters_doc(InfoNCTrainingArguments)
