"""Weak and strong views for semi-supervised learning: FixMatch (Sohn et al. 2020, arXiv 2001.07685) and
FreeMatch (Wang et al. 2023, arXiv 2205.07246) pseudo-label the weak view and train on the strong one.

Images: :func:`weak_image_transform`, :func:`strong_image_transform` (tensors normalised as the evaluation
transform; randomness from ``torch``'s global generator; every step picklable). Texts: :class:`TextViews`.
docs/semi_supervised.md describes both.
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

#: FixMatch's translation: up to 12.5 % of each side (4 pixels at 32×32).
TRANSLATE_FRACTION = 0.125
#: FixMatch's Cutout: a square of side up to half the image side.
CUTOUT_FRACTION = 0.5


def _uniform(low: int, high: int) -> int:
    """An integer uniform in ``[low, high)`` from ``torch``'s global generator."""
    return int(torch.randint(low, high, (1,)).item())


@dataclass(eq=False)
class Cutout:
    """A copy of a ``C × H × W`` tensor with one random square set to ``value`` (DeVries & Taylor 2017, as in
    FixMatch): side uniform in ``{1, …, max(1, ⌊max_fraction · min(H, W)⌋)}``, uniform centre, clipped at the
    border. After normalisation, ``value=0`` is the dataset mean colour."""

    max_fraction: float = CUTOUT_FRACTION
    value: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 < float(self.max_fraction) <= 1.0:
            raise ValueError(f"Cutout max_fraction must be in (0, 1], got {self.max_fraction!r} (FixMatch uses 0.5).")
        self.max_fraction, self.value = float(self.max_fraction), float(self.value)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if not isinstance(image, torch.Tensor) or image.dim() < 2:
            raise TypeError(
                f"Cutout works on a C × H × W tensor (put it after ToTensor/Normalize), got "
                f"{type(image).__name__}{tuple(image.shape) if isinstance(image, torch.Tensor) else ''}."
            )
        height, width = image.shape[-2:]
        side = _uniform(1, max(1, int(self.max_fraction * min(height, width))) + 1)
        top, left = _uniform(0, height) - side // 2, _uniform(0, width) - side // 2
        out = image.clone()
        out[..., max(0, top) : min(height, top + side), max(0, left) : min(width, left + side)] = self.value
        return out


@dataclass(eq=False)
class RandomMagnitudeRandAugment:
    """RandAugment (Cubuk et al. 2020) with a fresh magnitude per operation, FixMatch's variant.

    ``num_ops`` times: a uniformly chosen torchvision RandAugment op (FixMatch's op set, slightly wider
    ranges) at a magnitude uniform in ``{min_magnitude, …, max_magnitude}`` of ``num_magnitude_bins − 1``,
    grey fill 128; one ``RandAugment(num_ops=1, magnitude=m)`` per magnitude.
    """

    num_ops: int = 2
    min_magnitude: int = 1
    max_magnitude: int = 10
    num_magnitude_bins: int = 11
    fill: Sequence[int] | int | None = (128, 128, 128)

    def __post_init__(self) -> None:
        from torchvision import transforms as T

        if self.num_ops < 1:
            raise ValueError(f"num_ops must be ≥ 1, got {self.num_ops}.")
        if not 0 <= self.min_magnitude <= self.max_magnitude < self.num_magnitude_bins:
            raise ValueError(
                f"Need 0 ≤ min_magnitude ≤ max_magnitude < num_magnitude_bins, got {self.min_magnitude}, "
                f"{self.max_magnitude}, {self.num_magnitude_bins} (FixMatch: 1, 10, 11)."
            )
        self.fill = list(self.fill) if isinstance(self.fill, Sequence) else self.fill
        self._ops = [
            T.RandAugment(num_ops=1, magnitude=m, num_magnitude_bins=self.num_magnitude_bins, fill=self.fill)
            for m in range(self.min_magnitude, self.max_magnitude + 1)
        ]

    def __call__(self, image: Any) -> Any:
        for _ in range(self.num_ops):
            image = self._ops[_uniform(0, len(self._ops))](image)
        return image


def weak_image_transform(
    image_size: int | Sequence[int], mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD, *,
    hflip: bool, translate: float = TRANSLATE_FRACTION, resize_size: int | Sequence[int] | None = None,
    interpolation: Any = "bicubic",
) -> T.Compose:
    """FixMatch's weak view: eval geometry → [random flip] → random translation → tensor → normalise.

    Args:
        image_size, mean, std, resize_size, interpolation: as in :func:`hf_infonc.data.transforms.image_transform`.
        hflip: random horizontal flips (``False`` for digits and text-like images).
        translate: largest shift as a fraction of each side, by reflect-padded ``RandomCrop`` (0.125).
    """
    from torchvision import transforms as T

    if not 0.0 <= translate < 1.0:
        raise ValueError(f"translate must be in [0, 1) (a fraction of the side), got {translate!r}; FixMatch: 0.125.")
    steps = image_transform(image_size, mean, std, resize_size=resize_size, interpolation=interpolation).transforms
    size = next(step for step in steps if isinstance(step, T.CenterCrop)).size  # always (height, width)
    pad_h, pad_w = int(translate * size[0]), int(translate * size[1])
    flip = [T.RandomHorizontalFlip()] if hflip else []
    shift = [T.RandomCrop(size, padding=[pad_w, pad_h], padding_mode="reflect")] if pad_h or pad_w else []
    # The evaluation transform ends with ToTensor and Normalize; the random steps act on the image before them.
    return T.Compose([*steps[:-2], *flip, *shift, *steps[-2:]])


