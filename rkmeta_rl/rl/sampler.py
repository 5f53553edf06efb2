"""Where episodes come from: the one call the trainer and the evaluator sample through.

A sampler is any callable ``sample(policy, params, tasks, episodes_per_task, generator)
-> Episodes`` (shapes in ``rkmeta_rl.rl.episodes``). :class:`LocalSampler` steps every
(task, episode) pair of the call as one batched env on this machine, evaluating the
policy once per time step for all of them. A distributed backend implements the same call
(send the parameters and tasks out, gather the episodes back, draw its exploration noise
from per-worker streams derived from ``generator``) and is handed to ``Trainer(...,
sampler=...)``; nothing else changes.
"""

from __future__ import annotations

from typing import Protocol

import torch

from rkmeta_rl.rk import Params
from rkmeta_rl.rl.episodes import Episodes, rollout
from rkmeta_rl.rl.policy import GaussianMLPPolicy


class Sampler(Protocol):
    def __call__(self, policy: GaussianMLPPolicy, params: Params, tasks: list[dict],
                 episodes_per_task: int, generator: torch.Generator) -> Episodes: ...


class LocalSampler:
    """One batched env per call (the family's ``batched_env``), closed when the call ends,
    also when it ends by an exception or Ctrl-C, so no physics thread outlives it."""

    def __init__(self, family) -> None:
        self.family = family

    def __call__(self, policy: GaussianMLPPolicy, params: Params, tasks: list[dict],
                 episodes_per_task: int, generator: torch.Generator) -> Episodes:
        env = self.family.batched_env(tasks, episodes_per_task)
        try:
            return rollout(policy, params, env, self.family.action_low,
                           self.family.action_high, generator)
        finally:
            close = getattr(env, "close", None)
            if close is not None:
                close()
