"""Meta-World's meta-RL benchmarks (ML1, ML10, ML45) as task envs of the task protocol.

Meta-World (Yu et al., 2019, arXiv:1910.10897; the ``metaworld`` package, 3.x) builds each
benchmark as a list of *train* and *test* tasks: for ML1 one manipulation environment
(``reach-v3``, ``push-v3``, ... 50 of them) with 50 train and 50 different test goal
positions; for ML10 and ML45 10 or 45 train environments and 5 held-out test environments,
50 goals each. A task is a ``metaworld.Task`` handed to the environment's ``set_task``; the
goal is not in the observation (Meta-World's "partially observable" ML setting), so the
policy must find it from rewards.

:class:`MetaWorldTaskEnv` makes one benchmark a ``gymnasium.Env`` following this package's
task protocol (``rkmeta_rl/rl/gym_tasks.py``): ``sample_tasks(n)`` draws train tasks
(``sample_test_tasks(n)`` test tasks) from the env's own ``np_random``, and
``reset(options={"task": task})`` sets one. A task is a small dict naming its place in the
benchmark (``{"env_name": "reach-v3", "split": "train", "index": 7}``), JSON-friendly;
the env keeps one Meta-World environment and swaps it when a task of another environment
class arrives. ``info["success"]`` is Meta-World's own success flag, which the sampler
records (an episode succeeds if the flag is set at any step: Meta-World's evaluation ends an
episode at its first success and counts it). Observations are 39-d, actions 4-d in
[-1, 1]; the horizon is Meta-World's ``max_path_length``, 500 steps.

Installing: ``pip install "rkmeta-rl[metaworld]"`` installs metaworld 3.1.1 with the
MuJoCo it pins (3.3.0). metaworld 3.1.1 also runs on MuJoCo 4 (``pip install --no-deps
metaworld==3.1.1`` keeps it): MuJoCo 4's weld constraints have 12 parameters where 3.3 had
11, and metaworld writes 11; :func:`import_metaworld` then writes them into the first 11
(MuJoCo 4's 12th, the weld's torque scale for the new solver, keeps its default).
"""

from __future__ import annotations

from functools import cache
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np

BENCHMARKS = ("ml1", "ml10", "ml45")
SPLITS = ("train", "test")
BENCHMARK_SEED = 0  # the seed of Meta-World's goal lists: every run meets the same goals
HORIZON = 500  # Meta-World's max_path_length
INSTALL = ('install it with: pip install "rkmeta-rl[metaworld]" (metaworld 3.1.1 and the '
           'MuJoCo 3.3 it pins), or keep MuJoCo 4 with: pip install --no-deps '
           'metaworld==3.1.1')
_WELD_PARAMS = 11  # what metaworld 3.1.1 writes into a weld's eq_data
PREFIX = "metaworld-"  # of every Meta-World --env name
FORMS = (f"{PREFIX}ml1:ENV (such as {PREFIX}ml1:reach-v3), {PREFIX}ml10, {PREFIX}ml45")


def import_metaworld() -> Any:
    """The ``metaworld`` module, with its weld reset fitted to MuJoCo 4 where that runs;
    a one-line ImportError saying how to install it when it is missing."""
    try:
        import metaworld
        from metaworld.sawyer_xyz_env import SawyerMocapBase
    except ImportError as e:
        raise ImportError(f"Meta-World is not installed ({e}); {INSTALL}") from None
    width = mujoco.MjModel.from_xml_string(
        "<mujoco><worldbody/></mujoco>").eq_data.shape[1]
    if width != _WELD_PARAMS and not getattr(SawyerMocapBase, "_rkmeta_welds", False):
        SawyerMocapBase.reset_mocap_welds = _reset_mocap_welds
        SawyerMocapBase._rkmeta_welds = True
    return metaworld


def _reset_mocap_welds(self) -> None:
    """metaworld's ``reset_mocap_welds`` on a MuJoCo whose welds have more parameters:
    the same 11 values (relative pose identity, torque scale 5) in the first 11."""
    model = self.model
    if model.nmocap == 0:
        return
    for i in range(model.neq):
        if model.eq_type[i] == mujoco.mjtEq.mjEQ_WELD:
            model.eq_data[i, :_WELD_PARAMS] = [0, 0, 0, 0, 0, 0, -1, 0, 0, 0, 5]


def check_benchmark(benchmark: str, env_name: str | None) -> None:
    """A one-line ValueError naming the valid benchmarks (or ML1 environments)."""
    if benchmark not in BENCHMARKS:
        raise ValueError(f"unknown Meta-World benchmark {benchmark!r}; valid choices: "
                         f"{', '.join(BENCHMARKS)}")
    if benchmark != "ml1":
        if env_name is not None:
            raise ValueError(f"Meta-World {benchmark} takes no environment name (got "
                             f"{env_name!r}); only ml1 does, as metaworld-ml1:reach-v3")
        return
    names = ml1_names()
    if env_name not in names:
        raise ValueError(f"unknown Meta-World ML1 environment {env_name!r}; valid choices: "
                         f"{', '.join(names)}")


@cache
def ml1_names() -> tuple[str, ...]:
    """The 50 environments ML1 can be built on (``reach-v3``, ``push-v3``, ...)."""
    return tuple(import_metaworld().ML1.ENV_NAMES)


@cache
def load_benchmark(benchmark: str, env_name: str | None = None) -> Any:
    """Meta-World's benchmark object (its goal lists from :data:`BENCHMARK_SEED`), built
    once per process (ML10 takes a few seconds)."""
    check_benchmark(benchmark, env_name)
    metaworld = import_metaworld()
    if benchmark == "ml1":
        return metaworld.ML1(env_name, seed=BENCHMARK_SEED)
    return getattr(metaworld, benchmark.upper())(seed=BENCHMARK_SEED)


