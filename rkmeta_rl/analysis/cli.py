"""``rkmeta-rl compare`` and ``rkmeta-rl snapshots``: the analysis of finished runs from the
command line (``rkmeta_rl/cli.py`` puts them under one program with the wings')."""

from __future__ import annotations

import argparse

from rkmeta_rl.analysis import compare, snapshots
from rkmeta_rl.run.arguments import add_command


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add the analysis subcommands, each with its handler."""
    add_command(sub, "compare", compare.cmd_compare, compare.add_args,
                help="each method against a baseline, paired on seeds and held-out tasks: "
                     "mean difference and 95%% t-intervals",
                description=compare.__doc__.splitlines()[0])
    p = add_command(sub, "snapshots",
                    lambda args, argv: snapshots.cmd_snapshots(p, args, argv),  # p.error
                    snapshots.add_args,
                    help="evaluate every snapshot of some runs and the best pick: OUT.md, "
                         "OUT.png",
                    description=" ".join(snapshots.__doc__.split("\n\n")[0].split()))
