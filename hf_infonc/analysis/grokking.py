"""Grokking of modular addition, tracked with MIR and HDR (docs/theory.md §5; arXiv 2406.03999).

The setting of Nanda et al. 2023 (docs/grokking.md, "Setting"): ``(a + b) mod p`` read at the last position of
``[a, b, =]``, a one-layer ReLU transformer without layer norm, full-batch AdamW; MIR/HDR between
``G(final-position features)`` and ``G(W_U.T[labels])`` on a seeded subset of each split.
Usage: ``python -m hf_infonc.analysis.grokking --steps 10000 --out runs/grokking``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from hf_infonc.errors import UserError
from hf_infonc.info import entropy_at_collapse, entropy_terms, mir_at_collapse
from hf_infonc.info.mutual import mir_hdr

logger = logging.getLogger(__name__)

#: The keys of every history record, in order.
HISTORY_KEYS: tuple[str, ...] = (
    "step", "elapsed_s", "train_loss", "test_loss", "train_acc", "test_acc",
    *(f"{split}_{key}" for split in ("train", "test") for key in ("mir", "hdr", "mi", "h_features", "h_heads")),
    "weight_norm",
)


@dataclass
class GrokkingConfig:
    """Settings of the grokking run; the defaults are the paper's (docs/grokking.md, "Setting").

    ``eval_every``: evaluate (loss, accuracy, MIR, HDR) every this many steps, at step 0 and at the last step, and
    with ``log_evals`` also at log-spaced steps below it (1, 2, 3, 6, 10, 18, 32, 56 for 100). ``info_subset``:
    samples per split for the matrix-information measures (a fixed seeded subset; None: all). ``seed`` seeds the
    split, the initialisation and the subsets. ``grokking_threshold``: the test accuracy that marks the jump.
    ``num_threads``: torch CPU threads during the run (None: torch's default; 1 is fastest on a shared CPU).
    """

    modulus: int = 113
    train_fraction: float = 0.3
    d_model: int = 128
    n_heads: int = 4
    d_mlp: int = 512
    lr: float = 1e-3
    weight_decay: float = 1.0
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_steps: int = 10
    steps: int = 10000
    eval_every: int = 100
    seed: int = 0
    device: str = "cpu"
    info_subset: int | None = 1024
    grokking_threshold: float = 0.95
    num_threads: int | None = None
    log_evals: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.modulus, int) or self.modulus < 3:
            raise UserError(f"modulus={self.modulus!r} must be an int ≥ 3 (MIR needs at least 3 classes).")
        if not 0.0 < self.train_fraction < 1.0:
            raise UserError(f"train_fraction={self.train_fraction} must lie strictly between 0 and 1.")
        if self.d_model % self.n_heads:
            raise UserError(f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}.")
        if self.steps < 1 or self.eval_every < 1:
            raise UserError(f"steps={self.steps} and eval_every={self.eval_every} must be ≥ 1.")
        if self.info_subset is not None and self.info_subset < 2:
            raise UserError(f"info_subset={self.info_subset} must be ≥ 2 samples, or None for all samples.")
        if not 0.0 < self.grokking_threshold <= 1.0:
            raise UserError(f"grokking_threshold={self.grokking_threshold} must be in (0, 1].")
        self.betas = (float(self.betas[0]), float(self.betas[1]))
        n_pairs = self.modulus**2
        n_train = int(self.train_fraction * n_pairs)
        if n_train < 1 or n_train >= n_pairs:
            raise UserError(
                f"train_fraction={self.train_fraction} leaves {n_train} of {n_pairs} pairs for training; "
                f"both splits must be non-empty."
            )


@dataclass
class ModularAdditionData:
    """All ``p²`` pairs: ``tokens`` ``(p², 3)`` = ``[a, b, p]`` (``p`` is ``=``), labels ``(a+b) mod p``, a split."""

    modulus: int
    tokens: torch.Tensor
    labels: torch.Tensor
    train_idx: torch.Tensor
    test_idx: torch.Tensor


def make_modular_addition_data(modulus: int, train_fraction: float, seed: int) -> ModularAdditionData:
    """Build the dataset and split it: a seeded permutation of the pairs, the first
    ``int(train_fraction · p²)`` for training (as in Nanda et al.), the rest for testing."""
    p = modulus
    pairs = torch.cartesian_prod(torch.arange(p), torch.arange(p))  # (p², 2): every (a, b), a-major
    tokens = torch.cat([pairs, torch.full((p * p, 1), p)], dim=1)
    labels = pairs.sum(dim=1) % p
    perm = torch.randperm(p * p, generator=torch.Generator().manual_seed(seed))
    n_train = int(train_fraction * p * p)
    return ModularAdditionData(p, tokens, labels, perm[:n_train].sort().values, perm[n_train:].sort().values)


class ModularAdditionTransformer(nn.Module):
    """One-layer ReLU transformer without layer norm (Nanda et al. 2023), parameters named as there.

    ``forward(a, b)`` returns ``(logits, features)`` at the last position: ``features`` is the final residual stream
    (``n x d_model``) and ``logits = features @ W_U`` (``n x p``).
    """

    def __init__(self, modulus: int = 113, d_model: int = 128, n_heads: int = 4, d_mlp: int = 512, *, seed: int = 0):
        super().__init__()
        p, d, h = modulus, d_model, n_heads
        self.modulus, self.d_model, self.n_heads, self.d_head, self.d_mlp = p, d, h, d // h, d_mlp
        vocab = p + 1
        g = torch.Generator().manual_seed(seed)
        # Initialisation as in Nanda et al.: N(0, 1/d_model), the unembedding N(0, 1/d_vocab), biases 0. The columns
        # of W_Q, W_K, W_V (rows of W_O) are grouped by head: head i is [:, i*d_head:(i+1)*d_head].
        shapes = {"W_E": (vocab, d), "W_pos": (3, d), "W_Q": (d, d), "W_K": (d, d), "W_V": (d, d), "W_O": (d, d),
                  "W_in": (d, d_mlp), "b_in": (d_mlp,), "W_out": (d_mlp, d), "b_out": (d,), "W_U": (d, p)}
        for name, shape in shapes.items():
            scale = 1.0 / math.sqrt(vocab if name == "W_U" else d)
            value = torch.zeros(shape) if name.startswith("b_") else torch.randn(*shape, generator=g) * scale
            setattr(self, name, nn.Parameter(value))

    @property
    def head_rows(self) -> torch.Tensor:
        """The ``p x d_model`` classifier rows ``W_U.T`` (one per class)."""
        return self.W_U.T

    def _mlp(self, x: torch.Tensor) -> torch.Tensor:
        return x + F.relu(x @ self.W_in + self.b_in) @ self.W_out + self.b_out

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and features at the last position of ``[a, b, =]``, as :meth:`forward_sequence` at about half the
        cost: the query of the constant ``=`` token, the keys/values of positions 0 and 1 from per-token tables."""
        p, h, dh = self.modulus, self.n_heads, self.d_head
        n = a.shape[0]
        r_eq = self.W_E[p] + self.W_pos[2]  # residual stream of "=" at position 2 (same for all)
        r_a = self.W_E[:p] + self.W_pos[0]  # (p, d): every possible token at position 0
        r_b = self.W_E[:p] + self.W_pos[1]
        q = (r_eq @ self.W_Q).view(h, dh)
        scale = 1.0 / math.sqrt(dh)
        score_a = ((r_a @ self.W_K).view(p, h, dh) * q).sum(-1) * scale  # (p, h)
        score_b = ((r_b @ self.W_K).view(p, h, dh) * q).sum(-1) * scale
        score_eq = ((r_eq @ self.W_K).view(h, dh) * q).sum(-1) * scale  # (h,)
        scores = torch.stack([score_a[a], score_b[b], score_eq.expand(n, h)], dim=-1)  # (n, h, 3)
        pattern = scores.softmax(dim=-1).unsqueeze(-1)
        values = (
            pattern[:, :, 0] * (r_a @ self.W_V)[a].view(n, h, dh)
            + pattern[:, :, 1] * (r_b @ self.W_V)[b].view(n, h, dh)
            + pattern[:, :, 2] * (r_eq @ self.W_V).view(h, dh)
        )
        resid = r_eq + values.reshape(n, h * dh) @ self.W_O
        features = self._mlp(resid)
        return features @ self.W_U, features

    def forward_sequence(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reference computation over the whole sequence (causal attention, MLP at every
        position); returns the logits and features at the last position, like :meth:`forward`."""
        n, t = tokens.shape
        resid = self.W_E[tokens] + self.W_pos[:t]  # (n, t, d)
        qkv = [(resid @ w).view(n, t, self.n_heads, -1).transpose(1, 2) for w in (self.W_Q, self.W_K, self.W_V)]
        z = F.scaled_dot_product_attention(*qkv, is_causal=True).transpose(1, 2).reshape(n, t, self.d_model)
        resid = self._mlp(resid + z @ self.W_O)
        features = resid[:, -1]
        return features @ self.W_U, features


def information_measures(features: torch.Tensor, head_rows: torch.Tensor) -> dict[str, float]:
    """MIR, HDR, MI and the two matrix entropies between ``G(features)`` and ``G(head_rows)``, from one call of
    :func:`hf_infonc.info.entropy_terms` (float64); a ratio is NaN, with a warning, if an entropy is 0."""
    terms = entropy_terms(features.detach(), head_rows.detach())
    mi = terms.mutual_information
    values = (*mir_hdr(terms.h_a, terms.h_b, mi, "nan"), mi, terms.h_a, terms.h_b)
    return {key: float(value) for key, value in zip(("mir", "hdr", "mi", "h_features", "h_heads"), values)}


def _split_metrics(model: ModularAdditionTransformer, tokens: torch.Tensor, labels: torch.Tensor,
                   info_rows: torch.Tensor) -> dict[str, float]:
    logits, features = model(tokens[:, 0], tokens[:, 1])
    return {
        "loss": float(F.cross_entropy(logits.double(), labels)),
        "acc": float((logits.argmax(dim=-1) == labels).double().mean()),
        **information_measures(features[info_rows], model.head_rows[labels[info_rows]]),
    }


def eval_steps_below(limit: int, per_decade: int = 4) -> list[int]:
    """Log-spaced steps ``round(10**(k / per_decade))`` below ``limit``, without repeats."""
    candidates = (round(10 ** (k / per_decade)) for k in range(math.ceil(per_decade * math.log10(limit)) + 1))
    return sorted({step for step in candidates if step < limit})


def first_step_at_or_above(steps: list[int], values: list[float], threshold: float) -> int | None:
    """The first ``steps[i]`` with ``values[i] ≥ threshold`` (None if never)."""
    return next((int(step) for step, value in zip(steps, values) if value >= threshold), None)


@dataclass
class GrokkingResult:
    """The outcome of :func:`run_grokking`: ``history`` maps each of :data:`HISTORY_KEYS` to one value per
    evaluation; ``grokking_step`` (``memorization_step``) is the first evaluated step with test (train) accuracy
    ≥ the threshold, or None; ``info_time_s`` is the part of ``wall_time_s`` spent in evaluations."""

    config: GrokkingConfig
    history: dict[str, list[float]]
    grokking_step: int | None
    memorization_step: int | None
    wall_time_s: float
    info_time_s: float
    mir_at_collapse: float
    entropy_at_collapse: float
    environment: dict[str, Any] = field(default_factory=dict)

    @property
    def grokking_wall_time_s(self) -> float | None:
        """Seconds from the start of the run to the evaluation at :attr:`grokking_step`."""
        if self.grokking_step is None:
            return None
        return self.history["elapsed_s"][self.history["step"].index(self.grokking_step)]

    def to_json(self, path: str | Path) -> Path:
        """Write the result (config with seed, history, summary) as JSON; returns the path."""
        data = {**asdict(self), "grokking_wall_time_s": self.grokking_wall_time_s}
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=1, allow_nan=True) + "\n")
        return path

    @classmethod
    def from_json(cls, path: str | Path) -> GrokkingResult:
        data = json.loads(Path(path).read_text())
        data.pop("grokking_wall_time_s", None)
        return cls(config=GrokkingConfig(**data.pop("config")), **data)  # __post_init__ makes betas a tuple


def run_grokking(cfg: GrokkingConfig | None = None, *, progress: bool = True,
                 callback: Callable[[dict[str, float], ModularAdditionTransformer], bool | None] | None = None,
                 ) -> GrokkingResult:
    """Train the one-layer transformer on modular addition and track MIR / HDR (docs/theory.md §5).

    Args:
        cfg: the settings (default: the paper's, :class:`GrokkingConfig`).
        progress: show a tqdm progress bar with the latest accuracies.
        callback: called after every evaluation with the new history record and the model;
            returning True stops training there.

    Returns:
        A :class:`GrokkingResult`. Ctrl-C stops training, evaluates the current step and returns the history so far
        (``environment["interrupted"]`` is True).
    """
    cfg = cfg or GrokkingConfig()
    previous = torch.get_num_threads()
    if cfg.num_threads is not None:
        torch.set_num_threads(cfg.num_threads)
    try:
        return _run(cfg, progress, callback)
    finally:
        torch.set_num_threads(previous)


def _run(cfg: GrokkingConfig, progress: bool, callback: Callable[..., bool | None] | None) -> GrokkingResult:
    from tqdm.auto import tqdm

    device = torch.device(cfg.device)
    data = make_modular_addition_data(cfg.modulus, cfg.train_fraction, cfg.seed)
    x_train, y_train = data.tokens[data.train_idx].to(device), data.labels[data.train_idx].to(device)
    x_test, y_test = data.tokens[data.test_idx].to(device), data.labels[data.test_idx].to(device)

    sub_gen = torch.Generator().manual_seed(cfg.seed + 1)

    def subset(n: int) -> torch.Tensor:
        if cfg.info_subset is None or cfg.info_subset >= n:
            return torch.arange(n, device=device)
        return torch.randperm(n, generator=sub_gen)[: cfg.info_subset].sort().values.to(device)

    info_train, info_test = subset(len(y_train)), subset(len(y_test))

    model = ModularAdditionTransformer(cfg.modulus, cfg.d_model, cfg.n_heads, cfg.d_mlp, seed=cfg.seed).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=cfg.betas)
    warmup = max(cfg.warmup_steps, 0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min((s + 1) / warmup, 1.0) if warmup else 1.0)

    records: list[dict[str, float]] = []  # one per evaluation, appended whole (Ctrl-C leaves no half record)
    start = time.perf_counter()
    info_time = 0.0

    def evaluate(step: int) -> dict[str, float]:
        nonlocal info_time
        t0 = time.perf_counter()
        model.eval()
        with torch.no_grad():
            train = _split_metrics(model, x_train, y_train, info_train)
            test = _split_metrics(model, x_test, y_test, info_test)
            weight_norm = float(torch.sqrt(sum((p.double() ** 2).sum() for p in model.parameters())))
        model.train()
        info_time += time.perf_counter() - t0
        record: dict[str, float] = {"step": step, "elapsed_s": time.perf_counter() - start, "weight_norm": weight_norm}
        record.update({f"{split}_{key}": value for split, values in (("train", train), ("test", test))
                       for key, value in values.items()})
        records.append(record)
        return record

    early = set(eval_steps_below(cfg.eval_every)) if cfg.log_evals else set()
    bar = tqdm(total=cfg.steps, desc="grokking", disable=not progress, dynamic_ncols=True)
    callback = callback or (lambda record, model: False)
    step = 0
    stop = bool(callback(evaluate(0), model))
    a_train, b_train = x_train[:, 0], x_train[:, 1]
    interrupted = False
    try:
        while step < cfg.steps and not stop:
            logits, _ = model(a_train, b_train)
            loss = F.cross_entropy(logits.double(), y_train)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            bar.update(1)
            if step % cfg.eval_every == 0 or step == cfg.steps or step in early:
                record = evaluate(step)
                bar.set_postfix(loss=f"{record['train_loss']:.2e}", train_acc=f"{record['train_acc']:.3f}",
                                test_acc=f"{record['test_acc']:.3f}", test_mir=f"{record['test_mir']:.3f}",
                                refresh=False)
                stop = bool(callback(record, model))
    except KeyboardInterrupt:  # Ctrl-C: keep what was measured, evaluate where training stopped
        interrupted = True
        logger.warning("grokking run interrupted at step %d; returning the history so far", step)
        if records[-1]["step"] != step:
            evaluate(step)
    bar.close()
    history = {key: [record[key] for record in records] for key in HISTORY_KEYS}

    wall = time.perf_counter() - start
    threshold = cfg.grokking_threshold
    environment = {"torch": torch.__version__, "python": platform.python_version(), "device": str(device),
                   "num_threads": torch.get_num_threads(), "n_train": len(y_train), "n_test": len(y_test),
                   "n_info_train": len(info_train), "n_info_test": len(info_test), "interrupted": interrupted}
    result = GrokkingResult(
        config=cfg, history=history,
        grokking_step=first_step_at_or_above(history["step"], history["test_acc"], threshold),
        memorization_step=first_step_at_or_above(history["step"], history["train_acc"], threshold),
        wall_time_s=wall, info_time_s=info_time, mir_at_collapse=float(mir_at_collapse(cfg.modulus)),
        entropy_at_collapse=float(entropy_at_collapse(cfg.modulus)), environment=environment,
    )
    logger.info("grokking: %s steps in %.0f s; memorisation step %s, grokking step %s", step, wall,
                result.memorization_step, result.grokking_step)
    return result


def plot_grokking(result: GrokkingResult, path: str | Path, *, title: str | None = None) -> Path:
    """Accuracy, MIR / HDR and loss over the steps (log x axis, without step 0); vertical lines at the grokking
    step (solid) and the memorisation step (dotted), ``mir_at_collapse(p)`` dashed. Returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    hist, cfg, p = result.history, result.config, result.config.modulus
    keep = [i for i, s in enumerate(hist["step"]) if s > 0]
    steps = [hist["step"][i] for i in keep]
    figure = Figure(figsize=(7.5, 9), layout="constrained")
    FigureCanvasAgg(figure)
    axes = ax_acc, ax_info, ax_loss = figure.subplots(3, 1, sharex=True)
    for ax, key, style, label in ((ax_acc, "acc", "-", "{} accuracy"), (ax_info, "mir", "-", "MIR {}"),
                                  (ax_info, "hdr", "-.", "HDR {}"), (ax_loss, "loss", "-", "{} loss")):
        for color, split in (("C0", "train"), ("C1", "test")):
            values = [hist[f"{split}_{key}"][i] for i in keep]
            ax.plot(steps, values, color=color, ls=style, label=label.format(split))
    ax_acc.set(ylabel="accuracy", ylim=(-0.02, 1.02))
    ax_info.axhline(result.mir_at_collapse, color="k", ls="--", lw=1, label=f"MIR at collapse (C={p})")
    ax_info.set(ylabel="MIR / HDR", ylim=(-0.02, 1.02))
    ax_loss.set(yscale="log", ylabel="cross-entropy", xlabel="step (full batch)", xscale="log")

    handles, labels = ax_acc.get_legend_handles_labels()
    marks = (("memorization_step", "train", dict(color="0.5", ls=":")), ("grokking_step", "test", dict(color="C3")))
    for attribute, split, style in marks:
        step = getattr(result, attribute)
        if step:
            for ax in axes:
                ax.axvline(step, lw=1, alpha=0.7 if split == "test" else 1.0, **style)
            handles.append(Line2D([], [], **style))
            labels.append(f"{split} acc ≥ {cfg.grokking_threshold:g} (step {step})")
    for ax in axes:
        ax.grid(True, which="major", alpha=0.3)
    ax_acc.legend(handles, labels, loc="center left", fontsize=8)
    ax_info.legend(loc="center left", fontsize=8, ncol=2)
    ax_loss.legend(loc="lower left", fontsize=8)
    default_title = (f"Grokking (a+b) mod {p}: 1-layer transformer, AdamW lr {cfg.lr:g}, wd {cfg.weight_decay:g}, "
                     f"train {cfg.train_fraction:.0%}, seed {cfg.seed}")
    figure.suptitle(title or default_title, fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path


#: The command-line options that set a :class:`GrokkingConfig` field: (flag, field, type, help before the default).
CONFIG_OPTIONS = (
    ("--steps", "steps", int, "full-batch optimiser steps "),
    ("--eval-every", "eval_every", int, ""),
    ("--seed", "seed", int, "data split, initialisation, subsets "),
    ("--modulus", "modulus", int, ""),
    ("--train-fraction", "train_fraction", float, ""),
    ("--lr", "lr", float, ""),
    ("--weight-decay", "weight_decay", float, ""),
    ("--info-subset", "info_subset", int, "samples per split for MIR/HDR, 0 = all "),
    ("--threshold", "grokking_threshold", float, "test accuracy that marks the jump "),
    ("--device", "device", str, ""),
)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """``python -m hf_infonc.analysis.grokking --steps N --out DIR``: run, save JSON and plot."""
    defaults = GrokkingConfig()
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--out", type=Path, default=Path("runs/grokking"), help="output folder (default: %(default)s)")
    add("--json", type=Path, default=None, help="history JSON path (default: OUT/grokking_history.json)")
    add("--plot", type=Path, default=None, help="plot path (default: OUT/grokking.png)")
    for flag, name, kind, text in CONFIG_OPTIONS:  # default: the config's
        add(flag, dest=name, type=kind, default=getattr(defaults, name), metavar=flag[2:].upper().replace("-", "_"),
            help=f"{text}(default: %(default)s)")
    add("--threads", dest="num_threads", type=int, default=None, metavar="THREADS",
        help="torch CPU threads (default: torch's own)")
    add("--stop-after-grokking", type=int, default=None, metavar="K",
        help="stop K steps after the grokking step (default: run all --steps)")
    add("--plot-only", type=Path, default=None, metavar="JSON", help="re-plot a saved history JSON and exit")
    add("--no-log-evals", action="store_true", help="evaluate only every --eval-every steps (and at the end)")
    add("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    plot_path = args.plot or args.out / "grokking.png"
    if args.plot_only is not None:
        print(plot_grokking(GrokkingResult.from_json(args.plot_only), plot_path))
        return 0
    options = {name: getattr(args, name) for _, name, _, _ in CONFIG_OPTIONS}
    cfg = GrokkingConfig(**{**options, "info_subset": args.info_subset or None}, num_threads=args.num_threads,
                         log_evals=not args.no_log_evals)
    grokked_at: list[int] = []

    def stop_after_grokking(record: dict[str, float], model: nn.Module) -> bool:
        if not grokked_at and record["test_acc"] >= cfg.grokking_threshold:
            grokked_at.append(int(record["step"]))
        return bool(grokked_at) and record["step"] >= grokked_at[0] + args.stop_after_grokking

    callback = stop_after_grokking if args.stop_after_grokking is not None else None
    result = run_grokking(cfg, progress=not args.no_progress, callback=callback)
    json_path = result.to_json(args.json or args.out / "grokking_history.json")
    plot_grokking(result, plot_path)
    final = {key: values[-1] for key, values in result.history.items()}
    grokked_s = result.grokking_wall_time_s
    print(f"history: {json_path}\nplot: {plot_path}")
    print(
        f"steps {final['step']}, wall {result.wall_time_s:.0f} s (info measures {result.info_time_s:.0f} s); "
        f"memorisation step {result.memorization_step}, grokking step {result.grokking_step} "
        f"(at {'-' if grokked_s is None else round(grokked_s)} s)"
    )
    print(
        f"final: train acc {final['train_acc']:.4f}, test acc {final['test_acc']:.4f}, "
        f"test MIR {final['test_mir']:.4f}, test HDR {final['test_hdr']:.4f} "
        f"(MIR at collapse {result.mir_at_collapse:.4f})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
