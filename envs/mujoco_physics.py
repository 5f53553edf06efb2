"""The two physics engines of :class:`envs.mujoco_batch.BatchedLocomotion`.

Each steps N simulations of one Gymnasium robot as Gymnasium's ``step`` does
(``mj_step(model, data, nstep=frame_skip)`` then ``mj_rnePostConstraint``), behind one
interface (:class:`Physics`):

* ``state`` (N, nstate): every simulation's state row; ``qpos`` / ``qvel``: their slices;
* ``start(qpos, qvel, rows)``: load states (n, nq), (n, nv) at time 0 into ``rows`` (every
  row by default; the others keep theirs); their contact forces;
* ``advance(rows, act)``: one env step of some rows with ``act`` (n, a) held as ``ctrl``
  (MuJoCo clamps it to ``ctrlrange`` as in Gymnasium); a :class:`Moved`;
* ``close()``: stop the threads.

With ``at_new_state`` (MAML's dynamics, ``envs/locomotion_dynamics.py``) the engines also
evaluate the new state, as ``mj_forward`` after the step would: :attr:`Moved.velocity` is the
torso subtree's centre-of-mass x velocity, :attr:`Moved.xy` its centre of mass, and Ant's
contact forces are those of the new state (and of the initial states in ``start``).

Unstable physics: on a non-finite or huge state MuJoCo warns and resets the simulation to
the model's default state, which Gymnasium would silently continue from. ``advance`` finds
such rows (from the batch's bad-state warning counters, or from time going back where
``mujoco.rollout`` stops) and reports them in :attr:`Moved.unstable`; if there is any, it
leaves every simulation's state as it was before the step (no NaN reaches the others).

Both engines give bitwise the same results on 1 or more threads; their threads work only
inside ``advance``. On MuJoCo 3, which has no ``mujoco.batch``, HalfCheetah runs on
:class:`LoopPhysics` (one ``MjData`` per simulation stepped from a thread pool), whose states
are bitwise the batch's and Gymnasium's.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import ClassVar

import mujoco
import mujoco.rollout
import numpy as np

from envs.locomotion_dynamics import subtree_velocity

# mujoco.batch arrived with MuJoCo 4; on MuJoCo 3 (which Meta-World's extra installs)
# HalfCheetah runs on LoopPhysics, with the same states
HAS_BATCH = int(mujoco.__version__.split(".")[0]) >= 4
if HAS_BATCH:
    import mujoco.batch

Rows = slice | np.ndarray  # the rows of a step: indices (n,), or slice(None) for all N

_FULLPHYSICS = mujoco.mjtState.mjSTATE_FULLPHYSICS.value
_INTEGRATION = mujoco.mjtState.mjSTATE_INTEGRATION.value  # mujoco.batch.Batch's state rows
# the warnings on which MuJoCo resets a simulation to the model's default state
_BAD_STATE = [int(w) for w in (mujoco.mjtWarning.mjWARN_BADQPOS, mujoco.mjtWarning.mjWARN_BADQVEL,
                               mujoco.mjtWarning.mjWARN_BADQACC)]
_TORSO = 1  # both robots' root body: its subtree is the whole robot
_STAGE_VEL = mujoco.mjtStage.mjSTAGE_VEL.value


def state_offset(model: mujoco.MjModel, spec: int, component: int) -> int:
    """Where ``component`` (one mjtState bit) starts in a state row of ``spec``."""
    bits = [1 << i for i in range(int(component).bit_length() - 1)]
    return sum(mujoco.mj_stateSize(model, b) for b in bits if b & spec)


@dataclass
class Moved:
    """One env step of n rows."""

    state: np.ndarray  # (n, nstate) new states
    xy: np.ndarray  # (n, 2) the root's position as Gymnasium reads it after the step
    cfrc: np.ndarray  # (n, nbody - 1, 6) cfrc_ext[1:] (HalfCheetah: zeros, unused)
    unstable: np.ndarray  # (n,) bool: MuJoCo found the state unstable (and reset it)
    velocity: np.ndarray | None = None  # (n,) at_new_state: the torso subtree's CoM x velocity


class Physics(ABC):
    """What both engines share: N state rows of ``STATE_SPEC`` and the stability check."""

    STATE_SPEC: ClassVar[int]
    state: np.ndarray  # (N, nstate)
    _executor: ThreadPoolExecutor | None = None  # the threads of _in_blocks, where used

    def __init__(self, model: mujoco.MjModel, frame_skip: int, dt: float, nthread: int,
                 at_new_state: bool) -> None:
        self.model, self.frame_skip, self.dt, self.nthread = model, frame_skip, dt, nthread
        self.at_new_state = at_new_state
        qpos0 = state_offset(model, self.STATE_SPEC, mujoco.mjtState.mjSTATE_QPOS)
        qvel0 = state_offset(model, self.STATE_SPEC, mujoco.mjtState.mjSTATE_QVEL)
        self.qpos = slice(qpos0, qpos0 + model.nq)  # state rows: time, qpos, qvel, ...
        self.qvel = slice(qvel0, qvel0 + model.nv)

    def start(self, qpos: np.ndarray, qvel: np.ndarray, rows: Rows = slice(None)) -> np.ndarray:
        """Load states qpos (n, nq), qvel (n, nv) at time 0 into ``rows`` (all N by
        default), everything else the defaults; their contact forces (n, nbody - 1, 6): zero
        after Gymnasium's reset, which does not compute them (``mj_forward`` does not)."""
        self._reset_rows(rows)
        self.state[rows, self.qpos] = qpos
        self.state[rows, self.qvel] = qvel
        return self.no_contact(len(qpos))

    def no_contact(self, n: int) -> np.ndarray:
        """Zero contact forces (n, nbody - 1, 6)."""
        return np.zeros((n, self.model.nbody - 1, 6))

    def _unstable(self, start: np.ndarray, new: np.ndarray,
                  warned: np.ndarray | bool = False) -> np.ndarray:
        """(n,) bool: ``warned``, non-finite, or (as ``mujoco.rollout`` stops stepping a reset
        simulation) its time went back."""
        min_time = start[:, 0] + 0.5 * self.dt
        return ~np.isfinite(new).all(axis=1) | (new[:, 0] < min_time) | warned

    def _in_blocks(self, block: Callable[[int, range], None], n: int) -> None:
        """``block(j, rows)`` for ``nthread`` contiguous blocks of rows 0..n-1, block j on
        thread j of ``self._executor`` (all on the calling thread without one)."""
        bounds = np.linspace(0, n, self.nthread + 1).astype(int)
        blocks = [range(bounds[j], bounds[j + 1]) for j in range(self.nthread)]
        if self._executor is None:
            for j, rows in enumerate(blocks):
                block(j, rows)
        else:
            list(self._executor.map(block, range(self.nthread), blocks))

    @abstractmethod
    def _reset_rows(self, rows: Rows) -> None:
        """``rows`` to the model's defaults (zero time, controls and warm start)."""

    @abstractmethod
    def advance(self, rows: Rows, act: np.ndarray) -> Moved:
        """One env step of ``rows`` with ``act`` (n, a); their states are kept only if none
        is unstable."""

    @abstractmethod
    def close(self) -> None:
        """Stop the threads; ``state`` stays readable."""


