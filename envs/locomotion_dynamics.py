"""The two dynamics of the locomotion families: Gymnasium v5's and MAML's.

Both run today's MuJoCo on Gymnasium's robot models (``half_cheetah.xml``, ``ant.xml``;
MAML's Ant with rllab's contact parameters); they differ in how an env step is timed,
measured and charged, and in how a batch samples. ``--dynamics gymnasium`` (the
default) keeps Gymnasium's HalfCheetah-v5 / Ant-v5; ``--dynamics maml`` follows the envs of
the MAML code (rllab's ``half_cheetah_env_rand*.py`` and ``ant_env_rand*.py`` in
cbfinn/maml_rl, run through rllab's ``normalize`` wrapper):

* control step: Gymnasium frame_skip 5 = 0.05 s for both robots; MAML HalfCheetah 1 × 0.01 s
  and Ant 2 × 0.01 s = 0.02 s (rllab's models step 0.01 s and, for Ant, one 0.02 s RK4
  step; Gymnasium's are 0.01 s for both, so two substeps make MAML's control step);
* x velocity: Gymnasium the finite difference of the root's position over the step; MAML
  the torso subtree's centre-of-mass velocity at the new state;
* control cost: Gymnasium w‖a‖² on the action as given; MAML w‖clip(a)‖², the action
  clipped to [-1, 1] (rllab's ``normalize`` clips, and its HalfCheetah clips again);
  w = 0.05 for HalfCheetah in both (rllab: 0.1 · 0.5), for Ant 0.5 and 0.005 (rllab:
  0.5 · 1e-2, on the action divided by its half-range, 1 here);
* Ant's survive bonus: Gymnasium 1 while healthy; MAML 0.05 at every step;
* Ant's contact cost: 5e-4‖clip(cfrc_ext, -1, 1)‖² in both (rllab: 0.5 · 1e-3), MAML's at
  the new state;
* initial state: Gymnasium qpos + U(±0.1), qvel + 0.1·N(0, 1); MAML (rllab's
  ``reset_mujoco``) qpos + 0.01·N(0, 1), qvel + 0.1·N(0, 1), Ant from the model's
  ``init_qpos`` numeric (torso at 0.55 m, legs bent), which Gymnasium ignores;
* Ant's contacts: Gymnasium's ``ant.xml`` leaves ``solimp`` at MuJoCo's default
  (0.9, 0.95, 0.001); rllab's sets ``solimp=".8 .8 .01"`` (and ``solref=".02 1"``, MuJoCo's
  default) in its geom default class, so on every geom, the floor included. MAML's Ant
  model gets rllab's values (:meth:`RobotDynamics.configure_model`; MuJoCo's two later
  solimp numbers, midpoint 0.5 and power 2, stay at their defaults). Its other contact
  attributes (condim 3, conaffinity 0, margin 0.01, friction 1 0.5 0.5) are Gymnasium's
  already, and rllab's HalfCheetah model has Gymnasium's contact settings;
* sampling: Gymnasium's envs run E episodes per task, an episode that ends early stays
  ended; MAML's sampler (rllab's) collects a number of transitions per task, restarting an
  episode when one ends. Under MAML's dynamics :class:`envs.mujoco_batch.BatchedLocomotion`
  restarts an episode that terminates before the horizon in the same (task, episode)
  slot (:attr:`RobotDynamics.restart_ended`), so every slot runs H steps (see
  ``rkmeta_rl/rl/episodes.py`` for the segments this makes).

"At the new state": rllab calls ``model.forward()`` after stepping, so every quantity the
step reads (the centre-of-mass velocity and position, Ant's contact forces for the cost and
the observation) belongs to the state the step ended in. Gymnasium reads ``xpos`` and
``cfrc_ext`` as ``mj_step`` leaves them, computed before its last substep was integrated.
Under MAML's dynamics the envs run ``mj_forward``, ``mj_rnePostConstraint`` (Ant) and
``mj_subtreeVel`` after the step; ``subtree_linvel[torso]`` is then exactly rllab's
``get_body_comvel("torso")`` (the mass-weighted mean of the ``mj_objectVelocity`` of the
torso's subtree's bodies) and ``subtree_com[torso]`` its ``get_body_com("torso")``. Running
``mj_forward`` does not change the state, and the envs keep the solver's warm start as it was
(MuJoCo 3's ``mj_forward`` moves it, MuJoCo 4's does not), so the trajectory is the same as
without it, bitwise, on either.

The task terms (``envs.locomotion_tasks``) change with the dynamics only for Ant: MAML adds
1 to ant-vel's term and 4 to ant-goal's, whose distance is L1 instead of L2.
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

GYMNASIUM, MAML = "gymnasium", "maml"
DYNAMICS = (GYMNASIUM, MAML)
"""The dynamics every locomotion family has; the first is the default."""

CONTACT_COST_WEIGHT = 5e-4  # Ant, both dynamics (rllab: 0.5 · 1e-3)
CONTACT_FORCE_RANGE = (-1.0, 1.0)
HEALTHY_Z = (0.2, 1.0)  # Ant's torso height range; outside it the episode terminates
RLLAB_ANT_SOLIMP = (0.8, 0.8, 0.01)  # rllab's ant.xml, geom default: dmin, dmax, width
RLLAB_ANT_SOLREF = (0.02, 1.0)  # rllab's ant.xml, geom default (MuJoCo's default too)


@dataclass(frozen=True)
class RobotDynamics:
    """How one robot's env step is timed, measured and charged under one dynamics."""

    name: str  # "gymnasium" or "maml"
    frame_skip: int  # MuJoCo substeps per env step (Gymnasium's models: timestep 0.01 s)
    ctrl_cost_weight: float
    clip_ctrl: bool  # the control cost is charged on the action clipped to [low, high]
    at_new_state: bool  # velocity, position and contact forces read after mj_forward
    survive_reward: float = 0.0  # Ant: per step
    survive_only_healthy: bool = True  # Gymnasium: no bonus on the step that ends unhealthy
    qpos_noise: str = "uniform"  # "uniform": U(±scale); "normal": scale·N(0, 1)
    qpos_noise_scale: float = 0.1
    qvel_noise_scale: float = 0.1  # always scale·N(0, 1)
    rllab_init_qpos: bool = False  # start from the model's custom "init_qpos" numeric
    geom_solimp: tuple[float, float, float] | None = None  # every geom's; None: the model's
    geom_solref: tuple[float, float] | None = None  # every geom's; None: the model's
    restart_ended: bool = False  # batches restart an episode that ends before the horizon

    def configure_model(self, model: mujoco.MjModel) -> mujoco.MjModel:
        """``model`` (changed in place) with the dynamics' contact parameters on every geom:
        ``geom_solimp[:, :3]`` and ``geom_solref``, where the dynamics set them."""
        if self.geom_solimp is not None:
            model.geom_solimp[:, :3] = self.geom_solimp
        if self.geom_solref is not None:
            model.geom_solref[:] = self.geom_solref
        return model

    def ctrl_cost(self, action: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
        """weight · ‖a‖² per row (N,), ``a`` clipped to [low, high] first if ``clip_ctrl``."""
        if self.clip_ctrl:
            action = np.clip(action, low, high)
        return self.ctrl_cost_weight * np.sum(np.square(action), axis=-1)

    def survive(self, healthy: np.ndarray | bool) -> np.ndarray | float:
        """The survive bonus of steps ending ``healthy`` or not."""
        if self.survive_only_healthy:
            return self.survive_reward * np.asarray(healthy, dtype=np.float64)
        return self.survive_reward * np.ones_like(healthy, dtype=np.float64)

    def reset_noise(self, rng: np.random.Generator, nq: int, nv: int,
                    n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Noise added to the initial qpos and qvel, (nq,), (nv,) or with a leading n:
        every position's draw first, then every velocity's, as Gymnasium's reset_model."""
        shape_q, shape_v = ((nq,), (nv,)) if n is None else ((n, nq), (n, nv))
        if self.qpos_noise == "uniform":
            dq = rng.uniform(-self.qpos_noise_scale, self.qpos_noise_scale, shape_q)
        else:
            dq = self.qpos_noise_scale * rng.standard_normal(shape_q)
        return dq, self.qvel_noise_scale * rng.standard_normal(shape_v)


ROBOT_DYNAMICS: dict[tuple[str, str], RobotDynamics] = {
    ("halfcheetah", GYMNASIUM): RobotDynamics(GYMNASIUM, 5, 0.05, False, False),
    ("halfcheetah", MAML): RobotDynamics(MAML, 1, 0.05, True, True, qpos_noise="normal",
                                         qpos_noise_scale=0.01, restart_ended=True),
    ("ant", GYMNASIUM): RobotDynamics(GYMNASIUM, 5, 0.5, False, False, survive_reward=1.0),
    ("ant", MAML): RobotDynamics(MAML, 2, 0.005, True, True, survive_reward=0.05,
                                 survive_only_healthy=False, qpos_noise="normal",
                                 qpos_noise_scale=0.01, rllab_init_qpos=True,
                                 geom_solimp=RLLAB_ANT_SOLIMP, geom_solref=RLLAB_ANT_SOLREF,
                                 restart_ended=True),
}
"""Every robot's two dynamics, by (robot, dynamics)."""


def check_dynamics(dynamics: str) -> str:
    """``dynamics`` if it is one of :data:`DYNAMICS` (ValueError naming the valid ones)."""
    if dynamics not in DYNAMICS:
        raise ValueError(f"unknown dynamics {dynamics!r}; valid choices: {', '.join(DYNAMICS)}")
    return dynamics


def robot_dynamics(robot: str, dynamics: str) -> RobotDynamics:
    """The :class:`RobotDynamics` of ``robot`` under ``dynamics`` (ValueError if unknown)."""
    return ROBOT_DYNAMICS[robot, check_dynamics(dynamics)]


def subtree_velocity(cvel: np.ndarray, xipos: np.ndarray, subtree_com: np.ndarray,
                     mass: np.ndarray, bodies: np.ndarray, root: int) -> np.ndarray:
    """The centre-of-mass velocity (n, 3) of ``bodies`` (a subtree of the kinematic tree
    rooted at body ``root``) from MuJoCo's com-based velocities, as ``mj_subtreeVel``.

    ``cvel`` (n, nbody, 6) holds each body's [angular, linear] velocity at
    ``subtree_com[root]``; a body's centre of mass ``xipos`` moves at
    ``lin + ang × (xipos - subtree_com[root])``, and the subtree's at the mass-weighted mean.
    """
    arm = xipos[:, bodies] - subtree_com[:, [root]]
    lin = cvel[:, bodies, 3:] + np.cross(cvel[:, bodies, :3], arm)
    weights = mass[bodies] / mass[bodies].sum()
    return np.einsum("nbk,b->nk", lin, weights)
