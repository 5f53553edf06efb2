"""Sinusoid regression tasks (paper Section 5 "Regression", docs/method.md).

A task is y = A sin(x + φ) with amplitude A ~ U[0.1, 5.0] and phase φ ~ U[0, π]; inputs
x ~ U[-5, 5]. K points form the support set (the adaptation data) and another K the
query set, all drawn independently.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

AMPLITUDE = (0.1, 5.0)
PHASE = (0.0, math.pi)
X_RANGE = (-5.0, 5.0)


@dataclass
class RegressionBatch:
    xs: Tensor  # (T, K, 1) support inputs
    ys: Tensor  # (T, K, 1) support targets
    xq: Tensor  # (T, Q, 1) query inputs
    yq: Tensor  # (T, Q, 1) query targets
    amplitude: Tensor  # (T,)
    phase: Tensor  # (T,)


def _uniform(shape: tuple[int, ...], bounds: tuple[float, float], g: torch.Generator) -> Tensor:
    lo, hi = bounds
    return lo + (hi - lo) * torch.rand(shape, generator=g)


def sinusoid(x: Tensor, amplitude: Tensor, phase: Tensor) -> Tensor:
    """A sin(x + φ) for x (T, B, 1) and per-task A, φ (T,)."""
    return amplitude.view(-1, 1, 1) * torch.sin(x + phase.view(-1, 1, 1))


def sample_sinusoid_tasks(num_tasks: int, shots: int, queries: int,
                          generator: torch.Generator) -> RegressionBatch:
    """``num_tasks`` sinusoids with ``shots`` support and ``queries`` query points each."""
    for name, value in (("num_tasks", num_tasks), ("shots", shots), ("queries", queries)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    amplitude = _uniform((num_tasks,), AMPLITUDE, generator)
    phase = _uniform((num_tasks,), PHASE, generator)
    xs = _uniform((num_tasks, shots, 1), X_RANGE, generator)
    xq = _uniform((num_tasks, queries, 1), X_RANGE, generator)
    return RegressionBatch(xs, sinusoid(xs, amplitude, phase), xq, sinusoid(xq, amplitude, phase),
                           amplitude, phase)
