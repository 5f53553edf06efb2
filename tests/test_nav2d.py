"""Tests for the 2D navigation task family (Gymnasium env and batched torch version)."""

from __future__ import annotations

import importlib
import warnings

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium.error import ResetNeeded
from gymnasium.utils.env_checker import check_env

import envs
from envs.nav2d import BatchedNav2D, Nav2DEnv

# check_env warnings that are expected by design: the spec mandates an unbounded observation
# Box, and directly constructed envs have no EnvSpec (so alternative render modes are untested).
_EXPECTED_WARNINGS = (
    r".*Box observation space (minimum|maximum) value is .*infinity",
    r".*Not able to test alternative render modes due to the environment not having a spec",
)


def _check_env_strict(env: gymnasium.Env) -> None:
    """Run check_env, turning every warning except the expected ones into an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for pattern in _EXPECTED_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
        check_env(env)


def _run_gym_episode(
    goal: np.ndarray, actions: np.ndarray, max_steps: int, goal_conditioned: bool = False
) -> list[tuple[np.ndarray, float, bool, bool]]:
    """Run Nav2DEnv on ``actions`` until the episode ends; return the step tuples."""
    env = Nav2DEnv(
        task={"goal": goal}, max_episode_steps=max_steps, goal_conditioned=goal_conditioned
    )
    env.reset(seed=0)
    out = []
    for action in actions:
        obs, reward, terminated, truncated, _ = env.step(action)
        out.append((obs, reward, terminated, truncated))
        if terminated or truncated:
            break
    return out


# ---------------------------------------------------------------------- env checker / make
@pytest.mark.parametrize("goal_conditioned", [False, True])
def test_check_env_direct(goal_conditioned: bool) -> None:
    _check_env_strict(Nav2DEnv(goal_conditioned=goal_conditioned))
    _check_env_strict(Nav2DEnv(task={"goal": [0.2, -0.3]}, goal_conditioned=goal_conditioned))


@pytest.mark.parametrize(
    ("env_id", "obs_dim"), [("rkmeta_rl/Nav2D-v0", 2), ("rkmeta_rl/Nav2DGoal-v0", 4)]
)
def test_make_and_check_env(env_id: str, obs_dim: int) -> None:
    env = gymnasium.make(env_id)
    assert env.unwrapped is env, "make() should not add wrappers (no TimeLimit, no checkers)"
    assert isinstance(env, Nav2DEnv)
    assert env.observation_space.shape == (obs_dim,)
    assert env.spec is not None and env.spec.max_episode_steps is None
    _check_env_strict(env)
    # The env's own horizon is what truncates.
    env.reset(seed=1)
    env.reset_task({"goal": np.array([0.45, 0.45])})
    env.reset()
    flags = [env.step(np.zeros(2, dtype=np.float32))[2:4] for _ in range(100)]
    assert flags[-1] == (False, True)
    assert all(f == (False, False) for f in flags[:-1])


def test_registration_is_idempotent() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        importlib.reload(envs)
        envs.register_envs()
    assert gymnasium.spec("rkmeta_rl/Nav2DGoal-v0").kwargs == {"goal_conditioned": True}
    assert gymnasium.spec("rkmeta_rl/Nav2D-v0").entry_point == "envs.nav2d:Nav2DEnv"


# ---------------------------------------------------------------------- task sampling
def test_sample_tasks_seeded() -> None:
    env = Nav2DEnv()
    env.reset(seed=123)
    first = env.sample_tasks(20)
    env.reset(seed=123)
    second = env.sample_tasks(20)
    env.reset(seed=124)
    third = env.sample_tasks(20)
    goals = np.stack([t["goal"] for t in first])
    assert goals.shape == (20, 2) and goals.dtype == np.float64
    np.testing.assert_array_equal(goals, np.stack([t["goal"] for t in second]))
    assert not np.allclose(goals, np.stack([t["goal"] for t in third]))
    assert np.all(np.abs(goals) <= 0.5)
    assert len({tuple(g) for g in goals}) == 20
    assert env.sample_tasks(0) == []


def test_reset_draws_goal_only_without_fixed_task() -> None:
    env = Nav2DEnv()
    _, info_a = env.reset(seed=5)
    _, info_b = env.reset(seed=5)
    _, info_c = env.reset()
    np.testing.assert_array_equal(info_a["goal"], info_b["goal"])
    assert not np.array_equal(info_a["goal"], info_c["goal"])
    assert np.all(np.abs(info_c["goal"]) <= 0.5)
    env.reset_task({"goal": [0.3, -0.1]})
    for seed in (None, 7):
        obs, info = env.reset(seed=seed)
        np.testing.assert_array_equal(info["goal"], [0.3, -0.1])
        np.testing.assert_array_equal(obs, np.zeros(2, dtype=np.float32))
    assert np.array_equal(env.get_task()["goal"], [0.3, -0.1])



def test_reset_options_task_fixes_the_goal_as_reset_task_does() -> None:
    env = Nav2DEnv()
    obs, info = env.reset(seed=5, options={"task": {"goal": [0.2, 0.4]}})
    np.testing.assert_array_equal(info["goal"], [0.2, 0.4])
    np.testing.assert_array_equal(env.reset()[1]["goal"], [0.2, 0.4])  # kept, as reset_task
    with pytest.raises(ValueError, match="goal"):
        env.reset(options={"task": {"goal": [1.0]}})


# ---------------------------------------------------------------------- dynamics
def test_reward_is_negative_distance_after_clipped_move() -> None:
    goal = np.array([0.4, -0.35])
    env = Nav2DEnv(task={"goal": goal})
    obs, info = env.reset(seed=0)
    assert obs.dtype == np.float32 and np.array_equal(obs, [0.0, 0.0])
    pos = np.zeros(2)
    for action in ([0.05, -0.02], [3.0, -7.0], [-0.25, 0.5], [0.1, -0.1]):
        obs, reward, terminated, truncated, info = env.step(np.array(action, dtype=np.float32))
        pos = pos + np.clip(action, -0.1, 0.1)
        expected = -np.hypot(pos[0] - goal[0], pos[1] - goal[1])
        assert obs.dtype == np.float32
        np.testing.assert_allclose(obs, pos, atol=1e-6)
        assert isinstance(reward, float)
        assert reward == pytest.approx(expected, abs=1e-6)
        assert info["distance"] == pytest.approx(-expected, abs=1e-6)
        np.testing.assert_array_equal(info["goal"], goal)
        assert (terminated, truncated) == (False, False)
    # A huge action moves exactly 0.1 per axis.
    before = obs.copy()
    obs, *_ = env.step(np.array([100.0, -100.0], dtype=np.float32))
    np.testing.assert_allclose(obs - before, [0.1, -0.1], atol=1e-6)


def test_termination_within_tolerance_on_both_axes() -> None:
    env = Nav2DEnv(task={"goal": [0.05, -0.03]})
    env.reset()
    obs, reward, terminated, truncated, _ = env.step(np.array([0.05, -0.03], dtype=np.float32))
    assert terminated is True and truncated is False
    assert reward == pytest.approx(0.0, abs=1e-7)
    # Within 0.01 on x but not on y: not terminated.
    env = Nav2DEnv(task={"goal": [0.05, -0.03]})
    env.reset()
    _, _, terminated, _, _ = env.step(np.array([0.05, -0.015], dtype=np.float32))
    assert terminated is False
    # Within 0.01 on both axes but not exactly at the goal.
    _, _, terminated, _, _ = env.step(np.array([0.005, -0.008], dtype=np.float32))
    assert terminated is True


def test_truncation_at_horizon() -> None:
    env = Nav2DEnv(task={"goal": [0.5, 0.5]}, max_episode_steps=7)
    env.reset()
    for step in range(1, 8):
        _, _, terminated, truncated, _ = env.step(np.array([-0.1, 0.0], dtype=np.float32))
        assert terminated is False
        assert truncated is (step == 7)


def test_goal_conditioned_matches_plain_env() -> None:
    goal = np.array([-0.27, 0.13])
    plain = Nav2DEnv(task={"goal": goal})
    cond = Nav2DEnv(task={"goal": goal}, goal_conditioned=True)
    obs_p, _ = plain.reset(seed=3)
    obs_c, _ = cond.reset(seed=3)
    assert obs_c.shape == (4,) and obs_c.dtype == np.float32
    np.testing.assert_array_equal(obs_c, np.concatenate([obs_p, goal.astype(np.float32)]))
    rng = np.random.default_rng(0)
    for _ in range(30):
        action = rng.uniform(-0.2, 0.2, size=2).astype(np.float32)
        out_p = plain.step(action)
        out_c = cond.step(action)
        np.testing.assert_array_equal(out_c[0], np.concatenate([out_p[0], goal.astype(np.float32)]))
        assert out_c[1:4] == out_p[1:4]
        assert out_c[4]["distance"] == out_p[4]["distance"]


# ---------------------------------------------------------------------- batched version
@pytest.mark.parametrize("goal_conditioned", [False, True])
def test_batched_matches_gymnasium(goal_conditioned: bool) -> None:
    num_tasks, episodes, horizon = 3, 4, 12
    goals64 = np.array([[0.05, -0.03], [0.12, 0.15], [-0.45, 0.4]])
    rng = np.random.default_rng(42)
    actions = rng.uniform(-0.3, 0.3, size=(horizon + 3, num_tasks, episodes, 2))
    actions[0, 0, :2] = [0.05, -0.03]  # two episodes of task 0 reach the goal at step 1
    actions[:2, 1, 0] = [0.06, 0.075]  # task 1, episode 0 reaches its goal at step 2
    actions = actions.astype(np.float32)
    batched = BatchedNav2D(
        torch.tensor(goals64, dtype=torch.float32),
        episodes,
        max_episode_steps=horizon,
        goal_conditioned=goal_conditioned,
    )
    obs0 = batched.reset()
    assert obs0.shape == (num_tasks, episodes, batched.obs_dim)
    assert batched.obs_dim == (4 if goal_conditioned else 2)
    steps = []
    for t in range(actions.shape[0]):
        alive_before = batched.alive.clone()
        obs, reward, terminated, truncated = batched.step(torch.from_numpy(actions[t]))
        steps.append((alive_before, obs, reward, terminated, truncated))
    n_terminated = 0
    for i in range(num_tasks):
        for j in range(episodes):
            ref = _run_gym_episode(goals64[i], actions[:, i, j], horizon, goal_conditioned)
            n_terminated += ref[-1][2]
            for t, (alive, obs, reward, term, trunc) in enumerate(steps):
                if t < len(ref):
                    assert alive[i, j]
                    ref_obs, ref_reward, ref_term, ref_trunc = ref[t]
                    np.testing.assert_allclose(obs[i, j].numpy(), ref_obs, atol=1e-6)
                    assert reward[i, j].item() == pytest.approx(ref_reward, abs=1e-6)
                    assert (term[i, j].item(), trunc[i, j].item()) == (ref_term, ref_trunc)
                else:  # ended episodes are frozen
                    assert not alive[i, j]
                    np.testing.assert_array_equal(obs[i, j].numpy(), ref[-1][0])
                    assert reward[i, j].item() == 0.0
                    assert not term[i, j] and not trunc[i, j]
    assert n_terminated == 3
    assert not batched.alive.any()


def test_batched_clip_and_reset() -> None:
    action = torch.tensor([[-5.0, 0.05], [0.2, -0.1]])
    clipped = BatchedNav2D.clip_action(action)
    assert clipped.dtype == torch.float32
    torch.testing.assert_close(clipped, torch.tensor([[-0.1, 0.05], [0.1, -0.1]]))
    env = BatchedNav2D(torch.tensor([[0.05, -0.03]]), episodes_per_task=2, max_episode_steps=3)
    env.step(torch.tensor([[[0.05, -0.03], [0.0, 0.0]]]))
    assert env.alive.tolist() == [[False, True]]
    obs = env.reset()
    assert env.alive.all() and env.step_count == 0
    torch.testing.assert_close(obs, torch.zeros(1, 2, 2))


# ---------------------------------------------------------------------- invalid inputs
@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_invalid_max_episode_steps(bad: object) -> None:
    with pytest.raises(ValueError, match=rf"max_episode_steps.*{bad!r}"):
        Nav2DEnv(max_episode_steps=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=rf"max_episode_steps.*{bad!r}"):
        BatchedNav2D(torch.zeros(1, 2), 1, max_episode_steps=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("task", "shown"),
    [
        ({"goal": [0.1, 0.2, 0.3]}, "0.3"),
        ({"goal": [[0.1, 0.2]]}, r"\[\[0.1, 0.2\]\]"),
        ({"goal": [np.nan, 0.0]}, "nan"),
        ({"goal": "ab"}, "'ab'"),
        ({"target": [0.1, 0.2]}, "target"),
    ],
)
def test_invalid_task(task: dict, shown: str) -> None:
    env = Nav2DEnv()
    with pytest.raises(ValueError, match=shown):
        env.reset_task(task)
    with pytest.raises(ValueError, match=shown):
        Nav2DEnv(task=task)


def test_invalid_actions_and_order() -> None:
    env = Nav2DEnv(task={"goal": [0.1, 0.1]})
    with pytest.raises(ResetNeeded):
        env.step(np.zeros(2, dtype=np.float32))
    env.reset()
    with pytest.raises(ValueError, match=r"0\.3"):
        env.step(np.array([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="inf"):
        env.step(np.array([np.inf, 0.0]))
    with pytest.raises(ValueError, match="-2"):
        env.sample_tasks(-2)
    batched = BatchedNav2D(torch.zeros(3, 2), episodes_per_task=4)
    with pytest.raises(ValueError, match=r"\(3, 2, 2\)"):
        batched.step(torch.zeros(3, 2, 2))
    with pytest.raises(ValueError, match=r"\(3,\)"):
        BatchedNav2D(torch.zeros(3), episodes_per_task=4)
    with pytest.raises(ValueError, match="episodes_per_task.*0"):
        BatchedNav2D(torch.zeros(3, 2), episodes_per_task=0)
