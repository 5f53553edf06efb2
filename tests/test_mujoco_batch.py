"""BatchedLocomotion against Gymnasium's own MuJoCo envs, and its batch bookkeeping."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest
import torch
from gymnasium.envs.mujoco.ant_v5 import AntEnv
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
from helpers import os_thread_ids, threads_left_since

from envs.batch import EnvError
from envs.locomotion import make_locomotion_env
from envs.locomotion_dynamics import robot_dynamics
from envs.locomotion_tasks import get_spec
from envs.mujoco_batch import BatchedLocomotion
from rkmeta_rl.rk import repeat_params
from rkmeta_rl.rl.episodes import rollout
from rkmeta_rl.rl.policy import GaussianMLPPolicy

TASKS = {
    "halfcheetah-vel": [{"velocity": 0.5}, {"velocity": 1.7}],
    "halfcheetah-dir": [{"direction": 1.0}, {"direction": -1.0}],
    "ant-vel": [{"velocity": 0.3}, {"velocity": 2.5}],
    "ant-goal": [{"goal": (1.0, -2.0)}, {"goal": (-0.5, 0.7)}],
}


def seeds_of(seed: int, n: int) -> list[int]:
    """n reset seeds made from ``seed``."""
    return np.random.SeedSequence(seed).generate_state(n).tolist()


def make(family: str, episodes: int = 2, horizon: int = 20, seed: int = 0,
         nthread: int = 2, dynamics: str = "gymnasium") -> BatchedLocomotion:
    tasks = TASKS[family.removesuffix("-oracle")]
    seeds = seeds_of(seed, len(tasks) * episodes)
    return BatchedLocomotion(family, tasks, episodes, horizon, seeds, nthread, dynamics)


def gym_env(family: str) -> HalfCheetahEnv | AntEnv:
    """Gymnasium's env, configured here (not through the module under test)."""
    spec = get_spec(family)
    env_cls = HalfCheetahEnv if spec.robot == "halfcheetah" else AntEnv
    weight = robot_dynamics(spec.robot, "gymnasium").ctrl_cost_weight
    return env_cls(ctrl_cost_weight=weight,
                   exclude_current_positions_from_observation=spec.exclude_xy)


def task_term(task: dict, x_velocity: float, xy: np.ndarray) -> float:
    if "velocity" in task:
        return -abs(x_velocity - task["velocity"])
    if "direction" in task:
        return task["direction"] * x_velocity
    return -float(np.linalg.norm(xy - np.asarray(task["goal"])))


def gym_reward(env: HalfCheetahEnv | AntEnv, task: dict, info: dict) -> float:
    """The family's reward from Gymnasium's info and state after its step."""
    if isinstance(env, HalfCheetahEnv):
        xy = np.array([info["x_position"], 0.0])
        return task_term(task, info["x_velocity"], xy) + info["reward_ctrl"]
    xy = env.data.body(1).xpos[:2]
    return (task_term(task, info["x_velocity"], xy) + info["reward_survive"]
            + info["reward_ctrl"] + info["reward_contact"])


@pytest.mark.parametrize("family", list(TASKS))
def test_matches_gymnasium(family):
    steps = 15
    rng = np.random.default_rng(1)
    with make(family, horizon=steps) as batch:
        obs = batch.reset()
        qpos, qvel = batch.physics_state()
        cases = [(0, 1), (1, 0)]  # (task, episode)
        envs = []
        for t, e in cases:
            env = gym_env(family)
            env.reset(seed=0)
            env.set_state(qpos[t, e], qvel[t, e])
            np.testing.assert_allclose(obs[t, e].numpy(), env._get_obs(), rtol=1e-6, atol=1e-7)
            envs.append(env)
        for _ in range(steps):
            # beyond the control range on purpose: MuJoCo clamps, the cost does not
            action = rng.uniform(-1.3, 1.3, (2, 2, batch.action_dim)).astype(np.float32)
            obs, reward, terminated, _ = batch.step(torch.from_numpy(action))
            q, v = batch.physics_state()
            for (t, e), env in zip(cases, envs, strict=True):
                gobs, grew, gterm, _, info = env.step(action[t, e].astype(np.float64))
                if family.startswith("halfcheetah"):  # a stateful batch, warm start kept
                    np.testing.assert_array_equal(q[t, e], env.data.qpos)
                    np.testing.assert_array_equal(v[t, e], env.data.qvel)
                else:  # cold-started solver: agrees to its tolerance
                    np.testing.assert_allclose(q[t, e], env.data.qpos, rtol=1e-9, atol=1e-10)
                    np.testing.assert_allclose(v[t, e], env.data.qvel, rtol=1e-9, atol=1e-10)
                np.testing.assert_allclose(obs[t, e].numpy(), gobs, rtol=1e-6, atol=1e-6)
                expected = gym_reward(env, batch.tasks[t], info)
                assert reward[t, e].item() == pytest.approx(expected, rel=1e-6, abs=1e-6)
                assert bool(terminated[t, e]) == gterm
                if batch.tasks[t].get("direction") == 1.0:  # Gymnasium's own reward
                    assert reward[t, e].item() == pytest.approx(grew, rel=1e-6, abs=1e-6)
        for env in envs:
            env.close()