def strong_image_transform(
    image_size: int | Sequence[int], mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD, *,
    hflip: bool, translate: float = TRANSLATE_FRACTION, num_ops: int = 2, cutout: float = CUTOUT_FRACTION,
    resize_size: int | Sequence[int] | None = None, interpolation: Any = "bicubic",
) -> T.Compose:
    """FixMatch's strong view: the weak view's geometry → RandAugment (random magnitude) → tensor → normalise → Cutout.

    Args:
        image_size, mean, std, hflip, translate, resize_size, interpolation: as in :func:`weak_image_transform`.
        num_ops: RandAugment operations per image (2).
        cutout: largest Cutout side as a fraction of the shorter image side (0.5); 0 disables Cutout.
    """
    from torchvision import transforms as T

    weak = weak_image_transform(
        image_size, mean, std, hflip=hflip, translate=translate, resize_size=resize_size, interpolation=interpolation
    ).transforms
    tail = [Cutout(cutout)] if cutout else []
    return T.Compose([*weak[:-2], RandomMagnitudeRandAugment(num_ops=num_ops), *weak[-2:], *tail])


def view_transforms_from(
    eval_transform: T.Compose, *, hflip: bool, translate: float = TRANSLATE_FRACTION
) -> tuple[T.Compose, T.Compose]:
    """``(weak, strong)`` view transforms with the crop size, resize and ``Normalize`` of an evaluation
    transform (``train=False``) from :func:`hf_infonc.data.transforms.image_transform` or its siblings."""
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
    normalize, crop, resize = (next((s for s in steps if isinstance(s, kind)), None) for kind in (
        T.Normalize, T.CenterCrop, T.Resize))
    if normalize is None:
        raise ValueError(
            f"The evaluation transform has no Normalize step, so the views' mean and std are unknown: "
            f"{eval_transform}. Use a transform from hf_infonc.data.transforms.image_transform*, or call "
            f"weak_image_transform / strong_image_transform with image_size, mean and std."
        )
    size = crop.size if crop is not None else getattr(resize, "size", None)
    if not (isinstance(size, (tuple, list)) and len(size) == 2):
        raise ValueError(
            f"Cannot read a fixed output size from the evaluation transform (it needs a CenterCrop, or a Resize to "
            f"(height, width)): {eval_transform}. Call weak_image_transform / strong_image_transform with image_size."
        )
    resize_size = getattr(resize, "size", None)
    if isinstance(resize_size, (tuple, list)):  # torchvision keeps a size given as [n] as a list
        resize_size = int(resize_size[0]) if len(resize_size) == 1 else tuple(int(s) for s in resize_size)
    common = dict(hflip=hflip, translate=translate, resize_size=resize_size,
                  interpolation=resize.interpolation if resize is not None else "bicubic")
    args = (tuple(int(s) for s in size), tuple(normalize.mean), tuple(normalize.std))
    return weak_image_transform(*args, **common), strong_image_transform(*args, **common)


@dataclass(frozen=True)
class TextViews:
    """Weak and strong views of a text for FixMatch on text (no network: no synonyms or back-translation).

    * **weak**: random word dropout, each word deleted with probability ``weak_drop`` (0.1);
    * **strong**: EDA (Wei & Zou 2019, arXiv 1901.11196) random deletion with probability
      ``strong_drop`` (0.3), then ``max(1, ⌊swap_fraction · number of words⌋)`` random swaps of two
      kept words (``swap_fraction`` = 0.1, the EDA α).

    Words are whitespace-separated; a view keeps at least one and joins them by single spaces; a text without
    words is returned unchanged. ``weak(text, rng)`` / ``strong(text, rng)`` draw only from ``rng``
    (a ``random.Random``).
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
    def _drop(text: str, p: float, rng: Any) -> tuple[list[str], list[str]]:
        """``(words, kept)``: each word deleted with probability ``p``, one uniformly chosen word kept if all were."""
        if not isinstance(rng, random.Random):
            raise TypeError(
                f"Pass a random.Random as rng (e.g. random.Random(seed)) so the views are reproducible, got "
                f"{type(rng).__name__}."
            )
        words = str(text).split()
        if not words:
            return words, words
        kept = [w for w in words if rng.random() >= p]
        return words, kept if kept else [words[rng.randrange(len(words))]]

    def weak(self, text: str, rng: random.Random) -> str:
        """The text with each word dropped with probability ``weak_drop`` (at least one word kept)."""
        words, kept = self._drop(text, self.weak_drop, rng)
        return " ".join(kept) if words else text

    def strong(self, text: str, rng: random.Random) -> str:
        """EDA random deletion (``strong_drop``) then ``max(1, ⌊swap_fraction · n⌋)`` random swaps of kept words."""
        words, kept = self._drop(text, self.strong_drop, rng)
        if not words:
            return text
        if len(kept) >= 2:
            for _ in range(max(1, int(self.swap_fraction * len(words)))):
                i, j = rng.sample(range(len(kept)), 2)
                kept[i], kept[j] = kept[j], kept[i]
        return " ".join(kept)
