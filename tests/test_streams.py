"""Per-episode random streams (rkmeta_rl/rl/streams.py): an episode depends only on (seed,
iteration, stage, task index, episode index), so any split of whole tasks samples bitwise
the same episodes as one batch, for nav2d, a MuJoCo family and a Gymnasium env."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from envs.nav2d import BatchedNav2D
from rkmeta_rl.rk import repeat_params
from rkmeta_rl.rl.episodes import Episodes, one_torch_thread, rollout
from rkmeta_rl.rl.policy import GaussianMLPPolicy, task_by_task
from rkmeta_rl.rl.sampler import LocalSampler, sample_share
from rkmeta_rl.rl.streams import StreamKey, episode_streams
from rkmeta_rl.rl.tasks import make_family

POINT = "examples.point_env:PointEnv"
KEY = StreamKey(seed=3, iteration=5, stage=1)


def test_an_episodes_streams_depend_only_on_its_coordinates():
    whole = episode_streams(KEY, range(4), 3, 7, 2)
    part = episode_streams(KEY, range(2, 4), 3, 7, 2)
    assert whole.noise.shape == (4, 3, 7, 2) and whole.noise.dtype == torch.float32
    assert torch.equal(whole.noise[2:], part.noise)
    assert whole.reset_seeds[6:] == part.reset_seeds
    assert len(set(whole.reset_seeds)) == 12  # every episode its own seed
    assert all(0 <= s < 2**32 for s in whole.reset_seeds)
    for other in (StreamKey(4, 5, 1), StreamKey(3, 6, 1), StreamKey(3, 5, 2)):
        moved = episode_streams(other, range(4), 3, 7, 2)
        assert not torch.equal(moved.noise, whole.noise)
        assert moved.reset_seeds != whole.reset_seeds
    # the episode index counts: episode 1 is not episode 0 of another draw
    assert not torch.equal(whole.noise[:, 0], whole.noise[:, 1])
    quiet = episode_streams(KEY, range(4), 3, 7, 2, noise=False)
    assert quiet.noise is None and quiet.reset_seeds == whole.reset_seeds


@pytest.mark.parametrize("rows, outputs", [(3, 6), (5, 6), (20, 8), (1, 2)])
def test_the_sampling_forward_does_not_depend_on_the_batch(rows, outputs):
    """What lets a call be split by whole tasks: task_by_task's actions for a task, on one
    thread as rollout() runs it, are bitwise the same alone and in any group of tasks,
    whatever the thread count outside (a batched baddbmm is not always: few rows with 6
    outputs differed in the last bits, and so did 2 threads against 1)."""
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(17, outputs, hidden=(100, 100))
    params = {n: v.detach() + 0.01 * torch.randn(6, *v.shape)
              for n, v in policy.params().items()}
    obs = torch.randn(6, rows, 17)
    threads = torch.get_num_threads()
    try:
        with one_torch_thread():
            whole = task_by_task(policy, params)(obs)[0]
            with torch.no_grad():  # the policy's own arithmetic, one task at a time
                for t in range(6):
                    alone = policy({n: v[t] for n, v in params.items()}, obs[t])[0]
                    assert torch.equal(whole[t], alone)
        for n_threads in (1, 2):
            torch.set_num_threads(n_threads)  # what the trainer runs with, outside sampling
            for part in (slice(0, 1), slice(1, 4), slice(3, 6), slice(5, 6)):
                sub = {n: v[part] for n, v in params.items()}
                with one_torch_thread():  # as rollout() samples
                    assert torch.equal(task_by_task(policy, sub)(obs[part])[0], whole[part])
    finally:
        torch.set_num_threads(threads)


def _assert_same(a: Episodes, b: Episodes) -> None:
    for name in ("obs", "actions", "rewards", "mask"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def _split_sample(family, policy, params, tasks, episodes, key, cuts):
    """The episodes of ``tasks`` sampled share by share (cut at ``cuts``), concatenated."""
    bounds = [0, *cuts, len(tasks)]
    parts = [sample_share(family, policy, {n: v[a:b] for n, v in params.items()},
                          tasks[a:b], episodes, key, first_task=a)
             for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    return Episodes.cat(parts)


@pytest.mark.parametrize("env, dynamics", [("nav2d", "gymnasium"),
                                           ("halfcheetah-vel", "maml"),
                                           (POINT, "gymnasium")])
def test_any_split_of_whole_tasks_samples_the_same_episodes(env, dynamics):
    family = make_family(env, max_episode_steps=12, dynamics=dynamics)
    family.seed(1)
    tasks = family.sample_tasks(4)
    torch.manual_seed(1)
    policy = GaussianMLPPolicy(family.obs_dim, family.act_dim, hidden=(100, 100))
    params = {n: v.detach() + 0.05 * torch.randn(4, *v.shape)
              for n, v in policy.params().items()}
    whole = LocalSampler(family)(policy, params, tasks, 3, KEY)
    assert whole.obs.shape[:3] == (4, 3, 12)
    for cuts in ([1], [1, 3], [2, 3]):
        _assert_same(_split_sample(family, policy, params, tasks, 3, KEY, cuts), whole)
    other = LocalSampler(family)(policy, params, tasks, 3, StreamKey(3, 5, 0))
    assert not torch.equal(other.actions, whole.actions)


def test_steps_after_an_episode_ends_hold_zeros_whatever_the_batch():
    """A task whose episodes end at once (goal at the start, mean actions) next to one
    that runs to the horizon: alone, its rollout stops early; in the batch it goes on.
    Both give the same rows: zeros after the end."""
    family = make_family("nav2d", max_episode_steps=6)
    tasks = [{"goal": np.array([0.005, 0.005])}, {"goal": np.array([0.4, -0.4])}]
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(2, 2, hidden=(8,))
    params = repeat_params({n: v.detach() for n, v in policy.params().items()}, 2)
    streams = episode_streams(KEY, range(2), 2, 6, 2, noise=False)
    batch = rollout(policy, params, family.batched_env(tasks, 2, streams.reset_seeds),
                    family.action_low, family.action_high, None)
    alone = rollout(policy, {n: v[:1] for n, v in params.items()},
                    family.batched_env(tasks[:1], 2, streams.reset_seeds[:2]),
                    family.action_low, family.action_high, None)
    assert batch.mask[0].sum() == 2 and batch.mask[1].sum() == 12  # 1 step; 6 steps
    _assert_same(alone, Episodes(*(getattr(batch, k)[:1]
                                   for k in ("obs", "actions", "rewards", "mask"))))
    assert not batch.obs[0, :, 1:].any() and not batch.actions[0, :, 1:].any()


def test_batched_envs_take_one_seed_per_row():
    BatchedNav2D(torch.zeros(2, 2), 3, seeds=range(6))
    with pytest.raises(ValueError, match="6 reset seeds are needed.*got 5"):
        BatchedNav2D(torch.zeros(2, 2), 3, seeds=range(5))
    family = make_family("halfcheetah-vel", max_episode_steps=3)
    with pytest.raises(ValueError, match="2 reset seeds"):
        family.batched_env([{"velocity": 1.0}], 2, [1])
