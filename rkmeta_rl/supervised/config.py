"""Every supervised meta-training setting and its default, in one place.

Defaults are the paper's per benchmark (docs/method.md, "Supervised details"), completed
from the original MAML code the paper builds on where the paper is silent (training
adaptation steps, query set sizes, meta learning rate):

================  =====  =====  ======  ===========  ==========  ==========  ==========
benchmark         ways   α      steps   test steps   meta-batch  iterations  filters
================  =====  =====  ======  ===========  ==========  ==========  ==========
sinusoid (K=10)   -      0.01   1       10           25          100,000     MLP 40-40
omniglot 5-way    5      0.4    1       3            32          30,000      64
omniglot 20-way   20     0.1    5       5            32          50,000/90k  64
miniimagenet      5      0.01   5       10           4 (1-shot)  90,000      32
                                                     2 (5-shot)
================  =====  =====  ======  ===========  ==========  ==========  ==========

Adam with learning rate 0.001 is the meta-optimizer. ``None`` means "the benchmark's
default" and is filled in by :func:`resolve`, which also validates every value.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rkmeta_rl.config import StoredConfig, check_seed, resolve_steps, torch_threads
from rkmeta_rl.layer_methods import parse_layer_methods

BENCHMARKS = ("sinusoid", "omniglot", "miniimagenet")


def benchmark_defaults(benchmark: str, ways: int | None, shots: int | None) -> dict[str, Any]:
    """The paper's settings for one benchmark (and N-way K-shot setting)."""
    if benchmark == "sinusoid":
        return dict(ways=1, shots=10, queries=10, inner_lr=0.01, inner_steps=1, test_steps=10,
                    meta_batch_size=25, meta_iters=100_000, log_every=100, eval_every=1000,
                    eval_tasks=100, test_tasks=600)
    shots = 1 if shots is None else shots
    if benchmark == "omniglot":
        ways = 5 if ways is None else ways
        five_way = ways <= 5
        iters = 30_000 if five_way else (50_000 if shots == 1 else 90_000)
        return dict(ways=ways, shots=shots, queries=shots, inner_lr=0.4 if five_way else 0.1,
                    inner_steps=1 if five_way else 5, test_steps=3 if five_way else 5,
                    meta_batch_size=32, meta_iters=iters, filters=64, log_every=20, eval_every=500,
                    eval_tasks=100, test_tasks=600)
    if benchmark == "miniimagenet":
        return dict(ways=5 if ways is None else ways, shots=shots, queries=15, inner_lr=0.01,
                    inner_steps=5, test_steps=10, meta_batch_size=4 if shots == 1 else 2,
                    meta_iters=90_000, filters=32, log_every=20, eval_every=1000, eval_tasks=100,
                    test_tasks=600)
    raise ValueError(f"unknown benchmark {benchmark!r}; valid choices: {', '.join(BENCHMARKS)}")


@dataclass
class SupervisedConfig(StoredConfig):
    benchmark: str = "sinusoid"
    method: str = "ralston"
    tableau: dict[str, Any] | None = None  # resolved (a, q, c); filled by resolve()
    first_order: bool = False
    layer_methods: str | None = None  # a tableau per parameter group (replaces method)
    data: list[str] | None = None  # dataset path(s): Omniglot folders/zips, MiniImagenet root
    ways: int | None = None
    shots: int | None = None  # support examples per class (sinusoid: points per task)
    queries: int | None = None  # query examples per class (sinusoid: points per task)
    inner_lr: float | None = None  # α; h = α / c2 (default reading)
    step_size: float | None = None  # h; α = c2 · h (the other reading)
    inner_steps: int | None = None  # adaptation steps in meta-training
    test_steps: int | None = None  # adaptation steps at meta-test time
    meta_batch_size: int | None = None
    meta_iters: int | None = None
    meta_lr: float = 0.001  # Adam
    hidden: list[int] = dataclasses.field(default_factory=lambda: [40, 40])  # sinusoid MLP
    filters: int | None = None  # conv net width
    num_train_classes: int | None = None  # Omniglot characters for training [1200 of 1623]
    split_seed: int = 0  # the Omniglot character split
    log_every: int | None = None  # metrics record, TensorBoard point and checkpoint
    eval_every: int | None = None  # validation every N iterations (0: only at the end)
    eval_tasks: int | None = None  # validation tasks
    test_tasks: int | None = None  # held-out tasks of the evaluate command
    seed: int = 0
    num_threads: int = 0  # 0: every core this process may use (config.torch_threads)
    alpha: float | None = None  # resolved adaptation step α
    h: float | None = None  # resolved RK step h


_POSITIVE = ("ways", "shots", "queries", "inner_steps", "meta_batch_size", "meta_iters",
             "log_every", "eval_tasks", "test_tasks")


def resolve(cfg: SupervisedConfig, tableau_file: str | None = None) -> SupervisedConfig:
    """Validate every setting and fill in the benchmark defaults, tableau, α and h."""
    if cfg.benchmark not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {cfg.benchmark!r}; valid choices: "
                         f"{', '.join(BENCHMARKS)}")
    tab = cfg.resolve_tableau(tableau_file)
    defaults = benchmark_defaults(cfg.benchmark, cfg.ways, cfg.shots)
    default_lr = defaults.pop("inner_lr")
    for key, value in defaults.items():
        if getattr(cfg, key) is None:
            setattr(cfg, key, value)
    if cfg.benchmark == "sinusoid":
        if cfg.ways != 1:
            raise ValueError(f"--ways is for classification; sinusoid has none (got {cfg.ways})")
        cfg.data = None
    else:
        if cfg.ways < 2:
            raise ValueError(f"--ways must be >= 2 for classification, got {cfg.ways}")
        if not cfg.data:
            raise ValueError(f"--data is required for {cfg.benchmark}: give "
                             + ("the Omniglot folder(s) or zip file(s)"
                                if cfg.benchmark == "omniglot"
                                else "the MiniImagenet root (train.csv, val.csv, test.csv, "
                                     "images/)"))
        missing = [p for p in cfg.data if not Path(p).exists()]
        if missing:
            raise ValueError(f"--data path(s) not found: {', '.join(missing)}")
        cfg.data = [str(Path(p).resolve()) for p in cfg.data]
    for name in _POSITIVE:
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be an integer >= 1, got {value!r}")
    for name in ("test_steps", "eval_every"):
        if getattr(cfg, name) < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(cfg, name)}")
    if not (math.isfinite(cfg.meta_lr) and cfg.meta_lr > 0):
        raise ValueError(f"--meta-lr must be a positive number, got {cfg.meta_lr}")
    if not cfg.hidden or any(int(x) <= 0 for x in cfg.hidden):
        raise ValueError(f"--hidden must be positive layer sizes like 40,40, got {cfg.hidden}")
    if cfg.filters is not None and cfg.filters < 1:
        raise ValueError(f"--filters must be >= 1, got {cfg.filters}")
    if cfg.num_train_classes is not None and cfg.num_train_classes < 1:
        raise ValueError(f"--num-train-classes must be >= 1, got {cfg.num_train_classes}")
    check_seed(cfg.seed)
    torch_threads(cfg.num_threads)  # ValueError for a negative count
    cfg.alpha, cfg.h = resolve_steps(tab, cfg.inner_lr, cfg.step_size, default_lr)
    if cfg.layer_methods is not None:
        parse_layer_methods(cfg.layer_methods)  # the names are checked with the model
    return cfg
