"""CoOp: context optimisation, prompt learning for frozen CLIP (Zhou et al., IJCV 2022, arXiv 2109.01134).

Prompts ``[SOS] [ctx_1] … [ctx_M] [tokens of class c] [.] [EOS]`` with ``M`` learned context vectors
(the only trained tensor), injected by a one-shot hook on the text tower's token embedding, so the
model's own text forward encodes them; the setting of the CMA loss of Song et al., arXiv 2409.16767.
Details (positions, ``init``, what is saved): docs/adapters.md ("CoOp details").
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch
from torch import nn

from hf_infonc.mode_settings import CoOpSettings
from hf_infonc.models import clip_towers
from hf_infonc.models.frozen_clip import FrozenCLIPHeadConfig, FrozenCLIPHeadModel

CLASS_TOKEN_POSITIONS = ("end", "middle", "front")
PLACEHOLDER = "X"


class CoOpConfig(FrozenCLIPHeadConfig):
    """Configuration of :class:`CoOpCLIP` (the prompt learner; the CLIP model is referenced, not stored)."""

    model_type = "hf_infonc_coop"

    n_ctx: int = 16
    ctx_init: str | None = None
    class_token_position: str = "end"
    init_std: float = 0.02
    ctx_dim: int | None = None
    prompt_length: int | None = None


class CoOpCLIP(FrozenCLIPHeadModel):
    """Frozen CLIP + ``n_ctx`` learned context vectors (``ctx``) before the class-name tokens; build with
    :meth:`from_clip`. Buffers: ``prompt_ids`` (``C x L`` ids of ``"X … X {class}."``),
    ``prompt_attention_mask``, ``name_lengths`` (tokens per class name)."""

    config_class = CoOpConfig

    def __init__(self, config: CoOpConfig, clip_model: nn.Module, tokenizer: Any = None) -> None:
        super().__init__(config, clip_model)
        if config.class_token_position not in CLASS_TOKEN_POSITIONS:
            raise ValueError(
                f"class_token_position={config.class_token_position!r}; expected one of {CLASS_TOKEN_POSITIONS}."
            )
        embedding = clip_towers.token_embedding(clip_model)
        width = embedding.weight.shape[-1]
        if config.ctx_dim is not None and config.ctx_dim != width:
            raise ValueError(
                f"These prompts have width {config.ctx_dim} but the text tower's token embeddings have width {width}: "
                f"they were learned for another base model."
            )
        config.ctx_dim = width
        device, dtype = embedding.weight.device, embedding.weight.dtype
        num_classes = len(config.class_names)
        self.ctx = nn.Parameter(torch.zeros(config.n_ctx, width, device=device, dtype=dtype))
        length = config.prompt_length or 1
        self.register_buffer("prompt_ids", torch.zeros(num_classes, length, dtype=torch.long, device=device))
        self.register_buffer("prompt_attention_mask", torch.ones(num_classes, length, dtype=torch.long, device=device))
        self.register_buffer("name_lengths", torch.ones(num_classes, dtype=torch.long, device=device))
        if tokenizer is not None:
            self._tokenize_prompts(tokenizer)
            self._init_context(tokenizer)
        self.post_init()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_clip(cls, clip_model: nn.Module, tokenizer: Any, class_names: list[str], **settings: Any) -> CoOpCLIP:
        """CoOp prompts for ``clip_model`` (frozen here) and ``class_names``.

        Args:
            tokenizer: the text tokenizer of ``clip_model`` (``transformers`` tokenizer or processor, or open_clip's).
            settings: the fields of :class:`CoOpSettings`, defaulting to its values.
        """
        n_ctx, init, class_token_position, init_std, seed = asdict(CoOpSettings(**settings)).values()
        clip_towers.require_clip(clip_model, "CoOp prompt learning")
        if n_ctx is None:
            if not init:
                raise ValueError("n_ctx=None needs an init phrase (n_ctx is then its number of tokens).")
            n_ctx = _phrase_tokens(tokenizer, init, clip_model).numel()
        if n_ctx < 1:
            raise ValueError(f"n_ctx={n_ctx}: CoOp needs at least one context vector.")
        config = CoOpConfig(
            class_names=[str(c) for c in class_names], n_ctx=int(n_ctx), ctx_init=init or None,
            class_token_position=class_token_position, init_std=init_std,
        )
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            return cls(config, clip_model, tokenizer=tokenizer)

    def _tokenize_prompts(self, tokenizer: Any) -> None:
        config = self.config
        names = [name.replace("_", " ") for name in config.class_names]
        placeholder = " ".join([PLACEHOLDER] * config.n_ctx)
        fixed_length = clip_towers.context_length(self.clip)
        ids, mask = clip_towers.tokenize(tokenizer, [f"{placeholder} {name}." for name in names], length=fixed_length)
        padded_to_fixed_length = mask is None or fixed_length is not None  # else: padded to the longest prompt
        if mask is None:
            mask = (ids != 0).long()  # open_clip tokenizers pad with 0
        lengths = mask.sum(dim=1)
        if padded_to_fixed_length and bool((lengths >= ids.shape[1]).any()):
            too_long = [n for n, length in zip(names, lengths.tolist()) if length >= ids.shape[1]]
            raise ValueError(
                f"Prompts with {config.n_ctx} context tokens do not fit the text context length {ids.shape[1]} for "
                f"{too_long[:3]}: use fewer context tokens or shorter class names."
            )
        context = ids[:, 1 : 1 + config.n_ctx]
        if context.shape[1] != config.n_ctx or not bool((context == context[0, 0]).all()):
            raise ValueError(
                f"The tokenizer does not map the {config.n_ctx} placeholders {PLACEHOLDER!r} to one token each "
                f"after the start token; CoOp cannot locate the context positions for this tokenizer."
            )
        names_tokens = lengths - config.n_ctx - 3  # [SOS] ctx name [.] [EOS]
        if bool((names_tokens < 1).any()):
            raise ValueError("A class name tokenised to no tokens; check class_names.")
        device = self.prompt_ids.device
        self.prompt_ids = ids.to(device)
        self.prompt_attention_mask = mask.to(device)
        self.name_lengths = names_tokens.to(device)
        config.prompt_length = int(ids.shape[1])

    @torch.no_grad()
    def _init_context(self, tokenizer: Any) -> None:
        config = self.config
        self.ctx.normal_(0.0, config.init_std)
        if not config.ctx_init:
            return
        phrase = _phrase_tokens(tokenizer, config.ctx_init, self.clip).to(self.ctx.device)
        if phrase.numel() > config.n_ctx:
            raise ValueError(
                f"The init phrase {config.ctx_init!r} has {phrase.numel()} tokens but n_ctx={config.n_ctx}: use "
                f"n_ctx >= {phrase.numel()} (or n_ctx=None to take the phrase length)."
            )
        vectors = clip_towers.token_embedding(self.clip)(phrase)
        self.ctx[config.n_ctx - phrase.numel() :] = vectors.to(self.ctx.dtype)

    # ------------------------------------------------------------------ prompts
    def prompt_embeddings(self) -> torch.Tensor:
        """``C x L x width`` token embeddings of the prompts with the context vectors in place."""
        with torch.no_grad():
            tokens = clip_towers.token_embedding(self.clip)(self.prompt_ids)
        ctx = self.ctx.to(tokens.dtype)
        n_ctx = self.config.n_ctx
        position = self.config.class_token_position
        if position == "end":
            shared = ctx.unsqueeze(0).expand(tokens.shape[0], -1, -1)
            return torch.cat([tokens[:, :1], shared, tokens[:, 1 + n_ctx :]], dim=1)
        rows = []
        half = n_ctx // 2
        for c, name_length in enumerate(self.name_lengths.tolist()):
            start = 1 + n_ctx
            name = tokens[c, start : start + name_length]
            rest = tokens[c, start + name_length :]
            if position == "front":
                parts = [tokens[c, :1], name, ctx, rest]
            else:  # middle
                parts = [tokens[c, :1], ctx[:half], name, ctx[half:], rest]
            rows.append(torch.cat(parts, dim=0))
        return torch.stack(rows)

    def encode_prompts(self) -> torch.Tensor:
        """Projected (not normalised) text embeddings of the C prompts, with gradients to ``ctx``."""
        embeds = self.prompt_embeddings()
        layer = clip_towers.token_embedding(self.clip)
        used = []

        def inject(_module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            if used or output.shape != embeds.shape:
                return output
            used.append(True)
            return embeds.to(output.dtype)

        handle = layer.register_forward_hook(inject)
        try:
            text = clip_towers.encode_text(self.clip, self.prompt_ids, self.prompt_attention_mask)
        finally:
            handle.remove()
        if not used:
            raise RuntimeError(
                f"The text tower of {type(self.clip).__name__} did not call its token embedding on the prompt ids; "
                f"CoOp could not inject the context vectors."
            )
        return text

    def head_rows(self) -> torch.Tensor:
        """``C x d`` normalised prompt embeddings (recomputed at each call: the context trains)."""
        return nn.functional.normalize(self.encode_prompts(), dim=-1)


def _phrase_tokens(tokenizer: Any, phrase: str, clip_model: nn.Module) -> torch.Tensor:
    """Token ids of ``phrase`` without the start/end/padding tokens."""
    ids, mask = clip_towers.tokenize(tokenizer, [phrase], length=clip_towers.context_length(clip_model))
    count = int((ids[0] != 0).sum() if mask is None else mask[0].sum())
    return ids[0, 1 : count - 1]
