"""Returns, the linear feature baseline of the MAML paper, and GAE advantages.

Shapes: T tasks, E episodes per task, H time steps; ``mask`` is 1 on valid steps
(an episode's steps up to and including its last one) and 0 on padding. A row may hold
several consecutive episodes (segments, where an env restarts episodes that end early):
``starts`` (same shape as ``mask``) is 1 on each one's first step, and the returns, the
baseline's time feature and GAE restart there. ``starts=None`` is one episode per row.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _continues(mask: Tensor, starts: Tensor | None, t: int) -> Tensor:
    """(...,) 1 where step t + 1 continues step t's episode: valid and no new start."""
    if t + 1 >= mask.shape[-1]:
        return torch.zeros_like(mask[..., 0])
    if starts is None:
        return mask[..., t + 1]
    return mask[..., t + 1] * (1.0 - starts[..., t + 1])


def discounted_returns(rewards: Tensor, mask: Tensor, gamma: float,
                       starts: Tensor | None = None) -> Tensor:
    """R_t = Σ_{t' ≥ t} γ^{t'-t} r_t' within each episode (segment). rewards, mask,
    starts: (..., H)."""
    out = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[..., 0])
    for t in range(rewards.shape[-1] - 1, -1, -1):
        if starts is not None:  # the next step starts another episode: nothing flows back
            running = running * _continues(mask, starts, t)
        running = (rewards[..., t] + gamma * running) * mask[..., t]
        out[..., t] = running
    return out


def segment_steps(starts: Tensor) -> Tensor:
    """(..., H) float: each step's index within its episode (steps since the latest
    start at or before it; steps before a row's first start count from step 0)."""
    steps = torch.arange(starts.shape[-1], device=starts.device)
    last = torch.where(starts > 0, steps, 0).cummax(-1).values
    return (steps - last).to(starts.dtype)


def baseline_features(obs: Tensor, mask: Tensor, starts: Tensor | None = None) -> Tensor:
    """[s, s², t, t², t³, 1] with t = step / 100 (rllab's LinearFeatureBaseline), the step
    counted from its episode's (segment's) start.

    obs: (T, E, H, d), mask, starts: (T, E, H) -> (T, E, H, 2d + 4), zero on padding.
    """
    if starts is None:
        t = torch.arange(obs.shape[2], dtype=obs.dtype, device=obs.device).div(100.0)
        t = t.expand(obs.shape[:-1]).unsqueeze(-1)
    else:
        t = segment_steps(starts).to(obs.dtype).div(100.0).unsqueeze(-1)
    ones = torch.ones_like(t)
    feats = torch.cat([obs, obs.pow(2), t, t.pow(2), t.pow(3), ones], dim=-1)
    return feats * mask.unsqueeze(-1)


def fit_linear_baseline(
    features: Tensor, returns: Tensor, reg: float = 1e-5, max_tries: int = 8
) -> Tensor:
    """Per-task ridge regression of returns on features; returns coefficients (T, F).

    Solves (XᵀX + reg·I) w = Xᵀy in float64 with a Cholesky factorisation; if a task's
    system is not numerically positive definite (rank-deficient features: constant
    observations, one-step episodes) reg grows tenfold, as rllab does, instead of failing.
    features: (T, E, H, F), returns: (T, E, H), both zero on padding.
    """
    x = features.reshape(features.shape[0], -1, features.shape[-1]).double()
    y = returns.reshape(returns.shape[0], -1, 1).double()
    xtx, xty = x.transpose(1, 2) @ x, x.transpose(1, 2) @ y
    eye = torch.eye(xtx.shape[-1], dtype=xtx.dtype, device=xtx.device)
    coef = torch.zeros_like(xty[..., 0])
    todo = torch.ones(xtx.shape[0], dtype=torch.bool, device=xtx.device)
    for _ in range(max_tries):
        chol, info = torch.linalg.cholesky_ex(xtx[todo] + reg * eye)
        ok = info == 0
        if ok.any():
            sol = torch.cholesky_solve(xty[todo][ok], chol[ok]).squeeze(-1)
            ok_finite = torch.isfinite(sol).all(-1)
            idx = todo.nonzero().squeeze(-1)[ok][ok_finite]
            coef[idx] = sol[ok_finite]
            todo[idx] = False
        if not todo.any():
            break
        reg *= 10.0
    return coef.to(features.dtype)  # tasks still unsolved keep a zero baseline


def gae(
    rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float,
    starts: Tensor | None = None,
) -> Tensor:
    """Generalised advantage estimates; the value after an episode's (segment's) end
    is 0.

    rewards, values, mask, starts: (..., H). With lam = 1 this is R_t - V(s_t).
    """
    adv = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[..., 0])
    next_value = torch.zeros_like(rewards[..., 0])
    for t in range(rewards.shape[-1] - 1, -1, -1):
        m = mask[..., t]
        next_m = _continues(mask, starts, t)
        delta = rewards[..., t] + gamma * next_value * next_m - values[..., t]
        running = (delta + gamma * lam * running * next_m) * m
        adv[..., t] = running
        next_value = values[..., t]
    return adv


def normalize_per_task(adv: Tensor, mask: Tensor, eps: float = 1e-8) -> Tensor:
    """(A - mean) / std over each task's valid steps. adv, mask: (T, ...)."""
    dims = tuple(range(1, adv.dim()))
    n = mask.sum(dims, keepdim=True).clamp_min(1.0)
    mean = (adv * mask).sum(dims, keepdim=True) / n
    var = ((adv - mean).pow(2) * mask).sum(dims, keepdim=True) / n
    return (adv - mean) / (var.sqrt() + eps) * mask
