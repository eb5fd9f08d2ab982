"""Model cards of fine-tuned models: the card's facts (:class:`InfoNCCardData`) and their rendering through
``hf_infonc/model_cards/model_card.md.j2`` (package data) into a run's ``README.md`` (guide: docs/hub.md).
Uploads are :mod:`hf_infonc.hub`'s.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, is_dataclass
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml

from hf_infonc import citation
from hf_infonc.local_models import hub_id
from hf_infonc.mode_settings import DEFAULT_TRAINING_MODE, HEAD_ONLY_MODES
from hf_infonc.secrets import clean_output_dir, known_secrets, redact, redact_text

logger = logging.getLogger(__name__)

CARD_NAME = "README.md"
TEMPLATE_NAME = "model_card.md.j2"
TEMPLATE_ENV = "HF_INFONC_MODEL_CARD_TEMPLATE"
"""Environment variable naming another template file (else the packaged ``hf_infonc/model_cards/model_card.md.j2``)."""

_CLIP_USE = "image classification (zero-shot style, with class prompts) and image/text embeddings"
#: Per family: its label, the intended use, and the card's tags.
FAMILIES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "hf-clip": ("CLIP (transformers `CLIPModel`)", _CLIP_USE, ("clip", "transformers")),
    "open-clip": ("CLIP (open_clip)", _CLIP_USE, ("clip", "open_clip")),
    "sequence-classification": ("text classifier (transformers)", "text classification",
                                ("text-classification", "transformers")),
    "image-classification": ("image classifier (transformers)", "image classification",
                             ("image-classification", "transformers")),
}
MODE_DESCRIPTIONS = {
    "full": "every parameter was trained",
    "lora": "LoRA adapters (peft) were trained, the base weights stayed frozen",
    "linear_probe": "only a linear head on frozen features was trained",
    "coop": "only the CoOp context vectors of the class prompts were trained (Zhou et al. 2022); both "
    "encoders stayed frozen",
}

#: Metric keys of the evaluation dictionaries, in table order, with their labels.
METRIC_LABELS: tuple[tuple[str, str], ...] = (
    ("accuracy", "Accuracy"),
    ("mir", "MIR (samples vs head rows)"),
    ("hdr", "HDR (samples vs head rows)"),
    ("class_mir", "Class MIR (class means vs head)"),
    ("class_hdr", "Class HDR (class means vs head)"),
    ("feature_entropy", "Feature entropy H(K₁) (nats)"),
    ("head_entropy", "Head entropy (nats)"),
    ("class_mean_entropy", "Class-mean entropy (nats)"),
    ("nc1", "NC1 (within-class variability)"),
    ("nc2", "NC2 (distance from a simplex ETF)"),
    ("nc3", "NC3 (self-duality of W and M)"),
    ("nc4", "NC4 (disagreement with nearest class centre)"),
    ("loss", "Loss"),
)
#: Metrics written to the ``model-index`` (Hub evaluation results), when finite.
EVAL_RESULT_KEYS: tuple[str, ...] = ("accuracy", "mir", "hdr", "class_mir", "class_hdr", "nc1", "nc2", "nc3", "nc4")
#: Recipe ``training`` keys listed in the card's hyper-parameter table (when set).
HYPERPARAMETER_KEYS: tuple[str, ...] = (
    "num_train_epochs", "max_steps", "per_device_train_batch_size", "per_device_eval_batch_size",
    "gradient_accumulation_steps", "learning_rate", "lr_scheduler_type", "warmup_steps", "optim", "weight_decay",
    "max_grad_norm", "label_smoothing_factor", "bf16", "fp16",
)
LOSS_WEIGHTS = ("cma_weight", "mi_weight", "entropy_gap_weight")
#: License identifiers the Hub accepts in ``license:`` (https://huggingface.co/docs/hub/repositories-licenses).
HUB_LICENSES = frozenset(
    """apache-2.0 mit openrail bigscience-openrail-m creativeml-openrail-m bigscience-bloom-rail-1.0
    bigcode-openrail-m afl-3.0 artistic-2.0 bsl-1.0 bsd bsd-2-clause bsd-3-clause bsd-3-clause-clear c-uda cc
    cc0-1.0 cc-by-2.0 cc-by-2.5 cc-by-3.0 cc-by-4.0 cc-by-sa-3.0 cc-by-sa-4.0 cc-by-nc-2.0 cc-by-nc-3.0
    cc-by-nc-4.0 cc-by-nd-4.0 cc-by-nc-nd-3.0 cc-by-nc-nd-4.0 cc-by-nc-sa-2.0 cc-by-nc-sa-3.0 cc-by-nc-sa-4.0
    cdla-sharing-1.0 cdla-permissive-1.0 cdla-permissive-2.0 wtfpl ecl-2.0 epl-1.0 epl-2.0 etalab-2.0 eupl-1.1
    eupl-1.2 agpl-3.0 gfdl gpl gpl-2.0 gpl-3.0 lgpl lgpl-2.1 lgpl-3.0 isc h-research intel-research lppl-1.3c
    ms-pl apple-ascl apple-amlr mpl-2.0 odc-by odbl openrail++ osl-3.0 postgresql ofl-1.1 ncsa unlicense zlib
    pddl lgpl-lr deepfloyd-if-license fair-noncommercial-research-license llama2 llama3 llama3.1 llama3.2
    llama3.3 llama4 gemma unknown other""".split()
)
PIPELINE_TAGS = frozenset({"image-classification", "zero-shot-image-classification", "text-classification",
                           "feature-extraction"})
#: Template variables that are attributes of :class:`InfoNCCardData` as they are.
PLAIN_TEMPLATE_VARS = (
    "model_name", "model_ref", "repo_id", "family", "training_mode", "base_model", "built_from_config",
    "pretrained_towers", "lora", "eval_only", "seed", "num_processes", "wall_time_s", "load_kind", "semi_supervised",
    "has_open_clip_export", "is_clip", "hf_infonc_wrapper", "versions",
)
#: BibTeX cited beside the papers of the method and of neural collapse when the training mode has a paper.
MODE_CITATIONS = {"coop": citation.COOP, "lora": citation.LORA}

ROUND_OFF = 1e-12
"""Values closer to 0 than this are float64 round-off of a zero (e.g. an entropy of ``-2.2e-16``) and show as 0."""
UNDEFINED = "—"
"""How a missing or undefined value (``None``, NaN, ±inf; ``null`` in ``metrics.json``) is shown."""


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def format_number(value: Any) -> str:
    """A metric or setting as shown in the card and the run summary: ``—`` when undefined (``None``,
    NaN, ±inf), ``0.0000`` for round-off around 0 (never ``-0.0000`` or ``-2.22e-16``), 4 decimals, or
    3 significant digits for very large or small magnitudes."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return UNDEFINED
    if isinstance(value, bool):
        return str(value).lower()
    if not isinstance(value, float):
        return str(value)
    if abs(value) < ROUND_OFF:
        return f"{0.0:.4f}"
    return f"{value:.3g}" if abs(value) >= 1e4 or abs(value) < 1e-3 else f"{value:.4f}"


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _weight(value: float) -> str:
    return f"{value:g}" if value else "0 (off)"


