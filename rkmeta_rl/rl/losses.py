"""Per-stage RL losses on a stage's episodes, for per-task parameters (leading dim T).

Every loss averages over a task's valid steps. ``reinforce_loss`` sums over tasks so
that its gradient with respect to per-task parameters is each task's own gradient (the
inner step k_i, see ``rkmeta_rl.rk``); the surrogate and KL average over tasks (the
meta-objective).
"""

from __future__ import annotations

import torch
from torch import Tensor

from rkmeta_rl.rk import Params
from rkmeta_rl.rl.episodes import Episodes
from rkmeta_rl.rl.policy import GaussianMLPPolicy, gaussian_kl, gaussian_log_prob


def _task_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean over valid steps for each task: x, mask (T, N) -> (T,)."""
    return (x * mask).sum(-1) / mask.sum(-1).clamp_min(1.0)


def log_probs(policy: GaussianMLPPolicy, params: Params, episodes: Episodes) -> Tensor:
    obs, act, _, _ = episodes.flat()
    mean, log_std = policy(params, obs)
    return gaussian_log_prob(mean, log_std, act)  # (T, N)


def reinforce_loss(policy: GaussianMLPPolicy, params: Params, episodes: Episodes) -> Tensor:
    """Σ_tasks L_t, L_t = -mean_valid(log π(u|s) · A): the inner (adaptation) loss."""
    _, _, adv, mask = episodes.flat()
    return -_task_mean(log_probs(policy, params, episodes) * adv, mask).sum()


def surrogate_loss(
    policy: GaussianMLPPolicy, params: Params, episodes: Episodes, old_log_probs: Tensor
) -> Tensor:
    """mean_tasks -mean_valid(π/π_old · A): TRPO's importance-weighted surrogate."""
    _, _, adv, mask = episodes.flat()
    ratio = torch.exp(log_probs(policy, params, episodes) - old_log_probs)
    return -_task_mean(ratio * adv, mask).mean()


def mean_kl(
    policy: GaussianMLPPolicy,
    params: Params,
    episodes: Episodes,
    old_mean: Tensor,
    old_log_std: Tensor,
) -> Tensor:
    """mean_tasks mean_valid KL(π_old(·|s) || π_params(·|s))."""
    obs, _, _, mask = episodes.flat()
    mean, log_std = policy(params, obs)
    return _task_mean(gaussian_kl(old_mean, old_log_std, mean, log_std), mask).mean()