def split_tasks(bench: Any, split: str) -> list[Any]:
    """The benchmark's ``metaworld.Task`` list of ``split``."""
    return bench.train_tasks if split == "train" else bench.test_tasks


def split_classes(bench: Any, split: str) -> dict[str, type]:
    """The environment classes of ``split`` by name, in the benchmark's order."""
    return bench.train_classes if split == "train" else bench.test_classes


class MetaWorldTaskEnv(gym.Env):
    """One Meta-World benchmark as a task env (observation 39-d, action 4-d in [-1, 1]).

    Args:
        benchmark: ``ml1``, ``ml10`` or ``ml45``.
        env_name: ML1's environment (``reach-v3``, ...); None for ML10/ML45.

    Tasks are drawn balanced over the split's environment classes (the meta-batch is
    spread over them as evenly as it divides, classes in a random order), and within a
    class without repeats while its 50 goals last.
    """

    metadata = {"render_modes": []}

    def __init__(self, benchmark: str, env_name: str | None = None) -> None:
        self.benchmark, self.env_name = benchmark, env_name
        self._bench = load_benchmark(benchmark, env_name)
        self._envs: dict[str, Any] = {}
        first = {"env_name": next(iter(split_classes(self._bench, "train"))),
                 "split": "train", "index": 0}
        self._inner = self._env_for(first)
        self.task: dict[str, Any] = first
        self.observation_space = self._inner.observation_space
        self.action_space = self._inner.action_space
        self.max_path_length = int(self._inner.max_path_length)

    # ------------------------------------------------------------------ tasks
    def sample_tasks(self, n: int) -> list[dict[str, Any]]:
        """``n`` train tasks drawn with ``self.np_random``."""
        return self._sample(n, "train")

    def sample_test_tasks(self, n: int) -> list[dict[str, Any]]:
        """``n`` test tasks (ML1: held-out goals; ML10/ML45: held-out classes)."""
        return self._sample(n, "test")

    def _sample(self, n: int, split: str) -> list[dict[str, Any]]:
        tasks = split_tasks(self._bench, split)
        by_class: dict[str, list[int]] = {}
        for i, task in enumerate(tasks):
            by_class.setdefault(task.env_name, []).append(i)
        names = list(by_class)
        order = [names[j] for j in self.np_random.permutation(len(names))]
        counts = {name: n // len(names) + (k < n % len(names)) for k, name in enumerate(order)}
        drawn = []
        for name in order:
            indices = by_class[name]
            picks = self.np_random.choice(len(indices), counts[name],
                                          replace=counts[name] > len(indices))
            drawn += [{"env_name": name, "split": split, "index": int(indices[p])}
                      for p in picks]
        return [drawn[j] for j in self.np_random.permutation(len(drawn))]

    def _env_for(self, task: dict[str, Any]) -> Any:
        """The Meta-World environment of the task's class, with the task set."""
        split, index = task.get("split"), task.get("index")
        tasks = split_tasks(self._bench, split) if split in SPLITS else []
        if not (isinstance(index, (int, np.integer)) and 0 <= index < len(tasks)
                and tasks[index].env_name == task.get("env_name")):
            raise ValueError(f"not a task of Meta-World {self.benchmark}: {task!r}; tasks "
                             "come from sample_tasks / sample_test_tasks")
        name = task["env_name"]
        if name not in self._envs:
            self.close()  # one environment at a time: ML45 has 50 classes
            self._envs[name] = split_classes(self._bench, split)[name]()
        env = self._envs[name]
        env.set_task(tasks[index])
        return env

    # ------------------------------------------------------------------ gymnasium
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        task = (options or {}).get("task")
        if task is not None:
            self._inner, self.task = self._env_for(task), dict(task)
        if seed is not None:
            self._inner.seed(seed)
        obs, info = self._inner.reset()
        return obs, {**info, "task": self.task}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self._inner.step(action)
        return obs, float(reward), bool(terminated), bool(truncated), info

    def close(self) -> None:
        for env in self._envs.values():
            env.close()
        self._envs.clear()


def match_classes(pool: list[Any], classes: list[str]) -> list[Any]:
    """``pool`` (task envs, at least ``len(classes)``) reordered so that copy i holds the
    environment class ``classes[i]`` already wherever a free copy does; the rest after."""
    free: dict[str, list[Any]] = {}
    for env in pool:
        free.setdefault(task_class(env.unwrapped.task), []).append(env)
    chosen = [free[c].pop() if free.get(c) else None for c in classes]
    rest = [env for envs in free.values() for env in envs]
    return [env if env is not None else rest.pop() for env in chosen] + rest


def task_class(task: dict[str, Any]) -> str:
    """The environment class a Meta-World task belongs to (``reach-v3``, ...)."""
    return str(task["env_name"])


def parse_name(name: str) -> tuple[str, str | None]:
    """``metaworld-ml1:reach-v3`` -> ("ml1", "reach-v3"), ``metaworld-ml10`` -> ("ml10",
    None); ValueError (one line, the valid forms) for anything else."""
    benchmark, _, env_name = name.removeprefix(PREFIX).partition(":")
    if benchmark not in BENCHMARKS or (benchmark == "ml1") != bool(env_name):
        raise ValueError(f"unknown Meta-World env {name!r}; valid forms: {FORMS}")
    return benchmark, env_name or None
