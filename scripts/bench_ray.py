"""Local sampling against Ray workers, side by side: seconds per meta-iteration and env-steps/s.

    python scripts/bench_ray.py                                  # paper size, Ray x1 and x2
    python scripts/bench_ray.py --workers 1,2,4,8 --iters 5
    python scripts/bench_ray.py --tasks 4 --episodes 2 --horizon 20 --iters 1   # a quick check

One trainer per backend (``--sampler local`` and Ray with each ``--workers`` count), all
from the same seed, on the paper's HalfCheetah size by default: 40 tasks × 20 episodes ×
200 steps, MAML's dynamics, a two-stage tableau (ralston), so an iteration is two sample
calls plus the meta-step. The backends take turns iteration by iteration (one warm-up
round first, which starts the workers), so a drift in the machine's speed hits them alike;
every backend samples bitwise the same episodes, which the script checks on the metrics.

Per backend it prints the median over ``--iters`` rounds of the sampling seconds per
iteration (both calls), of the whole iteration, env-steps per second of sampling (steps
actually taken, summed over both calls), and each median's ratio to local's. Ray runs on
a local instance with one logical CPU per worker of every backend (only one backend
samples at a time), or on the cluster at ``--ray-address`` (which then needs as many CPUs
as all the backends' workers together). The meta-step runs in this process on
``--threads`` torch threads; the local sampler's physics on ``--local-physics-threads``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from rkmeta_rl.rl.config import TrainConfig, resolve
from rkmeta_rl.rl.sampler import LocalSampler
from rkmeta_rl.rl.trainer import Trainer
from rkmeta_rl.run.config import torch_threads

Row = dict[str, float]


class CountingSampler:
    """A sampler that adds up the env steps its episodes took."""

    def __init__(self, inner: Callable) -> None:
        self.inner, self.steps = inner, 0

    def __call__(self, *args):
        episodes = self.inner(*args)
        self.steps += int(episodes.mask.sum())
        return episodes

    def start(self) -> None:
        getattr(self.inner, "start", lambda: None)()

    def close(self) -> None:
        getattr(self.inner, "close", lambda: None)()


def make_config(args: argparse.Namespace) -> TrainConfig:
    return resolve(TrainConfig(env=args.env, dynamics=args.dynamics, method=args.method,
                               meta_batch_size=args.tasks, fast_batch_size=args.episodes,
                               max_episode_steps=args.horizon, hidden=args.hidden,
                               curvature_fraction=args.curvature_fraction, seed=args.seed))


def make_backends(cfg: TrainConfig, args: argparse.Namespace,
                  run_dir: Path) -> dict[str, tuple[Trainer, CountingSampler]]:
    """{name: (trainer, its counting sampler)}: local, then Ray with each worker count."""
    backends = {}
    for workers in [0, *args.workers]:
        trainer = Trainer(cfg, run_dir)  # its sampler is replaced below
        if workers == 0:
            name, inner = "local", LocalSampler(trainer.family)
            if hasattr(trainer.family, "nthread"):
                trainer.family.nthread = args.local_physics_threads
        else:
            from rkmeta_rl.rl.ray_sampler import RaySampler
            name = f"ray x{workers}"
            inner = RaySampler(cfg.env, cfg.max_episode_steps, cfg.dynamics, cfg.hidden,
                               workers, args.ray_address)
        trainer.sample_episodes = CountingSampler(inner)
        backends[name] = (trainer, trainer.sample_episodes)
    return backends


def one_iteration(trainer: Trainer, sampler: CountingSampler) -> tuple[Row, dict]:
    """Time one meta-iteration; (timings, its metrics without timings)."""
    sampler.steps = 0
    t0 = time.perf_counter()
    rec = trainer.step()
    total = time.perf_counter() - t0
    trainer.iteration += 1
    sampling = rec["seconds_sampling"]
    row = {"sampling": sampling, "iteration": total, "steps_per_s": sampler.steps / sampling}
    return row, {k: v for k, v in rec.items() if not k.startswith("seconds")}


def report(rows: dict[str, list[Row]]) -> None:
    med = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
           for name, rs in rows.items()}
    base = med["local"]
    print(f"{'backend':10} {'sample s/iter':>14} {'iter s/iter':>12} {'env-steps/s':>12} "
          f"{'sampling x':>11} {'iteration x':>12}")
    for name, m in med.items():
        print(f"{name:10} {m['sampling']:14.2f} {m['iteration']:12.2f} "
              f"{m['steps_per_s']:12.0f} {base['sampling'] / m['sampling']:11.2f} "
              f"{base['iteration'] / m['iteration']:12.2f}")
    print("(x: local's median seconds / the backend's; above 1 is faster than local)")


def run(args: argparse.Namespace) -> None:
    import ray  # an optional extra: pip install -e ".[ray]"

    torch.set_num_threads(torch_threads(args.threads))
    cfg = make_config(args)
    if args.ray_address:
        ray.init(address=args.ray_address, log_to_driver=False)
    else:
        ray.init(num_cpus=sum(args.workers), include_dashboard=False, log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            backends = make_backends(cfg, args, Path(tmp))
            rows: dict[str, list[Row]] = {name: [] for name in backends}
            for sampler in (s for _, s in backends.values()):
                sampler.start()
            for round_ in range(args.iters + 1):  # round 0: warm-up, not counted
                seen, times = {}, []
                for name, (trainer, sampler) in backends.items():
                    row, seen[name] = one_iteration(trainer, sampler)
                    times.append(f"{name} {row['iteration']:.2f} s")
                    if round_:
                        rows[name].append(row)
                same = all(m == seen["local"] for m in seen.values())
                print(f"round {round_}{'' if round_ else ' (warm-up)'}: {', '.join(times)}; "
                      f"identical metrics: {'yes' if same else 'NO'}", flush=True)
            report(rows)
            for _, sampler in backends.values():
                sampler.close()
    finally:
        ray.shutdown()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--env", default="halfcheetah-vel")
    p.add_argument("--dynamics", default="maml")
    p.add_argument("--method", default="ralston", help="a two-stage tableau: two sample calls")
    p.add_argument("--tasks", type=int, default=40)
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--horizon", type=int, default=200)
    p.add_argument("--hidden", type=lambda s: [int(x) for x in s.split(",")],
                   default=[100, 100])
    p.add_argument("--curvature-fraction", type=float, default=1.0)
    p.add_argument("--workers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2],
                   help="comma list of Ray worker counts (default 1,2)")
    p.add_argument("--iters", type=int, default=3, help="timed rounds after the warm-up")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads for the meta-step (0: every core)")
    p.add_argument("--local-physics-threads", type=int, default=2,
                   help="MuJoCo threads of the local sampler (the family's default: 2)")
    p.add_argument("--ray-address", default=None, help="a Ray cluster to use")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.iters < 1 or any(w < 1 for w in args.workers):
        p.error("--iters and every --workers count must be >= 1")
    print(f"{args.env} ({args.dynamics}): {args.tasks} tasks x {args.episodes} episodes x "
          f"{args.horizon} steps, {args.method}, hidden {args.hidden}; backends: local, "
          + ", ".join(f"ray x{w}" for w in args.workers), flush=True)
    run(args)


if __name__ == "__main__":
    main()