def package_versions(packages: Iterable[str]) -> list[tuple[str, str]]:
    """``("python", version)`` and ``(package, version)`` of each installed one of ``packages``."""
    import platform

    found = [("python", platform.python_version())]
    for name in packages:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found.append((name, metadata.version(name)))
    return found


def hub_model_id(name_or_path: str | None) -> str | None:
    """The Hub id of a model reference (``hf-hub:…`` allowed), or ``None`` for a local folder the Hub does not
    know (:func:`hf_infonc.local_models.hub_id`)."""
    return hub_id(str(name_or_path).removeprefix("hf-hub:")) if name_or_path else None


def _open_clip_base_id(name: str | None, pretrained: str | None) -> str | None:
    """The Hub repo of an open_clip (name, pretrained tag) pair, when open_clip's registry knows one."""
    if not name or name.startswith("hf-hub:"):
        return hub_model_id(name)
    if not pretrained or Path(pretrained).exists():
        return None
    try:
        import open_clip

        repo = ((open_clip.get_pretrained_cfg(name, pretrained) or {}).get("hf_hub") or "").strip("/")
    except Exception:  # noqa: BLE001
        return None
    return hub_model_id(repo) if repo else None


@dataclass
class DatasetInfo:
    source: str
    name: str
    hub_id: str | None = None
    config_name: str | None = None
    eval_split: str = "test"
    description: str = ""


def dataset_info(data: Any) -> DatasetInfo:
    """Where a recipe's ``data`` (a :class:`~hf_infonc.data.DataConfig`) comes from: a Hub dataset id when there
    is one."""
    from hf_infonc.data.sources import HUB_DATASETS, get_source

    source = str(data.source)
    info = get_source(source)  # a known Hub dataset is registered with its spec's eval_split
    spec = HUB_DATASETS.get(info.name)
    dataset_id = config_name = None
    if spec is not None:
        dataset_id, config_name = spec.path, data.config_name or spec.config_name
    elif info.needs_hub and "/" in source and source.lower() != "glue/sst2":
        dataset_id, config_name = source, data.config_name
    name = info.description.split(" (")[0].split(":")[0].strip() if info.description else source
    if not name or name.lower().startswith(("local", "hub dataset")):
        name = source
    split = data.eval_split or info.eval_split or "test"
    return DatasetInfo(source, name, dataset_id, config_name, split, info.description)


def _collapse_note(c: int) -> str | None:
    """Closed-form MIR/HDR at neural collapse (:mod:`hf_infonc.info.collapse`; docs/theory.md §3)."""
    if c < 3:
        return None
    from hf_infonc.info.collapse import entropy_at_collapse, mir_at_collapse

    return (
        f"For reference, at neural collapse with {c} balanced classes the theory gives MIR = "
        f"{float(mir_at_collapse(c)):.4f}, HDR = 0 and a head entropy of log(C-1) = "
        f"{float(entropy_at_collapse(c)):.4f} nats (Theorem 4.2 of arXiv 2406.03999)."
    )


ALGORITHM_NAMES = {"freematch": "FreeMatch", "fixmatch": "FixMatch", "supervised": "supervised only"}


def _semi_supervised(config: Any, results: Mapping[str, Any]) -> dict[str, Any] | None:
    """The semi-supervised settings a card states (the recipe's ``ssl:`` section), or ``None``."""
    if config is None:
        return None
    pools = results.get("ssl") or {}
    fixmatch = config.algorithm == "fixmatch"
    return {
        "algorithm": ALGORITHM_NAMES[config.algorithm],
        "labeled": pools.get("labeled_examples"),
        "unlabeled": pools.get("unlabeled_examples"),
        "mu": config.unlabeled_ratio,
        "threshold": f"fixed τ = {config.p_cutoff}" if fixmatch
        else f"self-adaptive, EMA {config.threshold_ema}, fairness weight {config.fairness_weight}",
        "info_target": config.info_target,
        "ema_decay": config.ema_decay,
    }


