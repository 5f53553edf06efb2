"""``rkmeta-rl compare``, ``rkmeta-rl snapshots`` and ``rkmeta-rl plot FIGURE``: the
analysis of finished runs from the command line (``rkmeta_rl/cli.py`` puts them under one
program with the wings')."""

from __future__ import annotations

import argparse
from types import ModuleType

from rkmeta_rl.analysis import compare, plots, snapshots
from rkmeta_rl.analysis.plots import (
    adaptation,
    fewshot_steps,
    sinusoid_adaptation,
    tableaus,
    training,
    trajectories,
)
from rkmeta_rl.run.arguments import add_command

FIGURES: dict[str, tuple[ModuleType, str]] = {  # rkmeta-rl plot NAME: module, help
    "training": (training, "meta-training curves, return before and after adaptation "
                           "(+ CSV)"),
    "adaptation": (adaptation, "Figure 5: held-out return against the number of gradient "
                               "steps (+ CSV)"),
    "trajectories": (trajectories, "Figure 4: a 2D-navigation policy's paths after 0, 1, "
                                   "... steps"),
    "sinusoid-adaptation": (sinusoid_adaptation, "sinusoid runs' predictions after 0, 1, "
                                                 "... steps"),
    "fewshot-steps": (fewshot_steps, "Figure 3: held-out accuracy (or loss) against the "
                                     "test steps (+ CSV)"),
    "tableaus": (tableaus, "Figure 1: each named tableau's stage points on a quadratic"),
}


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
    add_plot_commands(sub)


def add_plot_commands(sub: argparse._SubParsersAction) -> None:
    """``rkmeta-rl plot FIGURE``, a subcommand per figure of ``FIGURES``."""
    plot = sub.add_parser("plot", allow_abbrev=False, help="draw a figure: "
                          + ", ".join(FIGURES),
                          description=first_paragraph(plots.__doc__))
    figures = plot.add_subparsers(dest="figure", required=True, metavar="FIGURE")
    for name, (module, text) in FIGURES.items():
        add_figure(figures, name, module, text)


def add_figure(figures: argparse._SubParsersAction, name: str, module: ModuleType,
               text: str) -> None:
    """``rkmeta-rl plot NAME``: the flags of ``module.add_args``, bad input ending through
    its own parser (``module.draw(p, args)``)."""
    p = add_command(figures, name, lambda args, argv: module.draw(p, args), module.add_args,
                    help=text, description=first_paragraph(module.__doc__))


def first_paragraph(doc: str) -> str:
    """A module docstring's first paragraph on one line (a command's description)."""
    return " ".join(doc.split("\n\n")[0].split())
