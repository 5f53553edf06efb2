"""Tasks with a leading task dimension: per-task items (tuples, lists, dicts or
dataclasses of tensors) stacked into one, and back."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils import _pytree as pytree


@dataclass(eq=False)
class _Structure:
    """How leaves make an item: a torch tree, or the fields of a dataclass instance
    (``template``; its type is not a registered tree node)."""

    spec: pytree.TreeSpec | type  # or tuple / list: that sequence of tensors
    template: Any = None

    def build(self, leaves: list[Any]) -> Any:
        if self.spec in (tuple, list):
            return self.spec(leaves)
        tree = pytree.tree_unflatten(leaves, self.spec)
        return tree if self.template is None else dataclasses.replace(self.template, **tree)

    def same(self, other: _Structure) -> bool:
        return self.spec == other.spec and type(self.template) is type(other.template)


def _flatten(item: Any) -> tuple[list[Any], _Structure]:
    if type(item) in (tuple, list) and all(isinstance(v, Tensor) for v in item):
        return list(item), _Structure(type(item))
    leaves, spec = pytree.tree_flatten(item)
    if len(leaves) == 1 and leaves[0] is item and dataclasses.is_dataclass(item) \
            and not isinstance(item, type):
        fields = {f.name: getattr(item, f.name) for f in dataclasses.fields(item) if f.init}
        leaves, spec = pytree.tree_flatten(fields)
        return leaves, _Structure(spec, item)
    return leaves, _Structure(spec)


@dataclass
class Stacked:
    """Every task's data: tensor leaves (T, ...) with ``dims`` 0, shared values with None."""

    leaves: list[Any]
    dims: list[int | None]
    structure: _Structure
    size: int  # T

    def item(self, leaves: list[Any] | None = None) -> Any:
        """The item these leaves make (by default the stacked ones; inside vmap, one
        task's slices)."""
        return self.structure.build(self.leaves if leaves is None else leaves)

    def unstacked(self) -> list[Any]:
        return [self.item([v[t] if d is not None else v for v, d in
                           zip(self.leaves, self.dims, strict=True)]) for t in range(self.size)]


def _leaves(items: list[Any]) -> tuple[list[list[Any]], _Structure] | str:
    """Each task's leaves and the structure they share (or why they do not share one):
    a tuple or list of tensors directly, anything else through torch's tree flattening."""
    first = items[0]
    if type(first) in (tuple, list) and all(
            type(item) is type(first) and len(item) == len(first)
            and all(isinstance(v, Tensor) for v in item) for item in items):
        return [list(item) for item in items], _Structure(type(first))
    flat = [_flatten(item) for item in items]
    if any(not s.same(flat[0][1]) for _, s in flat):
        return "the tasks are not all structured alike"
    return [f for f, _ in flat], flat[0][1]


def stack_tasks(items: list[Any]) -> Stacked | str:
    """Per-task items -> one :class:`Stacked`, or why they cannot be stacked."""
    leaves_or_why = _leaves(items)
    if isinstance(leaves_or_why, str):
        return leaves_or_why
    per_task, structure = leaves_or_why
    leaves, dims = [], []
    for column in zip(*per_task, strict=True):  # one leaf of every task
        first = column[0]
        if all(isinstance(v, Tensor) for v in column):
            if any(v.shape != first.shape for v in column):
                return "the tasks' tensors differ in shape"
            leaves.append(torch.stack(column))  # (T, ...)
            dims.append(0)
        elif all(v is first or (not isinstance(v, Tensor) and v == first) for v in column):
            leaves.append(first)  # the same value for every task
            dims.append(None)
        else:
            return "a value in the tasks that is not a tensor differs between tasks"
    return Stacked(leaves, dims, structure, len(items))


def as_stacked(batch: Any) -> Stacked:
    """``stacked=True``: one item whose tensors all carry the same leading task dimension
    (a tuple, list, dict or dataclass of them; other values are shared by every task)."""
    leaves, structure = _flatten(batch)
    sizes = {v.shape[0] if v.dim() else None for v in leaves if isinstance(v, Tensor)}
    if len(sizes) != 1 or None in sizes:
        raise ValueError("stacked=True needs tensors that all have the same leading task "
                         f"dimension, got leading sizes {sorted(map(str, sizes))}")
    dims = [0 if isinstance(v, Tensor) else None for v in leaves]
    return Stacked(leaves, dims, structure, sizes.pop())
