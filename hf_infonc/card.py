"""Model cards and Hub uploads for fine-tuned models.

At the end of every run, :func:`write_model_card` renders ``hf_infonc/model_cards/model_card.md.j2``
(package data, so pip-installed copies render cards too) into ``README.md`` in the output directory::

    from hf_infonc.card import write_model_card, push_output_dir

    write_model_card("outputs/demo", recipe, results)          # finetune.py does this
    url = push_output_dir("outputs/demo", repo_id="me/demo")   # hf-infonc push outputs/demo --repo-id me/demo

The card has valid Hub metadata (a :class:`huggingface_hub.ModelCardData`: license, base_model,
datasets, tags, library_name, pipeline_tag and a ``model-index`` with the final metrics), the
base model and the data, the recipe (YAML, secrets redacted), the loss weights and what each
loss does, a table of the metrics before and after training, the dynamics plots, how to load
the model with the standard API of its family, intended use and limitations, and BibTeX for
arXiv 2409.16767 and 2406.03999. The collected facts live in :class:`InfoNCCardData` (as
sentence-transformers' ``SentenceTransformerModelCardData`` does).

Pushing (:func:`push_output_dir`) uploads an allow-list of files only (:data:`UPLOAD_ALLOW_PATTERNS`:
safetensors weights, JSON configs, tokenizer files, the card, plots, ``recipe.yaml``); pickled
files (``*.bin``, ``*.pt``, ``*.pth``, ``*.pkl``, ``training_args.bin``) and checkpoints are never
uploaded. The token comes from the ``token`` argument, else from huggingface_hub's usual places
(``HF_TOKEN``, the saved ``hf auth login`` / ``huggingface-cli login`` token); it is never logged,
printed, written to the card or kept in saved arguments, and it is redacted from error messages.
With ``HF_HUB_OFFLINE=1`` or an unreachable Hub the push fails at once with a :class:`HubPushError`
that says what to do.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from hf_infonc.errors import UserError

logger = logging.getLogger(__name__)

CARD_NAME = "README.md"
TEMPLATE_NAME = "model_card.md.j2"
TEMPLATE_ENV = "HF_INFONC_MODEL_CARD_TEMPLATE"
"""Environment variable naming another template file (else the packaged ``hf_infonc/model_cards/model_card.md.j2``)."""
HUB_TIMEOUT_ENV = "HF_INFONC_HUB_TIMEOUT"
"""Seconds to wait for the Hub to answer ``create_repo`` before giving up (default 30)."""
REDACTED = "<redacted>"

#: Files uploaded by :func:`push_output_dir` (``fnmatch`` patterns on the path inside the folder).
UPLOAD_ALLOW_PATTERNS: tuple[str, ...] = (
    "*.safetensors",
    "*.json",  # config.json, adapter_config.json, tokenizer*.json, vocab.json, metrics.json, …
    "*.md",
    "*.png",
    "*.txt",  # vocab.txt, merges.txt
    "*.yaml",
    "*.model",  # sentencepiece (spiece.model): protobuf, not pickle
    "*.tiktoken",
)
#: Files never uploaded, even when an allow pattern matches.
UPLOAD_IGNORE_PATTERNS: tuple[str, ...] = (
    "checkpoint-*",
    "checkpoint-*/**",
    "runs/**",
    ".*",
    "**/.*",
    "_*",
    "*.bin",
    "*.pt",
    "*.pth",
    "*.pkl",
    "*.pickle",
    "*.ckpt",
    "*.npy",
    "*.npz",
    "training_args.*",
)
#: Suffixes of files that ``torch.load``/``pickle`` would read: never uploaded, never needed to load.
PICKLE_SUFFIXES: tuple[str, ...] = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
#: Pickled files the Trainer writes that are not weights (skipped quietly).
TRAINER_PICKLES = re.compile(r"^(training_args\.bin|optimizer\.pt|scheduler\.pt|scaler\.pt|rng_state.*\.pth)$")

FAMILY_LABELS = {
    "hf-clip": "CLIP (transformers `CLIPModel`)",
    "open-clip": "CLIP (open_clip)",
    "sequence-classification": "text classifier (transformers)",
    "image-classification": "image classifier (transformers)",
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
EVAL_RESULT_KEYS: tuple[str, ...] = (
    "accuracy", "mir", "hdr", "class_mir", "class_hdr", "nc1", "nc2", "nc3", "nc4",
)
#: Recipe ``training`` keys listed in the card's hyper-parameter table (when set).
HYPERPARAMETER_KEYS: tuple[str, ...] = (
    "num_train_epochs", "max_steps", "per_device_train_batch_size", "per_device_eval_batch_size",
    "gradient_accumulation_steps", "learning_rate", "lr_scheduler_type", "warmup_steps", "optim", "weight_decay",
    "max_grad_norm", "label_smoothing_factor", "bf16", "fp16",
)
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
PIPELINE_TAGS = frozenset(
    {"image-classification", "zero-shot-image-classification", "text-classification", "feature-extraction"}
)

EXTRA_CITATIONS = {
    "coop": """@article{zhou2022coop,
  title   = {Learning to Prompt for Vision-Language Models},
  author  = {Zhou, Kaiyang and Yang, Jingkang and Loy, Chen Change and Liu, Ziwei},
  journal = {International Journal of Computer Vision},
  year    = {2022}
}""",
    "lora": """@inproceedings{hu2022lora,
  title     = {{LoRA}: Low-Rank Adaptation of Large Language Models},
  author    = {Hu, Edward J. and Shen, Yelong and Wallis, Phillip and Allen-Zhu, Zeyuan and Li, Yuanzhi and Wang, Shean and Wang, Lu and Chen, Weizhu},
  booktitle = {International Conference on Learning Representations},
  year      = {2022}
}""",
    "neural_collapse": """@article{papyan2020prevalence,
  title   = {Prevalence of Neural Collapse during the Terminal Phase of Deep Learning Training},
  author  = {Papyan, Vardan and Han, X. Y. and Donoho, David L.},
  journal = {Proceedings of the National Academy of Sciences},
  volume  = {117},
  number  = {40},
  pages   = {24652--24663},
  year    = {2020}
}""",
}


class HubPushError(UserError):
    """A push to the Hub that cannot be done (offline, unreachable, no token, rejected); says what to do."""


# ---------------------------------------------------------------------------- secrets

_SECRET_KEY = re.compile(r"(^|[_.-])(token|password|passwd|secret|api[_-]?key|access[_-]?key)$", re.IGNORECASE)
_HUB_TOKEN_VALUE = re.compile(r"\bhf_[A-Za-z0-9]{30,}\b")
"""Hugging Face user access tokens: ``hf_`` followed by 34 letters and digits."""


def known_secrets(extra: Iterable[str | None] = ()) -> list[str]:
    """Token values to redact: ``extra`` plus ``HF_TOKEN``/``HUGGING_FACE_HUB_TOKEN`` and the saved login."""
    values = [v for v in extra if isinstance(v, str)]
    values += [os.environ.get(name) for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")]
    try:
        from huggingface_hub import get_token

        values.append(get_token())
    except Exception:  # noqa: BLE001 - a broken login must not stop redaction
        pass
    # Redact long values first so that a token containing a shorter one is still caught whole.
    return sorted({v for v in values if isinstance(v, str) and len(v) >= 4}, key=len, reverse=True)


def is_secret_key(key: Any) -> bool:
    """Whether a mapping key names a secret (``hub_token``, ``token``, ``*_password``, ``api_key``, …)."""
    return isinstance(key, str) and bool(_SECRET_KEY.search(key))


def _redact_text(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return _HUB_TOKEN_VALUE.sub(REDACTED, text)


def _redact(value: Any, secrets: Sequence[str]) -> Any:
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if is_secret_key(key) and item not in (None, "", False):
                out[key] = REDACTED
            else:
                out[key] = _redact(item, secrets)
        return out
    if isinstance(value, (list, tuple)):
        return type(value)(_redact(item, secrets) for item in value)
    if isinstance(value, str):
        return _redact_text(value, secrets)
    return value


def redact_text(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with every known token value and every ``hf_…`` token replaced by ``<redacted>``."""
    return _redact_text(text, known_secrets(secrets))


