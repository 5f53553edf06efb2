"""The training loop both wings share: a wing supplies its step and its state, the loop
does the rest once.

Per iteration: ``wing.step()`` (the iteration's metrics), then ``wing.record(rec, done)``
says whether this iteration ends a record (RL: every iteration; supervised: every
``log_every``, with window means and validation). A record is appended to metrics.jsonl
and TensorBoard, the snapshot (if due) and the checkpoint are written, and the callbacks
see it; a callback that returns ``False`` ends training after that record (as in
stable-baselines3). With a run directory the loop holds its writer lock and turns
SIGINT/SIGTERM into :class:`~rkmeta_rl.run.stopping.RunStopped` between iterations
(``rkmeta_rl/run/stopping.py``); without one (``wing.run_dir is None``) it trains in memory:
nothing is written and signals are left to Python (Ctrl-C raises ``KeyboardInterrupt``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import torch
from torch.utils.tensorboard import SummaryWriter

from rkmeta_rl.run import rundir, runlock
from rkmeta_rl.run.progress import ProgressBar
from rkmeta_rl.run.stopping import StopSignals

Record = dict[str, Any]
Callback = Callable[[Record], Any]  # called with each record written; False stops training


class Wing(Protocol):
    """What a wing's trainer supplies to :func:`train`."""

    run_dir: Any  # Path, or None to train in memory
    iteration: int  # iterations done
    writer_lock: runlock.WriterLock | None

    @property
    def total(self) -> int: ...  # iterations to train to

    def threads(self) -> int: ...
    def step(self) -> Record: ...  # one iteration, numbered ``iteration``
    def record(self, rec: Record, done: int) -> Record | None: ...  # None: nothing to write
    def state(self, iteration: int) -> dict[str, Any]: ...  # checkpoint after ``iteration``
    def save_snapshot(self, done: int) -> None: ...
    def shown(self, rec: Record) -> dict[str, float]: ...  # for the progress bar
    def start(self) -> None: ...  # before the first iteration (Ray's workers)
    def close(self) -> None: ...  # on every exit


def train(wing: Wing, progress: bool = True, callbacks: Iterable[Callback] = ()
          ) -> list[Record]:
    """Train ``wing`` to ``wing.total`` iterations; the records written, in order."""
    callbacks = list(callbacks)
    if wing.run_dir is not None and wing.writer_lock is None:
        wing.writer_lock = runlock.WriterLock(wing.run_dir)
    torch.set_num_threads(wing.threads())
    writer = (SummaryWriter(str(wing.run_dir), purge_step=wing.iteration)
              if wing.run_dir is not None else None)
    try:
        wing.start()  # before the bar: Ray's start-up lines come first
        bar = ProgressBar(wing.total, wing.iteration) if progress else None
        return _iterate(wing, writer, bar, callbacks)
    finally:
        try:
            wing.close()
        finally:
            if writer is not None:
                writer.close()
            if wing.writer_lock is not None:
                wing.writer_lock.release()
                wing.writer_lock = None


def _iterate(wing: Wing, writer: SummaryWriter | None, bar: ProgressBar | None,
             callbacks: list[Callback]) -> list[Record]:
    records: list[Record] = []
    saved = wing.iteration  # iterations in the last checkpoint
    signals = StopSignals() if writer is not None else None
    with contextlib.ExitStack() as stack:
        if signals is not None:
            stack.enter_context(signals)
            stack.enter_context(signals.stopping(lambda: saved))
        while wing.iteration < wing.total:
            if signals is not None:
                signals.check(saved)  # what follows the checkpoint is redone on resume
            rec, done = wing.step(), wing.iteration + 1
            out = wing.record(rec, done)
            if out is not None and signals is not None:
                with signals.writing():
                    rundir.log_scalars(writer, wing.run_dir, out, out["iter"])
                    wing.save_snapshot(done)
                    rundir.save_checkpoint(wing.run_dir, wing.state(done))
                    wing.iteration = saved = done
            wing.iteration = done
            if out is None:
                continue
            records.append(out)
            if bar is not None:
                bar.update(done, **wing.shown(out))
            if any(callback(out) is False for callback in callbacks):
                break
    return records
