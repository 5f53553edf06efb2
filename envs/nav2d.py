"""2D point navigation task family (Finn et al., 2017, "Model-Agnostic Meta-Learning").

A point agent starts at the origin. Each task is a goal position drawn uniformly from
``[-0.5, 0.5]^2``. Actions are velocities clipped to ``[-0.1, 0.1]`` per coordinate and the
position is updated as ``new_pos = pos + clipped_action``. The reward is minus the Euclidean
distance from the *new* position to the goal. An episode terminates when the agent is within
``0.01`` of the goal on both axes and is truncated after ``max_episode_steps`` steps otherwise.

Two implementations share exactly the same float32 arithmetic:

* :class:`Nav2DEnv`, a regular :class:`gymnasium.Env` with a task-family interface
  (:meth:`Nav2DEnv.sample_tasks`, :meth:`Nav2DEnv.reset_task`, and
  ``reset(options={"task": task})``);
* :class:`BatchedNav2D`, a torch implementation that steps every ``(task, episode)`` pair at
  once, used for fast rollouts during meta-training.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.error import ResetNeeded

from envs.batch import EpisodeBatch, check_seeds
from envs.checks import check_positive_int

MAX_ACTION = 0.1
"""Per-coordinate bound on the (clipped) velocity action."""

GOAL_RANGE = 0.5
"""Goals are sampled uniformly in ``[-GOAL_RANGE, GOAL_RANGE]^2``."""

GOAL_TOLERANCE = 0.01
"""An episode terminates when ``|pos - goal| < GOAL_TOLERANCE`` on both axes."""

DEFAULT_MAX_EPISODE_STEPS = 100

_F32_MAX_ACTION = np.float32(MAX_ACTION)
_F32_GOAL_TOLERANCE = np.float32(GOAL_TOLERANCE)


def _validate_goal(task: Any) -> np.ndarray:
    """Extract a finite float64 goal of shape ``(2,)`` from a task dict (copied)."""
    if not isinstance(task, Mapping) or "goal" not in task:
        raise ValueError(f"task must be a mapping with a 'goal' entry, got {task!r}")
    try:
        goal = np.array(task["goal"], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"task goal must be numeric, got {task['goal']!r}") from exc
    if goal.shape != (2,) or not np.all(np.isfinite(goal)):
        raise ValueError(f"task goal must be a finite array of shape (2,), got {task['goal']!r}")
    return goal


class Nav2DEnv(gym.Env[np.ndarray, np.ndarray]):
    """Gymnasium 2D navigation environment with a goal-position task family.

    Observation: ``[x, y]`` (float32), or ``[x, y, goal_x, goal_y]`` when
    ``goal_conditioned`` is True. Action: velocity in ``Box(-0.1, 0.1, (2,), float32)``;
    out-of-range actions are clipped rather than rejected.

    Task selection: a task (``{"goal": array of shape (2,)}``) can be fixed through the
    constructor, :meth:`reset_task` or ``reset(options={"task": task})``; it then stays fixed
    across resets. While no task has been set, every :meth:`reset` draws a fresh goal
    uniformly in ``[-0.5, 0.5]^2`` from ``self.np_random`` (so ``reset(seed=s)`` is
    reproducible).

    The environment counts steps itself and sets ``truncated`` once ``max_episode_steps`` steps
    have been taken without reaching the goal, so no ``TimeLimit`` wrapper is needed.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        task: dict | None = None,
        max_episode_steps: int = DEFAULT_MAX_EPISODE_STEPS,
        goal_conditioned: bool = False,
    ) -> None:
        """Create the environment.

        Args:
            task: optional task ``{"goal": array-like of shape (2,)}`` to fix the goal.
            max_episode_steps: horizon after which an episode is truncated (> 0).
            goal_conditioned: if True, the goal is appended to the observation.
        """
        self.max_episode_steps = check_positive_int("max_episode_steps", max_episode_steps)
        self.goal_conditioned = bool(goal_conditioned)
        obs_dim = 4 if self.goal_conditioned else 2
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(obs_dim,), dtype=np.float32)
        self.action_space = spaces.Box(-MAX_ACTION, MAX_ACTION, shape=(2,), dtype=np.float32)
        self.render_mode = None
        self._goal: np.ndarray | None = None
        self._task_fixed = False
        self._pos = np.zeros(2, dtype=np.float32)
        self._steps = 0
        self._needs_reset = True
        if task is not None:
            self.reset_task(task)

    # ------------------------------------------------------------------ task interface
    def sample_tasks(self, n: int) -> list[dict]:
        """Draw ``n`` tasks ``{"goal": float64 array (2,)}`` uniformly from ``self.np_random``."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"n must be a non-negative integer, got {n!r}")
        goals = self.np_random.uniform(-GOAL_RANGE, GOAL_RANGE, size=(int(n), 2))
        return [{"goal": goal.copy()} for goal in goals]

    def reset_task(self, task: dict) -> None:
        """Fix the goal to ``task["goal"]`` (shape ``(2,)``); takes effect from the next reset."""
        self._goal = _validate_goal(task)
        self._task_fixed = True

    def get_task(self) -> dict:
        """Return the current task ``{"goal": copy}``; raises ``ResetNeeded`` if none yet."""
        if self._goal is None:
            raise ResetNeeded("No task set yet: call reset() or reset_task() first.")
        return {"goal": self._goal.copy()}

    # ------------------------------------------------------------------ gymnasium API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Move the agent back to the origin. ``options={"task": task}`` fixes the task first,
        as :meth:`reset_task` does (the task protocol of ``rkmeta_rl/rl/gym_tasks.py``)."""
        if options is not None and "task" in options:
            self.reset_task(options["task"])
        super().reset(seed=seed)
        if not self._task_fixed:
            self._goal = self.np_random.uniform(-GOAL_RANGE, GOAL_RANGE, size=2)
        self._pos = np.zeros(2, dtype=np.float32)
        self._steps = 0
        self._needs_reset = False
        return self._obs(), {"goal": self._goal.copy()}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Apply the clipped velocity and return ``(obs, reward, terminated, truncated, info)``."""
        if self._needs_reset:
            raise ResetNeeded("Cannot call step() before reset().")
        velocity = self._clip_action(action)
        self._pos = self._pos + velocity
        self._steps += 1
        diff = self._pos - self._goal32()
        distance = float(np.sqrt(diff[0] * diff[0] + diff[1] * diff[1]))
        terminated = bool(np.all(np.abs(diff) < _F32_GOAL_TOLERANCE))
        truncated = not terminated and self._steps >= self.max_episode_steps
        info = {"goal": self._goal.copy(), "distance": distance}
        return self._obs(), -distance, terminated, truncated, info

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _clip_action(action: Any) -> np.ndarray:
        """Validate an action (finite, shape ``(2,)``) and clip it to ``[-0.1, 0.1]`` in float32."""
        arr = np.asarray(action, dtype=np.float32)
        if arr.shape != (2,) or not np.all(np.isfinite(arr)):
            raise ValueError(f"action must be a finite array of shape (2,), got {action!r}")
        return np.clip(arr, -_F32_MAX_ACTION, _F32_MAX_ACTION)

    def _goal32(self) -> np.ndarray:
        """Goal in float32, the precision used for the dynamics."""
        assert self._goal is not None
        return self._goal.astype(np.float32)

    def _obs(self) -> np.ndarray:
        """Current observation (a fresh float32 array)."""
        if self.goal_conditioned:
            return np.concatenate([self._pos, self._goal32()]).astype(np.float32)
        return self._pos.copy()


class BatchedNav2D(EpisodeBatch):
    """Steps every (task, episode) pair at once as tensor operations.

    State is a position tensor of shape ``(T, E, 2)`` for ``T`` tasks (goals) and ``E``
    episodes per task; all episodes start together at the origin on :meth:`reset`. Arithmetic
    is float32 and mirrors :class:`Nav2DEnv` operation for operation, so both produce the same
    observations, rewards and flags for the same actions.

    Ended episodes are frozen: once an episode has terminated or been truncated, later steps
    leave its position unchanged, give it reward 0 and report ``terminated=False`` and
    ``truncated=False``. :attr:`alive` is the ``(T, E)`` mask of episodes that have not ended;
    read it *before* calling :meth:`step` to get the mask of valid transitions for that step
    (it is updated by :meth:`step` to reflect the episodes still running afterwards).
    """

    def __init__(
        self,
        goals: torch.Tensor,
        episodes_per_task: int,
        max_episode_steps: int = DEFAULT_MAX_EPISODE_STEPS,
        goal_conditioned: bool = False,
        seeds: Sequence[int] | None = None,
    ) -> None:
        """Create the batch.

        Args:
            goals: ``(T, 2)`` goal positions (converted to float32; device is kept).
            episodes_per_task: number ``E`` of parallel episodes per goal (> 0).
            max_episode_steps: horizon after which running episodes are truncated (> 0).
            goal_conditioned: if True, observations are ``[x, y, goal_x, goal_y]``.
            seeds: ``T·E`` reset seeds, one per row (the batched-env protocol of
                ``envs/batch.py``); checked and kept, but every episode starts at the
                origin, so a reset draws nothing.
        """
        goals = torch.as_tensor(goals).detach().to(torch.float32)
        if goals.dim() != 2 or goals.shape[1] != 2 or goals.shape[0] == 0:
            raise ValueError(f"goals must have shape (T, 2) with T > 0, got {tuple(goals.shape)}")
        if not torch.isfinite(goals).all():
            raise ValueError(f"goals must be finite, got {goals}")
        self.goals = goals
        self.episodes_per_task = check_positive_int("episodes_per_task", episodes_per_task)
        self.max_episode_steps = check_positive_int("max_episode_steps", max_episode_steps)
        self.goal_conditioned = bool(goal_conditioned)
        self.obs_dim = 4 if self.goal_conditioned else 2
        self.action_dim = 2
        self.seeds = None if seeds is None else check_seeds(seeds, self.num_envs)
        self.reset()

    @property
    def num_tasks(self) -> int:
        """Number of tasks ``T``."""
        return self.goals.shape[0]

    @property
    def device(self) -> torch.device:
        """Device holding the state (that of ``goals``)."""
        return self.goals.device

    @staticmethod
    def clip_action(action: torch.Tensor) -> torch.Tensor:
        """Clip velocities to ``[-0.1, 0.1]`` per coordinate (float32)."""
        return torch.clamp(action.to(torch.float32), -MAX_ACTION, MAX_ACTION)

    def reset(self) -> torch.Tensor:
        """Put every episode at the origin and mark it alive; return obs ``(T, E, obs_dim)``."""
        shape = self.batch_shape
        self.pos = torch.zeros(*shape, 2, dtype=torch.float32, device=self.device)
        self.alive = torch.ones(shape, dtype=torch.bool, device=self.device)
        self._steps = 0
        return self._obs()

    def step(
        self, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Advance every alive episode by one step (``action`` is detached and clipped).

        Args:
            action: ``(T, E, 2)`` velocities, any real values.

        Returns:
            ``(obs (T, E, obs_dim), reward (T, E), terminated (T, E), truncated (T, E))``.
        """
        expected = (*self.batch_shape, 2)
        if tuple(action.shape) != expected:
            raise ValueError(f"action must have shape {expected}, got {tuple(action.shape)}")
        velocity = self.clip_action(action.detach().to(self.device))
        was_alive = self.alive
        self.pos = torch.where(was_alive.unsqueeze(-1), self.pos + velocity, self.pos)
        self._steps += 1
        diff = self.pos - self.goals.unsqueeze(1)
        distance = torch.sqrt(diff[..., 0] * diff[..., 0] + diff[..., 1] * diff[..., 1])
        reached = (diff.abs() < GOAL_TOLERANCE).all(dim=-1)
        terminated = was_alive & reached
        truncated = was_alive & ~reached & (self._steps >= self.max_episode_steps)
        reward = torch.where(was_alive, -distance, torch.zeros_like(distance))
        self.alive = was_alive & ~terminated & ~truncated
        return self._obs(), reward, terminated, truncated

    def _obs(self) -> torch.Tensor:
        """Current observations ``(T, E, obs_dim)``."""
        if not self.goal_conditioned:
            return self.pos.clone()
        goals = self.goals.unsqueeze(1).expand(*self.batch_shape, 2)
        return torch.cat([self.pos, goals], dim=-1)
