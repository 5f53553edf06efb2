"""The Runge-Kutta meta-gradient, written once for every explicit tableau.

With meta-parameters θ, a tableau (a, q, c) and a step size h (paper Eq. 3-4 with the
descent sign; docs/method.md, "The RK meta-gradient"):

    θ_1 = θ
    θ_i(θ) = θ - h Σ_{j<i} q_ij k_j
    k_i = d/dθ L_i(θ_i(θ))              (total derivative through θ_i(θ))
    meta-gradient  ḡ = Σ_i a_i k_i = d/dθ Σ_i a_i L_i(θ_i(θ))

``stage_loss(i, params)`` evaluates stage i's loss on stage i's own data (support set
for i = 1 and query sets after it in supervised learning; episodes sampled with
π_{θ_i} in RL). Midpoint (a = (0, 1), q21 = 1/2) is then exactly second-order MAML with
inner step α = h/2; Euler is the multi-task gradient. With ``first_order=True`` each
k_i is the gradient at the point θ_i without differentiating through θ_i(θ) (the
FOMAML analogue), so dθ_i/dθ = I and no Hessian-vector products are needed.

Several adaptation steps (supervised benchmarks: 5 on 20-way Omniglot) generalise the
stage points the way multi-step MAML generalises θ': with ``inner_steps = m`` each
point θ_i (i > 1, c_i ≠ 0) is followed by m - 1 further gradient steps of size c_i·h on
stage 1's loss (the support set), each differentiated through like the first. For
midpoint this is exactly m-step MAML with α = h/2; with m = 1 it is Eq. 4 unchanged.

Parameters are dicts name -> tensor. They may carry a leading task dimension: a
task's loss then depends only on its own slice, so the gradient of the summed loss with
respect to the per-task tensor is every task's own gradient.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from rkmeta_rl.tableau import Tableau

Params = dict[str, Tensor]
StageLoss = Callable[[int, Params], Tensor]


def repeat_params(params: Params, n: int) -> Params:
    """θ -> per-task copies with a leading task dimension n (a differentiable view)."""
    return {k: v.unsqueeze(0).expand(n, *v.shape) for k, v in params.items()}


def _grad(loss: Tensor, wrt: Params, create_graph: bool) -> Params:
    grads = torch.autograd.grad(
        loss, list(wrt.values()), create_graph=create_graph, allow_unused=True,
        materialize_grads=True,
    )
    return dict(zip(wrt, grads, strict=True))


def _support_step(point: Params, step: float, stage_loss: StageLoss, first_order: bool
                  ) -> Params:
    """One more adaptation step point - step·∇L_1(point) (differentiated through unless
    ``first_order``)."""
    if first_order:
        x = {n: v.detach().requires_grad_() for n, v in point.items()}
        g = _grad(stage_loss(0, x), x, create_graph=False)
    else:
        g = _grad(stage_loss(0, point), point, create_graph=True)
    return {n: point[n] - step * g[n] for n in point}


def stage_points(
    theta: Params,
    tableau: Tableau,
    h: float,
    stage_loss: StageLoss,
    *,
    first_order: bool = False,
    create_graph: bool = True,
    on_point: Callable[[int, Params], None] | None = None,
    inner_steps: int = 1,
) -> list[Params]:
    """The stage points θ_1..θ_s of Eq. 4 as functions of ``theta``.

    on_point(i, θ_i) is called as soon as θ_i is known and before stage i's loss is
    used (RL samples stage i's episodes there). k_i is only computed for stages whose
    k builds a later point. ``create_graph=False`` gives values only (no second-order
    graph is kept beyond what later stages' total derivatives need).
    """
    if h <= 0:
        raise ValueError(f"step size h must be > 0, got {h}")
    if isinstance(inner_steps, bool) or not isinstance(inner_steps, int) or inner_steps < 1:
        raise ValueError(f"inner_steps must be an integer >= 1, got {inner_steps!r}")
    needed = [j for j in range(tableau.stages) if tableau.needs_k(j)]
    last_needed = needed[-1] if needed else -1
    differentiable = torch.is_grad_enabled() and all(v.requires_grad for v in theta.values())
    if not first_order and needed and not differentiable:
        # values only (e.g. under no_grad): total derivatives need a leaf of their own
        theta = {n: v.detach().clone().requires_grad_() for n, v in theta.items()}
    ks: list[Params | None] = []
    points: list[Params] = []
    with torch.enable_grad():  # later stages differentiate through earlier k's
        for i in range(tableau.stages):
            point = dict(theta)
            for j in range(i):
                qij = tableau.q[i][j]
                if qij != 0.0:
                    kj = ks[j]
                    point = {n: point[n] - (h * qij) * kj[n] for n in point}
            if i > 0 and tableau.c[i] != 0.0:
                for _ in range(inner_steps - 1):
                    point = _support_step(point, h * tableau.c[i], stage_loss, first_order)
            points.append(point)
            if on_point is not None:
                on_point(i, point)
            if i not in needed:
                ks.append(None)
                continue
            if first_order:
                x = {n: v.detach().requires_grad_() for n, v in point.items()}
                ks.append(_grad(stage_loss(i, x), x, create_graph=False))
            else:
                graph = create_graph or i < last_needed
                ks.append(_grad(stage_loss(i, point), theta, create_graph=graph))
    return points


def rk_combination(points: list[Params], tableau: Tableau, loss: StageLoss) -> Tensor:
    """Σ_i a_i loss(i, θ_i): its gradient with respect to θ is Σ_i a_i k_i (Eq. 3)."""
    terms = [a * loss(i, p) for i, (a, p) in enumerate(zip(tableau.a, points, strict=True))
             if a != 0.0]
    return torch.stack(terms).sum()


def meta_gradient(
    theta: Params,
    tableau: Tableau,
    h: float,
    stage_loss: StageLoss,
    *,
    first_order: bool = False,
    inner_steps: int = 1,
) -> Params:
    """ḡ = Σ_i a_i k_i with respect to ``theta`` (which must require grad)."""
    points = stage_points(theta, tableau, h, stage_loss, first_order=first_order,
                          inner_steps=inner_steps)
    return _grad(rk_combination(points, tableau, stage_loss), theta, create_graph=False)
