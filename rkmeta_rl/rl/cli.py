"""The RL commands: ``train``, ``train-oracle``, ``evaluate`` and ``render``.

Defaults and help come from ``rkmeta_rl.rl.config`` (settings), ``rkmeta_rl.rl.tasks``
(family-dependent α and horizon) and ``rkmeta_rl.rl.evaluate`` (evaluation settings).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from functools import partial
from pathlib import Path

import torch

from envs.locomotion_dynamics import DYNAMICS
from rkmeta_rl.arguments import (
    add_command,
    add_method_args,
    check_run_dir,
    check_threads,
    given_flags,
    layer_sizes,
    report_stop,
    resume_dir,
    resume_settings,
)
from rkmeta_rl.config import torch_threads
from rkmeta_rl.rl.config import PRESETS, TrainConfig, preset_values, resolve
from rkmeta_rl.rl.evaluate import CHECKPOINTS, INITS, PROTOCOLS, EvalConfig, evaluate_run
from rkmeta_rl.rl.gym_tasks import FORMS
from rkmeta_rl.rl.render import render_run
from rkmeta_rl.rl.sampler import SAMPLERS
from rkmeta_rl.rl.tasks import (
    FAMILIES,
    GYM_INNER_LR,
    LOCOMOTION,
    describe,
    describe_episodes,
    oracle_env,
)
from rkmeta_rl.rl.trainer import prepare_run_dir, resume_run
from rkmeta_rl.stopping import RunStopped


def add_train_args(p: argparse.ArgumentParser, oracle: bool = False) -> None:
    d = TrainConfig()
    p.add_argument("--env", default=d.env,
                   help="task family: " + ", ".join(FAMILIES) + ("" if oracle else
                        ", or " + FORMS + " of an env with the task protocol"))
    p.add_argument("--dynamics", default=d.dynamics,
                   help=f"{' or '.join(DYNAMICS)}: the MuJoCo families' step, velocity and "
                        "reward terms, Gymnasium v5's (0.05 s steps) or the MAML code's "
                        "(0.01 s HalfCheetah, 0.02 s Ant; see README); other envs have "
                        "gymnasium only; recorded in config.json")
    if not oracle:
        add_method_args(p, d.method, "the family's: " + describe("inner_lr")
                        + f"; {GYM_INNER_LR}: Gymnasium envs")
        p.add_argument("--layer-methods", metavar="RULES",
                       help="a tableau per parameter group, e.g. 'w2=midpoint,*=frozen:"
                            "midpoint' (ANIL; the groups must share the weights a; the "
                            "policy's parameters are w0, b0, ..., wL, bL and log_std)")
    p.add_argument("--preset", default=None,
                   help="a named budget replacing some defaults (flags given still win): "
                        + "; ".join(f"{k}: {v}" for k, v in PRESETS.items()))
    p.add_argument("--max-episode-steps", type=int, default=None,
                   help="horizon [the family's: " + describe("horizon") + "; Gymnasium "
                        "envs: their spec's max_episode_steps, required if it has none]")
    p.add_argument("--meta-iters", type=int, default=d.meta_iters, help="meta-iterations")
    p.add_argument("--snapshot-every", type=int, default=d.snapshot_every,
                   help="keep the policy every N iterations in RUN_DIR/snapshots, for "
                        "evaluate --checkpoint; 0: never (default: %(default)s)")
    p.add_argument("--meta-batch-size", type=int, default=d.meta_batch_size, help="tasks")
    p.add_argument("--fast-batch-size", type=int, default=d.fast_batch_size,
                   help=f"episodes per task and stage [{describe_episodes()}]")
    p.add_argument("--max-kl", type=float, default=d.max_kl, help="TRPO KL bound δ")
    p.add_argument("--cg-iters", type=int, default=d.cg_iters,
                   help="conjugate-gradient iterations")
    p.add_argument("--cg-damping", type=float, default=d.cg_damping,
                   help="added to the curvature: (F + damping·I)")
    p.add_argument("--curvature-fraction", type=float, default=d.curvature_fraction,
                   help="share of episodes for the CG curvature; < 1 approximates")
    p.add_argument("--ls-ratio", type=float, default=d.ls_ratio, help="backtracking shrink")
    p.add_argument("--ls-steps", type=int, default=d.ls_steps, help="line-search candidates")
    p.add_argument("--hidden", type=layer_sizes, default=d.hidden, help="e.g. 100,100")
    p.add_argument("--seed", type=int, default=d.seed, help="tasks, weights and sampling")
    p.add_argument("--num-threads", type=int, default=d.num_threads,
                   help="torch threads; 0: every core this process may use; 1 when another "
                   "process shares the cores (default: %(default)s)")
    p.add_argument("--device", default=d.device,
                   help="cpu or cuda[:N]: where the meta-step runs (sampling runs on the CPU)")
    p.add_argument("--sampler", default=d.sampler,
                   help="; ".join(f"{k}: {v}" for k, v in SAMPLERS.items())
                        + "; the episodes are the same either way")
    p.add_argument("--workers", type=int, default=d.workers,
                   help="Ray workers, one CPU each [0: one per CPU of the Ray instance]")
    p.add_argument("--ray-address", default=d.ray_address, metavar="ADDR",
                   help="join the Ray cluster at ADDR (HOST:PORT, or auto) instead of "
                        "starting a local instance")
    p.add_argument("--out", metavar="DIR", help="run directory (default runs/ENV-METHOD-sSEED)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR with its own config")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_evaluate_args(p: argparse.ArgumentParser) -> None:
    d = EvalConfig()
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory made by train")
    p.add_argument("--tasks", type=int, default=d.tasks, help="held-out tasks")
    p.add_argument("--episodes", type=int, default=d.episodes,
                   help="episodes per task and adaptation step")
    p.add_argument("--steps", type=int, default=d.steps,
                   help="gradient steps (returns after 0..STEPS of them)")
    p.add_argument("--alpha", type=float, default=None, help="adaptation step [the run's α]")
    p.add_argument("--protocol", default=d.protocol,
                   help="; ".join(f"{k}: {v}" for k, v in PROTOCOLS.items()))
    p.add_argument("--init", default=d.init,
                   help="; ".join(f"{k}: {v}" for k, v in INITS.items()))
    p.add_argument("--checkpoint", default=d.checkpoint,
                   help="; ".join(f"{k}: {v}" for k, v in CHECKPOINTS.items()))
    p.add_argument("--seed", type=int, default=d.seed, help="held-out tasks and sampling")
    p.add_argument("--out", metavar="FILE",
                   help="output [RUN_DIR/eval.json; eval-random.json, eval-maml.json, "
                        "eval-best.json, ...]")
    p.add_argument("--num-threads", type=int, default=0,
                   help="torch threads; 0: every core this process may use (default: 0)")
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


def config_from_args(args: argparse.Namespace, argv: list[str]) -> TrainConfig:
    """The resolved config of a train / train-oracle command line (preset applied)."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: v for k, v in vars(args).items() if k in fields}
    if args.preset is not None:
        given = given_flags(argv)
        values.update({k: v for k, v in preset_values(args.preset).items() if k not in given})
    if args.command == "train-oracle":
        values.update(env=oracle_env(args.env), method="euler")
    return resolve(TrainConfig(**values), tableau_file=getattr(args, "tableau", None))


