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

Optional: ``sample_test_tasks(n)`` on the unwrapped env draws the tasks ``rkmeta-rl
evaluate`` adapts to (a held-out test set, as Meta-World's; without it they come from
``sample_tasks``), and ``info["success"]`` from ``step`` is recorded as the episode's success
(set at any step: the episode succeeded), reported as success rates in the metrics and
evaluations.

:func:`check_protocol` also runs a short probe (:data:`PROBE_STEPS` steps of the same
seeded actions, from ``reset(seed=0)`` with up to :data:`PROBE_TASKS` distinct sampled
tasks, and the first task once more): what ``reset`` and ``step`` return must have the
observation space's shape, finite values and a finite scalar reward (ValueError), and the
tasks must change the episodes. Tasks that give the same observations and rewards, while
the rewards vary from step to step, are refused (the env's ``reset`` ignores
``options["task"]``); where the probe cannot tell (the tasks drawn are all the same, the
reward stays constant, or the same task and seed gave different episodes) it warns with a
:class:`TaskProtocolWarning` instead.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.checks import describe_value, reset_problem, step_problem

FORMS = ("a registered Gymnasium id (such as rkmeta_rl/Nav2D-v0) or an import path "
         "module:Class")
PROTOCOL = ("a task env needs sample_tasks(n) -> list[dict] on the unwrapped env, "
            "reset(options={'task': task}), a bounded Box action space and a flat Box "
            "observation space (README: Your own environment)")
PROBE_DRAWS = 20  # tasks drawn by the probe (one sample_tasks call), of which it runs ...
PROBE_TASKS = 3  # ... up to this many distinct ones
PROBE_STEPS = 5  # steps per probe episode
PROBE_SEED = 0  # every probe episode's reset seed (and its actions' seed)
RESET_WITH_TASK = f"reset(seed={PROBE_SEED}, options={{'task': task}})"


class TaskProtocolWarning(UserWarning):
    """The protocol check could not tell whether a task env's tasks change its episodes."""


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
    """Check that an env follows the task protocol: reset without a task (seed 0), draw
    tasks and probe them (``probe_tasks``).

    Args:
        env: the env, as ``gymnasium.make`` or its maker returns it.
        name: how messages name it (its ``--env`` value).

    Raises:
        ValueError: one line naming what is missing or wrong.
    """
    unwrapped = env.unwrapped
    sample = getattr(unwrapped, "sample_tasks", None)
    if not callable(sample):
        raise ValueError(f"env {name!r}: the unwrapped env ({type(unwrapped).__name__}) has "
                         f"no sample_tasks(n) method; {PROTOCOL}")
    _attempt(name, f"reset(seed={PROBE_SEED}) without a task",
             lambda: env.reset(seed=PROBE_SEED))
    tasks = _attempt(name, f"sample_tasks({PROBE_DRAWS})", lambda: sample(PROBE_DRAWS))
    if not (isinstance(tasks, Sequence) and len(tasks) == PROBE_DRAWS
            and all(isinstance(task, Mapping) for task in tasks)):
        raise ValueError(f"env {name!r}: sample_tasks({PROBE_DRAWS}) returned "
                         f"{describe_value(tasks)}, not a list of {PROBE_DRAWS} dicts; "
                         f"{PROTOCOL}")
    probe_tasks(env, name, tasks)


Trace = list[Any]  # a probe episode: first observation, then per step obs, reward, flags


