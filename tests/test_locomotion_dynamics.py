"""MAML's dynamics and the oracle variants of the locomotion envs.

The expected rewards are written out here from rllab's envs (cbfinn/maml_rl), computed from
the recorded state after each step the way rllab reads it: ``forward()`` at the new state,
the torso subtree's centre-of-mass velocity as rllab's ``body_comvels`` (the mass-weighted
``mj_objectVelocity`` of its bodies), its centre of mass, and ``cfrc_ext``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import gymnasium
import gymnasium.envs.mujoco
import mujoco
import numpy as np
import pytest
from gymnasium.envs.mujoco.ant_v5 import AntEnv
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
from gymnasium.utils import seeding
from gymnasium.utils.env_checker import check_env

import envs
from envs.locomotion import make_locomotion_env

FAMILIES = ["halfcheetah-vel", "halfcheetah-dir", "ant-vel", "ant-dir", "ant-goal"]
TASKS = {
    "halfcheetah-vel": {"velocity": 1.2},
    "halfcheetah-dir": {"direction": -1.0},
    "ant-vel": {"velocity": 0.8},
    "ant-dir": {"direction": 1.0},
    "ant-goal": {"goal": [1.5, -2.0]},
}
RLLAB_ANT_INIT_QPOS = [0.0, 0.0, 0.55, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, -1.0, 0.0, -1.0, 0.0,
                       1.0]  # the "init_qpos" numeric of rllab's ant.xml


def check_env_quietly(env: gymnasium.Env) -> None:
    """check_env, allowing only the warnings every MuJoCo env gives (unbounded obs)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", message=r".*Box observation space (min|max)imum")
        warnings.filterwarnings("ignore", message=r".*not having a spec")
        check_env(env, skip_render_check=True)


