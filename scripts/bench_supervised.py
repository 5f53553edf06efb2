"""Seconds per supervised meta-step for each tableau, exact and first order.

    python scripts/bench_supervised.py                       # sinusoid + Omniglot-sized conv
    python scripts/bench_supervised.py --benchmarks sinusoid --iters 200

Prints the median seconds per meta-step (support + query forward, the stage points, the
RK combination's gradient and Adam) and the ratio to midpoint (MAML). The conv case uses
random 28×28 images of the Omniglot 5-way 1-shot shape, so it needs no data. 3- and
4-stage tableaus differentiate through k_2, k_3 (third and fourth derivatives): this is
what they cost.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from rkmeta_rl.methods import get_tableau
from rkmeta_rl.supervised.fewshot import FewShotBatch
from rkmeta_rl.supervised.meta import meta_step
from rkmeta_rl.supervised.models import MLP, ConvNet
from rkmeta_rl.supervised.sinusoid import sample_sinusoid_tasks

METHODS = "euler,midpoint,heun,ralston,itb,rk3,rk4"


def problem(name: str, tasks: int, g: torch.Generator):
    if name == "sinusoid":
        model = MLP(1, (40, 40), 1)
        return model, lambda: sample_sinusoid_tasks(tasks, 10, 10, g), 0.01
    model, ways = ConvNet(1, 28, 5, filters=64), 5
    labels = torch.arange(ways).expand(tasks, -1)

    def batch():
        return FewShotBatch(torch.rand(tasks, ways, 1, 28, 28, generator=g), labels,
                            torch.rand(tasks, ways, 1, 28, 28, generator=g), labels)
    return model, batch, 0.4


def seconds_per_step(name: str, method: str, first_order: bool, args) -> float:
    g = torch.Generator().manual_seed(0)
    model, batch, alpha = problem(name, args.tasks[name], g)
    tab = get_tableau(method)
    h = alpha / tab.c[1] if tab.stages > 1 else alpha
    theta = {k: v.requires_grad_() for k, v in model.init_params(g).items()}
    opt = torch.optim.Adam(list(theta.values()), lr=1e-3)
    times = []
    for _ in range(args.iters[name] + 2):
        b = batch()
        t = time.perf_counter()
        meta_step(model, theta, opt, b, tab, h, first_order=first_order)
        times.append(time.perf_counter() - t)
    return statistics.median(times[2:])  # the first two warm up


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--benchmarks", default="sinusoid,omniglot")
    p.add_argument("--methods", default=METHODS)
    p.add_argument("--iters", type=int, default=None, help="timed steps [200 sinusoid, 5 conv]")
    p.add_argument("--conv-tasks", type=int, default=8, help="meta-batch of the conv case")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.tasks = {"sinusoid": 25, "omniglot": args.conv_tasks}
    args.iters = {"sinusoid": args.iters or 200, "omniglot": args.iters or 5}
    for name in args.benchmarks.split(","):
        print(f"{name}: meta-batch {args.tasks[name]}, {args.threads} thread(s), median of "
              f"{args.iters[name]} steps")
        print(f"  {'method':10s} {'exact s':>9s} {'x midpt':>8s} {'1st-ord s':>10s} "
              f"{'x midpt':>8s}")
        rows = {m: (seconds_per_step(name, m, False, args), seconds_per_step(name, m, True, args))
                for m in args.methods.split(",")}
        ref = rows.get("midpoint", next(iter(rows.values())))
        for m, (exact, first) in rows.items():
            print(f"  {m:10s} {exact:9.4f} {exact / ref[0]:8.2f} {first:10.4f} "
                  f"{first / ref[0]:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
