"""Every (task, episode) of a locomotion meta-batch stepped at once on MuJoCo's thread pool.

:class:`BatchedLocomotion` follows the batched-env protocol of
:class:`envs.nav2d.BatchedNav2D` (``reset``, ``alive``, ``step``, ``max_episode_steps``) for
N = T·E simulations of one family of :mod:`envs.locomotion_tasks`, with Gymnasium's
HalfCheetah-v5 / Ant-v5 model, initial-state distribution, observation and reward terms.

How it reproduces Gymnasium's ``step`` (``mj_step(model, data, nstep=frame_skip)`` then
``mj_rnePostConstraint``):

* HalfCheetah physics: a stateful ``mujoco.batch.Batch`` of the N simulations on ``nthread``
  threads (the calling thread included) advances the alive ones by ``frame_skip`` substeps
  with the action held as ``ctrl`` (MuJoCo clamps it to ``ctrlrange`` as in Gymnasium).
  Its rows are full ``mjSTATE_INTEGRATION`` states, so the constraint solver's warm start
  carries over between env steps as in Gymnasium's one ``MjData``, and states are
  bitwise Gymnasium's (see the tests). The batch steps its rows in place, with no state
  copies in and out; when every episode is alive the step runs on all rows without index
  gathers. Its raw physics is ~15% faster than ``mujoco.rollout`` on the same threads (see
  ``scripts/bench_sampler.py``), and physics is ~90% of a sampling step.
* Ant physics: ``mujoco.rollout`` on a persistent pool of ``nthread`` threads (one ``MjData``
  each), stateless: the constraint solver starts cold at every env step (``mujoco.rollout``
  zeroes the warm start), where Gymnasium warm-starts it from the previous substep; it
  converges to its tolerance either way, and states agree with Gymnasium's to ~1e-14
  after ten steps (~1e-10 after fifty, as differences grow in these chaotic systems).
* HalfCheetah: ``x`` velocity from ``qpos[0]`` before and after, as Gymnasium.
* Ant: Gymnasium reads the torso's ``xpos`` and ``cfrc_ext`` after ``mj_step``. MuJoCo
  computes them inside the last substep, before integrating, and Ant uses RK4, so they
  belong to the point of its last Runge-Kutta stage: neither the state before the last
  substep nor the one after it. So the rollout runs ``frame_skip - 1`` substeps and the
  last one runs per simulation on a thread's ``MjData`` (``mj_setState``, ``mj_step``,
  ``mj_rnePostConstraint``; the same ``nthread`` threads, from a Python pool, as MuJoCo
  releases the GIL). That is exact and costs no extra physics, only a few Python calls per
  simulation (~7 µs, against ~240 µs of physics per Ant env step).
* Observations and rewards are then array operations over the batch, with the task term
  of :meth:`LocomotionSpec.task_reward` (``xy``: HalfCheetah ``(qpos[0], 0)``, Ant the
  torso's ``xpos[:2]`` as above).

Random stream: a ``numpy.random.Generator`` seeded with ``seed``, owned by the batch and used
only by :meth:`reset`, which draws ``U(-0.1, 0.1)`` for all N·nq positions and then ``N(0, 1)``
for all N·nv velocities (rows in (task, episode) order), Gymnasium's ``reset_model``
distribution; the k-th reset after construction draws the k-th block of that stream.

Episode ends: Ant terminates when unhealthy (torso z outside [0.2, 1.0]; Gymnasium's check)
and every episode is truncated (if not terminated) after ``max_episode_steps`` steps. Ended
episodes are frozen: observation unchanged, reward 0, both flags False, no physics.

Unstable physics: on a non-finite or huge state MuJoCo warns and resets the simulation to
the model's default state, which Gymnasium would silently continue from. Here the step
raises ``RuntimeError`` naming the task, episode and step instead (found from the batch's
bad-state warning counters, or from time going back where ``mujoco.rollout`` stops), and
leaves every simulation's state as it was before the step (the batch's rows are put
back; no NaN reaches the others; reset() the batch to go on); a non-finite action raises
``ValueError``.

Threads: MuJoCo's pool works only inside :meth:`step`; run torch with one thread while
sampling (``torch.set_num_threads(1)``) so the two do not oversubscribe the cores. Results
are bitwise the same on 1 or more threads. Call :meth:`close` (or use the batch as a
context manager) to stop the pool (HalfCheetah: drop the ``Batch``, whose threads end with
it). No processes.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor

import mujoco
import mujoco.batch
import mujoco.rollout
import numpy as np
import torch

from envs.checks import check_positive_int
from envs.locomotion import make_locomotion_env
from envs.locomotion_tasks import (
    ANT_CONTACT_COST_WEIGHT,
    ANT_CONTACT_FORCE_RANGE,
    ANT_HEALTHY_REWARD,
    ANT_HEALTHY_Z,
    get_spec,
)

RESET_NOISE_SCALE = 0.1
"""Gymnasium's default ``reset_noise_scale`` for both robots."""