@pytest.mark.parametrize("oracle", [False, True])
@pytest.mark.parametrize("family", list(TASKS))
def test_matches_the_env_under_maml_dynamics(family, oracle):
    """The batch against envs.locomotion's env of the same family and dynamics (whose
    rewards tests/test_locomotion_dynamics.py checks against rllab's formulas)."""
    steps, name = 12, family + ("-oracle" if oracle else "")
    rng = np.random.default_rng(2)
    with make(name, horizon=steps, dynamics="maml") as batch:
        assert batch.dt == pytest.approx(0.01 if family.startswith("half") else 0.02)
        obs = batch.reset()
        qpos, qvel = batch.physics_state()
        cases = [(0, 1), (1, 0)]  # (task, episode)
        envs = []
        for t, e in cases:
            env = make_locomotion_env(name, batch.tasks[t], dynamics="maml")
            env.reset(seed=0)
            env.set_state(qpos[t, e], qvel[t, e])
            mujoco.mj_rnePostConstraint(env.model, env.data)  # as its reset: contacts
            np.testing.assert_allclose(obs[t, e].numpy(), env._get_obs(), rtol=1e-6, atol=1e-6)
            envs.append(env)
        for _ in range(steps):
            action = rng.uniform(-1.3, 1.3, (2, 2, batch.action_dim)).astype(np.float32)
            obs, reward, terminated, _ = batch.step(torch.from_numpy(action))
            q, v = batch.physics_state()
            for (t, e), env in zip(cases, envs, strict=True):
                gobs, grew, gterm, _, _ = env.step(action[t, e].astype(np.float64))
                if family.startswith("halfcheetah"):
                    np.testing.assert_array_equal(q[t, e], env.data.qpos)
                else:  # cold-started solver: agrees to its tolerance
                    np.testing.assert_allclose(q[t, e], env.data.qpos, rtol=1e-9, atol=1e-10)
                    np.testing.assert_allclose(v[t, e], env.data.qvel, rtol=1e-9, atol=1e-10)
                np.testing.assert_allclose(obs[t, e].numpy(), gobs, rtol=1e-6, atol=1e-6)
                assert reward[t, e].item() == pytest.approx(grew, rel=1e-6, abs=1e-6)
                assert bool(terminated[t, e]) == gterm


def test_maml_reset_draws_rllabs_initial_states():
    with make("ant-goal", seed=4, dynamics="maml") as batch:
        batch.reset()
        qpos, qvel = batch.physics_state()
        nq, nv = batch.model.nq, batch.model.nv
        init = batch.model.numeric("init_qpos").data  # rllab's Ant pose, not qpos0
        for row, seed in enumerate(seeds_of(4, 4)):  # each row from its own seed
            rng = np.random.default_rng(seed)
            np.testing.assert_array_equal(qpos.reshape(-1, nq)[row],
                                          init + 0.01 * rng.standard_normal(nq))
            np.testing.assert_array_equal(qvel.reshape(-1, nv)[row],
                                          0.1 * rng.standard_normal(nv))


