"""The stage losses: the user's ``support_loss``/``query_loss`` (or ``stage_loss``)
evaluated at a stage point, for one task or for T tasks at once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from rkmeta_rl.learner.per_task import Swap, per_task_call
from rkmeta_rl.learner.tasks import Stacked
from rkmeta_rl.learner.vmap_primitives import vmap_flat
from rkmeta_rl.rk import Params

TaskLoss = Callable[[Callable[..., Any], Any], Tensor]  # (model, task) -> scalar
StageLoss = Callable[[int, Callable[..., Any], Any], Tensor]  # (stage i, model, task)


def pick_losses(support_loss: TaskLoss | None, query_loss: TaskLoss | None,
            stage_loss: StageLoss | None) -> Callable[[int], tuple[str, TaskLoss]]:
    """stage i -> (its name in errors, its loss(model, task))."""
    if stage_loss is not None:
        if support_loss is not None or query_loss is not None:
            raise ValueError("give support_loss and query_loss, or stage_loss, not both")
        return lambda i: ("stage_loss", lambda model, task: stage_loss(i, model, task))
    if support_loss is None or query_loss is None:
        raise ValueError("give support_loss and query_loss (or stage_loss)")
    return lambda i: ("support_loss", support_loss) if i == 0 else ("query_loss", query_loss)


def scalar_loss(which: str, value: Any) -> Tensor:
    if not isinstance(value, Tensor) or value.dim() != 0:
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(f"{which} must return a scalar tensor, got {shape}")
    return value


def per_task_losses(which: str, value: Any, size: int) -> Tensor:
    if not isinstance(value, Tensor) or value.shape != (size,):
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(f"{which} must return the {size} tasks' losses, shape ({size},), "
                         f"with batched_losses=True, got {shape}")
    return value


def check_steps(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


Losses = Callable[[int], tuple[str, TaskLoss]]  # stage i -> (its name in errors, loss)


def task_stage_loss(module: nn.Module, task: Any, losses: Losses
                    ) -> Callable[[int, Params], Tensor]:
    """stage_loss(i, θ') for one task (θ' without a task dimension)."""
    def stage_loss(i: int, params: Params) -> Tensor:
        which, fn = losses(i)
        model = lambda *a, **k: functional_call(module, params, a, k)  # noqa: E731
        return scalar_loss(which, fn(model, task))
    return stage_loss


def batched_stage_loss(module: nn.Module, swap: Swap, batch: Stacked, losses: Losses,
                       stats: dict[str, Tensor], batched_losses: bool, vmapped: bool,
                       every_param: bool) -> Callable[[int, Params], Tensor]:
    """stage_loss(i, params (T, ...)) -> the sum over tasks of each task's loss at its
    own parameters (each task's gradient is the gradient of the sum with respect to its
    own slice). Per-task losses: in one vmapped call, or one task at a time; batched
    losses: given the model over tasks. ``stats``: per-task running statistics;
    ``every_param``: ``params`` names all the module's parameters (none frozen)."""
    size = batch.size
    own = getattr(module, "forward_per_task", None)
    if own is not None and (stats or not vmapped or not every_param):
        own = None  # its hand-written forward takes every parameter, per task

    def model_over_tasks(params: Params) -> Callable[..., Any]:
        if own is not None:
            return lambda *a, **k: own(params, *a, **k)
        tensors = {**params, **stats}
        return lambda *a, **k: per_task_call(module, swap, tensors, size, a, k, vmapped)

    def stage_loss(i: int, params: Params) -> Tensor:
        which, fn = losses(i)
        if batched_losses:
            value = fn(model_over_tasks(params), batch.item())
            return per_task_losses(which, value, size).sum()
        if not vmapped:
            return torch.stack([task_stage_loss(module, task, losses)(
                i, {n: v[t] for n, v in params.items()})
                for t, task in enumerate(batch.unstacked())]).sum()
        names, n = [*params, *stats], len(params) + len(stats)

        def one_task(*flat: Any) -> Tensor:
            tensors = dict(zip(names, flat[:n], strict=True))

            def model(*args: Any, **kwargs: Any) -> Any:
                with swap(tensors, size):
                    return module(*args, **kwargs)

            return scalar_loss(which, fn(model, batch.item(list(flat[n:]))))

        args = [*params.values(), *stats.values(), *batch.leaves]
        return vmap_flat(one_task, args, [0] * n + batch.dims, size).sum()  # (T,) -> Σ
    return stage_loss
