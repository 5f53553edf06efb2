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
default" and is filled in by :func:`resolve`, which also validates every value. Each field
declares its help too: ``rkmeta-rl supervised``'s flags are generated from them
(``rkmeta_rl.run.flags``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rkmeta_rl.layer_methods import parse_layer_methods
from rkmeta_rl.run.config import (
    FIRST_ORDER_HELP,
    METHOD_HELP,
    STEP_SIZE_HELP,
    STEPS,
    StoredConfig,
    check_seed,
    inner_lr_help,
    resolve_steps,
    torch_threads,
)
from rkmeta_rl.run.flags import check_choices, layer_sizes, setting

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


# the settings whose defaults differ by benchmark, as the help lists them
SETTINGS = {"sinusoid": ("sinusoid", None, None), "omniglot-5way": ("omniglot", 5, None),
            "omniglot-20way": ("omniglot", 20, None), "miniimagenet": ("miniimagenet", None, None)}


def by_benchmark(key: str) -> str:
    """'[sinusoid 1, omniglot-5way 1, ...]': the default of ``key`` per benchmark."""
    values = [f"{name} {benchmark_defaults(*setting).get(key, '-')}"
              for name, setting in SETTINGS.items()]
    return "[" + ", ".join(values) + "]"


def per_benchmark(text: str, key: str) -> Any:
    """An integer setting whose default (None) is the benchmark's; the help lists them."""
    return setting(None, help=f"{text} {by_benchmark(key)}")


@dataclass
class SupervisedConfig(StoredConfig):
    """A supervised meta-training run (``rkmeta-rl supervised``; flags: rkmeta_rl.run.flags)."""

    benchmark: str = setting("sinusoid", choices=BENCHMARKS, help=", ".join(BENCHMARKS))
    method: str = setting("ralston", help=METHOD_HELP)
    tableau: dict[str, Any] | None = setting(
        None, flag=False, help="the resolved tableau (a, q, c); filled by resolve()")
    first_order: bool = setting(False, help=FIRST_ORDER_HELP)
    layer_methods: str | None = setting(
        None, metavar="RULES",
        help="a tableau per parameter group, e.g. 'head=midpoint,*=ralston' (replaces "
             "--method; 'frozen:midpoint' does not move a group; parameters: sinusoid "
             "layers.0-2.{weight,bias}, conv nets blocks.0-3.{conv,norm}.{weight,bias} and "
             "head.{weight,bias})")
    data: list[str] | None = setting(
        None, nargs="+", metavar="PATH", type=str,
        help="Omniglot: folders or zips (images_background..., or alphabets); MiniImagenet: "
             "the root holding train/val/test.csv and images/")
    ways: int | None = per_benchmark("classes per task", "ways")
    shots: int | None = per_benchmark("support examples per class (sinusoid: points per task)",
                                      "shots")
    queries: int | None = per_benchmark("query examples per class (sinusoid: points per task)",
                                        "queries")
    inner_lr: float | None = setting(
        None, exclusive=STEPS,
        help=inner_lr_help("the benchmark's: " + by_benchmark("inner_lr")[1:-1]))
    step_size: float | None = setting(None, exclusive=STEPS, help=STEP_SIZE_HELP)
    inner_steps: int | None = per_benchmark("adaptation steps in training", "inner_steps")
    test_steps: int | None = per_benchmark("adaptation steps at meta-test", "test_steps")
    meta_batch_size: int | None = per_benchmark("tasks per meta-step", "meta_batch_size")
    meta_iters: int | None = per_benchmark("meta-iterations", "meta_iters")
    meta_lr: float = setting(0.001, help="Adam learning rate")
    hidden: list[int] = setting([40, 40], type=layer_sizes, help="sinusoid MLP hidden layer sizes")
    filters: int | None = per_benchmark("conv filters", "filters")
    num_train_classes: int | None = setting(
        None, help="Omniglot training characters [1200 of 1623, the same share of fewer]")
    split_seed: int = setting(0, help="the Omniglot character split")
    log_every: int | None = per_benchmark("metrics + checkpoint every N iterations",
                                          "log_every")
    eval_every: int | None = per_benchmark("validation every N iterations (0: only at the end)",
                                           "eval_every")
    eval_tasks: int | None = per_benchmark("validation tasks", "eval_tasks")
    test_tasks: int | None = per_benchmark("held-out tasks for supervised-evaluate",
                                           "test_tasks")
    seed: int = setting(0, help="weights and task sampling")
    num_threads: int = setting(0, help="torch threads; 0: every core this process may use")
    alpha: float | None = setting(None, flag=False, help="the resolved adaptation step α")
    h: float | None = setting(None, flag=False, help="the resolved RK step h")


_POSITIVE = ("ways", "shots", "queries", "inner_steps", "meta_batch_size", "meta_iters",
             "log_every", "eval_tasks", "test_tasks")


def resolve(cfg: SupervisedConfig, tableau_file: str | None = None) -> SupervisedConfig:
    """Validate every setting and fill in the benchmark defaults, tableau, α and h."""
    check_choices(cfg)  # --benchmark
    tab = cfg.resolve_tableau(tableau_file)
    default_lr = _fill_benchmark_defaults(cfg)
    _check_data(cfg)
    _check_counts(cfg)
    _check_model(cfg)
    check_seed(cfg.seed)
    torch_threads(cfg.num_threads)  # ValueError for a negative count
    cfg.alpha, cfg.h = resolve_steps(tab, cfg.inner_lr, cfg.step_size, default_lr)
    if cfg.layer_methods is not None:
        parse_layer_methods(cfg.layer_methods)  # the names are checked with the model
    return cfg


def _fill_benchmark_defaults(cfg: SupervisedConfig) -> float:
    """The benchmark's settings where the config leaves them open; its default α."""
    defaults = benchmark_defaults(cfg.benchmark, cfg.ways, cfg.shots)
    default_lr = defaults.pop("inner_lr")
    for key, value in defaults.items():
        if getattr(cfg, key) is None:
            setattr(cfg, key, value)
    return default_lr


def _check_data(cfg: SupervisedConfig) -> None:
    """Sinusoid: one "way" and no data; classification: >= 2 ways and existing data paths
    (made absolute)."""
    if cfg.benchmark == "sinusoid":
        if cfg.ways != 1:
            raise ValueError(f"--ways is for classification; sinusoid has none (got {cfg.ways})")
        cfg.data = None
        return
    if cfg.ways < 2:
        raise ValueError(f"--ways must be >= 2 for classification, got {cfg.ways}")
    if not cfg.data:
        raise ValueError(f"--data is required for {cfg.benchmark}: give "
                         + ("the Omniglot folder(s) or zip file(s)" if cfg.benchmark == "omniglot"
                            else "the MiniImagenet root (train.csv, val.csv, test.csv, images/)"))
    missing = [p for p in cfg.data if not Path(p).exists()]
    if missing:
        raise ValueError(f"--data path(s) not found: {', '.join(missing)}")
    cfg.data = [str(Path(p).resolve()) for p in cfg.data]


def _check_counts(cfg: SupervisedConfig) -> None:
    """The task sizes, step counts and intervals in range."""
    for name in _POSITIVE:
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be an integer >= 1, got {value!r}")
    for name in ("test_steps", "eval_every"):
        if getattr(cfg, name) < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(cfg, name)}")


def _check_model(cfg: SupervisedConfig) -> None:
    """The meta learning rate and the model's sizes in range."""
    if not (math.isfinite(cfg.meta_lr) and cfg.meta_lr > 0):
        raise ValueError(f"--meta-lr must be a positive number, got {cfg.meta_lr}")
    if not cfg.hidden or any(int(x) <= 0 for x in cfg.hidden):
        raise ValueError(f"--hidden must be positive layer sizes like 40,40, got {cfg.hidden}")
    if cfg.filters is not None and cfg.filters < 1:
        raise ValueError(f"--filters must be >= 1, got {cfg.filters}")
    if cfg.num_train_classes is not None and cfg.num_train_classes < 1:
        raise ValueError(f"--num-train-classes must be >= 1, got {cfg.num_train_classes}")
