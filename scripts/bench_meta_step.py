"""Seconds per RK-TRPO meta-iteration on 2D navigation, split by phase.

    python scripts/bench_meta_step.py                   # paper: 40 tasks x 20 episodes, 2x100
    python scripts/bench_meta_step.py --tasks 20 --hidden 64,64   # pytorch-maml-rl's nav2d size
    python scripts/bench_meta_step.py --fractions 1,0.5,0.25      # exact vs subsampled curvature

Each configuration runs ``--iters`` meta-iterations from the same seed in this process
(one warm-up iteration is dropped) and prints the median per phase, plus the ratio of
each configuration's total to the first one's. Timings on a shared machine are noisy:
trust the ratios taken in one process more than the absolute seconds.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from rkmeta_rl.rl.config import TrainConfig, resolve
from rkmeta_rl.rl.trainer import Trainer

PHASES = ("sampling", "inner_adaptation", "cg", "line_search")


def bench(cfg: TrainConfig, iters: int) -> dict[str, float]:
    trainer = Trainer(cfg, "unused")
    rows = []
    for _ in range(iters + 1):
        tasks = trainer.family.sample_tasks(cfg.meta_batch_size)
        t0 = time.perf_counter()
        res = trainer.meta_step(tasks)
        rows.append({**res.seconds, "total": time.perf_counter() - t0})
    rows = rows[1:]
    return {k: statistics.median(r.get(k, 0.0) for r in rows) for k in (*PHASES, "total")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--method", default="ralston")
    p.add_argument("--tasks", type=int, default=40)
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--hidden", default="100,100")
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--threads", default="1", help="comma list of torch thread counts")
    p.add_argument("--fractions", default="1", help="comma list of curvature fractions")
    p.add_argument("--first-order", action="store_true")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    hidden = [int(x) for x in args.hidden.split(",")]
    print(f"method {args.method}, {args.tasks} tasks x {args.episodes} episodes x 100 steps, "
          f"hidden {hidden}, first_order {args.first_order}, torch {torch.__version__}, "
          f"device {args.device}")
    print(f"{'threads':>7} {'fraction':>8} " + " ".join(f"{k:>16}" for k in PHASES)
          + f" {'total s/iter':>12} {'ratio':>6}")
    base = None
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        for frac in (float(f) for f in args.fractions.split(",")):
            cfg = resolve(TrainConfig(method=args.method, meta_batch_size=args.tasks,
                                      fast_batch_size=args.episodes, hidden=hidden,
                                      curvature_fraction=frac, first_order=args.first_order,
                                      device=args.device))
            r = bench(cfg, args.iters)
            base = base or r["total"]
            print(f"{threads:>7} {frac:>8.2f} " + " ".join(f"{r[k]:>16.3f}" for k in PHASES)
                  + f" {r['total']:>12.2f} {r['total'] / base:>6.2f}", flush=True)


if __name__ == "__main__":
    main()
