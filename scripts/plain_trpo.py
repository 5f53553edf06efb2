"""The yardstick of ``bench_meta_step.py``: one exact RK-TRPO meta-step written the
straightforward way, with no rkmeta-rl machinery beyond the sampler and the generic CG,
line search and flat-vector helpers of ``rkmeta_rl/rl/trpo.py``.

Per-task parameters go through ``bmm``; the inner step k_1 = ∇L_1 is taken with
``create_graph=True``; conjugate gradient runs on double-backward Hessian-vector products
of the weighted KL Σ_i w_i KL_i(θ_i(θ)). Tableaus whose points move by k_1 alone (every
two-stage tableau and Euler). tests/test_bench_yardstick.py checks that it takes the same
step as ``rkmeta_rl.rl.meta_step``.
"""

from __future__ import annotations

import math
import time

import torch
from torch import Tensor

from rkmeta_rl.rl.episodes import Episodes, add_advantages
from rkmeta_rl.rl.policy import gaussian_kl, gaussian_log_prob
from rkmeta_rl.rl.trainer import Trainer
from rkmeta_rl.rl.trpo import (
    backtracking_line_search,
    flat_grad,
    flatten,
    natural_step,
    unflatten,
)

Params = dict[str, Tensor]


def forward(params: Params, obs: Tensor, n_layers: int) -> tuple[Tensor, Tensor]:
    """Mean (T, N, A) and log σ (T, 1, A) of per-task parameters on (T, N, d) states."""
    h = obs
    for layer in range(n_layers):
        h = torch.bmm(h, params[f"w{layer}"]) + params[f"b{layer}"].unsqueeze(1)
        if layer < n_layers - 1:
            h = torch.relu(h)
    return h, params["log_std"].unsqueeze(1)


def task_mean(x: Tensor, mask: Tensor) -> Tensor:
    return (x * mask).sum(-1) / mask.sum(-1).clamp_min(1.0)


def plain_meta_step(trainer: Trainer, tasks: list[dict]) -> dict[str, float]:  # noqa: C901
    """One meta-step on ``tasks`` for the trainer's policy (θ updated in place if the line
    search accepts); returns seconds per phase and the step's figures. One plain function
    on purpose (hence its complexity): the yardstick reads top to bottom, as users write
    it."""
    cfg, policy, tab, h = trainer.cfg, trainer.policy, trainer.tableau, trainer.h
    if any(q != 0.0 for row in tab.q for q in row[1:]):
        raise ValueError(f"the yardstick runs tableaus that move by k_1 alone, not {tab.name}")
    sample, n_tasks, n_layers = trainer.sampler(tasks), len(tasks), policy.n_layers
    theta = dict(policy.named_parameters())
    total = sum(abs(a) for a in tab.a)
    kl_weight = [abs(a) / total for a in tab.a]
    data: dict[int, Episodes] = {}
    seconds = {"sampling": 0.0}

    def log_prob(params: Params, i: int) -> Tensor:
        obs, act, _, _ = data[i].flat()
        return gaussian_log_prob(*forward(params, obs, n_layers), act)  # (T, N)

    def stage(i: int, params: Params) -> None:
        if i not in data:
            t = time.perf_counter()
            data[i] = add_advantages(sample(i, {n: v.detach() for n, v in params.items()}),
                                     cfg.gamma, cfg.gae_lambda)
            seconds["sampling"] += time.perf_counter() - t

    def points(at: Params, create_graph: bool) -> list[Params]:
        rep = {n: v.unsqueeze(0).expand(n_tasks, *v.shape) for n, v in at.items()}
        stage(0, rep)
        if tab.stages == 1:
            return [rep]
        with torch.enable_grad():
            _, _, adv, mask = data[0].flat()
            inner = -task_mean(log_prob(rep, 0) * adv, mask).sum()
            k1 = torch.autograd.grad(inner, list(rep.values()), create_graph=create_graph)
        out = [rep]
        for i in range(1, tab.stages):
            out.append({n: rep[n] - h * tab.q[i][0] * k for (n, _), k in zip(rep.items(), k1,
                                                                               strict=True)})
            stage(i, out[-1])
        return out

    t0 = time.perf_counter()
    pts = points(theta, create_graph=not cfg.first_order)
    active = [i for i, a in enumerate(tab.a) if a != 0.0]
    with torch.no_grad():
        old = {i: (*forward(pts[i], data[i].flat()[0], n_layers), log_prob(pts[i], i))
               for i in active}

    def surrogate(p: list[Params]) -> Tensor:
        terms = []
        for i in active:
            _, _, adv, mask = data[i].flat()
            ratio = torch.exp(log_prob(p[i], i) - old[i][2])
            terms.append(tab.a[i] * -task_mean(ratio * adv, mask).mean())
        return torch.stack(terms).sum()

    def kl(p: list[Params]) -> Tensor:
        terms = []
        for i in active:
            obs, _, _, mask = data[i].flat()
            mean, log_std = forward(p[i], obs, n_layers)
            terms.append(kl_weight[i] * task_mean(gaussian_kl(old[i][0], old[i][1], mean,
                                                              log_std), mask).mean())
        return torch.stack(terms).sum()

    loss = surrogate(pts)
    grad = flat_grad(loss, theta, retain_graph=True)
    kl_grad = flat_grad(kl(pts), theta, create_graph=True)

    def fvp(v: Tensor) -> Tensor:
        return flat_grad(kl_grad @ v, theta, retain_graph=True) + cfg.cg_damping * v

    t1 = time.perf_counter()
    step, expected = natural_step(grad, fvp, cfg.max_kl, cfg.cg_iters)
    t2 = time.perf_counter()
    fixed = {n: v.detach() for n, v in theta.items()}
    x0 = flatten(fixed)

    def evaluate(x: Tensor) -> tuple[float, float]:
        p = points({n: v.detach().requires_grad_() for n, v in unflatten(x, fixed).items()},
                   create_graph=False)
        with torch.no_grad():
            return surrogate(p).item(), kl(p).item()

    ls = backtracking_line_search(evaluate, x0, step, loss.item(), cfg.max_kl, cfg.ls_ratio,
                                  cfg.ls_steps)
    if ls.accepted and torch.isfinite(ls.x).all():
        with torch.no_grad():
            for n, v in unflatten(ls.x, fixed).items():
                theta[n].copy_(v)
    t3 = time.perf_counter()
    return {**seconds, "inner_adaptation": t1 - t0 - seconds["sampling"], "cg": t2 - t1,
            "line_search": t3 - t2, "accepted": float(ls.accepted),
            "expected_improvement": expected if math.isfinite(expected) else math.nan,
            "line_search_steps": float(ls.steps)}