class _SavedSection(SimpleNamespace):
    """A section of a saved ``recipe.yaml``: a setting it leaves out reads as ``None``."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return None


def saved_recipe(raw: Mapping[str, Any], folder: str | os.PathLike) -> SimpleNamespace:
    """A run's saved ``recipe.yaml`` (plain data) with the attributes of a Recipe that the card reads: a model or
    hub setting it leaves out reads as ``None``, LoRA / CoOp settings as saved with the model (``adapter_config.json``,
    ``config.json``)."""
    from hf_infonc.data.config import DataConfig
    from hf_infonc.semi_supervised import SemiSupervisedConfig

    def saved(name: str) -> dict[str, Any]:
        path = Path(folder) / name
        return json.loads(path.read_text()) if path.is_file() else {}

    model = dict(raw.get("model") or {})
    adapter, config = saved("adapter_config.json"), saved("config.json")
    lora = {"r": adapter.get("r"), "alpha": adapter.get("lora_alpha"), "dropout": adapter.get("lora_dropout")}
    model["lora"] = _SavedSection(**{**lora, **(model.get("lora") or {})})
    model["coop"] = _SavedSection(**{"n_ctx": config.get("n_ctx"), "init": config.get("ctx_init"),
                                     **(model.get("coop") or {})})
    training = dict(raw.get("training") or {})
    for key in HYPERPARAMETER_KEYS:  # a number YAML 1.1 read as a string (1e-4), as the recipe converts it
        if isinstance(training.get(key), str):
            with contextlib.suppress(ValueError):
                training[key] = float(training[key])
    return SimpleNamespace(
        model=_SavedSection(**model), data=DataConfig(**raw["data"]), training=training,
        ssl=None if raw.get("ssl") is None else SemiSupervisedConfig(**raw["ssl"]),
        hub=_SavedSection(**(raw.get("hub") or {})), seed=raw.get("seed"), raw=dict(raw),
    )


@dataclass
class InfoNCCardData:
    """Everything the model card says about a run, collected from the recipe, the results and the folder.

    Build it with :meth:`from_run` or :meth:`from_trainer`; :meth:`to_card_data` gives the Hub metadata
    (:class:`huggingface_hub.ModelCardData`) and :meth:`template_vars` the template's variables.
    """

    model_name: str
    model_ref: str
    """How the load snippets refer to the model: the Hub repo id, or the local folder."""
    family: str
    training_mode: str
    base_model_name: str | None = None
    """``model.name_or_path`` of the recipe (Hub id, local folder or open_clip model name)."""
    base_model: str | None = None
    """The base model's Hub id, when it has one (``base_model`` of the metadata)."""
    base_model_config: dict[str, Any] | None = None
    """``model.config`` of the recipe: the model was built from a config (random weights)."""
    pretrained: str | None = None
    pretrained_towers: dict[str, str] = field(default_factory=dict)
    """Pretrained towers inside a model built from a config (open_clip ``text_cfg.hf_model_name``)."""
    frozen: list[str] = field(default_factory=list)
    """Parameter-name prefixes frozen by the recipe (``model.freeze``)."""
    repo_id: str | None = None
    license: str = "apache-2.0"
    dataset: DatasetInfo | None = None
    data_settings: dict[str, Any] = field(default_factory=dict)
    class_names: list[str] = field(default_factory=list)
    prompt_templates: list[str] = field(default_factory=list)
    recipe: dict[str, Any] = field(default_factory=dict)
    """The recipe as a mapping, secrets redacted."""
    loss_weights: dict[str, float] = field(default_factory=dict)
    info_options: dict[str, Any] = field(default_factory=dict)
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    lora: dict[str, Any] | None = None
    coop: dict[str, Any] | None = None
    metrics_before: dict[str, Any] = field(default_factory=dict)
    metrics_after: dict[str, Any] = field(default_factory=dict)
    train_metrics: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    wall_time_s: float | None = None
    num_processes: int | None = None
    semi_supervised: dict[str, Any] | None = None
    """FixMatch / FreeMatch settings and pool sizes (the recipe's ``ssl:`` section and ``results["ssl"]``)."""
    plots: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    versions: list[tuple[str, str]] = field(default_factory=list)
    source: str = "recipe"
    """``"recipe"`` (``hf-infonc finetune``) or ``"trainer"`` (``InfoNCTrainer.create_model_card``)."""

    # ------------------------------------------------------------------ building
    @classmethod
    def _in_folder(
        cls, folder: Path, ref: str, repo_id: str | None, model_name: str | None, settings: Mapping[str, Any],
        **facts: Any,
    ):
        """The card data of a run in ``folder``: its names, files (checkpoints left out), plots (the top-level
        ``*.png`` files: the information-dynamics figures; ``analysis/`` results are not among them) and package
        versions, the loss weights, information options and hyper-parameters among the training ``settings``,
        and ``facts``."""
        options = {"info_normalized": (bool, False), "info_alpha": (float, 1.0), "info_center": (bool, False)}
        found = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        files = [f for f in found if not f.startswith("checkpoint-")]
        packages = ["hf-infonc", "torch", "transformers", *(["peft"] if facts["training_mode"] == "lora" else [])]
        packages += ["open_clip_torch"] if facts["family"] == "open-clip" else []
        return cls(
            model_name=model_name or (repo_id.split("/")[-1] if repo_id else folder.resolve().name or "model"),
            model_ref=repo_id or ref, repo_id=repo_id, files=files,
            # the run's own plots (information dynamics, at the top of the folder); analyses write below it
            plots=[f for f in files if "/" not in f and f.lower().endswith(".png")],
            versions=package_versions([*packages, "accelerate", "datasets", "huggingface_hub"]),
            loss_weights={k: float(settings.get(k, 0.0) or 0.0) for k in LOSS_WEIGHTS},
            info_options={key: kind(settings.get(key, default)) for key, (kind, default) in options.items()},
            hyperparameters={k: settings[k] for k in HYPERPARAMETER_KEYS if k in settings}, **facts,
        )

    @classmethod
    def from_run(
        cls, output_dir: str | os.PathLike, recipe: Any, results: Mapping[str, Any] | None, *,
        repo_id: str | None = None, secrets: Iterable[str | None] = (),
    ) -> InfoNCCardData:
        """Collect the card's facts from a :class:`~hf_infonc.recipe.Recipe` (or a saved ``recipe.yaml``
        mapping, see :func:`saved_recipe`), the ``results`` of :func:`~hf_infonc.finetune.run_recipe`
        and the files in ``output_dir``."""
        from hf_infonc.data.prompts import get_templates

        folder = Path(output_dir)
        if isinstance(recipe, Mapping):
            recipe = saved_recipe(recipe, folder)
        results = dict(results or {})
        secrets = known_secrets(secrets)
        spec, data = recipe.model, recipe.data
        training_mode = spec.training_mode or DEFAULT_TRAINING_MODE
        training = redact(dict(recipe.training or {}), secrets)
        towers: dict[str, str] = {}
        if spec.config is not None:
            text_cfg = (spec.config.get("text_cfg") or {}) if spec.family == "open-clip" else {}
            text_tower = text_cfg.get("hf_model_name")  # loaded with its pretrained weights
            base_id = hub_model_id(text_tower)
            towers = {"text": base_id or str(text_tower)} if text_tower else {}
        elif spec.family == "open-clip":
            base_id = _open_clip_base_id(spec.name_or_path, spec.pretrained)
        else:
            base_id = hub_model_id(spec.name_or_path)
        data_keys = ("shots", "max_train_samples", "max_eval_samples", "seed", "test_size", "validation_size")
        lora = None if training_mode != "lora" else {
            "r": spec.lora.r, "alpha": spec.lora.alpha, "dropout": spec.lora.dropout,
            "target_modules": spec.lora.target_modules or "the family's default",
        }
        return cls._in_folder(
            folder, str(output_dir), repo_id or recipe.hub.repo_id, None, training,
            family=spec.family, training_mode=training_mode, base_model_name=spec.name_or_path, base_model=base_id,
            base_model_config=redact(spec.config, secrets) if spec.config is not None else None,
            pretrained=spec.pretrained, pretrained_towers=towers, frozen=list(spec.freeze or []),
            license=recipe.hub.license or "apache-2.0",
            dataset=dataset_info(data),
            data_settings={k: getattr(data, k) for k in data_keys if getattr(data, k) is not None},
            class_names=[str(c) for c in (results.get("class_names") or data.class_names or [])],
            prompt_templates=list(training.get("class_prompt_templates") or get_templates(data.prompt_templates)),
            recipe=redact(recipe.raw or {"model": {"family": spec.family}}, secrets),
            lora=lora, coop={"n_ctx": spec.coop.n_ctx, "init": spec.coop.init} if training_mode == "coop" else None,
            metrics_before=dict(results.get("before") or {}), metrics_after=dict(results.get("after") or {}),
            train_metrics=dict(results.get("train") or {}),
            seed=results.get("seed", recipe.seed),
            wall_time_s=results.get("wall_time_s"), num_processes=results.get("num_processes"),
            semi_supervised=_semi_supervised(recipe.ssl, results),
        )

    @classmethod
    def from_trainer(
        cls, trainer: Any, *, model_name: str | None = None, dataset: str | None = None,
        finetuned_from: str | None = None, license: str | None = None, secrets: Iterable[str | None] = (),
    ) -> InfoNCCardData:
        """Collect the card's facts from an :class:`~hf_infonc.trainer.InfoNCTrainer` (``create_model_card()``
        and ``push_to_hub()`` call this): the model, the non-default training arguments (secrets redacted), the
        last evaluation's metrics and the training summary of ``trainer.state.log_history``."""
        from hf_infonc.adapters.base import unwrap_peft
        from hf_infonc.callbacks import SPEED_KEYS

        args = trainer.args
        secrets = known_secrets([*secrets, args.hub_token])
        core = trainer.accelerator.unwrap_model(trainer.model)
        base = unwrap_peft(core)
        training_mode = "lora" if base is not core else "full"  # family and mode in the recipes' vocabulary
        family = trainer.adapter.family
        if family in ("coop", "clip-linear-probe"):
            from hf_infonc.models.clip_towers import clip_family

            training_mode = "coop" if family == "coop" else "linear_probe"
            family = clip_family(base.clip)
        if family not in FAMILIES:
            raise ValueError(
                f"No model card template for the adapter family {trainer.adapter.family!r}: "
                f"InfoNCTrainer.create_model_card falls back to transformers' card."
            )
        config = getattr(base, "config", None)
        name_or_path = getattr(base, "name_or_path", None) or getattr(config, "_name_or_path", None)
        values, defaults = args.to_dict(), _default_arguments(args)
        training = {k: v for k, v in values.items() if k != "output_dir" and v != defaults.get(k)}
        history = list(trainer.state.log_history or [])
        evaluation = next((e for e in reversed(history) if "eval_runtime" in e or "eval_loss" in e), {})
        skip = {*SPEED_KEYS, "epoch", "step"}  # timings and bookkeeping
        id2label = getattr(config, "id2label", None) or {}
        class_names = trainer.class_names or (
            [id2label[i] for i in sorted(id2label)] if id2label else list(getattr(base, "class_names", None) or [])
        )
        train_summary = next((e for e in reversed(history) if "train_runtime" in e), {})
        lora = None
        if training_mode == "lora":
            peft_config = next(iter(core.peft_config.values()))
            targets = peft_config.target_modules
            lora = {"r": peft_config.r, "alpha": peft_config.lora_alpha, "dropout": peft_config.lora_dropout,
                    "target_modules": sorted(targets) if isinstance(targets, (set, list, tuple)) else targets}
        coop = None if training_mode != "coop" else {
            "n_ctx": getattr(core.config, "n_ctx", None), "init": getattr(core.config, "ctx_init", None)
        }
        dataset_name = dataset or getattr(getattr(trainer.train_dataset, "info", None), "dataset_name", None)
        return cls._in_folder(
            Path(args.output_dir), str(args.output_dir), getattr(trainer, "hub_model_id", None) or args.hub_model_id,
            model_name, values,
            family=family, training_mode=training_mode, base_model_name=finetuned_from or name_or_path or None,
            base_model=hub_model_id(finetuned_from or name_or_path),
            base_model_config=None if name_or_path or config is None else redact(config.to_diff_dict(), secrets),
            license=license or "apache-2.0",
            dataset=DatasetInfo(
                source=dataset_name or "training data", name=dataset_name or "the training data",
                hub_id=hub_model_id(dataset) if dataset else None, eval_split="evaluation set",
            ),
            class_names=[str(c) for c in class_names],
            prompt_templates=list(trainer.information_settings.class_prompt_templates or []),
            recipe={"training": redact(json.loads(json.dumps(training, default=str)), secrets)},
            source="trainer",
            lora=lora, coop=coop,
            metrics_after={k[5:]: v for k, v in evaluation.items() if k.startswith("eval_") and k[5:] not in skip},
            train_metrics=dict(train_summary),
            seed=args.seed, wall_time_s=train_summary.get("train_runtime"), num_processes=args.world_size,
        )

    # ------------------------------------------------------------------ derived facts
    @property
    def eval_only(self) -> bool:
        return not self.metrics_after and not self.train_metrics

    @property
    def is_clip(self) -> bool:
        return self.family in ("hf-clip", "open-clip")

    @property
    def built_from_config(self) -> bool:
        return self.base_model_config is not None

    @property
    def has_open_clip_export(self) -> bool:
        """open_clip's own layout is in the folder (``OpenCLIPModel.save_pretrained`` writes it by default)."""
        return "open_clip_config.json" in self.files and "open_clip_model.safetensors" in self.files

    @property
    def load_kind(self) -> str:
        return self.family if self.training_mode == DEFAULT_TRAINING_MODE else self.training_mode

    @property
    def library_name(self) -> str:
        """The library that loads the files: peft for a LoRA adapter, hf_infonc for its own CLIP heads
        (CoOp, linear probe) and for an open_clip folder without open_clip's layout, else the family's."""
        if self.training_mode == "lora":
            return "peft"
        if self.training_mode in HEAD_ONLY_MODES or (self.family == "open-clip" and not self.has_open_clip_export):
            return "hf_infonc"
        return "open_clip" if self.family == "open-clip" else "transformers"

    @property
    def hf_infonc_wrapper(self) -> str | None:
        """The hf_infonc class needed to load the model, if transformers/open_clip/peft cannot alone."""
        if self.training_mode in HEAD_ONLY_MODES:
            return "CoOpCLIP" if self.training_mode == "coop" else "CLIPLinearProbe"
        if self.family == "open-clip" and (self.training_mode == "lora" or not self.has_open_clip_export):
            return "OpenCLIPModel"  # a LoRA adapter's base is an OpenCLIPModel
        if (self.base_model_config or {}).get("model_type") == "wide_resnet":
            return "WideResNetForImageClassification"
        return None

    def to_card_data(self):
        """The Hub metadata (YAML front matter) of the card; its evaluation results are the final metrics (finite
        values only)."""
        from huggingface_hub import EvalResult, ModelCardData

        task = "text-classification" if self.family == "sequence-classification" else "image-classification"
        dataset = self.dataset or DatasetInfo("unknown", "unknown")
        final, labels = self.metrics_after or self.metrics_before, dict(METRIC_LABELS)
        results = [
            EvalResult(
                task_type=task, task_name=task.replace("-", " ").capitalize(),
                dataset_type=dataset.hub_id or dataset.source, dataset_name=dataset.name,
                dataset_config=dataset.config_name, dataset_split=dataset.eval_split,
                metric_type=key, metric_value=round(float(final[key]), 6), metric_name=labels.get(key, key),
            )
            for key in EVAL_RESULT_KEYS if _finite(final.get(key))
        ]
        modes = {"lora": ["lora", "peft"], "coop": ["coop", "prompt-learning"], "linear_probe": ["linear-probe"]}
        loss_tags = ("cma-loss", "mutual-information-loss", "entropy-gap-loss")
        tags = [
            "hf_infonc", "neural-collapse", "matrix-entropy", "mutual-information", *FAMILIES[self.family][2],
            *modes.get(self.training_mode, []),
            *(tag for key, tag in zip(LOSS_WEIGHTS, loss_tags) if self.loss_weights.get(key)),
        ]
        zero_shot = self.is_clip and self.training_mode in ("full", "lora")
        relation = "adapter" if self.training_mode == "lora" else "finetune"
        return ModelCardData(
            license=self.license, base_model=self.base_model, datasets=[dataset.hub_id] if dataset.hub_id else None,
            library_name=self.library_name, pipeline_tag="zero-shot-image-classification" if zero_shot else task,
            tags=list(dict.fromkeys([*tags, "arxiv:2409.16767", "arxiv:2406.03999"])), metrics=["accuracy"],
            model_name=self.model_name, eval_results=results or None,
            base_model_relation=relation if self.base_model and not self.built_from_config else None,
        )

    # ------------------------------------------------------------------ template variables
    def _metric_table(self) -> tuple[list[str], list[dict[str, Any]]]:
        sources = [m for m in (self.metrics_before, self.metrics_after) if m]
        columns = [c for c, m in (("Before", self.metrics_before), ("After", self.metrics_after)) if m]
        if self.eval_only and columns:
            columns = ["Value"]
        extra = sorted({k for m in sources for k in m if k.startswith("loss/")})
        keys = [*METRIC_LABELS, *((k, f"Loss component `{k[5:]}`") for k in extra)]
        rows = [
            {"label": _cell(label), "cells": [format_number(m.get(key)) for m in sources]}
            for key, label in keys if any(m.get(key) is not None for m in sources)
        ]
        return columns, rows

    def _losses(self) -> tuple[str, list[dict[str, str]]]:
        cma, mi, gap = (self.loss_weights.get(k, 0.0) for k in LOSS_WEIGHTS)
        normalized = self.info_options.get("info_normalized", False)
        base_label = "CLIP cross-entropy over the class prompts" if self.is_clip else "cross-entropy"
        formula = f"L = (1 - {cma:g})·L_base + {cma:g}·CMA" if cma else "L = L_base"
        if mi:
            formula += f" - {mi:g}·" + ("MIR(K₁, K₂)" if normalized else "MI(K₁, K₂)")
        if gap:
            formula += f" + {gap:g}·" + ("HDR(K₁, K₂)" if normalized else "|H(K₁) - H(K₂)|")
        losses = [
            ("L_base", f"{1 - cma:g}" if cma else "1", f"the model's own loss ({base_label})."),
            (
                "CMA (cross-modal alignment)", _weight(cma),
                "arXiv 2409.16767: for each class in the batch, the matrix entropy of the group formed by its "
                "samples' normalised features and its head row (text embedding), divided by log(group size); "
                "minimising it pulls a class's features and its head row toward one direction.",
            ),
            (
                "MIR (normalised mutual information)" if normalized else "MI (matrix mutual information)", _weight(mi),
                "arXiv 2406.03999 §6: subtracted from the loss, so training raises the "
                + ("mutual-information ratio MI/min(H₁, H₂)" if normalized
                   else "matrix mutual information H₁ + H₂ - H(K₁ ⊙ K₂)")
                + " between the features' Gram and the Gram of the label's head rows.",
            ),
            (
                "HDR (entropy difference ratio)" if normalized else "Entropy gap |ΔH|", _weight(gap),
                "arXiv 2406.03999 §6: added to the loss, so training closes the gap between the matrix entropies of "
                "the features and of the head rows"
                + (" (|H₁ - H₂| / max(H₁, H₂))." if normalized else " (|H₁ - H₂|, nats)."),
            ),
        ]
        return formula, [{"name": _cell(n), "weight": _cell(w), "description": _cell(d)} for n, w, d in losses]

    def _base_model_md(self, towers_md: str, config_md: str) -> str:
        if self.built_from_config and self.pretrained_towers:
            return f"built from {config_md}: pretrained {towers_md}; the rest randomly initialised"
        if self.base_model:
            text = f"[{self.base_model}](https://huggingface.co/{self.base_model})"
            if self.family == "open-clip" and self.base_model_name:
                text += f" (open_clip `{self.base_model_name}`"
                text += f", `{self.pretrained}`)" if self.pretrained else ")"
            return text
        if self.built_from_config:
            return f"none: built from {config_md}, random initialisation"
        if self.base_model_name:
            return f"`{self.base_model_name}`" + (f" (pretrained `{self.pretrained}`)" if self.pretrained else "")
        return "unknown"

    def _summary(self, base_md: str, towers_md: str, dataset_name: str) -> str:
        evaluation = "An evaluation of " if self.eval_only else ""
        if (self.base_model or self.base_model_name) and not self.built_from_config:
            subject = (evaluation or "A fine-tuned version of ") + base_md
        else:
            label = FAMILIES[self.family][0]
            weights = f"pretrained {towers_md}, the rest randomly initialised" if towers_md else "random initialisation"
            subject = evaluation + ("an" if label[:1].lower() in "aeiou" else "a") + f" {label}"
            subject += f" built from a config ({weights})" + ("" if self.eval_only else " and trained")
            subject = subject[:1].upper() + subject[1:]
        names = [n for n, k in zip(("CMA", "MI", "entropy-gap"), LOSS_WEIGHTS) if self.loss_weights.get(k)]
        losses = ""
        if names and not self.eval_only:
            losses = " with the " + " + ".join(names) + " information loss" + ("es" if len(names) > 1 else "")
        classes = f"({len(self.class_names)} classes)"
        return f"{subject} on {dataset_name} {classes}, training mode `{self.training_mode}`{losses}."

    def template_vars(self) -> dict[str, Any]:
        """The variables of ``hf_infonc/model_cards/model_card.md.j2`` (besides ``card_data``)."""
        dataset = self.dataset or DatasetInfo("unknown", "unknown")
        towers_md = ", ".join(
            f"{tower} tower [{ref}](https://huggingface.co/{ref})"
            if hub_model_id(ref) == ref and not Path(ref).exists() else f"{tower} tower `{ref}`"
            for tower, ref in self.pretrained_towers.items()
        )
        config_md = "the config in the recipe (`model.config`)" if self.source == "recipe" else "a config"
        base_md = self._base_model_md(towers_md, config_md)
        if dataset.hub_id:
            dataset_md = f"[{dataset.hub_id}](https://huggingface.co/datasets/{dataset.hub_id})"
            dataset_md += (f" (config `{dataset.config_name}`)" if dataset.config_name else "")
            dataset_md += f", hf_infonc source `{dataset.source}`"
        else:
            dataset_md = f"`{dataset.source}` (hf_infonc data source; not a Hub dataset)"
        settings = self.data_settings
        notes = [
            f"{settings['shots']} training examples per class (few-shot, data seed {settings.get('seed', 0)})"
            if settings.get("shots") else "",
            f"at most {settings['max_train_samples']} training examples" if settings.get("max_train_samples") else "",
            f"{settings['validation_size']:g} of the training split held out for validation"
            if settings.get("validation_size") else "",
        ]
        names, templates = self.class_names, self.prompt_templates
        template = templates[0] if templates else "a photo of a {}."
        first = names[0] if names else "cat"
        options, info = [], self.info_options
        if any(self.loss_weights.values()):
            alpha = info["info_alpha"]
            options = [
                "normalised forms (MIR/HDR)" if info["info_normalized"] else "un-normalised forms (MI, |ΔH|)",
                "von Neumann entropy" if alpha == 1.0 else f"Rényi entropy of order {alpha:g}",
                *(["features centred before the Gram"] if info["info_center"] else []),
            ]
        formula, losses = self._losses()
        columns, rows = self._metric_table()
        train_texts = (("train_loss", "mean training loss {:.4f}"), ("epoch", "{:.3g} epochs"),
                       ("train_runtime", "{:.1f} s of training"))
        return {
            **{name: getattr(self, name) for name in PLAIN_TEMPLATE_VARS},
            "summary": self._summary(base_md, towers_md, dataset.name),
            "family_label": FAMILIES[self.family][0],
            "mode_description": MODE_DESCRIPTIONS.get(self.training_mode, self.training_mode)
            + (", except the frozen parameters below" if self.frozen and self.training_mode == "full" else ""),
            "base_model_md": base_md,
            "has_processor": "preprocessor_config.json" in self.files or "processor_config.json" in self.files,
            # a LoRA folder that holds its base too (config.json + base_model.safetensors, modes.save_base_model)
            "has_saved_base": self.training_mode == "lora" and "config.json" in self.files,
            "frozen_md": ", ".join(f"`{p}`" for p in self.frozen),
            "coop": None if not self.coop else {
                **self.coop, "init": f"from `{self.coop['init']}`" if self.coop["init"] else "randomly (N(0, 0.02²))"
            },
            "num_classes": len(names),
            "class_names_md": ", ".join(f"`{n}`" for n in names[:20])
            + (f", … ({len(names)} in all)" if len(names) > 20 else ""),
            "class_names_py": repr(names),
            "prompt_templates": templates if self.is_clip else [],
            "prompt_templates_md": ", ".join(f"`{t}`" for t in templates[:3])
            + (f" and {len(templates) - 3} more" if len(templates) > 3 else ""),
            "prompt_expr": f"{template!r}.format(c=name)" if "{c}" in template else f"{template!r}.format(name)",
            "first_prompt": template.format(first, c=first).replace('"', "'"),
            "dataset_md": dataset_md,
            "dataset_description": dataset.description,
            "eval_split": dataset.eval_split,
            "max_eval_samples": settings.get("max_eval_samples"),
            "data_notes": "; ".join(note for note in notes if note),
            "loss_formula": formula,
            "losses": losses,
            "info_options": ", ".join(options),
            "hyperparameters": [
                (k, _cell(f"{v:g}" if isinstance(v, float) else format_number(v)))
                for k, v in self.hyperparameters.items()
            ],
            "train_summary": ", ".join(
                text.format(float(self.train_metrics[key]))
                for key, text in train_texts if _finite(self.train_metrics.get(key))
            ),
            "recipe_yaml": yaml.safe_dump(self.recipe, sort_keys=False).rstrip("\n"),
            "recipe_heading": "Recipe" if self.source == "recipe" else "Training arguments",
            "recipe_intro": (
                "The full recipe (`hf-infonc finetune recipe.yaml` reproduces the run; secrets are redacted):"
                if self.source == "recipe"
                else "Trained with `hf_infonc.InfoNCTrainer`; the training arguments that differ from their defaults "
                "(secrets redacted):"
            ),
            "metric_columns": columns,
            "has_nc": any(f"nc{i}" in m for m in (self.metrics_before, self.metrics_after) for i in range(1, 5)),
            "metric_rows": rows,
            "has_undefined": any(cell == UNDEFINED for row in rows for cell in row["cells"]),
            "collapse_note": _collapse_note(len(names))
            if {"mir", "class_mir"} & set(self.metrics_after or self.metrics_before) else None,
            "plots": [{"file": p, "title": Path(p).stem.replace("_", " ").replace("-", " ").strip().capitalize()}
                      for p in self.plots],
            "needs_hf_infonc_models": (self.base_model_config or {}).get("model_type") == "wide_resnet",
            "open_clip_ref": f"hf-hub:{self.repo_id}" if self.repo_id else f"local-dir:{self.model_ref}",
            "task_use": FAMILIES[self.family][1],
            "citation": citation.CITATION,
            "extra_citations": [citation.NEURAL_COLLAPSE]
            + ([MODE_CITATIONS[self.training_mode]] if self.training_mode in MODE_CITATIONS else []),
        }


