"""A tiny task env following rkmeta-rl's task protocol: a point that must reach a goal.

Each task is a goal in [-1, 1]² drawn from the env's own ``np_random``. The point starts
near the origin (a little seeded noise) and moves by its action, a velocity clipped to
[-0.1, 0.1] per axis, within the arena [-2, 2]². The reward is minus its distance to the
goal, less a small control cost; both terms are in ``info``. It meets the task protocol
of ``rkmeta_rl/rl/gym_tasks.py``:

* ``sample_tasks(n) -> list[dict]`` on the env itself, drawing from ``self.np_random``;
* ``reset(seed=..., options={"task": task})`` sets the task (it stays until the next);
* a Box action space and a flat Box observation space.

The env sets no time limit itself, so ``--env examples.point_env:PointEnv`` needs
``--max-episode-steps``. The id registered below carries a horizon of 20:
``--env examples.point_env:rkmeta_examples/Point-v0`` (importing the module registers it).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

POINT_ID = "rkmeta_examples/Point-v0"
MAX_SPEED = 0.1
GOAL_RANGE = 1.0
ARENA = 2.0
START_NOISE = 0.05
CTRL_COST = 0.1
GOAL_TOLERANCE = 0.01


class PointEnv(gym.Env[np.ndarray, np.ndarray]):
    """Observation ``[x, y]``; action a velocity in ``Box(-0.1, 0.1, (2,))``; a task is
    ``{"goal": array (2,)}``. Terminates within 0.01 of the goal."""

    metadata = {"render_modes": []}

    def __init__(self) -> None:
        self.observation_space = spaces.Box(-ARENA, ARENA, shape=(2,), dtype=np.float32)
        self.action_space = spaces.Box(-MAX_SPEED, MAX_SPEED, shape=(2,), dtype=np.float32)
        self._goal = np.zeros(2)
        self._pos = np.zeros(2, dtype=np.float32)

    def sample_tasks(self, n: int) -> list[dict]:
        """``n`` goals uniform in [-1, 1]², from this env's ``np_random``."""
        goals = self.np_random.uniform(-GOAL_RANGE, GOAL_RANGE, size=(n, 2))
        return [{"goal": goal} for goal in goals]

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if options is not None and "task" in options:
            self._goal = np.asarray(options["task"]["goal"], dtype=np.float64)
        noise = self.np_random.uniform(-START_NOISE, START_NOISE, size=2)
        self._pos = noise.astype(np.float32)
        return self._pos.copy(), {"goal": self._goal.copy()}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        velocity = np.clip(np.asarray(action, dtype=np.float32), -MAX_SPEED, MAX_SPEED)
        self._pos = np.clip(self._pos + velocity, -ARENA, ARENA).astype(np.float32)
        distance = float(np.linalg.norm(self._pos - self._goal))
        reward_dist = -distance
        reward_ctrl = -CTRL_COST * float(np.square(velocity).sum())
        info = {"reward_dist": reward_dist, "reward_ctrl": reward_ctrl, "goal": self._goal.copy()}
        return (self._pos.copy(), reward_dist + reward_ctrl, distance < GOAL_TOLERANCE, False,
                info)


if POINT_ID not in gym.registry:
    gym.register(POINT_ID, entry_point="examples.point_env:PointEnv", max_episode_steps=20)
