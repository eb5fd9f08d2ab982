"""YAML recipes mapped onto typed, validated dataclasses (the format: docs/recipes.md).

Sections ``model``, ``data``, ``training`` (any :class:`~hf_infonc.training_args.InfoNCTrainingArguments` field),
``hub``, ``analysis``, ``ssl`` and ``seed``. Unknown keys name the nearest valid key; values are converted to the
field's type or rejected; overrides use dotted keys (``--set training.learning_rate=3e-5``).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import difflib
import enum
import shlex
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from hf_infonc.data.config import DataConfig
from hf_infonc.errors import UserError
from hf_infonc.mode_settings import DEFAULT_TRAINING_MODE, HEAD_ONLY_MODES, CoOpSettings, LoraSettings, TrainingMode
from hf_infonc.secrets import REDACTED, is_secret_key, redact, redact_text

Family = Literal["hf-clip", "open-clip", "sequence-classification", "image-classification"]
CLIP_FAMILIES: tuple[str, ...] = ("hf-clip", "open-clip")


class RecipeError(UserError):
    """A recipe that cannot be used; the message names the file and the key (never a secret's value)."""


@dataclass
class ModelRecipe:
    """Which model, how it is built and which parameters train."""

    family: Family
    name_or_path: str | None = None
    """Hub id or local directory (``from_pretrained``); for open-clip, an open_clip model name."""
    config: dict[str, Any] | None = None
    """Build from this config (``CLIPConfig``/``AutoConfig`` kwargs, an open_clip config), randomly initialised."""
    tokenizer: str | None = None
    """Tokenizer name or path when it differs from ``name_or_path`` (required with ``config``)."""
    pretrained: str | None = None
    """open-clip only: a pretrained tag (e.g. ``laion2b_s34b_b79k``) or a local checkpoint file."""
    training_mode: TrainingMode = DEFAULT_TRAINING_MODE
    """``linear_probe`` and ``coop``: CLIP only (:mod:`hf_infonc.modes`)."""
    lora: LoraSettings = field(default_factory=LoraSettings)
    coop: CoOpSettings = field(default_factory=CoOpSettings)
    freeze: list[str] = field(default_factory=list)
    """Parameter-name prefixes frozen after the training mode is applied; each must match a parameter."""


@dataclass
class HubRecipe:
    """Publishing to the Hugging Face Hub."""

    push_to_hub: bool = False
    repo_id: str | None = None
    private: bool = False
    license: str = "apache-2.0"


@dataclass
class AnalysisRecipe:
    """Information dynamics during training."""

    info_dynamics: bool = False
    """Log H, MIR, HDR and NC1–NC4 at every evaluation and plot them at the end."""


@dataclass
class Recipe:
    """A whole recipe. ``training`` holds the InfoNCTrainingArguments keyword arguments."""

    model: ModelRecipe
    data: DataConfig
    training: dict[str, Any] = field(default_factory=dict)
    hub: HubRecipe = field(default_factory=HubRecipe)
    analysis: AnalysisRecipe = field(default_factory=AnalysisRecipe)
    ssl: Any = None
    """The ``ssl:`` section, a :class:`hf_infonc.semi_supervised.SemiSupervisedConfig`: FixMatch / FreeMatch."""
    seed: int = 0
    path: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def output_dir(self) -> str:
        return str(self.training["output_dir"])

    def where(self, key: str) -> str:
        """``<recipe file>: <key>``, how a message about ``key`` starts."""
        return _where(self.path, key)

    def training_arguments(self, **overrides: Any):
        """Build :class:`InfoNCTrainingArguments` (seed, prompt templates); an error becomes a :class:`RecipeError`."""
        from hf_infonc.data.prompts import get_templates
        from hf_infonc.training_args import InfoNCTrainingArguments

        # the collators build the model inputs from the data's own columns (image, text, label)
        values = {"seed": self.seed, "remove_unused_columns": False, **self.training, **overrides}
        if "class_prompt_templates" not in self.training:
            values["class_prompt_templates"] = get_templates(self.data.prompt_templates)
        try:
            return InfoNCTrainingArguments(**values)
        except (ValueError, TypeError, ImportError) as error:
            message = redact_text(str(error).strip(), self.secrets())
            message += "" if message.endswith((".", "!", "?")) else "."
            key = _blamed_key(message, self.training)
            raise RecipeError(
                f"{self.where('training.' + key if key else 'training')}: TrainingArguments refuses it: {message} "
                f"Fix it in the recipe or with --set training.{key or '<key>'}=<value>."
            ) from None

    def secrets(self) -> list[str]:
        """Secret values given in the recipe (``training.hub_token``), to redact wherever they could appear."""
        token = self.training.get("hub_token")
        return [token] if isinstance(token, str) and token else []

    def to_yaml(self, *, redact_secrets: bool = True) -> str:
        """The recipe as given (overrides applied) in YAML, secrets ``<redacted>`` unless ``redact_secrets=False``."""
        return yaml.safe_dump(redact(self.raw, self.secrets()) if redact_secrets else self.raw, sort_keys=False)


def _blamed_key(message: str, training: dict[str, Any]) -> str | None:
    """The training key a ``TrainingArguments`` error is about: the one whose value starts the message, else one
    named in it, else the longest value it quotes."""
    texts = {key: str(getattr(value, "value", value)) for key, value in training.items()}
    texts = {
        key: text for key, text in texts.items() if len(text) >= 2 and not isinstance(training[key], (bool, dict, list))
    }
    starting = [key for key, text in texts.items() if message.startswith(text + " ")]
    named = [key for key in training if key in message]
    quoted = sorted((key for key, text in texts.items() if text in message), key=lambda k: -len(texts[k]))
    return next(iter(starting + named + quoted), None)


# ---------------------------------------------------------------------------- conversion


def _where(file: str | None, key: str) -> str:
    return f"{file or '<recipe>'}: {key}"


def _shown(value: Any, key: str) -> str:
    """``repr(value)`` for a message; never the value of a secret key, and token values redacted."""
    if is_secret_key(key.rsplit(".", 1)[-1].split("[", 1)[0]):
        return "<redacted>"
    return redact_text(repr(value))


YAML_BOOL_WORDS = {False: ("no", "off", "false", "n"), True: ("yes", "on", "true", "y")}
"""The words YAML 1.1 reads as booleans: an unquoted ``no`` arrives as ``False`` (``eval_strategy: no``)."""


def _quote_hint(value: Any, key: str) -> str:
    if not isinstance(value, bool):
        return ""
    return (
        f" YAML reads an unquoted {' or '.join(YAML_BOOL_WORDS[value][:2])} as {str(value).lower()}: quote the word, "
        f"e.g. {key.rsplit('.', 1)[-1]}: \"{YAML_BOOL_WORDS[value][0]}\"."
    )


def _expected(what: str, value: Any, key: str, file: str | None, hint: str = "") -> RecipeError:
    return RecipeError(f"{_where(file, key)}: expected {what}, got {_shown(value, key)}.{hint}")


def convert(value: Any, tp: Any, key: str, file: str | None) -> Any:
    """Convert a YAML value to the annotated type ``tp`` or raise a :class:`RecipeError`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in [a for a in args if a is not type(None)]:
            with contextlib.suppress(RecipeError):
                return convert(value, option, key, file)
        names = " or ".join(getattr(a, "__name__", None) or str(a).replace("typing.", "") for a in args)
        raise _expected(names, value, key, file, _quote_hint(value, key))
    is_enum = isinstance(tp, type) and issubclass(tp, enum.Enum)
    if origin is Literal or is_enum:
        choices = [e.value for e in tp] if is_enum else list(args)
        if isinstance(value, bool) and value not in choices:  # `eval_strategy: no` → the word "no", when a choice
            value = next((w for w in YAML_BOOL_WORDS[value] if w in choices), value)
        if value in choices:
            return tp(value) if is_enum else value
        close = difflib.get_close_matches(value, choices, n=1, cutoff=0.6) if isinstance(value, str) else []
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise RecipeError(f"{_where(file, key)}: {_shown(value, key)} is not one of {choices}.{hint}")
    if origin in (list, tuple) or tp in (list, tuple):
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise _expected("a list", value, key, file)
        inner = args[0] if args else Any
        return [convert(v, inner, f"{key}[{i}]", file) for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise _expected("a mapping", value, key, file)
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return from_mapping(tp, value, key, file)
    if tp is bool:
        if isinstance(value, str) and value.lower() in YAML_BOOL_WORDS[False] + YAML_BOOL_WORDS[True]:
            return value.lower() in YAML_BOOL_WORDS[True]
        if isinstance(value, bool):
            return value
        raise _expected("true or false", value, key, file)
    if tp in (int, float):
        whole = isinstance(value, int) and not isinstance(value, bool)
        if whole or isinstance(value, float) and (tp is float or value.is_integer()):
            return tp(value)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                return tp(value)  # YAML 1.1 reads 1e-4 (no dot) as a string
        raise _expected("an integer" if tp is int else "a number", value, key, file)
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise _expected("a string", value, key, file, _quote_hint(value, key))
    return value


def _unknown_key(name: str, valid: list[str], section: str, file: str | None) -> RecipeError:
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    hint = f" Did you mean '{close[0]}'?" if close else f" Valid keys: {', '.join(sorted(valid))}."
    return RecipeError(f"{_where(file, f'{section}.{name}' if section else name)}: unknown key.{hint}")


def _converted(cls: type, mapping: Any, section: str, file: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(values, fields)``: the keys of ``mapping`` validated against the init fields of ``cls``, values converted."""
    mapping = {} if mapping is None else mapping
    if not isinstance(mapping, dict):
        raise _expected("a mapping of keys to values", mapping, section, file)
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}
    values = {}
    for name, value in mapping.items():
        if name not in known:
            raise _unknown_key(str(name), list(known), section, file)
        values[name] = convert(value, hints.get(name, Any), f"{section}.{name}" if section else name, file)
    return values, known


