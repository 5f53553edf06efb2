"""Any Gymnasium environment as a task family: opening it by name and checking the protocol.

An ``--env`` that is not a built-in family name is one of

* a registered Gymnasium id, such as ``rkmeta_rl/Nav2D-v0``;
* an import path ``module:Class`` (``Class()`` is called with no arguments; any callable
  returning a ``gymnasium.Env`` will do);
* ``module:Id-v0``, Gymnasium's own form: importing ``module`` registers ``Id-v0``.

The module must be importable by the Python that runs (installed, or on ``PYTHONPATH``;
``python -m rkmeta_rl.cli`` also finds modules in the current directory, the
``rkmeta-rl`` script does not).

The task protocol (as pytorch-maml-rl's): the *unwrapped* env has ``sample_tasks(n) ->
list[dict]`` drawing tasks from its own ``np_random`` (so ``reset(seed=...)`` seeds it)
and takes a task through ``reset(options={"task": task})``; ``reset(seed=...)`` alone must
work too and must reset everything a seed determines. The action space is a bounded
``gymnasium.spaces.Box`` (the policy's actions are scaled to its bounds), the observation
space a flat (1-D) ``Box``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

FORMS = ("a registered Gymnasium id (such as rkmeta_rl/Nav2D-v0) or an import path "
         "module:Class")
PROTOCOL = ("a task env needs sample_tasks(n) -> list[dict] on the unwrapped env, "
            "reset(options={'task': task}), a bounded Box action space and a flat Box "
            "observation space (README: Your own environment)")


def is_gym_name(name: str) -> bool:
    """Whether ``name`` reads as an import path or a registered Gymnasium id."""
    return ":" in name or name in gym.registry


def _one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())}"


def _maker(name: str, max_episode_steps: int | None) -> Callable[[], gym.Env]:
    """A no-argument callable making the env ``name`` names (ValueError if it names none).
    A registered id's TimeLimit is set to ``max_episode_steps`` when given."""
    module_name, _, attr = name.rpartition(":")
    if module_name:
        try:
            module = importlib.import_module(module_name)
        except Exception as e:  # whatever the user's module raises: one line
            raise ValueError(f"env {name!r}: cannot import module {module_name!r} "
                             f"({_one_line(e)}; is it installed or on PYTHONPATH?); "
                             f"valid forms: {FORMS}") from None
        if hasattr(module, attr):
            factory = getattr(module, attr)
            if not callable(factory):
                raise ValueError(f"env {name!r}: {attr} in {module_name} is not a class; "
                                 f"valid forms: {FORMS}")
            return factory
    if attr not in gym.registry:
        where = f"module {module_name} has no {attr!r} and it" if module_name else "it"
        raise ValueError(f"unknown env {name!r}: {where} is not a registered Gymnasium id; "
                         f"valid forms: {FORMS}")
    kwargs = {} if max_episode_steps is None else {"max_episode_steps": max_episode_steps}
    return partial(gym.make, attr, **kwargs)


def make_task_env(name: str, max_episode_steps: int | None = None) -> gym.Env:
    """A fresh env named ``name`` (a Gymnasium id or module:Class); one-line ValueError
    when it cannot be made. A registered id's time limit is set to ``max_episode_steps``
    when given; a class is built as it is."""
    maker = _maker(name, max_episode_steps)
    try:
        env = maker()
    except Exception as e:  # the env's own constructor failed, whatever it raised
        raise ValueError(f"env {name!r} could not be made ({_one_line(e)}; a class is "
                         f"called with no arguments); valid forms: {FORMS}") from None
    if not isinstance(env, gym.Env):
        raise ValueError(f"env {name!r}: made a {type(env).__name__}, not a gymnasium.Env; "
                         + PROTOCOL)
    return env


def check_spaces(env: gym.Env, name: str) -> None:
    """A bounded Box action space and a flat Box observation space, or ValueError."""
    act, obs = env.action_space, env.observation_space
    if not isinstance(act, spaces.Box) or len(act.shape) != 1:
        raise ValueError(f"env {name!r}: its action space {act} is not a 1-D "
                         f"gymnasium.spaces.Box; {PROTOCOL}")
    if not (np.isfinite(act.low).all() and np.isfinite(act.high).all()):
        raise ValueError(f"env {name!r}: its action space {act} is unbounded (the policy's "
                         f"actions are scaled to the bounds); {PROTOCOL}")
    if not isinstance(obs, spaces.Box) or len(obs.shape) != 1:
        raise ValueError(f"env {name!r}: its observation space {obs} is not a flat "
                         f"gymnasium.spaces.Box; {PROTOCOL}")


def _attempt(name: str, what: str, call: Callable[[], Any]) -> Any:
    """``call()``, or a one-line ValueError saying that ``what`` failed."""
    try:
        return call()
    except Exception as e:  # anything the user's code raises: one line
        raise ValueError(f"env {name!r}: {what} failed ({_one_line(e)}); {PROTOCOL}") from None


def check_protocol(env: gym.Env, name: str) -> None:
    """Draw one task, reset with it (seed 0) and without it, or ValueError naming what is
    missing."""
    unwrapped = env.unwrapped
    sample = getattr(unwrapped, "sample_tasks", None)
    if not callable(sample):
        raise ValueError(f"env {name!r}: the unwrapped env ({type(unwrapped).__name__}) has "
                         f"no sample_tasks(n) method; {PROTOCOL}")
    tasks = _attempt(name, "sample_tasks(1)", lambda: sample(1))
    if not (isinstance(tasks, Sequence) and len(tasks) == 1 and isinstance(tasks[0], Mapping)):
        raise ValueError(f"env {name!r}: sample_tasks(1) returned {tasks!r:.80}, not a list "
                         f"of one dict; {PROTOCOL}")
    obs, _ = _attempt(name, "reset(seed=0, options={'task': task})",
                      lambda: env.reset(seed=0, options={"task": tasks[0]}))
    if np.shape(obs) != env.observation_space.shape:
        raise ValueError(f"env {name!r}: reset returned an observation of shape "
                         f"{np.shape(obs)}, its space says {env.observation_space.shape}")
    _attempt(name, "reset(seed=0) without a task", lambda: env.reset(seed=0))


def inspect_task_env(name: str) -> int | None:
    """Check that ``name`` makes an env following the task protocol (one-line ValueError
    otherwise); return its registered horizon (``spec.max_episode_steps``) or None."""
    env = make_task_env(name)
    try:
        check_spaces(env, name)
        check_protocol(env, name)
        return None if env.spec is None else env.spec.max_episode_steps
    finally:
        env.close()