_FULLPHYSICS = mujoco.mjtState.mjSTATE_FULLPHYSICS.value
_INTEGRATION = mujoco.mjtState.mjSTATE_INTEGRATION.value  # mujoco.batch.Batch's state rows
# the warnings on which MuJoCo resets a simulation to the model's default state
_BAD_STATE = [int(w) for w in (mujoco.mjtWarning.mjWARN_BADQPOS, mujoco.mjtWarning.mjWARN_BADQVEL,
                               mujoco.mjtWarning.mjWARN_BADQACC)]
_TORSO = 1  # Ant-v5's main body


@functools.cache
def _gymnasium_parts(family: str) -> tuple[mujoco.MjModel, np.ndarray, np.ndarray, int, float,
                                            int]:
    """(model, init_qpos, init_qvel, frame_skip, dt, obs_dim) of the family's Gymnasium env.
    The model is shared read-only by every batch of the family (each has its own MjData)."""
    env = make_locomotion_env(family)
    qpos, qvel = env.init_qpos.copy(), env.init_qvel.copy()
    qpos.setflags(write=False)
    qvel.setflags(write=False)
    parts = (env.model, qpos, qvel, int(env.frame_skip), float(env.dt),
             int(env.observation_space.shape[0]))
    env.close()
    return parts


def _state_offset(model: mujoco.MjModel, spec: int, component: int) -> int:
    """Where ``component`` (one mjtState bit) starts in a state row of ``spec``."""
    bits = [1 << i for i in range(int(component).bit_length() - 1)]
    return sum(mujoco.mj_stateSize(model, b) for b in bits if b & spec)


