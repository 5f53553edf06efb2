"""Seconds per RK-TRPO meta-iteration, split by phase (2D navigation unless --env says).

    python scripts/bench_meta_step.py                   # paper: 40 tasks x 20 episodes, 2x100
    python scripts/bench_meta_step.py --env halfcheetah-vel --dynamics maml   # paper's cheetah
    python scripts/bench_meta_step.py --tasks 20 --hidden 64,64   # pytorch-maml-rl's nav2d size
    python scripts/bench_meta_step.py --fractions 1,0.5,0.25      # exact vs subsampled curvature
    python scripts/bench_meta_step.py --impl rkmeta-rl,plain --threads 1,2   # the yardstick
    python scripts/bench_meta_step.py --tasks 10,20,40,80 --hidden "64,64;100,100;200,200"
    python scripts/bench_meta_step.py --method midpoint,rk3,rk4,ralston-fo   # cost per tableau
    python scripts/bench_meta_step.py --layer-methods "[wb]2=midpoint,*=frozen:midpoint"  # ANIL
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
  autograd   the package's general path, forced for the same tableau: double backward
             through the stage construction (``curvature.double_backward_fvp``), what a
             tableau per parameter group takes when a group's points need later k_j;
  plain      the yardstick, a straightforward implementation written in
             ``scripts/plain_trpo.py``: per-task parameters through bmm, conjugate gradient
             on double-backward products of the weighted KL.
All three take the same step (tests/test_curvature_closed_form.py,
tests/test_bench_yardstick.py).

The floor. Before and after each thread count's iterations the bench measures the
machine's rate for the products the curvature makes (GFLOP/s, the best of ``--rates``'
three chunk shapes, median of 20 calls) and takes the higher of the two. After the timed
iterations it runs one more of each implementation under a dispatch mode that counts the
FLOPs of every matrix product (mm, bmm, addmm, baddbmm, forward and backward: 2·m·k·n
each), on one thread (the count does not depend on it). ``floor cg`` and ``floor total``
are then (FLOPs / rate) / seconds: the fraction of the machine's product rate that
conjugate gradient (its curvature products) and the whole meta-iteration reach; 1.0
would be products alone at full speed, with no elementwise work, copies or Python. The
first line names the CPU, so that figures from different machines can be told apart.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import platform
import statistics
import time
from pathlib import Path
from types import ModuleType, SimpleNamespace

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode

import rkmeta_rl.rl.meta_step as package_step
from rkmeta_rl.rk import Scheme
from rkmeta_rl.rl.config import TrainConfig, resolve
from rkmeta_rl.rl.episodes import CHUNK_ROWS
from rkmeta_rl.rl.paths import DoubleBackward
from rkmeta_rl.rl.trainer import Trainer

PHASES = ("sampling", "inner_adaptation", "cg", "line_search")
IMPLS = ("rkmeta-rl", "autograd", "plain")


def _plain() -> ModuleType:
    """scripts/plain_trpo.py, the yardstick (imported when used: it sits beside this script,
    which Python finds only when the script runs as a script)."""
    import plain_trpo

    return plain_trpo


def make_trainer(cfg: TrainConfig, impl: str) -> Trainer:
    trainer = Trainer(cfg, "unused")
    if impl == "autograd":  # the same tableau(s), forced through double backward
        if not isinstance(trainer.tableau, Scheme):  # one tableau for every parameter
            trainer.tableau = Scheme.uniform(trainer.tableau, trainer.h,
                                             trainer.policy.params())
            trainer.h = None
        trainer.meta_step = functools.partial(_double_backward_step, trainer)
    return trainer


def _double_backward_step(trainer: Trainer, tasks: list[dict]) -> package_step.TRPOStepResult:
    return package_step.meta_step(trainer.policy, trainer.sampler(tasks), len(tasks),
                                  trainer.tableau, trainer.h, trainer.cfg, path=DoubleBackward)


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
            seconds = (_plain().plain_meta_step(trainer, tasks) if impl == "plain"
                       else trainer.meta_step(tasks).seconds)
            rows[m, impl].append({**seconds, "total": time.perf_counter() - t0})
    medians = {key: {k: statistics.median(r.get(k, 0.0) for r in rs[1:])
                     for k in (*PHASES, "total")} for key, rs in rows.items()}
    for (m, impl), trainer in trainers.items():  # one more, counted: FLOPs of each phase
        medians[m, impl].update(counted_flops(trainer, cfgs[m], impl))
    return medians


_ATEN = torch.ops.aten
_PRODUCTS = {_ATEN.mm.default: (0, 1), _ATEN.bmm.default: (0, 1),
             _ATEN.addmm.default: (1, 2), _ATEN.baddbmm.default: (1, 2)}  # the operands


class ProductFlops(TorchDispatchMode):
    """Counts 2·m·k·n for every matrix product torch runs while it is active (autograd's
    backward products included: they reach the dispatcher as the same ops)."""

    def __init__(self) -> None:
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        if func in _PRODUCTS:
            i, j = _PRODUCTS[func]
            a, b = args[i], args[j]
            self.flops += 2 * a.numel() * b.shape[-1]
        return func(*args, **(kwargs or {}))


def counted_flops(trainer: Trainer, cfg: TrainConfig, impl: str) -> dict[str, float]:
    """The matrix-product FLOPs of one meta-iteration (``flops total``) and of its
    conjugate-gradient phase (``flops cg``). The phases are the step's own: its clock is
    read at the end of the inner adaptation, of CG and of the line search (the last three
    readings), and the count is taken at each reading."""
    module = _plain() if impl == "plain" else package_step
    counts: list[int] = []
    threads = torch.get_num_threads()  # counted on one thread: a dispatch mode sees only its
    torch.set_num_threads(1)  # own thread's ops, not the chunk threads' (rl/chunk_threads.py)
    with ProductFlops() as counter:
        def perf_counter() -> float:
            counts.append(counter.flops)
            return time.perf_counter()

        module.time = SimpleNamespace(perf_counter=perf_counter)  # type: ignore[attr-defined]
        try:
            tasks = trainer.family.sample_tasks(cfg.meta_batch_size)
            if impl == "plain":
                module.plain_meta_step(trainer, tasks)
            else:
                trainer.meta_step(tasks)
        finally:
            module.time = time  # type: ignore[attr-defined]
            torch.set_num_threads(threads)
    return {"flops total": float(counter.flops), "flops cg": float(counts[-2] - counts[-3])}


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else what ``platform`` says."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def product_rate(tasks: int, steps: int, hidden: int) -> float:
    """FLOP/s: the best of the chunk-shaped products :func:`rates` prints."""
    return max(rate for _, rate in product_rates(tasks, steps, hidden))


def product_rates(tasks: int, steps: int, hidden: int) -> list[tuple[str, float]]:
    """(shape, FLOP/s) of the products the closed-form curvature makes, on one chunk of
    tasks (``Episodes.task_chunks``), on this machine at the current thread count."""
    chunk = max(1, CHUNK_ROWS // steps)  # tasks per chunk
    a = torch.randn(chunk, steps, hidden)
    w, ws = torch.randn(hidden, hidden), torch.randn(chunk, hidden, hidden)
    shapes = {f"({chunk * steps}, {hidden}) @ ({hidden}, {hidden}), shared θ":
              (lambda: a.view(-1, hidden) @ w),
              f"({chunk}, {steps}, {hidden}) @ ({chunk}, {hidden}, {hidden}), per task":
              (lambda: torch.bmm(a, ws)),
              f"({chunk}, {hidden}, {steps}) @ ({chunk}, {steps}, {hidden}), reduction":
              (lambda: torch.bmm(a.transpose(1, 2), a))}
    return [(name, 2 * a.numel() * hidden / _time(fn, repeats=20))
            for name, fn in shapes.items()]


def rates(tasks: int, steps: int, hidden: int) -> None:
    """GFLOP/s of the products the closed-form curvature makes (:func:`product_rates`),
    and the memory rate of an elementwise add on one hidden activation, on this machine."""
    for name, rate in product_rates(tasks, steps, hidden):
        print(f"  {name}: {rate / 1e9:6.1f} GFLOP/s")
    chunk = max(1, CHUNK_ROWS // steps)
    a = torch.randn(chunk, steps, hidden)
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


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--env", default="nav2d", help="a built-in task family (rkmeta-rl train's "
                   "--env); its meta-batch, episodes, horizon and policy unless given")
    p.add_argument("--dynamics", default=None, help="rkmeta-rl train's --dynamics")
    p.add_argument("--method", default="ralston",
                   help="comma list of tableaus, taken in turn; NAME-fo: first order")
    p.add_argument("--layer-methods", default=None, metavar="RULES",
                   help="one more configuration, a tableau per parameter group (rkmeta-rl "
                        "train's --layer-methods), taken in turn with the --method ones")
    p.add_argument("--tasks", default=None,
                   help="comma list of meta-batch sizes [the family's]")
    p.add_argument("--episodes", type=int, default=None, help="per task [the family's]")
    p.add_argument("--hidden", default=None,
                   help="';'-separated list, e.g. '64,64;100,100' [the family's]")
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--threads", default="1", help="comma list of torch thread counts")
    p.add_argument("--fractions", default="1", help="comma list of curvature fractions")
    p.add_argument("--impl", default="rkmeta-rl", help="comma list of " + ", ".join(IMPLS))
    p.add_argument("--first-order", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--rates", action="store_true", help="print the machine's bmm/add rates")
    p.add_argument("--profile", action="store_true", help="profile one iteration, by op")
    return p


def main() -> None:
    p = parser()
    args = p.parse_args()
    hiddens = ([None] if args.hidden is None
               else [[int(x) for x in h.split(",")] for h in args.hidden.split(";")])
    tasks = [None] if args.tasks is None else [int(t) for t in args.tasks.split(",")]
    impls = args.impl.split(",")
    if any(c not in IMPLS for c in impls):
        p.error(f"--impl must be among {', '.join(IMPLS)}, got {args.impl}")
    methods = args.method.split(",") + (["layers"] if args.layer_methods else [])

    def config(n: int | None, hidden: list[int] | None, frac: float,
               method: str = methods[0]) -> TrainConfig:
        name = method.removesuffix("-fo")
        extra = {} if args.dynamics is None else {"dynamics": args.dynamics}
        if method == "layers":  # the --layer-methods configuration
            name, extra = "ralston", {**extra, "layer_methods": args.layer_methods}
        return resolve(TrainConfig(env=args.env, method=name, meta_batch_size=n,
                                   fast_batch_size=args.episodes, hidden=hidden,
                                   curvature_fraction=frac,
                                   first_order=args.first_order or method.endswith("-fo"),
                                   device=args.device, **extra))

    try:  # every configuration, and its policy's parameters against --layer-methods
        first, *_ = cfgs = [config(tasks[0], hiddens[0], float(args.fractions.split(",")[0]),
                                   m) for m in methods]
        for cfg in cfgs:
            Trainer(cfg, "unused")
    except ValueError as e:  # an unknown --env or --dynamics, a bad size or rule
        p.error(str(e))
    steps = first.fast_batch_size * first.max_episode_steps  # per task and stage
    layers = f" and --layer-methods {args.layer_methods!r} ('layers')" if args.layer_methods else ""
    print(f"CPU {cpu_model()}; {first.env} ({first.dynamics} dynamics), methods "
          f"{args.method}{layers}, {first.fast_batch_size} episodes x {first.max_episode_steps} "
          f"steps per task, first_order {args.first_order}, torch {torch.__version__}, "
          f"device {args.device}")
    if args.rates:
        for threads in (int(t) for t in args.threads.split(",")):
            torch.set_num_threads(threads)
            print(f"{threads} thread(s):")
            rates(first.meta_batch_size, steps, first.hidden[0])
        return
    if args.profile:
        torch.set_num_threads(int(args.threads.split(",")[0]))
        profile_one(first)
        return
    print(f"{'threads':>7} {'tasks':>5} {'hidden':>8} {'fraction':>8} {'method':>12} "
          f"{'impl':>10} "
          + " ".join(f"{k:>16}" for k in PHASES) + f" {'total s/iter':>12} {'ratio':>6}"
          f" {'floor cg':>8} {'floor total':>11}")
    base = None
    grid = itertools.product((int(t) for t in args.threads.split(",")), tasks, hiddens,
                             (float(f) for f in args.fractions.split(",")))
    for threads, n, hidden, frac in grid:
        torch.set_num_threads(threads)
        cfgs = {m: config(n, hidden, frac, m) for m in methods}
        n, hidden = cfgs[methods[0]].meta_batch_size, cfgs[methods[0]].hidden
        before = product_rate(n, steps, hidden[0])
        results = bench(cfgs, args.iters, impls)
        after = product_rate(n, steps, hidden[0])
        rate = max(before, after)  # a busy moment lowers one measurement, not the machine
        print(f"  {threads} thread(s): products at {before / 1e9:.1f} GFLOP/s before the "
              f"iterations, {after / 1e9:.1f} after; the floor takes the higher", flush=True)
        for (m, impl), r in results.items():
            base = base or r["total"]
            floor_cg = r["flops cg"] / rate / r["cg"] if r["cg"] > 0 else float("nan")
            floor_total = r["flops total"] / rate / r["total"]
            print(f"{threads:>7} {n:>5} {'x'.join(map(str, hidden)):>8} {frac:>8.2f} "
                  f"{m:>12} {impl:>10} " + " ".join(f"{r[k]:>16.3f}" for k in PHASES)
                  + f" {r['total']:>12.2f} {r['total'] / base:>6.2f}"
                  f" {floor_cg:>8.2f} {floor_total:>11.2f}", flush=True)

if __name__ == "__main__":
    main()
