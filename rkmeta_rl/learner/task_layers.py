"""Inside vmap, the forward of ``nn.Linear``, ``nn.Conv2d``, batch norm and
``nn.MaxPool2d`` computed as the hand-written products of a task-batched model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rkmeta_rl.learner.vmap_primitives import fx


def _task_first(t: Tensor, dim: int) -> Tensor:
    """The physical tensor with its task dimension first (itself when it is)."""
    return t if dim == 0 else t.movedim(dim, 0)


Unwrapped = tuple[Tensor | None, int | None]  # (physical tensor, its task dimension)
Physical = tuple[Tensor, int]  # a result: the physical tensor and its task dimension


class TaskLayers:
    """Inside :func:`vmap_flat` at ``level``: the forward of ``nn.Linear``, ``nn.Conv2d``,
    batch norm and ``nn.MaxPool2d`` (not subclasses with a forward of their own) with
    per-task weights, computed as the hand-written products of a task-batched model do: a
    batched matrix product; a convolution with one group per task, tasks folded into the
    channels, where batch-norm statistics per channel are per-task statistics. Activations
    between them stay in the folded layout (B, T, C, H, W). Anything else, or a case these
    do not cover, takes vmap's own batching rules (the layer's own forward)."""

    RULES = {nn.Linear.forward: "_linear_layer", nn.Conv2d.forward: "_conv_layer",
             nn.modules.batchnorm._BatchNorm.forward: "_norm_layer",
             nn.MaxPool2d.forward: "_pool_layer"}

    def __init__(self, level: int, size: int) -> None:
        self.level, self.size = level, size

    def forward(self, m: nn.Module) -> Callable[..., Tensor]:
        """``m``'s forward for this call. Its rule works on the physical tensors with vmap's
        layer popped off functorch's stack (inside it, every operation pays for the
        dispatch through vmap, twice the time of a product this size)."""
        original, rule = type(m).forward, getattr(self, self.RULES[type(m).forward])

        def forward(*args: Any, **kwargs: Any) -> Tensor:
            if len(args) == 1 and not kwargs and fx.maybe_current_level() == self.level:
                layer = fx.pop_dynamic_layer_stack()
                try:
                    out = rule(m, args[0])  # (physical tensor, its task dimension) or None
                finally:
                    fx.push_dynamic_layer_stack(layer)
                if out is not None:
                    return fx._add_batch_dim(*out, self.level)
            return original(m, *args, **kwargs)
        return forward

    def _linear_layer(self, m: nn.Linear, x: Tensor) -> Physical | None:
        return self._linear(self._unwrap(x), self._unwrap(m.weight), self._unwrap(m.bias))

    def _conv_layer(self, m: nn.Conv2d, x: Tensor) -> Physical | None:
        if m.padding_mode != "zeros":
            return None
        return self._conv2d(self._unwrap(x), self._unwrap(m.weight), self._unwrap(m.bias),
                            m.stride, m.padding, m.dilation, m.groups)

    def _pool_layer(self, m: nn.MaxPool2d, x: Tensor) -> Physical | None:
        if m.return_indices:
            return None
        return self._max_pool2d(self._unwrap(x), m.kernel_size, m.stride, m.padding,
                                m.dilation, m.ceil_mode)

    def _norm_layer(self, m: nn.modules.batchnorm._BatchNorm, x: Tensor) -> Physical | None:
        """Batch norm with batch statistics (in training mode, or without running
        averages), as ``_BatchNorm.forward``; running averages, if kept, updated in training
        mode. In eval mode with running averages: its own forward."""
        batch_stats = m.training or (m.running_mean is None and m.running_var is None)
        updates = m.training and m.track_running_stats and m.running_mean is not None
        if not batch_stats or (updates and m.momentum is None):
            return None  # the running averages used, or a cumulative average: vmap's rules
        m._check_input_dim(x)
        stats = (m.running_mean, m.running_var) if updates else (None, None)
        out = self._batch_norm(self._unwrap(x), *map(self._unwrap, stats),
                               self._unwrap(m.weight), self._unwrap(m.bias),
                               m.momentum or 0.0, m.eps)
        count = self._unwrap(m.num_batches_tracked) if updates else None
        if out is not None and count is not None and count[0] is not None:
            count[0].add_(1)  # (T,) per-task counts, or the module's own
        return out

    # -- on physical tensors ------------------------------------------------------------------
    def _unwrap(self, t: Tensor | None) -> Unwrapped | None:
        """(physical tensor, its task dimension, None if shared), (None, None) for None;
        None for another transform's tensor."""
        if t is None:
            return None, None
        level = fx.maybe_get_level(t)
        if level == self.level:
            return fx._unwrap_batched(t, self.level)
        return (t, None) if level == -1 else None

    def _folded(self, x: Unwrapped | None, rank: int) -> Tensor | None:
        """A per-task activation of logical shape (B, C, ...), ``rank`` dims, as the
        physical (B, T*C, ...): tasks folded into the channels (a view when laid out so)."""
        if x is None or x[0] is None or x[1] is None or x[0].dim() != rank + 1:
            return None
        h = x[0] if x[1] == 1 else x[0].movedim(x[1], 1)  # (B, T, C, ...)
        return h.reshape(h.shape[0], -1, *h.shape[3:])

    def _unfolded(self, y: Tensor) -> Physical:
        """(B, T*C, ...) -> (B, T, C, ...) with the task dimension at 1 (a view)."""
        return y.view(y.shape[0], self.size, -1, *y.shape[2:]), 1

    def _per_task(self, p: Unwrapped | None, rank: int) -> Tensor | None:
        """A per-task weight of logical rank ``rank``, (T, O, ...), as (T*O, ...)."""
        if p is None or p[0] is None or p[1] is None or p[0].dim() != rank + 1:
            return None
        t = _task_first(p[0], p[1])  # (T, O, ...)
        return t.reshape(-1, *t.shape[2:])

    def _linear(self, x: Unwrapped | None, w: Unwrapped | None, b: Unwrapped | None
                ) -> Physical | None:
        if x is None or x[1] is None or x[0].dim() < 2 or w is None or w[1] is None \
                or w[0].dim() != 3 or b is None:
            return None
        if b[0] is not None and (b[1] is None or b[0].dim() != 2):
            return None
        xp = _task_first(x[0], x[1])  # (T, ..., I)
        x3 = xp if xp.dim() == 3 else xp.reshape(self.size, -1, xp.shape[-1])  # (T, N, I)
        wt = _task_first(w[0], w[1]).transpose(1, 2)  # (T, I, O)
        out = (torch.bmm(x3, wt) if b[0] is None
               else torch.baddbmm(_task_first(b[0], b[1]).unsqueeze(1), x3, wt))  # (T, N, O)
        return (out if xp.dim() == 3 else out.reshape(*xp.shape[:-1], -1)), 0

    def _conv2d(self, x: Unwrapped | None, w: Unwrapped | None, b: Unwrapped | None,
                *conv: Any) -> Physical | None:
        """conv: stride, padding, dilation, groups."""
        h = self._folded(x, rank=4)  # (B, T*C, H, W)
        weight = self._per_task(w, rank=4)  # (T*O, C/groups, k, k)
        bias = self._per_task(b, rank=1)  # (T*O,)
        if h is None or weight is None or b is None or (bias is None and b[0] is not None):
            return None
        *args, groups = conv
        y = F.conv2d(h, weight, bias, *args, groups * self.size)
        return self._unfolded(y)  # (B, T*O, H', W'): each task's (B, O, H', W')

    def _batch_norm(self, x: Unwrapped | None, *parts: Any) -> Physical | None:
        """parts: running mean and variance, weight, bias (each may be (None, None)),
        momentum, eps."""
        *tensors, momentum, eps = parts
        if x is None or x[0] is None or any(p is None for p in tensors):
            return None
        for stat in tensors[:2]:  # running statistics, updated in place: through a view
            if stat[0] is not None and (stat[1] != 0 or not stat[0].is_contiguous()):
                return None
        h = self._folded(x, rank=x[0].dim() - 1)  # (B, T*C, ...)
        per_task = [self._per_task(p, rank=1) for p in tensors]  # (T*C,) each, or None
        if h is None or any(q is None and p[0] is not None
                            for p, q in zip(tensors, per_task, strict=True)):
            return None
        return self._unfolded(F.batch_norm(h, *per_task, True, momentum, eps))

    def _max_pool2d(self, x: Unwrapped | None, *pool: Any) -> Physical | None:
        """pool: kernel size, stride, padding, dilation, ceil mode."""
        h = self._folded(x, rank=4)  # (B, T*C, H, W)
        return None if h is None else self._unfolded(F.max_pool2d(h, *pool))
