"""Task envs that misbehave on purpose, for tests/test_ray_sampler.py and
tests/test_ray_faults.py (``--env ray_envs:Class``; Ray workers import them, so those tests
put tests/ on their PYTHONPATH). All are examples/point_env.py's point env otherwise."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import numpy as np

from examples.point_env import PointEnv

DIE_MARKER = "RKMETA_TEST_DIE_MARKER"  # env var: a file whose removal kills the remover


class FailingPointEnv(PointEnv):
    """From an instance's second draw of tasks on, task 1 is marked ``"fail": True`` and
    its episodes raise ``ValueError`` at their third step (so iteration 0 trains)."""

    def __init__(self) -> None:
        super().__init__()
        self._draws, self._fail, self._steps = 0, False, 0

    def sample_tasks(self, n: int) -> list[dict]:
        self._draws += 1
        return [{**task, "fail": self._draws > 1 and i == 1}
                for i, task in enumerate(super().sample_tasks(n))]

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        if options is not None and "task" in options:
            self._fail = bool(options["task"].get("fail", False))
        self._steps = 0
        return super().reset(seed=seed, options=options)

    def step(self, action: np.ndarray):
        self._steps += 1
        if self._fail and self._steps == 3:
            raise ValueError("boom: the test env failed")
        return super().step(action)


class DyingPointEnv(PointEnv):
    """Kills its own process (SIGKILL, as the kernel's OOM killer would) at a step once
    the file named by ``$RKMETA_TEST_DIE_MARKER`` exists: the process that removes the
    file dies, every other process goes on."""

    def step(self, action: np.ndarray):
        marker = os.environ.get(DIE_MARKER)
        if marker:
            try:
                os.unlink(marker)
            except FileNotFoundError:
                pass
            else:
                os.kill(os.getpid(), signal.SIGKILL)
        return super().step(action)


SLOW_START = "RKMETA_TEST_SLOW_START"  # env var: seconds a Ray worker's first env sleeps
_slept = False


class SlowStartPointEnv(PointEnv):
    """In a Ray worker (a process its raylet started, which sets ``RAY_RAYLET_PID``), the
    first instance sleeps ``$RKMETA_TEST_SLOW_START`` seconds: a worker that takes its time
    to start (the window a signal is sent in). The training process never waits."""

    def __init__(self) -> None:
        global _slept
        super().__init__()
        if not _slept and "RAY_RAYLET_PID" in os.environ:
            _slept = True
            time.sleep(float(os.environ.get(SLOW_START, "0")))
