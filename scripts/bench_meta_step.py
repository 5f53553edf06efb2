"""Seconds per RK-TRPO meta-iteration on 2D navigation, split by phase.

    python scripts/bench_meta_step.py                   # paper: 40 tasks x 20 episodes, 2x100
    python scripts/bench_meta_step.py --tasks 20 --hidden 64,64   # pytorch-maml-rl's nav2d size
    python scripts/bench_meta_step.py --fractions 1,0.5,0.25      # exact vs subsampled curvature
    python scripts/bench_meta_step.py --impl rkmeta-rl,plain --threads 1,2   # the yardstick
    python scripts/bench_meta_step.py --tasks 10,20,40,80 --hidden "64,64;100,100;200,200"
    python scripts/bench_meta_step.py --method midpoint,rk3,rk4,ralston-fo   # cost per tableau
    python scripts/bench_meta_step.py --rates           # the machine's bmm and add rates
    python scripts/bench_meta_step.py --profile         # where one iteration's time goes

Each configuration runs ``--iters`` meta-iterations of every ``--impl`` from the same
seed in this process, the implementations taking turns iteration by iteration (one
warm-up iteration each is dropped), and prints the median per phase, plus the ratio of
each total to the first one's. Timings on a shared machine are noisy:
trust the ratios taken in one process more than the absolute seconds.

``--impl`` picks what takes the step:
  rkmeta-rl  the package's meta-step (closed-form curvature and gradient where the tableau
             allows, ``rkmeta_rl/rl/curvature.py``);
  autograd   the package's general path, as for a tableau per parameter group: double
             backward through the stage construction (``curvature.double_backward_fvp``);
  plain      the yardstick, a straightforward implementation written in
             ``scripts/plain_trpo.py``: per-task parameters through bmm, conjugate gradient
             on double-backward products of the weighted KL.
All three take the same step (tests/test_curvature_closed_form.py,
tests/test_bench_yardstick.py).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import torch
from plain_trpo import plain_meta_step
from torch.profiler import ProfilerActivity, profile

from rkmeta_rl.rk import Scheme
from rkmeta_rl.rl.config import TrainConfig, resolve
from rkmeta_rl.rl.episodes import CHUNK_ROWS
from rkmeta_rl.rl.trainer import Trainer

PHASES = ("sampling", "inner_adaptation", "cg", "line_search")
IMPLS = ("rkmeta-rl", "autograd", "plain")


def make_trainer(cfg: TrainConfig, impl: str) -> Trainer:
    trainer = Trainer(cfg, "unused")
    if impl == "autograd":  # the same tableau for every parameter, as a scheme
        trainer.tableau = Scheme.uniform(trainer.tableau, trainer.h, trainer.policy.params())
        trainer.h = None
    return trainer


def bench(cfgs: dict[str, TrainConfig], iters: int, impls: list[str]
          ) -> dict[tuple[str, str], dict[str, float]]:
    """Median seconds per phase of each (method, implementation), their iterations taken
    in turn (A B A B ...: a machine whose speed drifts slows them alike), each from the
    same seed; the first iteration of each is a warm-up and dropped."""
    trainers = {(m, impl): make_trainer(cfg, impl) for m, cfg in cfgs.items() for impl in impls}
    rows: dict[tuple[str, str], list[dict[str, float]]] = {key: [] for key in trainers}
    for _ in range(iters + 1):
        for (m, impl), trainer in trainers.items():
            tasks = trainer.family.sample_tasks(cfgs[m].meta_batch_size)
            t0 = time.perf_counter()
            seconds = (plain_meta_step(trainer, tasks) if impl == "plain"
                       else trainer.meta_step(tasks).seconds)
            rows[m, impl].append({**seconds, "total": time.perf_counter() - t0})
    return {key: {k: statistics.median(r.get(k, 0.0) for r in rs[1:])
                  for k in (*PHASES, "total")} for key, rs in rows.items()}


def rates(tasks: int, steps: int, hidden: int) -> None:
    """GFLOP/s of the products the closed-form curvature makes, on one chunk of tasks
    (``Episodes.task_chunks``), and the memory rate of an elementwise add on one hidden
    activation, on this machine."""
    chunk = max(1, CHUNK_ROWS // steps)  # tasks per chunk
    a = torch.randn(chunk, steps, hidden)
    w, ws = torch.randn(hidden, hidden), torch.randn(chunk, hidden, hidden)
    shapes = {f"({chunk * steps}, {hidden}) @ ({hidden}, {hidden}), shared θ":
              (lambda: a.view(-1, hidden) @ w),
              f"({chunk}, {steps}, {hidden}) @ ({chunk}, {hidden}, {hidden}), per task":
              (lambda: torch.bmm(a, ws)),
              f"({chunk}, {hidden}, {steps}) @ ({chunk}, {steps}, {hidden}), reduction":
              (lambda: torch.bmm(a.transpose(1, 2), a))}
    for name, fn in shapes.items():
        print(f"  {name}: {2 * a.numel() * hidden / _time(fn) / 1e9:6.1f} GFLOP/s")
    seconds = _time(lambda: a + a)
    print(f"  add of ({chunk}, {steps}, {hidden}) float32: "
          f"{3 * a.numel() * 4 / seconds / 1e9:6.1f} GB/s")
    big = 2 * tasks * steps * hidden * hidden  # FLOPs of one big product over all tasks
    print(f"  one big product over all {tasks} tasks: {big / 1e9:.2f} GFLOP "
          "(a curvature product makes 6 with thin ends, 12 without)")


def _time(fn, repeats: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def profile_one(cfg: TrainConfig, rows: int = 12) -> None:
    trainer = make_trainer(cfg, "rkmeta-rl")
    trainer.meta_step(trainer.family.sample_tasks(cfg.meta_batch_size))  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        res = trainer.meta_step(trainer.family.sample_tasks(cfg.meta_batch_size))
    print({k: round(v, 2) for k, v in res.seconds.items()}, "(slowed by the profiler)")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--method", default="ralston",
                   help="comma list of tableaus, taken in turn; NAME-fo: first order")
    p.add_argument("--tasks", default="40", help="comma list of meta-batch sizes")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--hidden", default="100,100", help="';'-separated list, e.g. '64,64;100,100'")
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--threads", default="1", help="comma list of torch thread counts")
    p.add_argument("--fractions", default="1", help="comma list of curvature fractions")
    p.add_argument("--impl", default="rkmeta-rl", help="comma list of " + ", ".join(IMPLS))
    p.add_argument("--first-order", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--rates", action="store_true", help="print the machine's bmm/add rates")
    p.add_argument("--profile", action="store_true", help="profile one iteration, by op")
    args = p.parse_args()
    hiddens = [[int(x) for x in h.split(",")] for h in args.hidden.split(";")]
    tasks = [int(t) for t in args.tasks.split(",")]
    impls = args.impl.split(",")
    if any(c not in IMPLS for c in impls):
        p.error(f"--impl must be among {', '.join(IMPLS)}, got {args.impl}")
    methods = args.method.split(",")
    print(f"methods {args.method}, {args.episodes} episodes x 100 steps per task, first_order "
          f"{args.first_order}, torch {torch.__version__}, device {args.device}")
    if args.rates:
        for threads in (int(t) for t in args.threads.split(",")):
            torch.set_num_threads(threads)
            print(f"{threads} thread(s):")
            rates(tasks[0], args.episodes * 100, hiddens[0][0])
        return

    def config(n: int, hidden: list[int], frac: float, method: str = methods[0]
               ) -> TrainConfig:
        name = method.removesuffix("-fo")
        return resolve(TrainConfig(method=name, meta_batch_size=n,
                                   fast_batch_size=args.episodes, hidden=hidden,
                                   curvature_fraction=frac,
                                   first_order=args.first_order or name != method,
                                   device=args.device))

    if args.profile:
        torch.set_num_threads(int(args.threads.split(",")[0]))
        profile_one(config(tasks[0], hiddens[0], float(args.fractions.split(",")[0])))
        return
    print(f"{'threads':>7} {'tasks':>5} {'hidden':>8} {'fraction':>8} {'method':>12} "
          f"{'impl':>10} "
          + " ".join(f"{k:>16}" for k in PHASES) + f" {'total s/iter':>12} {'ratio':>6}")
    base = None
    grid = itertools.product((int(t) for t in args.threads.split(",")), tasks, hiddens,
                             (float(f) for f in args.fractions.split(",")))
    for threads, n, hidden, frac in grid:
        torch.set_num_threads(threads)
        cfgs = {m: config(n, hidden, frac, m) for m in methods}
        for (m, impl), r in bench(cfgs, args.iters, impls).items():
            base = base or r["total"]
            print(f"{threads:>7} {n:>5} {'x'.join(map(str, hidden)):>8} {frac:>8.2f} "
                  f"{m:>12} {impl:>10} " + " ".join(f"{r[k]:>16.3f}" for k in PHASES)
                  + f" {r['total']:>12.2f} {r['total'] / base:>6.2f}", flush=True)

if __name__ == "__main__":
    main()