# ---------------------------------------------------------------------------- rendering


def _default_arguments(args: Any) -> dict[str, Any]:
    """``to_dict()`` of ``args``' class at its defaults, or of the nearest base class that has a default for every
    field (a user's subclass may add a required one)."""
    for cls in type(args).__mro__:
        if is_dataclass(cls) and hasattr(cls, "to_dict"):
            with contextlib.suppress(TypeError):
                return cls(output_dir=args.output_dir, use_cpu=args.use_cpu).to_dict()
    return {}


def template_path() -> Path:
    """The model-card template: ``$HF_INFONC_MODEL_CARD_TEMPLATE``, else the packaged
    ``hf_infonc/model_cards/model_card.md.j2`` (package data: it ships in the wheel too)."""
    override = os.environ.get(TEMPLATE_ENV)
    path = Path(override) if override else Path(__file__).resolve().parent / "model_cards" / TEMPLATE_NAME
    if not path.is_file():
        fix = (
            f"point {TEMPLATE_ENV} at an existing .md.j2 template, or unset it to use the packaged one" if override
            else "the installation is incomplete: reinstall hf_infonc"
        )
        raise FileNotFoundError(f"Model-card template not found: {path}; {fix}.")
    return path


def render_model_card(card_data: InfoNCCardData, template: str | os.PathLike | None = None):
    """Render the template into a :class:`huggingface_hub.ModelCard` (its metadata already parsed and checked)."""
    import jinja2
    from huggingface_hub import ModelCard

    path = Path(template) if template is not None else template_path()
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(path.parent)), trim_blocks=True, lstrip_blocks=True,
        keep_trailing_newline=True, undefined=jinja2.StrictUndefined, autoescape=False,
    )
    text = env.get_template(path.name).render(card_data=card_data.to_card_data().to_yaml(), **card_data.template_vars())
    return ModelCard(redact_text(re.sub(r"\n{3,}", "\n\n", text)))


