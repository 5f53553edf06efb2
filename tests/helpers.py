"""Helpers shared by the test modules (imported as ``helpers``: tests/ is on sys.path)."""

import os
import time

from rkmeta_rl.rl.trainer import Trainer


def os_threads() -> int:
    """Threads of this process right now."""
    return len(os.listdir("/proc/self/task"))


def threads_settle_to(expected: int, timeout: float = 10.0) -> int:
    """The thread count once it reaches ``expected`` (threads told to stop may exit a
    moment later on a loaded machine), or the count after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while os_threads() != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return os_threads()


def interrupt_on_call(monkeypatch, n: int, trainer_class: type = Trainer) -> None:
    """Make the n-th ``trainer_class.step`` call raise KeyboardInterrupt (a Ctrl-C mid-run)."""
    original, calls = trainer_class.step, []

    def step(self):
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(trainer_class, "step", step)
