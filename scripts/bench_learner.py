"""Seconds per meta-gradient step: your own nn.Module through RKMetaLearner against the
supervised wing's task-batched models, side by side in one process.

    python scripts/bench_learner.py                                 # both problems
    python scripts/bench_learner.py --problems sinusoid --iters 200

Each iteration draws one batch and times one meta-step (forward, backward and Adam) of
every variant on it, in an order that alternates between iterations (forwards, then
backwards), so a drift in the machine's speed reaches every variant alike:

* ``builtin``: ``supervised.meta.meta_step`` with ``models.MLP`` / ``models.ConvNet`` (the
  supervised wing: RKMetaLearner on these modules, the MLP through its hand-written
  ``forward_per_task``);
* ``stacked``: ``RKMetaLearner`` on an ordinary ``nn.Module`` of the same architecture and
  initial weights, the batch given with its leading task dimension (``stacked=True``);
* ``list``: the same, the batch given as a list of per-task tuples (the learner stacks
  them in every call; the list itself is made outside the timing);
* ``loop`` (``--loop``): the list, one task at a time (``vectorize=False``).

Sinusoid: nn.Sequential 1-40-40-1 ReLU, meta-batch 25, 10 shots and 10 queries.
Omniglot 5-way 1-shot: four conv blocks (3x3 conv, batch norm with batch statistics, ReLU,
2x2 max-pool; 64 filters) and a linear head, meta-batch 32, random 28x28 images.
Prints the median seconds of each variant and the median of its per-iteration ratio to
``builtin``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from rkmeta_rl import RKMetaLearner
from rkmeta_rl.methods import get_tableau
from rkmeta_rl.supervised.fewshot import FewShotBatch
from rkmeta_rl.supervised.meta import meta_step
from rkmeta_rl.supervised.models import MLP, ConvNet
from rkmeta_rl.supervised.sinusoid import sample_sinusoid_tasks


class Block(nn.Module):
    """3x3 conv -> batch norm (batch statistics, as MAML) -> ReLU -> 2x2 max-pool."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm = nn.BatchNorm2d(c_out, track_running_stats=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(F.relu(self.norm(self.conv(x))), 2)


class OmniglotNet(nn.Module):
    def __init__(self, ways: int = 5, filters: int = 64) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(1 if i == 0 else filters, filters) for i in range(4))
        self.head = nn.Linear(filters, ways)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x (B, 1, 28, 28) -> (B, ways)
        for block in self.blocks:
            x = block(x)
        return self.head(x.flatten(1))


def mse_support(model, task):  # noqa: ANN001, ANN201
    return F.mse_loss(model(task[0]), task[1])


def mse_query(model, task):  # noqa: ANN001, ANN201
    return F.mse_loss(model(task[2]), task[3])


def ce_support(model, task):  # noqa: ANN001, ANN201
    return F.cross_entropy(model(task[0]), task[1])


def ce_query(model, task):  # noqa: ANN001, ANN201
    return F.cross_entropy(model(task[2]), task[3])


def problem(name: str, g: torch.Generator):
    """(functional model, nn.Module, batch sampler, losses, α)."""
    if name == "sinusoid":
        module = nn.Sequential(nn.Linear(1, 40), nn.ReLU(), nn.Linear(40, 40), nn.ReLU(),
                               nn.Linear(40, 1))
        keys = {f"layers.{i}.{p}": f"{2 * i}.{p}" for i in range(3) for p in ("weight", "bias")}
        return (MLP(1, (40, 40), 1), module, keys, lambda: sample_sinusoid_tasks(25, 10, 10, g),
                (mse_support, mse_query), 0.01)
    tasks, ways = 32, 5
    labels = torch.arange(ways).expand(tasks, -1)

    def batch() -> FewShotBatch:
        return FewShotBatch(torch.rand(tasks, ways, 1, 28, 28, generator=g), labels,
                            torch.rand(tasks, ways, 1, 28, 28, generator=g), labels)
    return (ConvNet(1, 28, ways, filters=64), OmniglotNet(ways, 64), None, batch,
            (ce_support, ce_query), 0.4)


def variants(name: str, args) -> tuple[dict[str, Callable], Callable]:  # noqa: ANN001
    g = torch.Generator().manual_seed(0)
    functional, module, keys, sample, (support, query), alpha = problem(name, g)
    tab = get_tableau(args.method)
    h = alpha / tab.c[1] if tab.stages > 1 else alpha
    theta = {k: v.requires_grad_() for k, v in functional.init_params(g).items()}
    module.load_state_dict({(keys or {}).get(k, k): v.detach() for k, v in theta.items()})
    opt = torch.optim.Adam(list(theta.values()), lr=1e-3)

    def builtin(b) -> None:  # noqa: ANN001
        meta_step(functional, theta, opt, b, tab, h, first_order=args.first_order)

    def learner_step(vectorize: bool | None, form: str) -> Callable:
        learner = RKMetaLearner(module, args.method, inner_lr=alpha,
                                first_order=args.first_order, vectorize=vectorize)
        lopt = torch.optim.Adam(learner.parameters(), lr=1e-3)

        def step(b) -> None:  # noqa: ANN001
            loss = learner(b[form], support, query, stacked=form == "stacked")
            lopt.zero_grad()
            loss.backward()
            lopt.step()
        return step

    out = {"builtin": builtin, "stacked": learner_step(None, "stacked"),
           "list": learner_step(None, "list")}
    if args.loop:
        out["loop"] = learner_step(False, "list")
    return out, sample


def measure(name: str, args) -> dict[str, list[float]]:  # noqa: ANN001
    steps, sample = variants(name, args)
    times: dict[str, list[float]] = {k: [] for k in steps}
    order = list(steps)
    for it in range(args.iters[name] + args.warmup):
        b = sample()
        data = (b.xs, b.ys, b.xq, b.yq)
        forms = {"stacked": data, "list": list(zip(*data, strict=True))}  # made untimed
        for k in (order if it % 2 == 0 else order[::-1]):
            arg = b if k == "builtin" else forms
            t = time.perf_counter()
            steps[k](arg)
            if it >= args.warmup:
                times[k].append(time.perf_counter() - t)
    return times


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--problems", default="sinusoid,omniglot")
    p.add_argument("--method", default="midpoint")
    p.add_argument("--first-order", action="store_true")
    p.add_argument("--iters", type=int, default=None, help="timed steps [200 sinusoid, 10 conv]")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--loop", action="store_true", help="also time the per-task loop")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.iters = {"sinusoid": args.iters or 200, "omniglot": args.iters or 10}
    for name in args.problems.split(","):
        times = measure(name, args)
        base = times["builtin"]
        print(f"{name}: {args.method}{' first order' if args.first_order else ''}, "
              f"{args.threads} thread(s), medians of {len(base)} steps, orders alternating")
        for k, ts in times.items():
            ratio = statistics.median(t / b for t, b in zip(ts, base, strict=True))
            print(f"  {k:8s} {statistics.median(ts) * 1e3:9.2f} ms   x builtin {ratio:5.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
