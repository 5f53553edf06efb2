"""The KL curvature product v -> (F + λI) v that RK-TRPO's conjugate gradient solves with
(docs/method.md, "The exact curvature product").

At θ_old every KL_i vanishes with its gradient, so its Hessian is a Gauss-Newton product,
summed over tasks:

    F = Σ_i w_i J_iᵀ G_i J_i,   J_i = dθ_i/dθ = I - h Σ_j q_ij ∇²φ_j,   G_i = J_netᵀ M J_net

with φ_j(θ) = L_j(θ_j(θ)) (k_j = ∇φ_j), J_net the policy's Jacobian at θ_i on stage i's
states and M the Gaussian's Fisher matrix (1/σ² per mean coordinate, 2 per log σ). Three
ways to apply it, from fastest to most general:

* :func:`curvature_fvp` for the Gaussian MLP policy and any tableau whose points move by
  k_1 alone (every two-stage tableau, and Euler; also a tableau per parameter group made
  of such tableaus, ANIL among them): then J_i = I - D_i H with D_i the diagonal of the
  moves h q_i1 (one number, or one per parameter tensor) and H the Hessian of the
  REINFORCE loss at θ, applied in closed form
  (``rkmeta_rl/rl/reinforce_hessian.py``: Pearlmutter's R-operator written out for the
  MLP) through activations cached once per meta-iteration, like G_i
  (``rkmeta_rl/rl/mlp_products.py``), over the tasks in chunks. No autograd graph.
  :func:`closed_form_gradient` gives the meta-gradient the same way.
* :func:`stagewise_fvp` for any tableau (rk3, rk4: their J_i hold third derivatives):
  J_i v by one backward pass through the stage construction (J_i is symmetric).
* :func:`double_backward_fvp` for a tableau per parameter group whose points need later
  k_j (a group on rk3 or rk4): double backward through the weighted KL.

``rl.paths.choose_path`` picks one per meta-step. All three give the same matrix
(tests/test_trpo_curvature.py, tests/test_curvature_closed_form.py). Shapes: T tasks, N
steps per task (episodes × horizon), d inputs, A actions; parameters are shared (θ) or per
task (a leading T).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from rkmeta_rl.rk import Params, Scheme, repeat_params, stage_points
from rkmeta_rl.rl.chunk_threads import map_chunks
from rkmeta_rl.rl.config import MetaStepConfig
from rkmeta_rl.rl.episodes import Episodes
from rkmeta_rl.rl.losses import StageObjective, kl_weights, reinforce_loss
from rkmeta_rl.rl.mlp_products import MLPLinearization, linearize, step_weights
from rkmeta_rl.rl.policy import GaussianMLPPolicy
from rkmeta_rl.rl.reinforce_hessian import (
    ChunkedHessian,
    ReinforceHessian,
    tasks_of,
)
from rkmeta_rl.rl.trpo import dot, flat_grad, unflatten
from rkmeta_rl.tableau import Tableau

FVP = Callable[[Tensor], Tensor]
Moves = dict[str, float]  # β_i: stage i's move h q_i1 of every parameter tensor


def has_closed_form_points(tableau: Tableau | Scheme) -> bool:
    """Whether the stage points, and k_1, have a closed form: every point is
    θ_i = θ - h q_i1 k_1 (q_ij = 0 for j > 1), so J_i = I - D_i H with H the REINFORCE
    Hessian at θ and D_i the moves h q_i1 (:func:`point_moves`). Every two-stage tableau
    and Euler, and a tableau per parameter group made of them (each group with its own
    h q_i1: ANIL's frozen body moves by 0); not rk3 or rk4."""
    tableaus = [tableau] if isinstance(tableau, Tableau) else tableau.tableaus.values()
    return all(q == 0.0 for tab in tableaus for row in tab.q for q in row[1:])


def has_closed_form_curvature(tableau: Tableau | Scheme, cfg: MetaStepConfig) -> bool:
    """Whether :func:`curvature_fvp` and :func:`closed_form_gradient` apply, i.e. every
    J_i = I - D_i H: closed-form points (:func:`has_closed_form_points`), or first-order
    mode (every J_i = I)."""
    return has_closed_form_points(tableau) or cfg.first_order


def point_moves(tableau: Tableau | Scheme, h: float | None, names: Iterable[str]
                ) -> list[Moves]:
    """h q_i1 of every parameter, stage by stage: one tableau's with its step h, or each
    group's own h_n q_n,i1 (a ``Scheme``; h None)."""
    if isinstance(tableau, Tableau):
        return [dict.fromkeys(names, h * tableau.q[i][0]) for i in range(tableau.stages)]
    return [tableau.move(i, 0) for i in range(tableau.stages)]


def stage_moves(tableau: Tableau | Scheme, h: float | None, names: Iterable[str],
                cfg: MetaStepConfig) -> list[Moves]:
    """D_i with J_i = I - D_i H: :func:`point_moves`, or 0 in first-order mode."""
    moves = point_moves(tableau, h, names)
    return [dict.fromkeys(m, 0.0) for m in moves] if cfg.first_order else moves


def moving(move: Moves) -> bool:
    """Whether a stage's point moves with θ through k_1 (J_i ≠ I)."""
    return any(m != 0.0 for m in move.values())


def points_by_k1(theta: Params, k1: Params, tableau: Tableau | Scheme, h: float | None
                 ) -> list[Params]:
    """θ_i = θ - h q_i1 k_1 per task (values): the stage points of a tableau (or a tableau
    per group, each with its own h q_i1) that moves by k_1 alone, from θ (shared) and the
    per-task k_1 (T, ...)."""
    rep = repeat_params({n: v.detach() for n, v in theta.items()}, next(iter(k1.values())).shape[0])
    moves = point_moves(tableau, h, rep)
    return [rep if i == 0 else {n: rep[n] - moves[i][n] * k1[n] for n in rep}
            for i in range(len(moves))]


def curvature_fvp(
    policy: GaussianMLPPolicy,
    tableau: Tableau | Scheme,
    h: float | None,
    data: dict[int, Episodes],
    points: list[Params],
    theta: Params,
    cfg: MetaStepConfig,
    hessian: ChunkedHessian | None = None,
) -> FVP:
    """v -> (F + damping·I) v in closed form, where every J_i = I - D_i H
    (:func:`has_closed_form_curvature`): J_i v = v - D_i H v with D_i the moves h q_i1
    (:func:`stage_moves`; one number, or one per parameter tensor for a tableau per group)
    and H the REINFORCE loss's Hessian at θ on stage 1's episodes; J_iᵀ u = u - H D_i u, so

        F v = Σ_i w_i Σ_t (I - H_t D_i) G_it (I - D_i H_t) v,

    per chunk of tasks: one H product with the shared v, one G product per stage, and one
    H product with the per-task cotangents Σ_i D_i G_it J_it v summed over the chunk's
    tasks. ``hessian``: H, when the caller already built it on the same episodes. With
    ``cfg.curvature_fraction`` < 1 only the first ⌈f·E⌉ episodes of each task enter G
    and H (an approximation; the points stay exact).
    """
    subsampled = _curvature_data(data, cfg)
    if subsampled is not data:
        data, hessian = subsampled, None
    num_tasks = data[0].num_tasks
    theta = {n: v.detach() for n, v in theta.items()}
    moves = stage_moves(tableau, h, theta, cfg)
    if hessian is None and any(moving(m) for m, w in zip(moves, kl_weights(tableau),
                                                         strict=True) if w):
        hessian = ChunkedHessian(policy, theta, data[0])

    def linearized(part: slice) -> list:
        """[(D_i, linearization, Fisher on μ, on log σ)] per stage with w_i > 0."""
        stages = []
        for i, w in enumerate(kl_weights(tableau)):
            if w == 0:
                continue
            obs, _, _, mask = data[i].tasks(part).flat()
            at = theta if i == 0 else tasks_of(points[i], part, theta)
            net = linearize(policy, at, obs)
            weight = step_weights(mask, w / num_tasks)  # (T_c, N, 1)
            stages.append((moves[i], net, weight * torch.exp(-2.0 * net.log_std),
                           2.0 * weight.sum(-2)))
        return stages

    parts = data[0].task_chunks()
    device = data[0].obs.device
    chunks = list(zip([None] * len(parts) if hessian is None else [h for _, h in hessian.parts],
                      map_chunks(linearized, parts, device), strict=True))

    def fvp(v: Tensor) -> Tensor:
        v_theta = unflatten(v, theta)
        total = {n: cfg.cg_damping * x for n, x in v_theta.items()}
        for part in map_chunks(lambda chunk: _chunk_product(*chunk, v_theta), chunks, device):
            total = {n: total[n] + part[n] for n in total}
        return torch.cat([total[n].reshape(-1) for n in theta])

    return fvp


def _chunk_product(hessian: ReinforceHessian | None, stages: list, v: Params) -> Params:
    """Σ_i w_i Σ_t J_itᵀ G_it J_it v over one chunk's tasks (see :func:`curvature_fvp`)."""
    hv = hessian(v, per_task=True) if any(moving(m) for m, *_ in stages) else None
    total: Params | None = None
    cotangent: Params | None = None  # Σ_i D_i u_i per task
    for move, net, fisher_mean, fisher_log_std in stages:
        moves_with_theta = moving(move)  # J_i ≠ I
        jv = {n: x - move[n] * hv[n] for n, x in v.items()} if moves_with_theta else v
        d_mean = net.jvp_mean(jv)
        d_log_std = jv["log_std"].expand(d_mean.shape[0], -1) * fisher_log_std
        u = net.vjp(d_mean.mul_(fisher_mean), d_log_std, per_task=moves_with_theta)
        if moves_with_theta:
            cotangent = {n: move[n] * x + (0.0 if cotangent is None else cotangent[n])
                         for n, x in u.items()}
            u = {n: x.sum(0) for n, x in u.items()}
        total = u if total is None else {n: total[n] + u[n] for n in total}
    if cotangent is not None:
        back = hessian(cotangent, per_task=False)
        total = {n: total[n] - back[n] for n in total}
    return total


def closed_form_gradient(
    objective: Callable[[list[Params]], Tensor],
    points: list[Params],
    moves: list[Moves],
    hessian: ChunkedHessian | None,
) -> tuple[Tensor, Params]:
    """S and ∇_θ S for S = objective(θ_1(θ), ..., θ_s(θ)) with per-task points that move by
    k_1 alone: Σ_i J_iᵀ ∇_{θ_i} S = Σ_i Σ_t g_it - H(Σ_i D_i g_i) with g_i = ∇_{θ_i} S per
    task and D_i the moves (:func:`stage_moves`). ``points`` are values (no graph);
    ``hessian`` is needed when any stage moves."""
    leaves = [{n: v.detach().requires_grad_() for n, v in p.items()} for p in points]
    flat = [x for leaf in leaves for x in leaf.values()]
    value = objective(leaves)
    grads = torch.autograd.grad(value, flat, allow_unused=True, materialize_grads=True)
    names = list(points[0])
    per_stage = [dict(zip(names, grads[i * len(names):(i + 1) * len(names)], strict=True))
                 for i in range(len(points))]
    total = {n: sum(g[n].sum(0) for g in per_stage) for n in names}
    cotangent = {n: sum(m[n] * g[n] for m, g in zip(moves, per_stage, strict=True)
                        if moving(m)) for n in names}
    if any(moving(m) for m in moves):
        back = hessian(cotangent, per_task=False)
        total = {n: total[n] - back[n] for n in names}
    return value.detach(), total


def stagewise_fvp(
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
    For any tableau; :func:`curvature_fvp` is faster where it applies.

    ``rep`` holds the per-task copies of θ that ``points`` were built from. With
    ``cfg.curvature_fraction`` < 1 only the first ⌈f·E⌉ episodes of each task enter
    G_i and the Hessians inside J_i (an approximation; the points stay exact).
    """
    num_tasks = data[0].num_tasks
    jac_rep, jac_points = rep, points
    subsampled = _curvature_data(data, cfg)
    if subsampled is not data:
        data = subsampled
        jac_rep = repeat_params(theta, num_tasks)
        jac_points = stage_points(jac_rep, tableau, h,
                                  lambda i, p: reinforce_loss(policy, p, data[i]),
                                  first_order=cfg.first_order)
    names = list(theta)
    stages = _stagewise_stages(policy, tableau, data, points, cfg)

    def fvp(v: Tensor) -> Tensor:
        v_rep = {n: x.expand(num_tasks, *x.shape) for n, x in unflatten(v, theta).items()}
        total = cfg.cg_damping * v
        outs, cots = [], []
        for i, identity, net, fisher in stages:
            if identity:
                jv = v_rep
            else:
                jv = dict(zip(names, torch.autograd.grad(
                    [jac_points[i][n] for n in names], [jac_rep[n] for n in names],
                    [v_rep[n] for n in names], retain_graph=True), strict=True))
            u = net.vjp(net.jvp_mean(jv).mul_(fisher[0]), jv["log_std"] * fisher[1], True)
            g = [u[n] for n in names]
            if identity:
                total = total + torch.cat([x.sum(0).reshape(-1) for x in g])
            else:
                outs += [jac_points[i][n] for n in names]
                cots += list(g)
        if outs:
            total = total + flat_grad(outs, theta, grad_outputs=cots, retain_graph=True)
        return total

    return fvp


def _stagewise_stages(
    policy: GaussianMLPPolicy,
    tableau: Tableau,
    data: dict[int, Episodes],
    points: list[Params],
    cfg: MetaStepConfig,
) -> list[tuple[int, bool, MLPLinearization, tuple[Tensor, Tensor]]]:
    """Per stage with w_i > 0: (i, whether J_i = I, the network linearised at θ_i on stage
    i's states, the Fisher weights on μ (T, N, A) and on log σ (T, 1)) for
    :func:`stagewise_fvp`."""
    num_tasks = data[0].num_tasks
    stages = []
    for i, w in enumerate(kl_weights(tableau)):
        if w == 0:
            continue
        obs, _, _, mask = data[i].flat()
        net = MLPLinearization(policy, points[i], obs)
        c = step_weights(mask, w / num_tasks)  # (T, N, 1)
        fisher = (c * torch.exp(-2.0 * net.log_std), 2.0 * c.sum(-2))  # on μ, on log σ
        identity = i == 0 or cfg.first_order
        stages.append((i, identity, net, fisher))
    return stages


def double_backward_fvp(
    policy: GaussianMLPPolicy,
    scheme: Scheme,
    data: dict[int, Episodes],
    points: list[Params],
    theta: Params,
    cfg: MetaStepConfig,
) -> Callable[[Tensor], Tensor]:
    """v -> (F + damping·I) v with F the Hessian of the weighted KL at θ_old, by double
    backward through the stage construction: for a tableau per parameter group whose points
    need later k_j, where the stage Jacobians I - Σ_j D_ij ∇²φ_j (D_ij the groups' h_n
    q_n,ij) are neither symmetric (:func:`stagewise_fvp`) nor of the form I - D_i H
    (:func:`curvature_fvp`). Any tableau or scheme; exact, and slower.

    ``points`` are the exact stage points (values). With ``cfg.curvature_fraction`` < 1 the
    curvature is the one :func:`stagewise_fvp` defines: the KL's states and the Hessians
    inside J_i come from the first ⌈f·E⌉ episodes of each task, while the KL is still taken
    at the exact points. The moving points are θ_i + (θ̃_i(θ) - θ̃_i(θ_old)), θ̃_i the stage
    construction on the subsample: equal to θ_i at θ_old, with θ̃_i's Jacobian."""
    sub = _curvature_data(data, cfg)
    moving = stage_points(repeat_params(theta, sub[0].num_tasks), scheme, None,
                          lambda i, p: reinforce_loss(policy, p, sub[i]),
                          first_order=cfg.first_order)
    exact = [{n: v.detach() for n, v in p.items()} for p in points]
    if sub is not data:
        moving = [{n: at[n] + (p[n] - p[n].detach()) for n in p}
                  for at, p in zip(exact, moving, strict=True)]
    kl = StageObjective(policy, scheme, sub, exact).kl(moving)  # 0 at θ_old, with its graph
    grad = flat_grad(kl, theta, create_graph=True)

    def fvp(v: Tensor) -> Tensor:
        return cfg.cg_damping * v + flat_grad(dot(grad, v), theta, retain_graph=True)

    return fvp


def _curvature_data(data: dict[int, Episodes], cfg: MetaStepConfig) -> dict[int, Episodes]:
    """The episodes the curvature sees: all, or the first ⌈f·E⌉ of each task."""
    n_eps = data[0].obs.shape[1]
    keep = max(1, math.ceil(cfg.curvature_fraction * n_eps))
    return data if keep >= n_eps else {i: ep.first_episodes(keep) for i, ep in data.items()}
