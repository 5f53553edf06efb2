"""Where episodes come from: the one call the trainer and the evaluator sample through.

A sampler is any callable ``sample(policy, params, tasks, episodes_per_task, key) ->
Episodes`` (shapes in ``rkmeta_rl.rl.episodes``): per-task parameters ``params`` (CPU
tensors with a leading task dimension), the meta-batch's ``tasks`` and a
:class:`~rkmeta_rl.rl.streams.StreamKey` naming the call's random streams. Every episode
draws its exploration noise and reset seed from its own stream, a function of the key, its
task's index in ``tasks`` and its own index (``rkmeta_rl/rl/streams.py``; an episode
restarted in its row, MAML's sampling, continues that row's streams), so how the tasks
are spread over processes never changes the episodes. Two backends, chosen with
``--sampler`` (docs/guides/ray.md):

* :class:`LocalSampler` steps every (task, episode) of the call as one batched env on this
  machine, evaluating the policy once per time step for all of them;
* :class:`rkmeta_rl.rl.ray_sampler.RaySampler` splits the tasks into one share of whole
  tasks per Ray worker, each running :func:`sample_share` (the same code) on its share;
  the episodes are bitwise those of the local sampler.

A sampler may also have ``start()`` (the trainer calls it before its first iteration) and
``close()`` (called when training ends, however it ends). An env that fails raises
:class:`SamplingError` naming the task (its index and dict), the episode and the worker.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from envs.batch import EnvError
from rkmeta_rl.rk import Params
from rkmeta_rl.rl.episodes import Episodes, rollout
from rkmeta_rl.rl.policy import GaussianMLPPolicy
from rkmeta_rl.rl.streams import StreamKey, episode_streams

SAMPLERS = {"local": "one batched env in this process",
            "ray": "whole tasks spread over Ray workers (pip install -e \".[ray]\")"}


class SamplingError(RuntimeError):
    """Sampling failed (an env raised, or a worker could not run); the message names the
    task, episode and worker where that is known."""


class Sampler(Protocol):
    def __call__(self, policy: GaussianMLPPolicy, params: Params, tasks: list[dict],
                 episodes_per_task: int, key: StreamKey) -> Episodes: ...


def describe_task(task: dict) -> str:
    """A task dict as one short line (arrays as lists)."""
    return str({k: np.asarray(v).tolist() for k, v in task.items()})


def sample_share(family, policy: GaussianMLPPolicy, params: Params, tasks: list[dict],
                 episodes_per_task: int, key: StreamKey, first_task: int = 0,
                 worker: str = "the local sampler") -> Episodes:
    """The episodes of ``tasks``, the meta-batch's tasks ``first_task``, ``first_task +
    1``, ...: one batched env of ``family`` (closed when the call ends, also by an
    exception or Ctrl-C, so no physics thread outlives it), every row on its own stream.
    An env's failure becomes a :class:`SamplingError` naming the task and ``worker``."""
    streams = episode_streams(key, range(first_task, first_task + len(tasks)),
                              episodes_per_task, family.max_episode_steps, family.act_dim)
    env = None
    try:
        env = family.batched_env(tasks, episodes_per_task, streams.reset_seeds)
        return rollout(policy, params, env, family.action_low, family.action_high,
                       streams.noise)
    except EnvError as e:
        task = first_task + e.task
        raise SamplingError(f"sampling failed in task {task} {describe_task(tasks[e.task])}, "
                            f"episode {e.episode}, on {worker}: {e.what}") from e
    finally:
        close = getattr(env, "close", None)
        if close is not None:
            close()


class LocalSampler:
    """Every task of a call in one batched env of ``family``, in this process."""

    def __init__(self, family) -> None:
        self.family = family

    def __call__(self, policy: GaussianMLPPolicy, params: Params, tasks: list[dict],
                 episodes_per_task: int, key: StreamKey) -> Episodes:
        return sample_share(self.family, policy, params, tasks, episodes_per_task, key)