def rllab_reading(env, action: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(CoM velocity (3,), CoM (3,), cfrc_ext) of the torso's subtree after the step, as
    rllab reads them, recomputed on a fresh MjData from the env's recorded state."""
    model = env.model
    data = mujoco.MjData(model)
    data.qpos[:], data.qvel[:], data.ctrl[:] = env.data.qpos, env.data.qvel, action
    mujoco.mj_forward(model, data)
    mujoco.mj_rnePostConstraint(model, data)
    assert (model.body_rootid[1:] == 1).all()  # the torso's subtree: every body but the world
    velocity = np.zeros((model.nbody, 6))
    for body in range(model.nbody):
        mujoco.mj_objectVelocity(model, data, mujoco.mjtObj.mjOBJ_BODY, body, velocity[body], 0)
    mass = model.body_mass[1:]
    comvel = (mass[:, None] * velocity[1:, 3:]).sum(0) / mass.sum()
    com = (mass[:, None] * data.xipos[1:]).sum(0) / mass.sum()
    return comvel, com, data.cfrc_ext.copy()


def rllab_reward(family: str, task: dict, action: np.ndarray, comvel: np.ndarray,
                 com: np.ndarray, cfrc: np.ndarray) -> float:
    """The reward of rllab's env of ``family`` (after its ``normalize`` wrapper clips the
    action to [-1, 1], Gymnasium's control range and half-range 1)."""
    a = np.clip(action, -1.0, 1.0)
    if family.startswith("halfcheetah"):
        ctrl = 1e-1 * 0.5 * np.sum(a**2)
        if "velocity" in task:
            return -abs(comvel[0] - task["velocity"]) - ctrl
        return task["direction"] * comvel[0] - ctrl
    ctrl = 0.5 * 1e-2 * np.sum(a**2)
    contact = 0.5 * 1e-3 * np.sum(np.clip(cfrc, -1.0, 1.0) ** 2)
    if "velocity" in task:
        forward = -abs(comvel[0] - task["velocity"]) + 1.0
    elif "direction" in task:
        forward = task["direction"] * comvel[0]
    else:
        forward = -np.sum(np.abs(com[:2] - np.asarray(task["goal"]))) + 4.0
    return forward - ctrl - contact + 0.05


@pytest.mark.parametrize("family", FAMILIES)
def test_maml_reward_is_rllabs(family: str) -> None:
    task = TASKS[family]
    env = make_locomotion_env(family, task, dynamics="maml")
    env.reset(seed=3)
    actions = np.random.default_rng(4).uniform(-1.4, 1.4, (8, env.action_space.shape[0]))
    for action in actions:  # beyond the control range on purpose: the cost clips
        _, reward, terminated, _, info = env.step(action)
        comvel, com, cfrc = rllab_reading(env, action)
        expected = rllab_reward(family, task, action, comvel, com, cfrc)
        assert reward == pytest.approx(expected, rel=1e-7, abs=1e-7)
        assert info["x_velocity"] == pytest.approx(comvel[0], rel=1e-9, abs=1e-9)
        terms = [k for k in info if k.startswith("reward_")]
        assert sum(info[k] for k in terms) == pytest.approx(reward)
        z = env.data.qpos[2]
        assert terminated == (family.startswith("ant") and not 0.2 <= z <= 1.0)


def test_maml_ant_keeps_its_bonus_when_unhealthy_and_terminates() -> None:
    env = make_locomotion_env("ant-dir", {"direction": 1.0}, dynamics="maml")
    env.reset(seed=0)
    qpos = env.data.qpos.copy()
    qpos[2] = 1.5  # the torso above the healthy range
    env.set_state(qpos, env.data.qvel.copy())
    _, _, terminated, _, info = env.step(np.zeros(8))
    assert terminated and info["reward_survive"] == 0.05


@pytest.mark.parametrize(("family", "dt", "substeps"), [
    ("halfcheetah-vel", 0.01, 1), ("ant-dir", 0.02, 2)])
def test_maml_control_step_and_states_are_plain_mujoco(family: str, dt: float,
                                                       substeps: int) -> None:
    """MAML's control step on Gymnasium's 0.01 s models; reading the new state (mj_forward)
    leaves the trajectory that of plain mj_step, warm start included: bitwise."""
    env = make_locomotion_env(family, TASKS[family], dynamics="maml")
    assert env.dt == pytest.approx(dt) and env.model.opt.timestep == 0.01
    assert make_locomotion_env(family).dt == pytest.approx(0.05)
    env.reset(seed=1)
    model = env.model
    data = mujoco.MjData(model)
    data.qpos[:], data.qvel[:] = env.data.qpos, env.data.qvel
    for action in np.random.default_rng(2).uniform(-1, 1, (10, model.nu)):
        env.step(action)
        data.ctrl[:] = action
        mujoco.mj_step(model, data, nstep=substeps)
        np.testing.assert_array_equal(env.data.qpos, data.qpos)
        np.testing.assert_array_equal(env.data.qvel, data.qvel)


@pytest.mark.parametrize("family", ["halfcheetah-dir", "ant-goal"])
def test_maml_initial_state_is_rllabs(family: str) -> None:
    env = make_locomotion_env(family, dynamics="maml")
    env.reset(seed=7)
    rng = seeding.np_random(7)[0]
    model = env.model
    init = RLLAB_ANT_INIT_QPOS if family.startswith("ant") else np.zeros(model.nq)
    qpos = np.asarray(init) + 0.01 * rng.standard_normal(model.nq)
    qvel = 0.1 * rng.standard_normal(model.nv)
    np.testing.assert_array_equal(env.data.qpos, qpos)
    np.testing.assert_array_equal(env.data.qvel, qvel)


@pytest.mark.parametrize("dynamics", ["gymnasium", "maml"])
@pytest.mark.parametrize("family", FAMILIES)
def test_check_env_passes_for_every_variant(family: str, dynamics: str) -> None:
    check_env_quietly(make_locomotion_env(family, dynamics=dynamics))
    check_env_quietly(make_locomotion_env(family + "-oracle", dynamics=dynamics))


@pytest.mark.parametrize("dynamics", ["gymnasium", "maml"])
@pytest.mark.parametrize("family", ["halfcheetah-vel", "ant-goal"])
def test_oracle_observes_the_task_and_nothing_else_changes(family: str, dynamics: str) -> None:
    task = TASKS[family]
    plain = make_locomotion_env(family, task, dynamics=dynamics)
    oracle = make_locomotion_env(family + "-oracle", task, dynamics=dynamics)
    values = np.ravel(list(task.values())[0])
    assert oracle.observation_space.shape[0] == plain.observation_space.shape[0] + values.size
    obs_p, obs_o = plain.reset(seed=5)[0], oracle.reset(seed=5)[0]
    for action in [None, *np.random.default_rng(6).uniform(-1, 1, (4, plain.model.nu))]:
        if action is not None:
            obs_p, rew_p, *_ = plain.step(action)
            obs_o, rew_o, *_ = oracle.step(action)
            assert rew_p == rew_o
        np.testing.assert_array_equal(obs_o[:-values.size], obs_p)
        np.testing.assert_array_equal(obs_o[-values.size:], values)


def test_a_drawn_task_is_observed_from_the_first_observation() -> None:
    env = make_locomotion_env("halfcheetah-dir-oracle")
    obs, info = env.reset(seed=0)
    assert obs[-1] == info["task"]["direction"]


def test_make_selects_the_variants() -> None:
    env = gymnasium.make(envs.HALFCHEETAH_VEL_ID, dynamics="maml", goal_conditioned=True)
    assert env.unwrapped.dt == pytest.approx(0.01) and env.unwrapped.goal_conditioned
    assert env.observation_space.shape == (18,)
    with pytest.raises(ValueError, match="valid choices: gymnasium, maml"):
        make_locomotion_env("ant-dir", dynamics="rllab")
    with pytest.raises(ValueError, match="halfcheetah-vel-oracle"):
        make_locomotion_env("hopper-oracle")


def test_gymnasium_dynamics_are_gymnasiums() -> None:
    """The default keeps Gymnasium's robots: same states and observations, step for step."""
    for ours, theirs in ((make_locomotion_env("halfcheetah-dir", {"direction": 1.0}),
                          HalfCheetahEnv(ctrl_cost_weight=0.05)),
                         (make_locomotion_env("ant-dir", {"direction": 1.0}), AntEnv())):
        np.testing.assert_array_equal(ours.reset(seed=2)[0], theirs.reset(seed=2)[0])
        for action in np.random.default_rng(3).uniform(-1, 1, (5, ours.model.nu)):
            obs, reward, *_ = ours.step(action)
            obs_g, reward_g, *_ = theirs.step(action)
            np.testing.assert_array_equal(obs, obs_g)
            assert reward == pytest.approx(reward_g, rel=1e-9, abs=1e-9)


def rllab_contact_ant() -> mujoco.MjModel:
    """Gymnasium's ant.xml with the contact attributes of rllab's ant.xml geom default class
    added (``solimp=".8 .8 .01" solref=".02 1"``; its others, condim 3, conaffinity 0,
    margin 0.01 and friction 1 0.5 0.5, are there already), compiled here."""
    xml = (Path(gymnasium.envs.mujoco.__file__).parent
           / "assets" / "ant.xml").read_text()
    default = '<geom conaffinity="0" condim="3" density="5.0" friction="1 0.5 0.5" margin="0.01"'
    assert xml.count(default) == 1
    return mujoco.MjModel.from_xml_string(
        xml.replace(default, default + ' solimp=".8 .8 .01" solref=".02 1"'))


def test_maml_ant_contacts_are_rllabs() -> None:
    """Every geom (the floor too: rllab sets them in the default class) gets rllab's solimp
    and solref, and the env then steps as the model compiled from that XML: bitwise."""
    env = make_locomotion_env("ant-dir", {"direction": 1.0}, dynamics="maml")
    model, rllab = env.model, rllab_contact_ant()
    np.testing.assert_array_equal(model.geom_solimp[:, :3],
                                  np.tile([0.8, 0.8, 0.01], (model.ngeom, 1)))
    np.testing.assert_array_equal(model.geom_solref, np.tile([0.02, 1.0], (model.ngeom, 1)))
    for field in ("geom_solimp", "geom_solref", "geom_margin", "geom_gap", "geom_friction",
                  "geom_condim", "geom_contype", "geom_conaffinity", "geom_solmix"):
        np.testing.assert_array_equal(getattr(model, field), getattr(rllab, field), field)
    env.reset(seed=4)
    data = mujoco.MjData(rllab)
    data.qpos[:], data.qvel[:] = env.data.qpos, env.data.qvel
    for action in np.random.default_rng(5).uniform(-1, 1, (15, model.nu)):
        env.step(action)
        data.ctrl[:] = action
        mujoco.mj_step(rllab, data, nstep=2)
        np.testing.assert_array_equal(env.data.qpos, data.qpos)
        np.testing.assert_array_equal(env.data.qvel, data.qvel)


def test_only_maml_ant_changes_the_contacts() -> None:
    """Gymnasium's Ant keeps MuJoCo's default solimp; HalfCheetah's XML sets rllab's own."""
    np.testing.assert_array_equal(make_locomotion_env("ant-dir").model.geom_solimp,
                                  AntEnv().model.geom_solimp)
    assert tuple(AntEnv().model.geom_solimp[0, :3]) == (0.9, 0.95, 0.001)
    for dynamics in ("gymnasium", "maml"):
        np.testing.assert_array_equal(
            make_locomotion_env("halfcheetah-vel", dynamics=dynamics).model.geom_solimp,
            HalfCheetahEnv().model.geom_solimp)
