"""The supervised benchmarks' models: ordinary ``torch.nn.Module``s.

``model(x)`` evaluates one task's inputs with the module's own parameters, as any module.
During meta-training each of the T tasks of a meta-batch owns its own copy of the weights:
``model(params, x)``, with every parameter tensor of ``params`` carrying a leading task
dimension T and the inputs the same leading T, evaluates all tasks at once, each with its
own weights (``rkmeta_rl.learner.call_per_task``: ``torch.func.vmap`` over the module,
where ``nn.Linear`` is a batched matrix product and the convolutions one grouped
convolution). The meta-gradient itself comes from ``rkmeta_rl.RKMetaLearner``
(``rkmeta_rl.supervised.meta``). All operations are twice differentiable, as MAML's
second-order meta-gradient requires.

A module's own parameters start as ``init_params`` of a generator seeded 0 (constructing
one draws nothing from torch's global random stream); the training runs give the
parameters explicitly, from ``init_params`` of the run's seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from rkmeta_rl.learner import call_per_task

Params = dict[str, Tensor]


def _uniform(shape: Sequence[int], bound: float, generator: torch.Generator) -> Tensor:
    """Sample U(-bound, bound) of the given shape with ``generator``."""
    return (torch.rand(*shape, generator=generator) * 2.0 - 1.0) * bound


def _linear_init(out_dim: int, in_dim: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """torch.nn.Linear's default init: kaiming-uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)) for both."""
    bound = 1.0 / math.sqrt(in_dim)
    return _uniform((out_dim, in_dim), bound, generator), _uniform((out_dim,), bound, generator)


class _PerTask(nn.Module):
    """``model(x)``: one task, the module's own parameters. ``model(params, x)``: T tasks,
    each with its own parameters (T, ...) and inputs (T, B, ...) -> (T, B, ...)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if len(args) == 2 and not kwargs and isinstance(args[0], dict):
            return call_per_task(self, args[0], args[1])
        return super().__call__(*args, **kwargs)

    def init_params(self, generator: torch.Generator) -> Params:  # pragma: no cover
        raise NotImplementedError

    def _own_params(self) -> None:
        """The module's parameters from ``init_params`` seeded 0, built without drawing
        from torch's global random stream."""
        with torch.no_grad():
            for name, value in self.init_params(torch.Generator().manual_seed(0)).items():
                self.get_parameter(name).copy_(value)


def _batched_linear(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """Per-task affine map: x (T, B, I), weight (T, O, I), bias (T, O) -> (T, B, O)."""
    return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))


def _linear(fan_in: int, fan_out: int) -> nn.Linear:
    return nn.utils.skip_init(nn.Linear, fan_in, fan_out)  # filled by _own_params


class MLP(_PerTask):
    """Fully connected ReLU network (the sinusoid regressor: 1 -> 40 -> 40 -> 1).

    Parameter keys: ``layers.{i}.weight`` of shape (out, in) and ``layers.{i}.bias`` of shape
    (out,).
    """

    def __init__(self, in_dim: int = 1, hidden: Sequence[int] = (40, 40), out_dim: int = 1):
        super().__init__()
        self.sizes = [in_dim, *hidden, out_dim]
        self.layers = nn.ModuleList(_linear(i, o) for i, o in
                                    zip(self.sizes[:-1], self.sizes[1:], strict=True))
        self._own_params()

    @property
    def num_layers(self) -> int:
        """Number of linear layers."""
        return len(self.sizes) - 1

    def init_params(self, generator: torch.Generator) -> Params:
        """Fresh parameters without a task dimension, initialised like torch.nn.Linear."""
        params: Params = {}
        for i, (fan_in, fan_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:], strict=True)):
            weight, bias = _linear_init(fan_out, fan_in, generator)
            params[f"layers.{i}.weight"], params[f"layers.{i}.bias"] = weight, bias
        return params

    def forward(self, x: Tensor) -> Tensor:
        """x (B, in_dim) -> (B, out_dim)."""
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < self.num_layers - 1:
                x = torch.relu(x)
        return x

    def forward_per_task(self, params: Params, x: Tensor) -> Tensor:
        """All tasks at once, hand-written: params (T, ...), x (T, B, in_dim) ->
        (T, B, out_dim). The same numbers as vmap over :meth:`forward` (the learner's
        batched linear layers), without its cost per call, which for a network this small
        is most of the time (``scripts/bench_learner.py``)."""
        h = x
        for i in range(self.num_layers):
            h = _batched_linear(h, params[f"layers.{i}.weight"], params[f"layers.{i}.bias"])
            if i < self.num_layers - 1:
                h = torch.relu(h)
        return h


