"""Weak and strong views for FixMatch / FreeMatch: images (torchvision) and texts (EDA-style)."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms as T

from hf_infonc.data import TextViews, strong_image_transform, view_transforms_from, weak_image_transform
from hf_infonc.data.augment import Cutout, RandomMagnitudeRandAugment
from hf_infonc.data.transforms import image_transform

pytestmark = pytest.mark.usefixtures("single_blas_thread")

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)  # CIFAR-10


def texture(height: int = 32, width: int = 32, seed: int = 0) -> Image.Image:
    """A random RGB texture: every window of it is distinct, so a translation can be identified."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def matching_offsets(view: torch.Tensor, plain: torch.Tensor, pad: int) -> list[tuple[int, int]]:
    """All (dy, dx) with view == reflect_pad(plain)[dy:dy+H, dx:dx+W]."""
    padded = F.pad(plain[None], (pad, pad, pad, pad), mode="reflect")[0]
    h, w = plain.shape[-2:]
    return [
        (dy, dx)
        for dy in range(2 * pad + 1)
        for dx in range(2 * pad + 1)
        if torch.allclose(padded[:, dy : dy + h, dx : dx + w], view, atol=1e-6)
    ]


@pytest.fixture(scope="module")
def eval_32():
    return image_transform(32, MEAN, STD)


@pytest.mark.parametrize("side", [28, 32])
def test_views_are_normalised_float_tensors_like_the_eval_view(side):
    evaluation = image_transform(side, MEAN, STD)
    weak, strong = view_transforms_from(evaluation, hflip=True)
    for image in (texture(40, 48), texture(side, side).convert("L")):  # resize path, grey → RGB
        for transform in (evaluation, weak, strong):
            out = transform(image)
            assert out.shape == (3, side, side) and out.dtype == torch.float32
    # The normalisation is the evaluation one: a uniform image of the mean colour maps to 0 in the weak view.
    mean_colour = Image.new("RGB", (side, side), tuple(round(255 * m) for m in MEAN))
    assert weak(mean_colour).abs().max().item() < 0.01


def test_weak_view_is_a_reflect_padded_translation_of_the_plain_view(eval_32):
    weak, _ = view_transforms_from(eval_32, hflip=False)
    image = texture(seed=1)
    plain = eval_32(image)
    torch.manual_seed(0)
    offsets = []
    for _ in range(12):
        found = matching_offsets(weak(image), plain, pad=4)  # ⌊0.125 · 32⌋ = 4 pixels
        assert len(found) == 1, "each weak view is exactly one translation of the plain view"
        offsets.append(found[0])
    assert len(set(offsets)) > 1, "two draws give different translations"
    assert max(max(abs(dy - 4), abs(dx - 4)) for dy, dx in offsets) <= 4