class CheetahPhysics(Physics):
    """HalfCheetah: a stateful ``mujoco.batch.Batch`` of the N simulations.

    It runs on ``nthread`` threads (the calling thread included) and advances the alive
    rows by ``frame_skip`` substeps. Its rows are full ``mjSTATE_INTEGRATION`` states, so the
    constraint solver's warm start carries over between env steps as in Gymnasium's one
    ``MjData``, and states are bitwise Gymnasium's (see the tests). The batch steps its rows
    in place, with no state copies in and out; when every episode is alive the step runs on
    all rows without index gathers. Its raw physics is ~15% faster than ``mujoco.rollout`` on
    the same threads (see ``scripts/bench_sampler.py``), and physics is ~90% of a sampling
    step. ``xy`` is ``(qpos[0], 0)``. Its threads end with the ``Batch`` (on :meth:`close`).
    """

    STATE_SPEC = _INTEGRATION

    def __init__(self, model: mujoco.MjModel, n: int, frame_skip: int, dt: float,
                 nthread: int, at_new_state: bool = False) -> None:
        super().__init__(model, frame_skip, dt, nthread, at_new_state)
        self._sims: mujoco.batch.Batch | None = mujoco.batch.Batch(model, n, nthread=nthread)
        self.state = self._sims.state  # live (N, nstate) rows
        self._ctrl: np.ndarray | None = self._sims.bind("ctrl")  # live (N, a)
        # at_new_state: the positions and velocities MuJoCo computes at the new state
        self._stage = _STAGE_VEL if at_new_state else 0
        self._kinematics = [self._sims.bind(f) for f in ("cvel", "xipos", "subtree_com")
                            ] if at_new_state else []
        self._subtree = subtree_bodies(model, _TORSO)

    def _reset_rows(self, rows: Rows) -> None:
        self._sims.reset(None if isinstance(rows, slice) else rows,
                         stage=mujoco.mjtStage.mjSTAGE_NONE.value)

    def advance(self, rows: Rows, act: np.ndarray) -> Moved:
        start = self.state[rows].copy()  # (n, nstate); the rows are stepped in place
        warnings = self._bad_state_warnings(rows)
        self._ctrl[rows] = act
        self._sims.step(None if isinstance(rows, slice) else rows, nstep=self.frame_skip,
                        stage=self._stage)
        new = self.state[rows]
        unstable = self._unstable(start, new, self._bad_state_warnings(rows) > warnings)
        if unstable.any():
            self.state[rows] = start
        if not self.at_new_state:
            xy = np.stack([new[:, self.qpos.start], np.zeros(len(new))], axis=1)
            return Moved(new, xy, self.no_contact(len(new)), unstable)
        cvel, xipos, com = (field[rows] for field in self._kinematics)
        velocity = subtree_velocity(cvel, xipos, com, self.model.body_mass, self._subtree, _TORSO)
        return Moved(new, com[:, _TORSO, :2], self.no_contact(len(new)), unstable,
                     velocity[:, 0])

    def _bad_state_warnings(self, rows: Rows) -> np.ndarray:
        """(n,) the rows' bad-state warning counters, summed (column 1 of mjWarningStat is
        ``number``, the count; column 0, ``lastinfo``, is the index of the bad value)."""
        return self._sims.warning[rows][:, _BAD_STATE, 1].sum(axis=1)

    def close(self) -> None:
        """Keep a copy of the states and drop the batch, whose threads end with it."""
        self.state = self.state.copy()
        self._sims = self._ctrl = None


