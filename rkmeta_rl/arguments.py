"""Command-line pieces both wings share: the method flags, layer sizes, --resume."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from rkmeta_rl.config import torch_threads
from rkmeta_rl.methods import METHOD_NAMES
from rkmeta_rl.stopping import RunStopped

Handler = Callable[[argparse.Namespace, list[str]], int]  # (args, argv) -> exit code


def add_command(sub: argparse._SubParsersAction, name: str, handler: Handler,
                add_args: Callable[[argparse.ArgumentParser], None] | None = None,
                **kwargs: str) -> argparse.ArgumentParser:
    """A subcommand that shows its defaults in --help, takes no abbreviated flags and runs
    ``handler(args, argv)``; ``kwargs`` are ``help`` and ``description``."""
    p = sub.add_parser(name, allow_abbrev=False,
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter, **kwargs)
    if add_args is not None:
        add_args(p)
    p.set_defaults(handler=handler)
    return p


def layer_sizes(text: str) -> list[int]:
    """'100,100' -> [100, 100] (argparse type of --hidden)."""
    try:
        sizes = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        sizes = []
    if not sizes or any(s <= 0 for s in sizes):
        raise argparse.ArgumentTypeError(f"must be positive layer sizes like 100,100, got {text!r}")
    return sizes


def add_method_args(p: argparse.ArgumentParser, method: str, inner_lr_default: str) -> None:
    """--method/--tableau, --first-order and the two step-size readings (--inner-lr α or
    --step-size h); ``inner_lr_default`` says where α's default comes from."""
    p.add_argument("--method", default=method,
                   help=f"tableau name: {', '.join(METHOD_NAMES)}, generic:X "
                        "(rkmeta-rl methods lists them)")
    p.add_argument("--tableau", metavar="FILE",
                   help="JSON tableau {a, q, name} instead of --method")
    p.add_argument("--first-order", action="store_true",
                   help="k_i at its point, not differentiated through θ_i(θ)")
    steps = p.add_mutually_exclusive_group()
    steps.add_argument("--inner-lr", type=float, default=None,
                       help=f"adaptation step α, h = α / c2 [{inner_lr_default}]")
    steps.add_argument("--step-size", type=float, default=None, help="RK step h, α = c2·h")


def given_flags(argv: list[str]) -> set[str]:
    """The config field names whose flags appear in ``argv`` (``--meta-iters`` -> meta_iters)."""
    return {a.split("=")[0][2:].replace("-", "_") for a in argv if a.startswith("--")}


RESUME_SETTINGS = ("meta_iters", "num_threads")  # what --resume may change


def resume_dir(args: argparse.Namespace, argv: list[str]) -> Path:
    """The --resume directory, refusing other settings (the run keeps its own config, except
    ``--meta-iters`` to extend it and ``--num-threads``: :func:`resume_settings`)."""
    allowed = ("--resume", "--no-progress",
               *(f"--{n.replace('_', '-')}" for n in RESUME_SETTINGS))
    given = [a for a in argv if a.startswith("--") and a.split("=")[0] not in allowed]
    if given:
        raise ValueError(f"--resume continues a run with its own config; drop {given} (it "
                         "takes --meta-iters N to train to N and --num-threads)")
    if not Path(args.resume).is_dir():
        raise ValueError(f"--resume {args.resume}: no such run directory")
    return Path(args.resume)


def resume_settings(args: argparse.Namespace, argv: list[str]) -> dict[str, int]:
    """The settings a --resume command line changes (``rundir.change_on_resume``)."""
    given = given_flags(argv)
    return {n: getattr(args, n) for n in RESUME_SETTINGS if n in given}


def run_script(main: Callable[[], int]) -> NoReturn:
    """A script's entry point, as ``rkmeta-rl``'s: bad input (ValueError) or a file problem
    (OSError) ends in one line on stderr and exit 2; anything else keeps its traceback."""
    try:
        code = main()
    except (ValueError, OSError) as e:
        print(f"{Path(sys.argv[0]).name}: error: {e}", file=sys.stderr)
        code = 2
    sys.exit(code)


def check_run_dir(path: str) -> Path:
    """A run directory given on the command line must exist."""
    if not Path(path).is_dir():
        raise ValueError(f"{path}: no such run directory")
    return Path(path)


def check_threads(n: int) -> None:
    torch_threads(n)  # ValueError for a negative count


def fail(parser: argparse.ArgumentParser, message: str) -> NoReturn:
    """Exit 2 with one line ``PROG: error: MESSAGE`` (no usage block: the input is at fault,
    not the command line)."""
    parser.exit(2, f"{parser.prog}: error: {message}\n")


def report_stop(stop: RunStopped, command: str, run_dir: Path) -> int:
    """Say how a stopped run ended and how to resume it; its exit code (128 + signal)."""
    print(f"rkmeta-rl: {stop}; resume with: rkmeta-rl {command} --resume {run_dir}",
          file=sys.stderr)
    return stop.exit_code
