"""The three ways one RK-TRPO meta-step gets its numbers (docs/method.md, "The exact
curvature product"), chosen once per meta-step by :func:`choose_path`.

Every path gives ``rl.meta_step`` the same four things, in this order:

    points(θ)           the stage points θ_i at θ_old, sampling stage i's episodes at θ_i
                        as soon as it is known (stages in order);
    gradient(S)         S(θ_old) and ∇_θ S (P,) for the RK surrogate S = Σ_i a_i L_i(θ_i(θ));
    fvp()               v -> (F + λI) v, F the weighted KL's Hessian at θ_old;
    evaluator(S, θ)     x -> (S, D) at a line-search candidate x (P,), its points rebuilt
                        from the same episodes.

P is the number of policy parameters, T the number of tasks; per-task parameters carry a
leading T.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable

from torch import Tensor

from rkmeta_rl.rk import Params, Scheme, repeat_params, stage_points
from rkmeta_rl.rl.config import MetaStepConfig
from rkmeta_rl.rl.curvature import (
    FVP,
    closed_form_gradient,
    curvature_fvp,
    double_backward_fvp,
    has_closed_form_curvature,
    has_closed_form_points,
    points_by_k1,
    stage_moves,
    stagewise_fvp,
)
from rkmeta_rl.rl.episodes import Episodes, add_advantages
from rkmeta_rl.rl.losses import StageObjective, reinforce_loss
from rkmeta_rl.rl.policy import GaussianMLPPolicy
from rkmeta_rl.rl.reinforce_hessian import ChunkedHessian
from rkmeta_rl.rl.trpo import flat_grad, flatten, unflatten
from rkmeta_rl.tableau import Tableau


class StageSampler:
    """Each stage's episodes, sampled (with advantages) the first time its point is known:
    the ``on_point`` hook of ``rk.stage_points``. ``seconds``: time spent sampling."""

    def __init__(self, sample: Callable[[int, Params], Episodes], cfg: MetaStepConfig) -> None:
        self.sample, self.cfg = sample, cfg
        self.data: dict[int, Episodes] = {}
        self.seconds = 0.0

    def __call__(self, i: int, point: Params) -> None:
        if i not in self.data:
            t = time.perf_counter()
            detached = {n: v.detach() for n, v in point.items()}
            self.data[i] = add_advantages(self.sample(i, detached), self.cfg.gamma,
                                          self.cfg.gae_lambda)
            self.seconds += time.perf_counter() - t


class CurvaturePath(ABC):
    """Stage points, meta-gradient, curvature product and line-search values of one
    meta-step. ``points`` comes first: the others use the points and θ it was given."""

    def __init__(self, policy: GaussianMLPPolicy, tableau: Tableau | Scheme, h: float | None,
                 cfg: MetaStepConfig, num_tasks: int, sampler: StageSampler) -> None:
        self.policy, self.tableau, self.h, self.cfg = policy, tableau, h, cfg
        self.num_tasks, self.sampler = num_tasks, sampler
        self.theta: Params = {}
        self.points: list[Params] = []

    @abstractmethod
    def points_at(self, theta: Params) -> list[Params]:
        """The stage points at θ_old (each (T, ...)), sampling every stage in order."""

    @abstractmethod
    def gradient(self, objective: StageObjective) -> tuple[Tensor, Tensor]:
        """S(θ_old) (a scalar) and ∇_θ S (P,)."""

    @abstractmethod
    def fvp(self) -> FVP:
        """v (P,) -> (F + λI) v (P,) at θ_old."""

    @abstractmethod
    def candidate_points(self, theta: Params) -> list[Params]:
        """The stage points (values) at a line-search candidate θ, on the same episodes."""

    def evaluator(self, objective: StageObjective, fixed: Params
                  ) -> Callable[[Tensor], tuple[float, float]]:
        """x (P,) -> (S, D) at θ = x, shaped like ``fixed`` (θ_old, detached)."""

        def evaluate(x: Tensor) -> tuple[float, float]:
            return objective.values(self.candidate_points(unflatten(x, fixed)))

        return evaluate

    def _through_stages(self, rep: Params, create_graph: bool) -> list[Params]:
        """``rk.stage_points`` from per-task θ ``rep`` on the REINFORCE loss, sampling."""
        return stage_points(
            rep, self.tableau, self.h, self._inner_loss, first_order=self.cfg.first_order,
            create_graph=create_graph, on_point=self.sampler,
        )

    def _inner_loss(self, i: int, params: Params) -> Tensor:
        return reinforce_loss(self.policy, params, self.sampler.data[i])


class ClosedForm(CurvaturePath):
    """Every J_i = I - D_i H (D_i the moves h q_i1, one per parameter tensor for a tableau
    per group; 0 in first-order mode): gradient and curvature in closed form, no autograd
    graph (``curvature_fvp``, ``closed_form_gradient``). Where the points move by k_1
    alone, k_1 and the points are in closed form too, and H, built for k_1 on stage 1's
    episodes at θ, is shared with the gradient and the curvature."""

    hessian: ChunkedHessian | None = None

    def points_at(self, theta: Params) -> list[Params]:
        self.theta = theta
        self.points, self.hessian = self._values(theta)
        return self.points

    def gradient(self, objective: StageObjective) -> tuple[Tensor, Tensor]:
        moves = stage_moves(self.tableau, self.h, self.theta, self.cfg)  # H built if any moves
        loss, grads = closed_form_gradient(objective.surrogate, self.points, moves,
                                           self.hessian)
        return loss, flatten(grads)

    def fvp(self) -> FVP:
        return curvature_fvp(self.policy, self.tableau, self.h, self.sampler.data,
                             self.points, self.theta, self.cfg, self.hessian)

    def candidate_points(self, theta: Params) -> list[Params]:
        return self._values(theta)[0]

    def _values(self, theta: Params) -> tuple[list[Params], ChunkedHessian | None]:
        """The stage points as values, and H where they move by k_1 (None otherwise)."""
        if has_closed_form_points(self.tableau):
            return self._points_by_k1(theta)
        rep = repeat_params(theta, self.num_tasks)  # first-order rk3, rk4
        return self._through_stages(rep, create_graph=False), None

    def _points_by_k1(self, theta: Params) -> tuple[list[Params], ChunkedHessian | None]:
        """θ_i = θ - h q_i1 k_1 (values), each stage sampled in order, with k_1 from the
        REINFORCE loss's closed form on stage 1's episodes at θ; and that
        :class:`ChunkedHessian` (None for one stage)."""
        rep = repeat_params({n: v.detach() for n, v in theta.items()}, self.num_tasks)
        self.sampler(0, rep)
        if self.tableau.stages == 1:
            return [rep], None
        hessian = ChunkedHessian(self.policy, theta, self.sampler.data[0])
        points = points_by_k1(theta, hessian.gradient(), self.tableau, self.h)
        for i in range(1, self.tableau.stages):
            self.sampler(i, points[i])
        return points, hessian


class _ThroughStages(CurvaturePath):
    """Points with their graph through the stage construction, the gradient by autograd."""

    rep: Params  # the per-task copies of θ (T, ...) that the points were built from

    def points_at(self, theta: Params) -> list[Params]:
        self.theta, self.rep = theta, repeat_params(theta, self.num_tasks)
        self.points = self._through_stages(self.rep, create_graph=True)
        return self.points

    def gradient(self, objective: StageObjective) -> tuple[Tensor, Tensor]:
        loss = objective.surrogate(self.points)
        return loss, flat_grad(loss, self.theta, retain_graph=True)

    def candidate_points(self, theta: Params) -> list[Params]:
        return self._through_stages(repeat_params(theta, self.num_tasks), create_graph=False)


class Stagewise(_ThroughStages):
    """Any single tableau (rk3, rk4: their J_i hold third derivatives): J_i v by one
    backward pass through the stage construction, J_i being symmetric (``stagewise_fvp``)."""

    def fvp(self) -> FVP:
        return stagewise_fvp(self.policy, self.tableau, self.h, self.sampler.data, self.rep,
                             self.points, self.theta, self.cfg)


class DoubleBackward(_ThroughStages):
    """A tableau per parameter group (a ``Scheme``) whose points need later k_j (a group on
    rk3 or rk4): its stage Jacobians are not symmetric, so double backward through the
    weighted KL (``double_backward_fvp``). Exact for any tableau or scheme (the tests and
    the bench's autograd yardstick force it with ``meta_step(..., path=DoubleBackward)``)."""

    def fvp(self) -> FVP:
        return double_backward_fvp(self.policy, self.tableau, self.sampler.data, self.points,
                                   self.theta, self.cfg)


def choose_path(tableau: Tableau | Scheme, cfg: MetaStepConfig) -> type[CurvaturePath]:
    """The fastest path that is exact for this tableau:

    * :class:`ClosedForm` when every stage Jacobian is J_i = I - D_i H with H the
      REINFORCE Hessian at θ on stage 1's episodes and D_i the moves h q_i1: points that
      move by k_1 alone (every two-stage tableau and Euler, and a tableau per parameter
      group made of them, such as ANIL), or first-order mode (every J_i = I). No autograd
      graph at all.
    * :class:`Stagewise` for any other single tableau (rk3, rk4): J_i holds Hessians of
      later stages (and third derivatives), but is symmetric, so one backward pass through
      the stage construction applies it.
    * :class:`DoubleBackward` for any other tableau per parameter group: its stage
      Jacobians are not symmetric, so only double backward through the weighted KL is exact.
    """
    if has_closed_form_curvature(tableau, cfg):
        return ClosedForm
    return Stagewise if isinstance(tableau, Tableau) else DoubleBackward