def test_weak_view_with_flips_is_a_translation_of_the_image_or_its_mirror(eval_32):
    weak, _ = view_transforms_from(eval_32, hflip=True)
    image = texture(seed=2)
    plain, mirrored = eval_32(image), eval_32(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    torch.manual_seed(1)
    kinds = []
    for _ in range(16):
        view = weak(image)
        direct, flipped = matching_offsets(view, plain, 4), matching_offsets(view, mirrored, 4)
        assert len(direct) + len(flipped) == 1
        kinds.append("direct" if direct else "flipped")
    assert set(kinds) == {"direct", "flipped"}


def test_translation_is_3_pixels_at_28():
    evaluation = image_transform(28, MEAN, STD)
    weak = weak_image_transform(28, MEAN, STD, hflip=False)
    crop = next(step for step in weak.transforms if isinstance(step, T.RandomCrop))
    assert crop.padding == [3, 3] and crop.padding_mode == "reflect"
    image = texture(28, 28, seed=3)
    torch.manual_seed(2)
    assert len(matching_offsets(weak(image), evaluation(image), pad=3)) == 1


def smooth_image(side: int = 32) -> Image.Image:
    """A smooth, natural-looking image: a translation changes it a little, colour and shape ops a lot."""
    y, x = np.mgrid[0:side, 0:side] / side
    channels = [
        0.5 + 0.4 * np.sin(2 * np.pi * x),
        0.5 + 0.4 * np.cos(2 * np.pi * y),
        0.5 + 0.3 * np.sin(2 * np.pi * (x + y)),
    ]
    return Image.fromarray((np.stack(channels, axis=-1) * 255).round().astype(np.uint8))


def test_strong_view_moves_further_from_the_plain_view_than_the_weak_view(eval_32):
    weak, strong = view_transforms_from(eval_32, hflip=False)
    image = smooth_image()
    plain = eval_32(image)
    torch.manual_seed(5)
    weak_gap = torch.stack([(weak(image) - plain).abs().mean() for _ in range(20)]).mean().item()
    strong_gap = torch.stack([(strong(image) - plain).abs().mean() for _ in range(20)]).mean().item()
    # Measured: weak ≈ 0.45–0.53, strong ≈ 0.83–0.88 (mean |Δ| in normalised units, seeds 0–2).
    assert weak_gap > 0.1
    assert strong_gap > 1.3 * weak_gap


def test_views_are_reproducible_under_torch_manual_seed(eval_32):
    weak, strong = view_transforms_from(eval_32, hflip=True)
    image = texture(seed=6)
    for transform in (weak, strong):
        torch.manual_seed(123)
        first = [transform(image) for _ in range(3)]
        torch.manual_seed(123)
        second = [transform(image) for _ in range(3)]
        assert all(torch.equal(a, b) for a, b in zip(first, second))
        assert not torch.equal(first[0], first[1])


def test_cutout_blanks_one_clipped_square_and_leaves_the_input_alone():
    cutout = Cutout(0.5, value=0.0)
    image = torch.ones(3, 32, 32)
    torch.manual_seed(7)
    sides = []
    for _ in range(50):
        out = cutout(image)
        zero = out[0] == 0
        assert torch.equal(zero, out[1] == 0) and torch.equal(zero, out[2] == 0)  # all channels
        rows, cols = zero.any(dim=1).nonzero().flatten(), zero.any(dim=0).nonzero().flatten()
        assert rows.numel() > 0
        h, w = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
        assert int(zero.sum()) == h * w, "the blanked region is one rectangle"
        assert h <= 16 and w <= 16
        touches_border = rows.min() == 0 or cols.min() == 0 or rows.max() == 31 or cols.max() == 31
        assert h == w or touches_border, "a square unless clipped at the border"
        sides.append(max(h, w))
    assert torch.equal(image, torch.ones(3, 32, 32))
    assert min(sides) < 8 and max(sides) > 12  # random sizes up to half the side


def test_strong_pipeline_structure():
    strong = strong_image_transform(32, MEAN, STD, hflip=True)
    kinds = [type(step).__name__ for step in strong.transforms]
    assert kinds == [
        "ConvertRGB",
        "Resize",
        "CenterCrop",
        "RandomHorizontalFlip",
        "RandomCrop",
        "RandomMagnitudeRandAugment",
        "ToTensor",
        "Normalize",
        "Cutout",
    ]
    augment = strong.transforms[5]
    assert augment.num_ops == 2
    assert [op.magnitude for op in augment._ops] == list(range(1, 11))
    assert all(op.num_ops == 1 and op.num_magnitude_bins == 11 for op in augment._ops)
    assert "RandomHorizontalFlip" not in [type(s).__name__ for s in weak_image_transform(32, hflip=False).transforms]


def test_random_magnitude_rand_augment_validates_its_range():
    with pytest.raises(ValueError, match="min_magnitude"):
        RandomMagnitudeRandAugment(min_magnitude=5, max_magnitude=11)
    with pytest.raises(ValueError, match="num_ops"):
        RandomMagnitudeRandAugment(num_ops=0)


def test_view_transforms_from_reads_size_and_normalisation():
    evaluation = image_transform((24, 20), MEAN, STD, interpolation="bilinear")
    weak, strong = view_transforms_from(evaluation, hflip=False)
    for transform in (weak, strong):
        normalize = next(s for s in transform.transforms if isinstance(s, T.Normalize))
        assert tuple(normalize.mean) == MEAN and tuple(normalize.std) == STD
        resize = next(s for s in transform.transforms if isinstance(s, T.Resize))
        assert resize.interpolation == T.InterpolationMode.BILINEAR
        assert transform(texture(30, 30)).shape == (3, 24, 20)
    crop = next(s for s in weak.transforms if isinstance(s, T.RandomCrop))
    assert crop.padding == [2, 3]  # ⌊0.125 · 20⌋ left/right, ⌊0.125 · 24⌋ top/bottom


def test_view_transforms_from_errors():
    with pytest.raises(TypeError, match="torchvision Compose"):
        view_transforms_from(lambda image: image, hflip=False)
    with pytest.raises(ValueError, match="no Normalize"):
        view_transforms_from(T.Compose([T.Resize(32), T.CenterCrop(32), T.ToTensor()]), hflip=False)
    with pytest.raises(ValueError, match="fixed output size"):
        view_transforms_from(T.Compose([T.Resize(32), T.ToTensor(), T.Normalize(MEAN, STD)]), hflip=False)
    with pytest.raises(ValueError, match="evaluation"):
        view_transforms_from(image_transform(32, MEAN, STD, train=True), hflip=False)


# ----------------------------------------------------------------------------------------------- text

SENTENCE = "the quick brown fox jumps over the lazy dog while the cat sleeps by the warm fire"


def test_text_views_keep_a_sub_multiset_of_the_words_and_are_never_empty():
    views = TextViews()
    rng = random.Random(0)
    for text in (SENTENCE, "word", "two words", "  spaced   out\ttext \n"):
        original = Counter(text.split())
        for _ in range(200):
            for view in (views.weak(text, rng), views.strong(text, rng)):
                words = view.split()
                assert len(words) >= 1
                assert not Counter(words) - original
                assert view == " ".join(words)


def test_text_views_keep_one_word_even_when_everything_is_dropped():
    views = TextViews(weak_drop=0.999, strong_drop=0.999)
    rng = random.Random(1)
    kept = Counter()
    for _ in range(300):
        weak, strong = views.weak(SENTENCE, rng), views.strong(SENTENCE, rng)
        assert len(weak.split()) >= 1 and len(strong.split()) >= 1
        kept.update(weak.split())
    assert len(kept) > 5  # the surviving word is chosen at random, not always the first


def test_text_views_are_deterministic_for_a_seeded_generator():
    views = TextViews()
    first = [(views.weak(SENTENCE, r), views.strong(SENTENCE, r)) for r in [random.Random(42)] for _ in range(5)]
    rng = random.Random(42)
    second = [(views.weak(SENTENCE, rng), views.strong(SENTENCE, rng)) for _ in range(5)]
    assert first == second
    assert len(set(first)) > 1


def test_weak_drop_rate_and_strong_swaps():
    rng = random.Random(3)
    words = [f"w{i}" for i in range(4000)]
    kept = len(TextViews(weak_drop=0.1).weak(" ".join(words), rng).split())
    assert kept / len(words) == pytest.approx(0.9, abs=0.02)
    kept = len(TextViews(strong_drop=0.3).strong(" ".join(words), rng).split())
    assert kept / len(words) == pytest.approx(0.7, abs=0.02)
    # No deletion: the strong view is a permutation with at most 2 · max(1, ⌊0.1 · 10⌋) = 2 words moved.
    ten = " ".join(f"w{i}" for i in range(10))
    no_drop = TextViews(strong_drop=0.0, swap_fraction=0.1)
    moved = []
    for _ in range(50):
        view = no_drop.strong(ten, rng).split()
        assert sorted(view) == sorted(ten.split())
        moved.append(sum(a != b for a, b in zip(view, ten.split())))
    assert set(moved) == {2}  # exactly one swap of two distinct positions
    assert TextViews(weak_drop=0.0).weak(" a  b c ", rng) == "a b c"


def test_text_view_edge_cases_and_errors():
    views = TextViews()
    assert views.weak("", random.Random(0)) == ""
    assert views.strong("   ", random.Random(0)) == "   "
    with pytest.raises(TypeError, match="random.Random"):
        views.weak(SENTENCE, 0)
    with pytest.raises(ValueError, match="weak_drop"):
        TextViews(weak_drop=1.0)
    with pytest.raises(ValueError, match="swap_fraction"):
        TextViews(swap_fraction=-0.1)