def redact(value: Any, secrets: Iterable[str | None] = ()) -> Any:
    """A deep copy of ``value`` with secret keys (``hub_token``, ``token``, ``*_password``, …) and token
    values redacted. Keys with an empty value (``hub_token: null``) are kept as they are."""
    return _redact(value, known_secrets(secrets))


def clean_output_dir(output_dir: str | os.PathLike, secrets: Iterable[str | None] = ()) -> list[str]:
    """Make a run's output directory safe to share; returns what was done.

    * removes ``training_args.bin``: transformers' ``Trainer._save`` pickles the whole
      ``TrainingArguments`` there (``hub_token`` included); nothing needs it to load the model;
    * redacts secrets from ``recipe.yaml`` and ``metrics.json`` (``training.hub_token``, tokens).

    Checkpoint folders (``checkpoint-*``) are left alone: they are never uploaded.
    """
    folder = Path(output_dir)
    done = []
    args_file = folder / "training_args.bin"
    if args_file.is_file():
        args_file.unlink()
        done.append("removed training_args.bin (pickled TrainingArguments)")
    recipe_file = folder / "recipe.yaml"
    if recipe_file.is_file():
        text = recipe_file.read_text()
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError:
            raw = None
        cleaned = redact_text(text, secrets)
        if isinstance(raw, dict):
            redacted = redact(raw, secrets)
            if redacted != raw:
                cleaned = yaml.safe_dump(redacted, sort_keys=False)
        if cleaned != text:
            recipe_file.write_text(cleaned)
            done.append("redacted secrets in recipe.yaml")
    metrics_file = folder / "metrics.json"
    if metrics_file.is_file():
        text = metrics_file.read_text()
        cleaned = redact_text(text, secrets)
        if cleaned != text:
            metrics_file.write_text(cleaned)
            done.append("redacted secrets in metrics.json")
    return done


# ---------------------------------------------------------------------------- card data


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite(value: Any) -> bool:
    return _is_number(value) and math.isfinite(value)


ROUND_OFF = 1e-12
"""Values closer to 0 than this are float64 round-off of a zero (e.g. an entropy of ``-2.2e-16``) and show as 0."""
UNDEFINED = "—"
"""How a missing or undefined value (``None``, NaN, ±inf; ``null`` in ``metrics.json``) is shown."""


def format_number(value: Any) -> str:
    """A metric or setting as shown in the card and the run summary: ``—`` when undefined (``None``,
    NaN, ±inf), ``0.0000`` for round-off around 0 (never ``-0.0000`` or ``-2.22e-16``), 4 decimals, or
    3 significant digits for very large or small magnitudes."""
    if value is None:
        return UNDEFINED
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return UNDEFINED
        if abs(value) < ROUND_OFF:
            return f"{0.0:.4f}"
        if abs(value) >= 1e4 or abs(value) < 1e-3:
            return f"{value:.3g}"
        return f"{value:.4f}"
    return str(value)


_format_number = format_number


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _weight(value: Any) -> str:
    if not _is_number(value) or value == 0:
        return "0 (off)"
    return f"{value:g}"


def package_versions(packages: Iterable[str]) -> list[tuple[str, str]]:
    """``("python", version)`` and ``(package, version)`` of each installed one of ``packages``."""
    import platform

    found = [("python", platform.python_version())]
    for name in packages:
        try:
            found.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            continue
    return found


def _versions(family: str, training_mode: str) -> list[tuple[str, str]]:
    packages = ["hf-infonc", "torch", "transformers"]
    if training_mode == "lora":
        packages.append("peft")
    if family == "open-clip":
        packages.append("open_clip_torch")
    return package_versions([*packages, "accelerate", "datasets", "huggingface_hub"])


def _local_model_hub_ids() -> dict[str, str]:
    """Local folders of known Hub models (the factory's offline copies) -> their Hub ids."""
    try:
        from hf_infonc.local_models import LOCAL_MODELS
    except ImportError:  # pragma: no cover
        return {}
    found = {}
    for hub_id, finder in LOCAL_MODELS.items():
        if "/" not in hub_id:
            continue
        try:
            local = finder()
        except Exception:  # noqa: BLE001
            local = None
        if local:
            found[str(Path(local).resolve())] = hub_id
    return found


def hub_model_id(name_or_path: str | None) -> str | None:
    """The Hub id of a model reference, or ``None`` for a local folder the Hub does not know."""
    if not name_or_path:
        return None
    name = str(name_or_path)
    if name.startswith("hf-hub:"):
        name = name[len("hf-hub:") :]
    if Path(name).exists():
        return _local_model_hub_ids().get(str(Path(name).resolve()))
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return None
    return name


def _open_clip_base_id(name: str | None, pretrained: str | None) -> str | None:
    """The Hub repo of an open_clip (name, pretrained tag) pair, when open_clip's registry knows one."""
    if not name:
        return None
    if name.startswith("hf-hub:"):
        return hub_model_id(name)
    if not pretrained or Path(pretrained).exists():
        return None
    try:
        import open_clip

        cfg = open_clip.get_pretrained_cfg(name, pretrained) or {}
    except Exception:  # noqa: BLE001
        return None
    repo = (cfg.get("hf_hub") or "").strip("/")
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
    """Where a recipe's ``data`` comes from: a Hub dataset id when there is one."""
    source = str(data.source)
    split = getattr(data, "eval_split", None)
    try:
        from hf_infonc.data.sources import HUB_DATASETS, get_source

        info = get_source(source)
    except Exception:  # noqa: BLE001 - the card must not fail because the data layer cannot import
        info = None
    description = getattr(info, "description", "") or ""
    spec = HUB_DATASETS.get(info.name) if info is not None else None
    hub_id = config_name = None
    if spec is not None:
        hub_id, config_name = spec.path, getattr(data, "config_name", None) or spec.config_name
        split = split or spec.eval_split
    elif info is not None and info.needs_hub and "/" in source and source.lower() not in ("glue/sst2",):
        hub_id, config_name = source, getattr(data, "config_name", None)
    split = split or getattr(info, "eval_split", None) or "test"
    name = description.split(" (")[0].split(":")[0].strip() if description else source
    if not name or name.lower().startswith("local") or name.lower().startswith("hub dataset"):
        name = source
    return DatasetInfo(source, name, hub_id, config_name, split, description)


def _collapse_note(num_classes: int) -> str | None:
    """Closed-form MIR/HDR at neural collapse (Theorem 4.2 of arXiv 2406.03999) for ``num_classes``."""
    if num_classes < 3:
        return None
    c = num_classes
    mir = 1.0 / (c - 1) + (c - 2) * math.log(c - 2) / ((c - 1) * math.log(c - 1)) if c > 2 else float("nan")
    return (
        f"For reference, at neural collapse with {c} balanced classes the theory gives MIR = {mir:.4f}, "
        f"HDR = 0 and a head entropy of log(C-1) = {math.log(c - 1):.4f} nats (Theorem 4.2 of arXiv 2406.03999)."
    )


