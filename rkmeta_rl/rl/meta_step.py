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
from rkmeta_rl.rk import Params, Scheme, repeat_params, rk_combination, stage_points
from rkmeta_rl.rl.adapt import reinforce_step
from rkmeta_rl.rl.config import MetaStepConfig
from rkmeta_rl.rl.episodes import Episodes, add_advantages
from rkmeta_rl.rl.losses import log_probs, mean_kl, reinforce_loss, surrogate_loss
from rkmeta_rl.rl.policy import GaussianMLPPolicy
from rkmeta_rl.rl.trpo import backtracking_line_search, dot, flatten, natural_step, unflatten
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


def rk_weights(tableau: Tableau | Scheme) -> tuple[float, ...]:
    """The weights a of Σ a_i L_i: the tableau's, or those every parameter group shares.
    TRPO needs that one objective (its line search compares values of it)."""
    if isinstance(tableau, Tableau):
        return tableau.a
    shared = tableau.shared_weights
    if shared is None:
        raise ValueError("--layer-methods: TRPO needs one objective Σ a_i L_i, so every "
                         "parameter group must have the same weights a (e.g. 'w2=midpoint,"
                         "*=frozen:midpoint'); groups with their own weights are for the "
                         "supervised benchmarks and RKMetaLearner")
    return shared


def kl_weights(tableau: Tableau | Scheme) -> list[float]:
    a = rk_weights(tableau)
    total = sum(abs(x) for x in a)
    return [abs(x) / total for x in a]


class StageObjective:
    """The RK surrogate Σ a_i L_i and weighted KL Σ w_i KL_i against the old stage policies."""

    def __init__(self, policy: GaussianMLPPolicy, tableau: Tableau | Scheme,
                 data: dict[int, Episodes], old_points: list[Params]) -> None:
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
        return rk_combination(points, self.tableau, lambda i, p: surrogate_loss(
            self.policy, p, self.data[i], self.old[i][2]))

    def kl(self, points: list[Params]) -> Tensor:
        terms = [self.weights[i] * mean_kl(self.policy, points[i], self.data[i], *self.old[i][:2])
                 for i in self.active]
        return torch.stack(terms).sum()


def _grad_vec(out: Tensor | list[Tensor], theta: Params, **kw) -> Tensor:
    grads = torch.autograd.grad(out, list(theta.values()), allow_unused=True,
                                materialize_grads=True, **kw)
    return torch.cat([g.reshape(-1) for g in grads])


