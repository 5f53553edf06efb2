"""Helpers shared by the test modules (imported as ``helpers``: tests/ is on sys.path)."""

from rkmeta_rl.trainer import Trainer


def interrupt_on_call(monkeypatch, n: int) -> None:
    """Make the n-th Trainer.step call raise KeyboardInterrupt (a Ctrl-C mid-run)."""
    original, calls = Trainer.step, []

    def step(self):
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(Trainer, "step", step)