def _semi_supervised(recipe: Any, results: dict[str, Any]) -> dict[str, Any] | None:
    """The semi-supervised settings a card states, or ``None`` for supervised recipes."""
    config = getattr(recipe, "ssl", None)
    if config is None:
        return None
    pools = dict(results.get("ssl") or {})
    return {
        "algorithm": {"freematch": "FreeMatch", "fixmatch": "FixMatch", "supervised": "supervised only"}[config.algorithm],
        "labeled": pools.get("labeled_examples"),
        "unlabeled": pools.get("unlabeled_examples"),
        "mu": config.unlabeled_ratio,
        "threshold": f"fixed τ = {config.p_cutoff}" if config.algorithm == "fixmatch"
        else f"self-adaptive, EMA {config.threshold_ema}, fairness weight {config.fairness_weight}",
        "info_target": config.info_target,
        "ema_decay": config.ema_decay,
    }


def _plot_title(stem: str) -> str:
    return stem.replace("_", " ").replace("-", " ").strip().capitalize()


def _config_class_names(model: Any) -> list[str]:
    id2label = getattr(getattr(model, "config", None), "id2label", None) or {}
    return [id2label[i] for i in sorted(id2label)] if id2label else list(getattr(model, "class_names", None) or [])


def _strip_metrics(metrics: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """``{"eval_mir": …}`` → ``{"mir": …}``, without timings and bookkeeping."""
    from hf_infonc.callbacks import SPEED_KEYS

    skip = {*SPEED_KEYS, "epoch", "step"}
    out = {}
    for key, value in metrics.items():
        if key.startswith(prefix + "_") and key[len(prefix) + 1 :] not in skip:
            out[key[len(prefix) + 1 :]] = value
    return out


def trainer_model_family(model: Any, adapter: Any) -> tuple[str, str, Any]:
    """``(family, training_mode, base model)`` of a trainer's model, in the recipes' vocabulary."""
    from hf_infonc.adapters.base import unwrap_peft

    base = unwrap_peft(model)
    mode = "lora" if base is not model else "full"
    family = {"open_clip": "open-clip"}.get(adapter.family, adapter.family)
    if family in ("coop", "clip-linear-probe"):
        from hf_infonc.models.clip_towers import clip_family

        mode = "coop" if family == "coop" else "linear_probe"
        family = {"open_clip": "open-clip"}.get(clip_family(base.clip), clip_family(base.clip))
    if family not in FAMILY_LABELS:
        raise ValueError(
            f"No model card template for the adapter family {adapter.family!r}: InfoNCTrainer.create_model_card "
            f"falls back to transformers' card."
        )
    return family, mode, base



@dataclass
class InfoNCCardData:
    """Everything the model card says about a run, collected from the recipe, the results and the folder.

    Build it with :meth:`from_run`; :meth:`to_card_data` gives the Hub metadata
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
    def from_run(
        cls,
        output_dir: str | os.PathLike,
        recipe: Any,
        results: Mapping[str, Any] | None,
        *,
        repo_id: str | None = None,
        secrets: Iterable[str | None] = (),
    ) -> InfoNCCardData:
        """Collect the card's facts from a :class:`~hf_infonc.recipe.Recipe`, the ``results`` of
        :func:`~hf_infonc.finetune.run_recipe` and the files in ``output_dir``."""
        folder = Path(output_dir)
        results = dict(results or {})
        secrets = known_secrets(secrets)
        spec = recipe.model
        hub = getattr(recipe, "hub", None)
        repo_id = repo_id or getattr(hub, "repo_id", None)
        training = redact(dict(recipe.training or {}), secrets)
        raw = getattr(recipe, "raw", None) or {}
        recipe_mapping = redact(raw if raw else {"model": {"family": spec.family}}, secrets)

        towers: dict[str, str] = {}
        if spec.family == "open-clip":
            base_id = None if spec.config is not None else _open_clip_base_id(spec.name_or_path, spec.pretrained)
            if spec.config is not None:
                text_tower = (spec.config.get("text_cfg") or {}).get("hf_model_name")
                if text_tower:  # loaded with its pretrained weights (OpenCLIPModel.from_open_clip)
                    towers["text"] = hub_model_id(text_tower) or str(text_tower)
                    base_id = hub_model_id(text_tower)
        else:
            base_id = None if spec.config is not None else hub_model_id(spec.name_or_path)

        class_names = [str(c) for c in (results.get("class_names") or getattr(recipe.data, "class_names", None) or [])]
        templates = training.get("class_prompt_templates")
        if not templates:
            try:
                from hf_infonc.data.prompts import get_templates

                templates = get_templates(getattr(recipe.data, "prompt_templates", None))
            except Exception:  # noqa: BLE001
                templates = ["a photo of a {}."]
        data = recipe.data
        data_settings = {
            key: getattr(data, key)
            for key in ("shots", "max_train_samples", "max_eval_samples", "seed", "test_size", "validation_size")
            if getattr(data, key, None) is not None
        }
        lora = coop = None
        if spec.training_mode == "lora":
            lora = {
                "r": spec.lora.r, "alpha": spec.lora.alpha, "dropout": spec.lora.dropout,
                "target_modules": spec.lora.target_modules or "the family's default",
            }
        if spec.training_mode == "coop":
            coop = {"n_ctx": spec.coop.n_ctx, "init": spec.coop.init}
        files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []
        files = [f for f in files if not f.startswith("checkpoint-")]
        plots = [f for f in files if f.lower().endswith(".png")]
        name = repo_id.split("/")[-1] if repo_id else (folder.resolve().name or "model")
        return cls(
            model_name=name,
            model_ref=repo_id or str(output_dir),
            family=spec.family,
            training_mode=spec.training_mode,
            base_model_name=spec.name_or_path,
            base_model=base_id,
            base_model_config=redact(spec.config, secrets) if spec.config is not None else None,
            pretrained=spec.pretrained,
            pretrained_towers=towers,
            frozen=list(getattr(spec, "freeze", None) or []),
            repo_id=repo_id,
            license=getattr(hub, "license", None) or "apache-2.0",
            dataset=dataset_info(data),
            data_settings=data_settings,
            class_names=class_names,
            prompt_templates=list(templates or []),
            recipe=recipe_mapping,
            loss_weights={
                "cma_weight": float(training.get("cma_weight", 0.0) or 0.0),
                "mi_weight": float(training.get("mi_weight", 0.0) or 0.0),
                "entropy_gap_weight": float(training.get("entropy_gap_weight", 0.0) or 0.0),
            },
            info_options={
                "info_normalized": bool(training.get("info_normalized", False)),
                "info_alpha": float(training.get("info_alpha", 1.0)),
                "info_center": bool(training.get("info_center", False)),
            },
            hyperparameters={k: training[k] for k in HYPERPARAMETER_KEYS if k in training},
            lora=lora,
            coop=coop,
            metrics_before=dict(results.get("before") or {}),
            metrics_after=dict(results.get("after") or {}),
            train_metrics=dict(results.get("train") or {}),
            seed=results.get("seed", getattr(recipe, "seed", None)),
            wall_time_s=results.get("wall_time_s"),
            num_processes=results.get("num_processes"),
            semi_supervised=_semi_supervised(recipe, results),
            plots=plots,
            files=files,
            versions=_versions(spec.family, spec.training_mode),
        )

    @classmethod
    def from_trainer(
        cls,
        trainer: Any,
        *,
        model_name: str | None = None,
        dataset: str | None = None,
        finetuned_from: str | None = None,
        license: str | None = None,
        secrets: Iterable[str | None] = (),
    ) -> InfoNCCardData:
        """Collect the card's facts from an :class:`~hf_infonc.trainer.InfoNCTrainer` (any workflow:
        ``trainer.create_model_card()`` and ``trainer.push_to_hub()`` call this): the model and its
        family, the non-default training arguments (secrets redacted), the loss weights, the last
        evaluation's metrics and the training summary of ``trainer.state.log_history``."""
        args = trainer.args
        folder = Path(args.output_dir)
        secrets = known_secrets([*secrets, getattr(args, "hub_token", None)])
        core = trainer.accelerator.unwrap_model(trainer.model)
        family, training_mode, base = trainer_model_family(core, trainer.adapter)
        name_or_path = getattr(base, "name_or_path", None) or getattr(getattr(base, "config", None), "_name_or_path", None)
        base_config = None
        if not name_or_path and getattr(base, "config", None) is not None:
            base_config = redact(base.config.to_diff_dict(), secrets)
        repo_id = getattr(trainer, "hub_model_id", None) or args.hub_model_id
        values, defaults = args.to_dict(), type(args)(output_dir=args.output_dir, use_cpu=args.use_cpu).to_dict()
        training = {k: v for k, v in values.items() if k != "output_dir" and v != defaults.get(k)}
        training = redact(json.loads(json.dumps(training, default=str)), secrets)
        history = list(getattr(trainer.state, "log_history", []) or [])
        evaluation = next((e for e in reversed(history) if "eval_runtime" in e or "eval_loss" in e), {})
        train_summary = next((e for e in reversed(history) if "train_runtime" in e), {})
        class_names = [str(c) for c in (trainer.class_names or _config_class_names(base))]
        lora = None
        if training_mode == "lora":
            peft_config = next(iter(core.peft_config.values()))
            targets = peft_config.target_modules
            lora = {
                "r": peft_config.r, "alpha": peft_config.lora_alpha, "dropout": peft_config.lora_dropout,
                "target_modules": sorted(targets) if isinstance(targets, (set, list, tuple)) else targets,
            }
        coop = None
        if training_mode == "coop":
            coop = {"n_ctx": getattr(core.config, "n_ctx", None), "init": getattr(core.config, "ctx_init", None)}
        files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []
        files = [f for f in files if not f.startswith("checkpoint-")]
        dataset_name = dataset or getattr(getattr(trainer.train_dataset, "info", None), "dataset_name", None)
        return cls(
            model_name=model_name or (repo_id.split("/")[-1] if repo_id else folder.resolve().name or "model"),
            model_ref=repo_id or str(folder),
            family=family,
            training_mode=training_mode,
            base_model_name=finetuned_from or name_or_path or None,
            base_model=hub_model_id(finetuned_from or name_or_path),
            base_model_config=base_config,
            repo_id=repo_id,
            license=license or "apache-2.0",
            dataset=DatasetInfo(
                source=dataset_name or "training data", name=dataset_name or "the training data",
                hub_id=hub_model_id(dataset) if dataset else None, eval_split="evaluation set",
            ),
            class_names=class_names,
            prompt_templates=list(args.class_prompt_templates or []),
            recipe={"training": training},
            source="trainer",
            loss_weights={k: float(getattr(args, k)) for k in ("cma_weight", "mi_weight", "entropy_gap_weight")},
            info_options={
                "info_normalized": bool(args.info_normalized),
                "info_alpha": float(args.info_alpha),
                "info_center": bool(args.info_center),
            },
            hyperparameters={k: values[k] for k in HYPERPARAMETER_KEYS if k in values},
            lora=lora,
            coop=coop,
            metrics_after=_strip_metrics(evaluation, "eval"),
            train_metrics=dict(train_summary),
            seed=args.seed,
            wall_time_s=train_summary.get("train_runtime"),
            num_processes=args.world_size,
            plots=[f for f in files if f.lower().endswith(".png")],
            files=files,
            versions=_versions(family, training_mode),
        )

    # ------------------------------------------------------------------ derived facts
    @property
    def eval_only(self) -> bool:
        return not self.metrics_after and not self.train_metrics

    @property
    def final_metrics(self) -> dict[str, Any]:
        return self.metrics_after or self.metrics_before

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
    def has_processor(self) -> bool:
        """A saved processor or image processor (``processor_config.json`` holds a ``CLIPProcessor``'s)."""
        return "preprocessor_config.json" in self.files or "processor_config.json" in self.files

    @property
    def has_saved_base(self) -> bool:
        """A LoRA folder that holds its base model too (``config.json`` + ``base_model.safetensors``): a base
        that nothing else could load, saved by :func:`hf_infonc.modes.save_base_model`."""
        return self.training_mode == "lora" and "config.json" in self.files

    @property
    def load_kind(self) -> str:
        return self.training_mode if self.training_mode in ("lora", "coop", "linear_probe") else self.family

    @property
    def task_type(self) -> str:
        return "text-classification" if self.family == "sequence-classification" else "image-classification"

    @property
    def pipeline_tag(self) -> str:
        if self.is_clip and self.training_mode in ("full", "lora"):
            return "zero-shot-image-classification"
        return self.task_type

    @property
    def library_name(self) -> str:
        """The library that loads the files: peft for a LoRA adapter, hf_infonc for its own CLIP heads
        (CoOp, linear probe) and for an open_clip folder without open_clip's layout, else the family's."""
        if self.training_mode == "lora":
            return "peft"
        if self.is_clip and self.training_mode in ("coop", "linear_probe"):
            return "hf_infonc"
        if self.family == "open-clip":
            return "open_clip" if self.has_open_clip_export else "hf_infonc"
        return "transformers"

    @property
    def hf_infonc_wrapper(self) -> str | None:
        """The hf_infonc class needed to load the model, if transformers/open_clip/peft cannot alone."""
        if self.is_clip and self.training_mode == "coop":
            return "CoOpCLIP"
        if self.is_clip and self.training_mode == "linear_probe":
            return "CLIPLinearProbe"
        if self.family == "open-clip" and (self.training_mode == "lora" or not self.has_open_clip_export):
            return "OpenCLIPModel"  # a LoRA adapter's base is an OpenCLIPModel
        if (self.base_model_config or {}).get("model_type") == "wide_resnet":
            return "WideResNetForImageClassification"
        return None

    @property
    def tags(self) -> list[str]:
        tags = ["hf_infonc", "neural-collapse", "matrix-entropy", "mutual-information"]
        tags += {
            "hf-clip": ["clip", "transformers"],
            "open-clip": ["clip", "open_clip"],
            "sequence-classification": ["text-classification", "transformers"],
            "image-classification": ["image-classification", "transformers"],
        }.get(self.family, [])
        tags += {"lora": ["lora", "peft"], "coop": ["coop", "prompt-learning"], "linear_probe": ["linear-probe"]}.get(
            self.training_mode, []
        )
        w = self.loss_weights
        if w.get("cma_weight"):
            tags.append("cma-loss")
        if w.get("mi_weight"):
            tags.append("mutual-information-loss")
        if w.get("entropy_gap_weight"):
            tags.append("entropy-gap-loss")
        tags += ["arxiv:2409.16767", "arxiv:2406.03999"]
        return list(dict.fromkeys(tags))

    def eval_results(self):
        """The final metrics as :class:`huggingface_hub.EvalResult` entries (finite values only)."""
        from huggingface_hub import EvalResult

        labels = dict(METRIC_LABELS)
        dataset = self.dataset or DatasetInfo("unknown", "unknown")
        results = []
        for key in EVAL_RESULT_KEYS:
            value = self.final_metrics.get(key)
            if not _finite(value):
                continue
            results.append(
                EvalResult(
                    task_type=self.task_type,
                    task_name=self.task_type.replace("-", " ").capitalize(),
                    dataset_type=dataset.hub_id or dataset.source,
                    dataset_name=dataset.name,
                    dataset_config=dataset.config_name,
                    dataset_split=dataset.eval_split,
                    metric_type=key,
                    metric_value=round(float(value), 6),
                    metric_name=labels.get(key, key),
                )
            )
        return results

    def to_card_data(self):
        """The Hub metadata (YAML front matter) of the card."""
        from huggingface_hub import ModelCardData

        extra: dict[str, Any] = {}
        if self.base_model and not self.built_from_config:
            extra["base_model_relation"] = "adapter" if self.training_mode == "lora" else "finetune"
        dataset = self.dataset
        return ModelCardData(
            license=self.license,
            base_model=self.base_model,
            datasets=[dataset.hub_id] if dataset is not None and dataset.hub_id else None,
            library_name=self.library_name,
            pipeline_tag=self.pipeline_tag,
            tags=self.tags,
            metrics=["accuracy"],
            model_name=self.model_name,
            eval_results=self.eval_results() or None,
            **extra,
        )

    # ------------------------------------------------------------------ template variables
    def _metric_table(self) -> tuple[list[str], list[dict[str, Any]]]:
        columns = [c for c, m in (("Before", self.metrics_before), ("After", self.metrics_after)) if m]
        if self.eval_only and columns:
            columns = ["Value"]
        sources = [m for m in (self.metrics_before, self.metrics_after) if m]
        keys = list(METRIC_LABELS)
        extra = sorted({k for m in sources for k in m if k.startswith("loss/")})
        keys += [(k, f"Loss component `{k[5:]}`") for k in extra]
        rows = []
        for key, label in keys:
            values = [m.get(key) for m in sources]
            if all(v is None for v in values):
                continue
            rows.append({"label": _cell(label), "cells": [_format_number(v) for v in values]})
        return columns, rows

    def _losses(self) -> tuple[str, list[dict[str, str]]]:
        w = self.loss_weights
        normalized = self.info_options.get("info_normalized", False)
        cma, mi, gap = w.get("cma_weight", 0.0), w.get("mi_weight", 0.0), w.get("entropy_gap_weight", 0.0)
        base_label = "CLIP cross-entropy over the class prompts" if self.is_clip else "cross-entropy"
        formula = f"L = (1 - {cma:g})·L_base + {cma:g}·CMA" if cma else "L = L_base"
        if mi:
            formula += f" - {mi:g}·" + ("MIR(K₁, K₂)" if normalized else "MI(K₁, K₂)")
        if gap:
            formula += f" + {gap:g}·" + ("HDR(K₁, K₂)" if normalized else "|H(K₁) - H(K₂)|")
        losses = [
            {
                "name": "L_base",
                "weight": f"{1 - cma:g}" if cma else "1",
                "description": f"the model's own loss ({base_label}).",
            },
            {
                "name": "CMA (cross-modal alignment)",
                "weight": _weight(cma),
                "description": "arXiv 2409.16767: for each class in the batch, the matrix entropy of the group formed "
                "by its samples' normalised features and its head row (text embedding), divided by log(group size); "
                "minimising it pulls a class's features and its head row toward one direction.",
            },
            {
                "name": "MIR (normalised mutual information)" if normalized else "MI (matrix mutual information)",
                "weight": _weight(mi),
                "description": "arXiv 2406.03999 §6: subtracted from the loss, so training raises the "
                + ("mutual-information ratio MI/min(H₁, H₂)" if normalized else "matrix mutual information H₁ + H₂ - H(K₁ ⊙ K₂)")
                + " between the features' Gram and the Gram of the label's head rows.",
            },
            {
                "name": "HDR (entropy difference ratio)" if normalized else "Entropy gap |ΔH|",
                "weight": _weight(gap),
                "description": "arXiv 2406.03999 §6: added to the loss, so training closes the gap between the matrix "
                "entropies of the features and of the head rows"
                + (" (|H₁ - H₂| / max(H₁, H₂))." if normalized else " (|H₁ - H₂|, nats)."),
            },
        ]
        return formula, [{k: _cell(v) for k, v in loss.items()} for loss in losses]

    def template_vars(self) -> dict[str, Any]:
        """The variables of ``hf_infonc/model_cards/model_card.md.j2`` (besides ``card_data``)."""
        dataset = self.dataset or DatasetInfo("unknown", "unknown")
        base_ref = self.base_model or self.base_model_name
        towers_md = ", ".join(
            f"{tower} tower [{ref}](https://huggingface.co/{ref})" if hub_model_id(ref) == ref and not Path(ref).exists()
            else f"{tower} tower `{ref}`"
            for tower, ref in self.pretrained_towers.items()
        )
        config_md = "the config in the recipe (`model.config`)" if self.source == "recipe" else "a config"
        if self.built_from_config and self.pretrained_towers:
            base_md = f"built from {config_md}: pretrained {towers_md}; the rest randomly initialised"
        elif self.base_model:
            base_md = f"[{self.base_model}](https://huggingface.co/{self.base_model})"
            if self.family == "open-clip" and self.base_model_name:
                base_md += f" (open_clip `{self.base_model_name}`" + (f", `{self.pretrained}`)" if self.pretrained else ")")
        elif self.built_from_config:
            base_md = f"none: built from {config_md}, random initialisation"
        elif self.base_model_name:
            base_md = f"`{self.base_model_name}`" + (f" (pretrained `{self.pretrained}`)" if self.pretrained else "")
        else:
            base_md = "unknown"
        if dataset.hub_id:
            dataset_md = f"[{dataset.hub_id}](https://huggingface.co/datasets/{dataset.hub_id})"
            if dataset.config_name:
                dataset_md += f" (config `{dataset.config_name}`)"
            dataset_md += f", hf_infonc source `{dataset.source}`"
        else:
            dataset_md = f"`{dataset.source}` (hf_infonc data source; not a Hub dataset)"
        notes = []
        settings = self.data_settings
        if settings.get("shots"):
            notes.append(f"{settings['shots']} training examples per class (few-shot, data seed {settings.get('seed', 0)})")
        if settings.get("max_train_samples"):
            notes.append(f"at most {settings['max_train_samples']} training examples")
        if settings.get("validation_size"):
            notes.append(f"{settings['validation_size']:g} of the training split held out for validation")
        names = self.class_names
        shown = ", ".join(f"`{n}`" for n in names[:20]) + (f", … ({len(names)} in all)" if len(names) > 20 else "")
        templates = self.prompt_templates
        template = templates[0] if templates else "a photo of a {}."
        uses_named = "{c}" in template
        prompt_expr = f"{template!r}.format(c=name)" if uses_named else f"{template!r}.format(name)"
        first_prompt = template.format(names[0], c=names[0]) if names else template.format("cat", c="cat")
        formula, losses = self._losses()
        columns, rows = self._metric_table()
        options = []
        if any(self.loss_weights.values()):
            info = self.info_options
            options.append("normalised forms (MIR/HDR)" if info["info_normalized"] else "un-normalised forms (MI, |ΔH|)")
            options.append("von Neumann entropy" if info["info_alpha"] == 1.0 else f"Rényi entropy of order {info['info_alpha']:g}")
            if info["info_center"]:
                options.append("features centred before the Gram")
        if self.family == "open-clip" and self.base_model_config is not None:
            base_ref_py = "model_cfg  # the open_clip config in the recipe (model.config)"
        else:
            base_ref_py = json.dumps(self.base_model_name or "ViT-B-32")
        task_use = {
            "hf-clip": "image classification (zero-shot style, with class prompts) and image/text embeddings",
            "open-clip": "image classification (zero-shot style, with class prompts) and image/text embeddings",
            "sequence-classification": "text classification",
            "image-classification": "image classification",
        }[self.family]
        from_base = bool(self.base_model or self.base_model_name) and not self.built_from_config
        if from_base:
            subject = ("An evaluation of " if self.eval_only else "A fine-tuned version of ") + base_md
        else:
            label = FAMILY_LABELS.get(self.family, self.family)
            article = "an" if label[:1].lower() in "aeiou" else "a"
            subject = ("An evaluation of " if self.eval_only else "") + f"{article} {label}"
            built = f" built from a config (pretrained {towers_md}, the rest randomly initialised)" if towers_md else " built from a config (random initialisation)"
            subject += built + ("" if self.eval_only else " and trained")
            subject = subject[:1].upper() + subject[1:]
        active = [n for n, k in (("CMA", "cma_weight"), ("MI", "mi_weight"), ("entropy-gap", "entropy_gap_weight")) if self.loss_weights.get(k)]
        loss_phrase = ""
        if active and not self.eval_only:
            loss_phrase = " with the " + " + ".join(active) + " information loss" + ("es" if len(active) > 1 else "")
        summary = f"{subject} on {dataset.name} ({len(names)} classes), training mode `{self.training_mode}`{loss_phrase}."
        extra_citations = [EXTRA_CITATIONS["neural_collapse"]]
        if self.training_mode in ("coop", "lora"):
            extra_citations.append(EXTRA_CITATIONS[self.training_mode])
        return {
            "model_name": self.model_name,
            "summary": summary,
            "model_ref": self.model_ref,
            "repo_id": self.repo_id,
            "family": self.family,
            "family_label": FAMILY_LABELS.get(self.family, self.family),
            "training_mode": self.training_mode,
            "mode_description": MODE_DESCRIPTIONS.get(self.training_mode, self.training_mode)
            + (", except the frozen parameters below" if self.frozen and self.training_mode == "full" else ""),
            "base_model": self.base_model,
            "base_model_md": base_md,
            "base_ref": base_ref or "<base model>",
            "base_ref_py": base_ref_py,
            "pretrained": self.pretrained if self.pretrained and not Path(self.pretrained).exists() else None,
            "built_from_config": self.built_from_config,
            "pretrained_towers": self.pretrained_towers,
            "frozen_md": ", ".join(f"`{p}`" for p in self.frozen),
            "lora": self.lora,
            "coop": {**self.coop, "init": f"from `{self.coop['init']}`" if self.coop["init"] else "randomly (N(0, 0.02²))"} if self.coop else None,
            "num_classes": len(names),
            "class_names_md": shown,
            "class_names_py": repr(names),
            "prompt_templates": templates if self.is_clip else [],
            "prompt_templates_md": ", ".join(f"`{t}`" for t in templates[:3]) + (f" and {len(templates) - 3} more" if len(templates) > 3 else ""),
            "prompt_expr": prompt_expr,
            "first_prompt": first_prompt.replace('"', "'"),
            "dataset_md": dataset_md,
            "dataset_description": dataset.description,
            "eval_split": dataset.eval_split,
            "max_eval_samples": settings.get("max_eval_samples"),
            "data_notes": "; ".join(notes),
            "eval_only": self.eval_only,
            "loss_formula": formula,
            "losses": losses,
            "info_options": ", ".join(options),
            "hyperparameters": [
                (k, _cell(f"{v:g}" if isinstance(v, float) else _format_number(v))) for k, v in self.hyperparameters.items()
            ],
            "train_summary": ", ".join(
                text for key, text in (
                    ("train_loss", "mean training loss {:.4f}"), ("epoch", "{:.3g} epochs"), ("train_runtime", "{:.1f} s of training"),
                ) if _finite(self.train_metrics.get(key)) for text in [text.format(float(self.train_metrics[key]))]
            ),
            "seed": self.seed,
            "num_processes": self.num_processes,
            "wall_time_s": self.wall_time_s,
            "recipe_yaml": yaml.safe_dump(self.recipe, sort_keys=False).rstrip("\n"),
            "recipe_heading": "Recipe" if self.source == "recipe" else "Training arguments",
            "recipe_intro": (
                "The full recipe (`hf-infonc finetune recipe.yaml` reproduces the run; secrets are redacted):"
                if self.source == "recipe"
                else "Trained with `hf_infonc.InfoNCTrainer`; the training arguments that differ from their defaults "
                "(secrets redacted):"
            ),
            "metric_columns": columns,
            "has_nc": any(k in m for m in (self.metrics_before, self.metrics_after) for k in ("nc1", "nc2", "nc3", "nc4")),
            "metric_rows": rows,
            "has_undefined": any(cell == UNDEFINED for row in rows for cell in row["cells"]),
            "collapse_note": _collapse_note(len(names)) if any(k in self.final_metrics for k in ("mir", "class_mir")) else None,
            "plots": [{"file": p, "title": _plot_title(Path(p).stem)} for p in self.plots],
            "load_kind": self.load_kind,
            "semi_supervised": self.semi_supervised,
            "needs_hf_infonc_models": (self.base_model_config or {}).get("model_type") == "wide_resnet",
            "has_processor": self.has_processor,
            "has_open_clip_export": self.has_open_clip_export,
            "has_saved_base": self.has_saved_base,
            "open_clip_ref": f"hf-hub:{self.repo_id}" if self.repo_id else f"local-dir:{self.model_ref}",
            "is_clip": self.is_clip,
            "hf_infonc_wrapper": self.hf_infonc_wrapper,
            "task_use": task_use,
            "versions": self.versions,
            "extra_citations": extra_citations,
        }


