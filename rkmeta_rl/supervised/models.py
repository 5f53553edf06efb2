"""Functional, task-batched models for supervised MAML benchmarks.

Every model is a stateless callable ``model(params, x)`` whose parameters are an explicit
``dict[str, Tensor]``. During meta-training each of the T tasks of a meta-batch owns its own
copy of the weights, so every parameter tensor carries a leading task dimension T and inputs
carry the same leading T. All operations are twice differentiable, as MAML's second-order
meta-gradient requires.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

Params = dict[str, Tensor]


def _uniform(shape: Sequence[int], bound: float, generator: torch.Generator) -> Tensor:
    """Sample U(-bound, bound) of the given shape with ``generator``."""
    return (torch.rand(*shape, generator=generator) * 2.0 - 1.0) * bound


def _linear_init(out_dim: int, in_dim: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """torch.nn.Linear's default init: kaiming-uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)) for both."""
    bound = 1.0 / math.sqrt(in_dim)
    return _uniform((out_dim, in_dim), bound, generator), _uniform((out_dim,), bound, generator)


def _batched_linear(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """Per-task affine map: x (T, B, I), weight (T, O, I), bias (T, O) -> (T, B, O)."""
    return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))


class MLP:
    """Fully connected ReLU network (the sinusoid regressor: 1 -> 40 -> 40 -> 1).

    Parameter keys: ``layers.{i}.weight`` of shape (out, in) and ``layers.{i}.bias`` of shape
    (out,), with a leading task dimension T when passed to ``__call__``.
    """

    def __init__(self, in_dim: int = 1, hidden: Sequence[int] = (40, 40), out_dim: int = 1):
        self.sizes = [in_dim, *hidden, out_dim]

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

    def __call__(self, params: Params, x: Tensor) -> Tensor:
        """Evaluate the network: params with leading T, x (T, B, in_dim) -> (T, B, out_dim)."""
        h = x
        for i in range(self.num_layers):
            h = _batched_linear(h, params[f"layers.{i}.weight"], params[f"layers.{i}.bias"])
            if i < self.num_layers - 1:
                h = F.relu(h)
        return h


class ConvNet:
    """The 4-block few-shot classifier of Vinyals et al. / Finn et al.

    Each block is 3x3 conv (padding 1) -> batch norm -> ReLU -> 2x2 max-pool; then a linear
    layer maps the flattened features to ``ways`` logits.
    Omniglot: 1x28x28 input, 64 filters (final feature map 64x1x1 -> 64 features).
    MiniImagenet: 3x84x84 input, 32 filters (final 32x5x5 -> 800 features).

    Batch norm is transductive as in MAML: statistics are always computed over each task's batch
    and spatial dims (biased variance, eps=1e-5), with no running statistics.

    Parameter keys (shapes without the task dimension):
    ``blocks.{i}.conv.weight`` (O, C, 3, 3), ``blocks.{i}.conv.bias`` (O,),
    ``blocks.{i}.norm.weight`` (O,), ``blocks.{i}.norm.bias`` (O,),
    ``head.weight`` (ways, feature_dim), ``head.bias`` (ways,).
    """

    eps = 1e-5

    def __init__(
        self, in_channels: int, image_size: int, ways: int, filters: int = 64, blocks: int = 4
    ):
        self.in_channels = in_channels
        self.image_size = image_size
        self.ways = ways
        self.filters = filters
        self.blocks = blocks

    @property
    def feature_dim(self) -> int:
        """Flattened size of the final feature map (each max-pool floor-halves the side)."""
        side = self.image_size
        for _ in range(self.blocks):
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
        for i in range(self.blocks):
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

    def _block(self, params: Params, i: int, h: Tensor, T: int) -> Tensor:
        """One conv block on tasks folded into channels: h (B, T*C, H, W) -> (B, T*O, H/2, W/2)."""
        weight = params[f"blocks.{i}.conv.weight"]  # (T, O, C, 3, 3)
        weight = weight.reshape(T * weight.shape[1], *weight.shape[2:])  # (T*O, C, 3, 3)
        bias = params[f"blocks.{i}.conv.bias"].reshape(-1)  # (T*O,)
        h = F.conv2d(h, weight, bias, padding=1, groups=T)  # (B, T*O, H, W)
        # Channel t*O + o belongs to task t only, so per-channel stats are per-task stats.
        h = F.batch_norm(
            h,
            None,
            None,
            params[f"blocks.{i}.norm.weight"].reshape(-1),  # (T*O,)
            params[f"blocks.{i}.norm.bias"].reshape(-1),  # (T*O,)
            training=True,
            eps=self.eps,
        )
        return F.max_pool2d(F.relu(h), 2)

    def __call__(self, params: Params, x: Tensor) -> Tensor:
        """Evaluate the network: params with leading T, x (T, B, C, H, W) -> logits (T, B, ways)."""
        T, B = x.shape[:2]
        h = x.transpose(0, 1).reshape(B, T * x.shape[2], *x.shape[3:])  # (B, T*C, H, W)
        for i in range(self.blocks):
            h = self._block(params, i, h, T)
        feats = h.reshape(B, T, -1).transpose(0, 1)  # (T, B, feature_dim)
        return _batched_linear(feats, params["head.weight"], params["head.bias"])
