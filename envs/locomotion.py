"""Locomotion task families on Gymnasium's MuJoCo v5 robots (HalfCheetah-v5, Ant-v5).

Each env keeps its robot's model (under MAML's dynamics Ant's contacts take rllab's
``solimp``) and observation, replaces the forward reward by the task term of
:mod:`envs.locomotion_tasks`, and steps, measures and charges as one of the two dynamics of
:mod:`envs.locomotion_dynamics` (``dynamics="gymnasium"``, the default, or ``"maml"``):

* :class:`HalfCheetahTaskEnv` (``halfcheetah-vel``, ``halfcheetah-dir``): reward
  ``task term - control cost``;
* :class:`AntTaskEnv` (``ant-vel``, ``ant-dir``, ``ant-goal``): reward
  ``task term + survive bonus - control cost - contact cost`` (the episode terminates when
  the torso leaves ``healthy_z_range``).

The task term is ``-|v_x - v*|``, ``d · v_x`` or ``-‖xy - goal‖`` (MAML: L1, plus a bonus
for ant-vel and ant-goal). Under Gymnasium's dynamics ``v_x`` is measured as the parent
measures it (HalfCheetah: from ``qpos[0]``; Ant: from the torso's ``xpos``) and ``xy`` is
the torso's ``xpos`` after the step (MuJoCo computes ``xpos`` at the start of the last
physics substep, so it lags ``qpos`` by one substep). Under MAML's, both are the torso
subtree's centre of mass, its velocity and position, at the state the step ended in.

``goal_conditioned=True`` (the oracle variant, ``NAME-oracle``) appends the task's values
to the observation: v*, d, or the goal's x and y.

Task interface (as :class:`envs.nav2d.Nav2DEnv`): :meth:`sample_tasks` draws from the env's
own ``np_random``; a task given to the constructor, to :meth:`reset_task` or as
``reset(options={"task": task})`` stays fixed across resets; while none is fixed, every
:meth:`reset` draws one after the robot's initial state, so the initial state depends on
the seed only, not on how the task was chosen.

The fixed-family subclasses (:class:`HalfCheetahVelEnv`, ...) are the registered entry
points (``rkmeta_rl/HalfCheetahVel-v0``, ...; see :mod:`envs`);
``gymnasium.make(id, dynamics="maml", goal_conditioned=True)`` selects the variants.
"""

from __future__ import annotations

from typing import Any, ClassVar

import mujoco
import numpy as np
from gymnasium import spaces, utils
from gymnasium.envs.mujoco.ant_v5 import AntEnv
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
from gymnasium.error import ResetNeeded

from envs.locomotion_dynamics import GYMNASIUM, RobotDynamics, robot_dynamics
from envs.locomotion_tasks import SPECS, LocomotionSpec, get_spec, split_family

StepResult = tuple[np.ndarray, float, bool, bool, dict[str, Any]]


