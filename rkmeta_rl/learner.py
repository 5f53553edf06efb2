"""The RK meta-gradient for any ``torch.nn.Module``, in the style of learn2learn's
``MAML(model, lr)``.

    learner = RKMetaLearner(model, method="ralston", inner_lr=0.01)
    opt = torch.optim.Adam(learner.parameters(), lr=1e-3)
    loss = learner(tasks, support_loss, query_loss)   # a scalar
    opt.zero_grad(); loss.backward(); opt.step()       # .grad = mean over tasks of Σ a_i k_i

The model is evaluated through ``torch.func.functional_call`` with explicit parameters, so
no model code changes. ``support_loss(model, task)`` and ``query_loss(model, task)`` are
yours: ``model`` is the module evaluated at a stage point, ``task`` one element of
``tasks``; each returns a scalar. Stage 1's loss is the support loss at θ, stage i > 1's the
query loss at θ_i (docs/method.md, "What the stage losses are").

Buffers (batch-norm statistics) are the module's own and are not adapted. A batch-norm layer
in training mode normalises with the statistics of the batch it sees, as MAML does
(transductive: support and query sets each use their own), and updates its running
averages as a side effect; put the module in ``eval()`` mode to use the running averages
instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from rkmeta_rl.layer_methods import Rules, adaptation_steps, build_scheme, parse_layer_methods
from rkmeta_rl.methods import get_tableau
from rkmeta_rl.rk import Params, Scheme, combined_gradient, rk_combination, stage_points
from rkmeta_rl.run.config import PYTHON_NAMES, resolve_steps
from rkmeta_rl.tableau import Tableau

TaskLoss = Callable[[Callable[..., Any], Any], Tensor]  # (model, task) -> scalar


class RKMetaLearner(nn.Module):
    """Meta-learn ``module`` with an explicit Runge-Kutta meta-update.

    Args:
        module: any ``nn.Module``; its parameters that require grad are θ.
        method: a named tableau (``rkmeta-rl methods``), or pass ``tableau``.
        inner_lr: α, the adaptation step (h = α / c2), or give ``step_size`` h (α = c2·h).
        first_order: k_i at its point, not differentiated through θ_i(θ).
        inner_steps: adaptation steps per stage point (m; docs/method.md).
        layer_methods: a tableau per parameter group, ``"head=midpoint,*=ralston"``
            (``rkmeta_rl.layer_methods``); replaces ``method``.
    """

    def __init__(self, module: nn.Module, method: str = "ralston", *,
                 inner_lr: float | None = None, step_size: float | None = None,
                 tableau: Tableau | None = None, layer_methods: str | Rules | None = None,
                 first_order: bool = False, inner_steps: int = 1) -> None:
        super().__init__()
        self.module = module
        self.names = [n for n, p in module.named_parameters() if p.requires_grad]
        if not self.names:
            raise ValueError(f"{type(module).__name__} has no parameters that require grad: "
                             "there is nothing to meta-learn")
        if inner_lr is None and step_size is None:
            raise ValueError("give inner_lr (the adaptation step α) or step_size (h)")
        if isinstance(inner_steps, bool) or not isinstance(inner_steps, int) or inner_steps < 1:
            raise ValueError(f"inner_steps must be an integer >= 1, got {inner_steps!r}")
        self.first_order, self.inner_steps = first_order, inner_steps
        if layer_methods is not None:
            rules = (parse_layer_methods(layer_methods, PYTHON_NAMES)
                     if isinstance(layer_methods, str) else layer_methods)
            self.scheme = build_scheme(rules, self.names, inner_lr, step_size,
                                       inner_lr or 0.0, PYTHON_NAMES)
        else:
            tab = tableau if tableau is not None else get_tableau(method)
            _, h = resolve_steps(tab, inner_lr, step_size, inner_lr or 0.0, PYTHON_NAMES)
            self.scheme = Scheme.uniform(tab, h, self.names)
        self.alphas = adaptation_steps(self.scheme)  # each parameter's test-time step

    # -- evaluating the module at given parameters ----------------------------------------
    def theta(self) -> Params:
        """θ: the module's own parameters (those that require grad), by name."""
        params = dict(self.module.named_parameters())
        return {n: params[n] for n in self.names}

    def functional(self, params: Params) -> Callable[..., Any]:
        """The module evaluated at ``params`` (names and shapes checked)."""
        self._check(params)

        def model(*args: Any, **kwargs: Any) -> Any:
            return functional_call(self.module, params, args, kwargs)

        return model

    def _check(self, params: Params) -> None:
        theta = dict(self.module.named_parameters())
        for n, v in params.items():
            if n not in theta:
                raise ValueError(f"parameter {n!r} is not one of the module's: {self.names}")
            if v.shape != theta[n].shape:
                raise ValueError(f"parameter {n!r} has shape {tuple(v.shape)}, the module's is "
                                 f"{tuple(theta[n].shape)}")

    def _stage_loss(self, task: Any, support_loss: TaskLoss, query_loss: TaskLoss
                    ) -> Callable[[int, Params], Tensor]:
        def stage_loss(i: int, params: Params) -> Tensor:
            which, fn = ("support_loss", support_loss) if i == 0 else ("query_loss", query_loss)
            value = fn(self.functional(params), task)
            if not isinstance(value, Tensor) or value.dim() != 0:
                shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                raise ValueError(f"{which} must return a scalar tensor, got {shape}")
            return value
        return stage_loss

    # -- the meta-objective -------------------------------------------------------------------
    def forward(self, tasks: Iterable[Any], support_loss: TaskLoss, query_loss: TaskLoss
                ) -> Tensor:
        """The meta-loss of a batch of tasks: a scalar whose gradient with respect to the
        module's parameters is the mean over tasks of Σ_i a_i k_i."""
        theta, objectives = self.theta(), []
        for task in tasks:
            stage_loss = self._stage_loss(task, support_loss, query_loss)
            points = stage_points(theta, self.scheme, None, stage_loss,
                                  first_order=self.first_order, inner_steps=self.inner_steps)
            objectives.append(self._objective(points, stage_loss, theta))
        if not objectives:
            raise ValueError("no tasks given")
        return torch.stack(objectives).mean()

    def _objective(self, points: list[Params], stage_loss: Callable[[int, Params], Tensor],
                   theta: Params) -> Tensor:
        if self.scheme.shared_weights is not None:
            return rk_combination(points, self.scheme, stage_loss)
        # groups with their own weights: no single objective has gradient Σ a_n,i k_i[n];
        # this one has it exactly, and its value is Σ_i ā_i L_i with ā_i the weights
        # averaged over the parameters' elements
        losses: dict[int, Tensor] = {}  # L_i at θ_i, as combined_gradient evaluates them

        def recorded(i: int, params: Params) -> Tensor:
            losses[i] = stage_loss(i, params)
            return losses[i]

        grads = combined_gradient(points, self.scheme, recorded, theta)
        linear = sum((g.detach() * theta[n]).sum() for n, g in grads.items())
        sizes = {n: v.numel() for n, v in theta.items()}
        value = sum(sum(self.scheme.weight(i)[n] * k for n, k in sizes.items())
                    / sum(sizes.values()) * loss.detach() for i, loss in losses.items())
        return linear - linear.detach() + value

    # -- adaptation ----------------------------------------------------------------------------
    def adapt(self, task: Any, support_loss: TaskLoss, steps: int = 1,
              params: Params | None = None) -> Params:
        """Parameters after ``steps`` plain gradient steps on ``task``'s support loss, each
        parameter with its own α (c2·h of its tableau; 0 for a frozen group). Detached:
        for inference; evaluate them with :meth:`functional`."""
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
        current = {n: v.detach() for n, v in (params or self.theta()).items()}
        self._check(current)
        stage_loss = self._stage_loss(task, support_loss, support_loss)
        for _ in range(steps):
            x = {n: v.detach().clone().requires_grad_() for n, v in current.items()}
            with torch.enable_grad():
                grads = torch.autograd.grad(stage_loss(0, x), list(x.values()),
                                            allow_unused=True, materialize_grads=True)
            current = {n: (v - self.alphas[n] * g).detach()
                       for (n, v), g in zip(x.items(), grads, strict=True)}
        return current
