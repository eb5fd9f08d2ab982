"""Image transforms that reproduce a model's preprocessing (a ``transformers`` image processor or an open_clip
config), with optional augmentation; every step is picklable (``DataLoader(num_workers>0)``).

Evaluation: RGB → resize (shortest edge) → centre crop → tensor → normalise, as CLIP does. Training with
``augment=True``: RGB → ``RandomResizedCrop(scale=(0.5, 1))`` → [``RandomHorizontalFlip``] → tensor → normalise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, is_dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torchvision is imported when a transform is built (it takes seconds)
    from torchvision import transforms as T
    from torchvision.transforms import InterpolationMode

# OpenAI CLIP's normalisation (also open_clip's OPENAI_DATASET_MEAN / _STD).
CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

# PIL.Image.Resampling values (what transformers' image processors store as `resample`).
_INTERPOLATION_BY_PIL = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


@dataclass(eq=False)
class ConvertRGB:
    """Convert a PIL image to RGB (grey-scale digits, RGBA PNGs, palette images)."""

    def __call__(self, image):
        return image if getattr(image, "mode", "RGB") == "RGB" else image.convert("RGB")


def _interpolation(value: Any) -> InterpolationMode:
    from torchvision.transforms import InterpolationMode

    if value is None or isinstance(value, InterpolationMode):
        return value or InterpolationMode.BICUBIC
    # PIL.Image.Resampling is an IntEnum; anything else is a name ("bicubic", "nearest-exact", ...).
    key = _INTERPOLATION_BY_PIL.get(value, "") if isinstance(value, int) else str(getattr(value, "name", value))
    key = key.upper().replace("-", "_")
    if key not in InterpolationMode.__members__:
        raise ValueError(
            f"Unknown interpolation {value!r}; expected one of {[m.lower() for m in InterpolationMode.__members__]} "
            f"(or a PIL.Image.Resampling / torchvision InterpolationMode)."
        )
    return InterpolationMode[key]


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    size = tuple(int(s) for s in size)
    if len(size) != 2:
        raise ValueError(f"An image size must be an int or (height, width), got {size!r}.")
    return size  # type: ignore[return-value]


def image_transform(
    image_size: int | Sequence[int], mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD, *,
    train: bool = False, augment: bool = True, hflip: bool = False, resize_size: int | Sequence[int] | None = None,
    interpolation: Any = "bicubic", crop_scale: tuple[float, float] = (0.5, 1.0),
) -> T.Compose:
    """A torchvision pipeline from PIL image to a normalised ``float`` tensor ``3 × H × W``.

    Args:
        image_size: output side (int) or ``(height, width)``.
        mean, std: per-channel normalisation.
        train, augment: random crops (and ``hflip`` flips) only when both are true.
        hflip: add ``RandomHorizontalFlip`` when augmenting.
        resize_size: evaluation resize before the centre crop; an int resizes the shortest
            edge (aspect ratio kept), a pair resizes to exactly ``(h, w)``. Default: ``image_size``.
        interpolation: name, PIL resampling value or ``InterpolationMode``; default bicubic.
        crop_scale: area range of ``RandomResizedCrop``.
    """
    from torchvision import transforms as T

    size = _pair(image_size)
    mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"mean and std need one value per RGB channel (3), got mean={mean}, std={std}.")
    if any(s <= 0 for s in std):
        raise ValueError(f"std values must be positive, got {std}.")
    mode = _interpolation(interpolation)
    steps: list[Any] = [ConvertRGB()]
    if train and augment:
        steps.append(T.RandomResizedCrop(size, scale=tuple(crop_scale), interpolation=mode, antialias=True))
        if hflip:
            steps.append(T.RandomHorizontalFlip())
    else:
        resize = (size[0] if size[0] == size[1] else size) if resize_size is None else resize_size
        resize = resize if isinstance(resize, int) else _pair(resize)
        steps += [T.Resize(resize, interpolation=mode, antialias=True), T.CenterCrop(size)]
    return T.Compose([*steps, T.ToTensor(), T.Normalize(mean, std)])


def _get(obj: Any, key: str) -> Any:
    """Read ``key`` from a dict, a transformers ``SizeDict`` or any attribute holder."""
    if obj is None:
        return None
    return obj.get(key) if isinstance(obj, Mapping) else getattr(obj, key, None)


def _hf_size(size: Any) -> int | tuple[int, int] | None:
    if size is None or isinstance(size, int):
        return size
    if _get(size, "shortest_edge"):
        return int(_get(size, "shortest_edge"))
    if _get(size, "height") and _get(size, "width"):
        return (int(_get(size, "height")), int(_get(size, "width")))
    return None


def image_transform_from_hf(
    image_processor: Any, train: bool = False, augment: bool = True, *, hflip: bool = False,
    image_size: int | None = None, crop_scale: tuple[float, float] = (0.5, 1.0),
) -> T.Compose:
    """The transform matching a ``transformers`` image processor (e.g. ``CLIPImageProcessor``).

    Reads ``size`` (``shortest_edge`` or ``height``/``width``), ``crop_size``,
    ``do_center_crop``, ``image_mean``, ``image_std``, ``do_normalize`` and ``resample``.
    ``image_size`` overrides the output size (the resize then matches it).
    """
    resize = _hf_size(_get(image_processor, "size"))
    crop = _hf_size(_get(image_processor, "crop_size"))
    do_crop = (value := _get(image_processor, "do_center_crop")) is None or bool(value)
    if image_size is not None:
        output, resize = image_size, image_size
    elif do_crop and crop is not None:
        output = crop
    elif resize is not None:
        # Without a centre crop the processor resizes the shortest edge; crop to a square so that
        # images of any aspect ratio batch together.
        output = resize
    else:
        raise ValueError(
            f"Cannot read an image size from {type(image_processor).__name__}: it has neither `size` nor "
            f"`crop_size`. Pass image_size=<pixels>."
        )
    if _get(image_processor, "do_normalize") is False:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    else:
        mean = _get(image_processor, "image_mean") or CLIP_MEAN
        std = _get(image_processor, "image_std") or CLIP_STD
    return image_transform(
        output, mean, std, train=train, augment=augment, hflip=hflip, resize_size=resize,
        interpolation=_get(image_processor, "resample"), crop_scale=crop_scale,
    )


def _open_clip_cfg(source: Any) -> dict[str, Any]:
    if isinstance(source, Mapping):
        return dict(source)
    if is_dataclass(source) and not isinstance(source, type):  # open_clip.transform.PreprocessCfg
        return asdict(source)
    from open_clip import get_model_preprocess_cfg

    if not hasattr(source, "visual") and not hasattr(source, "image_size"):
        raise TypeError(
            f"Expected an open_clip model, its `visual` tower, a preprocess dict or a PreprocessCfg, got "
            f"{type(source).__name__}."
        )
    # get_model_preprocess_cfg may store into the model's (shared) dict; work on a copy.
    return dict(get_model_preprocess_cfg(source))


def image_transform_from_open_clip(
    source: Any, train: bool = False, augment: bool = True, *, hflip: bool = False, image_size: int | None = None,
    crop_scale: tuple[float, float] = (0.5, 1.0),
) -> T.Compose:
    """The transform matching an open_clip model's preprocessing.

    ``source`` is an open_clip model, an ``open_clip.transform.PreprocessCfg`` or a dict with ``size`` and
    optionally ``mean``, ``std`` (default: OpenAI CLIP's, as in open_clip), ``interpolation``, ``resize_mode``.
    """
    cfg = _open_clip_cfg(source)
    size = image_size if image_size is not None else cfg.get("size", cfg.get("image_size"))
    if size is None:
        raise ValueError(f"The open_clip preprocessing config {cfg} has no `size`; pass image_size=<pixels>.")
    size = size if isinstance(size, int) else _pair(size)
    # resize_mode "squash": resize to exactly the output size; otherwise shortest edge, then centre crop.
    resize = _pair(size) if cfg.get("resize_mode", "shortest") == "squash" else None
    return image_transform(
        size, cfg.get("mean") or CLIP_MEAN, cfg.get("std") or CLIP_STD, train=train, augment=augment, hflip=hflip,
        resize_size=resize, interpolation=cfg.get("interpolation", "bicubic"), crop_scale=crop_scale,
    )