def meta_step(
    policy: GaussianMLPPolicy,
    sample: Callable[[Params], Episodes],
    num_tasks: int,
    tableau: Tableau | Scheme,
    h: float | None,
    cfg: MetaStepConfig,
) -> MetaStepResult:
    """Sample every stage, take one TRPO step on the RK surrogate, write θ if accepted.

    sample(per_task_params) -> Episodes for the meta-batch's tasks. ``tableau``: one
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
            data[i] = add_advantages(sample(detached), cfg.gamma, cfg.gae_lambda)
            seconds["sampling"] += time.perf_counter() - t

    def points_at(rep: Params, create_graph: bool) -> list[Params]:
        return stage_points(
            rep, tableau, h, lambda i, p: reinforce_loss(policy, p, data[i]),
            first_order=cfg.first_order, create_graph=create_graph, on_point=on_point,
        )

    t0 = time.perf_counter()
    rep = repeat_params(theta, num_tasks)
    points = points_at(rep, create_graph=True)
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
    loss0 = objective.surrogate(points)
    grad = _grad_vec(loss0, theta, retain_graph=True)
    if isinstance(tableau, Tableau):
        fvp = curvature_fvp(policy, tableau, h, data, rep, points, theta, cfg)
    else:
        fvp = double_backward_fvp(policy, tableau, data, theta, cfg)
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
        pts = points_at(repeat_params(unflatten(x, fixed), num_tasks), create_graph=False)
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
    rep: Params,
    points: list[Params],
    theta: Params,
    cfg: MetaStepConfig,
) -> Callable[[Tensor], Tensor]:
    """v -> (F + damping·I) v with F the exact Hessian of the weighted KL at θ_old.

    At θ_old every KL_i is zero with zero gradient, so its Hessian is a Gauss-Newton
    product, summed over tasks: F = Σ_i w_i J_iᵀ G_i J_i, where
      J_i = dθ_i/dθ = I - h Σ_j q_ij ∇²φ_j with φ_j(θ) = L_j(θ_j(θ)) (k_j = ∇φ_j), a
            symmetric matrix, so J_i v is one backward pass through the stage
            construction (J_i = I for stage 1 and in first-order mode);
      G_i = J_netᵀ M J_net, the network's Jacobian at θ_i on stage i's states with the
            Gaussian's Fisher M (1/σ² for the mean, 2 for log σ); forward mode through
            cached activations, reverse mode through a graph built once.
    This replaces double backward through the whole KL (same matrix, fewer passes).

    ``rep`` holds the per-task copies of θ that ``points`` were built from. With
    ``cfg.curvature_fraction`` < 1 only the first ⌈f·E⌉ episodes of each task enter
    G_i and the Hessians inside J_i (an approximation; the points stay exact).
    """
    num_tasks, n_eps = data[0].obs.shape[:2]
    keep = max(1, math.ceil(cfg.curvature_fraction * n_eps))
    jac_rep, jac_points = rep, points
    if keep < n_eps:
        data = {i: ep.first_episodes(keep) for i, ep in data.items()}
        jac_rep = repeat_params(theta, num_tasks)
        jac_points = stage_points(jac_rep, tableau, h,
                                  lambda i, p: reinforce_loss(policy, p, data[i]),
                                  first_order=cfg.first_order)
    names = list(theta)
    weights = kl_weights(tableau)
    stages = []
    for i, w in enumerate(weights):
        if w == 0:
            continue
        obs, _, _, mask = data[i].flat()
        at = {n: v.detach() for n, v in points[i].items()}
        (_, log_std), jvp_net = policy.linearize(at, obs)
        leaf = {n: v.clone().requires_grad_() for n, v in at.items()}
        outputs = policy(leaf, obs)
        c = w * mask / mask.sum(-1, keepdim=True).clamp_min(1.0) / num_tasks  # (T, N)
        fisher = (c.unsqueeze(-1) * torch.exp(-2.0 * log_std), 2.0 * c.sum(-1)[:, None, None])
        identity = i == 0 or cfg.first_order
        stages.append((i, identity, jvp_net, leaf, outputs, fisher))

    def fvp(v: Tensor) -> Tensor:
        v_rep = {n: x.expand(num_tasks, *x.shape) for n, x in unflatten(v, theta).items()}
        total = cfg.cg_damping * v
        outs, cots = [], []
        for i, identity, jvp_net, leaf, outputs, fisher in stages:
            if identity:
                jv = v_rep
            else:
                jv = dict(zip(names, torch.autograd.grad(
                    [jac_points[i][n] for n in names], [jac_rep[n] for n in names],
                    [v_rep[n] for n in names], retain_graph=True), strict=True))
            d_mean, d_log_std = jvp_net(jv)
            g = torch.autograd.grad(outputs, list(leaf.values()),
                                    (d_mean * fisher[0], d_log_std * fisher[1]),
                                    retain_graph=True)
            if identity:
                total = total + torch.cat([x.sum(0).reshape(-1) for x in g])
            else:
                outs += [jac_points[i][n] for n in names]
                cots += list(g)
        if outs:
            total = total + _grad_vec(outs, theta, grad_outputs=cots, retain_graph=True)
        return total

    return fvp


def double_backward_fvp(
    policy: GaussianMLPPolicy,
    scheme: Scheme,
    data: dict[int, Episodes],
    theta: Params,
    cfg: MetaStepConfig,
) -> Callable[[Tensor], Tensor]:
    """v -> (F + damping·I) v with F the Hessian of the weighted KL at θ_old, by double
    backward through the stage construction: for a tableau per parameter group, whose
    stage Jacobians I - Σ_j D_ij ∇²φ_j (D_ij the groups' h_n q_n,ij) are not symmetric, so
    the Gauss-Newton shortcut of :func:`curvature_fvp` does not apply. Exact, and slower.
    ``cfg.curvature_fraction`` subsamples the episodes as there."""
    num_tasks, n_eps = data[0].obs.shape[:2]
    keep = max(1, math.ceil(cfg.curvature_fraction * n_eps))
    if keep < n_eps:
        data = {i: ep.first_episodes(keep) for i, ep in data.items()}
    points = stage_points(repeat_params(theta, num_tasks), scheme, None,
                          lambda i, p: reinforce_loss(policy, p, data[i]),
                          first_order=cfg.first_order)
    kl = StageObjective(policy, scheme, data, points).kl(points)  # 0 at θ_old, with its graph
    grad = _grad_vec(kl, theta, create_graph=True)

    def fvp(v: Tensor) -> Tensor:
        return cfg.cg_damping * v + _grad_vec(dot(grad, v), theta, retain_graph=True)

    return fvp


def _monitor_post(
    policy: GaussianMLPPolicy,
    theta: Params,
    episodes: Episodes,
    sample: Callable[[Params], Episodes],
    step: float | dict[str, float],
    num_tasks: int,
) -> float:
    """Return after one REINFORCE step of ``step`` (one, or per parameter) from θ (for
    one-stage tableaus)."""
    return sample(reinforce_step(policy, repeat_params(theta, num_tasks), episodes, step)
                  ).mean_return()
