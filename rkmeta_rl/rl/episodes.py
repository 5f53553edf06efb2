"""Sampling a meta-batch of episodes and turning them into advantages.

Shapes: T tasks, E episodes per task, H steps (the horizon), d observation size,
a action size. One policy forward per time step evaluates every task's own
parameters at once. Under MAML's sampling (``--dynamics maml``) an episode that ends
early restarts in its row, so a row of H steps may hold several episodes (segments,
:class:`Episodes`); returns, baselines and advantages are computed per segment, and the
per-episode metrics (:meth:`Episodes.task_returns`) use each row's first episode.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

from rkmeta_rl.rk import Params
from rkmeta_rl.rl.baseline import (
    baseline_features,
    discounted_returns,
    fit_linear_baseline,
    gae,
    normalize_per_task,
)
from rkmeta_rl.rl.policy import GaussianMLPPolicy, sample_actions, task_by_task

# Rows (steps) per chunk of tasks in the closed-form curvature and the line search's
# evaluations: a chunk's activations (rows × width floats) stay in cache and are reused
# without fresh allocations; measured 1.3× faster per curvature product than all 80k rows
# at once at the paper's size (docs/method.md, "The exact curvature product").
CHUNK_ROWS = 10_000


@dataclass
class Episodes:
    """A meta-batch's steps, (task, row, step): row e of task t holds one episode, or
    (where the env restarts episodes that end early, MAML's sampling) several consecutive
    episodes, its *segments*, each starting where ``starts`` is 1. Returns, the baseline's
    time feature and advantages restart at every segment's start
    (:func:`add_advantages`)."""

    obs: Tensor  # (T, E, H, d)
    actions: Tensor  # (T, E, H, a), normalised units (the Gaussian's sample space)
    rewards: Tensor  # (T, E, H)
    mask: Tensor  # (T, E, H), 1.0 on valid steps
    advantages: Tensor | None = None  # (T, E, H), normalised per task
    starts: Tensor | None = None  # (T, E, H), 1.0 on each segment's first step; None: step 0
    # (T, E), 1.0 where the row's first episode reported success at some step (envs that
    # report info["success"], such as Meta-World's); None for envs that do not
    success: Tensor | None = None

    @property
    def num_tasks(self) -> int:
        return self.obs.shape[0]

    def _map(self, fn: Callable[[Tensor], Tensor]) -> Episodes:
        """The episodes with ``fn`` applied to every tensor (None stays None)."""
        return Episodes(*(None if x is None else fn(x) for x in (
            self.obs, self.actions, self.rewards, self.mask, self.advantages, self.starts,
            self.success)))

    def segment_starts(self) -> Tensor | None:
        """``starts`` (T, E, H) where some row holds more than one episode, else None (every
        row one episode from step 0: nothing to cut)."""
        if self.starts is None or not bool(self.starts[..., 1:].any()):
            return None
        return self.starts

    def flat(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """obs (T, N, d), actions (T, N, a), advantages (T, N), mask (T, N), N = E·H."""
        t = self.num_tasks
        adv = self.advantages if self.advantages is not None else torch.zeros_like(self.rewards)
        return (
            self.obs.reshape(t, -1, self.obs.shape[-1]),
            self.actions.reshape(t, -1, self.actions.shape[-1]),
            adv.reshape(t, -1),
            self.mask.reshape(t, -1),
        )

    def first_episodes(self, m: int) -> Episodes:
        """The first m rows of every task (a uniform subsample: rows are i.i.d.)."""
        return self._map(lambda x: x[:, :m])

    def tasks(self, part: slice) -> Episodes:
        """The episodes of the tasks in ``part`` (views)."""
        return self._map(lambda x: x[part])

    def task_chunks(self) -> list[slice]:
        """Consecutive groups of tasks of about :data:`CHUNK_ROWS` steps each."""
        size = max(1, CHUNK_ROWS // max(1, self.obs.shape[1] * self.obs.shape[2]))
        return [slice(a, min(a + size, self.num_tasks)) for a in range(0, self.num_tasks, size)]

    def to(self, device: str | torch.device) -> Episodes:
        """The episodes on ``device`` (themselves when they are there already)."""
        return self._map(lambda x: x.to(device))

    @staticmethod
    def cat(parts: list[Episodes]) -> Episodes:
        """The episodes of consecutive groups of tasks, as one batch (no advantages;
        ``starts`` if every part has them)."""
        tensors = [torch.cat([getattr(p, k) for p in parts])
                   for k in ("obs", "actions", "rewards", "mask")]
        has_starts = all(p.starts is not None for p in parts)
        starts = torch.cat([p.starts for p in parts]) if has_starts else None
        has_success = all(p.success is not None for p in parts)
        success = torch.cat([p.success for p in parts]) if has_success else None
        return Episodes(*tensors, starts=starts, success=success)

    def task_returns(self) -> Tensor:
        """Mean undiscounted episode return per task: (T,), over each row's first episode.

        Where rows hold several episodes (segments), only the one started at step 0 counts:
        E complete episodes per task (ended by termination or at the horizon), never cut
        short by the row's end, the same episodes as without restarts. Their mean is the
        unbiased estimate of the expected episode return that MAML's AverageReturn (the
        mean over its complete paths) also estimates. The later segments only add
        transitions to learn from: a mean over every segment would count those cut at the
        horizon as whole episodes (biased low), one over the complete segments would favour
        the restarted episodes short enough to end before the row does.
        """
        rewards = self.rewards * self.mask
        starts = self.segment_starts()
        if starts is not None:
            rewards = rewards * (starts.cumsum(-1) <= 1)  # (T, E, H): the first episode's
        return rewards.sum(-1).mean(-1)

    def mean_return(self) -> float:
        """The mean over tasks of :meth:`task_returns`."""
        return float(self.task_returns().mean())

    def task_success(self) -> Tensor | None:
        """Success rate per task (T,): the share of its rows whose first episode succeeded
        at some step (Meta-World's measure); None where the env reports no success."""
        return None if self.success is None else self.success.mean(-1)

    def success_rate(self) -> float | None:
        """The mean over tasks of :meth:`task_success`, or None."""
        rates = self.task_success()
        return None if rates is None else float(rates.mean())


def scale_action(u: Tensor, low: Tensor, high: Tensor) -> Tensor:
    """The env's action for the Gaussian's sample u: u = -1 ↦ low, u = 1 ↦ high (not clipped:
    the env clips, or charges, what lies outside)."""
    return low + (u + 1.0) * 0.5 * (high - low)


def rollout(
    policy: GaussianMLPPolicy,
    params: Params,
    env,
    action_low: Tensor,
    action_high: Tensor,
    noise: Tensor | None,
) -> Episodes:
    """Run one batched env (all tasks × episodes) to the end with per-task ``params``.

    ``env`` follows the batched-env protocol: ``reset() -> obs (T, E, d)``,
    ``alive: (T, E) bool`` (episodes not yet ended), ``step(action (T, E, a)) ->
    (obs, reward, terminated, truncated)``, ``max_episode_steps``. ``noise``: every
    row's standard normals (T, E, H, a), drawn up front (``rkmeta_rl/rl/streams.py``);
    None plays the mean action. The policy runs task by task on one torch thread
    (``policy.task_by_task``), and steps after a row's end hold zeros (obs, action,
    reward and mask), so a task's episodes do not depend on the other tasks in the batch.

    A row that reports its episode's end (terminated or truncated) and is still alive
    after the step has restarted (``envs.mujoco_batch.BatchedLocomotion`` under MAML's
    dynamics): the obs it returned is a new episode's first, so ``starts`` is 1 at the next
    step; step 0 starts every row. A row's step k uses noise[..., k, :] whichever of its
    episodes it belongs to.
    """
    with one_torch_thread():
        return _rollout(task_by_task(policy, params), env, action_low, action_high, noise)


def _rollout(policy: Callable[[Tensor], tuple[Tensor, Tensor]], env, action_low: Tensor,
             action_high: Tensor, noise: Tensor | None) -> Episodes:
    """:func:`rollout`'s loop, ``policy``: obs (T, E, d) -> mean, log_std."""
    obs = env.reset()
    horizon = env.max_episode_steps
    t_, e_, d_ = obs.shape
    a_ = action_low.numel()
    if noise is not None:
        noise = noise.to(obs.device)
    all_obs = obs.new_zeros(t_, e_, horizon, d_)
    all_act = obs.new_zeros(t_, e_, horizon, a_)
    all_rew = obs.new_zeros(t_, e_, horizon)
    all_mask = obs.new_zeros(t_, e_, horizon)
    all_starts = obs.new_zeros(t_, e_, horizon)
    starts = torch.ones_like(env.alive)  # (T, E) bool: the row's next step starts an episode
    first = torch.ones_like(env.alive)  # (T, E) bool: the row is in its first episode
    success = None  # (T, E) bool once the env reports success: the first episode's, ever
    with torch.no_grad():
        for step in range(horizon):
            alive = env.alive.clone()
            if not alive.any():
                break
            mean, log_std = policy(obs)  # (T, E, a), (T, 1, a)
            u = mean if noise is None else sample_actions(mean, log_std, noise[:, :, step])
            action = scale_action(u, action_low, action_high)
            next_obs, reward, terminated, truncated = env.step(action)
            keep = alive.unsqueeze(-1)
            all_obs[:, :, step] = torch.where(keep, obs, 0.0)
            all_act[:, :, step] = torch.where(keep, u, 0.0)
            all_rew[:, :, step] = torch.where(alive, reward, 0.0)
            all_mask[:, :, step] = alive.float()
            all_starts[:, :, step] = (alive & starts).float()
            if getattr(env, "success", None) is not None:
                now = env.success & alive & first
                success = now if success is None else success | now
            starts = (terminated | truncated) & env.alive  # restarted rows
            first = first & ~starts
            obs = next_obs
    return Episodes(all_obs, all_act, all_rew, all_mask, starts=all_starts,
                    success=None if success is None else success.float())


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Torch on one thread inside (sampling: the physics has its own threads, and a
    product's result may depend on the thread count), the previous count after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def add_advantages(episodes: Episodes, gamma: float = 0.99, lam: float = 1.0) -> Episodes:
    """Fit the linear baseline per task to discounted returns; GAE; normalise per task.
    Returns, the baseline's time feature and GAE restart at every segment's start."""
    starts = episodes.segment_starts()  # None: one episode per row (nothing to cut)
    returns = discounted_returns(episodes.rewards, episodes.mask, gamma, starts)
    feats = baseline_features(episodes.obs, episodes.mask, starts)
    coef = fit_linear_baseline(feats, returns)  # (T, F)
    values = torch.einsum("tehf,tf->teh", feats, coef)
    adv = gae(episodes.rewards, values, episodes.mask, gamma, lam, starts)
    episodes.advantages = normalize_per_task(adv, episodes.mask)
    return episodes
