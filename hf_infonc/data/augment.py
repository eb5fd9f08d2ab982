"""Weak and strong views for semi-supervised learning (FixMatch, FreeMatch).

FixMatch (Sohn et al. 2020, arXiv 2001.07685) pseudo-labels the *weak* view of an unlabelled
example and trains the model to predict that label on its *strong* view; FreeMatch (Wang et al.
2023, arXiv 2205.07246) and the USB benchmark use the same two views.

Images (every step draws from ``torch``'s global generator, so ``torch.manual_seed`` makes the
views reproducible; all steps are picklable, for ``DataLoader(num_workers>0)``):

* **weak**: RGB → the evaluation geometry (resize, centre crop to ``image_size``) → random
  horizontal flip (optional: off for digits and text-like images) → random translation by up to
  12.5 % of each side (``RandomCrop`` with ⌊0.125·side⌋ pixels of reflect padding: 4 pixels at
  32×32, 3 at 28×28) → tensor → normalise.
* **strong**: the weak geometry → RandAugment with two operations, each with its own magnitude
  drawn uniformly from {1, …, 10} on a 0–10 scale (FixMatch's "random magnitude" variant:
  torchvision's ``RandAugment`` op set and ranges with 11 magnitude bins, so magnitude m is m/10
  of torchvision's maximum for each op; grey fill 128 for geometric ops) → tensor → normalise →
  Cutout: one square of side drawn uniformly from {1, …, ⌊0.5·min(H, W)⌋} pixels, centred at a
  uniform pixel and clipped at the border, set to 0 *after* normalisation (the dataset mean
  colour, as FixMatch's grey patch).

  torchvision's ranges differ a little from FixMatch's table (translation up to 45 % of the side
  instead of 30 %; brightness / colour / contrast / sharpness factors in [0.1, 1.9] instead of
  [0.05, 0.95]); the op set is the same (identity, auto-contrast, equalise, rotate, solarise,
  colour, posterise, contrast, brightness, sharpness, shear x/y, translate x/y) and Cutout is
  applied after it, as in FixMatch.

Both pipelines output the same normalised ``float32`` ``3 × H × W`` tensors as the evaluation
transform of :mod:`hf_infonc.data.transforms`; :func:`view_transforms_from` builds them from that
evaluation transform.

Texts (no network, no word lists: WordNet is not installed, so there are no synonym
replacements or back-translation). Words are the whitespace-separated tokens of the text
(punctuation stays attached), and a view is its kept words joined by single spaces:

* **weak**: random word dropout, each word deleted with probability ``weak_drop`` (0.1);
* **strong**: EDA (Wei & Zou 2019, arXiv 1901.11196) random deletion with probability
  ``strong_drop`` (0.3), then ``max(1, ⌊swap_fraction · number of words⌋)`` random swaps of two
  kept words (``swap_fraction`` = 0.1, the EDA α).

A view always keeps at least one word (a uniformly chosen word when every word was deleted), so
it is never empty unless the text has no words at all (then the text is returned unchanged).
The word multiset of a view is a sub-multiset of the text's. Randomness comes only from the
``random.Random`` passed in, so a seeded generator makes the views reproducible.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from .transforms import CLIP_MEAN, CLIP_STD, image_transform

if TYPE_CHECKING:
    from torchvision import transforms as T

__all__ = [
    "Cutout",
    "RandomMagnitudeRandAugment",
    "TextViews",
    "strong_image_transform",
    "view_transforms_from",
    "weak_image_transform",
]

#: FixMatch's translation: up to 12.5 % of each side (4 pixels at 32×32).
TRANSLATE_FRACTION = 0.125
#: FixMatch's Cutout: a square of side up to half the image side.
CUTOUT_FRACTION = 0.5


class Cutout:
    """Set one random square of a ``C × H × W`` tensor to ``value`` (DeVries & Taylor 2017, as in FixMatch).

    The side is uniform in ``{1, …, max(1, ⌊max_fraction · min(H, W)⌋)}``, the centre a uniform
    pixel; the square is clipped at the border (so a patch near an edge is smaller). Applied after
    normalisation, ``value=0`` is the dataset mean colour. The input tensor is not modified.
    Randomness: ``torch``'s global generator.
    """

    def __init__(self, max_fraction: float = CUTOUT_FRACTION, value: float = 0.0) -> None:
        if not 0.0 < float(max_fraction) <= 1.0:
            raise ValueError(f"Cutout max_fraction must be in (0, 1], got {max_fraction!r} (FixMatch uses 0.5).")
        self.max_fraction = float(max_fraction)
        self.value = float(value)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if not isinstance(image, torch.Tensor) or image.dim() < 2:
            raise TypeError(
                f"Cutout works on a C × H × W tensor (put it after ToTensor/Normalize), got "
                f"{type(image).__name__}{tuple(image.shape) if isinstance(image, torch.Tensor) else ''}."
            )
        height, width = image.shape[-2:]
        max_side = max(1, int(self.max_fraction * min(height, width)))
        side = int(torch.randint(1, max_side + 1, (1,)).item())
        cy = int(torch.randint(0, height, (1,)).item())
        cx = int(torch.randint(0, width, (1,)).item())
        top, left = max(0, cy - side // 2), max(0, cx - side // 2)
        bottom, right = min(height, cy - side // 2 + side), min(width, cx - side // 2 + side)
        out = image.clone()
        out[..., top:bottom, left:right] = self.value
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(max_fraction={self.max_fraction}, value={self.value})"


class RandomMagnitudeRandAugment:
    """RandAugment (Cubuk et al. 2020) with a fresh magnitude per operation, FixMatch's variant.

    Applies ``num_ops`` operations in turn; each is a uniformly chosen torchvision RandAugment op
    at a magnitude drawn uniformly from ``{min_magnitude, …, max_magnitude}`` on a scale of
    ``num_magnitude_bins − 1`` (default 0–10: magnitude m is m/10 of each op's maximum). Built from
    ``torchvision.transforms.RandAugment(num_ops=1, magnitude=m)`` objects, one per magnitude.
    Randomness: ``torch``'s global generator.
    """

    def __init__(
        self,
        num_ops: int = 2,
        min_magnitude: int = 1,
        max_magnitude: int = 10,
        num_magnitude_bins: int = 11,
        fill: Sequence[int] | int | None = (128, 128, 128),
    ) -> None:
        from torchvision import transforms as T

        if num_ops < 1:
            raise ValueError(f"num_ops must be ≥ 1, got {num_ops}.")
        if not 0 <= min_magnitude <= max_magnitude < num_magnitude_bins:
            raise ValueError(
                f"Need 0 ≤ min_magnitude ≤ max_magnitude < num_magnitude_bins, got {min_magnitude}, {max_magnitude}, "
                f"{num_magnitude_bins} (FixMatch: 1, 10, 11)."
            )
        self.num_ops = int(num_ops)
        self.min_magnitude = int(min_magnitude)
        self.max_magnitude = int(max_magnitude)
        self.num_magnitude_bins = int(num_magnitude_bins)
        self.fill = list(fill) if isinstance(fill, Sequence) else fill
        self._ops = [
            T.RandAugment(num_ops=1, magnitude=m, num_magnitude_bins=self.num_magnitude_bins, fill=self.fill)
            for m in range(self.min_magnitude, self.max_magnitude + 1)
        ]

    def __call__(self, image: Any) -> Any:
        for _ in range(self.num_ops):
            index = int(torch.randint(len(self._ops), (1,)).item())
            image = self._ops[index](image)
        return image

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_ops={self.num_ops}, magnitude=U{{{self.min_magnitude}..{self.max_magnitude}}}"
            f" of {self.num_magnitude_bins - 1}, fill={self.fill})"
        )


def _split_eval(pipeline: T.Compose) -> tuple[list[Any], list[Any]]:
    """Split an evaluation Compose into its PIL geometry steps and its ToTensor + Normalize tail."""
    from torchvision import transforms as T

    steps = list(pipeline.transforms)
    for i, step in enumerate(steps):
        if isinstance(step, T.ToTensor):
            return steps[:i], steps[i:]
    raise ValueError(f"The transform has no ToTensor step: {pipeline}")  # pragma: no cover - we build it


def _geometry(
    image_size: int | Sequence[int],
    mean: Sequence[float],
    std: Sequence[float],
    resize_size: int | Sequence[int] | None,
    interpolation: Any,
) -> tuple[tuple[int, int], list[Any], list[Any]]:
    """(output size, eval geometry steps, ToTensor + Normalize), all from ``image_transform``."""
    plain = image_transform(image_size, mean, std, train=False, resize_size=resize_size, interpolation=interpolation)
    geometry, tail = _split_eval(plain)
    from torchvision import transforms as T

    crop = next(step for step in geometry if isinstance(step, T.CenterCrop))
    height, width = crop.size if isinstance(crop.size, (tuple, list)) else (crop.size, crop.size)
    return (int(height), int(width)), geometry, tail


def _weak_steps(size: tuple[int, int], hflip: bool, translate: float) -> list[Any]:
    from torchvision import transforms as T

    if not 0.0 <= translate < 1.0:
        raise ValueError(f"translate must be in [0, 1) (a fraction of the side), got {translate!r}; FixMatch: 0.125.")
    steps: list[Any] = []
    if hflip:
        steps.append(T.RandomHorizontalFlip())
    pad_h, pad_w = int(translate * size[0]), int(translate * size[1])
    if pad_h or pad_w:
        steps.append(T.RandomCrop(size, padding=[pad_w, pad_h], padding_mode="reflect"))
    return steps


def weak_image_transform(
    image_size: int | Sequence[int],
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
    *,
    hflip: bool,
    translate: float = TRANSLATE_FRACTION,
    resize_size: int | Sequence[int] | None = None,
    interpolation: Any = "bicubic",
) -> T.Compose:
    """FixMatch's weak view: eval geometry → [random flip] → random translation → tensor → normalise.

    Args:
        image_size: output side (int) or ``(height, width)``.
        mean, std: per-channel normalisation (as in the evaluation transform).
        hflip: random horizontal flips (``False`` for digits and text-like images).
        translate: largest shift as a fraction of each side, by reflect-padded ``RandomCrop`` (0.125).
        resize_size, interpolation: the evaluation resize before the centre crop
            (see :func:`hf_infonc.data.transforms.image_transform`).
    """
    from torchvision import transforms as T

    size, geometry, tail = _geometry(image_size, mean, std, resize_size, interpolation)
    return T.Compose([*geometry, *_weak_steps(size, hflip, translate), *tail])


def strong_image_transform(
    image_size: int | Sequence[int],
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
    *,
    hflip: bool,
    translate: float = TRANSLATE_FRACTION,
    num_ops: int = 2,
    cutout: float = CUTOUT_FRACTION,
    resize_size: int | Sequence[int] | None = None,
    interpolation: Any = "bicubic",
) -> T.Compose:
    """FixMatch's strong view: the weak view's geometry → RandAugment (random magnitude) → tensor → normalise → Cutout.

    Args:
        image_size, mean, std, hflip, translate, resize_size, interpolation: as in :func:`weak_image_transform`.
        num_ops: RandAugment operations per image (2).
        cutout: largest Cutout side as a fraction of the shorter image side (0.5); 0 disables Cutout.
    """
    from torchvision import transforms as T

    size, geometry, tail = _geometry(image_size, mean, std, resize_size, interpolation)
    steps = [*geometry, *_weak_steps(size, hflip, translate), RandomMagnitudeRandAugment(num_ops=num_ops), *tail]
    if cutout:
        steps.append(Cutout(cutout, value=0.0))
    return T.Compose(steps)


def view_transforms_from(
    eval_transform: T.Compose, *, hflip: bool, translate: float = TRANSLATE_FRACTION
) -> tuple[T.Compose, T.Compose]:
    """``(weak, strong)`` view transforms with the size, resize and normalisation of an evaluation transform.

    ``eval_transform`` is an evaluation Compose from :func:`hf_infonc.data.transforms.image_transform`
    (or ``image_transform_from_hf`` / ``image_transform_from_open_clip``, ``train=False``):
    ``ConvertRGB → Resize → CenterCrop → ToTensor → Normalize``. The output size is the centre
    crop's, the resize keeps its size and interpolation, ``mean``/``std`` come from ``Normalize``.
    """
    from torchvision import transforms as T

    steps = getattr(eval_transform, "transforms", None)
    if not isinstance(steps, (list, tuple)):
        raise TypeError(
            f"view_transforms_from expects a torchvision Compose (an evaluation transform from "
            f"hf_infonc.data.transforms.image_transform*), got {type(eval_transform).__name__}."
        )
    random_steps = [s for s in steps if isinstance(s, (T.RandomResizedCrop, T.RandomHorizontalFlip, T.RandomCrop))]
    if random_steps:
        raise ValueError(
            f"view_transforms_from needs the *evaluation* transform, but this one is random ({random_steps}). Build it "
            f"with train=False (e.g. hf_infonc.data.build_image_transform(cfg, preprocessing, train=False))."
        )
    normalize = next((s for s in steps if isinstance(s, T.Normalize)), None)
    crop = next((s for s in steps if isinstance(s, T.CenterCrop)), None)
    resize = next((s for s in steps if isinstance(s, T.Resize)), None)
    if normalize is None:
        raise ValueError(
            f"The evaluation transform has no Normalize step, so the views' mean and std are unknown: "
            f"{eval_transform}. "
            f"Use a transform from hf_infonc.data.transforms.image_transform*, or call weak_image_transform / "
            f"strong_image_transform with image_size, mean and std."
        )
    if crop is not None:
        size = crop.size
    elif resize is not None and isinstance(resize.size, (tuple, list)) and len(resize.size) == 2:
        size = resize.size
    else:
        raise ValueError(
            f"Cannot read a fixed output size from the evaluation transform (it needs a CenterCrop, or a Resize to "
            f"(height, width)): {eval_transform}. Call weak_image_transform / strong_image_transform with image_size."
        )
    size = tuple(int(s) for s in size) if isinstance(size, (tuple, list)) else int(size)
    if isinstance(size, tuple) and len(size) == 1:
        size = size[0]
    resize_size = resize.size if resize is not None else None
    if isinstance(resize_size, (tuple, list)) and len(resize_size) == 1:
        resize_size = int(resize_size[0])
    interpolation = resize.interpolation if resize is not None else "bicubic"
    common = dict(hflip=hflip, translate=translate, resize_size=resize_size, interpolation=interpolation)
    mean, std = tuple(normalize.mean), tuple(normalize.std)
    return weak_image_transform(size, mean, std, **common), strong_image_transform(size, mean, std, **common)


@dataclass(frozen=True)
class TextViews:
    """Weak and strong views of a text for FixMatch on text (see the module docstring).

    Args:
        weak_drop: probability of deleting each word in the weak view (0.1).
        strong_drop: EDA random-deletion probability in the strong view (0.3).
        swap_fraction: EDA α for random swaps: ``max(1, ⌊swap_fraction · words⌋)`` swaps (0.1).

    ``views.weak(text, rng)`` and ``views.strong(text, rng)`` take a ``random.Random``.
    """

    weak_drop: float = 0.1
    strong_drop: float = 0.3
    swap_fraction: float = 0.1

    def __post_init__(self) -> None:
        for name in ("weak_drop", "strong_drop"):
            value = getattr(self, name)
            if not 0.0 <= float(value) < 1.0:
                raise ValueError(f"TextViews.{name} is a deletion probability in [0, 1), got {value!r}.")
        if not 0.0 <= float(self.swap_fraction) <= 1.0:
            raise ValueError(
                f"TextViews.swap_fraction is the fraction of words swapped (EDA α), in [0, 1]; got "
                f"{self.swap_fraction!r}."
            )

    @staticmethod
    def _check_rng(rng: Any) -> random.Random:
        if not isinstance(rng, random.Random):
            raise TypeError(
                f"Pass a random.Random as rng (e.g. random.Random(seed)) so the views are reproducible, got "
                f"{type(rng).__name__}."
            )
        return rng

    @staticmethod
    def _drop(words: list[str], p: float, rng: random.Random) -> list[str]:
        """Delete each word with probability ``p``; keep one uniformly chosen word if all were deleted."""
        kept = [w for w in words if rng.random() >= p]
        return kept if kept else [words[rng.randrange(len(words))]]

    def weak(self, text: str, rng: random.Random) -> str:
        """The text with each word dropped with probability ``weak_drop`` (at least one word kept)."""
        rng = self._check_rng(rng)
        words = str(text).split()
        if not words:
            return text
        return " ".join(self._drop(words, self.weak_drop, rng))

    def strong(self, text: str, rng: random.Random) -> str:
        """EDA random deletion (``strong_drop``) then ``max(1, ⌊swap_fraction · n⌋)`` random swaps of kept words."""
        rng = self._check_rng(rng)
        words = str(text).split()
        if not words:
            return text
        kept = self._drop(words, self.strong_drop, rng)
        swaps = max(1, int(self.swap_fraction * len(words)))
        if len(kept) >= 2:
            for _ in range(swaps):
                i, j = rng.sample(range(len(kept)), 2)
                kept[i], kept[j] = kept[j], kept[i]
        return " ".join(kept)
