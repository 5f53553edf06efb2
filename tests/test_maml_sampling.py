"""MAML's sampling under ``--dynamics maml``: every (task, episode) row runs the horizon,
restarting an episode that ends early (rllab's sampler collects transitions, not episodes),
and returns, baselines and advantages restart with each episode (segment) of a row.

Expected values are written out here: each row's restarts drawn from its own seed's
generator, returns and the linear baseline per segment in plain Python loops and numpy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mujoco
import numpy as np
import pytest
import torch

from envs.locomotion import make_locomotion_env
from envs.locomotion_dynamics import robot_dynamics
from envs.mujoco_batch import BatchedLocomotion
from envs.mujoco_physics import ENGINES
from rkmeta_rl.rk import repeat_params
from rkmeta_rl.rl.episodes import Episodes, add_advantages, rollout
from rkmeta_rl.rl.policy import GaussianMLPPolicy
from rkmeta_rl.rl.sampler import LocalSampler, sample_share
from rkmeta_rl.rl.streams import StreamKey
from rkmeta_rl.rl.tasks import make_family

TASKS = [{"velocity": 0.3}, {"velocity": 2.5}]
LIFTED = (1, 0)  # (task, episode) whose torso starts above the healthy range


def seeds_of(seed: int, n: int) -> list[int]:
    return np.random.SeedSequence(seed).generate_state(n).tolist()


def ant_batch(dynamics: str, horizon: int = 12, episodes: int = 2, nthread: int = 2,
              seed: int = 0) -> BatchedLocomotion:
    return BatchedLocomotion("ant-vel", TASKS, episodes, horizon,
                             seeds_of(seed, len(TASKS) * episodes), nthread, dynamics)


class LiftedStart:
    """A batch whose reset() lifts row :data:`LIFTED`'s torso to z = 1.5, so that its first
    episode terminates at the first step; it records every step's flags."""

    def __init__(self, batch: BatchedLocomotion) -> None:
        self.batch = batch
        self.terminated: list[torch.Tensor] = []
        self.truncated: list[torch.Tensor] = []

    def reset(self) -> torch.Tensor:
        self.batch.reset()
        qpos, qvel = self.batch.physics_state()
        qpos[(*LIFTED, 2)] = 1.5
        return self.batch.reset_to(qpos, qvel)

    def step(self, action: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.batch.step(action)
        self.terminated.append(out[2].clone())
        self.truncated.append(out[3].clone())
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.batch, name)


def lifted_rollout(dynamics: str, horizon: int = 12) -> tuple[Episodes, LiftedStart]:
    with ant_batch(dynamics, horizon, episodes=3) as batch:
        env = LiftedStart(batch)
        torch.manual_seed(0)  # the policy's initial weights
        policy = GaussianMLPPolicy(batch.obs_dim, batch.action_dim, hidden=(8,))
        params = repeat_params(policy.params(), batch.num_tasks)
        noise = torch.randn(2, 3, horizon, batch.action_dim,
                            generator=torch.Generator().manual_seed(0))
        return rollout(policy, params, env, batch.action_low, batch.action_high, noise), env


def test_maml_rows_collect_the_horizon_restarting_episodes_that_end_early() -> None:
    horizon = 12
    ep, env = lifted_rollout("maml", horizon)
    assert (ep.mask.sum((1, 2)) == 3 * horizon).all()  # E·H transitions per task
    assert ep.mask.all()
    assert bool(env.terminated[0][LIFTED])  # its first episode ended at step 1
    assert ep.starts[(*LIFTED, 1)] == 1.0  # and its second starts at the next step
    gym, _ = lifted_rollout("gymnasium", horizon)  # Gymnasium's: the ended episode stays ended
    assert gym.mask[LIFTED].sum() == 1 and gym.mask.sum() == 6 * horizon - (horizon - 1)
    assert torch.equal(gym.starts[..., 1:], torch.zeros_like(gym.starts[..., 1:]))


def test_starts_mark_the_step_after_each_termination() -> None:
    ep, env = lifted_rollout("maml", 40)
    terminated = torch.stack(env.terminated, -1).float()  # (T, E, H)
    truncated = torch.stack(env.truncated, -1)
    assert truncated[..., :-1].sum() == 0 and truncated[..., -1].all()  # the horizon only
    assert (ep.starts[..., 0] == 1).all()
    assert torch.equal(ep.starts[..., 1:], terminated[..., :-1])


