"""``rkmeta-rl``: train, resume and inspect RK-MAML runs from the command line."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from rkmeta_rl.config import PRESETS, TrainConfig, resolve
from rkmeta_rl.tableau import format_table

DEFAULTS = TrainConfig()


def layer_sizes(text: str) -> list[int]:
    """'100,100' -> [100, 100] (argparse type of --hidden)."""
    try:
        sizes = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        sizes = []
    if not sizes or any(s <= 0 for s in sizes):
        raise argparse.ArgumentTypeError(f"must be positive layer sizes like 100,100, got {text!r}")
    return sizes


def _add_train_args(p: argparse.ArgumentParser, oracle: bool = False) -> None:
    d = DEFAULTS
    from rkmeta_rl.tasks import FAMILIES

    p.add_argument("--env", default=d.env, help="task family: " + ", ".join(FAMILIES))
    if not oracle:
        _add_method_args(p)
    p.add_argument("--preset", default=None,
                   help="a named budget replacing some defaults (flags given still win): "
                        + "; ".join(f"{k}: {v}" for k, v in PRESETS.items()))
    p.add_argument("--max-episode-steps", type=int, default=None,
                   help="horizon [the family's: 100 for nav2d, 200 for locomotion]")
    p.add_argument("--meta-iters", type=int, default=d.meta_iters, help="meta-iterations")
    p.add_argument("--meta-batch-size", type=int, default=d.meta_batch_size, help="tasks")
    p.add_argument("--fast-batch-size", type=int, default=d.fast_batch_size,
                   help="episodes per task and stage")
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
                   help="torch threads; 1 is fastest when another process shares the cores")
    p.add_argument("--device", default=d.device, help="cpu or cuda[:N]")
    p.add_argument("--out", metavar="DIR", help="run directory (default runs/ENV-METHOD-sSEED)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR with its own config")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_method_args(p: argparse.ArgumentParser) -> None:
    d = DEFAULTS
    p.add_argument("--method", default=d.method,
                   help="tableau name (see rkmeta-rl methods)")
    p.add_argument("--tableau", metavar="FILE",
                   help="JSON tableau {a, q, name} instead of --method")
    p.add_argument("--first-order", action="store_true",
                   help="k_i at its point, not differentiated through θ_i(θ)")
    steps = p.add_mutually_exclusive_group()
    steps.add_argument("--inner-lr", type=float, default=None,
                       help="adaptation step α, h = α / c2 [0.16 nav2d, 0.1 locomotion; "
                            "supervised: the benchmark's]")
    steps.add_argument("--step-size", type=float, default=None, help="RK step h, α = c2·h")


def _add_evaluate_args(p: argparse.ArgumentParser) -> None:
    from rkmeta_rl.evaluate import INITS, PROTOCOLS, EvalConfig

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
    p.add_argument("--seed", type=int, default=d.seed, help="held-out tasks and sampling")
    p.add_argument("--out", metavar="FILE",
                   help="output [RUN_DIR/eval.json; eval-random.json, eval-maml.json, ...]")
    p.add_argument("--num-threads", type=int, default=1, help="torch threads")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rkmeta-rl", description=__doc__, allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="meta-train a policy with an RK meta-update and TRPO",
                           allow_abbrev=False,
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _add_train_args(train)
    oracle = sub.add_parser(
        "train-oracle", allow_abbrev=False,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="train the oracle: TRPO on the goal-conditioned variant of --env",
        description="Train the same policy architecture with (multi-task) TRPO on the "
                    "goal-conditioned variant of --env: its return is the ceiling line.")
    _add_train_args(oracle, oracle=True)
    evaluate = sub.add_parser(
        "evaluate", allow_abbrev=False, formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="adapt a run's policy to held-out tasks with 0..K gradient steps (eval.json)")
    _add_evaluate_args(evaluate)
    render = sub.add_parser(
        "render", allow_abbrev=False, formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="GIF of a locomotion run's policy after K adaptation steps on one task")
    render.add_argument("run_dir", metavar="RUN_DIR", help="a run directory made by train")
    render.add_argument("--task", help='JSON task, e.g. \'{"velocity": 1.5}\' '
                                       "[the first held-out task]")
    render.add_argument("--steps", type=int, default=1, help="adaptation steps before playing")
    render.add_argument("--episodes", type=int, default=40, help="episodes per adaptation step")
    render.add_argument("--out", default=None, help="GIF path [RUN_DIR/render-stepsK.gif]")
    render.add_argument("--width", type=int, default=320)
    render.add_argument("--height", type=int, default=240)
    render.add_argument("--fps", type=int, default=30)
    from rkmeta_rl.supervised.cli import add_evaluate_args, add_train_args

    supervised = sub.add_parser(
        "supervised", allow_abbrev=False, formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="meta-train on sinusoid, Omniglot or MiniImagenet (RK meta-gradient + Adam)")
    add_train_args(supervised, _add_method_args)
    sup_eval = sub.add_parser(
        "supervised-evaluate", allow_abbrev=False,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="adapt a supervised run to held-out tasks: mean ± 95%% CI (eval.json)")
    add_evaluate_args(sup_eval)
    sub.add_parser("methods", help="list the named tableaus with their order")
    return parser


def _given(argv: list[str]) -> set[str]:
    """The TrainConfig fields whose flags appear in ``argv``."""
    return {a.split("=")[0][2:].replace("-", "_") for a in argv if a.startswith("--")}


def _config_from_args(args: argparse.Namespace, argv: list[str]) -> TrainConfig:
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: v for k, v in vars(args).items() if k in fields}
    if args.preset is not None:
        if args.preset not in PRESETS:
            raise ValueError(f"unknown preset {args.preset!r}; valid choices: "
                             f"{', '.join(PRESETS)}")
        given = _given(argv)
        values.update({k: v for k, v in PRESETS[args.preset].items() if k not in given})
    if args.command == "train-oracle":
        from rkmeta_rl.tasks import oracle_env

        values.update(env=oracle_env(args.env), method="euler")
    return resolve(TrainConfig(**values), tableau_file=getattr(args, "tableau", None))


def resume_dir(args: argparse.Namespace, argv: list[str]) -> Path:
    """The --resume directory, refusing other settings (the run keeps its own config)."""
    given = [a for a in argv if a.startswith("--") and a.split("=")[0] not in
             ("--resume", "--no-progress")]
    if given:
        raise ValueError(f"--resume continues a run with its own config; drop {given}")
    if not Path(args.resume).is_dir():
        raise ValueError(f"--resume {args.resume}: no such run directory")
    return Path(args.resume)


def cmd_train(args: argparse.Namespace, argv: list[str]) -> int:
    from rkmeta_rl.trainer import prepare_run_dir, resume_run

    if args.resume:
        trainer = resume_run(resume_dir(args, argv))
    else:
        cfg = _config_from_args(args, argv)
        name = "oracle" if args.command == "train-oracle" else cfg.method
        out = Path(args.out or f"runs/{args.env}-{name}-s{cfg.seed}")
        trainer = prepare_run_dir(cfg, out)
    print(f"rkmeta-rl: run directory {trainer.run_dir} (iteration {trainer.iteration}/"
          f"{trainer.cfg.meta_iters}, α = {trainer.cfg.alpha:g}, h = {trainer.cfg.h:g})",
          file=sys.stderr)
    records = trainer.run(progress=not args.no_progress)
    if records:
        last = records[-1]
        print(f"final: return_pre {last['return_pre']:.2f} return_post {last['return_post']:.2f}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import torch

    from rkmeta_rl.evaluate import EvalConfig, evaluate_run

    ecfg = EvalConfig(tasks=args.tasks, episodes=args.episodes, steps=args.steps,
                      alpha=args.alpha, protocol=args.protocol, seed=args.seed, init=args.init)
    ecfg.check()
    if args.num_threads <= 0:
        raise ValueError(f"--num-threads must be > 0, got {args.num_threads}")
    if not Path(args.run_dir).is_dir():
        raise ValueError(f"{args.run_dir}: no such run directory")
    torch.set_num_threads(args.num_threads)
    result = evaluate_run(args.run_dir, ecfg, out=args.out, progress=not args.no_progress)
    means = " ".join(f"{r['mean']:.1f}" for r in result["by_step"])
    out = args.out or str(Path(args.run_dir) / ecfg.default_filename())
    print(f"{result['method']} ({ecfg.init}) mean return after 0..{ecfg.steps} steps: {means}")
    print(f"wrote {out}")
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from rkmeta_rl.render import render_run

    if not Path(args.run_dir).is_dir():
        raise ValueError(f"{args.run_dir}: no such run directory")
    out = args.out or str(Path(args.run_dir) / f"render-steps{args.steps}.gif")
    info = render_run(args.run_dir, out, args.task, args.steps, args.episodes,
                      width=args.width, height=args.height, fps=args.fps)
    print(f"task {info['task']}: return {info['return']:.1f} after {args.steps} steps "
          f"({info['frames']} frames); wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "methods":
            print(format_table())
            return 0
        if args.command == "evaluate":
            return cmd_evaluate(args)
        if args.command == "render":
            return cmd_render(args)
        if args.command == "supervised":
            from rkmeta_rl.supervised.cli import cmd_supervised

            return cmd_supervised(args, argv)
        if args.command == "supervised-evaluate":
            from rkmeta_rl.supervised.cli import cmd_supervised_evaluate

            return cmd_supervised_evaluate(args)
        return cmd_train(args, argv)
    except (ValueError, FileNotFoundError) as e:
        print(f"rkmeta-rl: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rkmeta-rl: interrupted; the last checkpoint is intact (continue with --resume)",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
