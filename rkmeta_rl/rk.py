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

A tableau per parameter group (a ``Scheme``; docs/method.md, "A tableau per parameter
group"): every parameter n follows its own tableau (a_n, q_n) with its own step h_n, all
sharing the stage structure (the k_j are the same gradients; a tableau with fewer stages is
padded with stages that have weight 0 and do not move its parameters):

    θ_i[n] = θ[n] - h_n Σ_{j<i} q_n,ij k_j[n],      ḡ[n] = Σ_i a_n,i k_i[n].

Parameters are dicts name -> tensor. They may carry a leading task dimension: a
task's loss then depends only on its own slice, so the gradient of the summed loss with
respect to the per-task tensor is every task's own gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from rkmeta_rl.tableau import Tableau

Params = dict[str, Tensor]
StageLoss = Callable[[int, Params], Tensor]


@dataclass(frozen=True)
class Scheme:
    """Each parameter's tableau and step h. ``Scheme.uniform`` is the usual case (one tableau
    and one h for every parameter); ``rkmeta_rl.layer_methods`` builds one per group."""

    tableaus: Mapping[str, Tableau]
    steps: Mapping[str, float]

    @classmethod
    def uniform(cls, tableau: Tableau, h: float, names: Iterable[str]) -> Scheme:
        names = list(names)
        return cls({n: tableau for n in names}, {n: h for n in names})

    @property
    def stages(self) -> int:
        return max(t.stages for t in self.tableaus.values())

    def _coef(self, n: str, i: int, row: Callable[[Tableau], float]) -> float:
        tab = self.tableaus[n]
        return row(tab) if i < tab.stages else 0.0

    def weight(self, i: int) -> dict[str, float]:
        """a_n,i for every parameter (0 past a tableau's own stages)."""
        return {n: self._coef(n, i, lambda t: t.a[i]) for n in self.tableaus}

    def move(self, i: int, j: int) -> dict[str, float]:
        """h_n q_n,ij for every parameter."""
        return {n: self.steps[n] * self._coef(n, i, lambda t: t.q[i][j]) for n in self.tableaus}

    def node_step(self, i: int) -> dict[str, float]:
        """h_n c_n,i: the size of stage i's further adaptation steps."""
        return {n: self.steps[n] * self._coef(n, i, lambda t: t.c[i]) for n in self.tableaus}

    def needs_k(self, j: int) -> bool:
        return any(j < t.stages and t.needs_k(j) for t in self.tableaus.values())

    @property
    def shared_weights(self) -> tuple[float, ...] | None:
        """The weights a when every parameter has the same ones (then Σ_i a_i L_i(θ_i) is
        the objective), else None."""
        rows = {tuple(self.weight(i)[n] for i in range(self.stages)) for n in self.tableaus}
        return rows.pop() if len(rows) == 1 else None


@dataclass(frozen=True)
class _Uniform:
    """One tableau and one h for every parameter: :class:`Scheme`'s coefficients as single
    numbers (the same products, without a look-up per parameter)."""

    tableau: Tableau
    h: float

    @property
    def stages(self) -> int:
        return self.tableau.stages

    def move(self, i: int, j: int) -> float:
        return self.h * self.tableau.q[i][j]

    def node_step(self, i: int) -> float:
        return self.h * self.tableau.c[i]

    def needs_k(self, j: int) -> bool:
        return self.tableau.needs_k(j)


Step = Mapping[str, float] | float  # per parameter, or one for all


def _any(step: Step) -> bool:
    return step != 0.0 if isinstance(step, float) else any(s != 0.0 for s in step.values())


def repeat_params(params: Params, n: int) -> Params:
    """θ -> per-task copies with a leading task dimension n (a differentiable view)."""
    return {k: v.unsqueeze(0).expand(n, *v.shape) for k, v in params.items()}


def _grad(loss: Tensor, wrt: Params, create_graph: bool) -> Params:
    grads = torch.autograd.grad(
        loss, list(wrt.values()), create_graph=create_graph, allow_unused=True,
        materialize_grads=True,
    )
    return dict(zip(wrt, grads, strict=True))


def _moved(point: Params, step: Step, direction: Params) -> Params:
    """point - step·direction, parameter by parameter (a step of 0 leaves it as it is)."""
    if isinstance(step, float):
        return {n: v - step * direction[n] for n, v in point.items()}
    return {n: v - step[n] * direction[n] if step[n] != 0.0 else v for n, v in point.items()}


def _support_step(point: Params, step: Step, stage_loss: StageLoss,
                  first_order: bool) -> Params:
    """One more adaptation step point - step·∇L_1(point) (differentiated through unless
    ``first_order``)."""
    if first_order:
        x = {n: v.detach().requires_grad_() for n, v in point.items()}
        g = _grad(stage_loss(0, x), x, create_graph=False)
    else:
        g = _grad(stage_loss(0, point), point, create_graph=True)
    return _moved(point, step, g)


def stage_points(
    theta: Params,
    tableau: Tableau | Scheme,
    h: float | None,
    stage_loss: StageLoss,
    *,
    first_order: bool = False,
    create_graph: bool = True,
    on_point: Callable[[int, Params], None] | None = None,
    inner_steps: int = 1,
) -> list[Params]:
    """The stage points θ_1..θ_s of Eq. 4 as functions of ``theta`` (``tableau``: one
    tableau with step ``h``, or a :class:`Scheme`, whose steps are its own).

    on_point(i, θ_i) is called as soon as θ_i is known and before stage i's loss is
    used (RL samples stage i's episodes there). k_i is only computed for stages whose
    k builds a later point. ``create_graph=False`` gives values only (no second-order
    graph is kept beyond what later stages' total derivatives need).
    """
    if not isinstance(tableau, Scheme) and (h is None or h <= 0):
        raise ValueError(f"step size h must be > 0, got {h}")
    if isinstance(inner_steps, bool) or not isinstance(inner_steps, int) or inner_steps < 1:
        raise ValueError(f"inner_steps must be an integer >= 1, got {inner_steps!r}")
    scheme = tableau if isinstance(tableau, Scheme) else _Uniform(tableau, float(h))
    needed = [j for j in range(scheme.stages) if scheme.needs_k(j)]
    last_needed = needed[-1] if needed else -1
    differentiable = torch.is_grad_enabled() and all(v.requires_grad for v in theta.values())
    if not first_order and needed and not differentiable:
        # values only (e.g. under no_grad): total derivatives need a leaf of their own
        theta = {n: v.detach().clone().requires_grad_() for n, v in theta.items()}
    ks: list[Params | None] = []
    points: list[Params] = []
    with torch.enable_grad():  # later stages differentiate through earlier k's
        for i in range(scheme.stages):
            point = dict(theta)
            for j in range(i):
                move = scheme.move(i, j)  # h_n q_n,ij
                if _any(move):
                    point = _moved(point, move, ks[j])
            node_step = scheme.node_step(i)  # h_n c_n,i
            if i > 0 and _any(node_step):
                for _ in range(inner_steps - 1):
                    point = _support_step(point, node_step, stage_loss, first_order)
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


def _weights(tableau: Tableau | Scheme) -> tuple[float, ...]:
    if isinstance(tableau, Tableau):
        return tableau.a
    shared = tableau.shared_weights
    if shared is None:
        raise ValueError("the parameter groups have different weights a, so no single "
                         "objective Σ_i a_i L_i exists: use rk.combined_gradient")
    return shared


def rk_combination(points: list[Params], tableau: Tableau | Scheme, loss: StageLoss) -> Tensor:
    """Σ_i a_i loss(i, θ_i): its gradient with respect to θ is Σ_i a_i k_i (Eq. 3). A
    scheme qualifies when all its groups share the weights a."""
    terms = [a * loss(i, p) for i, (a, p) in enumerate(zip(_weights(tableau), points,
                                                            strict=True)) if a != 0.0]
    if len(terms) <= 2:  # the same number as the sum below, in fewer operations
        return terms[0] if len(terms) == 1 else terms[0] + terms[1]
    return torch.stack(terms).sum()


def combined_gradient(points: list[Params], tableau: Tableau | Scheme, loss: StageLoss,
                      wrt: Params) -> Params:
    """ḡ[n] = Σ_i a_n,i k_i[n] with respect to ``wrt`` (the θ the points were built from):
    one backward pass through Σ_i a_i L_i when the weights are shared, else one per stage."""
    if not isinstance(tableau, Scheme) or tableau.shared_weights is not None:
        return _grad(rk_combination(points, tableau, loss), wrt, create_graph=False)
    total = {n: torch.zeros_like(v) for n, v in wrt.items()}
    active = [i for i in range(tableau.stages) if any(tableau.weight(i).values())]
    for i in active:
        k = torch.autograd.grad(loss(i, points[i]), list(wrt.values()),
                                retain_graph=i != active[-1], allow_unused=True,
                                materialize_grads=True)  # k_i for every parameter
        weight = tableau.weight(i)
        total = {n: total[n] + weight[n] * k_n for (n, k_n) in zip(wrt, k, strict=True)}
    return total


def meta_gradient(
    theta: Params,
    tableau: Tableau | Scheme,
    h: float | None,
    stage_loss: StageLoss,
    *,
    first_order: bool = False,
    inner_steps: int = 1,
) -> Params:
    """ḡ = Σ_i a_i k_i with respect to ``theta`` (which must require grad)."""
    points = stage_points(theta, tableau, h, stage_loss, first_order=first_order,
                          inner_steps=inner_steps)
    return combined_gradient(points, tableau, stage_loss, theta)