def write_model_card(
    output_dir: str | os.PathLike, recipe: Any, results: Mapping[str, Any] | None, *, repo_id: str | None = None,
    template: str | os.PathLike | None = None, clean: bool = True, secrets: Iterable[str | None] = (),
) -> Path:
    """Render the model card of a finished run into ``output_dir/README.md``; return its path.

    Args:
        output_dir: the run's output directory (model, processor, ``metrics.json``, plots).
        recipe: the :class:`~hf_infonc.recipe.Recipe` of the run (or its saved ``recipe.yaml`` as a mapping).
        results: the dictionary :func:`~hf_infonc.finetune.run_recipe` writes to ``metrics.json``
            (``before``, ``after``, ``train``, ``seed``, ``class_names``, ``wall_time_s``, ``num_processes``).
        repo_id: the Hub repo the card will live in (default ``recipe.hub.repo_id``); the load
            snippets refer to it, else to the local folder.
        template: another Jinja template (default :func:`template_path`).
        clean: first apply :func:`~hf_infonc.secrets.clean_output_dir` (remove the pickled
            ``training_args.bin``, redact secrets from ``recipe.yaml``/``metrics.json``).
        secrets: extra values to redact (a token passed on the command line).
    """
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    secrets = known_secrets(secrets)
    if clean:
        for action in clean_output_dir(folder, secrets):
            logger.info("%s: %s", folder, action)
    data = InfoNCCardData.from_run(folder, recipe, results, repo_id=repo_id, secrets=secrets)
    card = render_model_card(data, template)
    path = folder / CARD_NAME
    card.save(path)
    logger.info("Model card written to %s", path)
    return path


