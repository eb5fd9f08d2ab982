"""The semi-supervised data stream: units of 1 labelled + μ unlabelled examples, their collator, and both from a
recipe with an ``ssl:`` section (the labelled subset, the unlabelled pool and the views)."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from hf_infonc.semi_supervised.config import SemiSupervisedConfig

#: Keys of a semi-supervised batch that are not model inputs.
SSL_KEYS = ("labels", "ssl_num_labeled", "ssl_unlabeled_labels")


class SemiSupervisedDataset(torch.utils.data.Dataset):
    """Units of 1 labelled + μ unlabelled raw rows (the collator makes the views).

    One pass visits every unlabelled example once (seeded permutation) and cycles through the
    labelled set, as in FixMatch; ``μ = 0`` gives the labelled stream alone (the supervised baseline).
    """

    def __init__(
        self, labeled: Sequence[Any], unlabeled: Sequence[Any] | None, unlabeled_ratio: int, seed: int = 0
    ) -> None:
        if len(labeled) == 0:
            raise ValueError(
                "The labelled dataset is empty: semi-supervised training needs at least one labelled example."
            )
        if unlabeled_ratio > 0 and (unlabeled is None or len(unlabeled) == 0):
            raise ValueError(f"unlabeled_ratio={unlabeled_ratio} but the unlabelled dataset is empty or missing.")
        self.labeled = labeled
        self.unlabeled = unlabeled
        self.unlabeled_ratio = unlabeled_ratio
        generator = torch.Generator().manual_seed(seed)
        self._labeled_order = torch.randperm(len(labeled), generator=generator).tolist()
        self._unlabeled_order = (
            torch.randperm(len(unlabeled), generator=generator).tolist() if unlabeled_ratio > 0 else []
        )

    def __len__(self) -> int:
        if self.unlabeled_ratio == 0:
            return len(self.labeled)
        return max(math.ceil(len(self.unlabeled) / self.unlabeled_ratio), len(self.labeled))

    def __getitem__(self, index: int) -> dict[str, Any]:
        labeled = self.labeled[self._labeled_order[index % len(self.labeled)]]
        mu = self.unlabeled_ratio
        order = self._unlabeled_order
        unlabeled = [self.unlabeled[order[(index * mu + j) % len(order)]] for j in range(mu)]
        return {"labeled": labeled, "unlabeled": unlabeled}


@dataclass(kw_only=True, eq=False)
class SemiSupervisedCollator:
    """Units → one model batch ``[labelled; weak views; strong views]`` plus the SSL bookkeeping.

    Keys: the model inputs of all ``B + 2·μB`` rows, ``labels`` (the ``B`` labelled classes),
    ``ssl_num_labeled`` and ``ssl_unlabeled_labels`` (true classes of the unlabelled rows, else -1;
    only logged). Images: the three transforms (PIL image → tensor). Text: ``tokenizer`` and
    ``text_views`` (:class:`hf_infonc.data.augment.TextViews`); the labelled text is used as is.
    """

    labeled_transform: Callable[[Any], torch.Tensor] | None = None
    weak_transform: Callable[[Any], torch.Tensor] | None = None
    strong_transform: Callable[[Any], torch.Tensor] | None = None
    tokenizer: Any = None
    text_views: Any = None
    max_length: int | None = 128
    image_column: str = "image"
    text_column: str = "text"
    label_column: str = "label"

    def __post_init__(self) -> None:
        if self.tokenizer is None and self.labeled_transform is None:
            raise ValueError("SemiSupervisedCollator needs image transforms (images) or a tokenizer (text).")
        if self.tokenizer is not None and self.text_views is None:
            raise ValueError("SemiSupervisedCollator: text data needs text_views (hf_infonc.data.augment.TextViews).")

    def __call__(self, units: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        labeled = [unit["labeled"] for unit in units]
        unlabeled = [row for unit in units for row in unit["unlabeled"]]
        labels = torch.tensor([int(row[self.label_column]) for row in labeled], dtype=torch.long)
        if self.tokenizer is not None:
            from hf_infonc.data.collate import tokenize_texts

            rng = random.Random(int(torch.randint(0, 2**62, (1,))))
            texts = [str(row[self.text_column]) for row in labeled]
            texts += [self.text_views.weak(str(row[self.text_column]), rng) for row in unlabeled]
            texts += [self.text_views.strong(str(row[self.text_column]), rng) for row in unlabeled]
            batch = tokenize_texts(self.tokenizer, texts, self.max_length)
        else:
            images = [self.labeled_transform(row[self.image_column]) for row in labeled]
            if unlabeled:
                images += [self.weak_transform(row[self.image_column]) for row in unlabeled]
                images += [self.strong_transform(row[self.image_column]) for row in unlabeled]
            batch = {"pixel_values": torch.stack(images).float()}
        batch["labels"] = labels
        batch["ssl_num_labeled"] = torch.tensor(len(labeled))
        truth = [row.get(self.label_column, -1) for row in unlabeled]
        batch["ssl_unlabeled_labels"] = torch.tensor([-1 if v is None else int(v) for v in truth], dtype=torch.long)
        return batch


def split_labeled_unlabeled(train: Any, labels_per_class: int, *, seed: int, max_unlabeled: int | None = None):
    """The labelled subset (``labels_per_class`` per class, drawn with ``seed``) and the unlabelled pool: the
    whole split, as in FixMatch and USB (its labels only log the pseudo-label accuracy), capped at
    ``max_unlabeled`` (stratified, same ``seed``)."""
    from hf_infonc.data import sample_few_shot, subsample

    return sample_few_shot(train, labels_per_class, seed=seed), subsample(train, max_unlabeled, seed=seed)


def _with_extra_split(unlabeled: Any, data_config: Any, split: str) -> Any:
    """The unlabelled pool plus the rows of another split of the same source (labels kept or -1)."""
    from datasets import concatenate_datasets

    from hf_infonc.data import load_source

    splits = load_source(data_config)
    if split not in splits:
        raise ValueError(
            f"ssl.unlabeled_split={split!r}: source '{data_config.source}' has the splits {list(splits)}. Use one of "
            f"them, or a copy of the dataset that has the split."
        )
    extra = splits[split].select_columns(unlabeled.column_names).cast(unlabeled.features)
    return concatenate_datasets([unlabeled, extra])


def semi_supervised_training_data(
    recipe: Any, built: Any, datasets: Any
) -> tuple[SemiSupervisedDataset, SemiSupervisedCollator]:
    """The training dataset and collator of a recipe with an ``ssl:`` section (``datasets["train"]``: the
    full training split). Labelled images get the weak view, labelled text stays as is (docs/semi_supervised.md)."""
    from hf_infonc.data import build_image_transform, resolve_hflip
    from hf_infonc.data.augment import TextViews, view_transforms_from

    config: SemiSupervisedConfig = recipe.ssl
    k = config.labels_per_class or recipe.data.shots
    labeled, unlabeled = split_labeled_unlabeled(
        datasets["train"], k, seed=recipe.data.seed, max_unlabeled=config.max_unlabeled
    )
    if config.unlabeled_split is not None and config.uses_unlabeled:
        unlabeled = _with_extra_split(unlabeled, recipe.data, config.unlabeled_split)
    dataset = SemiSupervisedDataset(
        labeled, unlabeled if config.uses_unlabeled else None,
        config.unlabeled_ratio if config.uses_unlabeled else 0, seed=recipe.seed,
    )
    if "text" in labeled.column_names:
        collator = SemiSupervisedCollator(
            tokenizer=built.tokenizer, text_views=TextViews(), max_length=recipe.data.max_length
        )
    else:
        eval_transform = build_image_transform(recipe.data, built.image_preprocessing, train=False)
        weak, strong = view_transforms_from(eval_transform, hflip=resolve_hflip(recipe.data))
        collator = SemiSupervisedCollator(labeled_transform=weak, weak_transform=weak, strong_transform=strong)
    return dataset, collator
