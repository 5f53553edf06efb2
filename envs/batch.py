"""What every batched env shares: T tasks × E episodes stepped together, and its clock.

The batched-env protocol (``reset() -> obs``, ``step(action) -> (obs, reward, terminated,
truncated)``, ``alive``, ``max_episode_steps``) is followed by :class:`envs.nav2d.BatchedNav2D`,
:class:`envs.mujoco_batch.BatchedLocomotion` and :class:`envs.gym_batch.BatchedGymEnv`;
this base class holds the sizes they all report.
"""

from __future__ import annotations


class EpisodeBatch:
    """Sizes of a (task, episode) batch. Subclasses set ``tasks`` (or override
    :attr:`num_tasks`), ``episodes_per_task`` and the step counter ``_steps``."""

    tasks: list[dict]
    episodes_per_task: int
    _steps: int

    @property
    def num_tasks(self) -> int:
        """T."""
        return len(self.tasks)

    @property
    def batch_shape(self) -> tuple[int, int]:
        """(T, E)."""
        return self.num_tasks, self.episodes_per_task

    @property
    def num_envs(self) -> int:
        """N = T·E."""
        return self.num_tasks * self.episodes_per_task

    @property
    def step_count(self) -> int:
        """Steps taken since the last reset."""
        return self._steps
