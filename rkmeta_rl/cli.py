"""``rkmeta-rl``: train, resume, evaluate and inspect RK meta-learning runs.

``rkmeta-rl --version`` prints the package's version; ``rkmeta-rl`` alone prints this
help. The RL commands live in ``rkmeta_rl/rl/cli.py``, the supervised ones in
``rkmeta_rl/supervised/cli.py``, the analysis of finished runs in
``rkmeta_rl/analysis/cli.py``; this module only puts them under one program.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from rkmeta_rl import __version__
from rkmeta_rl.analysis import cli as analysis_cli
from rkmeta_rl.methods import format_table
from rkmeta_rl.rl import cli as rl_cli
from rkmeta_rl.rl.sampler import SamplingError
from rkmeta_rl.run import rundir
from rkmeta_rl.run.arguments import add_command
from rkmeta_rl.supervised import cli as supervised_cli


def cmd_methods(args: argparse.Namespace, argv: list[str]) -> int:
    print(format_table())
    return 0


def cmd_convert(args: argparse.Namespace, argv: list[str]) -> int:
    backup = rundir.convert_trusted_checkpoint(args.path)
    print(f"converted {args.path} to tensors and plain data; the original is {backup}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rkmeta-rl", description=__doc__.splitlines()[0],
                                     allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"rkmeta-rl {__version__}")
    sub = parser.add_subparsers(dest="command")  # none given: main prints the help
    rl_cli.add_commands(sub)
    supervised_cli.add_commands(sub)
    analysis_cli.add_commands(sub)
    add_command(sub, "methods", cmd_methods,
                help="list the named tableaus with their order")
    add_command(sub, "convert-checkpoint", cmd_convert,
                lambda p: p.add_argument("path", metavar="PATH",
                                         help="checkpoint.pt or its run directory"),
                help="rewrite a checkpoint you trust as tensors and plain data (loading it "
                     "here may run code from the file)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # bare ``rkmeta-rl``: the help, not an error
        parser.print_help()
        return 0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = _one_line_warning
            return args.handler(args, argv)
    except (ValueError, OSError) as e:  # bad input or a file problem: one line, no traceback
        print(f"rkmeta-rl: error: {e}", file=sys.stderr)
        return 2
    except SamplingError as e:  # an env failed while training: one line, files intact
        print(f"rkmeta-rl: error: {' '.join(str(e).split())}; the last checkpoint is "
              "intact (continue with --resume once it is fixed)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("rkmeta-rl: interrupted; the last checkpoint is intact (continue with --resume)",
              file=sys.stderr)
        return 130


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str,
                      lineno: int, file=None, line: str | None = None) -> None:
    """A warning as one line on stderr, as errors are (no file and line of the source)."""
    print(f"rkmeta-rl: warning: {' '.join(str(message).split())}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