def run_name(env: str) -> str:
    """``env`` as part of a directory name: a Gymnasium id or import path's ``/`` and ``:``
    become ``-`` (``rkmeta_rl/Nav2D-v0`` -> ``rkmeta_rl-Nav2D-v0``); family names stay."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", env)


def cmd_train(args: argparse.Namespace, argv: list[str]) -> int:
    if args.resume:
        trainer = resume_run(resume_dir(args, argv), **resume_settings(args, argv))
    else:
        cfg = config_from_args(args, argv)
        name = ("oracle" if args.command == "train-oracle"
                else "layers" if cfg.layer_methods else cfg.method)
        out = Path(args.out or f"runs/{run_name(args.env)}-{name}-s{cfg.seed}")
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
    ecfg = EvalConfig(tasks=args.tasks, episodes=args.episodes, steps=args.steps,
                      alpha=args.alpha, protocol=args.protocol, seed=args.seed, init=args.init,
                      checkpoint=args.checkpoint)
    ecfg.check()
    check_threads(args.num_threads)
    check_run_dir(args.run_dir)
    torch.set_num_threads(torch_threads(args.num_threads))
    result = evaluate_run(args.run_dir, ecfg, out=args.out, progress=not args.no_progress)
    means = " ".join(f"{r['mean']:.1f}" for r in result["by_step"])
    out = args.out or str(Path(args.run_dir) / ecfg.default_filename())
    print(f"{result['method']} ({ecfg.init}) mean return after 0..{ecfg.steps} steps: {means}")
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
