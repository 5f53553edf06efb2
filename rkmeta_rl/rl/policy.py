"""Diagonal-Gaussian MLP policy evaluated with explicit parameters.

The policy never mutates its own weights during adaptation: every evaluation takes a
parameter dict ``params`` (name -> tensor). A dict whose tensors carry a leading task
dimension ``T`` evaluates a different policy per task in one batched call, e.g.
``params["w0"]: (T, obs_dim, hidden)`` with ``obs: (T, N, obs_dim)``.

Actions live in normalised units: the Gaussian is over ``u``; the environment receives
``action_low + (u + 1) / 2 * (action_high - action_low)`` (then clips to its box).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from rkmeta_rl.rk import Params


class GaussianMLPPolicy(nn.Module):
    """π_θ(u | s) = N(μ_θ(s), diag(exp(log_std)²)) with a ReLU MLP mean."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: Sequence[int] = (100, 100),
        init_std: float = 1.0,
    ) -> None:
        super().__init__()
        if not (math.isfinite(init_std) and init_std > 0):
            raise ValueError(f"init_std must be a finite number > 0, got {init_std}")
        if not hidden or any(int(h) != h or h <= 0 for h in hidden):
            raise ValueError(f"hidden sizes must be positive integers, got {list(hidden)}")
        self.obs_dim, self.act_dim, self.hidden = obs_dim, act_dim, tuple(int(h) for h in hidden)
        sizes = (obs_dim, *self.hidden, act_dim)
        self.n_layers = len(sizes) - 1
        for layer, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            bound = 1.0 / math.sqrt(fan_in)
            w = torch.empty(fan_in, fan_out).uniform_(-bound, bound)
            b = torch.empty(fan_out).uniform_(-bound, bound)
            if layer == self.n_layers - 1:  # small output layer: initial mean near 0
                w.mul_(0.01)
                b.zero_()
            self.register_parameter(f"w{layer}", nn.Parameter(w))
            self.register_parameter(f"b{layer}", nn.Parameter(b))
        self.log_std = nn.Parameter(torch.full((act_dim,), math.log(init_std)))

    def params(self) -> Params:
        """The module's own parameters as a dict (the meta-parameters θ)."""
        return dict(self.named_parameters())

    def forward(self, params: Params, obs: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-std for ``obs``.

        obs: (N, obs_dim) with unbatched params, or (T, N, obs_dim) with params of leading
        dimension T. Returns mean (..., N, act_dim) and log_std broadcastable to it.
        """
        h, graph = obs, torch.is_grad_enabled()
        for layer in range(self.n_layers):
            h = affine(h, params[f"w{layer}"], params[f"b{layer}"])
            if layer < self.n_layers - 1:
                # ReLU as a product with its constant 0/1 gate: the same derivatives as
                # torch.relu, and cheaper higher-order graphs (no zero-filled branches);
                # without a graph, in place
                h = h * (h > 0).to(h.dtype) if graph else h.relu_()
        return h, params["log_std"].unsqueeze(-2)


def affine(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """x @ w + b with the bias added inside the matrix product (one pass, not two):
    x (N, i) or (T, N, i), w (i, o) or (T, i, o), b (o,) or (T, o). With per-task weights
    (``baddbmm``) a task's rows are not always bitwise the same when the batch holds other
    tasks, or another number of threads runs (seen with few rows and 6 outputs); sampling
    uses :func:`task_by_task`, which is."""
    if x.dim() == 3 and w.dim() == 3:
        return torch.baddbmm(b.unsqueeze(-2), x, w)
    if w.dim() == 2 and b.dim() == 1:
        return torch.addmm(b, x.reshape(-1, x.shape[-1]), w).view(*x.shape[:-1], w.shape[-1])
    return torch.matmul(x, w) + b.unsqueeze(-2)


def task_by_task(policy: GaussianMLPPolicy, params: Params
                 ) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
    """The policy with per-task ``params`` (leading dimension T) as a function of obs
    (T, E, d) -> mean (T, E, a), log_std (T, 1, a), without a graph, that evaluates each
    task on its own: :meth:`GaussianMLPPolicy.forward`'s unbatched arithmetic (``addmm``,
    in-place ReLU) on fresh copies of the task's parameters and observations, aligned
    alike every time. So a task's actions are bitwise the same whatever other tasks are
    sampled with it, which lets a sample call be split over workers by whole tasks
    (``tests/test_streams.py``). Run it on one thread: a product's blocking may depend on
    the thread count."""
    tasks, last = params["log_std"].shape[0], policy.n_layers - 1
    layers = [[(params[f"w{k}"][t].clone(), params[f"b{k}"][t].clone())
               for k in range(policy.n_layers)] for t in range(tasks)]

    def forward(obs: Tensor) -> tuple[Tensor, Tensor]:
        mean = obs.new_empty(tasks, obs.shape[1], policy.act_dim)
        with torch.no_grad():
            for t, task_layers in enumerate(layers):
                h = obs[t].clone()
                for k, (w, b) in enumerate(task_layers):
                    h = torch.addmm(b, h, w)
                    if k < last:
                        h.relu_()
                mean[t] = h
        return mean, params["log_std"].unsqueeze(-2)

    return forward


def gaussian_log_prob(mean: Tensor, log_std: Tensor, u: Tensor) -> Tensor:
    """log N(u; mean, exp(log_std)²), summed over the last (action) dimension."""
    z = (u - mean) * torch.exp(-log_std)
    return (-0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


def gaussian_kl(mean0: Tensor, log_std0: Tensor, mean1: Tensor, log_std1: Tensor) -> Tensor:
    """KL(N0 || N1) of diagonal Gaussians, summed over the last dimension (closed form)."""
    var0, var1 = torch.exp(2 * log_std0), torch.exp(2 * log_std1)
    kl = log_std1 - log_std0 + (var0 + (mean0 - mean1).pow(2)) / (2 * var1) - 0.5
    return kl.sum(-1)


def sample_actions(mean: Tensor, log_std: Tensor, eps: Tensor) -> Tensor:
    """u = mean + std · ε for given standard normals ε (shaped like ``mean``; each episode's
    are drawn up front from its own stream, ``rkmeta_rl/rl/streams.py``)."""
    return mean + torch.exp(log_std) * eps.to(mean.dtype)
