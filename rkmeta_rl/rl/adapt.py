"""Fast adaptation: plain REINFORCE gradient steps of size α from the meta-parameters."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from rkmeta_rl.rk import Params, repeat_params
from rkmeta_rl.rl.episodes import Episodes, add_advantages
from rkmeta_rl.rl.losses import reinforce_loss
from rkmeta_rl.rl.policy import GaussianMLPPolicy
from rkmeta_rl.rl.sampler import LocalSampler, Sampler
from rkmeta_rl.rl.streams import StreamKey


def reinforce_step(
    policy: GaussianMLPPolicy, params: Params, episodes: Episodes,
    alpha: float | dict[str, float]
) -> Params:
    """θ' = θ - α ∇L(θ) per task (Algorithm 1 line 7), L the REINFORCE loss. No graph.
    ``alpha``: one step, or one per parameter (a tableau per parameter group)."""
    base = {n: v.detach().requires_grad_() for n, v in params.items()}
    grads = torch.autograd.grad(reinforce_loss(policy, base, episodes), list(base.values()))
    step = alpha if isinstance(alpha, dict) else dict.fromkeys(base, alpha)
    return {n: v.detach() - step[n] * g for (n, v), g in zip(base.items(), grads, strict=True)}


def adapt_to_tasks(
    policy: GaussianMLPPolicy,
    family,
    tasks: list[dict],
    alpha: float | dict[str, float] | Sequence[float | dict[str, float]],
    steps: int,
    episodes_per_task: int,
    seed: int,
    gamma: float = 0.99,
    gae_lambda: float = 1.0,
    on_step: Callable[[int, Tensor, Params], None] | None = None,
    sampler: Sampler | None = None,
    on_episodes: Callable[[int, Episodes], None] | None = None,
) -> tuple[Params, list[Tensor]]:
    """Adapt to each task with ``steps`` gradient steps on fresh episodes.

    ``alpha`` is one step size for every step, or one per step (``steps`` of them); a step
    size is a number, or one per parameter name (a tableau per parameter group).
    Returns the adapted per-task parameters and the per-task mean returns (T,) measured
    before the first step and after each step (``steps + 1`` entries). ``on_step(k,
    returns, params)`` is called as each is measured, with the parameters after k steps.
    Episodes come from ``sampler`` (default: a :class:`LocalSampler` of ``family``), step
    k's from the streams of ``StreamKey(seed, 0, k)`` (``rkmeta_rl/rl/streams.py``).
    ``on_episodes(k, episodes)`` sees each step's episodes (their success, where the env
    reports it).
    """
    alphas = [alpha] * steps if isinstance(alpha, (int, float, dict)) else list(alpha)
    if len(alphas) != steps:
        raise ValueError(f"{len(alphas)} step sizes given for {steps} steps")
    sample = sampler if sampler is not None else LocalSampler(family)
    params = repeat_params({n: v.detach() for n, v in policy.params().items()}, len(tasks))
    returns = []
    for step in range(steps + 1):
        episodes = sample(policy, params, tasks, episodes_per_task, StreamKey(seed, 0, step))
        returns.append(episodes.task_returns())
        if on_episodes is not None:
            on_episodes(step, episodes)
        if on_step is not None:
            on_step(step, returns[-1], params)
        if step < steps:
            params = reinforce_step(policy, params, add_advantages(episodes, gamma, gae_lambda),
                                    alphas[step])
    return params, returns
