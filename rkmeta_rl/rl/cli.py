"""The RL commands: ``train``, ``train-oracle``, ``evaluate`` and ``render``.

The settings' flags are generated from their dataclasses (``rkmeta_rl.run.flags``): ``train``'s
from ``rkmeta_rl.rl.config.TrainConfig``, ``evaluate``'s from
``rkmeta_rl.rl.evaluate.EvalConfig``, each field with its default and help; only the flags
that are no setting (``--out``, ``--resume``, ...) are written here.
"""

from __future__ import annotations

import argparse
import re
import sys
from functools import partial
from pathlib import Path

import torch

from rkmeta_rl.rl.config import MetaStepConfig, TrainConfig, train_config
from rkmeta_rl.rl.evaluate import EvalConfig, evaluate_run
from rkmeta_rl.rl.render import render_run
from rkmeta_rl.rl.tasks import FAMILIES, LOCOMOTION, oracle_env
from rkmeta_rl.rl.trainer import prepare_run_dir, resume_run
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
from rkmeta_rl.run.flags import add_settings, flag_fields, given_settings
from rkmeta_rl.run.stopping import RunStopped

# What train-oracle fixes: plain TRPO (euler, no adaptation) on the goal-conditioned env.
ORACLE_FIXED = ("method", "layer_methods", "first_order", "inner_lr", "step_size")
ORACLE_ENV_HELP = ("task family: " + ", ".join(FAMILIES) + " (trained on its goal-conditioned "
                   "variant)")


def add_train_args(p: argparse.ArgumentParser, oracle: bool = False) -> None:
    """train's flags (``oracle``: train-oracle's, without the method settings)."""
    skip = ORACLE_FIXED if oracle else ()
    run = p.add_argument_group("run settings")
    add_settings(run, TrainConfig, skip={*skip, *(f.name for f in flag_fields(MetaStepConfig))},
                 helps={"env": ORACLE_ENV_HELP} if oracle else None)
    if not oracle:
        add_tableau_arg(run)
    add_settings(p.add_argument_group("TRPO meta-step settings"), MetaStepConfig, skip=skip)
    out = p.add_argument_group("run directory and output")
    out.add_argument("--out", metavar="DIR", help="run directory (default runs/ENV-METHOD-sSEED)")
    out.add_argument("--resume", metavar="DIR",
                     help="continue the run in DIR with its own config")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory made by train")
    add_settings(p, EvalConfig)
    p.add_argument("--out", metavar="FILE",
                   help="output [RUN_DIR/eval.json; eval-random.json, eval-maml.json, "
                        "eval-best.json, ...]")
    p.add_argument("--num-threads", type=int, default=0,
                   help="torch threads; 0: every core this process may use")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_render_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory made by train")
    p.add_argument("--task", help='JSON task, e.g. \'{"velocity": 1.5}\' '
                                  "[the first held-out task]")
    p.add_argument("--steps", type=int, default=1, help="adaptation steps before playing")
    p.add_argument("--episodes", type=int, default=40, help="episodes per adaptation step")
    p.add_argument("--out", default=None, help="GIF path [RUN_DIR/render-stepsK.gif]")
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=240)
    p.add_argument("--fps", type=int, default=30)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The resolved config of a train / train-oracle command line: the dataclass defaults,
    then the preset's, then the flags given (the family's defaults fill what is left)."""
    given = given_settings(args, TrainConfig)
    if args.command == "train-oracle":  # no preset sets env or method: as if given last
        given.update(env=oracle_env(given.get("env", TrainConfig.env)), method="euler")
    return train_config(given, tableau_file=getattr(args, "tableau", None))


def run_name(env: str) -> str:
    """``env`` as part of a directory name: a Gymnasium id or import path's ``/`` and ``:``
    become ``-`` (``rkmeta_rl/Nav2D-v0`` -> ``rkmeta_rl-Nav2D-v0``); family names stay."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", env)


def cmd_train(args: argparse.Namespace, argv: list[str]) -> int:
    if args.resume:
        trainer = resume_run(resume_dir(args), **resume_settings(args))
    else:
        cfg = config_from_args(args)
        name = ("oracle" if args.command == "train-oracle"
                else "layers" if cfg.layer_methods else cfg.method)
        env = getattr(args, "env", TrainConfig.env)  # the family given, not its oracle's env
        out = Path(args.out or f"runs/{run_name(env)}-{name}-s{cfg.seed}")
        trainer = prepare_run_dir(cfg, out)
    cfg = trainer.cfg
    method = (f"α = {cfg.alpha:g}, h = {cfg.h:g}" if cfg.layer_methods is None
              else f"layers {cfg.layer_methods}")
    if cfg.env in LOCOMOTION:
        method += f", {cfg.dynamics} dynamics"
    print(f"rkmeta-rl: run directory {trainer.run_dir} (iteration {trainer.iteration}/"
          f"{cfg.meta_iters}, {method})", file=sys.stderr)
    try:
        records = trainer.run(progress=not args.no_progress)
    except RunStopped as stop:
        return report_stop(stop, "train", trainer.run_dir)
    if records:
        last = records[-1]
        print(f"final: return_pre {last['return_pre']:.2f} return_post {last['return_post']:.2f}")
    return 0


def cmd_evaluate(args: argparse.Namespace, argv: list[str]) -> int:
    ecfg = EvalConfig(**given_settings(args, EvalConfig))
    ecfg.check()
    check_threads(args.num_threads)
    check_run_dir(args.run_dir)
    torch.set_num_threads(torch_threads(args.num_threads))
    result = evaluate_run(args.run_dir, ecfg, out=args.out, progress=not args.no_progress)
    means = " ".join(f"{r['mean']:.1f}" for r in result["by_step"])
    out = args.out or str(Path(args.run_dir) / ecfg.default_filename())
    print(f"{result['method']} ({ecfg.init}) mean return after 0..{ecfg.steps} steps: {means}")
    if "success_by_step" in result:
        rates = " ".join(f"{r['mean']:.0%}" for r in result["success_by_step"])
        print(f"success rate after 0..{ecfg.steps} steps: {rates}")
    print(f"wrote {out}")
    return 0


def cmd_render(args: argparse.Namespace, argv: list[str]) -> int:
    check_run_dir(args.run_dir)
    out = args.out or str(Path(args.run_dir) / f"render-steps{args.steps}.gif")
    info = render_run(args.run_dir, out, args.task, args.steps, args.episodes,
                      width=args.width, height=args.height, fps=args.fps)
    print(f"task {info['task']}: return {info['return']:.1f} after {args.steps} steps "
          f"({info['frames']} frames); wrote {out}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add the RL subcommands, each with its handler (``args.handler(args, argv)``)."""
    add_command(sub, "train", cmd_train, add_train_args,
                help="meta-train a policy with an RK meta-update and TRPO")
    add_command(sub, "train-oracle", cmd_train, partial(add_train_args, oracle=True),
                help="train the oracle: TRPO on the goal-conditioned variant of --env",
                description="Train the same policy architecture with (multi-task) TRPO on "
                            "the goal-conditioned variant of --env: its return is the "
                            "ceiling line.")
    add_command(sub, "evaluate", cmd_evaluate, add_evaluate_args,
                help="adapt a run's policy to held-out tasks with 0..K gradient steps "
                     "(eval.json)")
    add_command(sub, "render", cmd_render, add_render_args,
                help="GIF of a locomotion run's policy after K adaptation steps on one task")