class AntPhysics(Physics):
    """Ant: ``mujoco.rollout`` on a persistent pool of ``nthread`` threads, then the last
    substep per simulation.

    The rollout keeps one ``MjData`` per thread and is stateless: the constraint solver
    starts cold at every env step (``mujoco.rollout`` zeroes the warm start), where
    Gymnasium warm-starts it from the previous substep; it converges to its tolerance either
    way, and states agree with Gymnasium's to ~1e-14 after ten steps (~1e-10 after fifty, as
    differences grow in these chaotic systems).

    Gymnasium reads the torso's ``xpos`` and ``cfrc_ext`` after ``mj_step``. MuJoCo computes
    them inside the last substep, before integrating, and Ant uses RK4, so they belong to
    the point of its last Runge-Kutta stage: neither the state before the last substep nor
    the one after it. So the rollout runs ``frame_skip - 1`` substeps and the last one runs
    per simulation on a thread's ``MjData`` (``mj_setState``, ``mj_step``,
    ``mj_rnePostConstraint``; the same ``nthread`` threads, from a Python pool, as MuJoCo
    releases the GIL). That is exact and costs no extra physics, only a few Python calls per
    simulation (~7 µs, against ~240 µs of physics per Ant env step). ``xy`` is that
    ``xpos[:2]``.
    """

    STATE_SPEC = _FULLPHYSICS

    def __init__(self, model: mujoco.MjModel, n: int, frame_skip: int, dt: float,
                 nthread: int, at_new_state: bool = False) -> None:
        super().__init__(model, frame_skip, dt, nthread, at_new_state)
        self._pool = mujoco.rollout.Rollout(nthread=nthread if nthread > 1 else 0)
        self._datas = [mujoco.MjData(model) for _ in range(nthread)]
        self._executor = (ThreadPoolExecutor(nthread, thread_name_prefix="mj-substep")
                          if nthread > 1 else None)
        self._models = [model] * n
        self.state = np.zeros((n, mujoco.mj_stateSize(model, _FULLPHYSICS)))

    def _reset_rows(self, rows: Rows) -> None:
        self.state[rows] = 0.0

    def start(self, qpos: np.ndarray, qvel: np.ndarray, rows: Rows = slice(None)) -> np.ndarray:
        """As :meth:`Physics.start`; at_new_state: the states' own contact forces, as
        rllab's ``forward()`` after its reset computes them (zero controls and applied
        forces: the thread's MjData is reset first, as it may hold a step's)."""
        cfrc = super().start(qpos, qvel, rows)
        if self.at_new_state:
            states = self.state[rows]  # (n, nstate)

            def contacts(data: mujoco.MjData, r: int) -> None:
                mujoco.mj_resetData(self.model, data)
                mujoco.mj_setState(self.model, data, states[r], _FULLPHYSICS)
                mujoco.mj_forward(self.model, data)
                mujoco.mj_rnePostConstraint(self.model, data)
                cfrc[r] = data.cfrc_ext[1:]

            self._per_row(contacts, len(qpos))
        return cfrc

    def advance(self, rows: Rows, act: np.ndarray) -> Moved:
        start = self.state[rows].copy()  # (n, nstate)
        last = start
        if self.frame_skip > 1:
            last = self._rollout(start, act, self.frame_skip - 1)[:, -1]
        new, xy, cfrc, velocity = self._last_substep(last, act)
        unstable = self._unstable(start, new)
        if not unstable.any():
            self.state[rows] = new
        return Moved(new, xy, cfrc, unstable, velocity if self.at_new_state else None)

    def _rollout(self, start: np.ndarray, act: np.ndarray, nstep: int) -> np.ndarray:
        """``nstep`` substeps with ``act`` held, from states (n, nstate): (n, nstep, nstate)."""
        n = len(start)
        out = np.empty((n, nstep, start.shape[1]))
        control = np.ascontiguousarray(np.broadcast_to(act[:, None, :], (n, nstep, act.shape[1])))
        self._pool.rollout(self._models[:n], self._datas, start, control, skip_checks=True,
                           nstep=nstep, state=out, sensordata=np.empty((n, nstep, 0)),
                           chunk_size=max(1, n // (10 * self.nthread)))
        return out

    def _per_row(self, fn: Callable[[mujoco.MjData, int], None], n: int) -> None:
        """``fn(data, r)`` for rows 0..n-1, split over the threads, each with its MjData."""

        def block(j: int, rows: range) -> None:
            for r in rows:
                fn(self._datas[j], r)

        self._in_blocks(block, n)

    def _last_substep(
        self, start: np.ndarray, act: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The last substep of states (n, nstate), as Gymnasium's ``do_simulation`` ends
        (at_new_state: then ``mj_forward`` at the new state): new states (n, nstate), torso
        xy (n, 2), cfrc_ext[1:] (n, nbody - 1, 6) and (at_new_state) CoM x velocity (n,)."""
        model, n = self.model, len(start)
        new, xy, cfrc, velocity = (np.empty_like(start), np.empty((n, 2)), self.no_contact(n),
                                   np.zeros(n))

        def substep(data: mujoco.MjData, r: int) -> None:
            mujoco.mj_setState(model, data, start[r], _FULLPHYSICS)
            data.qacc_warmstart[:] = 0.0  # cold, as mujoco.rollout starts: deterministic
            data.ctrl[:] = act[r]
            mujoco.mj_step(model, data)
            mujoco.mj_getState(model, data, new[r], _FULLPHYSICS)
            if self.at_new_state:
                mujoco.mj_forward(model, data)
                mujoco.mj_rnePostConstraint(model, data)
                mujoco.mj_subtreeVel(model, data)
                xy[r] = data.subtree_com[_TORSO, :2]
                velocity[r] = data.subtree_linvel[_TORSO, 0]
            else:
                mujoco.mj_rnePostConstraint(model, data)
                xy[r] = data.xpos[_TORSO, :2]
            cfrc[r] = data.cfrc_ext[1:]

        self._per_row(substep, n)
        return new, xy, cfrc, velocity

    def close(self) -> None:
        self._pool.close()
        if self._executor is not None:
            self._executor.shutdown()


class LoopPhysics(Physics):
    """HalfCheetah without ``mujoco.batch`` (MuJoCo 3): one ``MjData`` per simulation, each
    env step ``mj_step(model, data, nstep=frame_skip)`` as Gymnasium's, the rows split over
    ``nthread`` threads (MuJoCo releases the GIL). The warm start carries over in each
    ``MjData``, so states are Gymnasium's bitwise, as the batch engine's. ``xy`` is
    ``(qpos[0], 0)``."""

    STATE_SPEC = _INTEGRATION

    def __init__(self, model: mujoco.MjModel, n: int, frame_skip: int, dt: float,
                 nthread: int, at_new_state: bool = False) -> None:
        super().__init__(model, frame_skip, dt, nthread, at_new_state)
        self._datas = [mujoco.MjData(model) for _ in range(n)]
        self.state = np.zeros((n, mujoco.mj_stateSize(model, _INTEGRATION)))
        self._executor = (ThreadPoolExecutor(nthread, thread_name_prefix="mj-loop")
                          if nthread > 1 else None)
        self._subtree = subtree_bodies(model, _TORSO)

    def _indices(self, rows: Rows) -> np.ndarray:
        return np.arange(len(self.state))[rows]

    def _reset_rows(self, rows: Rows) -> None:
        for r in self._indices(rows):
            mujoco.mj_resetData(self.model, self._datas[r])
            mujoco.mj_getState(self.model, self._datas[r], self.state[r], _INTEGRATION)

    def start(self, qpos: np.ndarray, qvel: np.ndarray, rows: Rows = slice(None)) -> np.ndarray:
        cfrc = super().start(qpos, qvel, rows)
        self._load(self._indices(rows), self.state[rows])
        return cfrc

    def _load(self, idx: np.ndarray, states: np.ndarray) -> None:
        """Rows ``idx`` of the MjData set to ``states`` (n, nstate)."""
        for r, state in zip(idx, states, strict=True):
            mujoco.mj_setState(self.model, self._datas[r], state, _INTEGRATION)

    def advance(self, rows: Rows, act: np.ndarray) -> Moved:
        idx = self._indices(rows)
        start = self.state[idx]  # (n, nstate), a copy
        n = len(idx)
        new, warned = np.empty_like(start), np.zeros(n, dtype=bool)
        kinematics = [np.empty((n, self.model.nbody, k)) for k in (6, 3, 3)]

        def step(k: int) -> None:
            data = self._datas[idx[k]]
            before = _bad_state_count(data)
            data.ctrl[:] = act[k]
            mujoco.mj_step(self.model, data, nstep=self.frame_skip)
            mujoco.mj_getState(self.model, data, new[k], _INTEGRATION)
            warned[k] = _bad_state_count(data) > before
            if self.at_new_state:  # the positions and velocities at the new state
                mujoco.mj_kinematics(self.model, data)
                mujoco.mj_comPos(self.model, data)
                mujoco.mj_comVel(self.model, data)
                for field, out in zip((data.cvel, data.xipos, data.subtree_com), kinematics,
                                      strict=True):
                    out[k] = field

        def block(_: int, rows: range) -> None:
            for k in rows:
                step(k)

        self._in_blocks(block, n)
        unstable = self._unstable(start, new, warned)
        if unstable.any():
            self._load(idx, start)
        else:
            self.state[idx] = new
        if not self.at_new_state:
            xy = np.stack([new[:, self.qpos.start], np.zeros(n)], axis=1)
            return Moved(new, xy, self.no_contact(n), unstable)
        cvel, xipos, com = kinematics
        velocity = subtree_velocity(cvel, xipos, com, self.model.body_mass, self._subtree, _TORSO)
        return Moved(new, com[:, _TORSO, :2], self.no_contact(n), unstable, velocity[:, 0])

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown()


def _bad_state_count(data: mujoco.MjData) -> int:
    """How often MuJoCo found this simulation's state bad (and reset it)."""
    return sum(data.warning[w].number for w in _BAD_STATE)


def subtree_bodies(model: mujoco.MjModel, root: int) -> np.ndarray:
    """The ids of body ``root`` and of every body below it in the kinematic tree."""
    inside = np.zeros(model.nbody, dtype=bool)
    inside[root] = True
    for b in range(root + 1, model.nbody):  # parents come before their children
        inside[b] = inside[model.body_parentid[b]]
    return np.flatnonzero(inside)


ENGINES: dict[str, type[Physics]] = {
    "halfcheetah": CheetahPhysics if HAS_BATCH else LoopPhysics,
    "ant": AntPhysics,
}
"""The engine of each robot (:attr:`envs.locomotion_tasks.LocomotionSpec.robot`)."""
