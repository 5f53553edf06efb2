"""One RK-TRPO meta-iteration (NOTES.md, Meta-RL).

Stages are sampled in order: stage i's episodes come from π_{θ_i} with
θ_i = θ - h Σ_{j<i} q_ij k_j (``rkmeta_rl.rk.stage_points``), where k_j is the REINFORCE
gradient on stage j's episodes. TRPO then minimises the RK-combined surrogate
Σ_i a_i L_i(θ_i(θ)) under the weighted KL Σ_i w_i KL_i(θ_i(θ_old) || θ_i(θ)) ≤ δ, with
w_i = |a_i| / Σ|a_i| (= a_i for every tableau with non-negative weights; the absolute
value keeps the curvature positive semi-definite for any tableau).
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
from rkmeta_rl.rl.adapt import reinforce_step
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
    # Fraction of each task's episodes used for the KL curvature in conjugate gradient.
    # 1.0 is exact; less is an approximation (the gradient and line search stay exact).
    curvature_fraction: float = 1.0


@dataclass
class MetaStepResult:
    stage_returns: list[float]  # mean undiscounted return of each stage's episodes
    return_pre: float  # before adaptation (stage 1, θ itself)
    return_post: float  # after one adaptation step of α
    accepted: bool = False
    kl: float = 0.0
    surrogate_improvement: float = 0.0
    expected_improvement: float = 0.0
    line_search_steps: int = 0
    rejected: str = ""  # why a step was refused ("" when accepted or merely not improving)
    seconds: dict[str, float] = field(default_factory=dict)


def kl_weights(tableau: Tableau) -> list[float]:
    total = sum(abs(a) for a in tableau.a)
    return [abs(a) / total for a in tableau.a]


class StageObjective:
    """The RK surrogate Σ a_i L_i and weighted KL Σ w_i KL_i against the old stage policies."""

    def __init__(self, policy: GaussianMLPPolicy, tableau: Tableau, data: dict[int, Episodes],
                 old_points: list[Params]) -> None:
        self.policy, self.tableau, self.data = policy, tableau, data
        self.weights = kl_weights(tableau)
        self.active = [i for i, w in enumerate(self.weights) if w > 0]
        self.old = {}
        with torch.no_grad():
            for i in self.active:
                obs, _, _, _ = data[i].flat()
                mean, log_std = policy(old_points[i], obs)
                self.old[i] = (mean, log_std, log_probs(policy, old_points[i], data[i]))

    def surrogate(self, points: list[Params]) -> Tensor:
        terms = [self.tableau.a[i] * surrogate_loss(self.policy, points[i], self.data[i],
                                                    self.old[i][2])
                 for i in self.active]
        return torch.stack(terms).sum()

    def kl(self, points: list[Params]) -> Tensor:
        terms = [self.weights[i] * mean_kl(self.policy, points[i], self.data[i], *self.old[i][:2])
                 for i in self.active]
        return torch.stack(terms).sum()


def _grad_vec(out: Tensor, theta: Params, **kw) -> Tensor:
    grads = torch.autograd.grad(out, list(theta.values()), allow_unused=True,
                                materialize_grads=True, **kw)
    return torch.cat([g.reshape(-1) for g in grads])


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
    seconds = {"sampling": 0.0}
    theta = policy.params()
    data: dict[int, Episodes] = {}

    def on_point(i: int, point: Params) -> None:
        if i not in data:
            t = time.perf_counter()
            detached = {n: v.detach() for n, v in point.items()}
            data[i] = add_advantages(sample(detached), cfg.gamma, cfg.gae_lambda)
            seconds["sampling"] += time.perf_counter() - t

    def points_at(th: Params, episodes: dict[int, Episodes], create_graph: bool) -> list[Params]:
        return stage_points(
            repeat_params(th, num_tasks), tableau, h,
            lambda i, p: reinforce_loss(policy, p, episodes[i]),
            first_order=cfg.first_order, create_graph=create_graph, on_point=on_point,
        )

    t0 = time.perf_counter()
    points = points_at(theta, data, create_graph=True)
    stage_returns = [data[i].mean_return() for i in range(tableau.stages)]
    if tableau.stages > 1:
        return_post = stage_returns[1]
    else:
        return_post = _monitor_post(policy, theta, data[0], sample, alpha, num_tasks)
    result = MetaStepResult(stage_returns, stage_returns[0], return_post, seconds=seconds)
    objective = StageObjective(policy, tableau, data, points)
    loss0 = objective.surrogate(points)
    grad = _grad_vec(loss0, theta, retain_graph=True)
    fvp = curvature_fvp(policy, tableau, h, data, points, theta, cfg)
    t1 = time.perf_counter()
    seconds["inner_adaptation"] = t1 - t0 - seconds["sampling"]
    if not torch.isfinite(grad).all():
        result.rejected = "non-finite gradient"
        return result

    step, expected = natural_step(grad.detach(), fvp, cfg.max_kl, cfg.cg_iters)
    t2 = time.perf_counter()
    seconds["cg"] = t2 - t1
    result.expected_improvement = expected
    if not (torch.isfinite(step).all() and math.isfinite(expected)):
        result.rejected = "non-finite natural step"
        return result

    fixed = {n: v.detach() for n, v in theta.items()}

    def evaluate(x: Tensor) -> tuple[float, float]:
        pts = points_at(unflatten(x, fixed), data, create_graph=False)
        with torch.no_grad():
            return objective.surrogate(pts).item(), objective.kl(pts).item()

    ls = backtracking_line_search(evaluate, flatten(fixed), step.detach(), loss0.item(),
                                  cfg.max_kl, cfg.ls_ratio, cfg.ls_steps)
    seconds["line_search"] = time.perf_counter() - t2
    result.line_search_steps = ls.steps
    if not ls.accepted and ls.rejected_nonfinite:
        result.rejected = f"{ls.rejected_nonfinite} non-finite line-search candidates"
    if ls.accepted and torch.isfinite(ls.x).all():
        with torch.no_grad():
            for name, value in unflatten(ls.x, fixed).items():
                theta[name].copy_(value)
        result.accepted = True
        result.kl = ls.kl
        result.surrogate_improvement = loss0.item() - ls.loss
    return result


def curvature_fvp(
    policy: GaussianMLPPolicy,
    tableau: Tableau,
    h: float,
    data: dict[int, Episodes],
    points: list[Params],
    theta: Params,
    cfg: TRPOConfig,
) -> Callable[[Tensor], Tensor]:
    """v -> (F + damping·I) v, F the Hessian of the weighted KL at θ_old, by double
    backward through the stage construction (the first backward is done once).

    With ``cfg.curvature_fraction`` < 1 only the first ⌈f·E⌉ episodes of each task enter
    (an approximation): the stage construction is rebuilt on them and shifted onto the
    exact points, θ̃_i(θ) = θ_i(θ_old) + θ_i^sub(θ) - θ_i^sub(θ_old), so its value at
    θ_old is exact and its Jacobian the subsample's.
    """
    num_tasks, n_eps = data[0].obs.shape[:2]
    keep = max(1, math.ceil(cfg.curvature_fraction * n_eps))
    if keep == n_eps:
        kl = StageObjective(policy, tableau, data, points).kl(points)
    else:
        sub = {i: ep.first_episodes(keep) for i, ep in data.items()}
        sub_points = stage_points(
            repeat_params(theta, num_tasks), tableau, h,
            lambda i, p: reinforce_loss(policy, p, sub[i]), first_order=cfg.first_order,
        )
        shifted = [{n: p[n] + (o[n].detach() - p[n].detach()) for n in p}
                   for p, o in zip(sub_points, points, strict=True)]
        kl = StageObjective(policy, tableau, sub, points).kl(shifted)
    grad_kl = _grad_vec(kl, theta, create_graph=True)

    def fvp(v: Tensor) -> Tensor:
        return _grad_vec(grad_kl.dot(v), theta, retain_graph=True) + cfg.cg_damping * v

    return fvp


def _monitor_post(
    policy: GaussianMLPPolicy,
    theta: Params,
    episodes: Episodes,
    sample: Callable[[Params], Episodes],
    alpha: float,
    num_tasks: int,
) -> float:
    """Return after one REINFORCE step of α from θ (for one-stage tableaus)."""
    return sample(reinforce_step(policy, repeat_params(theta, num_tasks), episodes, alpha)
                  ).mean_return()
