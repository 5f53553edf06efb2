"""Summarise 2D-navigation runs as a markdown table.

    python scripts/report_nav2d.py runs/nav2d-ralston-s0 runs/nav2d-midpoint-s0 ...

For each run directory: the training metrics' mean return before and after one
adaptation step over the last ``--last`` meta-iterations (each over the meta-batch's
tasks × episodes), and a held-out check of the final policy: ``--tasks`` goals drawn
with ``--seed`` (the same for every run), ``--episodes`` episodes per task before and
after one gradient step of the run's α (mean ± standard error over tasks).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np
import torch

from rkmeta_rl.rl import load_run
from rkmeta_rl.rl.adapt import adapt_to_tasks
from rkmeta_rl.rl.evaluate import held_out_tasks
from rkmeta_rl.rl.tasks import make_family
from rkmeta_rl.rl.trainer import run_alpha
from rkmeta_rl.run import rundir


def held_out(run_dir: str, tasks: int, episodes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    cfg, policy = load_run(run_dir)
    family = make_family(cfg.env, max_episode_steps=cfg.max_episode_steps)
    goals = held_out_tasks(family, tasks, seed)
    _, returns = adapt_to_tasks(policy, family, goals, run_alpha(cfg, policy), steps=1,
                                episodes_per_task=episodes,
                                seed=seed)
    return returns[0].numpy(), returns[1].numpy()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("runs", nargs="+")
    p.add_argument("--last", type=int, default=10)
    p.add_argument("--tasks", type=int, default=40)
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--window", type=int, default=10, help="iterations per curve point")
    args = p.parse_args()
    torch.set_num_threads(1)
    print(f"| run | method | iters | train pre (last {args.last}) | train post (last {args.last})"
          f" | held-out pre | held-out post | s/iter |")
    print("|---|---|---|---|---|---|---|---|")
    metrics = {run: rundir.read_metrics(Path(run)) for run in args.runs}
    for run in args.runs:
        recs = metrics[run]
        cfg = rundir.read_config(Path(run))
        last = recs[-args.last:]
        pre, post = held_out(run, args.tasks, args.episodes, args.seed)
        se = np.sqrt(args.tasks)
        method = cfg["method"] + (" (first-order)" if cfg["first_order"] else "")
        if cfg.get("curvature_fraction", 1.0) < 1:
            method += f" (curvature {cfg['curvature_fraction']})"
        print(f"| {Path(run).name} | {method} | {len(recs)} "
              f"| {statistics.mean(r['return_pre'] for r in last):.1f} "
              f"| {statistics.mean(r['return_post'] for r in last):.1f} "
              f"| {pre.mean():.1f} ± {pre.std(ddof=1) / se:.1f} "
              f"| {post.mean():.1f} ± {post.std(ddof=1) / se:.1f} "
              f"| {statistics.median(r['seconds'] for r in recs):.1f} |", flush=True)
    print(f"\nMean return after one step (train) per {args.window} meta-iterations:\n")
    for run, recs in metrics.items():
        points = [statistics.mean(r["return_post"] for r in recs[i:i + args.window])
                  for i in range(0, len(recs), args.window)]
        print(f"    {Path(run).name:>24}: " + " ".join(f"{x:6.1f}" for x in points))


if __name__ == "__main__":
    main()
