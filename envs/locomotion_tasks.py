"""What a locomotion task is: how tasks are drawn, and the task's term of the reward.

Every family keeps a Gymnasium MuJoCo v5 robot (its model and observation) and replaces the
forward-reward term by a task term; the other terms (control, contact, survive) and the
step's timing come from the dynamics, Gymnasium's or MAML's (``envs/locomotion_dynamics.py``).

A task is a dict: ``{"velocity": v}``, ``{"direction": ±1.0}`` or ``{"goal": (x, y)}``.
These functions work on a batch (arrays with a leading dimension N), and the Gymnasium
envs (``envs/locomotion.py``) and the batched stepper (``envs/mujoco_batch.py``) both use
them, so the two compute the same reward by construction.

Each family has an oracle variant, ``NAME-oracle`` (:func:`oracle_name`): the same env with
the task appended to the observation (v*, d, or the goal's x and y).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from envs.locomotion_dynamics import MAML, RobotDynamics

DEFAULT_HORIZON = 200  # the MAML locomotion experiments; much later PyTorch work uses 100


@dataclass(frozen=True)
class LocomotionSpec:
    """One locomotion family: its robot, task distribution and reward weights, and the
    Gymnasium id and :mod:`envs.locomotion` class it is registered as (see :mod:`envs`)."""

    name: str  # "halfcheetah-vel", ...
    robot: str  # "halfcheetah" or "ant" (Gymnasium's HalfCheetah-v5 / Ant-v5)
    task_key: str  # "velocity", "direction" or "goal"
    low: float = 0.0  # velocity range, or the half side of the goal square
    high: float = 0.0
    exclude_xy: bool = True  # Gymnasium's default: the root's x (and y) not observed
    maml_bonus: float = 0.0  # added to the task term under MAML's dynamics
    env_id: str = field(kw_only=True)  # Gymnasium id, "rkmeta_rl/HalfCheetahVel-v0", ...
    env_class: str = field(kw_only=True)  # its entry point's class in envs.locomotion

    @property
    def entry_point(self) -> str:
        """Gymnasium's entry point of :attr:`env_id`."""
        return f"envs.locomotion:{self.env_class}"

    def sample_tasks(self, rng: np.random.Generator, n: int) -> list[dict]:
        """``n`` tasks drawn from ``rng`` (the env's own ``np_random``)."""
        if self.task_key == "velocity":
            return [{"velocity": float(v)} for v in rng.uniform(self.low, self.high, n)]
        if self.task_key == "direction":
            return [{"direction": float(d)} for d in 2.0 * rng.integers(0, 2, n) - 1.0]
        return [{"goal": g} for g in rng.uniform(self.low, self.high, (n, 2))]

    @property
    def task_dim(self) -> int:
        """Entries the task adds to an oracle's observation: 1, or 2 for a goal."""
        return 2 if self.task_key == "goal" else 1

    def task_values(self, tasks: list[dict]) -> np.ndarray:
        """The tasks as one array: (N,) for velocity and direction, (N, 2) for goals."""
        return np.array([np.asarray(t[self.task_key], dtype=np.float64) for t in tasks])

    def check_task(self, task: dict) -> dict:
        """The task, validated (ValueError naming the bad value and what is expected)."""
        if not isinstance(task, dict) or self.task_key not in task:
            raise ValueError(f"{self.name}: a task is {{{self.task_key!r}: ...}}, got {task!r}")
        raw = task[self.task_key]
        shape = (2,) if self.task_key == "goal" else ()
        expected = "a finite (x, y) pair" if shape else "a finite number"
        try:
            if isinstance(raw, (str, bytes, bool)) or any(
                    isinstance(x, (str, bytes, bool)) for x in np.ravel(np.asarray(raw, object))):
                raise TypeError
            value = np.asarray(raw, dtype=np.float64)
        except (TypeError, ValueError):
            value = None
        if value is None or value.shape != shape or not np.all(np.isfinite(value)):
            raise ValueError(f"{self.name}: task {self.task_key} must be {expected}, got {raw!r}")
        if self.task_key == "direction" and value not in (-1.0, 1.0):
            raise ValueError(f"{self.name}: direction must be -1 or 1, got {raw!r}")
        return {self.task_key: value.copy() if shape else float(value)}

    def task_reward(self, values: np.ndarray, x_velocity: np.ndarray, xy: np.ndarray,
                    dynamics: RobotDynamics) -> np.ndarray:
        """The task term (N,): -|v_x - v*|, d·v_x, or -‖xy - goal‖ (xy after the step);
        under MAML's dynamics the goal distance is L1 and :attr:`maml_bonus` is added."""
        maml = dynamics.name == MAML
        if self.task_key == "velocity":
            term = -np.abs(x_velocity - values)
        elif self.task_key == "direction":
            term = values * x_velocity
        else:
            term = -np.linalg.norm(xy - values, ord=1 if maml else 2, axis=-1)
        return term + self.maml_bonus if maml else term


SPECS: dict[str, LocomotionSpec] = {spec.name: spec for spec in (
    LocomotionSpec("halfcheetah-vel", "halfcheetah", "velocity", 0.0, 2.0,
                   env_id="rkmeta_rl/HalfCheetahVel-v0", env_class="HalfCheetahVelEnv"),
    LocomotionSpec("halfcheetah-dir", "halfcheetah", "direction",
                   env_id="rkmeta_rl/HalfCheetahDir-v0", env_class="HalfCheetahDirEnv"),
    # MAML's ant-vel adds 1 to -|v - v*| ("make it happy, not suicidal")
    LocomotionSpec("ant-vel", "ant", "velocity", 0.0, 3.0, maml_bonus=1.0,
                   env_id="rkmeta_rl/AntVel-v0", env_class="AntVelEnv"),
    LocomotionSpec("ant-dir", "ant", "direction",
                   env_id="rkmeta_rl/AntDir-v0", env_class="AntDirEnv"),
    # goals uniform in the square [-3, 3]² (side 6, as the MAML code draws them); the
    # ant must see where it is, so its x and y stay in the observation; MAML adds 4
    LocomotionSpec("ant-goal", "ant", "goal", -3.0, 3.0, exclude_xy=False, maml_bonus=4.0,
                   env_id="rkmeta_rl/AntGoal-v0", env_class="AntGoalEnv"),
)}
"""Every locomotion family by name, in order: the one list of them. The Gymnasium ids and
entry points (:mod:`envs`) and :data:`envs.locomotion.FAMILY_ENVS` are derived from it;
import it rather than listing the names again."""

ORACLE_SUFFIX = "-oracle"


def oracle_name(name: str) -> str:
    """The oracle variant of family ``name``: the task in the observation."""
    return name + ORACLE_SUFFIX


ORACLES: tuple[str, ...] = tuple(oracle_name(name) for name in SPECS)
"""Every family's oracle variant, in :data:`SPECS`' order."""


def get_spec(name: str) -> LocomotionSpec:
    if name not in SPECS:
        raise ValueError(f"unknown locomotion family {name!r}; valid choices: "
                         f"{', '.join(SPECS)}")
    return SPECS[name]


def split_family(name: str) -> tuple[LocomotionSpec, bool]:
    """(spec, goal_conditioned) of a family or of its oracle variant ``NAME-oracle``."""
    if name in ORACLES:
        return SPECS[name.removesuffix(ORACLE_SUFFIX)], True
    if name not in SPECS:
        raise ValueError(f"unknown locomotion family {name!r}; valid choices: "
                         f"{', '.join((*SPECS, *ORACLES))}")
    return SPECS[name], False
