"""What every batched env shares: T tasks × E episodes stepped together, and its clock.

The batched-env protocol (``reset() -> obs``, ``step(action) -> (obs, reward, terminated,
truncated)``, ``alive``, ``max_episode_steps``) is followed by :class:`envs.nav2d.BatchedNav2D`,
:class:`envs.mujoco_batch.BatchedLocomotion` and :class:`envs.gym_batch.BatchedGymEnv`;
this base class holds the sizes they all report. Each takes one reset seed per row
(T·E of them, row-major over (task, episode)) and every ``reset()`` starts row i from seed
i, so a batch is a function of its tasks and seeds. An ended episode either freezes its
row (``alive`` False from then on) or, in a batch that restarts episodes
(:class:`envs.mujoco_batch.BatchedLocomotion` under MAML's dynamics), reports its end
(``terminated``) while the row stays alive and returns the next episode's first
observation. An env that fails inside a row raises :class:`EnvError`, which names the row.
"""

from __future__ import annotations


class EnvError(RuntimeError):
    """An env failed on row (``task``, ``episode``) of a batch (indices within the batch).
    ``what`` says how (``__cause__`` holds the env's own exception where there is one);
    the message adds the row."""

    def __init__(self, task: int, episode: int, what: str) -> None:
        super().__init__(f"{what} (task {task}, episode {episode})")
        self.task, self.episode, self.what = task, episode, what


def check_seeds(seeds, n: int) -> list[int]:
    """``n`` reset seeds as Python ints (ValueError otherwise)."""
    seeds = [int(s) for s in seeds]
    if len(seeds) != n:
        raise ValueError(f"{n} reset seeds are needed (one per row), got {len(seeds)}")
    return seeds


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
