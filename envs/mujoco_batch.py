"""Every (task, episode) of a locomotion meta-batch stepped at once on MuJoCo's thread pool.

:class:`BatchedLocomotion` follows the batched-env protocol of
:class:`envs.nav2d.BatchedNav2D` (``reset``, ``alive``, ``step``, ``max_episode_steps``) for
N = T·E simulations of one family of :mod:`envs.locomotion_tasks` (or of its oracle variant),
with Gymnasium's HalfCheetah-v5 / Ant-v5 model and observation, and the control step,
initial-state distribution and reward terms of one of the two dynamics of
:mod:`envs.locomotion_dynamics`: the same as :mod:`envs.locomotion`'s env of that family
and dynamics.

The physics is one of the two engines of :mod:`envs.mujoco_physics`, by robot: HalfCheetah
on a stateful ``mujoco.batch.Batch`` (warm starts carried over, bitwise Gymnasium's states),
Ant on ``mujoco.rollout`` plus a last substep per simulation (so that the torso's ``xpos``
and ``cfrc_ext`` are those Gymnasium reads); that module explains why. This class keeps the
rest, as array operations over the batch:

* Gymnasium's dynamics: HalfCheetah's ``x`` velocity from ``qpos[0]`` before and after;
  Ant's from the torso's ``xpos`` before and after. MAML's: the torso subtree's
  centre-of-mass velocity at the new state, as the engine gives it.
* Ant: contact cost and observation from ``cfrc_ext`` (as the engine gives them), health
  from the torso's z.
* The task term of :meth:`LocomotionSpec.task_reward` (``xy``: HalfCheetah
  ``(qpos[0], 0)``, Ant the torso's ``xpos[:2]`` as above; MAML's: the subtree's centre of
  mass).
* The oracle variant appends the task's values to every observation.

Random streams: one reset seed per simulation (``seeds``, row-major over (task, episode)).
:meth:`reset` draws row i's initial-state noise from ``numpy.random.default_rng(seeds[i])``,
its nq positions and then its nv velocities, the dynamics' ``reset_model`` distribution
(Gymnasium's: ``U(-0.1, 0.1)``, then ``0.1·N(0, 1)``): the draws of the Gymnasium env's
``reset(seed=seeds[i])``. A restarted episode (below) draws its start from the same
generator, continued. Every reset starts the rows from the same states, and a row's
episodes do not depend on the other rows.

Episode ends: Ant terminates when unhealthy (torso z outside [0.2, 1.0]; Gymnasium's check)
and every row is truncated (if not terminated) after ``max_episode_steps`` steps. Without
``restart`` (Gymnasium's dynamics) ended episodes are frozen: observation unchanged,
reward 0, both flags False, no physics. With ``restart`` (MAML's dynamics: rllab's sampler
collects transitions, not episodes, and starts a new episode when one ends) a row whose
episode terminates before step ``max_episode_steps`` reports ``terminated`` and stays
alive: the observation it returns is a new episode's first, started from a fresh initial
state, so every row runs ``max_episode_steps`` steps made of one or more episodes
(segments); the last is truncated at the horizon like any running episode.

Unstable physics: on a non-finite or huge state MuJoCo warns and resets the simulation to
the model's default state, which Gymnasium would silently continue from. Here the step
raises :class:`envs.batch.EnvError` (a ``RuntimeError``) naming the task, episode and step
instead (the engine finds it), and leaves every simulation's state as it was before the
step (no NaN reaches the others; reset() the batch to go on); a non-finite action raises
``ValueError``.

Threads: MuJoCo's pool works only inside :meth:`step`; run torch with one thread while
sampling (``torch.set_num_threads(1)``) so the two do not oversubscribe the cores. Results
are bitwise the same on 1 or more threads. Call :meth:`close` (or use the batch as a
context manager) to stop the engine's threads. No processes.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import mujoco
import numpy as np
import torch

from envs.batch import EnvError, EpisodeBatch, check_seeds
from envs.checks import check_positive_int
from envs.locomotion import make_locomotion_env
from envs.locomotion_dynamics import (
    CONTACT_COST_WEIGHT,
    CONTACT_FORCE_RANGE,
    GYMNASIUM,
    HEALTHY_Z,
    robot_dynamics,
)
from envs.locomotion_tasks import split_family
from envs.mujoco_physics import ENGINES, Moved, Rows


@functools.cache
def _gymnasium_parts(family: str, dynamics: str) -> tuple[mujoco.MjModel, np.ndarray, np.ndarray,
                                                           int, float, int]:
    """(model, init_qpos, init_qvel, frame_skip, dt, obs_dim) of the family's Gymnasium env
    under ``dynamics``. The model is shared read-only by every batch of the family and
    dynamics (each has its own MjData)."""
    env = make_locomotion_env(family, dynamics=dynamics)
    qpos, qvel = env.init_qpos.copy(), env.init_qvel.copy()
    qpos.setflags(write=False)
    qvel.setflags(write=False)
    parts = (env.model, qpos, qvel, int(env.frame_skip), float(env.dt),
             int(env.observation_space.shape[0]))
    env.close()
    return parts


class BatchedLocomotion(EpisodeBatch):
    """N = T·E MuJoCo simulations of one locomotion family, stepped as a batch.

    Args:
        family: a name of :data:`envs.locomotion_tasks.SPECS` (``"halfcheetah-vel"``, ...)
            or of its oracle variant (``"halfcheetah-vel-oracle"``, ...).
        tasks: T task dicts of the family (``{"velocity": v}``, ...).
        episodes_per_task: E parallel episodes per task.
        max_episode_steps: horizon H after which running episodes are truncated.
        seeds: T·E reset seeds, one per simulation (row-major over (task, episode)).
        nthread: physics threads (1: everything on the calling thread).
        dynamics: ``"gymnasium"`` or ``"maml"`` (:mod:`envs.locomotion_dynamics`).
        restart: start a new episode in a row whose episode terminates before the
            horizon (module docstring); None: the dynamics' choice
            (:attr:`RobotDynamics.restart_ended`: MAML's restarts, Gymnasium's freezes).

    Tensors are CPU torch: obs (T, E, obs_dim) float32, reward (T, E) float32, flags and
    :attr:`alive` (T, E) bool. :attr:`action_low` / :attr:`action_high` (a,) are the
    actuators' control range. Gymnasium's ``model``, ``init_qpos``, ``init_qvel``,
    ``frame_skip`` and ``dt`` are attributes; :meth:`physics_state` gives the current
    qpos/qvel and :meth:`reset_to` starts episodes from given ones.
    """

    def __init__(
        self,
        family: str,
        tasks: list[dict],
        episodes_per_task: int,
        max_episode_steps: int,
        seeds: Sequence[int],
        nthread: int = 2,
        dynamics: str = GYMNASIUM,
        restart: bool | None = None,
    ) -> None:
        self.family = family
        self.spec, self.goal_conditioned = split_family(family)
        self.dynamics = robot_dynamics(self.spec.robot, dynamics)
        if not tasks:
            raise ValueError(f"{family}: at least one task is needed")
        self.tasks = [self.spec.check_task(t) for t in tasks]
        self.episodes_per_task = check_positive_int("episodes_per_task", episodes_per_task)
        self.max_episode_steps = check_positive_int("max_episode_steps", max_episode_steps)
        self.nthread = check_positive_int("nthread", nthread)
        self.restart = self.dynamics.restart_ended if restart is None else bool(restart)
        self._load_model()
        n = self.num_envs
        self._values = np.repeat(self.spec.task_values(self.tasks), self.episodes_per_task, 0)
        self.seeds = check_seeds(seeds, n)
        self._rngs = self._fresh_rngs()  # each row's reset noise, continued by restarts
        self._physics = ENGINES[self.spec.robot](self.model, n, self.frame_skip, self.dt,
                                                 self.nthread, self.dynamics.at_new_state)
        qpos = self._physics.qpos
        skipped = (2 if self.is_ant else 1) if self.spec.exclude_xy else 0
        self._obs_qpos = slice(qpos.start + skipped, qpos.stop)  # observed part of a state row
        self._obs = np.zeros((n, self.obs_dim))
        self._xy = np.zeros((n, 2))  # the root's xy as last read (HalfCheetah: (qpos[0], .))
        self.alive = torch.zeros(self.batch_shape, dtype=torch.bool)
        self._steps = 0
        self._started = False
        self._closed = False

    def _load_model(self) -> None:
        """Model, initial state, timing and sizes from Gymnasium's own env (built once per
        family and process: compiling the model is slow and MuJoCo logs its warnings)."""
        model, self.init_qpos, self.init_qvel, self.frame_skip, self.dt, self.obs_dim = \
            _gymnasium_parts(self.family, self.dynamics.name)
        self.model: mujoco.MjModel = model
        self.action_dim = int(self.model.nu)
        self._ctrl_range = self.model.actuator_ctrlrange.T.copy()  # (2, a): low, high
        self.action_low = torch.tensor(self._ctrl_range[0], dtype=torch.float32)
        self.action_high = torch.tensor(self._ctrl_range[1], dtype=torch.float32)

    # ------------------------------------------------------------------ sizes
    @property
    def is_ant(self) -> bool:
        return self.spec.robot == "ant"

    # ------------------------------------------------------------------ protocol
    def reset(self) -> torch.Tensor:
        """Draw every episode's initial state from its seed (the dynamics' distribution);
        obs (T, E, d)."""
        self._rngs = self._fresh_rngs()
        qpos, qvel = self._initial_states(np.arange(self.num_envs))
        return self._start(qpos, qvel)

    def reset_to(self, qpos: np.ndarray, qvel: np.ndarray) -> torch.Tensor:
        """Start every episode from a given state instead: qpos (T, E, nq), qvel (T, E, nv).

        Draws nothing from the seeds (restarts draw their starts from each row's seed as
        after :meth:`reset`). Meant for tests and fixed evaluation states.
        """
        shape = self.batch_shape
        qpos = np.asarray(qpos, dtype=np.float64)
        qvel = np.asarray(qvel, dtype=np.float64)
        if qpos.shape != (*shape, self.model.nq) or qvel.shape != (*shape, self.model.nv):
            raise ValueError(f"qpos/qvel must have shapes {(*shape, self.model.nq)} and "
                             f"{(*shape, self.model.nv)}, got {qpos.shape} and {qvel.shape}")
        self._rngs = self._fresh_rngs()
        return self._start(qpos.reshape(self.num_envs, -1), qvel.reshape(self.num_envs, -1))

    def physics_state(self) -> tuple[np.ndarray, np.ndarray]:
        """Current qpos (T, E, nq) and qvel (T, E, nv), float64 copies."""
        physics, shape = self._physics, self.batch_shape
        return (physics.state[:, physics.qpos].reshape(*shape, -1).copy(),
                physics.state[:, physics.qvel].reshape(*shape, -1).copy())

    def step(
        self, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Advance the alive episodes by one env step with ``action`` (T, E, a).

        Returns obs (T, E, d), reward (T, E), terminated (T, E), truncated (T, E). With
        :attr:`restart`, a row that terminates before the horizon stays alive and its obs
        is the first of a new episode (module docstring).
        """
        if self._closed:
            raise RuntimeError("the batch is closed")
        if not self._started:
            raise RuntimeError("call reset() before step()")
        n = self.num_envs
        was_alive = self.alive.reshape(n).numpy().copy()
        idx = np.flatnonzero(was_alive)
        rows = slice(None) if idx.size == n else idx  # all alive: no gather/scatter
        act = self._actions(action, idx, rows)  # (n_alive, a)
        self._steps += 1
        reward, terminated = np.zeros(n), np.zeros(n, dtype=bool)
        if idx.size:
            reward[rows], terminated[rows] = self._advance(idx, rows, act)
        truncated = was_alive & ~terminated & (self._steps >= self.max_episode_steps)
        alive = was_alive & ~terminated & ~truncated
        if self.restart and self._steps < self.max_episode_steps and terminated.any():
            self._restart(np.flatnonzero(terminated))
            alive |= terminated
        shape = self.batch_shape
        self.alive = torch.from_numpy(alive).reshape(shape)
        return (self._obs_tensor(), torch.from_numpy(reward.astype(np.float32)).reshape(shape),
                torch.from_numpy(terminated).reshape(shape),
                torch.from_numpy(truncated).reshape(shape))

    def close(self) -> None:
        """Stop the physics threads (idempotent); the batch cannot step afterwards."""
        if self._closed:
            return
        self._closed = True
        self._physics.close()

    def __enter__(self) -> BatchedLocomotion:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals
    def _fresh_rngs(self) -> list[np.random.Generator]:
        """One generator per row, from its seed (N of them)."""
        return [np.random.default_rng(s) for s in self.seeds]

    def _initial_states(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Initial qpos (n, nq) and qvel (n, nv) of ``rows``, each drawn from its row's
        generator (its nq positions, then its nv velocities)."""
        nq, nv = self.model.nq, self.model.nv
        noise = [self.dynamics.reset_noise(self._rngs[r], nq, nv) for r in rows]
        dq, dv = (np.stack(parts) for parts in zip(*noise, strict=True))
        return self.init_qpos + dq, self.init_qvel + dv

    def _restart(self, rows: np.ndarray) -> None:
        """Start a new episode in ``rows`` (n,) from fresh initial states."""
        self._load(rows, *self._initial_states(rows))

    def _load(self, rows: Rows, qpos: np.ndarray, qvel: np.ndarray) -> None:
        """Load states qpos (n, nq), qvel (n, nv) at time 0 into ``rows``; their obs."""
        cfrc = self._physics.start(qpos, qvel, rows)
        self._xy[rows] = qpos[:, :2]  # a free joint's body sits at its qpos (mj_forward'ed)
        self._obs[rows] = self._observe(rows, self._physics.state[rows], cfrc)

    def _start(self, qpos: np.ndarray, qvel: np.ndarray) -> torch.Tensor:
        """Load states qpos (N, nq), qvel (N, nv) at time 0 and mark every episode alive."""
        self._load(slice(None), qpos, qvel)
        self.alive = torch.ones(self.batch_shape, dtype=torch.bool)
        self._steps = 0
        self._started = True
        return self._obs_tensor()

    def _obs_tensor(self) -> torch.Tensor:
        return torch.from_numpy(self._obs.astype(np.float32)).reshape(*self.batch_shape, -1)

    def _actions(self, action: torch.Tensor, idx: np.ndarray, rows: Rows) -> np.ndarray:
        """The alive rows of ``action`` as float64 (n, a); checks shape and finiteness."""
        expected = (*self.batch_shape, self.action_dim)
        if tuple(action.shape) != expected:
            raise ValueError(f"action must have shape {expected}, got {tuple(action.shape)}")
        act = np.asarray(action.detach().cpu().numpy().reshape(self.num_envs, -1)[rows],
                         dtype=np.float64)
        bad = ~np.isfinite(act).all(axis=1)
        if bad.any():
            task, episode = divmod(int(idx[bad][0]), self.episodes_per_task)
            raise ValueError(f"non-finite action for task {task}, episode {episode} at step "
                             f"{self._steps + 1}: {act[bad][0]}")
        return act

    def _advance(self, idx: np.ndarray, rows: Rows,
                 act: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Physics, checks and bookkeeping for alive rows ``idx`` (``rows``: the same, or
        every row as a slice when all are alive); their reward (n,), terminated (n,)."""
        moved = self._physics.advance(rows, act)
        if moved.unstable.any():
            task, episode = divmod(int(idx[moved.unstable][0]), self.episodes_per_task)
            raise EnvError(
                task, episode,
                f"{self.spec.name}: the physics became unstable (non-finite or huge state, "
                f"which MuJoCo resets) at step {self._steps}; "
                f"{int(moved.unstable.sum())} simulation(s) affected; reset() the batch")
        reward, terminated = self._reward(rows, act, moved)
        self._xy[rows] = moved.xy
        self._obs[rows] = self._observe(rows, moved.state, moved.cfrc)
        return reward, terminated

    def _reward(self, rows: Rows, act: np.ndarray, moved: Moved) -> tuple[np.ndarray, np.ndarray]:
        """The dynamics' reward terms with the task term; reward (n,), terminated (n,)."""
        dyn = self.dynamics
        x_velocity = moved.velocity
        if x_velocity is None:  # HalfCheetah: qpos[0]; Ant: the torso's xpos
            x_velocity = (moved.xy[:, 0] - self._xy[rows, 0]) / self.dt
        task = self.spec.task_reward(self._values[rows], x_velocity, moved.xy, dyn)
        ctrl_cost = dyn.ctrl_cost(act, *self._ctrl_range)
        if not self.is_ant:
            return task - ctrl_cost, np.zeros(len(act), dtype=bool)
        z = moved.state[:, self._physics.qpos.start + 2]  # the torso's
        healthy = np.isfinite(moved.state[:, 1:]).all(axis=1) & (HEALTHY_Z[0] <= z) & (
            z <= HEALTHY_Z[1])
        contact = np.clip(moved.cfrc, *CONTACT_FORCE_RANGE)
        contact_cost = CONTACT_COST_WEIGHT * np.square(contact).sum(axis=(1, 2))
        reward = task + dyn.survive(healthy)
        return reward - (ctrl_cost + contact_cost), ~healthy

    def _observe(self, rows: Rows, state: np.ndarray, cfrc: np.ndarray) -> np.ndarray:
        """Gymnasium's observation (n, d) of ``rows``' states (n, nstate) and Ant's
        cfrc_ext[1:], with the task's values appended in the oracle variant."""
        parts = [state[:, self._obs_qpos], state[:, self._physics.qvel]]
        if self.is_ant:
            contact = np.clip(cfrc, *CONTACT_FORCE_RANGE)
            parts.append(contact.reshape(len(state), -1))
        if self.goal_conditioned:
            parts.append(self._values[rows].reshape(len(state), -1))
        return np.concatenate(parts, axis=1)
