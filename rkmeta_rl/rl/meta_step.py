"""One RK-TRPO meta-iteration (docs/method.md, "Meta-RL: RK-TRPO").

Stages are sampled in order: stage i's episodes come from π_{θ_i} with
θ_i = θ - h Σ_{j<i} q_ij k_j (``rkmeta_rl.rk.stage_points``), where k_j is the REINFORCE
gradient on stage j's episodes. TRPO then minimises the RK-combined surrogate
Σ_i a_i L_i(θ_i(θ)) (``rkmeta_rl.rk.rk_combination``) under the weighted KL
Σ_i w_i KL_i(θ_i(θ_old) || θ_i(θ)) ≤ δ, with w_i = |a_i| / Σ|a_i| (= a_i for every tableau
with non-negative weights; the absolute value keeps the curvature positive semi-definite
for any tableau).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from rkmeta_rl.layer_methods import adaptation_steps
from rkmeta_rl.rk import Params, Scheme, repeat_params, stage_points
from rkmeta_rl.rl.adapt import reinforce_step
from rkmeta_rl.rl.config import MetaStepConfig
from rkmeta_rl.rl.curvature import (
    closed_form_gradient,
    curvature_fvp,
    double_backward_fvp,
    moved_by_first_stage_only,
    moved_by_k1,
    points_by_k1,
    stage_moves,
    stagewise_fvp,
)
from rkmeta_rl.rl.episodes import Episodes, add_advantages
from rkmeta_rl.rl.losses import StageObjective, reinforce_loss, rk_weights
from rkmeta_rl.rl.policy import GaussianMLPPolicy
from rkmeta_rl.rl.reinforce_hessian import ChunkedHessian
from rkmeta_rl.rl.trpo import backtracking_line_search, flat_grad, flatten, natural_step, unflatten
from rkmeta_rl.tableau import Tableau


@dataclass
class MetaStepResult:
    stage_returns: list[float]  # mean undiscounted return of each stage's episodes
    return_pre: float  # before adaptation (stage 1, θ itself)
    return_post: float  # after one adaptation step (stage 2; one-stage tableaus: a step of h)
    accepted: bool = False
    kl: float = 0.0
    surrogate_improvement: float = 0.0
    expected_improvement: float = 0.0
    line_search_steps: int = 0
    rejected: str = ""  # why a step was refused ("" when accepted or merely not improving)
    seconds: dict[str, float] = field(default_factory=dict)


def meta_step(
    policy: GaussianMLPPolicy,
    sample: Callable[[int, Params], Episodes],
    num_tasks: int,
    tableau: Tableau | Scheme,
    h: float | None,
    cfg: MetaStepConfig,
) -> MetaStepResult:
    """Sample every stage, take one TRPO step on the RK surrogate, write θ if accepted.

    sample(stage, per_task_params) -> Episodes for the meta-batch's tasks, stage i (0-based)
    for stage i's episodes and stage s for a one-stage tableau's monitoring sample (the
    stage names the call's random streams, ``rkmeta_rl/rl/streams.py``). ``tableau``: one
    tableau with step ``h``, or a tableau per parameter group (a ``Scheme``, whose groups
    share the weights a; h None). ``return_post`` is stage 2's return; a one-stage tableau
    has no stage 2, so it is measured after one REINFORCE step of α (h for one stage), for
    monitoring only.
    """
    stages = tableau.stages
    rk_weights(tableau)  # TRPO's one objective exists
    seconds = {"sampling": 0.0}
    theta = policy.params()
    data: dict[int, Episodes] = {}

    def on_point(i: int, point: Params) -> None:
        if i not in data:
            t = time.perf_counter()
            detached = {n: v.detach() for n, v in point.items()}
            data[i] = add_advantages(sample(i, detached), cfg.gamma, cfg.gae_lambda)
            seconds["sampling"] += time.perf_counter() - t

    by_k1 = moved_by_k1(tableau)  # points θ - h q_i1 k_1, k_1 in closed form
    closed_form = moved_by_first_stage_only(tableau, cfg)  # else autograd through the stages

    def points_at(rep: Params, create_graph: bool) -> list[Params]:
        return stage_points(
            rep, tableau, h, lambda i, p: reinforce_loss(policy, p, data[i]),
            first_order=cfg.first_order, create_graph=create_graph, on_point=on_point,
        )

    t0 = time.perf_counter()
    rep = repeat_params(theta, num_tasks)
    hessian = None  # H at θ on stage 1's episodes, where the closed form needs it
    if by_k1:
        points, hessian = _points_by_k1(policy, theta, tableau, h, num_tasks, data, on_point)
    else:
        points = points_at(rep, create_graph=not closed_form)
    stage_returns = [data[i].mean_return() for i in range(stages)]
    if stages > 1:
        return_post = stage_returns[1]
    else:  # one stage: a monitoring adaptation step, counted as sampling time
        t = time.perf_counter()
        step = h if isinstance(tableau, Tableau) else adaptation_steps(tableau)
        return_post = _monitor_post(policy, theta, data[0], sample, step, num_tasks)
        seconds["sampling"] += time.perf_counter() - t
    result = MetaStepResult(stage_returns, stage_returns[0], return_post, seconds=seconds)
    objective = StageObjective(policy, tableau, data, points)
    if closed_form:
        moves = stage_moves(tableau, h, cfg)  # β_i ≠ 0 only when by_k1: then H is built
        loss0, grads = closed_form_gradient(objective.surrogate, points, moves, hessian)
        grad = flatten(grads)
        fvp = curvature_fvp(policy, tableau, h, data, points, theta, cfg, hessian)
    else:
        loss0 = objective.surrogate(points)
        grad = flat_grad(loss0, theta, retain_graph=True)
        if isinstance(tableau, Tableau):
            fvp = stagewise_fvp(policy, tableau, h, data, rep, points, theta, cfg)
        else:
            fvp = double_backward_fvp(policy, tableau, data, points, theta, cfg)
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
        at = unflatten(x, fixed)
        if by_k1:
            pts = _points_by_k1(policy, at, tableau, h, num_tasks, data, on_point)[0]
        else:
            pts = points_at(repeat_params(at, num_tasks), create_graph=False)
        return objective.values(pts)

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


def _points_by_k1(
    policy: GaussianMLPPolicy,
    theta: Params,
    tableau: Tableau,
    h: float,
    num_tasks: int,
    data: dict[int, Episodes],
    on_point: Callable[[int, Params], None],
) -> tuple[list[Params], ChunkedHessian | None]:
    """The stage points θ_i = θ - h q_i1 k_1 (values), each stage sampled in order, with
    k_1 from the REINFORCE loss's closed form on stage 1's episodes at θ; and that
    :class:`ChunkedHessian` (None for one stage)."""
    rep = repeat_params({n: v.detach() for n, v in theta.items()}, num_tasks)
    on_point(0, rep)
    if tableau.stages == 1:
        return [rep], None
    hessian = ChunkedHessian(policy, theta, data[0])
    points = points_by_k1(theta, hessian.gradient(), tableau, h)
    for i in range(1, tableau.stages):
        on_point(i, points[i])
    return points, hessian


def _monitor_post(
    policy: GaussianMLPPolicy,
    theta: Params,
    episodes: Episodes,
    sample: Callable[[int, Params], Episodes],
    step: float | dict[str, float],
    num_tasks: int,
) -> float:
    """Return after one REINFORCE step of ``step`` (one, or per parameter) from θ (for
    one-stage tableaus; sampled as stage 1)."""
    return sample(1, reinforce_step(policy, repeat_params(theta, num_tasks), episodes, step)
                  ).mean_return()
