"""Tests for the locomotion task envs (Gymnasium MuJoCo v5 robots with a task reward).

The expected rewards here are computed from the simulator's state and ``info`` with the
formulas written out, not through ``envs.locomotion_tasks``.
"""

from __future__ import annotations

import importlib
import pickle
import warnings

import gymnasium
import numpy as np
import pytest
from gymnasium.error import ResetNeeded
from gymnasium.utils.env_checker import check_env

import envs
from envs.locomotion import (
    FAMILY_ENVS,
    AntGoalEnv,
    AntTaskEnv,
    AntVelEnv,
    HalfCheetahTaskEnv,
    HalfCheetahVelEnv,
    make_locomotion_env,
)

FAMILIES = list(FAMILY_ENVS)
ANT_FAMILIES = ["ant-vel", "ant-dir", "ant-goal"]

# check_env warnings expected by design: MuJoCo observations are unbounded, directly built
# envs have no EnvSpec, and make() adds TimeLimit/OrderEnforcing/PassiveEnvChecker wrappers.
_EXPECTED_WARNINGS = (
    r".*Box observation space (minimum|maximum) value is .*infinity",
    r".*Not able to test alternative render modes due to the environment not having a spec",
    r".*is different from the unwrapped version",
)

# two different tasks per family
TASK_PAIRS = {
    "halfcheetah-vel": ({"velocity": 0.5}, {"velocity": 1.7}),
    "halfcheetah-dir": ({"direction": 1.0}, {"direction": -1.0}),
    "ant-vel": ({"velocity": 0.3}, {"velocity": 2.5}),
    "ant-dir": ({"direction": -1.0}, {"direction": 1.0}),
    "ant-goal": ({"goal": [1.0, -2.0]}, {"goal": [-2.5, 0.5]}),
}