class BatchedLocomotion:
    """N = T·E MuJoCo simulations of one locomotion family, stepped as a batch.

    Args:
        family: a name of :data:`envs.locomotion_tasks.SPECS` (``"halfcheetah-vel"``, ...).
        tasks: T task dicts of the family (``{"velocity": v}``, ...).
        episodes_per_task: E parallel episodes per task.
        max_episode_steps: horizon H after which running episodes are truncated.
        seed: seed of the batch's own initial-state generator.
        nthread: physics threads (1: everything on the calling thread).

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
        seed: int,
        nthread: int = 2,
    ) -> None:
        self.spec = get_spec(family)
        if not tasks:
            raise ValueError(f"{family}: at least one task is needed")
        self.tasks = [self.spec.check_task(t) for t in tasks]
        self.episodes_per_task = check_positive_int("episodes_per_task", episodes_per_task)
        self.max_episode_steps = check_positive_int("max_episode_steps", max_episode_steps)
        self.nthread = check_positive_int("nthread", nthread)
        self._load_model()
        n = self.num_envs
        self._values = np.repeat(self.spec.task_values(self.tasks), self.episodes_per_task, 0)
        self._rng = np.random.default_rng(seed)
        self._pool = self._sims = self._executor = None
        if self.is_ant:
            self._pool = mujoco.rollout.Rollout(nthread=self.nthread if self.nthread > 1 else 0)
            self._datas = [mujoco.MjData(self.model) for _ in range(self.nthread)]
            if self.nthread > 1:
                self._executor = ThreadPoolExecutor(self.nthread, thread_name_prefix="mj-substep")
            self._models = [self.model] * n
            self._state = np.zeros((n, mujoco.mj_stateSize(self.model, _FULLPHYSICS)))
        else:  # the batch's threads include the calling one: nthread - 1 more threads
            self._sims = mujoco.batch.Batch(self.model, n, nthread=self.nthread)
            self._state = self._sims.state  # live (n, nstate) rows, mjSTATE_INTEGRATION
            self._ctrl = self._sims.bind("ctrl")
        self._obs = np.zeros((n, self.obs_dim))
        self._xy = np.zeros((n, 2))  # Ant: the torso's xpos[:2] as MuJoCo last computed it
        self.alive = torch.zeros(self.batch_shape, dtype=torch.bool)
        self._steps = 0
        self._started = False
        self._closed = False

    def _load_model(self) -> None:
        """Model, initial state, timing and sizes from Gymnasium's own env (built once per
        family and process: compiling the model is slow and MuJoCo logs its warnings)."""
        model, self.init_qpos, self.init_qvel, self.frame_skip, self.dt, self.obs_dim = \
            _gymnasium_parts(self.spec.name)
        self.model: mujoco.MjModel = model
        self.action_dim = int(self.model.nu)
        low, high = self.model.actuator_ctrlrange.T
        self.action_low = torch.tensor(low, dtype=torch.float32)
        self.action_high = torch.tensor(high, dtype=torch.float32)
        spec = _FULLPHYSICS if self.is_ant else _INTEGRATION
        qpos0 = _state_offset(self.model, spec, mujoco.mjtState.mjSTATE_QPOS)
        qvel0 = _state_offset(self.model, spec, mujoco.mjtState.mjSTATE_QVEL)
        self._qpos = slice(qpos0, qpos0 + self.model.nq)  # state rows: time, qpos, qvel, ...
        self._qvel = slice(qvel0, qvel0 + self.model.nv)
        skipped = (2 if self.is_ant else 1) if self.spec.exclude_xy else 0
        self._obs_qpos = slice(self._qpos.start + skipped, self._qpos.stop)

    # ------------------------------------------------------------------ sizes
    @property
    def is_ant(self) -> bool:
        return self.spec.robot == "ant"

    @property
    def num_tasks(self) -> int:
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

    # ------------------------------------------------------------------ protocol
    def reset(self) -> torch.Tensor:
        """Draw every episode's initial state (Gymnasium's distribution); obs (T, E, d)."""
        n, scale = self.num_envs, RESET_NOISE_SCALE
        qpos = self.init_qpos + self._rng.uniform(-scale, scale, (n, self.model.nq))
        qvel = self.init_qvel + scale * self._rng.standard_normal((n, self.model.nv))
        return self._start(qpos, qvel)

    def reset_to(self, qpos: np.ndarray, qvel: np.ndarray) -> torch.Tensor:
        """Start every episode from a given state instead: qpos (T, E, nq), qvel (T, E, nv).

        Draws nothing from the generator. Meant for tests and fixed evaluation states.
        """
        shape = self.batch_shape
        qpos = np.asarray(qpos, dtype=np.float64)
        qvel = np.asarray(qvel, dtype=np.float64)
        if qpos.shape != (*shape, self.model.nq) or qvel.shape != (*shape, self.model.nv):
            raise ValueError(f"qpos/qvel must have shapes {(*shape, self.model.nq)} and "
                             f"{(*shape, self.model.nv)}, got {qpos.shape} and {qvel.shape}")
        return self._start(qpos.reshape(self.num_envs, -1), qvel.reshape(self.num_envs, -1))

    def physics_state(self) -> tuple[np.ndarray, np.ndarray]:
        """Current qpos (T, E, nq) and qvel (T, E, nv), float64 copies."""
        shape = self.batch_shape
        return (self._state[:, self._qpos].reshape(*shape, -1).copy(),
                self._state[:, self._qvel].reshape(*shape, -1).copy())

    def step(
        self, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Advance the alive episodes by one env step with ``action`` (T, E, a).

        Returns obs (T, E, d), reward (T, E), terminated (T, E), truncated (T, E).
        """
        if self._closed:
            raise RuntimeError("the batch is closed")
        if not self._started:
            raise RuntimeError("call reset() before step()")
        n = self.num_envs
        was_alive = self.alive.reshape(n).numpy().copy()
        idx = np.flatnonzero(was_alive)
        rows = slice(None) if idx.size == n else idx  # all alive: no gather/scatter
        act = self._actions(action, idx, rows)
        self._steps += 1
        reward, terminated = np.zeros(n), np.zeros(n, dtype=bool)
        if idx.size:
            reward[rows], terminated[rows] = self._advance(idx, rows, act)
        truncated = was_alive & ~terminated & (self._steps >= self.max_episode_steps)
        alive = was_alive & ~terminated & ~truncated
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
        if self._pool is not None:
            self._pool.close()
        if self._executor is not None:
            self._executor.shutdown()
        if self._sims is not None:  # its threads stop when the last reference to it goes
            self._state = self._state.copy()
            self._sims = self._ctrl = None

    def __enter__(self) -> BatchedLocomotion:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals
    def _start(self, qpos: np.ndarray, qvel: np.ndarray) -> torch.Tensor:
        """Load states qpos (N, nq), qvel (N, nv) at time 0 and mark every episode alive."""
        if self._sims is not None:  # model defaults: zero time, controls and warm start
            self._sims.reset(stage=mujoco.mjtStage.mjSTAGE_NONE.value)
        else:
            self._state[:] = 0.0
        self._state[:, self._qpos] = qpos
        self._state[:, self._qvel] = qvel
        self._xy[:] = qpos[:, :2]  # a free joint's body sits at its qpos (mj_forward'ed)
        # after Gymnasium's reset, cfrc_ext is still zero: mj_forward does not compute it
        self._obs[:] = self._observe(self._state, self._no_contact(self.num_envs))
        self.alive = torch.ones(self.batch_shape, dtype=torch.bool)
        self._steps = 0
        self._started = True
        return self._obs_tensor()

    def _no_contact(self, n: int) -> np.ndarray:
        """Zero contact forces (n, nbody - 1, 6)."""
        return np.zeros((n, self.model.nbody - 1, 6))

    def _obs_tensor(self) -> torch.Tensor:
        return torch.from_numpy(self._obs.astype(np.float32)).reshape(*self.batch_shape, -1)

    def _actions(self, action: torch.Tensor, idx: np.ndarray, rows: slice | np.ndarray
                 ) -> np.ndarray:
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

    def _advance(self, idx: np.ndarray, rows: slice | np.ndarray,
                 act: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Physics, checks and bookkeeping for alive rows ``idx`` (``rows``: the same, or
        every row as a slice when all are alive); their reward, terminated."""
        start = self._state[rows].copy()  # a copy: HalfCheetah's rows are stepped in place
        if self.is_ant:
            new, xy, cfrc = self._simulate_ant(start, act)
            self._check_stable(idx, start, new)
        else:
            new = self._step_cheetah(idx, rows, start, act)
            xy = np.stack([new[:, self._qpos.start], np.zeros(len(idx))], axis=1)
            cfrc = self._no_contact(len(idx))
        reward, terminated = self._reward(rows, act, start, new, xy, cfrc)
        if self.is_ant:
            self._state[rows] = new
        self._xy[rows] = xy
        self._obs[rows] = self._observe(new, cfrc)
        return reward, terminated

    def _step_cheetah(self, idx: np.ndarray, rows: slice | np.ndarray, start: np.ndarray,
                      act: np.ndarray) -> np.ndarray:
        """HalfCheetah's env step of rows ``idx`` (states ``start``) in the stateful batch;
        their new states (n, nstate). On instability every row is put back as it was."""
        sims = self._sims
        ids = None if isinstance(rows, slice) else idx
        warnings = sims.warning[rows][:, _BAD_STATE, 0].sum(axis=1)
        self._ctrl[rows] = act
        sims.step(ids, nstep=self.frame_skip)
        new = self._state[rows]
        warned = sims.warning[rows][:, _BAD_STATE, 0].sum(axis=1) > warnings
        try:
            self._check_stable(idx, start, new, warned)
        except RuntimeError:
            self._state[rows] = start
            raise
        return new

    def _rollout(self, start: np.ndarray, act: np.ndarray, nstep: int) -> np.ndarray:
        """``nstep`` substeps with ``act`` held, from states (n, nstate): (n, nstep, nstate)."""
        n = len(start)
        out = np.empty((n, nstep, start.shape[1]))
        control = np.ascontiguousarray(np.broadcast_to(act[:, None, :], (n, nstep, act.shape[1])))
        self._pool.rollout(self._models[:n], self._datas, start, control, skip_checks=True,
                           nstep=nstep, state=out, sensordata=np.empty((n, nstep, 0)),
                           chunk_size=max(1, n // (10 * self.nthread)))
        return out

    def _simulate_ant(
        self, start: np.ndarray, act: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ant's env step: new states (n, nstate), torso xy (n, 2), cfrc_ext[1:] (n, nbody-1, 6).

        ``frame_skip - 1`` substeps in the rollout pool, the last one per simulation so that
        ``xpos`` and ``cfrc_ext`` are those Gymnasium reads.
        """
        if self.frame_skip > 1:
            start = self._rollout(start, act, self.frame_skip - 1)[:, -1]
        n = len(start)
        new, xy = np.empty_like(start), np.empty((n, 2))
        cfrc = np.empty((n, self.model.nbody - 1, 6))
        bounds = np.linspace(0, n, self.nthread + 1).astype(int)

        def run(j: int) -> None:
            self._last_substeps(self._datas[j], range(bounds[j], bounds[j + 1]), start, act,
                                (new, xy, cfrc))

        if self._executor is None:
            run(0)
        else:
            list(self._executor.map(run, range(self.nthread)))
        return new, xy, cfrc

    def _last_substeps(self, data: mujoco.MjData, rows: range, start: np.ndarray,
                       act: np.ndarray, out: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
        """One substep per row on ``data``, as Gymnasium's ``do_simulation`` ends."""
        model, (new, xy, cfrc) = self.model, out
        for r in rows:
            mujoco.mj_setState(model, data, start[r], _FULLPHYSICS)
            data.qacc_warmstart[:] = 0.0  # cold, as mujoco.rollout starts: deterministic
            data.ctrl[:] = act[r]
            mujoco.mj_step(model, data)
            mujoco.mj_rnePostConstraint(model, data)
            mujoco.mj_getState(model, data, new[r], _FULLPHYSICS)
            xy[r] = data.xpos[_TORSO, :2]
            cfrc[r] = data.cfrc_ext[1:]

    def _check_stable(self, idx: np.ndarray, start: np.ndarray, new: np.ndarray,
                      warned: np.ndarray | bool = False) -> None:
        """RuntimeError if MuJoCo found a state unstable (and reset it): ``warned`` (n,)
        or, as ``mujoco.rollout`` stops stepping it, its time went back."""
        min_time = start[:, 0] + 0.5 * self.dt
        bad = ~np.isfinite(new).all(axis=1) | (new[:, 0] < min_time) | warned
        if bad.any():
            task, episode = divmod(int(idx[bad][0]), self.episodes_per_task)
            raise RuntimeError(
                f"{self.spec.name}: the physics became unstable (non-finite or huge state, "
                f"which MuJoCo resets) in task {task}, episode {episode} at step "
                f"{self._steps}; {int(bad.sum())} simulation(s) affected. reset() the batch.")

    def _reward(self, rows: slice | np.ndarray, act: np.ndarray, start: np.ndarray,
                new: np.ndarray, xy: np.ndarray, cfrc: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
        """Gymnasium's reward terms with the task term; reward (n,), terminated (n,)."""
        values = self._values[rows]
        ctrl_cost = self.spec.ctrl_cost(act)
        if not self.is_ant:
            x0 = self._qpos.start
            x_velocity = (new[:, x0] - start[:, x0]) / self.dt
            reward = self.spec.task_reward(values, x_velocity, xy) - ctrl_cost
            return reward, np.zeros(len(new), dtype=bool)
        x_velocity = (xy[:, 0] - self._xy[rows, 0]) / self.dt
        z = new[:, self._qpos.start + 2]
        healthy = np.isfinite(new[:, 1:]).all(axis=1) & (ANT_HEALTHY_Z[0] <= z) & (
            z <= ANT_HEALTHY_Z[1])
        contact = np.clip(cfrc, *ANT_CONTACT_FORCE_RANGE)
        contact_cost = ANT_CONTACT_COST_WEIGHT * np.square(contact).sum(axis=(1, 2))
        rewards = self.spec.task_reward(values, x_velocity, xy) + healthy * ANT_HEALTHY_REWARD
        return rewards - (ctrl_cost + contact_cost), ~healthy

    def _observe(self, state: np.ndarray, cfrc: np.ndarray) -> np.ndarray:
        """Gymnasium's observation (n, d) of states (n, nstate) and Ant's cfrc_ext[1:]."""
        parts = [state[:, self._obs_qpos], state[:, self._qvel]]
        if self.is_ant:
            contact = np.clip(cfrc, *ANT_CONTACT_FORCE_RANGE)
            parts.append(contact.reshape(len(state), -1))
        return np.concatenate(parts, axis=1)