class _TaskFamilyMixin:
    """Task state and API shared by the robots' task envs (mixed in before the robot)."""

    robot: ClassVar[str]  # "halfcheetah" or "ant": the families this class runs

    def __init__(self, family: str, task: dict | None = None, dynamics: str = GYMNASIUM,
                 goal_conditioned: bool = False, **kwargs: Any) -> None:
        """Build the robot for ``family`` under ``dynamics`` (``kwargs`` go to the
        Gymnasium robot, except the settings the dynamics fix)."""
        spec = get_spec(family)
        if spec.robot != self.robot:
            raise ValueError(
                f"{type(self).__name__} runs the {self.robot} families, "
                f"got {family!r} (a {spec.robot} family)"
            )
        self.family = family
        self.locomotion_spec: LocomotionSpec = spec
        self.robot_dynamics: RobotDynamics = robot_dynamics(spec.robot, dynamics)
        self.goal_conditioned = bool(goal_conditioned)
        self._task: dict | None = None
        self._values: np.ndarray | None = None
        self._task_fixed = False
        if task is not None:
            self.reset_task(task)
        super().__init__(
            ctrl_cost_weight=self.robot_dynamics.ctrl_cost_weight,
            frame_skip=self.robot_dynamics.frame_skip,
            exclude_current_positions_from_observation=spec.exclude_xy,
            **kwargs,
        )
        if self.robot_dynamics.rllab_init_qpos:
            self.init_qpos = self.model.numeric("init_qpos").data.copy()
        if self.goal_conditioned:
            size = self.observation_space.shape[0] + spec.task_dim
            self.observation_space = spaces.Box(-np.inf, np.inf, (size,), np.float64)
        self._torso = self.model.body("torso").id
        utils.EzPickle.__init__(self, family, task, dynamics, goal_conditioned, **kwargs)

    def _initialize_simulation(self) -> tuple[mujoco.MjModel, mujoco.MjData]:
        """Gymnasium's model and data, the model with the dynamics' contact parameters
        (MAML's Ant: rllab's ``solimp``; :meth:`RobotDynamics.configure_model`)."""
        model, data = super()._initialize_simulation()
        return self.robot_dynamics.configure_model(model), data

    # ------------------------------------------------------------------ task interface
    def sample_tasks(self, n: int) -> list[dict]:
        """Draw ``n`` tasks of this family from ``self.np_random``."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"n must be a non-negative integer, got {n!r}")
        return self.locomotion_spec.sample_tasks(self.np_random, int(n))

    def reset_task(self, task: dict) -> None:
        """Fix the task (validated; ValueError if bad); it stays fixed across resets."""
        self._set_task(task)
        self._task_fixed = True

    @property
    def task(self) -> dict | None:
        """A copy of the current task, or None before the first reset or :meth:`reset_task`."""
        if self._task is None:
            return None
        return {
            key: np.copy(value) if isinstance(value, np.ndarray) else value
            for key, value in self._task.items()
        }

    # ------------------------------------------------------------------ gymnasium API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset the robot as the dynamics do, then draw a task unless one is fixed;
        ``options={"task": task}`` fixes the task first, as :meth:`reset_task` does."""
        if options is not None and "task" in options:
            self.reset_task(options["task"])
        obs, info = super().reset(seed=seed, options=options)
        if not self._task_fixed:
            self._set_task(self.locomotion_spec.sample_tasks(self.np_random, 1)[0])
        if self.goal_conditioned:
            obs = self._get_obs()
        info["task"] = self.task
        return obs, info

    def reset_model(self) -> np.ndarray:
        """Gymnasium's initial state, or under MAML's dynamics rllab's (``reset_mujoco``),
        with the contact forces of that state (rllab's ``forward()`` computes them)."""
        dyn = self.robot_dynamics
        if dyn.name == GYMNASIUM:
            return super().reset_model()
        dq, dv = dyn.reset_noise(self.np_random, self.model.nq, self.model.nv)
        self.set_state(self.init_qpos + dq, self.init_qvel + dv)
        mujoco.mj_rnePostConstraint(self.model, self.data)
        return self._get_obs()

    def _get_obs(self) -> np.ndarray:
        """The robot's observation, with the task's values appended when goal-conditioned."""
        obs = super()._get_obs()
        if not self.goal_conditioned:
            return obs
        values = self._values if self._values is not None else np.zeros(
            self.locomotion_spec.task_dim)
        return np.concatenate([obs, np.ravel(values)])

    # ------------------------------------------------------------------ helpers
    def _set_task(self, task: dict) -> None:
        """Validate ``task`` and make it the current one."""
        spec = self.locomotion_spec
        self._task = spec.check_task(task)
        self._values = spec.task_values([self._task])[0]

    def _require_task(self) -> None:
        """Raise ResetNeeded while no task is set (before the step touches the physics)."""
        if self._values is None:
            raise ResetNeeded("No task set yet: call reset() or reset_task() before step().")

    def _simulate(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Step the physics; the (x, y) velocity and position as the dynamics measure them."""
        self._require_task()
        before = self._root_xy()
        self.do_simulation(action, self.frame_skip)
        if not self.robot_dynamics.at_new_state:
            after = self._root_xy()
            return (after - before) / self.dt, after
        warm_start = self.data.qacc_warmstart.copy()
        mujoco.mj_forward(self.model, self.data)  # as rllab's forward() after stepping
        self.data.qacc_warmstart[:] = warm_start  # MuJoCo 3's mj_forward moves it; 4's not
        mujoco.mj_rnePostConstraint(self.model, self.data)
        mujoco.mj_subtreeVel(self.model, self.data)
        return (self.data.subtree_linvel[self._torso, :2].copy(),
                self.data.subtree_com[self._torso, :2].copy())

    def _root_xy(self) -> np.ndarray:
        """The root's position as Gymnasium's robot reads it for its velocity."""
        raise NotImplementedError

    def _task_reward(self, x_velocity: float, xy: np.ndarray) -> float:
        """The task term for this step (``xy``: the measured position after the step)."""
        return float(self.locomotion_spec.task_reward(self._values, x_velocity, xy,
                                                      self.robot_dynamics))

    def _ctrl_cost(self, action: np.ndarray) -> float:
        box = self.action_space
        return float(self.robot_dynamics.ctrl_cost(np.asarray(action, np.float64), box.low,
                                                   box.high))


class HalfCheetahTaskEnv(_TaskFamilyMixin, HalfCheetahEnv):
    """Gymnasium's HalfCheetah-v5 with a task term instead of the forward reward.

    Args:
        family: ``"halfcheetah-vel"`` or ``"halfcheetah-dir"``.
        task: optional fixed task (``{"velocity": v}`` or ``{"direction": ±1}``).
        dynamics: ``"gymnasium"`` or ``"maml"`` (:mod:`envs.locomotion_dynamics`).
        goal_conditioned: append the task to the observation (the oracle's variant).
        **kwargs: passed to ``HalfCheetahEnv`` (not ``ctrl_cost_weight``, ``frame_skip``
            nor ``exclude_current_positions_from_observation``, which the family sets).
    """

    robot = "halfcheetah"

    def _root_xy(self) -> np.ndarray:
        return np.array([self.data.qpos[0], 0.0])

    def step(self, action: np.ndarray) -> StepResult:
        """Simulate; reward = task term - control cost."""
        velocity, xy = self._simulate(action)
        x_velocity = float(velocity[0])
        reward_task = self._task_reward(x_velocity, xy)
        ctrl_cost = self._ctrl_cost(action)
        info = {
            "x_position": self.data.qpos[0],
            "x_velocity": x_velocity,
            "reward_task": reward_task,
            "reward_ctrl": -ctrl_cost,
            "task": self.task,
        }
        if self.render_mode == "human":
            self.render()
        return self._get_obs(), reward_task - ctrl_cost, False, False, info


class AntTaskEnv(_TaskFamilyMixin, AntEnv):
    """Gymnasium's Ant-v5 with a task term instead of the forward reward.

    Args:
        family: ``"ant-vel"``, ``"ant-dir"`` or ``"ant-goal"`` (whose observation keeps the
            torso's x and y).
        task: optional fixed task (``{"velocity": v}``, ``{"direction": ±1}`` or
            ``{"goal": (x, y)}``).
        dynamics: ``"gymnasium"`` or ``"maml"`` (:mod:`envs.locomotion_dynamics`).
        goal_conditioned: append the task to the observation (the oracle's variant).
        **kwargs: passed to ``AntEnv`` (not ``ctrl_cost_weight``, ``frame_skip`` nor
            ``exclude_current_positions_from_observation``, which the family sets).
    """

    robot = "ant"

    def _root_xy(self) -> np.ndarray:
        return self.data.body(self._main_body).xpos[:2].copy()

    def step(self, action: np.ndarray) -> StepResult:
        """Simulate; reward = task + survive - control - contact."""
        velocity, xy = self._simulate(action)
        x_velocity, y_velocity = map(float, velocity)
        reward_task = self._task_reward(x_velocity, xy)
        healthy = bool(self.is_healthy)
        survive = float(self.robot_dynamics.survive(healthy))
        ctrl_cost = self._ctrl_cost(action)
        contact_cost = float(self.contact_cost)
        reward = reward_task + survive - ctrl_cost - contact_cost
        terminated = (not healthy) and self._terminate_when_unhealthy
        info = {
            "x_position": self.data.qpos[0],
            "y_position": self.data.qpos[1],
            "distance_from_origin": np.linalg.norm(self.data.qpos[0:2], ord=2),
            "x_velocity": x_velocity,
            "y_velocity": y_velocity,
            "reward_task": reward_task,
            "reward_ctrl": -ctrl_cost,
            "reward_contact": -contact_cost,
            "reward_survive": survive,
            "task": self.task,
        }
        if self.render_mode == "human":
            self.render()
        return self._get_obs(), reward, terminated, False, info


# ---------------------------------------------------------------------- fixed families
class HalfCheetahVelEnv(HalfCheetahTaskEnv):
    """``halfcheetah-vel``: run at a target velocity drawn in [0, 2]."""

    def __init__(self, task: dict | None = None, **kwargs: Any) -> None:
        super().__init__("halfcheetah-vel", task, **kwargs)
        utils.EzPickle.__init__(self, task, **kwargs)


class HalfCheetahDirEnv(HalfCheetahTaskEnv):
    """``halfcheetah-dir``: run forward (+1) or backward (-1)."""

    def __init__(self, task: dict | None = None, **kwargs: Any) -> None:
        super().__init__("halfcheetah-dir", task, **kwargs)
        utils.EzPickle.__init__(self, task, **kwargs)


class AntVelEnv(AntTaskEnv):
    """``ant-vel``: walk along x at a target velocity drawn in [0, 3]."""

    def __init__(self, task: dict | None = None, **kwargs: Any) -> None:
        super().__init__("ant-vel", task, **kwargs)
        utils.EzPickle.__init__(self, task, **kwargs)


class AntDirEnv(AntTaskEnv):
    """``ant-dir``: walk forward (+1) or backward (-1) along x."""

    def __init__(self, task: dict | None = None, **kwargs: Any) -> None:
        super().__init__("ant-dir", task, **kwargs)
        utils.EzPickle.__init__(self, task, **kwargs)


class AntGoalEnv(AntTaskEnv):
    """``ant-goal``: walk to a goal drawn in [-3, 3]² (x and y are observed)."""

    def __init__(self, task: dict | None = None, **kwargs: Any) -> None:
        super().__init__("ant-goal", task, **kwargs)
        utils.EzPickle.__init__(self, task, **kwargs)


_ENV_CLASSES = {cls.__name__: cls for cls in (HalfCheetahVelEnv, HalfCheetahDirEnv, AntVelEnv,
                                               AntDirEnv, AntGoalEnv)}
FAMILY_ENVS: dict[str, type[HalfCheetahTaskEnv] | type[AntTaskEnv]] = {
    name: _ENV_CLASSES[spec.env_class] for name, spec in SPECS.items()
}
"""The fixed-family env class of each locomotion family (:attr:`LocomotionSpec.env_class`)."""


def make_locomotion_env(
    family: str, task: dict | None = None, dynamics: str = GYMNASIUM, **kwargs: Any
) -> HalfCheetahTaskEnv | AntTaskEnv:
    """Construct the (unwrapped) task env of ``family`` or of its oracle variant
    ``NAME-oracle`` under ``dynamics``; ValueError for an unknown one."""
    spec, oracle = split_family(family)
    goal_conditioned = bool(kwargs.pop("goal_conditioned", False)) or oracle
    return FAMILY_ENVS[spec.name](task, dynamics=dynamics, goal_conditioned=goal_conditioned,
                                  **kwargs)
