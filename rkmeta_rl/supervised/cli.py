"""``rkmeta-rl supervised`` and ``rkmeta-rl supervised-evaluate``: the supervised
benchmarks from the command line (the settings' flags, defaults and help are generated
from ``rkmeta_rl/supervised/config.py``'s dataclass: ``rkmeta_rl.run.flags``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from rkmeta_rl.run.arguments import (
    add_command,
    add_tableau_arg,
    check_run_dir,
    check_threads,
    report_stop,
    resume_dir,
    resume_settings,
)
from rkmeta_rl.run.config import torch_threads
from rkmeta_rl.run.flags import add_settings, given_settings
from rkmeta_rl.run.stopping import RunStopped
from rkmeta_rl.supervised.config import SupervisedConfig, resolve
from rkmeta_rl.supervised.evaluate import evaluate_supervised_run
from rkmeta_rl.supervised.trainer import prepare_supervised_run, resume_supervised_run


def add_train_args(p: argparse.ArgumentParser) -> None:
    settings = p.add_argument_group("settings")
    add_settings(settings, SupervisedConfig)
    add_tableau_arg(settings)
    out = p.add_argument_group("run directory and output")
    out.add_argument("--out", metavar="DIR",
                     help="run directory [runs/BENCHMARK[-Nway-Kshot]-METHOD-sSEED]")
    out.add_argument("--resume", metavar="DIR",
                     help="continue the run in DIR with its own config")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")


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
                   help="torch threads; 0: every core this process may use")


def config_from_args(args: argparse.Namespace) -> SupervisedConfig:
    """The resolved config of a supervised command line: the flags given over the
    dataclass defaults (the benchmark's defaults fill what is left)."""
    return resolve(SupervisedConfig(**given_settings(args, SupervisedConfig)),
                   tableau_file=args.tableau)


def default_out(cfg: SupervisedConfig) -> Path:
    setting = "" if cfg.benchmark == "sinusoid" else f"-{cfg.ways}way-{cfg.shots}shot"
    method = cfg.method if cfg.layer_methods is None else "layers"
    return Path(f"runs/{cfg.benchmark}{setting}-{method}-s{cfg.seed}")


def cmd_supervised(args: argparse.Namespace, argv: list[str]) -> int:
    if args.resume:
        trainer = resume_supervised_run(resume_dir(args), **resume_settings(args))
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
