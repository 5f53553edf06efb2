"""``RKMetaLearner``: the RK meta-gradient for any ``nn.Module`` (the package's
docstring, ``rkmeta_rl/learner/__init__.py``, says how it evaluates the tasks)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from rkmeta_rl.layer_methods import Rules, adaptation_steps, build_scheme, parse_layer_methods
from rkmeta_rl.learner.losses import (
    Losses,
    StageLoss,
    TaskLoss,
    batched_stage_loss,
    check_steps,
    pick_losses,
    task_stage_loss,
)
from rkmeta_rl.learner.per_task import (
    norm_layers,
    per_task_call,
    per_task_copies,
    swap_of,
    task_count,
    updated_buffers,
)
from rkmeta_rl.learner.tasks import Stacked, as_stacked, stack_tasks
from rkmeta_rl.methods import get_tableau
from rkmeta_rl.rk import (
    Params,
    Scheme,
    combined_gradient,
    repeat_params,
    rk_combination,
    stage_points,
)
from rkmeta_rl.run.config import PYTHON_NAMES, resolve_steps
from rkmeta_rl.tableau import Tableau


class RKMetaLearner(nn.Module):
    """Meta-learn ``module`` with an explicit Runge-Kutta meta-update.

    Args:
        module: any ``nn.Module``; its parameters that require grad are θ.
        method: a named tableau (``rkmeta-rl methods``), or pass ``tableau``.
        inner_lr: α, the adaptation step (h = α / c2), or give ``step_size``.
        step_size: h, the RK step (α = c2·h), instead of ``inner_lr``.
        tableau: a ``Tableau`` (instead of ``method``), or a ``Scheme`` (a tableau and a
            step h per parameter; then no inner_lr or step_size).
        first_order: k_i at its point, not differentiated through θ_i(θ).
        inner_steps: adaptation steps per stage point (m; docs/method.md).
        layer_methods: a tableau per parameter group, ``"head=midpoint,*=ralston"``
            (``rkmeta_rl.layer_methods``); replaces ``method``.
        vectorize: None (default): all tasks at once through ``torch.func.vmap`` where it
            can run them, else one at a time with a warning saying why; True: all at once
            or an error; False: one at a time.

    Raises:
        ValueError: the module has no parameters that require grad, neither ``inner_lr``
            nor ``step_size`` is given (without a ``Scheme``), or the arguments contradict
            each other.

    ``learner(tasks, support_loss, query_loss)`` is the meta-loss (``.backward()`` leaves
    ḡ in ``.grad``), :meth:`meta_gradient` ḡ itself; :meth:`adapt` takes test-time steps
    (one task, or all at once with ``stacked=True``); :meth:`functional` and
    :meth:`per_task` evaluate the module at given parameters, for one task or T.
    """

    def __init__(self, module: nn.Module, method: str = "ralston", *,
                 inner_lr: float | None = None, step_size: float | None = None,
                 tableau: Tableau | Scheme | None = None,
                 layer_methods: str | Rules | None = None, first_order: bool = False,
                 inner_steps: int = 1, vectorize: bool | None = None) -> None:
        super().__init__()
        self.module = module
        self.names = [n for n, p in module.named_parameters() if p.requires_grad]
        if not self.names:
            raise ValueError(f"{type(module).__name__} has no parameters that require grad: "
                             "there is nothing to meta-learn")
        check_steps("inner_steps", inner_steps, 1)
        if vectorize not in (None, True, False):
            raise ValueError(f"vectorize must be None, True or False, got {vectorize!r}")
        self.first_order, self.inner_steps, self.vectorize = first_order, inner_steps, vectorize
        self.scheme, self._rk = self._scheme(method, inner_lr, step_size, tableau, layer_methods)
        self._shared = self.scheme.shared_weights is not None
        self.alphas = adaptation_steps(self.scheme)  # each parameter's test-time step
        self._swap = swap_of(module)  # the module's structure as it is now, as self.names
        self._norms = norm_layers(module)
        self._shapes = {n: p.shape for n, p in module.named_parameters() if p.requires_grad}
        self._unbatchable = ""  # why vmap could not run this module, once it failed
        self._checked: tuple[int, ...] = ()  # the params last checked (ids)
        self._every_param = set(self.names) == self._swap.params  # none frozen

    def _scheme(self, method: str, inner_lr: float | None, step_size: float | None,
                tableau: Tableau | Scheme | None, layer_methods: str | Rules | None
                ) -> tuple[Scheme, tuple[Tableau | Scheme, float | None]]:
        """(each parameter's tableau and step, the arguments stage_points takes for it)."""
        if isinstance(tableau, Scheme):
            if inner_lr is not None or step_size is not None or layer_methods is not None:
                raise ValueError("a Scheme has its own steps: give no inner_lr, step_size or "
                                 "layer_methods with it")
            if set(tableau.tableaus) != set(self.names):
                raise ValueError(f"the scheme is for parameters {sorted(tableau.tableaus)}, "
                                 f"the module's are {sorted(self.names)}")
            return tableau, (tableau, None)
        if inner_lr is None and step_size is None:
            raise ValueError("give inner_lr (the adaptation step α) or step_size (h)")
        if layer_methods is not None:
            rules = (parse_layer_methods(layer_methods, PYTHON_NAMES)
                     if isinstance(layer_methods, str) else layer_methods)
            scheme = build_scheme(rules, self.names, inner_lr, step_size, inner_lr or 0.0,
                                  PYTHON_NAMES)
            return scheme, (scheme, None)
        tab = tableau if tableau is not None else get_tableau(method)
        _, h = resolve_steps(tab, inner_lr, step_size, inner_lr or 0.0, PYTHON_NAMES)
        # one tableau and one h: stage_points takes them as such (the same numbers as the
        # uniform scheme, without a look-up per parameter)
        return Scheme.uniform(tab, h, self.names), (tab, h)

    # -- evaluating the module at given parameters ----------------------------------------
    def theta(self) -> Params:
        """θ: the module's own parameters.

        Returns:
            The parameters that require grad, by name.
        """
        params = dict(self.module.named_parameters())
        return {n: params[n] for n in self.names}

    def functional(self, params: Params) -> Callable[..., Any]:
        """The module evaluated at given parameters.

        Args:
            params: parameters by name (names and shapes checked), such as :meth:`adapt`
                returns.

        Returns:
            A callable taking the module's inputs.

        Raises:
            ValueError: a name is not one of the module's, or a shape differs.
        """
        self._check(params)

        def model(*args: Any, **kwargs: Any) -> Any:
            return functional_call(self.module, params, args, kwargs)

        return model

    def per_task(self, params: Params) -> Callable[..., Any]:
        """The module evaluated for T tasks at once, each at its own parameters.

        Args:
            params: (T, ...) by name (as :meth:`adapt` with ``stacked=True`` returns them).

        Returns:
            A model that takes inputs and gives outputs with the leading task dimension T.

        Raises:
            ValueError: a name is not one of the module's, or a shape differs.
        """
        size = task_count(params)
        self._check(params, size)

        def model(*args: Any, **kwargs: Any) -> Any:
            stats = self._task_copies(size)
            out = per_task_call(self.module, self._swap, {**params, **stats},
                                 size, args, kwargs, vmapped=True)
            self._write_back(stats)
            return out

        return model

    def _check(self, params: Params, tasks: int | None = None) -> None:
        shapes = self._shapes
        for n, v in params.items():
            if n not in shapes:
                shapes = {k: p.shape for k, p in self.module.named_parameters()}
                if n not in shapes:
                    raise ValueError(f"parameter {n!r} is not one of the module's: "
                                     f"{self.names}")
            shape = shapes[n] if tasks is None else (tasks, *shapes[n])
            if v.shape != shape:
                raise ValueError(f"parameter {n!r} has shape {tuple(v.shape)}, the module's is "
                                 f"{tuple(shapes[n])}"
                                 + ("" if tasks is None else f" (after {tasks} tasks)"))

    def _theta(self, params: Params | None) -> Params:
        """θ: ``params`` (checked) or the module's own."""
        if params is None:
            return self.theta()
        key = (id(params), *map(id, params.values()))
        if key != self._checked:  # the same tensors as last time: checked then
            if set(params) != set(self.names):
                raise ValueError("params must name exactly the module's parameters "
                                 f"{self.names}, got {sorted(params)}")
            self._check(params)
            self._checked = key
        return dict(params)  # in the caller's order (the gradient comes back in it)

    # -- running statistics ----------------------------------------------------------------
    def _task_copies(self, size: int) -> dict[str, Tensor]:
        """A copy per task of the buffers a forward pass updates, (T, ...)."""
        return per_task_copies(updated_buffers(self._norms), size)

    def _write_back(self, copies: dict[str, Tensor]) -> None:
        """The tasks' updates of the running statistics, averaged (a count: task 0's)."""
        if not copies:
            return
        own = dict(self.module.named_buffers())
        with torch.no_grad():
            for n, c in copies.items():
                own[n].copy_(c.mean(0) if c.is_floating_point() else c[0])

    # -- stage losses --------------------------------------------------------------------
    # -- the meta-objective -------------------------------------------------------------------
    def forward(self, tasks: Iterable[Any] | Any, support_loss: TaskLoss | None = None,
                query_loss: TaskLoss | None = None, *, stage_loss: StageLoss | None = None,
                stacked: bool = False, batched_losses: bool = False,
                params: Params | None = None) -> Tensor:
        """The meta-loss of a batch of tasks.

        Args:
            tasks: a list of per-task items, or with ``stacked=True`` one item whose
                tensors are (T, ...).
            support_loss: ``support_loss(model, task)``, stage 1's loss.
            query_loss: ``query_loss(model, task)``, the later stages' loss.
            stage_loss: ``stage_loss(i, model, task)`` for stage i (from 0), instead of
                the two above.
            stacked: ``tasks`` is one item whose tensors are (T, ...).
            batched_losses: each loss gets the stacked tasks and the model over tasks
                (inputs and outputs (T, ...)) and returns the T losses (T,).
            params: θ (by name, requiring grad) instead of the module's own parameters.

        Returns:
            A scalar whose gradient with respect to θ is the mean over tasks of
            Σ_i a_i k_i.
        """
        return self._meta(tasks, pick_losses(support_loss, query_loss, stage_loss), stacked,
                          batched_losses, params, gradient=False)

    def meta_gradient(self, tasks: Iterable[Any] | Any, support_loss: TaskLoss | None = None,
                      query_loss: TaskLoss | None = None, *, stage_loss: StageLoss | None = None,
                      stacked: bool = False, batched_losses: bool = False,
                      params: Params | None = None) -> Params:
        """The meta-gradient itself; ``.grad`` is left alone.

        Args:
            tasks: as :meth:`forward`'s.
            support_loss: as :meth:`forward`'s.
            query_loss: as :meth:`forward`'s.
            stage_loss: as :meth:`forward`'s.
            stacked: as :meth:`forward`'s.
            batched_losses: as :meth:`forward`'s.
            params: as :meth:`forward`'s.

        Returns:
            ḡ = the mean over tasks of Σ_i a_i k_i, by parameter.
        """
        return self._meta(tasks, pick_losses(support_loss, query_loss, stage_loss), stacked,
                          batched_losses, params, gradient=True)

    def _meta(self, tasks: Any, losses: Losses, stacked: bool,
              batched_losses: bool, params: Params | None, gradient: bool) -> Any:
        theta = self._theta(params)
        batch, items, why = self._plan(tasks, stacked, batched_losses)

        def run(vmapped: bool) -> Any:
            if vmapped or batched_losses:
                return self._batched(batch, losses, theta, batched_losses, vmapped, gradient)
            return self._loop(items if items is not None else batch.unstacked(), losses,
                              theta, gradient)

        return self._vectorized(run, why)

    def _plan(self, tasks: Any, stacked: bool, batched_losses: bool
              ) -> tuple[Stacked | None, list[Any] | None, str]:
        """(the tasks stacked, or None; the per-task items, or None when only the stacked
        form was given; why they cannot be stacked)."""
        if stacked:
            return as_stacked(tasks), None, ""
        items = list(tasks)
        if not items:
            raise ValueError("no tasks given")
        if not batched_losses and self.vectorize is False:
            return None, items, ""
        batch = stack_tasks(items)
        if isinstance(batch, str):
            if batched_losses or self.vectorize:
                raise ValueError(f"the tasks cannot be stacked ({batch}), which "
                                 f"{'batched_losses' if batched_losses else 'vectorize'}"
                                 "=True needs")
            return None, items, batch
        return batch, items, ""

    def _vectorized(self, run: Callable[[bool], Any], why: str) -> Any:
        """``run(True)``: all tasks at once; ``run(False)``: one at a time, where vectorize
        is False, the tasks cannot be stacked (``why``), or vmap fails where the loop does
        not (warned, once: the learner stays on the loop)."""
        if self.vectorize is False or why or (self._unbatchable and self.vectorize is None):
            out = run(False)
        else:
            try:
                return run(True)
            except (RuntimeError, NotImplementedError) as e:
                if self.vectorize:
                    raise
                failure = e
            out = run(False)  # an error of the module or the losses themselves raises here
            first = (str(failure).strip().splitlines() or [""])[0]
            self._unbatchable = why = (f"torch.func.vmap cannot run "
                                       f"{type(self.module).__name__} with these losses "
                                       f"({type(failure).__name__}: {first})")
        if why and self.vectorize is None:
            warnings.warn(f"RKMetaLearner evaluates the tasks one at a time (slower): {why}; "
                          "vectorize=False chooses this without a warning", stacklevel=2)
        return out

    def _loop(self, items: list[Any], losses: Losses,
              theta: Params, gradient: bool) -> Any:
        """One task at a time: each task's stage points and objective."""
        results = []
        for task in items:
            stage_loss = task_stage_loss(self.module, task, losses)
            points = stage_points(theta, *self._rk, stage_loss, first_order=self.first_order,
                                  inner_steps=self.inner_steps)
            results.append(self._objective(points, stage_loss, theta, 1, gradient))
        if gradient:
            return {n: sum(r[n] for r in results) / len(results) for n in theta}
        return torch.stack(results).mean()

    def _batched(self, batch: Stacked, losses: Losses,
                 theta: Params, batched_losses: bool, vmapped: bool, gradient: bool) -> Any:
        """All tasks at once: stage points with a leading task dimension (T, ...)."""
        stats = self._task_copies(batch.size) if vmapped else {}
        stage_loss = batched_stage_loss(self.module, self._swap, batch, losses, stats,
                                        batched_losses, vmapped, self._every_param)
        per_task = repeat_params(theta, batch.size)  # (T, ...) views of θ
        points = stage_points(per_task, *self._rk, stage_loss, first_order=self.first_order,
                              inner_steps=self.inner_steps)
        out = self._objective(points, stage_loss, theta, batch.size, gradient)
        self._write_back(stats)
        return out

    def _objective(self, points: list[Params], stage_loss: Callable[[int, Params], Tensor],
                   theta: Params, tasks: int, gradient: bool) -> Tensor | Params:
        """A scalar whose gradient is (1/tasks) Σ_i a_i k_i (stage losses summed over
        ``tasks`` tasks), or with ``gradient`` that gradient."""
        if self._shared:
            objective = rk_combination(points, self._rk[0], stage_loss) / tasks
            if not gradient:
                return objective
            grads = torch.autograd.grad(objective, list(theta.values()), allow_unused=True,
                                        materialize_grads=True)
            return dict(zip(theta, grads, strict=True))
        # groups with their own weights: no single objective has gradient Σ a_n,i k_i[n];
        # this one has it exactly, and its value is Σ_i ā_i L_i with ā_i the weights
        # averaged over the parameters' elements
        losses: dict[int, Tensor] = {}  # L_i at θ_i, as combined_gradient evaluates them

        def recorded(i: int, params: Params) -> Tensor:
            losses[i] = stage_loss(i, params)
            return losses[i]

        grads = combined_gradient(points, self.scheme, recorded, theta)
        if gradient:
            return {n: g / tasks for n, g in grads.items()}
        linear = sum((g.detach() * theta[n]).sum() for n, g in grads.items()) / tasks
        sizes = {n: v.numel() for n, v in theta.items()}
        value = sum(sum(self.scheme.weight(i)[n] * k for n, k in sizes.items())
                    / sum(sizes.values()) * loss.detach() for i, loss in losses.items())
        return linear - linear.detach() + value / tasks

    # -- adaptation ----------------------------------------------------------------------------
    def adapt(self, task: Any, support_loss: TaskLoss, steps: int = 1,
              params: Params | None = None, *, stacked: bool = False,
              batched_losses: bool = False) -> Params:
        """Parameters after ``steps`` plain gradient steps on ``task``'s support loss.

        Each parameter takes its own α (c2·h of its tableau; 0 for a frozen group).

        Args:
            task: one task's data; with ``stacked=True``, T tasks stacked as
                :meth:`forward` takes them, all adapted at once.
            support_loss: ``support_loss(model, task)``, as for :meth:`forward`.
            steps: the number of gradient steps (0 or more).
            params: where to start instead of θ.
            stacked: ``task`` holds T tasks stacked.
            batched_losses: as for :meth:`forward` (needs ``stacked=True``).

        Returns:
            The adapted parameters by name, detached, for inference: evaluate them with
            :meth:`functional`, or with ``stacked=True`` (T, ...) with :meth:`per_task`.

        Raises:
            ValueError: ``steps`` is negative, or ``batched_losses`` without ``stacked``.
        """
        check_steps("steps", steps, 0)
        if batched_losses and not stacked:
            raise ValueError("batched_losses=True adapts stacked tasks: give stacked=True")
        start = {n: v.detach() for n, v in (params or self.theta()).items()}
        self._check(start)
        losses = pick_losses(support_loss, support_loss, None)
        if not stacked:
            return self._descend(start, task_stage_loss(self.module, task, losses), steps)
        batch = as_stacked(task)
        per_task = repeat_params(start, batch.size)  # (T, ...)

        def run(vmapped: bool) -> Params:
            stats = self._task_copies(batch.size) if vmapped else {}
            stage_loss = batched_stage_loss(self.module, self._swap, batch, losses, stats,
                                            batched_losses, vmapped, self._every_param)
            out = self._descend(per_task, stage_loss, steps)
            self._write_back(stats)
            return out

        return self._vectorized(run, "")

    def _descend(self, current: Params, stage_loss: Callable[[int, Params], Tensor],
                 steps: int) -> Params:
        for _ in range(steps):
            x = {n: v.detach().clone().requires_grad_() for n, v in current.items()}
            with torch.enable_grad():
                grads = torch.autograd.grad(stage_loss(0, x), list(x.values()),
                                            allow_unused=True, materialize_grads=True)
            current = {n: (v - self.alphas[n] * g).detach()
                       for (n, v), g in zip(x.items(), grads, strict=True)}
        return current
