"""Tiny models and data sets for the trainer tests (test_trainer, test_trainer_dropin, test_callbacks, the dist workers).

Modelled on transformers' own ``tests/trainer/test_trainer.py`` fixtures: a ``RegressionModel``
(``y = a·x + b``, one or two outputs) that no hf_infonc adapter supports, and a BERT classifier whose
loss uses ``num_items_in_batch`` (the normalisation ``Trainer`` applies to token-level losses).
"""

from __future__ import annotations

import datasets
import torch
from torch import nn
from transformers import BertForSequenceClassification, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput


class RegressionConfig(PretrainedConfig):
    model_type = "hf_infonc_test_regression"

    def __init__(self, a: float = 0.0, b: float = 0.0, double_output: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.a, self.b, self.double_output = a, b, double_output


class RegressionModel(PreTrainedModel):
    """``y = a·x + b`` with an MSE loss; ``double_output`` returns ``(loss, y, y)`` (several outputs)."""

    config_class = RegressionConfig
    base_model_prefix = "regression"

    def __init__(self, config: RegressionConfig) -> None:
        super().__init__(config)
        self.a = nn.Parameter(torch.tensor(config.a, dtype=torch.float32))
        self.b = nn.Parameter(torch.tensor(config.b, dtype=torch.float32))
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        pass

    def forward(self, input_x: torch.Tensor, labels: torch.Tensor | None = None, **kwargs):
        y = input_x * self.a + self.b
        if labels is None:
            return (y, y) if self.config.double_output else (y,)
        loss = nn.functional.mse_loss(y, labels)
        return (loss, y, y) if self.config.double_output else (loss, y)


def regression_dataset(n: int = 64, seed: int = 42) -> datasets.Dataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g)
    y = 2.0 * x + 3.0 + 0.1 * torch.randn(n, generator=g)
    ds = datasets.Dataset.from_dict({"input_x": x.tolist(), "labels": y.tolist()})
    ds.set_format("torch")
    return ds


class SummedBertForSequenceClassification(BertForSequenceClassification):
    """A BERT classifier whose loss is ``sum(CE) / num_items_in_batch`` when ``Trainer`` passes it (as
    token-level heads do): the case where ``Trainer`` skips the accumulation division on purpose."""

    def forward(self, input_ids=None, attention_mask=None, labels=None, num_items_in_batch=None, **kwargs):
        out = super().forward(input_ids=input_ids, attention_mask=attention_mask)
        loss = None
        if labels is not None:
            reduction = "mean" if num_items_in_batch is None else "sum"
            loss = nn.functional.cross_entropy(out.logits, labels, reduction=reduction)
            if num_items_in_batch is not None:
                loss = loss / num_items_in_batch
        return SequenceClassifierOutput(loss=loss, logits=out.logits)


def summed_bert(num_labels: int = 3, *, hidden: int = 32, seed: int = 0) -> SummedBertForSequenceClassification:
    from transformers import BertConfig

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=30522, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=64, num_labels=num_labels, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    return SummedBertForSequenceClassification(config)


def text_dataset(n: int = 40, num_labels: int = 3, seed: int = 0) -> datasets.Dataset:
    """Token ids whose first tokens carry the label (something to learn), with a ClassLabel column."""
    names = ["cat", "dog", "car", "bus", "sea"][:num_labels]
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_labels, (n,), generator=g)
    ids = torch.randint(1000, 3000, (n, 12), generator=g)
    ids[:, :3] = (500 + labels).unsqueeze(1)
    features = datasets.Features(
        {
            "input_ids": datasets.Sequence(datasets.Value("int64")),
            "attention_mask": datasets.Sequence(datasets.Value("int64")),
            "labels": datasets.ClassLabel(names=names),
        }
    )
    ds = datasets.Dataset.from_dict(
        {"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist(), "labels": labels.tolist()},
        features=features,
    )
    ds.set_format("torch")
    return ds


def image_dataset(n: int = 40, num_labels: int = 3, seed: int = 0, captions: bool = False) -> datasets.Dataset:
    g = torch.Generator().manual_seed(seed)
    columns = {"pixel_values": torch.randn(n, 3, 32, 32, generator=g).numpy()}
    if captions:
        ids = torch.randint(1000, 3000, (n, 8), generator=g)
        ids[:, 0], ids[:, -1] = 101, 102
        columns.update(input_ids=ids.tolist(), attention_mask=torch.ones_like(ids).tolist())
    else:
        columns["labels"] = torch.randint(0, num_labels, (n,), generator=g).tolist()
    ds = datasets.Dataset.from_dict(columns)
    ds.set_format("torch")
    return ds
