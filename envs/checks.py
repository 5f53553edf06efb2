"""Argument checks shared by the environments, and what a Gymnasium env's ``reset`` and
``step`` must return (used by ``envs/gym_batch.py`` and the task-protocol check of
``rkmeta_rl/rl/gym_tasks.py``)."""

from __future__ import annotations

from typing import Any

import numpy as np

STEP_RESULT = "(obs, reward, terminated, truncated, info)"
RESET_RESULT = "(obs, info)"


def check_positive_int(name: str, value: Any) -> int:
    """Return ``value`` if it is a positive integer, else raise ``ValueError`` naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def describe_value(value: Any, limit: int = 80) -> str:
    """``value``'s repr on one line, cut to about ``limit`` characters."""
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[:limit] + "..."


def _ndim(value: Any) -> int:
    """``np.ndim(value)``; -1 for a ragged sequence."""
    try:
        return np.ndim(value)
    except ValueError:
        return -1


def observation_problem(obs: Any, shape: tuple[int, ...]) -> str | None:
    """What is wrong with ``obs`` as an observation of a Box of ``shape``, as the end of
    a sentence starting with the call (``"returned an observation of shape (3,), ..."``);
    None if nothing is."""
    try:
        got = np.shape(obs)
    except ValueError:  # a ragged sequence
        return f"returned an observation that is not an array: {describe_value(obs)}"
    if got != tuple(shape):
        return (f"returned an observation of shape {got}, but its observation space has "
                f"shape {tuple(shape)}: {describe_value(obs)}")
    try:
        values = np.asarray(obs, dtype=np.float64)
    except (TypeError, ValueError):
        return f"returned an observation that is not numeric: {describe_value(obs)}"
    if not np.isfinite(values).all():
        return f"returned an observation that is not finite: {describe_value(obs)}"
    return None


def reward_problem(reward: Any) -> str | None:
    """What is wrong with ``reward`` (not a finite scalar), as :func:`observation_problem`
    says it; None if nothing is."""
    if _ndim(reward) != 0:
        return f"returned a reward that is not a number: {describe_value(reward)}"
    try:
        value = float(reward)
    except (TypeError, ValueError):
        return f"returned a reward that is not a number: {describe_value(reward)}"
    return None if np.isfinite(value) else f"returned a reward that is not finite: {value}"


def reset_problem(result: Any, shape: tuple[int, ...]) -> str | None:
    """What is wrong with ``reset``'s ``result`` (Gymnasium's ``(obs, info)``, ``obs`` of
    ``shape``); None if nothing is."""
    if not (isinstance(result, tuple) and len(result) == 2):
        return f"returned {describe_value(result)}, not {RESET_RESULT}"
    return observation_problem(result[0], shape)


def step_problem(result: Any, shape: tuple[int, ...]) -> str | None:
    """What is wrong with ``step``'s ``result`` (Gymnasium's five values, ``obs`` of
    ``shape``, a finite scalar reward, scalar flags); None if nothing is."""
    if not (isinstance(result, (tuple, list)) and len(result) == 5):
        return f"returned {describe_value(result)}, not {STEP_RESULT}"
    obs, reward, terminated, truncated, _ = result
    for flag, value in (("terminated", terminated), ("truncated", truncated)):
        if _ndim(value) != 0:
            return f"returned {flag}={describe_value(value)}, not a bool"
    return observation_problem(obs, shape) or reward_problem(reward)
