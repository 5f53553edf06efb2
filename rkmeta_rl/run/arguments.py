"""Command-line pieces both wings share: subcommands, --tableau, --resume and one-line
errors (the settings' flags come from their dataclasses: ``rkmeta_rl.run.flags``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from rkmeta_rl.run.config import torch_threads
from rkmeta_rl.run.flags import flag_name
from rkmeta_rl.run.stopping import RunStopped

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


def add_tableau_arg(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--tableau FILE: a JSON tableau instead of the method setting (it fills the config's
    ``method`` and ``tableau``: ``StoredConfig.resolve_tableau``)."""
    p.add_argument("--tableau", metavar="FILE",
                   help="JSON tableau {a, q, name} instead of --method")


RESUME_SETTINGS = ("meta_iters", "num_threads")  # what --resume may change
_NOT_FLAGS = ("command", "handler")  # in every command's namespace, given or not


def resume_dir(args: argparse.Namespace) -> Path:
    """The --resume directory, refusing other settings (the run keeps its own config, except
    ``--meta-iters`` to extend it and ``--num-threads``: :func:`resume_settings`). The
    settings' flags default to SUPPRESS (``rkmeta_rl.run.flags``), so those in ``args`` were
    given; the other flags were given where they differ from their None or False."""
    allowed = ("resume", "no_progress", *RESUME_SETTINGS, *_NOT_FLAGS)
    given = [flag_name(name) for name, value in vars(args).items()
             if name not in allowed and value is not None and value is not False]
    if given:
        raise ValueError(f"--resume continues a run with its own config; drop {given} (it "
                         "takes --meta-iters N to train to N and --num-threads)")
    if not Path(args.resume).is_dir():
        raise ValueError(f"--resume {args.resume}: no such run directory")
    return Path(args.resume)


def resume_settings(args: argparse.Namespace) -> dict[str, int]:
    """The settings a --resume command line changes (``rundir.change_on_resume``): those
    given, the only ones in ``args`` (their flags default to SUPPRESS)."""
    return {n: getattr(args, n) for n in RESUME_SETTINGS if hasattr(args, n)}


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