class Block(nn.Module):
    """3x3 conv (padding 1) -> batch norm -> ReLU -> 2x2 max-pool.

    Batch norm is transductive as in MAML: statistics are always those of the batch it sees
    (biased variance, eps=1e-5), with no running statistics, in training and eval mode."""

    def __init__(self, in_channels: int, filters: int, eps: float) -> None:
        super().__init__()
        self.conv = nn.utils.skip_init(nn.Conv2d, in_channels, filters, 3, padding=1)
        self.norm = nn.BatchNorm2d(filters, eps=eps, track_running_stats=False)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(torch.relu(self.norm(self.conv(x))))


class ConvNet(_PerTask):
    """The 4-block few-shot classifier of Vinyals et al. / Finn et al.

    Each block is 3x3 conv (padding 1) -> batch norm -> ReLU -> 2x2 max-pool (:class:`Block`);
    then a linear layer maps the flattened features to ``ways`` logits.
    Omniglot: 1x28x28 input, 64 filters (final feature map 64x1x1 -> 64 features).
    MiniImagenet: 3x84x84 input, 32 filters (final 32x5x5 -> 800 features).

    Parameter keys (shapes):
    ``blocks.{i}.conv.weight`` (O, C, 3, 3), ``blocks.{i}.conv.bias`` (O,),
    ``blocks.{i}.norm.weight`` (O,), ``blocks.{i}.norm.bias`` (O,),
    ``head.weight`` (ways, feature_dim), ``head.bias`` (ways,).
    """

    eps = 1e-5

    def __init__(
        self, in_channels: int, image_size: int, ways: int, filters: int = 64, blocks: int = 4
    ):
        super().__init__()
        self.in_channels = in_channels
        self.image_size = image_size
        self.ways = ways
        self.filters = filters
        self.blocks = nn.ModuleList(Block(in_channels if i == 0 else filters, filters, self.eps)
                                    for i in range(blocks))
        self.head = _linear(self.feature_dim, ways)
        self._own_params()

    @property
    def feature_dim(self) -> int:
        """Flattened size of the final feature map (each max-pool floor-halves the side)."""
        side = self.image_size
        for _ in range(len(self.blocks)):
            side //= 2
        return self.filters * side * side

    def init_params(self, generator: torch.Generator) -> Params:
        """Fresh parameters without a task dimension.

        Conv weights use nn.Conv2d's default, kaiming-uniform(a=sqrt(5)), i.e.
        U(+-1/sqrt(C*3*3)); conv biases are 0; batch-norm weight 1 and bias 0; the head is
        initialised like nn.Linear.
        """
        params: Params = {}
        channels = self.in_channels
        for i in range(len(self.blocks)):
            bound = 1.0 / math.sqrt(channels * 9)
            shape = (self.filters, channels, 3, 3)
            params[f"blocks.{i}.conv.weight"] = _uniform(shape, bound, generator)
            params[f"blocks.{i}.conv.bias"] = torch.zeros(self.filters)
            params[f"blocks.{i}.norm.weight"] = torch.ones(self.filters)
            params[f"blocks.{i}.norm.bias"] = torch.zeros(self.filters)
            channels = self.filters
        params["head.weight"], params["head.bias"] = _linear_init(
            self.ways, self.feature_dim, generator
        )
        return params

    def forward(self, x: Tensor) -> Tensor:
        """x (B, C, H, W) -> logits (B, ways)."""
        for block in self.blocks:
            x = block(x)
        return self.head(x.flatten(1))