def test_a_restart_draws_the_rows_next_initial_state_from_its_seed() -> None:
    """Each row's episodes start from its seed's generator, draw after draw (MAML's
    initial-state distribution), whatever the other rows do; a restart's observation is
    the new state's, as the env's after its reset."""
    horizon, dyn = 200, robot_dynamics("ant", "maml")
    with ant_batch("maml", horizon, episodes=3, seed=0) as batch:
        nq, nv = batch.model.nq, batch.model.nv
        init = batch.model.numeric("init_qpos").data  # rllab's Ant pose
        rngs = [np.random.default_rng(s) for s in batch.seeds]
        batch.reset()
        for rng in rngs:  # the first episode's draws
            rng.standard_normal(nq), rng.standard_normal(nv)
        actions = np.random.default_rng(1).normal(0, 1.5, (horizon, 2, 3, batch.action_dim))
        restarts = np.zeros(batch.num_envs, dtype=int)
        for step, action in enumerate(actions, 1):
            obs, _, terminated, truncated = batch.step(torch.from_numpy(action).float())
            assert bool(batch.alive.all()) == (step < horizon)
            assert step == horizon or not truncated.any()
            qpos, qvel = (x.reshape(batch.num_envs, -1) for x in batch.physics_state())
            for row in np.flatnonzero(terminated.reshape(-1).numpy()):
                if step == horizon:
                    continue  # a row ending at the horizon does not restart
                restarts[row] += 1
                rng = rngs[row]
                np.testing.assert_array_equal(qpos[row], init + dyn.qpos_noise_scale
                                              * rng.standard_normal(nq))
                np.testing.assert_array_equal(qvel[row], dyn.qvel_noise_scale
                                              * rng.standard_normal(nv))
                task = divmod(int(row), 3)[0]
                env = make_locomotion_env("ant-vel", TASKS[task], dynamics="maml")
                env.reset(seed=0)
                env.set_state(qpos[row], qvel[row])
                mujoco.mj_rnePostConstraint(env.model, env.data)  # as its reset: contacts
                np.testing.assert_allclose(obs.reshape(batch.num_envs, -1)[row].numpy(),
                                           env._get_obs(), rtol=1e-6, atol=1e-6)
        assert restarts.sum() >= 2 and restarts.max() >= 2  # a row restarted twice


@pytest.mark.parametrize("robot", ["halfcheetah", "ant"])
def test_starting_some_rows_leaves_the_others(robot: str) -> None:
    """Physics.start(rows=...) loads those rows at time 0, cold, as a start of every row
    does, and leaves the other rows' states alone."""
    family = "halfcheetah-vel" if robot == "halfcheetah" else "ant-vel"
    env = make_locomotion_env(family, dynamics="maml")
    model, dyn = env.model, robot_dynamics(robot, "maml")
    rng = np.random.default_rng(0)
    qpos = env.init_qpos + 0.01 * rng.standard_normal((3, model.nq))
    qvel = 0.1 * rng.standard_normal((3, model.nv))
    engine = ENGINES[robot](model, 3, dyn.frame_skip, env.dt, 2, True)
    fresh = ENGINES[robot](model, 3, dyn.frame_skip, env.dt, 2, True)
    try:
        engine.start(qpos, qvel)
        for _ in range(3):
            engine.advance(slice(None), rng.uniform(-1, 1, (3, model.nu)))
        before = engine.state.copy()
        got = engine.start(qpos[[0]] + 0.02, qvel[[0]], np.array([1]))  # (1, nbody - 1, 6)
        want = fresh.start(np.repeat(qpos[[0]] + 0.02, 3, 0), np.repeat(qvel[[0]], 3, 0))
        assert got.shape == (1, model.nbody - 1, 6)
        np.testing.assert_array_equal(engine.state[1], fresh.state[1])
        np.testing.assert_array_equal(got[0], want[1])
        np.testing.assert_array_equal(engine.state[[0, 2]], before[[0, 2]])
    finally:
        engine.close()
        fresh.close()


def test_same_episodes_for_any_split_and_thread_count() -> None:
    """Restarts included, a task's rows do not depend on the batch they are sampled in."""
    family = make_family("ant-dir", dynamics="maml", max_episode_steps=200)
    torch.manual_seed(0)  # the policy's initial weights
    policy = GaussianMLPPolicy(family.obs_dim, family.act_dim, (8,))
    tasks = [{"direction": 1.0}, {"direction": -1.0}, {"direction": 1.0}]
    params = repeat_params(policy.params(), 3)
    key = StreamKey(0)
    whole = LocalSampler(family)(policy, params, tasks, 3, key)
    assert whole.segment_starts() is not None  # some row restarted
    assert whole.mask.all()
    parts = [sample_share(family, policy, {n: v[a:b] for n, v in params.items()}, tasks[a:b],
                          3, key, first_task=a) for a, b in ((0, 1), (1, 3))]
    family.nthread = 1
    alone = LocalSampler(family)(policy, params, tasks, 3, key)
    for other in (Episodes.cat(parts), alone):
        for name in ("obs", "actions", "rewards", "mask", "starts"):
            assert torch.equal(getattr(other, name), getattr(whole, name)), name


