"""Summaries of per-task results: mean, spread and a t-based 95% confidence interval."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats
from torch import Tensor


def summarize(per_task: Tensor | np.ndarray | list[float]) -> dict[str, Any]:
    """Mean over tasks, sample standard deviation, t-based 95% interval, per-task values."""
    x = np.asarray(per_task, dtype=np.float64)
    mean = float(x.mean())
    std = float(x.std(ddof=1)) if x.size > 1 else 0.0
    half = float(stats.t.ppf(0.975, x.size - 1) * std / math.sqrt(x.size)) if x.size > 1 else 0.0
    return {"mean": mean, "std": std, "ci95": [mean - half, mean + half],
            "per_task": x.tolist()}