@pytest.mark.parametrize("family", ["halfcheetah-vel", "ant-goal"])
@pytest.mark.parametrize("dynamics", ["gymnasium", "maml"])
def test_a_row_resets_as_the_env_does_with_its_seed(family, dynamics):
    """Row i starts where envs.locomotion's env starts after reset(seed=seeds[i])."""
    with make(family, dynamics=dynamics) as batch:
        obs = batch.reset().reshape(batch.num_envs, -1)
        for row in (0, 3):
            env = make_locomotion_env(family, batch.tasks[row // 2], dynamics=dynamics)
            first, _ = env.reset(seed=batch.seeds[row])
            np.testing.assert_allclose(obs[row].numpy(), first, rtol=1e-6, atol=1e-7)
            env.close()


def run(batch: BatchedLocomotion, steps: int, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    out = [batch.reset()]
    for _ in range(steps):
        action = torch.rand((*batch.batch_shape, batch.action_dim), generator=gen) * 2 - 1
        obs, reward, _, _ = batch.step(action)
        out += [obs, reward]
    return out


@pytest.mark.parametrize("family", ["halfcheetah-vel", "ant-vel"])
def test_seeds_and_threads(family):
    with make(family, seed=5) as a, make(family, seed=5, nthread=1) as b, \
            make(family, seed=6) as c:
        ra, rb, rc = run(a, 4), run(b, 4), run(c, 4)
        for x, y in zip(ra, rb, strict=True):  # same seed, 2 threads or 1: identical
            assert torch.equal(x, y)
        assert not torch.equal(ra[0], rc[0])
        obs0 = ra[0].reshape(a.num_envs, -1)  # every episode starts from its own noise
        assert len(torch.unique(obs0, dim=0)) == a.num_envs
        again = a.reset()  # a batch is a function of its tasks and seeds
        assert torch.equal(again, ra[0])


def test_truncation_freezes_episodes():
    with make("halfcheetah-vel", horizon=3) as batch:
        batch.reset()
        action = torch.full((2, 2, batch.action_dim), 0.5)
        for step in range(1, 4):
            assert batch.alive.all()
            obs, reward, terminated, truncated = batch.step(action)
            assert not terminated.any()
            assert truncated.all() == (step == 3)
        assert not batch.alive.any()
        state = batch.physics_state()
        obs2, reward2, terminated2, truncated2 = batch.step(action)
        assert torch.equal(obs2, obs)
        assert not reward2.any() and not terminated2.any() and not truncated2.any()
        for x, y in zip(state, batch.physics_state(), strict=True):
            np.testing.assert_array_equal(x, y)


def test_ant_termination_freezes_episode():
    with make("ant-vel", horizon=10) as batch:
        batch.reset()
        qpos, qvel = batch.physics_state()
        qpos[1, 0, 2] = 1.5  # torso above the healthy range: terminates at the first step
        batch.reset_to(qpos, qvel)
        action = torch.zeros(2, 2, batch.action_dim)
        obs, reward, terminated, truncated = batch.step(action)
        assert terminated[1, 0] and terminated.sum() == 1 and not truncated.any()
        assert batch.alive.sum() == 3 and not batch.alive[1, 0]
        frozen = batch.physics_state()[0][1, 0]
        for _ in range(3):
            obs2, reward2, terminated2, truncated2 = batch.step(action)
            assert torch.equal(obs2[1, 0], obs[1, 0])
            assert reward2[1, 0] == 0 and not terminated2[1, 0] and not truncated2[1, 0]
            assert (reward2.reshape(-1)[[0, 1, 3]] != 0).all()
        np.testing.assert_array_equal(batch.physics_state()[0][1, 0], frozen)


@pytest.mark.parametrize("dof", [0, 3])
def test_unstable_physics_and_bad_actions_raise(dof):
    with make("halfcheetah-dir") as batch:
        batch.reset()
        qpos, qvel = batch.physics_state()
        qvel[1, 0, dof] = 1e12  # MuJoCo finds it unstable and resets that simulation
        batch.reset_to(qpos, qvel)
        action = torch.zeros(2, 2, batch.action_dim)
        with pytest.raises(EnvError, match=r"unstable.* at step 1;.*\(task 1, episode 0\)"):
            batch.step(action)
        batch.reset()
        action[0, 1, 2] = float("nan")
        with pytest.raises(ValueError, match="task 0, episode 1"):
            batch.step(action)
        with pytest.raises(ValueError, match="shape"):
            batch.step(torch.zeros(2, 2, 3))
    with pytest.raises(RuntimeError, match="closed"):
        batch.step(torch.zeros(2, 2, batch.action_dim))
    with pytest.raises(ValueError, match="direction"):
        BatchedLocomotion("halfcheetah-dir", [{"direction": 0.3}], 1, 5, [0])


@pytest.mark.parametrize("family", ["halfcheetah-dir", "ant-goal"])
def test_inside_rollout(family):
    horizon = 12
    with make(family, episodes=3, horizon=horizon) as batch:
        policy = GaussianMLPPolicy(batch.obs_dim, batch.action_dim, hidden=(8,))
        params = repeat_params(policy.params(), batch.num_tasks)
        noise = torch.randn(2, 3, horizon, batch.action_dim)
        ep = rollout(policy, params, batch, batch.action_low, batch.action_high, noise)
    assert ep.obs.shape == (2, 3, horizon, batch.obs_dim)
    assert ep.actions.shape == (2, 3, horizon, batch.action_dim)
    assert ep.rewards.shape == ep.mask.shape == (2, 3, horizon)
    assert torch.isfinite(ep.obs).all() and torch.isfinite(ep.rewards).all()
    lengths = ep.mask.sum(-1)
    if family.startswith("halfcheetah"):
        assert (lengths == horizon).all()
    else:
        assert ((lengths >= 1) & (lengths <= horizon)).all()


@pytest.mark.parametrize("family", ["halfcheetah-vel", "ant-vel"])
def test_close_releases_threads(family):
    before = os_thread_ids()
    batch = make(family, nthread=2)
    run(batch, 2)
    batch.close()
    assert not threads_left_since(before)
    batch.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        batch.step(torch.zeros(2, 2, batch.action_dim))


def test_unstable_step_leaves_every_state_unchanged():
    with make("halfcheetah-vel") as batch:
        batch.reset()
        batch.step(torch.zeros(2, 2, batch.action_dim))
        qpos, qvel = batch.physics_state()
        qvel[0, 1, 4] = 1e12
        batch.reset_to(qpos, qvel)
        with pytest.raises(EnvError, match=r"at step 1;.*\(task 0, episode 1\)"):
            batch.step(torch.full((2, 2, batch.action_dim), 0.3))
        for x, y in zip((qpos, qvel), batch.physics_state(), strict=True):
            np.testing.assert_array_equal(x, y)
