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

from rkmeta_rl.layer_methods import adaptation_steps
from rkmeta_rl.rk import Params, Scheme, repeat_params
from rkmeta_rl.rl.adapt import reinforce_step
from rkmeta_rl.rl.config import MetaStepConfig
from rkmeta_rl.rl.episodes import Episodes
from rkmeta_rl.rl.losses import StageObjective, rk_weights
from rkmeta_rl.rl.paths import CurvaturePath, StageSampler, choose_path
from rkmeta_rl.rl.policy import GaussianMLPPolicy
from rkmeta_rl.rl.trpo import (
    LineSearchResult,
    backtracking_line_search,
    flatten,
    natural_step,
    unflatten,
)
from rkmeta_rl.tableau import Tableau

__all__ = ["TRPOStepResult", "meta_step", "rk_weights"]


@dataclass
class TRPOStepResult:
    """What one RK-TRPO meta-iteration measured and did (the RL wing's metrics row)."""

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
    # success rates before and after adaptation, where the env reports success (Meta-World)
    success_pre: float | None = None
    success_post: float | None = None


def meta_step(
    policy: GaussianMLPPolicy,
    sample: Callable[[int, Params], Episodes],
    num_tasks: int,
    tableau: Tableau | Scheme,
    h: float | None,
    cfg: MetaStepConfig,
    path: type[CurvaturePath] | None = None,
) -> TRPOStepResult:
    """Sample every stage, take one TRPO step on the RK surrogate, write θ if accepted.

    sample(stage, per_task_params) -> Episodes for the meta-batch's tasks, stage i (0-based)
    for stage i's episodes and stage s for a one-stage tableau's monitoring sample (the
    stage names the call's random streams, ``rkmeta_rl/rl/streams.py``). ``tableau``: one
    tableau with step ``h``, or a tableau per parameter group (a ``Scheme``, whose groups
    share the weights a; h None). ``return_post`` is stage 2's return; a one-stage tableau
    has no stage 2, so it is measured after one REINFORCE step of α (h for one stage), for
    monitoring only. How the points, gradient and curvature are computed:
    ``rl.paths.choose_path``, unless ``path`` names another exact one (``DoubleBackward``
    takes any tableau: the tests and the bench's autograd yardstick compare with it).
    """
    rk_weights(tableau)  # TRPO's one objective exists
    theta = policy.params()
    sampler = StageSampler(sample, cfg)
    route = (path or choose_path(tableau, cfg))(policy, tableau, h, cfg, num_tasks, sampler)
    t0 = time.perf_counter()
    points = route.points_at(theta)  # θ_i per task (T, ...), stage i sampled at θ_i
    result = _sampled(policy, theta, tableau, h, sampler, num_tasks)
    seconds = result.seconds
    objective = StageObjective(policy, tableau, sampler.data, points)
    loss0, grad = route.gradient(objective)  # S(θ_old), ∇S (P,)
    fvp = route.fvp()  # v (P,) -> (F + λI) v (P,)
    t1 = time.perf_counter()
    seconds["inner_adaptation"] = t1 - t0 - seconds["sampling"]
    if not torch.isfinite(grad).all():
        result.rejected = "non-finite gradient"
        return result

    step, expected = natural_step(grad.detach(), fvp, cfg.max_kl, cfg.cg_iters)  # (P,)
    t2 = time.perf_counter()
    seconds["cg"] = t2 - t1
    result.expected_improvement = expected
    if not (torch.isfinite(step).all() and math.isfinite(expected)):
        result.rejected = "non-finite natural step"
        return result

    fixed = {n: v.detach() for n, v in theta.items()}
    ls = backtracking_line_search(route.evaluator(objective, fixed), flatten(fixed),
                                  step.detach(), loss0.item(), cfg.max_kl, cfg.ls_ratio,
                                  cfg.ls_steps)
    seconds["line_search"] = time.perf_counter() - t2
    _take(ls, theta, fixed, loss0.item(), result)
    return result


def _sampled(
    policy: GaussianMLPPolicy,
    theta: Params,
    tableau: Tableau | Scheme,
    h: float | None,
    sampler: StageSampler,
    num_tasks: int,
) -> TRPOStepResult:
    """The result so far: each stage's mean return, return_pre and return_post (for one
    stage, after a monitoring adaptation step, counted as sampling time)."""
    seconds = {"sampling": sampler.seconds}
    stage_returns = [sampler.data[i].mean_return() for i in range(tableau.stages)]
    if tableau.stages > 1:
        post = sampler.data[1]
    else:
        t = time.perf_counter()
        step = h if isinstance(tableau, Tableau) else adaptation_steps(tableau)
        post = _monitor_post(policy, theta, sampler.data[0], sampler.sample, step, num_tasks)
        seconds["sampling"] += time.perf_counter() - t
    return TRPOStepResult(stage_returns, stage_returns[0], post.mean_return(),
                          seconds=seconds, success_pre=sampler.data[0].success_rate(),
                          success_post=post.success_rate())


def _take(ls: LineSearchResult, theta: Params, fixed: Params, loss0: float,
          result: TRPOStepResult) -> None:
    """Record the line search in ``result`` and write its point into θ if accepted."""
    result.line_search_steps = ls.steps
    if not ls.accepted and ls.rejected_nonfinite:
        result.rejected = f"{ls.rejected_nonfinite} non-finite line-search candidates"
    if ls.accepted and torch.isfinite(ls.x).all():
        with torch.no_grad():
            for name, value in unflatten(ls.x, fixed).items():
                theta[name].copy_(value)
        result.accepted = True
        result.kl = ls.kl
        result.surrogate_improvement = loss0 - ls.loss


def _monitor_post(
    policy: GaussianMLPPolicy,
    theta: Params,
    episodes: Episodes,
    sample: Callable[[int, Params], Episodes],
    step: float | dict[str, float],
    num_tasks: int,
) -> Episodes:
    """The episodes after one REINFORCE step of ``step`` (one, or per parameter) from θ
    (for one-stage tableaus; sampled as stage 1)."""
    return sample(1, reinforce_step(policy, repeat_params(theta, num_tasks), episodes, step))
