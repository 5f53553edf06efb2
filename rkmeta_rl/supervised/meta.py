"""One supervised RK meta-step, test-time adaptation, and the task losses they share.

Stage 1's loss is the support loss at θ (its gradient k_1 is the adaptation gradient);
stage i > 1's loss is the query loss at θ_i (docs/method.md, "What the stage losses are").
The RK meta-gradient Σ_i a_i k_i (Eq. 3), averaged over the meta-batch, comes from
``rkmeta_rl.RKMetaLearner`` (all tasks at once, the stage points from ``rkmeta_rl.rk``, the
one implementation shared with RL) and is handed to Adam.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rkmeta_rl.learner import RKMetaLearner
from rkmeta_rl.rk import Params, Scheme, repeat_params
from rkmeta_rl.tableau import Tableau

Model = Callable[[Params, Tensor], Tensor]  # model(params (T, ...), x (T, B, ...)) -> (T, B, ...)


def task_losses(model: Model, params: Params, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor | None]:
    """Per-task mean loss (T,) and, for classification (integer y), accuracy (T,), of
    ``model`` at per-task ``params`` on x (T, B, ...) (see :func:`output_losses`)."""
    return output_losses(model(params, x), y)


def output_losses(out: Tensor, y: Tensor) -> tuple[Tensor, Tensor | None]:
    """Per-task mean loss (T,) and, for classification (integer y), accuracy (T,).

    Regression: mean squared error of outputs (T, B, 1) against y (T, B, 1).
    Classification: cross-entropy of logits (T, B, N) against labels y (T, B).
    """
    if y.dtype.is_floating_point:
        return (out - y).pow(2).mean(dim=(1, 2)), None
    ce = F.cross_entropy(out.flatten(0, 1), y.flatten(), reduction="none").view(y.shape)
    return ce.mean(1), (out.argmax(-1) == y).float().mean(1)


@dataclass
class AdamStepResult:
    """What one supervised meta-step (Adam on the RK meta-gradient) measured and did."""

    stage_loss: dict[int, float] = field(default_factory=dict)  # mean over tasks, per stage
    stage_accuracy: dict[int, float] = field(default_factory=dict)
    grad_norm: float = math.nan
    rejected: str = ""  # why θ was kept ("" when the step was taken)


def learner_for(model: nn.Module, tableau: Tableau | Scheme, h: float | None, *,
                inner_steps: int = 1, first_order: bool = False) -> RKMetaLearner:
    """The :class:`RKMetaLearner` of ``model`` with this tableau (and step ``h``) or scheme,
    made once and kept on the model."""
    per_model = model.__dict__.setdefault("_rkmeta_learners", {})
    key = (id(tableau), h, inner_steps, first_order)
    made = per_model.get(key)
    if made is None or made[0] is not tableau:
        scheme = isinstance(tableau, Scheme)
        learner = RKMetaLearner(model, tableau=tableau, step_size=None if scheme else h,
                                inner_steps=inner_steps, first_order=first_order,
                                vectorize=True)
        made = per_model[key] = (tableau, learner)
    return made[1]


def meta_gradient(model: nn.Module, theta: Params, batch, tableau: Tableau | Scheme,
                  h: float | None, *, inner_steps: int = 1, first_order: bool = False,
                  result: AdamStepResult | None = None) -> Params:
    """(1/T) Σ_tasks Σ_i a_i k_i with respect to the shared ``theta`` (Eq. 3-4).

    ``batch`` has support (xs, ys) and query (xq, yq) with a leading task dimension T.
    ``tableau`` is one tableau with step ``h``, or a tableau per parameter group (a
    ``Scheme``, with its own steps). Stage losses are recorded in ``result`` when given.
    """
    learner = learner_for(model, tableau, h, inner_steps=inner_steps, first_order=first_order)

    def stage_loss(i: int, per_task: Callable[[Tensor], Tensor], data: tuple) -> Tensor:
        xs, ys, xq, yq = data
        x, y = (xs, ys) if i == 0 else (xq, yq)
        loss, acc = output_losses(per_task(x), y)  # (T,) each
        if result is not None and i not in result.stage_loss:  # first call: at θ_i itself
            result.stage_loss[i] = float(loss.detach().mean())
            if acc is not None:
                result.stage_accuracy[i] = float(acc.mean())
        return loss  # tasks are independent: the per-task slices get their own k

    return learner.meta_gradient((batch.xs, batch.ys, batch.xq, batch.yq),
                                 stage_loss=stage_loss, stacked=True, batched_losses=True,
                                 params=theta)


def meta_step(model: nn.Module, theta: Params, optimizer: torch.optim.Optimizer, batch,
              tableau: Tableau | Scheme, h: float | None, *, inner_steps: int = 1,
              first_order: bool = False) -> AdamStepResult:
    """Adam step on the RK meta-gradient; a non-finite loss or gradient leaves θ untouched."""
    result = AdamStepResult()
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