# ----------------------------------------------------------------------------------------
# advantages and returns of rows of several episodes
# ----------------------------------------------------------------------------------------

GAMMA = 0.9


def segmented_episodes(seed: int = 0) -> tuple[Episodes, list[list[list[tuple[int, int]]]]]:
    """(T=2, E=3, H=9) float64 episodes whose rows hold these segments (begin, length)."""
    segments = [[[(0, 9)], [(0, 4), (4, 5)], [(0, 2), (2, 3), (5, 4)]],
                [[(0, 6), (6, 3)], [(0, 9)], [(0, 1), (1, 8)]]]
    g = torch.Generator().manual_seed(seed)
    shape = (2, 3, 9)
    starts = torch.zeros(shape, dtype=torch.float64)
    for t, rows in enumerate(segments):
        for e, row in enumerate(rows):
            for begin, _ in row:
                starts[t, e, begin] = 1.0
    obs = torch.randn(*shape, 2, generator=g, dtype=torch.float64)
    rewards = torch.randn(shape, generator=g, dtype=torch.float64)
    actions = torch.randn(*shape, 1, generator=g, dtype=torch.float64)
    mask = torch.ones(shape, dtype=torch.float64)
    return Episodes(obs, actions, rewards, mask, starts=starts), segments


def test_advantages_restart_with_each_segment() -> None:
    """add_advantages (λ = 1) against returns, features and ridge regression per segment
    written out here: A = R - V, normalised per task."""
    ep, segments = segmented_episodes()
    got = add_advantages(ep, GAMMA, 1.0).advantages.numpy()
    r, o = ep.rewards.numpy(), ep.obs.numpy()
    for t, rows in enumerate(segments):
        feats, returns = [], []
        for e, row in enumerate(rows):
            for begin, length in row:
                for i in range(length):
                    s, k = begin + i, i / 100.0
                    feats.append([*o[t, e, s], *o[t, e, s] ** 2, k, k**2, k**3, 1.0])
                    returns.append(sum(GAMMA**j * r[t, e, s + j] for j in range(length - i)))
        x, y = np.array(feats), np.array(returns)
        w = np.linalg.solve(x.T @ x + 1e-5 * np.eye(x.shape[1]), x.T @ y)
        adv = y - x @ w
        want = (adv - adv.mean()) / (adv.std() + 1e-8)  # rows in (episode, step) order
        np.testing.assert_allclose(got[t].reshape(-1), want, rtol=1e-7, atol=1e-8)


def test_task_returns_are_the_mean_over_each_rows_first_episode() -> None:
    ep, segments = segmented_episodes(1)
    r = ep.rewards.numpy()
    want = [np.mean([r[t, e, :row[0][1]].sum() for e, row in enumerate(rows)])
            for t, rows in enumerate(segments)]
    np.testing.assert_allclose(ep.task_returns().numpy(), want, rtol=1e-12)
    assert ep.mean_return() == pytest.approx(np.mean(want))


def test_segments_travel_with_the_episodes() -> None:
    ep, _ = segmented_episodes(2)
    assert torch.equal(ep.tasks(slice(1, 2)).starts, ep.starts[1:2])
    assert torch.equal(ep.first_episodes(2).starts, ep.starts[:, :2])
    assert torch.equal(ep.to("cpu").starts, ep.starts)
    assert torch.equal(Episodes.cat([ep.tasks(slice(0, 1)), ep.tasks(slice(1, 2))]).starts,
                       ep.starts)
    plain = Episodes(ep.obs, ep.actions, ep.rewards, ep.mask)
    assert plain.segment_starts() is None and Episodes.cat([plain, plain]).starts is None


@pytest.mark.slow
def test_the_ray_sampler_gives_the_local_segments(tmp_path, monkeypatch) -> None:
    """--sampler ray: the workers run the same code on their tasks; the restarts (and the
    segment starts) come back bitwise those of the local sampler."""
    pytest.importorskip("ray")
    from rkmeta_rl.rl.ray_sampler import RaySampler

    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[1]))
    family = make_family("ant-dir", dynamics="maml", max_episode_steps=200)
    torch.manual_seed(0)  # the policy's initial weights
    policy = GaussianMLPPolicy(family.obs_dim, family.act_dim, (8,))
    tasks = [{"direction": 1.0}, {"direction": -1.0}, {"direction": 1.0}]
    params = repeat_params(policy.params(), 3)
    local = LocalSampler(family)(policy, params, tasks, 3, StreamKey(1))
    assert local.segment_starts() is not None
    sampler = RaySampler("ant-dir", 200, "maml", (8,), workers=2, run_dir=tmp_path)
    try:
        far = sampler(policy, params, tasks, 3, StreamKey(1))
    finally:
        sampler.close()
    for name in ("obs", "actions", "rewards", "mask", "starts"):
        assert torch.equal(getattr(far, name), getattr(local, name)), name
