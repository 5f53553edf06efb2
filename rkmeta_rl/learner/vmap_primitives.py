"""The primitives ``torch.func.vmap`` is built on (``torch._C._functorch``), used directly:
a leaner call than the public one, and what :mod:`rkmeta_rl.learner.task_layers` needs to
compute a layer on the physical tensors. They are private to torch; where a torch lacks
one, ``FAST`` is False and the learner takes the public ``torch.func.vmap`` (the same
numbers, ``tests/test_learner.py``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.utils import _pytree as pytree

try:
    from torch._C import _functorch as fx
    from torch._functorch.vmap import lazy_load_decompositions

    FAST = all(hasattr(fx, n) for n in (
        "_vmap_increment_nesting", "_vmap_decrement_nesting", "_add_batch_dim",
        "_remove_batch_dim", "_unwrap_batched", "maybe_get_level", "maybe_current_level",
        "pop_dynamic_layer_stack", "push_dynamic_layer_stack"))
except ImportError:  # pragma: no cover - another torch: the public vmap
    fx = None
    FAST = False
_DECOMPOSED: list[bool] = []  # vmap's rules written in Python (cross-entropy's), loaded once


def vmap_flat(fn: Callable[..., Any], args: list[Any], dims: list[int | None], size: int) -> Any:
    """``torch.func.vmap(fn, in_dims=dims, randomness="different")(*args)`` for a function
    of flat arguments (outputs (T, ...)): the same C primitives, without the argument checks
    and tree flattening of every call."""
    if not FAST:
        return torch.func.vmap(fn, in_dims=tuple(dims), randomness="different")(*args)
    if not _DECOMPOSED:
        lazy_load_decompositions()  # as torch.func.vmap does before its first call
        _DECOMPOSED.append(True)
    level = fx._vmap_increment_nesting(size, "different")
    try:
        batched = [a if d is None else fx._add_batch_dim(a, d, level)
                   for a, d in zip(args, dims, strict=True)]
        out = fn(*batched)
        if isinstance(out, Tensor):
            return fx._remove_batch_dim(out, level, size, 0)
        leaves, spec = pytree.tree_flatten(out)  # several outputs
        return pytree.tree_unflatten([fx._remove_batch_dim(v, level, size, 0)
                                      if isinstance(v, Tensor) else v for v in leaves], spec)
    finally:
        fx._vmap_decrement_nesting()

