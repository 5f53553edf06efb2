"""Every episode's random streams, named by where it sits in the run.

An episode's exploration noise and its reset seed depend only on (run seed, iteration,
stage, task index in the meta-batch, episode index): the numbers of
``numpy.random.SeedSequence([seed, iteration, stage, task, episode])``, whose two spawned
children give

* the episode's whole exploration-noise block, (horizon, action size) standard normals in
  float32, drawn once before the rollout (a PCG64 generator per episode, none per step);
* its reset seed, a 32-bit integer handed to the batched env's row (nav2d starts at the
  origin and draws nothing; the MuJoCo batch draws the row's initial-state noise from it;
  a Gymnasium env gets it as ``reset(seed=...)``).

So the episodes of a sample call do not depend on how its tasks are batched: one batch on
this machine, or any split of whole tasks over Ray workers, gives bitwise the same
episodes (``tests/test_streams.py``; the per-task policy products are bitwise independent
of the batch, ``rkmeta_rl/rl/policy.py``). A resumed run meets the same streams again, with
nothing to save in the checkpoint. The trainer's key is (``--seed``, iteration, stage),
with stage the RK stage (0-based; a one-stage tableau's monitoring sample is stage 1);
evaluation and ``render`` use (their seed, 0, adaptation step) (docs/guides/ray.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class StreamKey:
    """Names one sample call's streams: the run's seed, the iteration and the stage."""

    seed: int
    iteration: int = 0
    stage: int = 0

    def episode(self, task: int, episode: int) -> np.random.SeedSequence:
        """The seed sequence of task ``task``'s (index in the meta-batch) episode
        ``episode``."""
        return np.random.SeedSequence([self.seed, self.iteration, self.stage, task, episode])


@dataclass
class EpisodeStreams:
    """What a sample call's rows draw: noise (T, E, H, a) float32 on the CPU (None for
    deterministic sampling) and reset seeds (T·E ints, row-major over (task, episode))."""

    noise: Tensor | None
    reset_seeds: list[int]


def episode_streams(key: StreamKey, tasks: range, episodes: int, horizon: int, act_dim: int,
                    noise: bool = True) -> EpisodeStreams:
    """The streams of the meta-batch's tasks ``tasks`` (their indices in it), ``episodes``
    each: one seed sequence per episode, no generator per step."""
    block = np.empty((len(tasks), episodes, horizon, act_dim) if noise else (0,),
                     dtype=np.float32)
    seeds = []
    for i, task in enumerate(tasks):
        for e in range(episodes):
            noise_seq, reset_seq = key.episode(task, e).spawn(2)
            seeds.append(int(reset_seq.generate_state(1)[0]))
            if noise:
                rng = np.random.default_rng(noise_seq)
                rng.standard_normal((horizon, act_dim), dtype=np.float32, out=block[i, e])
    return EpisodeStreams(torch.from_numpy(block) if noise else None, seeds)
