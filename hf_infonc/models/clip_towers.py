"""One interface over the CLIP families: ``transformers.CLIPModel``, open_clip models, our wrapper.

Adapters, CoOp prompt learning and the linear probe all need the same few operations on a
two-tower model; this module does the family dispatch in one place:

* :func:`clip_family` — ``"hf-clip"``, ``"open_clip"`` or ``None`` (not a CLIP model);
* :func:`encode_image` / :func:`encode_text` — *un-normalised* projected embeddings;
* :func:`logit_scale` — the learned temperature parameter (``scale = logit_scale.exp()``);
* :func:`token_embedding` — the ``nn.Embedding`` whose output the text tower consumes
  (CoOp swaps the context-token rows of its output);
* :func:`text_parameters` / :func:`vision_parameters` — the parameters of each side (the text
  side is everything but the vision tower and the logit scale/bias).

``OpenCLIPModel`` (the ``PreTrainedModel`` wrapper of :mod:`hf_infonc.models.open_clip_hf`) is
handled as the open_clip model it holds.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn


def _pooled(output: Any) -> torch.Tensor:
    """``get_*_features`` returns a ``BaseModelOutputWithPooling`` in transformers 5, a tensor before."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def _open_clip_classes() -> tuple[type, ...]:
    try:
        from open_clip.model import CLIP, CustomTextCLIP
    except ImportError:  # pragma: no cover - open_clip is a dependency
        return ()
    return (CLIP, CustomTextCLIP)


def inner_open_clip(model: nn.Module) -> nn.Module | None:
    """The open_clip ``CLIP``/``CustomTextCLIP`` of ``model`` (itself, or the one our wrapper holds)."""
    classes = _open_clip_classes()
    if classes and isinstance(model, classes):
        return model
    from hf_infonc.models.open_clip_hf import OpenCLIPModel

    if isinstance(model, OpenCLIPModel) and classes and isinstance(model.clip, classes):
        return model.clip
    return None


def clip_family(model: nn.Module) -> str | None:
    """``"hf-clip"`` for ``transformers.CLIPModel``, ``"open_clip"`` for open_clip models, else ``None``."""
    from transformers import CLIPModel

    if isinstance(model, CLIPModel):
        return "hf-clip"
    if inner_open_clip(model) is not None:
        return "open_clip"
    return None


def require_clip(model: nn.Module, what: str) -> str:
    family = clip_family(model)
    if family is None:
        raise TypeError(
            f"{what} needs a CLIP model (transformers.CLIPModel, an open_clip CLIP/CustomTextCLIP, or "
            f"hf_infonc.models.OpenCLIPModel); got {type(model).__name__}."
        )
    return family


def encode_image(model: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """Projected (not normalised) image embeddings, ``n x d``."""
    if clip_family(model) == "hf-clip":
        return _pooled(model.get_image_features(pixel_values=pixel_values))
    return inner_open_clip(model).encode_image(pixel_values)


def encode_text(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Projected (not normalised) text embeddings, ``n x d``.

    open_clip text towers derive padding from the ids themselves, so ``attention_mask`` is only
    used by ``transformers.CLIPModel``.
    """
    if clip_family(model) == "hf-clip":
        return _pooled(model.get_text_features(input_ids=input_ids, attention_mask=attention_mask))
    return inner_open_clip(model).encode_text(input_ids)


def logit_scale(model: nn.Module) -> nn.Parameter:
    """The learned log-temperature (``logits = logit_scale.exp() · img_n · txt_nᵀ``)."""
    if clip_family(model) == "hf-clip":
        return model.logit_scale
    return inner_open_clip(model).logit_scale


def token_embedding(model: nn.Module) -> nn.Embedding:
    """The token-embedding layer of the text tower (its output is what CoOp edits)."""
    if clip_family(model) == "hf-clip":
        return model.text_model.embeddings.token_embedding
    clip = inner_open_clip(model)
    if hasattr(clip, "token_embedding"):  # open_clip CLIP: text tower flattened into the model
        return clip.token_embedding
    text = clip.text
    if hasattr(text, "token_embedding"):  # TextTransformer
        return text.token_embedding
    if hasattr(text, "transformer") and hasattr(text.transformer, "get_input_embeddings"):  # HFTextEncoder
        return text.transformer.get_input_embeddings()
    raise TypeError(f"Cannot find the token embedding of the open_clip text tower {type(text).__name__}.")


def context_length(model: nn.Module) -> int | None:
    """The fixed token length an open_clip text tower expects (``None`` when any length up to the max works)."""
    if clip_family(model) == "hf-clip":
        return None
    clip = inner_open_clip(model)
    text = getattr(clip, "text", None)
    if text is not None and type(text).__name__ == "HFTextEncoder":
        return None
    return int(clip.context_length)


def vision_parameters(model: nn.Module) -> Iterator[nn.Parameter]:
    if clip_family(model) == "hf-clip":
        yield from model.vision_model.parameters()
        yield from model.visual_projection.parameters()
    else:
        yield from inner_open_clip(model).visual.parameters()


def text_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters of the text side: everything except the vision tower and the logit scale/bias."""
    if clip_family(model) == "hf-clip":
        return [*model.text_model.parameters(), *model.text_projection.parameters()]
    clip = inner_open_clip(model)
    excluded = {id(p) for p in clip.visual.parameters()}
    for name in ("logit_scale", "logit_bias"):
        value = getattr(clip, name, None)
        if isinstance(value, nn.Parameter):
            excluded.add(id(value))
    return [p for p in clip.parameters() if id(p) not in excluded]


def is_hf_tokenizer(tokenizer: Any) -> bool:
    from transformers import PreTrainedTokenizerBase

    return isinstance(tokenizer, PreTrainedTokenizerBase)


def tokenize(tokenizer: Any, texts: list[str], *, length: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Token ids (and the attention mask, when the tokenizer gives one) for a list of texts.

    ``tokenizer`` is a ``transformers`` tokenizer (or a processor holding one in ``.tokenizer``),
    or an open_clip tokenizer (a callable returning a LongTensor of ids, padded to its context
    length). ``length``: pad/truncate a transformers tokenizer's output to exactly this many
    tokens (open_clip text towers with a fixed context length need it).
    """
    from transformers import ProcessorMixin

    if isinstance(tokenizer, ProcessorMixin):  # CLIPProcessor & co: use the text tokenizer it holds
        tokenizer = tokenizer.tokenizer
    if is_hf_tokenizer(tokenizer):
        if length is None:
            batch = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        else:
            batch = tokenizer(texts, padding="max_length", max_length=length, truncation=True, return_tensors="pt")
        return batch["input_ids"], batch.get("attention_mask")
    if not callable(tokenizer):
        raise TypeError(
            f"Expected a transformers tokenizer or an open_clip tokenizer (a callable returning token ids), got "
            f"{type(tokenizer).__name__}."
        )
    ids = tokenizer(texts)
    if not isinstance(ids, torch.Tensor):
        raise TypeError(f"The tokenizer {type(tokenizer).__name__} returned {type(ids).__name__}, expected a LongTensor of ids.")
    return ids.long(), None
