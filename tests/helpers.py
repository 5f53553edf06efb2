"""Helpers shared by the test modules (imported as ``helpers``: tests/ is on sys.path)."""

import os
import time

from rkmeta_rl.rl.trainer import Trainer


def os_thread_ids() -> set[int]:
    """Ids of this process's threads right now."""
    return {int(t) for t in os.listdir("/proc/self/task")}


def threads_left_since(before: set[int], timeout: float = 10.0) -> set[int]:
    """Threads started since ``before`` (``os_thread_ids()``) that still run once they have
    ended (threads told to stop may exit a moment later on a loaded machine), or after
    ``timeout`` seconds. Threads in ``before`` that end meanwhile, such as an earlier
    test's pool still shutting down, do not count."""
    deadline = time.monotonic() + timeout
    while os_thread_ids() - before and time.monotonic() < deadline:
        time.sleep(0.05)
    return os_thread_ids() - before


def interrupt_on_call(monkeypatch, n: int, trainer_class: type = Trainer) -> None:
    """Make the n-th ``trainer_class.step`` call raise KeyboardInterrupt (a Ctrl-C mid-run)."""
    original, calls = trainer_class.step, []

    def step(self):
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(trainer_class, "step", step)
