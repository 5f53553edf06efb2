"""``rkmeta-rl supervised`` and ``rkmeta-rl supervised-evaluate``: the supervised
benchmarks from the command line (defaults and help: ``rkmeta_rl/supervised/config.py``)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

from rkmeta_rl.arguments import (
    add_command,
    add_method_args,
    check_run_dir,
    check_threads,
    layer_sizes,
    report_stop,
    resume_dir,
    resume_settings,
)
from rkmeta_rl.config import torch_threads
from rkmeta_rl.stopping import RunStopped
from rkmeta_rl.supervised.config import (
    BENCHMARKS,
    SupervisedConfig,
    benchmark_defaults,
    resolve,
)
from rkmeta_rl.supervised.evaluate import evaluate_supervised_run
from rkmeta_rl.supervised.trainer import prepare_supervised_run, resume_supervised_run

# the settings whose defaults differ by benchmark, as the help lists them
SETTINGS = {"sinusoid": ("sinusoid", None, None), "omniglot-5way": ("omniglot", 5, None),
            "omniglot-20way": ("omniglot", 20, None), "miniimagenet": ("miniimagenet", None, None)}


PER_BENCHMARK = (
    ("ways", "classes per task"),
    ("shots", "support examples per class (sinusoid: points per task)"),
    ("queries", "query examples per class (sinusoid: points per task)"),
    ("inner_steps", "adaptation steps in training"),
    ("test_steps", "adaptation steps at meta-test"),
    ("meta_batch_size", "tasks per meta-step"),
    ("meta_iters", "meta-iterations"),
    ("filters", "conv filters"),
    ("log_every", "metrics + checkpoint every N iterations"),
    ("eval_every", "validation every N iterations"),
    ("eval_tasks", "validation tasks"),
    ("test_tasks", "tasks for supervised-evaluate"),
)


def by_benchmark(key: str) -> str:
    """'[sinusoid 1, omniglot-5way 1, ...]': the default of ``key`` per benchmark."""
    values = [f"{name} {benchmark_defaults(*setting).get(key, '-')}"
              for name, setting in SETTINGS.items()]
    return "[" + ", ".join(values) + "]"


def add_train_args(p: argparse.ArgumentParser) -> None:
    d = SupervisedConfig()
    p.add_argument("--benchmark", default=d.benchmark, help=", ".join(BENCHMARKS))
    add_method_args(p, d.method, "the benchmark's: " + by_benchmark("inner_lr")[1:-1])
    p.add_argument("--layer-methods", metavar="RULES",
                   help="a tableau per parameter group, e.g. 'head=midpoint,*=ralston' "
                        "(replaces --method; 'frozen:midpoint' does not move a group; "
                        "parameters: sinusoid layers.0-2.{weight,bias}, conv nets "
                        "blocks.0-3.{conv,norm}.{weight,bias} and head.{weight,bias})")
    p.add_argument("--data", nargs="+", metavar="PATH",
                   help="Omniglot: folders or zips (images_background..., or alphabets); "
                        "MiniImagenet: the root holding train/val/test.csv and images/")
    for key, text in PER_BENCHMARK:
        p.add_argument("--" + key.replace("_", "-"), type=int, help=f"{text} {by_benchmark(key)}")
    p.add_argument("--meta-lr", type=float, default=d.meta_lr, help="Adam learning rate")
    p.add_argument("--hidden", type=layer_sizes, default=d.hidden, help="sinusoid MLP, e.g. 40,40")
    p.add_argument("--num-train-classes", type=int,
                   help="Omniglot training characters [1200 of 1623, the same share of fewer]")
    p.add_argument("--split-seed", type=int, default=d.split_seed, help="Omniglot split")
    p.add_argument("--seed", type=int, default=d.seed, help="weights and task sampling")
    p.add_argument("--num-threads", type=int, default=d.num_threads,
                   help="torch threads; 0: every core this process may use (default: %(default)s)")
    p.add_argument("--out", metavar="DIR",
                   help="run directory [runs/BENCHMARK[-Nway-Kshot]-METHOD-sSEED]")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR with its own config")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory made by supervised")
    p.add_argument("--tasks", type=int, help="held-out tasks [the run's test_tasks: 600]")
    p.add_argument("--steps", type=int, help="adaptation steps [the run's test_steps]")
    p.add_argument("--alpha", type=float, help="adaptation step [the run's α]")
    p.add_argument("--seed", type=int, default=None, help="held-out task draw [fixed]")
    p.add_argument("--runs", metavar="PATH",
                   help="Omniglot all_runs.zip (or folder): also score the 20 standard "
                        "20-way one-shot runs")
    p.add_argument("--out", metavar="FILE", help="[RUN_DIR/eval.json]")
    p.add_argument("--num-threads", type=int, default=0,
                   help="torch threads; 0: every core this process may use (default: 0)")


def config_from_args(args: argparse.Namespace) -> SupervisedConfig:
    fields = {f.name for f in dataclasses.fields(SupervisedConfig)}
    values = {k: v for k, v in vars(args).items() if k in fields}
    return resolve(SupervisedConfig(**values), tableau_file=args.tableau)


def default_out(cfg: SupervisedConfig) -> Path:
    setting = "" if cfg.benchmark == "sinusoid" else f"-{cfg.ways}way-{cfg.shots}shot"
    method = cfg.method if cfg.layer_methods is None else "layers"
    return Path(f"runs/{cfg.benchmark}{setting}-{method}-s{cfg.seed}")


def cmd_supervised(args: argparse.Namespace, argv: list[str]) -> int:
    if args.resume:
        trainer = resume_supervised_run(resume_dir(args, argv),
                                        **resume_settings(args, argv))
    else:
        cfg = config_from_args(args)
        trainer = prepare_supervised_run(cfg, Path(args.out) if args.out else default_out(cfg))
    cfg = trainer.cfg
    print(f"rkmeta-rl: run directory {trainer.run_dir} (iteration {trainer.iteration}/"
          f"{cfg.meta_iters}, " + (f"α = {cfg.alpha:g}, h = {cfg.h:g}" if cfg.layer_methods is None
                                    else f"layers {cfg.layer_methods}")
          + f", {cfg.inner_steps} "
          f"adaptation step(s))", file=sys.stderr)
    try:
        records = trainer.run(progress=not args.no_progress)
    except RunStopped as stop:
        return report_stop(stop, "supervised", trainer.run_dir)
    if records:
        last = {k: f"{v:.4g}" for k, v in records[-1].items() if k.startswith("val_")}
        print("final: " + " ".join(f"{k} {v}" for k, v in last.items()))
    return 0


def cmd_supervised_evaluate(args: argparse.Namespace, argv: list[str]) -> int:
    check_threads(args.num_threads)
    check_run_dir(args.run_dir)
    torch.set_num_threads(torch_threads(args.num_threads))
    out = Path(args.out) if args.out else Path(args.run_dir) / "eval.json"
    result = evaluate_supervised_run(args.run_dir, out, tasks=args.tasks, steps=args.steps,
                                     alpha=args.alpha, seed=args.seed, runs=args.runs)
    for line in result["summary"]:
        print(line)
    print(f"wrote {out}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add the supervised subcommands, each with its handler."""
    add_command(sub, "supervised", cmd_supervised, add_train_args,
                help="meta-train on sinusoid, Omniglot or MiniImagenet (RK meta-gradient + "
                     "Adam)")
    add_command(sub, "supervised-evaluate", cmd_supervised_evaluate, add_evaluate_args,
                help="adapt a supervised run to held-out tasks: mean ± 95%% CI (eval.json)")