def _check_env_strict(env: gymnasium.Env, **kwargs) -> None:
    """Run check_env, turning every warning except the expected ones into an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for pattern in _EXPECTED_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
        check_env(env, **kwargs)


def _actions(env: gymnasium.Env, n: int, seed: int) -> np.ndarray:
    """``n`` random float32 actions in [-1, 1] (both robots' action box)."""
    dim = env.action_space.shape[0]
    return np.random.default_rng(seed).uniform(-1.0, 1.0, (n, dim)).astype(np.float32)


def _expected_task_term(task: dict, x_velocity: float, xy: np.ndarray) -> float:
    """The task term written out: -|v - v*|, d·v or -‖xy - goal‖."""
    if "velocity" in task:
        return -abs(x_velocity - task["velocity"])
    if "direction" in task:
        return task["direction"] * x_velocity
    return -float(np.hypot(*(xy - np.asarray(task["goal"]))))


# ---------------------------------------------------------------------- env checker / make
@pytest.mark.parametrize("family", FAMILIES)
def test_check_env_direct(family: str) -> None:
    _check_env_strict(make_locomotion_env(family))


def test_check_env_with_fixed_task() -> None:
    _check_env_strict(AntGoalEnv(task={"goal": [1.0, 2.0]}))


@pytest.mark.parametrize("family", FAMILIES)
def test_make_and_check_env(family: str) -> None:
    env_id = envs.LOCOMOTION_IDS[family]
    env = gymnasium.make(env_id)
    assert isinstance(env.unwrapped, FAMILY_ENVS[family])
    assert env.spec is not None and env.spec.max_episode_steps == 200
    # the MuJoCo renderers need an OpenGL context, which CI does not have
    _check_env_strict(env, skip_render_check=True)
    _check_env_strict(env.unwrapped, skip_render_check=True)
    short = gymnasium.make(env_id, max_episode_steps=100)
    assert short.spec is not None and short.spec.max_episode_steps == 100


def test_make_time_limit_truncates() -> None:
    env = gymnasium.make(envs.HALFCHEETAH_VEL_ID, max_episode_steps=100)
    env.reset(seed=0)
    flags = [env.step(np.zeros(6, dtype=np.float32))[2:4] for _ in range(100)]
    assert flags[-1] == (False, True)
    assert all(f == (False, False) for f in flags[:-1])


def test_make_passes_task() -> None:
    env = gymnasium.make(envs.ANT_DIR_ID, task={"direction": -1.0})
    _, info = env.reset(seed=0)
    assert info["task"] == {"direction": -1.0}


def test_registration_is_idempotent() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        importlib.reload(envs)
        envs.register_envs()
    assert gymnasium.spec(envs.ANT_GOAL_ID).entry_point == "envs.locomotion:AntGoalEnv"
    assert gymnasium.spec(envs.HALFCHEETAH_DIR_ID).max_episode_steps == 200


# ---------------------------------------------------------------------- reward formulas
@pytest.mark.parametrize("family", ["halfcheetah-vel", "halfcheetah-dir"])
def test_halfcheetah_reward_formula(family: str) -> None:
    for task in TASK_PAIRS[family]:
        env = make_locomotion_env(family, task)
        env.reset(seed=1)
        for action in _actions(env, 6, seed=2):
            x_before = float(env.data.qpos[0])
            _, reward, terminated, truncated, info = env.step(action)
            x_after = float(env.data.qpos[0])
            v = (x_after - x_before) / env.dt
            task_term = _expected_task_term(task, v, np.array([x_after, 0.0]))
            ctrl = 0.05 * float(np.sum(np.square(action.astype(np.float64))))
            assert reward == pytest.approx(task_term - ctrl, rel=1e-6, abs=1e-9)
            assert info["reward_task"] == pytest.approx(task_term, rel=1e-9, abs=1e-12)
            assert info["reward_ctrl"] == pytest.approx(-ctrl, rel=1e-6)
            assert info["reward_task"] + info["reward_ctrl"] == pytest.approx(reward)
            assert info["x_velocity"] == pytest.approx(v)
            assert info["x_position"] == x_after
            assert info["task"] == task
            assert (terminated, truncated) == (False, False)


def _check_ant_step(env: AntTaskEnv, task: dict, action: np.ndarray) -> float:
    """Step ``env`` once, check reward/info/terminated; return the contact cost."""
    torso = env.data.body("torso")
    xy_before = torso.xpos[:2].copy()
    _, reward, terminated, truncated, info = env.step(action)
    xy_after = torso.xpos[:2].copy()
    v = (xy_after[0] - xy_before[0]) / env.dt
    z = env.data.qpos[2]
    healthy = bool(np.all(np.isfinite(env.data.qpos)) and 0.2 <= z <= 1.0)
    task_term = _expected_task_term(task, v, xy_after)
    ctrl = 0.5 * float(np.sum(np.square(action.astype(np.float64))))
    contact = 5e-4 * float(np.sum(np.square(np.clip(env.data.cfrc_ext[1:], -1.0, 1.0))))
    expected = task_term + (1.0 if healthy else 0.0) - ctrl - contact
    assert reward == pytest.approx(expected, rel=1e-6, abs=1e-9)
    assert info["reward_task"] == pytest.approx(task_term, rel=1e-9, abs=1e-12)
    assert info["reward_ctrl"] == pytest.approx(-ctrl, rel=1e-6)
    assert info["reward_contact"] == pytest.approx(-contact, rel=1e-9, abs=1e-15)
    assert info["reward_survive"] == (1.0 if healthy else 0.0)
    terms = ("reward_task", "reward_survive", "reward_ctrl", "reward_contact")
    assert sum(info[k] for k in terms) == pytest.approx(reward)
    assert info["x_velocity"] == pytest.approx(v)
    assert info["x_position"] == env.data.qpos[0] and info["y_position"] == env.data.qpos[1]
    assert (terminated, truncated) == (not healthy, False)
    return contact


@pytest.mark.parametrize("family", ANT_FAMILIES)
def test_ant_reward_formula(family: str) -> None:
    contacts = []
    for i, task in enumerate(TASK_PAIRS[family]):
        env = make_locomotion_env(family, task)
        env.reset(seed=10 + i)
        contacts += [_check_ant_step(env, task, a) for a in _actions(env, 8, seed=i)]
    assert any(c > 0 for c in contacts), "no contact cost in the recorded steps"
    # an unhealthy torso (too high): no survive bonus, and the episode terminates
    qpos, qvel = env.data.qpos.copy(), env.data.qvel.copy()
    qpos[2] = 1.5
    env.set_state(qpos, qvel)
    _check_ant_step(env, task, np.zeros(8, dtype=np.float32))
    assert env.step(np.zeros(8, dtype=np.float32))[2]


# ---------------------------------------------------------------------- task changes reward
@pytest.mark.parametrize("family", FAMILIES)
def test_task_changes_only_the_reward(family: str) -> None:
    env_a, env_b = (make_locomotion_env(family, task) for task in TASK_PAIRS[family])
    obs_a, _ = env_a.reset(seed=5)
    obs_b, _ = env_b.reset(seed=5)
    np.testing.assert_array_equal(obs_a, obs_b)
    for action in _actions(env_a, 5, seed=6):
        obs_a, rew_a, term_a, _, _ = env_a.step(action)
        obs_b, rew_b, term_b, _, _ = env_b.step(action)
        np.testing.assert_array_equal(obs_a, obs_b)
        np.testing.assert_array_equal(env_a.data.qpos, env_b.data.qpos)
        np.testing.assert_array_equal(env_a.data.qvel, env_b.data.qvel)
        assert term_a == term_b
        assert rew_a != rew_b


@pytest.mark.parametrize("family", ["halfcheetah-dir", "ant-goal"])
def test_initial_state_does_not_depend_on_task_choice(family: str) -> None:
    fixed = make_locomotion_env(family, TASK_PAIRS[family][0])
    drawn = make_locomotion_env(family)
    np.testing.assert_array_equal(fixed.reset(seed=4)[0], drawn.reset(seed=4)[0])


# ---------------------------------------------------------------------- task interface
@pytest.mark.parametrize(
    ("family", "low", "high"),
    [("halfcheetah-vel", 0.0, 2.0), ("ant-vel", 0.0, 3.0), ("ant-goal", -3.0, 3.0)],
)
def test_sample_tasks_ranges_and_seeding(family: str, low: float, high: float) -> None:
    env = make_locomotion_env(family)
    env.reset(seed=7)
    tasks = env.sample_tasks(50)
    env.reset(seed=7)
    again = env.sample_tasks(50)
    env.reset(seed=8)
    other = env.sample_tasks(50)
    key = "goal" if family == "ant-goal" else "velocity"
    values = np.array([t[key] for t in tasks])
    np.testing.assert_array_equal(values, np.array([t[key] for t in again]))
    assert not np.array_equal(values, np.array([t[key] for t in other]))
    assert values.shape == ((50, 2) if key == "goal" else (50,))
    assert np.all((values >= low) & (values <= high))
    assert env.sample_tasks(0) == []


@pytest.mark.parametrize("family", ["halfcheetah-dir", "ant-dir"])
def test_sample_directions(family: str) -> None:
    env = make_locomotion_env(family)
    env.reset(seed=7)
    directions = [t["direction"] for t in env.sample_tasks(50)]
    env.reset(seed=7)
    assert directions == [t["direction"] for t in env.sample_tasks(50)]
    assert set(directions) == {-1.0, 1.0}


def test_sample_tasks_rejects_bad_n() -> None:
    env = HalfCheetahVelEnv()
    for n in (-1, 2.5, True):
        with pytest.raises(ValueError, match="n must be"):
            env.sample_tasks(n)


def test_fixed_task_kept_and_drawn_task_changes() -> None:
    env = HalfCheetahVelEnv(task={"velocity": 1.25})
    assert env.task == {"velocity": 1.25}
    for seed in (0, 1, None):
        assert env.reset(seed=seed)[1]["task"] == {"velocity": 1.25}
    drawn = HalfCheetahVelEnv()
    assert drawn.task is None
    first = drawn.reset(seed=0)[1]["task"]
    assert drawn.reset()[1]["task"] != first
    assert drawn.reset(seed=0)[1]["task"] == first
    drawn.reset_task({"velocity": 0.1})
    assert drawn.reset()[1]["task"] == {"velocity": 0.1} == drawn.task


def test_reset_options_task_fixes_the_task_and_keeps_the_initial_state() -> None:
    env, drawn = HalfCheetahVelEnv(), HalfCheetahVelEnv()
    obs, info = env.reset(seed=3, options={"task": {"velocity": 0.7}})
    assert info["task"] == {"velocity": 0.7} == env.reset()[1]["task"]
    np.testing.assert_array_equal(obs, drawn.reset(seed=3)[0])


def test_task_property_is_a_copy() -> None:
    env = AntGoalEnv(task={"goal": [1.0, 2.0]})
    env.task["goal"][0] = 99.0
    np.testing.assert_array_equal(env.task["goal"], [1.0, 2.0])


@pytest.mark.parametrize(
    ("family", "task", "named"),
    [
        ("halfcheetah-vel", {"velocity": "fast"}, "fast"),
        ("halfcheetah-dir", {"direction": 0.5}, "0.5"),
        ("ant-dir", {"direction": 0.5}, "0.5"),
        ("ant-vel", {"goal": [0.0, 1.0]}, "velocity"),
        ("ant-goal", {"goal": [1.0, 2.0, 3.0]}, r"\[1.0, 2.0, 3.0\]"),
        ("ant-goal", {}, "goal"),
    ],
)
def test_bad_tasks_rejected(family: str, task: dict, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        make_locomotion_env(family, task)


def test_bad_reset_task_keeps_the_old_task() -> None:
    env = HalfCheetahVelEnv(task={"velocity": 1.0})
    with pytest.raises(ValueError, match="fast"):
        env.reset_task({"velocity": "fast"})
    assert env.task == {"velocity": 1.0}


def test_wrong_or_unknown_family() -> None:
    with pytest.raises(ValueError, match="ant-vel"):
        HalfCheetahTaskEnv("ant-vel")
    with pytest.raises(ValueError, match="halfcheetah-dir"):
        AntTaskEnv("halfcheetah-dir")
    with pytest.raises(ValueError, match="valid choices"):
        make_locomotion_env("hopper-vel")


def test_step_without_task_needs_reset() -> None:
    env = AntVelEnv()
    qpos = env.data.qpos.copy()
    with pytest.raises(ResetNeeded):
        env.step(np.zeros(8, dtype=np.float32))
    np.testing.assert_array_equal(env.data.qpos, qpos)


# ---------------------------------------------------------------------- observations
def test_ant_goal_observes_xy() -> None:
    goal, vel = AntGoalEnv(), AntVelEnv()
    obs_goal, _ = goal.reset(seed=0)
    obs_vel, _ = vel.reset(seed=0)
    assert goal.observation_space.shape[0] == vel.observation_space.shape[0] + 2
    assert obs_goal.shape == (obs_vel.shape[0] + 2,)
    np.testing.assert_array_equal(obs_goal[:2], goal.data.qpos[:2])
    np.testing.assert_array_equal(obs_goal[2:], obs_vel)


def test_pickle_round_trip() -> None:
    env = AntGoalEnv(task={"goal": [0.5, -1.0]})
    copy = pickle.loads(pickle.dumps(env))
    assert type(copy) is AntGoalEnv and copy.family == "ant-goal"
    np.testing.assert_array_equal(copy.task["goal"], [0.5, -1.0])
    base = pickle.loads(pickle.dumps(HalfCheetahTaskEnv("halfcheetah-dir")))
    assert base.family == "halfcheetah-dir" and base.task is None
