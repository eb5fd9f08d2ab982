"""Recipe glue: the labelled subset, the unlabelled pool and the views of a recipe with an ``ssl:`` section."""

from __future__ import annotations

from typing import Any

from hf_infonc.semi_supervised.config import SemiSupervisedConfig
from hf_infonc.semi_supervised.data import SemiSupervisedCollator, SemiSupervisedDataset


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
