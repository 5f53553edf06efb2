"""A module evaluated for T tasks at once, each with its own parameters."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.utils import _pytree as pytree

from rkmeta_rl.learner import vmap_primitives
from rkmeta_rl.learner.task_layers import TaskLayers
from rkmeta_rl.learner.vmap_primitives import fx, vmap_flat
from rkmeta_rl.rk import Params, repeat_params


def norm_layers(module: nn.Module) -> list[tuple[str, nn.modules.batchnorm._NormBase]]:
    """The batch-norm (and instance-norm) layers, with their path."""
    return [(f"{prefix}." if prefix else "", m) for prefix, m in module.named_modules()
            if isinstance(m, nn.modules.batchnorm._NormBase)]


class Swap:
    """Put tensors in place of a module's parameters and buffers for one call (what
    ``torch.func.functional_call`` does, with its look-ups done once; tied tensors are
    replaced everywhere they appear); inside :func:`vmap_flat`, also give the layers that
    :class:`TaskLayers` knows its task-batched forward."""

    def __init__(self, module: nn.Module) -> None:
        self.slots: dict[str, list[tuple[nn.Module, str, str]]] = {}
        for kind in ("_parameters", "_buffers"):
            canonical: dict[int, str] = {}
            members = (module.named_parameters(remove_duplicate=False) if kind == "_parameters"
                       else module.named_buffers(remove_duplicate=False))
            for name, value in members:
                owner_path, _, attr = name.rpartition(".")
                key = canonical.setdefault(id(value), name)
                self.slots.setdefault(key, []).append(
                    (module.get_submodule(owner_path), kind, attr))
        self.params = {n for n, _ in module.named_parameters()}
        self.layers = [m for m in module.modules() if type(m).forward in TaskLayers.RULES]

    @contextmanager
    def __call__(self, tensors: dict[str, Tensor], tasks: int | None = None
                 ) -> Iterator[None]:
        saved, installed = [], []
        try:
            for name, value in tensors.items():
                for owner, kind, attr in self.slots[name]:
                    table = getattr(owner, kind)
                    saved.append((table, attr, table[attr]))
                    table[attr] = value
            if tasks is not None and vmap_primitives.FAST:
                layers = TaskLayers(fx.maybe_current_level(), tasks)
                for m in self.layers:
                    if "forward" not in m.__dict__:  # not replaced by someone else
                        m.__dict__["forward"] = layers.forward(m)
                        installed.append(m)
            yield
        finally:
            for m in installed:
                del m.__dict__["forward"]
            for table, attr, value in reversed(saved):
                table[attr] = value


def swap_of(module: nn.Module) -> Swap:
    """The module's :class:`Swap`, kept on the module while its submodules stay the same
    objects (looking the slots up again costs more than a call)."""
    key = tuple(map(id, module.modules()))
    kept = module.__dict__.get("_rkmeta_swap")
    if kept is None or kept[0] != key:
        kept = module.__dict__["_rkmeta_swap"] = (key, Swap(module))
    return kept[1]


def per_task_call(module: nn.Module, swap: Swap, tensors: dict[str, Tensor], size: int,
                   args: tuple, kwargs: dict, vmapped: bool) -> Any:
    """``module(*args, **kwargs)`` for each of ``size`` tasks: ``tensors`` (parameters and
    buffers by name) and every tensor in args and kwargs are (T, ...), the outputs too.

    A module with a hand-written ``forward_per_task(params, *inputs)`` (every parameter
    (T, ...), inputs (T, ...)) is called through it; any other, all tasks in one vmapped
    call, or (``vmapped=False``) one ``functional_call`` a task."""
    plain = not kwargs and all(isinstance(v, Tensor) for v in args)  # tensors only: no tree
    own = getattr(module, "forward_per_task", None)
    if own is not None and plain and vmapped and tensors.keys() <= swap.params:
        if tensors.keys() != swap.params:  # the module's own for the others
            tensors = {**repeat_params(dict(module.named_parameters()), size), **tensors}
        return own(tensors, *args)
    if not vmapped:
        return looped_call(module, tensors, size, args, kwargs)
    leaves, spec = (list(args), None) if plain else pytree.tree_flatten((args, kwargs))
    names, n = list(tensors), len(tensors)

    def one_task(*flat: Any) -> Any:
        a, k = (flat[n:], {}) if plain else pytree.tree_unflatten(list(flat[n:]), spec)
        with swap(dict(zip(names, flat[:n], strict=True)), size):
            return module(*a, **k)

    dims = [0] * n + [0 if isinstance(v, Tensor) else None for v in leaves]
    return vmap_flat(one_task, [*tensors.values(), *leaves], dims, size)


def looped_call(module: nn.Module, tensors: dict[str, Tensor], size: int, args: tuple,
                 kwargs: dict) -> Any:
    """:func:`per_task_call` one task at a time (``functional_call``), outputs stacked."""
    leaves, spec = pytree.tree_flatten((args, kwargs))
    outs = []
    for t in range(size):
        a, k = pytree.tree_unflatten([v[t] if isinstance(v, Tensor) else v for v in leaves],
                                     spec)
        outs.append(functional_call(module, {n: v[t] for n, v in tensors.items()}, a, k))
    return pytree.tree_map(lambda *o: torch.stack(o), *outs)  # (T, ...)


def call_per_task(module: nn.Module, params: Params, *args: Any, **kwargs: Any) -> Any:
    """``module(*args, **kwargs)`` for T tasks at once, each with its own parameters:
    ``params`` by name with a leading task dimension T (the module's own are used for the
    others), every tensor in ``args`` and ``kwargs`` (T, ...); outputs (T, ...). Through
    the module's ``forward_per_task`` if it has one, else ``torch.func.vmap`` with the
    task-batched layers. Batch norm in training mode uses each task's own batch statistics;
    its running statistics, if it keeps them, are left as they are."""
    size = task_count(params)
    swap = swap_of(module)
    unknown = sorted(set(params) - swap.params)
    if unknown:
        raise ValueError(f"{unknown} are not parameters of {type(module).__name__}")
    stats = per_task_copies(updated_buffers(norm_layers(module)), size)  # used, then dropped
    return per_task_call(module, swap, {**params, **stats}, size, args, kwargs, vmapped=True)


def task_count(params: Params) -> int:
    """T, the leading dimension every tensor of ``params`` shares (ValueError if not)."""
    sizes = {v.shape[0] if v.dim() else None for v in params.values()}
    if len(sizes) != 1 or None in sizes:
        raise ValueError("parameters with one leading task dimension are needed, got sizes "
                         f"{sorted(map(str, sizes))}")
    return sizes.pop()


def updated_buffers(norms: list[tuple[str, nn.modules.batchnorm._NormBase]]
                     ) -> dict[str, Tensor]:
    """The buffers that a forward pass updates in place: the running statistics of batch
    norm in training mode, by name."""
    return {prefix + n: b for prefix, m in norms if m.training and m.track_running_stats
            for n, b in m.named_buffers(recurse=False) if b is not None}


def per_task_copies(buffers: dict[str, Tensor], size: int) -> dict[str, Tensor]:
    """A copy per task of each buffer, (T, ...)."""
    return {n: b.detach().unsqueeze(0).repeat(size, *[1] * b.dim()) for n, b in buffers.items()}
