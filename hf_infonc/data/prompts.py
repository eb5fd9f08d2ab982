"""Class names and CLIP prompt templates: a CLIP head is the average over templates of the normalised text
embeddings of ``template.format(name)`` (prompt ensembling, Radford et al. 2021 §3.1.4; docs/theory.md §2.4).
ImageNet names and templates come from ``open_clip.zero_shot_metadata``, imported lazily (it is slow)."""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence

from hf_infonc.errors import DataError

DEFAULT_TEMPLATES: list[str] = ["a photo of a {}."]
"""The single template used by default (CLIP, CoOp's initialisation)."""

MNIST_TEMPLATES: list[str] = ['a photo of the number: "{}".']
"""CLIP's prompt for MNIST-style digit data."""

DIGIT_CLASSNAMES: list[str] = [str(i) for i in range(10)]

CIFAR10_CLASSNAMES: list[str] = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip

STL10_CLASSNAMES: list[str] = [
    "airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck",
]  # fmt: skip

# CIFAR-100 fine labels in label-index order (alphabetical, as on the Hub), underscores written as spaces for prompts.
CIFAR100_CLASSNAMES: list[str] = [
    "apple", "aquarium fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle", "bowl", "boy",
    "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock",
    "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish",
    "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple tree", "motorcycle", "mountain", "mouse", "mushroom", "oak tree", "orange",
    "orchid", "otter", "palm tree", "pear", "pickup truck", "pine tree", "plain", "plate", "poppy", "porcupine",
    "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk",
    "skyscraper", "snail", "snake", "spider", "squirrel", "streetcar", "sunflower", "sweet pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale",
    "willow tree", "wolf", "woman", "worm",
]  # fmt: skip

# Fashion-MNIST's official class names (Xiao, Rasul & Vollgraf 2017), label-index order.
FASHION_MNIST_CLASSNAMES: list[str] = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip

# modeldata::small_fine_foods: the outcome is whether the reviewer gave 5 stars ("great") or
# not ("other"); index 1 is the positive class.
AMAZON_REVIEWS_CLASSNAMES: list[str] = ["other", "great"]


def _templates_from_open_clip(attribute: str) -> list[str]:
    from open_clip import zero_shot_metadata

    # open_clip stores templates as lambdas `lambda c: f"... {c}."`; calling them with "{}"
    # turns them back into str.format templates without retyping them.
    return [template("{}") for template in getattr(zero_shot_metadata, attribute)]


def imagenet_classnames() -> list[str]:
    """The 1000 ImageNet class names used by CLIP's zero-shot evaluation (from open_clip)."""
    from open_clip import zero_shot_metadata

    return list(zero_shot_metadata.IMAGENET_CLASSNAMES)


TEMPLATE_SETS: dict[str, Callable[[], list[str]]] = {
    "default": lambda: list(DEFAULT_TEMPLATES),
    "openai_imagenet": lambda: _templates_from_open_clip("OPENAI_IMAGENET_TEMPLATES"),
    "simple_imagenet": lambda: _templates_from_open_clip("SIMPLE_IMAGENET_TEMPLATES"),
    "mnist": lambda: list(MNIST_TEMPLATES),
}
"""Named template sets, usable as ``prompt_templates: openai_imagenet`` in a recipe."""


def validate_template(template: object, where: str = "prompt template") -> str:
    """``template`` if it is a string with exactly one ``{}`` or ``{c}`` placeholder (literal braces doubled);
    else a :class:`DataError` (``TypeError`` for a non-string)."""
    if not isinstance(template, str):
        raise TypeError(f"{where}: a template must be a string, got {type(template).__name__} {template!r}.")
    try:
        fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(template) if name is not None]
    except ValueError as err:
        raise DataError(
            f"{where}: template {template!r} has unbalanced braces ({err}). Write the class-name "
            f"placeholder as {{}} and literal braces as {{{{ and }}}}."
        ) from None
    if len(fields) != 1:
        raise DataError(
            f"{where}: template {template!r} has {len(fields)} placeholders; it needs exactly one, "
            f"{{}} or {{c}}, where the class name goes. Example: 'a photo of a {{}}.'"
        )
    name, spec, conversion = fields[0]
    if name not in ("", "c") or spec or conversion:
        raise DataError(
            f"{where}: template {template!r} uses the placeholder {{{name}{'!' + conversion if conversion else ''}"
            f"{':' + spec if spec else ''}}}; only {{}} or {{c}} is allowed. Example: 'a photo of a {{}}.'"
        )
    return template


def get_templates(templates: str | Sequence[str] | None = None) -> list[str]:
    """The validated templates of a set name (:data:`TEMPLATE_SETS`), a template or a list (``None``: the default)."""
    if templates is None:
        return list(DEFAULT_TEMPLATES)
    if isinstance(templates, str):
        if templates in TEMPLATE_SETS:
            return TEMPLATE_SETS[templates]()
        # A single template string is accepted for convenience.
        if "{" in templates:
            return [validate_template(templates)]
        raise DataError(
            f"Unknown prompt template set {templates!r}. Known sets: {sorted(TEMPLATE_SETS)}; "
            f"or pass a list of templates such as ['a photo of a {{}}.']."
        )
    templates = list(templates)
    if not templates:
        raise DataError("The list of prompt templates is empty; give at least one, e.g. ['a photo of a {}.'].")
    return [validate_template(t) for t in templates]


def format_prompts(class_names: Sequence[str], templates: str | Sequence[str] | None = None) -> list[list[str]]:
    """Prompts per class and per template: ``out[c][t] = templates[t].format(class_names[c])``.

    >>> format_prompts(["cat", "dog"], ["a photo of a {}.", "a {c} toy."])
    [['a photo of a cat.', 'a cat toy.'], ['a photo of a dog.', 'a dog toy.']]
    """
    if isinstance(class_names, str) or not len(class_names):
        raise DataError(f"class_names must be a non-empty list of strings, got {class_names!r}.")
    resolved = get_templates(templates)
    # Exactly one of {} / {c} is present (validated), so passing both forms is safe.
    return [[t.format(str(name), c=str(name)) for t in resolved] for name in class_names]