def from_mapping(cls: type, mapping: Any, section: str, file: str | None) -> Any:
    """Build dataclass ``cls`` from a mapping, validating keys and converting types."""
    values, known = _converted(cls, mapping, section, file)
    missing = [
        n for n, f in known.items()
        if n not in values and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        where = _where(file, f"{section}.{missing[0]}" if section else missing[0])
        raise RecipeError(f"{where}: required key is missing.")
    try:
        return cls(**values)
    except (ValueError, TypeError) as error:  # a __post_init__ check (values are converted above)
        raise RecipeError(f"{_where(file, section)}: {error}") from error


# ---------------------------------------------------------------------------- overrides


def is_secret_override(item: str) -> bool:
    """Whether a ``--set KEY=VALUE`` item sets a secret (``training.hub_token=…``, ``*.password=…``)."""
    return is_secret_key(item.split("=", 1)[0].strip().split(".")[-1])


def shown_override(item: str, secrets: list[str | None] = ()) -> str:
    """A ``--set KEY=VALUE`` item to print or record: the value of a secret key, and every token value, redacted."""
    if "=" in item and is_secret_override(item):
        return f"{item.split('=', 1)[0]}={REDACTED}"
    return redact_text(item, secrets)


def shown_command(words: list[str], secrets: list[str | None] = ()) -> str:
    """A command line to print or record, its ``--set`` items as :func:`shown_override` shows them and every token
    value redacted (the process that runs it gets the real words)."""
    shown = [shown_override(word) if before == "--set" else word for before, word in zip(["", *words], words)]
    return redact_text(shlex.join(shown), secrets)


def apply_overrides(raw: dict[str, Any], overrides: list[str], file: str | None = None) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides (values parsed as YAML) to a raw recipe mapping."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise RecipeError(f"{file or '<recipe>'}: override {item!r} must look like section.key=value.")
        dotted, text = item.split("=", 1)
        parts = [p for p in dotted.strip().split(".") if p]
        if not parts:
            raise RecipeError(f"{file or '<recipe>'}: override {item!r} has an empty key.")
        node = raw
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise RecipeError(f"{_where(file, dotted)}: {part} is not a section.")
            node = child
        node[parts[-1]] = _override_value(text, dotted.strip(), file)
    return raw


def _override_value(text: str, key: str, file: str | None) -> Any:
    """The value of ``--set key=text``, parsed as YAML; a bare ``no``/``yes``/``on``/``off`` stays that word (boolean
    fields still read it as one, and ``training.eval_strategy=no`` keeps its meaning)."""
    if not text.strip():
        return None
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as error:
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise RecipeError(
            f"{_where(file, key)}: the value of --set {key}={_shown(text, key)} is not valid YAML ({problem}). Write a "
            f"YAML value (3e-5, true, [a, b], {{k: v}}), and quote a string that contains YAML syntax: "
            f"--set '{key}=\"...\"'."
        ) from None
    if isinstance(value, bool) and text.strip().lower() not in ("true", "false"):
        return text.strip()
    return value


# ---------------------------------------------------------------------------- loading


def check_compatibility(recipe: Recipe, file: str | None) -> None:
    """Reject combinations that cannot work, before anything is downloaded or written."""
    model = recipe.model
    if model.training_mode in HEAD_ONLY_MODES and model.family not in CLIP_FAMILIES:
        raise RecipeError(
            f"{_where(file, 'model.training_mode')}: '{model.training_mode}' needs a CLIP model (family hf-clip or "
            f"open-clip), but model.family is '{model.family}'. Use training_mode full or lora for a classifier."
        )
    if model.name_or_path is None and model.config is None:
        raise RecipeError(
            f"{_where(file, 'model')}: give name_or_path (pretrained weights) or config (build from a config)."
        )
    if model.config is not None and model.family in ("hf-clip", "sequence-classification") and not (
        model.tokenizer or model.name_or_path
    ):
        raise RecipeError(f"{_where(file, 'model.tokenizer')}: a model built from a config needs a tokenizer path.")
    if model.pretrained is not None and model.family != "open-clip":
        raise RecipeError(f"{_where(file, 'model.pretrained')}: only used with family open-clip; use name_or_path.")
    from hf_infonc.data.sources import get_source

    text_data = get_source(recipe.data.source).modality == "text" or recipe.data.text_column is not None
    if text_data and model.family != "sequence-classification":
        raise RecipeError(
            f"{_where(file, 'data.source')}: '{recipe.data.source}' is text data, but model.family is "
            f"'{model.family}'. Use family sequence-classification."
        )
    if recipe.ssl is not None and recipe.ssl.labels_per_class is None and recipe.data.shots is None:
        raise RecipeError(
            f"{_where(file, 'ssl.labels_per_class')}: semi-supervised training needs the size of the labelled "
            f"subset: set ssl.labels_per_class (e.g. 4 for CIFAR-10 with 40 labels) or data.shots."
        )
    if recipe.hub.push_to_hub and not recipe.hub.repo_id:
        raise RecipeError(f"{_where(file, 'hub.repo_id')}: push_to_hub is true but no repo_id is given.")


def recipe_from_dict(raw: dict[str, Any], file: str | None = None) -> Recipe:
    """Validate a raw mapping (already parsed YAML) into a :class:`Recipe`."""
    if not isinstance(raw, dict):
        raise RecipeError(f"{file or '<recipe>'}: a recipe must be a YAML mapping with sections model, data, training.")
    sections = {"model", "data", "training", "hub", "analysis", "ssl", "seed"}
    for name in raw:
        if name not in sections:
            raise _unknown_key(str(name), sorted(sections), "", file)
    for name in ("model", "data", "training"):
        if name not in raw:
            raise RecipeError(f"{_where(file, name)}: required section is missing.")
    from hf_infonc.semi_supervised import SemiSupervisedConfig
    from hf_infonc.training_args import INFORMATION_SETTINGS, InfoNCTrainingArguments, check_information_settings

    model = from_mapping(ModelRecipe, raw["model"], "model", file)
    data = from_mapping(DataConfig, raw["data"], "data", file)
    training, _ = _converted(InfoNCTrainingArguments, raw["training"], "training", file)
    if "output_dir" not in training:
        raise RecipeError(f"{_where(file, 'training.output_dir')}: required key is missing (where the run is written).")
    if training["output_dir"] is None or not str(training["output_dir"]).strip():
        raise RecipeError(
            f"{_where(file, 'training.output_dir')}: is empty; give the folder the run is written to, e.g. "
            f"output_dir: outputs/my-run (or --set training.output_dir=outputs/my-run)."
        )
    recipe = Recipe(
        model=model, data=data, training=training, path=file, raw=copy.deepcopy(raw),
        hub=from_mapping(HubRecipe, raw.get("hub"), "hub", file),
        analysis=from_mapping(AnalysisRecipe, raw.get("analysis"), "analysis", file),
        ssl=None if raw.get("ssl") is None else from_mapping(SemiSupervisedConfig, raw["ssl"], "ssl", file),
        seed=convert(raw.get("seed", 0), int, "seed", file),
    )
    check_compatibility(recipe, file)
    try:  # hardware-dependent checks (bf16, devices) are left to TrainingArguments at run time
        check_information_settings(**{k: recipe.training[k] for k in INFORMATION_SETTINGS if k in recipe.training})
    except ValueError as error:
        raise RecipeError(f"{_where(file, 'training')}: {error}") from error
    return recipe


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read, override and validate a YAML recipe file."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a recipe file" if path.is_dir() else "recipe file not found"
        raise RecipeError(f"{path}: {what}. Ready recipes live in recipes/ (e.g. recipes/demo.yaml).")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise RecipeError(f"{path}: not valid YAML: {error}") from error
    except UnicodeError as error:
        raise RecipeError(f"{path}: not a UTF-8 text file ({error.reason} at byte {error.start}). Save the recipe "
                          f"as UTF-8 YAML.") from error
    except OSError as error:
        raise RecipeError(f"{path}: cannot be read ({error.strerror}). Check the file's permissions.") from error
    raw = apply_overrides(raw or {}, overrides or [], str(path))
    return recipe_from_dict(raw, str(path))
