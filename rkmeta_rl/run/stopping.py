"""Clean stops: SIGTERM and SIGINT (what schedulers and Ctrl-C send) end a training run
between iterations, with the checkpoint and metrics.jsonl consistent.

The first signal asks the run to stop once the iteration in progress is finished and
written; a second one discards that iteration at once (the files are still those of the
last finished iteration, since every write is atomic and none is interrupted: see
:meth:`StopSignals.writing`). Either way the run raises :class:`RunStopped`, whose exit
code is 128 + the signal number, as a shell reports a process killed by that signal.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class RunStopped(Exception):
    """A run ended early by a signal; ``iteration`` iterations are saved."""

    def __init__(self, signum: int, iteration: int, discarded: bool) -> None:
        self.signum, self.iteration, self.discarded = signum, iteration, discarded
        name = signal.Signals(signum).name
        what = "the iteration in progress was discarded" if discarded else "after a whole iteration"
        super().__init__(f"stopped by {name} ({what}); {iteration} iterations are saved")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopSignals:
    """Context manager: while inside, SIGINT/SIGTERM set :attr:`signum` instead of killing
    the process (main thread only; elsewhere it does nothing)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.forced = False
        self._writing = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)
        self._old.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum
            return
        self.forced = True
        if not self._writing:
            raise _Forced()

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @contextmanager
    def writing(self) -> Iterator[None]:
        """A section no signal interrupts (a checkpoint and its metrics line); a second
        signal that arrived meanwhile takes effect when it ends."""
        self._writing = True
        try:
            yield
        finally:
            self._writing = False
        if self.forced:
            raise _Forced()

    @contextmanager
    def stopping(self, iteration_done: Any) -> Iterator[None]:
        """Turn a forced stop inside the block into :class:`RunStopped` (``iteration_done()``
        gives the iterations saved)."""
        try:
            yield
        except _Forced:
            raise RunStopped(self.signum or signal.SIGINT, iteration_done(), True) from None

    def check(self, iteration: int) -> None:
        """Raise :class:`RunStopped` if a stop was asked for (call between iterations)."""
        if self.signum is not None:
            raise RunStopped(self.signum, iteration, False)


class _Forced(BaseException):
    """Raised inside the run by a second signal (a BaseException, like KeyboardInterrupt,
    so that no ``except Exception`` in between swallows it)."""
