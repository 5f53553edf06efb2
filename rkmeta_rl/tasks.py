"""Task families the trainer can meta-learn on, by name (``--env``).

A family knows its observation and action sizes, draws tasks from its environment's
own seeded RNG (Gymnasium's ``np_random``), and builds a batched environment that steps
every (task, episode) pair at once.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from envs.nav2d import BatchedNav2D, Nav2DEnv


class Nav2DFamily:
    """2D navigation (NOTES.md): goals uniform in [-0.5, 0.5]², 100-step episodes."""

    def __init__(self, goal_conditioned: bool = False, max_episode_steps: int = 100,
                 device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.goal_conditioned = goal_conditioned
        self.max_episode_steps = max_episode_steps
        self.env = Nav2DEnv(max_episode_steps=max_episode_steps, goal_conditioned=goal_conditioned)
        self.obs_dim = int(self.env.observation_space.shape[0])
        self.act_dim = int(self.env.action_space.shape[0])
        box = self.env.action_space
        self.action_low = torch.as_tensor(box.low, dtype=torch.float32, device=self.device)
        self.action_high = torch.as_tensor(box.high, dtype=torch.float32, device=self.device)

    def seed(self, seed: int) -> None:
        self.env.reset(seed=seed)

    def sample_tasks(self, n: int) -> list[dict]:
        return self.env.sample_tasks(n)

    def rng_state(self) -> dict[str, Any]:
        return self.env.np_random.bit_generator.state

    def set_rng_state(self, state: dict[str, Any]) -> None:
        self.env.np_random.bit_generator.state = state

    def batched_env(self, tasks: list[dict], episodes_per_task: int) -> BatchedNav2D:
        goals = torch.as_tensor(np.stack([t["goal"] for t in tasks]), dtype=torch.float32,
                                device=self.device)
        return BatchedNav2D(goals, episodes_per_task, self.max_episode_steps,
                            self.goal_conditioned)


FAMILIES = {
    "nav2d": lambda device: Nav2DFamily(device=device),
    "nav2d-goal": lambda device: Nav2DFamily(goal_conditioned=True, device=device),
}


# The oracle of a family: the same tasks with the task itself in the observation.
ORACLE_VARIANTS = {"nav2d": "nav2d-goal"}


def oracle_env(name: str) -> str:
    """The goal-conditioned variant of family ``name`` (its oracle's environment)."""
    if name not in ORACLE_VARIANTS:
        raise ValueError(f"no oracle variant for env {name!r}; valid choices: "
                         f"{', '.join(ORACLE_VARIANTS)}")
    return ORACLE_VARIANTS[name]


def check_env_name(name: str) -> None:
    """Refuse an unknown family name, listing the valid ones."""
    if name not in FAMILIES:
        raise ValueError(f"unknown env {name!r}; valid choices: {', '.join(FAMILIES)}")


def make_family(name: str, device: str | torch.device = "cpu"):
    """The task family called ``name``; unknown names list the valid ones."""
    check_env_name(name)
    return FAMILIES[name](device)
