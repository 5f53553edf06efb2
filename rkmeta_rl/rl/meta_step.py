"""One RK-TRPO meta-iteration (NOTES.md, Meta-RL).

Stages are sampled in order: stage i's episodes come from π_{θ_i} with
θ_i = θ - h Σ_{j<i} q_ij k_j (``rkmeta_rl.rk.stage_points``), where k_j is the REINFORCE
gradient on stage j's episodes. TRPO then minimises the RK-combined surrogate
Σ_i a_i L_i(θ_i(θ)) under the weighted KL Σ_i w_i KL_i(θ_i(θ_old) || θ_i(θ)) ≤ δ, with
w_i = |a_i| / Σ|a_i| (= a_i for every tableau with non-negative weights, which keeps the
curvature matrix positive semi-definite for any tableau).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from rkmeta_rl.policy import GaussianMLPPolicy, Params, repeat_params
from rkmeta_rl.rk import stage_points
from rkmeta_rl.rl.episodes import Episodes, add_advantages
from rkmeta_rl.rl.losses import log_probs, mean_kl, reinforce_loss, surrogate_loss
from rkmeta_rl.tableau import Tableau
from rkmeta_rl.trpo import backtracking_line_search, flatten, natural_step, unflatten


@dataclass
class TRPOConfig:
    max_kl: float = 0.01
    cg_iters: int = 10
    cg_damping: float = 0.01
    ls_ratio: float = 0.8
    ls_steps: int = 15
    gamma: float = 0.99
    gae_lambda: float = 1.0
    first_order: bool = False


@dataclass
class MetaStepResult:
    stage_returns: list[float]  # mean undiscounted return of each stage's episodes
    return_pre: float  # before adaptation (stage 1, θ itself)
    return_post: float  # after one adaptation step of α
    accepted: bool
    kl: float
    surrogate_improvement: float
    expected_improvement: float
    line_search_steps: int
    rejected: str = ""  # why a step was refused ("" when accepted or merely not improving)
    seconds: dict[str, float] = field(default_factory=dict)


def kl_weights(tableau: Tableau) -> list[float]:
    total = sum(abs(a) for a in tableau.a)
    return [abs(a) / total for a in tableau.a]


class _Clock:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, key: str, since: float) -> float:
        now = time.perf_counter()
        self.seconds[key] = self.seconds.get(key, 0.0) + now - since
        return now


def meta_step(
    policy: GaussianMLPPolicy,
    sample: Callable[[Params], Episodes],
    num_tasks: int,
    tableau: Tableau,
    h: float,
    alpha: float,
    cfg: TRPOConfig,
) -> MetaStepResult:
    """Sample every stage, take one TRPO step on the RK surrogate, write θ if accepted.

    sample(per_task_params) -> Episodes for the meta-batch's tasks. α is the adaptation
    step used for ``return_post`` of one-stage tableaus (monitoring only).
    """
    clock = _Clock()
    theta = policy.params()
    data: dict[int, Episodes] = {}

    def on_point(i: int, point: Params) -> None:
        if i not in data:
            t0 = time.perf_counter()
            detached = {n: v.detach() for n, v in point.items()}
            data[i] = add_advantages(sample(detached), cfg.gamma, cfg.gae_lambda)
            clock.add("sampling", t0)

    def stage_loss(i: int, point: Params) -> Tensor:
        return reinforce_loss(policy, point, data[i])

    def points_at(th: Params, create_graph: bool) -> list[Params]:
        return stage_points(
            repeat_params(th, num_tasks), tableau, h, stage_loss,
            first_order=cfg.first_order, create_graph=create_graph, on_point=on_point,
        )

    t0 = time.perf_counter()
    points = points_at(theta, create_graph=True)
    stage_returns = [data[i].mean_return() for i in range(tableau.stages)]
    return_post = stage_returns[1] if tableau.stages > 1 else _monitor_post(
        policy, theta, data[0], sample, alpha, num_tasks, cfg
    )
    weights = kl_weights(tableau)
    active = [i for i in range(tableau.stages) if weights[i] > 0]
    with torch.no_grad():
        old = {}
        for i in active:
            obs, _, _, _ = data[i].flat()
            mean, log_std = policy(points[i], obs)
            old[i] = (mean, log_std, log_probs(policy, points[i], data[i]))

    def surrogate(pts: list[Params]) -> Tensor:
        terms = [tableau.a[i] * surrogate_loss(policy, pts[i], data[i], old[i][2])
                 for i in active if tableau.a[i] != 0]
        return torch.stack(terms).sum()

    def kl(pts: list[Params]) -> Tensor:
        terms = [weights[i] * mean_kl(policy, pts[i], data[i], old[i][0], old[i][1])
                 for i in active]
        return torch.stack(terms).sum()

    loss0 = surrogate(points)
    names = list(theta)
    grad = flatten(dict(zip(names, torch.autograd.grad(loss0, list(theta.values()),
                                                       retain_graph=True))))
    grad_kl = flatten(dict(zip(names, torch.autograd.grad(
        kl(points), list(theta.values()), create_graph=True))))
    t0 = clock.add("inner_adaptation", t0)  # sampling inside it is subtracted below
    clock.seconds["inner_adaptation"] -= clock.seconds["sampling"]

    def fvp(v: Tensor) -> Tensor:
        hv = torch.autograd.grad(grad_kl.dot(v), list(theta.values()), retain_graph=True)
        return flatten(dict(zip(names, hv))) + cfg.cg_damping * v

    result = MetaStepResult(
        stage_returns, stage_returns[0], return_post, False, 0.0, 0.0, 0.0, 0, "",
    )
    if not torch.isfinite(grad).all():
        result.rejected = "non-finite gradient"
        result.seconds = clock.seconds
        return result
    step, expected = natural_step(grad.detach(), fvp, cfg.max_kl, cfg.cg_iters)
    t0 = clock.add("cg", t0)
    result.expected_improvement = expected
    if not (torch.isfinite(step).all() and math.isfinite(expected)):
        result.rejected = "non-finite natural step"
        result.seconds = clock.seconds
        return result

    def evaluate(x: Tensor) -> tuple[float, float]:
        pts = points_at(unflatten(x, {n: v.detach() for n, v in theta.items()}), False)
        with torch.no_grad():
            return float(surrogate(pts)), float(kl(pts))

    x0 = flatten({n: v.detach() for n, v in theta.items()})
    ls = backtracking_line_search(
        evaluate, x0, step.detach(), loss0.item(), cfg.max_kl, cfg.ls_ratio, cfg.ls_steps
    )
    clock.add("line_search", t0)
    result.line_search_steps = ls.steps
    if ls.rejected_nonfinite:
        result.rejected = f"{ls.rejected_nonfinite} non-finite line-search candidates"
    if ls.accepted and torch.isfinite(ls.x).all():
        with torch.no_grad():
            for name, value in unflatten(ls.x, theta).items():
                theta[name].copy_(value)
        result.accepted = True
        result.kl = ls.kl
        result.surrogate_improvement = loss0.item() - ls.loss
    result.seconds = clock.seconds
    return result


def _monitor_post(
    policy: GaussianMLPPolicy,
    theta: Params,
    episodes: Episodes,
    sample: Callable[[Params], Episodes],
    alpha: float,
    num_tasks: int,
    cfg: TRPOConfig,
) -> float:
    """Return after one REINFORCE step of α from θ (for one-stage tableaus)."""
    base = {n: v.detach().requires_grad_() for n, v in repeat_params(theta, num_tasks).items()}
    grads = torch.autograd.grad(reinforce_loss(policy, base, episodes), list(base.values()))
    adapted = {n: v.detach() - alpha * g for (n, v), g in zip(base.items(), grads)}
    return sample(adapted).mean_return()
