"""One supervised RK meta-step, test-time adaptation, and the task losses they share.

Stage 1's loss is the support loss at θ (its gradient k_1 is the adaptation gradient);
stage i > 1's loss is the query loss at θ_i (docs/method.md, "What the stage losses are").
The RK meta-gradient Σ_i a_i k_i (Eq. 3) comes from ``rkmeta_rl.rk``, the one
implementation shared with RL; here it is averaged over the meta-batch and handed to Adam.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from rkmeta_rl.rk import (
    Params,
    Scheme,
    combined_gradient,
    repeat_params,
    rk_combination,
    stage_points,
)
from rkmeta_rl.tableau import Tableau

Model = Callable[[Params, Tensor], Tensor]


def task_losses(model: Model, params: Params, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor | None]:
    """Per-task mean loss (T,) and, for classification (integer y), accuracy (T,).

    Regression: mean squared error of outputs (T, B, 1) against y (T, B, 1).
    Classification: cross-entropy of logits (T, B, N) against labels y (T, B).
    """
    out = model(params, x)
    if y.dtype.is_floating_point:
        return (out - y).pow(2).mean(dim=(1, 2)), None
    ce = F.cross_entropy(out.flatten(0, 1), y.flatten(), reduction="none").view(y.shape)
    return ce.mean(1), (out.argmax(-1) == y).float().mean(1)


@dataclass
class MetaStepResult:
    stage_loss: dict[int, float] = field(default_factory=dict)  # mean over tasks, per stage
    stage_accuracy: dict[int, float] = field(default_factory=dict)
    grad_norm: float = math.nan
    rejected: str = ""  # why θ was kept ("" when the step was taken)


def meta_gradient(model: Model, theta: Params, batch, tableau: Tableau | Scheme,
                  h: float | None, *, inner_steps: int = 1, first_order: bool = False,
                  result: MetaStepResult | None = None) -> Params:
    """(1/T) Σ_tasks Σ_i a_i k_i with respect to the shared ``theta`` (Eq. 3-4).

    ``batch`` has support (xs, ys) and query (xq, yq) with a leading task dimension T.
    ``tableau`` is one tableau with step ``h``, or a tableau per parameter group (a
    ``Scheme``, with its own steps). Stage losses are recorded in ``result`` when given.
    """
    num_tasks = batch.xs.shape[0]

    def stage_loss(i: int, params: Params) -> Tensor:
        x, y = (batch.xs, batch.ys) if i == 0 else (batch.xq, batch.yq)
        loss, acc = task_losses(model, params, x, y)
        if result is not None and i not in result.stage_loss:  # first call: at θ_i itself
            result.stage_loss[i] = float(loss.detach().mean())
            if acc is not None:
                result.stage_accuracy[i] = float(acc.mean())
        return loss.sum()  # tasks are independent: the per-task slices get their own k

    per_task = repeat_params(theta, num_tasks)
    points = stage_points(per_task, tableau, h, stage_loss, first_order=first_order,
                          inner_steps=inner_steps)
    if isinstance(tableau, Scheme) and tableau.shared_weights is None:
        grads = combined_gradient(points, tableau, stage_loss, theta)
        return {n: g / num_tasks for n, g in grads.items()}
    objective = rk_combination(points, tableau, stage_loss) / num_tasks
    grads = torch.autograd.grad(objective, list(theta.values()), allow_unused=True,
                                materialize_grads=True)
    return dict(zip(theta, grads, strict=True))


def meta_step(model: Model, theta: Params, optimizer: torch.optim.Optimizer, batch,
              tableau: Tableau | Scheme, h: float | None, *, inner_steps: int = 1,
              first_order: bool = False) -> MetaStepResult:
    """Adam step on the RK meta-gradient; a non-finite loss or gradient leaves θ untouched."""
    result = MetaStepResult()
    grads = meta_gradient(model, theta, batch, tableau, h, inner_steps=inner_steps,
                          first_order=first_order, result=result)
    norm = torch.sqrt(sum(g.pow(2).sum() for g in grads.values()))
    result.grad_norm = float(norm)
    losses = list(result.stage_loss.values())
    if not math.isfinite(result.grad_norm) or not all(math.isfinite(v) for v in losses):
        result.rejected = "non-finite loss or meta-gradient"
        return result
    optimizer.zero_grad(set_to_none=True)
    for name, p in theta.items():
        p.grad = grads[name]
    optimizer.step()
    return result


def adapt(model: Model, theta: Params, xs: Tensor, ys: Tensor, alpha: float | dict[str, float],
          steps: int, on_step: Callable[[int, Params], None] | None = None) -> Params:
    """Test-time adaptation: ``steps`` plain gradient steps of α on each task's support set
    (``alpha``: one step for every parameter, or one per parameter name).

    Returns per-task parameters (leading dimension T); ``on_step(k, params)`` sees the
    parameters after k = 0..steps steps.
    """
    params = {n: v.detach() for n, v in repeat_params(theta, xs.shape[0]).items()}
    for k in range(steps + 1):
        if on_step is not None:
            on_step(k, params)
        if k == steps:
            break
        x = {n: v.detach().requires_grad_() for n, v in params.items()}
        with torch.enable_grad():
            loss = task_losses(model, x, xs, ys)[0].sum()
            grads = torch.autograd.grad(loss, list(x.values()))
        step = alpha if isinstance(alpha, dict) else dict.fromkeys(x, alpha)
        params = {n: v.detach() - step[n] * g for (n, v), g in zip(x.items(), grads, strict=True)}
    return params
