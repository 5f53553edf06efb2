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


class TaskFamily:
    """What every family shares: a Gymnasium env (``self.env``) whose own ``np_random``
    draws the tasks, its sizes and action bounds. Subclasses add ``batched_env``."""

    def __init__(self, env, max_episode_steps: int, device: str | torch.device) -> None:
        self.env, self.max_episode_steps = env, max_episode_steps
        self.device = torch.device(device)
        self.obs_dim = int(env.observation_space.shape[0])
        self.act_dim = int(env.action_space.shape[0])
        box = env.action_space
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


class Nav2DFamily(TaskFamily):
    """2D navigation (NOTES.md): goals uniform in [-0.5, 0.5]², 100-step episodes."""

    def __init__(self, goal_conditioned: bool = False, max_episode_steps: int | None = None,
                 device: str | torch.device = "cpu") -> None:
        horizon = max_episode_steps or 100
        self.goal_conditioned = goal_conditioned
        super().__init__(Nav2DEnv(max_episode_steps=horizon, goal_conditioned=goal_conditioned),
                         horizon, device)

    def batched_env(self, tasks: list[dict], episodes_per_task: int) -> BatchedNav2D:
        goals = torch.as_tensor(np.stack([t["goal"] for t in tasks]), dtype=torch.float32,
                                device=self.device)
        return BatchedNav2D(goals, episodes_per_task, self.max_episode_steps,
                            self.goal_conditioned)


class LocomotionFamily(TaskFamily):
    """A MuJoCo locomotion family (``envs/locomotion.py``) stepped in batches by
    ``envs.mujoco_batch.BatchedLocomotion`` (physics on a pool of ``nthread`` threads).

    Tasks come from the Gymnasium env's own ``np_random``; each batch's reset noise
    comes from a seed drawn from that same stream, so a run repeats and resumes exactly.
    Batches live on the CPU (MuJoCo); ``device`` only places the action bounds.
    """

    def __init__(self, name: str, max_episode_steps: int | None = None,
                 device: str | torch.device = "cpu", nthread: int = 2) -> None:
        from envs.locomotion import make_locomotion_env
        from envs.locomotion_tasks import DEFAULT_HORIZON

        self.name, self.nthread = name, nthread
        super().__init__(make_locomotion_env(name), max_episode_steps or DEFAULT_HORIZON,
                         device)
        self.env.reset(seed=0)

    def batched_env(self, tasks: list[dict], episodes_per_task: int):
        from envs.mujoco_batch import BatchedLocomotion

        seed = int(self.env.np_random.integers(2**63 - 1))
        return BatchedLocomotion(self.name, tasks, episodes_per_task, self.max_episode_steps,
                                 seed=seed, nthread=self.nthread)


LOCOMOTION = ("halfcheetah-vel", "halfcheetah-dir", "ant-vel", "ant-dir", "ant-goal")

FAMILIES = {
    "nav2d": lambda device, horizon: Nav2DFamily(max_episode_steps=horizon, device=device),
    "nav2d-goal": lambda device, horizon: Nav2DFamily(goal_conditioned=True,
                                                      max_episode_steps=horizon, device=device),
    **{name: (lambda device, horizon, name=name: LocomotionFamily(name, horizon, device))
       for name in LOCOMOTION},
}

# Settings that depend on the family: α (MAML: 0.1 for locomotion) and the horizon (MAML's
# locomotion experiments use 200 steps; --max-episode-steps 100 as much later work does).
FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "nav2d": {"inner_lr": 0.16, "max_episode_steps": 100},
    "nav2d-goal": {"inner_lr": 0.16, "max_episode_steps": 100},
    **{name: {"inner_lr": 0.1, "max_episode_steps": 200} for name in LOCOMOTION},
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


def make_family(name: str, device: str | torch.device = "cpu",
                max_episode_steps: int | None = None):
    """The task family called ``name`` (horizon: the family's default when None);
    unknown names list the valid ones."""
    check_env_name(name)
    return FAMILIES[name](device, max_episode_steps)
