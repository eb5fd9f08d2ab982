"""Lock-step timing of two ``transformers.Trainer`` runs: they alternate steps, one at a time.

Shared by ``bench_trainer.py`` (CPU) and ``bench_gpu.py`` (the real-size CLIP step). The baseline
(A) and InfoNC (B) trainers train in two threads that pass a baton, so exactly one of them runs
at any moment and they take turns: A1, B1, A2, B2, …. Step i of A and step i of B see the
machine in the same state, so load that drifts during a run hits both sides alike; the ratio of
the two sides is then the median of the per-step ratios B_i / A_i.

A step runs from its trainer taking the baton to its ``on_step_end`` (after ``synchronize()``,
e.g. ``torch.cuda.synchronize``, when given). Stamps are ``perf_counter()`` (wall) and
``process_time()`` (CPU of the whole process: only one trainer thread runs at a time, the other
and the main thread block on a lock). The torch CPU RNG state travels with the baton, so each
trainer draws the random numbers of a run of its own.
"""

from __future__ import annotations

import contextlib
import io
import statistics
import threading
import time
from typing import Callable, Sequence

import torch
from transformers import TrainerCallback


class Abandoned(Exception):
    """Raised in a lock-step trainer whose partner failed (the partner's exception is the one re-raised)."""


class Baton:
    """Two threads (0 and 1) that run one at a time, taking turns: the holder runs until it passes the baton.

    A side that is done (finished or failed) gives the baton up for good: the other one then
    never waits again, so it cannot deadlock; after a failure it raises :class:`Abandoned` at its
    next turn instead of training on alone.
    """

    def __init__(self, first: int) -> None:
        self._cond = threading.Condition()
        self._turn = first
        self._done = [False, False]
        self._failed = False

    def take(self, me: int) -> None:
        """Block until it is ``me``'s turn, or the other side is done."""
        with self._cond:
            self._cond.wait_for(lambda: self._turn == me or self._done[1 - me])
            if self._failed:
                raise Abandoned

    def pass_on(self, me: int) -> None:
        with self._cond:
            self._turn = 1 - me
            self._cond.notify_all()

    def give_up(self, me: int, failed: bool = False) -> None:
        """``me`` is done (idempotent): release the baton for good."""
        with self._cond:
            self._done[me] = True
            self._failed |= failed
            self._turn = 1 - me
            self._cond.notify_all()


class LockStepClock(TrainerCallback):
    """One of two trainers run in lock-step: at ``on_step_end`` it stamps the end of its step, passes the
    baton and blocks until it gets it back, then stamps the start of its next step.

    ``process_time()`` counts the whole process, but only one of the two trainer threads runs at
    any moment, so between a step's start and end stamps it is the CPU of that step. That holds
    with one intra-op thread; with more, the paused trainer's OpenMP workers may spin on for a
    moment and count.
    """

    def __init__(self, baton: Baton, me: int, synchronize: Callable[[], None] | None = None) -> None:
        self.baton, self.me, self.synchronize = baton, me, synchronize
        self.rng_state = torch.get_rng_state()  # the state a run of its own starts from
        self.starts: list[tuple[float, float]] = []
        self.ends: list[tuple[float, float]] = []

    def take(self) -> None:
        """Wait for the baton, then stamp the start of this trainer's next step."""
        self.baton.take(self.me)
        torch.set_rng_state(self.rng_state)
        self.starts.append((time.perf_counter(), time.process_time()))

    def on_step_end(self, args, state, control, **kwargs):
        if self.synchronize is not None:
            self.synchronize()
        self.ends.append((time.perf_counter(), time.process_time()))
        self.rng_state = torch.get_rng_state()
        self.baton.pass_on(self.me)
        self.take()

    def on_train_end(self, args, state, control, **kwargs):
        self.baton.give_up(self.me)


def train_in_lockstep(
    trainers: Sequence, first: int, synchronize: Callable[[], None] | None = None
) -> list[LockStepClock]:
    """Train ``trainers`` (A, B) in two threads, alternating steps, ``trainers[first]`` first.

    Returns their clocks: step i of a trainer ran from ``clock.starts[i]`` to ``clock.ends[i]``
    ((wall, CPU) stamps). The first step waits for the baton too, so ``train()``'s set-up belongs
    to it: drop it as warm-up. An exception in either trainer stops both and is re-raised here.
    """
    baton = Baton(first)
    threads = torch.get_num_threads()  # torch.set_num_threads is process-wide; set again in each thread (harmless)
    clocks = [LockStepClock(baton, me, synchronize) for me in (0, 1)]
    errors: list[BaseException | None] = [None, None]

    def work(me: int) -> None:
        try:
            torch.set_num_threads(threads)
            clocks[me].take()
            trainers[me].train()
        except BaseException as error:  # noqa: BLE001 - re-raised in the main thread
            errors[me] = error
            baton.give_up(me, failed=not isinstance(error, Abandoned))
        finally:
            baton.give_up(me)

    for trainer, clock in zip(trainers, clocks):
        trainer.add_callback(clock)
    workers = [threading.Thread(target=work, args=(me,), name=f"lockstep-{me}", daemon=True) for me in (0, 1)]
    # redirect_stdout swaps sys.stdout for the whole process: once, here, around both threads
    with contextlib.redirect_stdout(io.StringIO()):  # the Trainers print their logs and final summaries
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    failures = [e for e in errors if e is not None and not isinstance(e, Abandoned)]
    failures += [e for e in errors if e is not None]
    if failures:
        raise failures[0]
    return clocks


def quartiles(values: list[float]) -> tuple[float, float]:
    """25th and 75th percentile of per-step ratios (inclusive method; one value: that value twice)."""
    if len(values) < 2:
        return values[0], values[0]
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q3