# ---------------------------------------------------------------------------- rendering


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
        loader=jinja2.FileSystemLoader(str(path.parent)),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
    )
    text = env.get_template(path.name).render(
        card_data=card_data.to_card_data().to_yaml(), **card_data.template_vars()
    )
    text = re.sub(r"\n{3,}", "\n\n", text)
    return ModelCard(redact_text(text))


def write_model_card(
    output_dir: str | os.PathLike,
    recipe: Any,
    results: Mapping[str, Any] | None,
    *,
    repo_id: str | None = None,
    template: str | os.PathLike | None = None,
    clean: bool = True,
    secrets: Iterable[str | None] = (),
) -> Path:
    """Render the model card of a finished run into ``output_dir/README.md``; return its path.

    Args:
        output_dir: the run's output directory (model, processor, ``metrics.json``, plots).
        recipe: the :class:`~hf_infonc.recipe.Recipe` of the run.
        results: the dictionary :func:`~hf_infonc.finetune.run_recipe` writes to ``metrics.json``
            (``before``, ``after``, ``train``, ``seed``, ``class_names``, ``wall_time_s``, ``num_processes``).
        repo_id: the Hub repo the card will live in (default ``recipe.hub.repo_id``); the load
            snippets refer to it, else to the local folder.
        template: another Jinja template (default :func:`template_path`).
        clean: first apply :func:`clean_output_dir` (remove the pickled ``training_args.bin``,
            redact secrets from ``recipe.yaml``/``metrics.json``).
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


def validate_model_card(card: Any) -> list[str]:
    """Offline checks of a card's metadata; returns the problems found (empty: none).

    The Hub's own validator (``ModelCard.validate``) needs the network; this checks what can be
    checked here: the YAML parses into :class:`~huggingface_hub.ModelCardData` without errors
    (``model-index`` included), the license is a Hub license id, ``base_model`` and ``datasets`` are
    valid repo ids, evaluation values are finite numbers, and no known token appears in the text.
    """
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
    tags = data.tags or []
    if not all(isinstance(t, str) for t in tags):
        problems.append("tags must be strings")
    if data.library_name is not None and not isinstance(data.library_name, str):
        problems.append("library_name must be a string")
    if data.pipeline_tag is not None and data.pipeline_tag not in PIPELINE_TAGS:
        problems.append(f"pipeline_tag {data.pipeline_tag!r} is not one this project expects ({sorted(PIPELINE_TAGS)})")
    for result in data.eval_results or []:
        if not _finite(result.metric_value):
            problems.append(f"eval result {result.metric_type}: value {result.metric_value!r} is not a finite number")
    text = str(card)
    if redact_text(text) != text:
        problems.append("the card contains a token")
    return problems


# ---------------------------------------------------------------------------- pushing


@dataclass
class UploadPlan:
    """What :func:`push_output_dir` would upload from a folder, and what it leaves out."""

    files: list[str]
    skipped: list[str]
    allow_patterns: list[str]
    ignore_patterns: list[str]


def plan_upload(output_dir: str | os.PathLike) -> UploadPlan:
    """The files of ``output_dir`` that match :data:`UPLOAD_ALLOW_PATTERNS` and no ignore pattern
    (the same filter ``HfApi.upload_folder`` applies)."""
    from huggingface_hub.utils import filter_repo_objects

    try:
        from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS
    except ImportError:  # pragma: no cover
        DEFAULT_IGNORE_PATTERNS = [".git", ".git/*", "*/.git", "**/.git/**"]
    folder = Path(output_dir)
    everything = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    allow = list(UPLOAD_ALLOW_PATTERNS)
    ignore = list(UPLOAD_IGNORE_PATTERNS)
    files = list(filter_repo_objects(everything, allow_patterns=allow, ignore_patterns=ignore + list(DEFAULT_IGNORE_PATTERNS)))
    skipped = [f for f in everything if f not in set(files)]
    return UploadPlan(files, skipped, allow, ignore)


def check_output_dir(output_dir: str | os.PathLike) -> UploadPlan:
    """Check that a folder can be pushed: it holds safetensors weights and a card, and no pickled weights
    would stand in for them. Returns the upload plan."""
    folder = Path(output_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such directory. Give the output directory of a run (training.output_dir).")
    plan = plan_upload(folder)
    weights = [f for f in plan.files if f.endswith(".safetensors")]
    pickled = [
        f for f in plan.skipped
        if "/" not in f and f.endswith(PICKLE_SUFFIXES) and not TRAINER_PICKLES.match(f)
    ]
    if not weights:
        hint = (
            f" It holds pickled weights ({', '.join(pickled)}), which are never uploaded: re-save the model with "
            f"model.save_pretrained(folder) (safetensors is the default)." if pickled else ""
        )
        raise ValueError(
            f"{folder}: no *.safetensors weights to upload.{hint} A finished `hf-infonc finetune` run writes "
            f"model.safetensors (or adapter_model.safetensors for LoRA)."
        )
    if pickled:
        logger.warning("%s: not uploading pickled files %s (only safetensors weights are uploaded).", folder, pickled)
    if CARD_NAME not in plan.files:
        raise ValueError(
            f"{folder}: no {CARD_NAME} (model card). Runs of `hf-infonc finetune` write one; otherwise call "
            f"hf_infonc.card.write_model_card(folder, recipe, results) first."
        )
    return plan


def _hub_offline() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE", "").strip().lower()
    return value in ("1", "true", "yes", "on", "y", "t")


def _is_network_error(error: BaseException) -> bool:
    names = {cls.__name__ for cls in type(error).__mro__}
    network = {
        "ConnectError", "ConnectTimeout", "ReadTimeout", "TimeoutException", "NetworkError", "TransportError",
        "ProxyError", "ConnectionError", "Timeout", "OfflineModeIsEnabled",
    }
    return bool(names & network) or isinstance(error, (ConnectionError, TimeoutError))


def _explain(error: BaseException, *, repo_id: str, endpoint: str, secrets: Sequence[str]) -> str:
    detail = redact_text(f"{type(error).__name__}: {error}", secrets)
    if "OfflineModeIsEnabled" in {c.__name__ for c in type(error).__mro__}:
        return (
            f"Cannot push to {repo_id}: huggingface_hub is in offline mode ({detail}). Start a new process with "
            f"HF_HUB_OFFLINE unset (or 0) on a machine that can reach {endpoint}, then run "
            f"`hf-infonc push <output_dir> --repo-id {repo_id}`."
        )
    if _is_network_error(error):
        return (
            f"Cannot push to {repo_id}: the Hugging Face Hub at {endpoint} cannot be reached ({detail}). Check the "
            f"network, proxy (HTTPS_PROXY) or HF_ENDPOINT, then run `hf-infonc push <output_dir> --repo-id {repo_id}` "
            f"again; the output directory is complete and can be pushed later."
        )
    status = getattr(getattr(error, "response", None), "status_code", None)
    if status in (401, 403):
        return (
            f"The Hub refused the push to {repo_id} (HTTP {status}): the token is missing, invalid, or lacks write "
            f"access to this namespace. Create a write token at https://huggingface.co/settings/tokens, then "
            f"`hf auth login` (or set HF_TOKEN) and push again. ({detail})"
        )
    return f"Pushing to {repo_id} failed: {detail}"


def _call_with_timeout(fn, timeout: float, what: str):
    """Run ``fn()`` in a daemon thread; raise :class:`TimeoutError` when it has not returned after ``timeout`` s."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as error:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = error

    thread = threading.Thread(target=target, name=f"hf_infonc-{what}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"{what} did not answer within {timeout:g} s (set {HUB_TIMEOUT_ENV} to wait longer)")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _rerender_card(folder: Path, repo_id: str, secrets: Sequence[str]) -> None:
    """Re-render the card so that it names ``repo_id`` (from ``recipe.yaml`` and ``metrics.json``)."""
    recipe_file, metrics_file = folder / "recipe.yaml", folder / "metrics.json"
    if not (recipe_file.is_file() and metrics_file.is_file()):
        return
    try:
        from hf_infonc.recipe import recipe_from_dict

        recipe = recipe_from_dict(yaml.safe_load(recipe_file.read_text()), str(recipe_file))
        results = json.loads(metrics_file.read_text())
        write_model_card(folder, recipe, results, repo_id=repo_id, secrets=secrets)
    except Exception as error:  # noqa: BLE001 - the existing card is still valid
        logger.warning("%s: kept the existing model card (could not re-render it for %s: %s)", folder, repo_id, redact_text(str(error), secrets))


def push_output_dir(
    output_dir: str | os.PathLike,
    *,
    repo_id: str,
    private: bool = False,
    token: str | None = None,
    commit_message: str = "Upload model fine-tuned with hf_infonc",
    revision: str | None = None,
    endpoint: str | None = None,
    update_card: bool = True,
    timeout: float | None = None,
) -> str:
    """Upload a run's output directory to the Hub model repo ``repo_id``; return the repo URL.

    Uploads the safetensors weights (model or PEFT adapter), configs, processor/tokenizer files,
    the model card, ``recipe.yaml``, ``metrics.json`` and the plots: the allow-list
    :data:`UPLOAD_ALLOW_PATTERNS` minus :data:`UPLOAD_IGNORE_PATTERNS` (no pickles, no checkpoints).
    A LoRA adapter whose base model is saved in the folder is uploaded naming ``repo_id`` as its
    base (:func:`hub_file_set`), so the repo loads by its id in peft and transformers.

    Args:
        output_dir: a finished run's output directory.
        repo_id: ``user/name`` or ``org/name``; created if missing (``exist_ok``).
        private: create the repo private (no effect on an existing repo).
        token: a Hub token; default: ``HF_TOKEN`` or the saved login (``huggingface_hub.get_token``).
            Never logged or printed; redacted from error messages.
        update_card: first re-render ``README.md`` (from ``recipe.yaml`` and ``metrics.json``) so
            that its load snippets name ``repo_id``.
        endpoint: another Hub endpoint (default ``HF_ENDPOINT`` / huggingface.co).
        timeout: seconds to wait for the Hub to answer ``create_repo`` (default
            ``$HF_INFONC_HUB_TIMEOUT`` or 30).

    Raises:
        HubPushError: offline (``HF_HUB_OFFLINE=1``), Hub unreachable, no token, or refused.
        ValueError / FileNotFoundError: the folder is not a pushable run (no safetensors weights, no card).
    """
    from huggingface_hub import HfApi, constants
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    folder = Path(output_dir)
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise ValueError(f"--repo-id {repo_id!r} is not a valid Hub repo id ('user/name' or 'org/name'): {error}") from None
    secrets = known_secrets([token])
    endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")
    if _hub_offline():
        raise HubPushError(
            f"Cannot push {folder} to {repo_id}: HF_HUB_OFFLINE=1 is set, so the Hub cannot be reached. The output "
            f"directory is complete: on a machine with network access, run `HF_HUB_OFFLINE=0 hf-infonc push {folder} "
            f"--repo-id {repo_id}`."
        )
    check_output_dir(folder)  # before re-rendering: a folder that cannot be pushed is left untouched
    if update_card:
        _rerender_card(folder, repo_id, secrets)
    plan = check_output_dir(folder)
    token = token or _default_token()
    if not token:
        raise HubPushError(
            f"Cannot push to {repo_id}: no Hugging Face token. Log in with `hf auth login` (or "
            f"`huggingface-cli login`), set HF_TOKEN, or pass --token; the token needs write access."
        )
    secrets = known_secrets([token, *secrets])
    timeout = float(timeout if timeout is not None else os.environ.get(HUB_TIMEOUT_ENV, 30))
    api = HfApi(endpoint=endpoint, token=token)
    logger.info(
        "Pushing %d files from %s to %s (%s): %s", len(plan.files), folder, repo_id,
        "private" if private else "public", ", ".join(plan.files),
    )
    try:
        repo_url = _call_with_timeout(
            lambda: api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model"), timeout, "create_repo"
        )
        with hub_file_set(folder, repo_id, plan.files) as upload_folder:
            api.upload_folder(
                repo_id=repo_id,
                folder_path=str(upload_folder),
                repo_type="model",
                commit_message=commit_message,
                revision=revision,
                allow_patterns=list(plan.allow_patterns),
                ignore_patterns=list(plan.ignore_patterns),
            )
    except Exception as error:  # noqa: BLE001 - every failure becomes one clear, token-free message
        raise HubPushError(_explain(error, repo_id=repo_id, endpoint=endpoint, secrets=secrets)) from None
    url = str(repo_url) if repo_url else f"{endpoint}/{repo_id}"
    logger.info("Pushed %s to %s", folder, url)
    return url


def _adapter_base_in(folder: Path) -> tuple[dict[str, Any], bool] | None:
    """``adapter_config.json`` of ``folder`` and whether its base model is the one saved in ``folder``."""
    config_file = folder / "adapter_config.json"
    if not config_file.is_file():
        return None
    config = json.loads(config_file.read_text())
    base = config.get("base_model_name_or_path")
    if not base or not Path(base).is_dir():
        return config, False
    if Path(base).resolve() != folder.resolve():
        logger.warning(
            "%s: adapter_config.json names the local folder %s as its base model, which is not uploaded; loading the "
            "pushed adapter will need that folder.", folder, base,
        )
        return config, False
    return config, True


@contextlib.contextmanager
def hub_file_set(output_dir: str | os.PathLike, repo_id: str, files: Sequence[str] | None = None) -> Iterator[Path]:
    """The folder whose files make the Hub repo ``repo_id``: ``output_dir`` itself, or a staged copy.

    A LoRA adapter whose base model is saved in the same folder (``base_model_name_or_path`` is
    that folder's absolute path, see :mod:`hf_infonc.modes`) must name ``repo_id`` instead once
    pushed; the staged copy holds hard links to ``files`` (default: :func:`plan_upload`'s) and an
    ``adapter_config.json`` that says ``repo_id``. The output folder itself is left as it is, so
    it still loads offline. Use it around any upload of a run's folder (``HfApi.upload_folder``).
    """
    import shutil
    import tempfile

    folder = Path(output_dir)
    adapter = _adapter_base_in(folder)
    if adapter is None or not adapter[1]:
        yield folder
        return
    config = dict(adapter[0], base_model_name_or_path=repo_id)
    files = list(plan_upload(folder).files if files is None else files)
    try:
        staging = tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{folder.name}.hub-")
    except OSError:  # a read-only parent: copies in the system's temporary folder
        staging = tempfile.TemporaryDirectory(prefix="hf_infonc-hub-")
    with staging as staged:
        for name in files:
            target = Path(staged) / name
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(folder / name, target)
            except OSError:
                shutil.copyfile(folder / name, target)
        rewritten = Path(staged) / "adapter_config.json"
        rewritten.unlink(missing_ok=True)  # a hard link: writing through it would change the output folder's file
        rewritten.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        yield Path(staged)


def _default_token() -> str | None:
    try:
        from huggingface_hub import get_token

        return get_token()
    except Exception:  # noqa: BLE001
        return None


__all__ = [
    "CARD_NAME",
    "HubPushError",
    "InfoNCCardData",
    "UPLOAD_ALLOW_PATTERNS",
    "UPLOAD_IGNORE_PATTERNS",
    "UploadPlan",
    "check_output_dir",
    "clean_output_dir",
    "dataset_info",
    "format_number",
    "hub_file_set",
    "hub_model_id",
    "is_secret_key",
    "known_secrets",
    "plan_upload",
    "push_output_dir",
    "redact",
    "redact_text",
    "render_model_card",
    "template_path",
    "validate_model_card",
    "write_model_card",
]