def rerender_model_card(output_dir: str | os.PathLike, repo_id: str, secrets: Iterable[str | None] = ()) -> None:
    """Re-render a run's card so that it names ``repo_id`` (from its ``recipe.yaml`` and ``metrics.json``);
    a folder without them, or a card that cannot be re-rendered, keeps its card (with a warning)."""
    folder = Path(output_dir)
    recipe_file, metrics_file = folder / "recipe.yaml", folder / "metrics.json"
    if not (recipe_file.is_file() and metrics_file.is_file()):
        return
    try:
        raw = yaml.safe_load(recipe_file.read_text())
        write_model_card(folder, raw, json.loads(metrics_file.read_text()), repo_id=repo_id, secrets=secrets)
    except Exception as error:  # noqa: BLE001 - the existing card is still valid
        logger.warning(
            "%s: kept the existing model card (could not re-render it for %s: %s)", folder, repo_id,
            redact_text(str(error), secrets),
        )


def validate_model_card(card: Any) -> list[str]:
    """Offline checks of a card (text, path or ``ModelCard``; ``ModelCard.validate`` needs the network); returns
    the problems found (empty: none): the metadata parses (``model-index`` included), the license is a Hub license
    id, ``base_model`` and ``datasets`` are valid repo ids, evaluation values are finite, and no token appears."""
    from huggingface_hub import ModelCard
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    problems: list[str] = []
    try:
        is_path = isinstance(card, os.PathLike) or (isinstance(card, str) and "\n" not in card and len(card) < 1024)
        if is_path and Path(card).is_file():
            card = ModelCard.load(Path(card), ignore_metadata_errors=False)
        elif not isinstance(card, ModelCard):
            card = ModelCard(str(card), ignore_metadata_errors=False)
    except Exception as error:  # noqa: BLE001
        return [f"the card does not parse: {type(error).__name__}: {error}"]
    data = card.data
    if data.license not in HUB_LICENSES:
        problems.append(f"license {data.license!r} is not a Hub license id")
    if data.license == "other" and not getattr(data, "license_name", None):
        problems.append("license 'other' needs license_name (and license_link)")
    for key in ("base_model", "datasets"):
        value = getattr(data, key, None)
        for item in [value] if isinstance(value, str) else (value or []):
            try:
                validate_repo_id(item)
            except HFValidationError as error:
                problems.append(f"{key} {item!r} is not a valid repo id: {error}")
    if not all(isinstance(t, str) for t in data.tags or []):
        problems.append("tags must be strings")
    if data.library_name is not None and not isinstance(data.library_name, str):
        problems.append("library_name must be a string")
    if data.pipeline_tag is not None and data.pipeline_tag not in PIPELINE_TAGS:
        problems.append(f"pipeline_tag {data.pipeline_tag!r} is not one this project expects ({sorted(PIPELINE_TAGS)})")
    for result in data.eval_results or []:
        if not _finite(result.metric_value):
            problems.append(f"eval result {result.metric_type}: value {result.metric_value!r} is not a finite number")
    if redact_text(str(card)) != str(card):
        problems.append("the card contains a token")
    return problems


__all__ = [
    "CARD_NAME", "InfoNCCardData", "dataset_info", "format_number", "hub_model_id", "render_model_card",
    "rerender_model_card", "saved_recipe", "template_path", "validate_model_card", "write_model_card",
]
