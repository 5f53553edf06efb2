"""Task families the trainer can meta-learn on, by name (``--env``): the one registry.

A family knows its observation and action sizes, draws tasks from its environment's
own seeded RNG (Gymnasium's ``np_random``), and builds a batched environment that steps
every (task, episode) pair at once. :data:`FAMILIES` holds, per built-in name, how to build
it and the settings that depend on it (α, the horizon, its oracle variant, its dynamics
and the episodes per task under each); the config, the CLI help and the evaluation read
them there. Every family has the dynamics ``gymnasium`` (its env's own); the MuJoCo families
also have ``maml`` (``envs/locomotion_dynamics.py``). Any other name is a Gymnasium id or an
import path ``module:Class`` of an env following the task protocol
(``rkmeta_rl/rl/gym_tasks.py``): :func:`family_entry` checks it and builds its entry
(:data:`GYM_INNER_LR`, the horizon of its spec), stepped by :class:`GymFamily`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache, partial
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from envs import metaworld
from envs.gym_batch import BatchedGymEnv
from envs.locomotion import make_locomotion_env
from envs.locomotion_dynamics import GYMNASIUM, MAML, check_dynamics
from envs.locomotion_tasks import DEFAULT_HORIZON, SPECS, oracle_name
from envs.mujoco_batch import BatchedLocomotion
from envs.nav2d import DEFAULT_MAX_EPISODE_STEPS, BatchedNav2D, Nav2DEnv
from rkmeta_rl.rl.gym_tasks import FORMS, inspect_task_env, is_gym_name, make_task_env


class TaskFamily:
    """What every family shares: a Gymnasium env (``self.env``) whose own ``np_random``
    draws the tasks, its sizes and action bounds. Subclasses add ``batched_env(tasks,
    episodes_per_task, seeds)``, the batched env of T tasks × E episodes whose row i
    (row-major over (task, episode)) resets from ``seeds[i]`` (``envs/batch.py``)."""

    seconds_per_step: float | None = None  # simulated time per env step, where there is one

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

    def sample_test_tasks(self, n: int) -> list[dict]:
        """Tasks to evaluate on: the same distribution as training's, unless the family
        holds a test set apart (Meta-World)."""
        return self.sample_tasks(n)

    def task_class(self, task: dict) -> str | None:
        """The class a task belongs to, where the family's tasks come in classes (Meta-World
        ML10/ML45: its environment); None otherwise."""
        return None

    def rng_state(self) -> dict[str, Any]:
        return self.env.np_random.bit_generator.state

    def set_rng_state(self, state: dict[str, Any]) -> None:
        self.env.np_random.bit_generator.state = state


class Nav2DFamily(TaskFamily):
    """2D navigation (``envs/nav2d.py``): goals uniform in [-0.5, 0.5]²."""

    def __init__(self, goal_conditioned: bool = False,
                 max_episode_steps: int = DEFAULT_MAX_EPISODE_STEPS,
                 device: str | torch.device = "cpu") -> None:
        self.goal_conditioned = goal_conditioned
        super().__init__(Nav2DEnv(max_episode_steps=max_episode_steps,
                                  goal_conditioned=goal_conditioned),
                         max_episode_steps, device)

    def batched_env(self, tasks: list[dict], episodes_per_task: int,
                    seeds: Sequence[int]) -> BatchedNav2D:
        goals = torch.as_tensor(np.stack([t["goal"] for t in tasks]), dtype=torch.float32,
                                device=self.device)
        return BatchedNav2D(goals, episodes_per_task, self.max_episode_steps,
                            self.goal_conditioned, seeds)


class LocomotionFamily(TaskFamily):
    """A MuJoCo locomotion family or its oracle variant (``envs/locomotion.py``) under one
    dynamics, stepped in batches by ``envs.mujoco_batch.BatchedLocomotion`` (physics on a
    pool of ``nthread`` threads).

    Tasks come from the Gymnasium env's own ``np_random`` (a family and its oracle draw the
    same ones); each episode's reset noise comes from its own seed (the sampler's streams,
    ``rkmeta_rl/rl/streams.py``), so a run repeats and resumes exactly. Batches live on
    the CPU (MuJoCo); ``device`` only places the action bounds.
    """

    def __init__(self, name: str, max_episode_steps: int = DEFAULT_HORIZON,
                 device: str | torch.device = "cpu", nthread: int = 2,
                 dynamics: str = GYMNASIUM) -> None:
        self.name, self.nthread, self.dynamics = name, nthread, dynamics
        super().__init__(make_locomotion_env(name, dynamics=dynamics), max_episode_steps,
                         device)
        self.seconds_per_step = float(self.env.dt)
        self.env.reset(seed=0)

    def batched_env(self, tasks: list[dict], episodes_per_task: int,
                    seeds: Sequence[int]) -> BatchedLocomotion:
        return BatchedLocomotion(self.name, tasks, episodes_per_task, self.max_episode_steps,
                                 seeds, nthread=self.nthread, dynamics=self.dynamics)


class GymFamily(TaskFamily):
    """Any Gymnasium env following the task protocol (``rkmeta_rl/rl/gym_tasks.py``),
    stepped by the generic loop ``envs.gym_batch.BatchedGymEnv``.

    ``self.env`` draws the tasks; each (task, episode) resets with its own seed (the
    sampler's streams, ``rkmeta_rl/rl/streams.py``), so a run repeats and resumes exactly.
    The episodes run on a pool of further instances of the env, made as needed and reused
    by every batch: each copy is reset with its task and seed at the start of each batch.
    """

    def __init__(self, name: str, max_episode_steps: int,
                 device: str | torch.device = "cpu",
                 make: Callable[[], gym.Env] | None = None) -> None:
        self.name = name
        self.make = make if make is not None else partial(make_task_env, name,
                                                          max_episode_steps)
        super().__init__(self.make(), max_episode_steps, device)
        self.env.reset(seed=0)
        self.pool: list[gym.Env] = []

    def sample_tasks(self, n: int) -> list[dict]:
        return list(self.env.unwrapped.sample_tasks(n))

    def sample_test_tasks(self, n: int) -> list[dict]:
        """The env's ``sample_test_tasks(n)`` where it has one (a held-out test set, as
        Meta-World's), else :meth:`sample_tasks`."""
        sample = getattr(self.env.unwrapped, "sample_test_tasks", None)
        return list(sample(n)) if callable(sample) else self.sample_tasks(n)

    def batched_env(self, tasks: list[dict], episodes_per_task: int,
                    seeds: Sequence[int]) -> BatchedGymEnv:
        rows = [task for task in tasks for _ in range(episodes_per_task)]
        while len(self.pool) < len(rows):
            self.pool.append(self.make())
        self.pool = self._arrange(self.pool, rows)
        return BatchedGymEnv(self.pool, tasks, episodes_per_task, seeds,
                             self.max_episode_steps, self.device)

    def _arrange(self, pool: list[gym.Env], rows: list[dict]) -> list[gym.Env]:
        """The pool in the order its copies take the rows' tasks (as it is, here)."""
        return pool


class MetaWorldFamily(GymFamily):
    """A Meta-World benchmark (``envs/metaworld.py``): trained on its train tasks, evaluated
    on its test tasks (:meth:`sample_test_tasks`), stepped by the generic loop."""

    def __init__(self, name: str, max_episode_steps: int = metaworld.HORIZON,
                 device: str | torch.device = "cpu") -> None:
        benchmark, env_name = metaworld.parse_name(name)
        horizon_of(name, max_episode_steps)  # within Meta-World's max_path_length
        self.classes = benchmark != "ml1"
        super().__init__(name, max_episode_steps, device,
                         make=partial(metaworld.MetaWorldTaskEnv, benchmark, env_name))

    def task_class(self, task: dict) -> str | None:
        return metaworld.task_class(task) if self.classes else None

    def _arrange(self, pool: list[gym.Env], rows: list[dict]) -> list[gym.Env]:
        """Each row on a copy that holds its task's environment class already where one is
        free (ML10/ML45: a copy builds another class's environment in about 0.1 s; the
        balanced meta-batches then need none)."""
        if not self.classes:
            return pool
        return metaworld.match_classes(pool, [metaworld.task_class(t) for t in rows])


# Episodes per task and stage (--fast-batch-size): MAML's 20 rollouts per gradient step,
# except for its ant forward/backward runs, which took 40 (under MAML's dynamics only).
EPISODES = 20
MAML_EPISODES = {"ant-dir": 40}

META_BATCH_SIZE = 40  # tasks per meta-iteration: MAML's 40 (20 for Meta-World, below)
HIDDEN = (100, 100)  # the policy's hidden layers: MAML's

Builder = Callable[[str | torch.device, int, str], TaskFamily]  # (device, horizon, dynamics)


@dataclass(frozen=True)
class FamilyEntry:
    """How to build a family and the settings that depend on it."""

    build: Builder
    inner_lr: float  # default adaptation step α
    horizon: int | None  # default episode length in steps; None: --max-episode-steps needed
    oracle: str | None = None  # the variant with the task in the observation
    mujoco: bool = False  # sampled on the CPU by MuJoCo
    # the dynamics it has, each with its default episodes per task and stage
    episodes: dict[str, int] = field(default_factory=lambda: {GYMNASIUM: EPISODES})
    max_horizon: int | None = None  # the longest episode the env allows, where it has one
    meta_batch_size: int = META_BATCH_SIZE  # default tasks per meta-iteration
    hidden: tuple[int, ...] = HIDDEN  # default hidden layer sizes


def _nav2d(goal_conditioned: bool) -> Builder:
    return lambda device, horizon, dynamics: Nav2DFamily(goal_conditioned, horizon, device)


def _locomotion(name: str, base: str, oracle: str | None = None) -> FamilyEntry:
    """The entry of locomotion family ``name`` (``base`` itself or its oracle variant)."""
    return FamilyEntry(
        lambda device, horizon, dynamics: LocomotionFamily(name, horizon, device,
                                                           dynamics=dynamics),
        0.1, DEFAULT_HORIZON, oracle=oracle, mujoco=True,
        episodes={GYMNASIUM: EPISODES, MAML: MAML_EPISODES.get(base, EPISODES)})


# α: the paper's 0.16 on 2D navigation, MAML's 0.1 on locomotion. Horizons: the envs' own
# (100 for nav2d; 200 for locomotion, MAML's, while much later work uses 100).
FAMILIES: dict[str, FamilyEntry] = {
    "nav2d": FamilyEntry(_nav2d(False), 0.16, DEFAULT_MAX_EPISODE_STEPS, oracle="nav2d-goal"),
    "nav2d-goal": FamilyEntry(_nav2d(True), 0.16, DEFAULT_MAX_EPISODE_STEPS),
    **{name: _locomotion(name, name, oracle=oracle_name(name)) for name in SPECS},
    **{oracle_name(name): _locomotion(oracle_name(name), name) for name in SPECS},
}

# α for any other Gymnasium env (a Gymnasium id or module:Class): MAML's locomotion value.
GYM_INNER_LR = 0.1

LOCOMOTION = tuple(name for name, entry in FAMILIES.items() if entry.mujoco)
ORACLE_ENVS = tuple(entry.oracle for entry in FAMILIES.values() if entry.oracle)


def family_entry(name: str) -> FamilyEntry:
    """The registry entry of family ``name``: a built-in one, or one made for a Gymnasium
    id or import path whose env follows the task protocol (one-line ValueError if not);
    unknown names list the valid ones."""
    if name in FAMILIES:
        return FAMILIES[name]
    if name.startswith(metaworld.PREFIX):
        return _metaworld_entry(name)
    if not is_gym_name(name):
        raise ValueError(f"unknown env {name!r}; valid choices: {', '.join(FAMILIES)}, "
                         f"{metaworld.FORMS}, {FORMS}")
    return _gym_entry(name)


# Meta-World's MAML-TRPO baseline, per benchmark: the Meta-World paper's Table 9 (Yu et al.,
# 2019, arXiv:1910.10897, appendix: "Hyperparameters used for Garage experiments with
# MAML"): meta-batch 20 / 20 / 45 tasks and 10 / 10 / 20 episodes per task (ML1 / ML10 /
# ML45), 500-step episodes, 128 × 128 hidden units (tanh there; this package's policy is
# MAML's ReLU network), max KL 0.01, γ 0.99, one inner step.
# α is garage's released examples' 0.1 (examples/torch/maml_trpo_metaworld_ml1_push.py and
# _ml10.py), not the table's 1e-4, a step 1000 times smaller under which the adapted policy
# barely moves and the tableaus (which differ through α) would train nearly the same policy;
# docs/guides/metaworld.md says more.
METAWORLD_SIZES = {"ml1": (20, 10), "ml10": (20, 10), "ml45": (45, 20)}  # (tasks, episodes)
METAWORLD = {"inner_lr": 0.1, "horizon": metaworld.HORIZON, "hidden": (128, 128)}


@cache
def _metaworld_entry(name: str) -> FamilyEntry:
    """The entry of a Meta-World benchmark ``metaworld-ml1:ENV``, ``metaworld-ml10`` or
    ``metaworld-ml45`` (one-line ValueError for a bad name or a missing install)."""
    benchmark, env_name = metaworld.parse_name(name)
    try:
        metaworld.check_benchmark(benchmark, env_name)
    except ImportError as e:
        raise ValueError(f"env {name!r}: {e}") from None
    tasks, episodes = METAWORLD_SIZES[benchmark]
    return FamilyEntry(
        lambda device, horizon, dynamics: MetaWorldFamily(name, horizon, device),
        METAWORLD["inner_lr"], METAWORLD["horizon"], episodes={GYMNASIUM: episodes},
        max_horizon=metaworld.HORIZON, meta_batch_size=tasks, hidden=METAWORLD["hidden"])


@cache
def _gym_entry(name: str) -> FamilyEntry:
    """The entry of a Gymnasium env ``name`` (checked once per process)."""
    horizon = inspect_task_env(name)
    return FamilyEntry(lambda device, h, dynamics: GymFamily(name, h, device), GYM_INNER_LR,
                       horizon)


def horizon_of(name: str, max_episode_steps: int | None = None) -> int:
    """``max_episode_steps`` when given, else family ``name``'s horizon (ValueError if it
    has none: a Gymnasium env registered without max_episode_steps, or a class)."""
    entry = family_entry(name)
    horizon = entry.horizon if max_episode_steps is None else max_episode_steps
    if horizon is None:
        raise ValueError(f"env {name!r} has no registered horizon (max_episode_steps); "
                         "give --max-episode-steps N")
    if entry.max_horizon is not None and not 0 < horizon <= entry.max_horizon:
        raise ValueError(f"--max-episode-steps for {name} must be in 1..{entry.max_horizon} "
                         f"(its env's own limit), got {horizon}")
    return horizon


def oracle_env(name: str) -> str:
    """The goal-conditioned variant of family ``name`` (its oracle's environment)."""
    oracle = family_entry(name).oracle
    if oracle is None:
        with_oracle = [n for n, e in FAMILIES.items() if e.oracle]
        raise ValueError(f"no oracle variant for env {name!r}; valid choices: "
                         f"{', '.join(with_oracle)}")
    return oracle


def episodes_of(name: str, dynamics: str = GYMNASIUM) -> int:
    """Family ``name``'s default episodes per task and stage under ``dynamics``; a one-line
    ValueError if it does not have that dynamics (only the MuJoCo families have maml)."""
    entry = family_entry(name)
    if check_dynamics(dynamics) not in entry.episodes:
        with_it = [n for n, e in FAMILIES.items() if dynamics in e.episodes]
        raise ValueError(f"--dynamics {dynamics}: env {name!r} has only "
                         f"{', '.join(entry.episodes)}; {dynamics} is for "
                         f"{', '.join(with_it)}")
    return entry.episodes[dynamics]


def make_family(name: str, device: str | torch.device = "cpu",
                max_episode_steps: int | None = None,
                dynamics: str = GYMNASIUM) -> TaskFamily:
    """The task family called ``name`` under ``dynamics`` (horizon: the family's default
    when None)."""
    episodes_of(name, dynamics)
    return family_entry(name).build(device, horizon_of(name, max_episode_steps), dynamics)


def seconds_per_step(name: str, dynamics: str = GYMNASIUM) -> float | None:
    """Simulated seconds per env step of MuJoCo family ``name`` under ``dynamics``; None
    for the families without a clock."""
    if name not in LOCOMOTION:
        return None
    return float(make_locomotion_env(name, dynamics=dynamics).dt)


def describe_episodes() -> str:
    """The episode defaults for the CLI help, e.g. '20; maml: 40 for ant-dir, ...'."""
    special = {n: e.episodes[MAML] for n, e in FAMILIES.items()
               if e.episodes.get(MAML, EPISODES) != EPISODES}
    metaworld_episodes = ", ".join(f"{e} for metaworld-{b}"
                                   for b, (_, e) in METAWORLD_SIZES.items())
    return f"{EPISODES}; {metaworld_episodes}; under --dynamics maml " \
        + ", ".join(f"{v} for {n}" for n, v in special.items())


def describe(key: str, sep: str = ", ") -> str:
    """One family-dependent default for the CLI help, e.g. '0.16: nav2d, nav2d-goal; ...'
    (``sep`` joins a tuple value's items)."""
    groups: dict[Any, list[str]] = {}
    for name, entry in FAMILIES.items():
        groups.setdefault(getattr(entry, key), []).append(name)
    if key == "meta_batch_size":
        for benchmark, (tasks, _) in METAWORLD_SIZES.items():
            groups.setdefault(tasks, []).append(f"metaworld-{benchmark}")
    else:
        groups.setdefault(METAWORLD[key], []).append("metaworld-*")

    def text(value: Any) -> str:
        return sep.join(map(str, value)) if isinstance(value, tuple) else str(value)

    return "; ".join(f"{text(value)}: {', '.join(names)}" for value, names in groups.items())