def probe_tasks(env: gym.Env, name: str, tasks: Sequence[Mapping]) -> None:
    """Run a probe episode for each of up to :data:`PROBE_TASKS` distinct ``tasks`` and
    the first once more; ValueError if what the env returns is wrong or if distinct tasks
    surely make no difference, a :class:`TaskProtocolWarning` if that cannot be told."""
    distinct = _distinct(tasks)[:PROBE_TASKS]
    actions = _probe_actions(env.action_space)
    traces = [_probe_episode(env, name, task, actions) for task in distinct]
    if not _same(traces[0], _probe_episode(env, name, distinct[0], actions)):
        _warn(f"env {name!r}: two episodes of the same task from {RESET_WITH_TASK} with the "
              "same actions differed, so something in it is not fixed by the seed (runs "
              "will not repeat or resume exactly) and whether its tasks change the episodes "
              "was not checked")
    elif len(distinct) < 2:
        _warn(f"env {name!r}: sample_tasks({PROBE_DRAWS}) drew {PROBE_DRAWS} equal tasks, "
              "so whether a task changes the episodes was not checked")
    elif all(_same(traces[0], trace) for trace in traces[1:]):
        _same_episodes(name, len(distinct), traces[0])


def _same_episodes(name: str, count: int, trace: Trace) -> None:
    """``count`` distinct tasks gave the episode ``trace``: ValueError if its rewards vary
    (the task surely changes nothing), else a warning (it may show only later)."""
    rewards = trace[2::4]
    same = (f"env {name!r}: {count} different tasks from sample_tasks gave the same "
            f"observations and rewards over {len(rewards)} steps from {RESET_WITH_TASK} with "
            "the same actions")
    if len(set(rewards)) > 1:
        raise ValueError(f"{same}: its reset ignores options['task']; set the task from "
                         "options['task'] in reset (a pytorch-maml-rl env: call "
                         "self.reset_task(options['task']) there; README: Your own "
                         "environment)")
    _warn(f"{same} (a constant reward {rewards[0]}): fine if a task only shows later in an "
          "episode, otherwise its reset ignores options['task']")


def _probe_episode(env: gym.Env, name: str, task: Mapping, actions: np.ndarray) -> Trace:
    """One probe episode of ``task`` (ends early where the env ends it); ValueError if
    what ``reset`` or ``step`` returns is wrong."""
    shape = env.observation_space.shape
    result = _attempt(name, RESET_WITH_TASK,
                      lambda: env.reset(seed=PROBE_SEED, options={"task": task}))
    _returned(name, RESET_WITH_TASK, reset_problem(result, shape))
    trace: Trace = [np.asarray(result[0], dtype=np.float64)]
    for t, action in enumerate(actions, 1):
        result = _attempt(name, f"step() at step {t}", lambda a=action: env.step(a))
        _returned(name, f"step() at step {t}", step_problem(result, shape))
        obs, reward, terminated, truncated, _ = result
        trace += [np.asarray(obs, dtype=np.float64), float(reward), bool(terminated),
                  bool(truncated)]
        if terminated or truncated:
            break
    return trace


def _returned(name: str, call: str, problem: str | None) -> None:
    """A one-line ValueError if ``call`` returned something wrong (``problem``)."""
    if problem is not None:
        raise ValueError(f"env {name!r}: {call} {problem}; {PROTOCOL}")


def _probe_actions(space: spaces.Box) -> np.ndarray:
    """:data:`PROBE_STEPS` actions drawn uniformly from the Box (seed :data:`PROBE_SEED`),
    in its dtype."""
    rng = np.random.default_rng(PROBE_SEED)
    return rng.uniform(space.low, space.high, (PROBE_STEPS, *space.shape)).astype(space.dtype)


def _distinct(tasks: Sequence[Mapping]) -> list[Mapping]:
    """``tasks`` without repeats (in order)."""
    kept: list[Mapping] = []
    for task in tasks:
        if not any(_same(task, other) for other in kept):
            kept.append(task)
    return kept


def _same(a: Any, b: Any) -> bool:
    """Whether ``a`` and ``b`` are equal (dicts and lists item by item, arrays element by
    element); True where they cannot be compared, so that the probe only errs on the side
    of a warning."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    try:
        return bool(np.array_equal(a, b))
    except Exception:  # noqa: BLE001 - whatever the task's values raise on comparison
        return True


def _warn(message: str) -> None:
    warnings.warn(message, TaskProtocolWarning, stacklevel=2)


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
