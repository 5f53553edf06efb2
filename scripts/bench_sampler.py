"""MuJoCo sampling speed: environment steps per second, from raw physics to a policy rollout.

    python scripts/bench_sampler.py                        # HalfCheetah and Ant, 400 envs x 100
    python scripts/bench_sampler.py --robot halfcheetah --repeats 5
    python scripts/bench_sampler.py --envs 40 --horizon 10 --repeats 1   # a quick check

For each robot (Gymnasium v5 model, frame skip 5), on ``--envs`` environments (``--tasks``
tasks of ``--envs / --tasks`` episodes) for ``--horizon`` env steps:

1. ``mujoco.mj_step`` in a Python loop, one ``MjData`` per env (frame_skip substeps each);
2. ``mujoco.rollout`` alone, closed loop (one env step per call, states fed back), random
   controls, on 1 and on ``--threads`` threads; (2b) the same with ``mujoco.batch.Batch``
   (MuJoCo 4's stateful batch; its thread count includes the caller's thread);
3. :class:`envs.mujoco_batch.BatchedLocomotion` with random actions (``--threads``);
4. ``rkmeta_rl.rl.episodes.rollout`` on it with a 2x100 Gaussian MLP policy (inference
   included; torch on one thread), with the share of time spent inside ``env.step``.

Prints the median and best rate over ``--repeats`` runs (after one warm-up) and each
median's ratio to (1). On a shared machine trust ratios more than absolute rates.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import mujoco
import mujoco.batch
import mujoco.rollout
import numpy as np
import torch

from envs.locomotion_tasks import get_spec
from envs.mujoco_batch import BatchedLocomotion
from rkmeta_rl.rk import repeat_params
from rkmeta_rl.rl.episodes import rollout
from rkmeta_rl.rl.policy import GaussianMLPPolicy
from rkmeta_rl.rl.streams import StreamKey, episode_streams

FAMILY = {"halfcheetah": "halfcheetah-vel", "ant": "ant-vel"}


def rate(fn: Callable[[], int], repeats: int) -> tuple[float, float]:
    """Median and best steps/s of ``fn`` (returns its env steps), after one warm-up."""
    fn()
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        steps = fn()
        rates.append(steps / (time.perf_counter() - t0))
    return statistics.median(rates), max(rates)


def make_batch(robot: str, envs: int, tasks: int, horizon: int,
               threads: int) -> BatchedLocomotion:
    spec = get_spec(FAMILY[robot])
    task_list = spec.sample_tasks(np.random.default_rng(0), tasks)
    return BatchedLocomotion(spec.name, task_list, envs // tasks, horizon, range(envs),
                             nthread=threads)


def raw_mj_step(batch: BatchedLocomotion, horizon: int) -> Callable[[], int]:
    """(1) mj_step(frame_skip) per env in Python, random controls."""
    model, n = batch.model, batch.num_envs
    datas = [mujoco.MjData(model) for _ in range(n)]
    rng = np.random.default_rng(0)

    def run() -> int:
        for d in datas:
            mujoco.mj_resetData(model, d)
            d.qpos[:] = batch.init_qpos
        for _ in range(horizon):
            ctrl = rng.uniform(-1, 1, (n, model.nu))
            for d, c in zip(datas, ctrl, strict=True):
                d.ctrl[:] = c
                mujoco.mj_step(model, d, nstep=batch.frame_skip)
        return n * horizon

    return run


def raw_rollout(batch: BatchedLocomotion, horizon: int, threads: int) -> Callable[[], int]:
    """(2) mujoco.rollout, one env step per call, states fed back, random controls."""
    model, n, fs = batch.model, batch.num_envs, batch.frame_skip
    pool = mujoco.rollout.Rollout(nthread=threads if threads > 1 else 0)
    datas = [mujoco.MjData(model) for _ in range(threads)]
    nstate = mujoco.mj_stateSize(model, mujoco.mjtState.mjSTATE_FULLPHYSICS.value)
    first = np.zeros(nstate)
    first[1:1 + model.nq] = batch.init_qpos
    out, sensor = np.empty((n, fs, nstate)), np.empty((n, fs, 0))
    rng = np.random.default_rng(0)

    def run() -> int:
        state = np.tile(first, (n, 1))
        for _ in range(horizon):
            ctrl = np.repeat(rng.uniform(-1, 1, (n, 1, model.nu)), fs, axis=1)
            pool.rollout([model] * n, datas, state, ctrl, skip_checks=True, nstep=fs,
                         state=out, sensordata=sensor, chunk_size=max(1, n // (10 * threads)))
            state = out[:, -1].copy()
        return n * horizon

    return run


def raw_batch(batch: BatchedLocomotion, horizon: int, threads: int) -> Callable[[], int]:
    """(2b) mujoco.batch.Batch.step(frame_skip), for comparison, random controls."""
    model, n = batch.model, batch.num_envs
    sims = mujoco.batch.Batch(model, n, nthread=threads)
    qpos, ctrl = sims.bind("qpos"), sims.bind("ctrl")
    rng = np.random.default_rng(0)

    def run() -> int:
        sims.reset()
        qpos[:] = batch.init_qpos
        for _ in range(horizon):
            ctrl[:] = rng.uniform(-1, 1, (n, model.nu))
            sims.step(nstep=batch.frame_skip)
        return n * horizon

    return run


def batched_random(batch: BatchedLocomotion) -> Callable[[], int]:
    """(3) BatchedLocomotion.step with uniform random actions in the control range."""
    gen = torch.Generator().manual_seed(0)

    def run() -> int:
        batch.reset()
        steps = 0
        for _ in range(batch.max_episode_steps):
            steps += int(batch.alive.sum())
            u = torch.rand((*batch.batch_shape, batch.action_dim), generator=gen)
            batch.step(batch.action_low + u * (batch.action_high - batch.action_low))
        return steps

    return run


class TimedEnv:
    """The batch with the seconds spent in ``step`` counted."""

    def __init__(self, batch: BatchedLocomotion) -> None:
        self.batch, self.seconds = batch, 0.0
        self.max_episode_steps = batch.max_episode_steps

    @property
    def alive(self) -> torch.Tensor:
        return self.batch.alive

    def reset(self) -> torch.Tensor:
        return self.batch.reset()

    def step(self, action: torch.Tensor):
        t0 = time.perf_counter()
        out = self.batch.step(action)
        self.seconds += time.perf_counter() - t0
        return out


def policy_rollout(batch: BatchedLocomotion) -> tuple[Callable[[], int], TimedEnv]:
    """(4) rollout() with a 2x100 policy and per-task parameters."""
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(batch.obs_dim, batch.action_dim, hidden=(100, 100))
    params = {k: v.detach() for k, v in repeat_params(policy.params(), batch.num_tasks).items()}
    env = TimedEnv(batch)
    streams = episode_streams(StreamKey(0), range(batch.num_tasks), batch.episodes_per_task,
                              batch.max_episode_steps, batch.action_dim)

    def run() -> int:
        episodes = rollout(policy, params, env, batch.action_low, batch.action_high,
                           streams.noise)
        return int(episodes.mask.sum())

    return run, env


def bench_robot(robot: str, args: argparse.Namespace) -> None:
    n, h = args.envs, args.horizon
    print(f"\n{robot}: {args.tasks} tasks x {n // args.tasks} episodes = {n} envs, "
          f"horizon {h}, {args.repeats} repeats")
    with make_batch(robot, n, args.tasks, h, args.threads) as batch:
        rows = [("(1) mj_step, Python loop", rate(raw_mj_step(batch, h), args.repeats))]
        for t in sorted({1, args.threads}):
            rows.append((f"(2) mujoco.rollout, {t} thread(s)",
                         rate(raw_rollout(batch, h, t), args.repeats)))
        for t in sorted({1, args.threads}):
            rows.append((f"(2b) mujoco.batch.Batch, {t} thread(s)",
                         rate(raw_batch(batch, h, t), args.repeats)))
        rows.append((f"(3) BatchedLocomotion, {args.threads} threads",
                     rate(batched_random(batch), args.repeats)))
        run, env = policy_rollout(batch)
        t0 = time.perf_counter()
        rows.append(("(4) rollout() + 2x100 policy", rate(run, args.repeats)))
        share = env.seconds / (time.perf_counter() - t0)
    base = rows[0][1][0]
    print(f"{'':40} {'median/s':>10} {'best/s':>10} {'ratio':>6}")
    for name, (median, best) in rows:
        print(f"{name:40} {median:10.0f} {best:10.0f} {median / base:6.2f}")
    print(f"(4): {100 * share:.0f}% of the time inside env.step, the rest policy and bookkeeping")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--envs", type=int, default=400)
    p.add_argument("--tasks", type=int, default=20)
    p.add_argument("--horizon", type=int, default=100)
    p.add_argument("--robot", default="halfcheetah,ant", help="comma list: halfcheetah, ant")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    if args.envs % args.tasks:
        p.error(f"--envs {args.envs} is not a multiple of --tasks {args.tasks}")
    robots = args.robot.split(",")
    for robot in robots:
        if robot not in FAMILY:
            p.error(f"unknown robot {robot!r}; valid: {', '.join(FAMILY)}")
    torch.set_num_threads(1)  # MuJoCo's threads do the parallel work
    print(f"mujoco {mujoco.__version__}, torch {torch.__version__} (1 thread)")
    for robot in robots:
        bench_robot(robot, args)


if __name__ == "__main__":
    main()
