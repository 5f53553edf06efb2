"""The generic batched loop: any Gymnasium task env stepped as one (task, episode) batch.

:class:`BatchedGymEnv` follows the batched-env protocol of :class:`envs.nav2d.BatchedNav2D`
(``reset``, ``alive``, ``step``, ``max_episode_steps``, ``batch_shape``) for families that
have no batched twin. It holds N = T·E env instances, copy ``t·E + e`` running task t's
e-th episode, and steps them one after the other in a plain Python loop: no processes, no
threads, CPU numpy. Every copy is reset with its task (``reset(seed=s, options={"task":
task})``) and a seed of its own, so a batch is a function of its tasks and seeds only and
the instances can be reused from batch to batch (:class:`rkmeta_rl.rl.tasks.GymFamily`
keeps a pool of them).

An exception raised by a copy's ``reset`` or ``step`` becomes :class:`envs.batch.EnvError`
naming the copy's task and episode (the env's exception as its cause), and so does what
they return when it is not Gymnasium's tuple with an observation of the observation space's
shape, a finite scalar reward and finite observation values (``envs/checks.py`` says what
is wrong); a step's error also names the step.

Where the env reports ``info["success"]`` (Meta-World), :attr:`success` holds each row's
flag of the latest step ((T, E) bool; False for rows not stepped); it stays None for envs
that never report one.

Actions arrive in the env's units (the policy's output already scaled to the action Box);
they are clipped to the Box and cast to its dtype. Ended episodes are frozen: reward 0,
their last observation, no more ``step`` calls. Episodes still running after
``max_episode_steps`` steps are truncated here, whatever the env's own time limit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from envs.batch import EnvError, EpisodeBatch
from envs.checks import (
    check_positive_int,
    describe_value,
    observation_problem,
    reset_problem,
    reward_problem,
    step_problem,
)

NUMBERS = (float, int, np.floating, np.integer, np.bool_)  # rewards taken as they are


class BatchedGymEnv(EpisodeBatch):
    """N = T·E Gymnasium envs stepped in a loop as one (T, E) batch.

    Args:
        envs: at least N env instances (the first N are used), copy ``t·E + e`` for task t,
            episode e; all with the same Box action space and flat Box observation space.
        tasks: T task dicts, handed to each copy's ``reset(options={"task": task})``.
        episodes_per_task: E episodes per task.
        seeds: N reset seeds, one per copy (row-major over (task, episode)).
        max_episode_steps: horizon H after which running episodes are truncated.
        device: where the returned tensors live.

    Tensors: obs (T, E, d) float32, reward (T, E) float32, flags and :attr:`alive` (T, E)
    bool.
    """

    def __init__(self, envs: Sequence[gym.Env], tasks: list[dict], episodes_per_task: int,
                 seeds: Sequence[int], max_episode_steps: int,
                 device: str | torch.device = "cpu") -> None:
        if not tasks:
            raise ValueError("at least one task is needed")
        self.tasks = list(tasks)
        self.episodes_per_task = check_positive_int("episodes_per_task", episodes_per_task)
        self.max_episode_steps = check_positive_int("max_episode_steps", max_episode_steps)
        n = self.num_envs
        if len(envs) < n or len(seeds) != n:
            raise ValueError(f"{n} envs and {n} seeds are needed, got {len(envs)} and "
                             f"{len(seeds)}")
        self.envs, self.seeds = list(envs[:n]), [int(s) for s in seeds]
        self.device = torch.device(device)
        space = self.envs[0].action_space
        self.action_dim = int(space.shape[0])
        self.obs_dim = int(self.envs[0].observation_space.shape[0])
        self._low, self._high, self._dtype = space.low, space.high, space.dtype
        self._obs_shape = (self.obs_dim,)
        self._obs = np.zeros((n, self.obs_dim), dtype=np.float32)  # (N, d)
        self.alive = torch.zeros(self.batch_shape, dtype=torch.bool, device=self.device)
        self.success: torch.Tensor | None = None  # (T, E) bool: info["success"] this step
        self._steps = 0

    # ------------------------------------------------------------------ protocol
    def reset(self) -> torch.Tensor:
        """Reset copy i with its task and seed; every episode alive; obs (T, E, d)."""
        for i, env in enumerate(self.envs):
            task = self.tasks[i // self.episodes_per_task]
            result = self._call(i, env.reset, seed=self.seeds[i], options={"task": task})
            if not (isinstance(result, tuple) and len(result) == 2):
                raise self._error(i, "reset", reset_problem(result, self._obs_shape) or "")
            self._store(i, "reset", result[0])
        self._check_finite("reset")
        self.alive = torch.ones(self.batch_shape, dtype=torch.bool, device=self.device)
        self._steps = 0
        return self._tensor(self._obs)

    def step(
        self, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Step every alive copy with its row of ``action`` (T, E, a), clipped to the Box.

        Returns obs (T, E, d), reward (T, E), terminated (T, E), truncated (T, E).
        """
        expected = (*self.batch_shape, self.action_dim)
        if tuple(action.shape) != expected:
            raise ValueError(f"action must have shape {expected}, got {tuple(action.shape)}")
        act = action.detach().cpu().numpy().reshape(self.num_envs, self.action_dim)  # (N, a)
        act = np.clip(act, self._low, self._high).astype(self._dtype)
        n = self.num_envs
        was_alive = self.alive.cpu().numpy().reshape(n)
        reward, terminated = np.zeros(n), np.zeros(n, dtype=bool)
        env_truncated, success = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
        reports = False
        for i in np.flatnonzero(was_alive):
            result = self._call(i, self.envs[i].step, act[i])
            try:
                obs, rew, terminated[i], env_truncated[i], info = result
            except (TypeError, ValueError):  # not five values, or a flag not a scalar
                raise self._error(i, "step", step_problem(result, self._obs_shape)
                                  or f"returned {describe_value(result)}") from None
            reward[i] = rew if isinstance(rew, NUMBERS) else self._reward(i, rew)
            self._store(i, "step", obs)
            if isinstance(info, dict) and "success" in info:
                reports, success[i] = True, bool(info["success"])
        self._check_finite("step", reward)
        if reports or self.success is not None:
            self.success = self._tensor(success)
        self._steps += 1
        at_horizon = self._steps >= self.max_episode_steps
        truncated = was_alive & ~terminated & (env_truncated | at_horizon)
        self.alive = self._tensor(was_alive & ~terminated & ~truncated)
        return (self._tensor(self._obs), self._tensor(reward.astype(np.float32)),
                self._tensor(terminated), self._tensor(truncated))

    def _call(self, i: int, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Copy i's ``method(*args, **kwargs)``; what it raises becomes an
        :class:`EnvError` naming the row."""
        try:
            return method(*args, **kwargs)
        except Exception as e:  # whatever the user's env raises
            raise self._error(i, method.__name__, f"raised {type(e).__name__}: "
                              f"{' '.join(str(e).split())}") from e

    def _error(self, i: int, what: str, problem: str) -> EnvError:
        """An :class:`EnvError` for copy i: ``what()`` (``reset`` or ``step``, with the step
        for ``step``) followed by ``problem``."""
        task, episode = divmod(int(i), self.episodes_per_task)
        step = f" at step {self._steps + 1}" if what == "step" else ""
        return EnvError(task, episode, f"{what}(){step} {problem}")

    def _reward(self, i: int, value: Any) -> float:
        """Copy i's reward that is not a Python or NumPy number (a 0-d array will do), or
        an :class:`EnvError` saying what it is."""
        problem = reward_problem(value)
        if problem is not None:
            raise self._error(i, "step", problem)
        return float(value)

    def _store(self, i: int, what: str, obs: Any) -> None:
        """Copy i's observation into its row, or an :class:`EnvError` if its shape is not
        the observation space's or it is not numeric."""
        try:
            shape = obs.shape if isinstance(obs, np.ndarray) else np.shape(obs)
            if shape == self._obs_shape:
                self._obs[i] = obs
                return
        except (TypeError, ValueError):  # ragged, or not numbers
            pass
        raise self._error(i, what, observation_problem(obs, self._obs_shape)
                          or f"returned an observation that is not numeric: "
                             f"{describe_value(obs)}")

    def _check_finite(self, what: str, reward: np.ndarray | None = None) -> None:
        """An :class:`EnvError` for the first copy whose observation (or reward) is not
        finite; one vectorized test when all are."""
        if np.isfinite(self._obs).all() and (reward is None or np.isfinite(reward).all()):
            return
        rows = ~np.isfinite(self._obs).all(axis=1)
        if rows.any():
            i = int(np.flatnonzero(rows)[0])
            raise self._error(i, what, "returned an observation that is not finite: "
                              f"{describe_value(self._obs[i])}")
        i = int(np.flatnonzero(~np.isfinite(reward))[0])
        raise self._error(i, what, f"returned a reward that is not finite: {reward[i]}")

    def _tensor(self, x: np.ndarray) -> torch.Tensor:
        """(N, ...) -> (T, E, ...) on the batch's device (a copy)."""
        return torch.tensor(x.reshape(*self.batch_shape, *x.shape[1:]), device=self.device)
