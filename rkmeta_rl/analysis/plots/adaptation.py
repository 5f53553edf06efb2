"""Figure 5: average return on held-out tasks against the number of gradient steps.

    rkmeta-rl plot adaptation runs/*/eval*.json --out fig5.png
    rkmeta-rl plot adaptation runs/nav2d-ralston-s0 runs/nav2d-euler-s0 --out fig5.png

Each argument is an eval JSON written by ``rkmeta-rl evaluate``, or a directory whose
``eval*.json`` files are all used. Evaluations are grouped by curve (the method, "random
init" or "oracle"); a group of several runs (seeds) is drawn as the mean over runs with a
t-based 95% band across runs, a single run with its band across tasks. The oracle is a
horizontal line at its step-0 return. The plotted numbers are also written as CSV. The
figure says what the curves were run on: for a MuJoCo family its dynamics and its horizon
in steps and in simulated seconds, for the others the horizon in steps. Where every
evaluation has success rates (Meta-World), a second panel shows them, and their CSV is
written beside the first with ``-success`` added to its name.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rkmeta_rl.analysis.plotting import pyplot, script_main
from rkmeta_rl.rl.evaluate import combine_seeds, describe_horizon, label_of, read_eval
from rkmeta_rl.run.arguments import fail

if TYPE_CHECKING:
    from matplotlib.axes import Axes

RANDOM, ORACLE = "random init", "oracle"
PALETTE = ["tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink",
           "tab:olive", "tab:cyan", "tab:gray"]  # no red or black: those are the references
CSV_HEADER = ["label", "step", "mean", "ci95_low", "ci95_high", "runs"]
COMPARED = ("tasks", "episodes", "seed", "protocol", "dynamics",
            "max_episode_steps")  # should agree across all curves


def eval_files(paths: list[str], parser: argparse.ArgumentParser) -> list[Path]:
    """The files named, with each directory replaced by its sorted ``eval*.json`` files."""
    files: list[Path] = []
    for text in paths:
        path = Path(text)
        if path.is_dir():
            found = sorted(path.glob("eval*.json"))
            if not found:
                fail(parser, f"{path}: no eval*.json files in this directory")
            files.extend(found)
        elif path.exists():
            files.append(path)
        else:
            fail(parser, f"{path}: no such file or directory")
    if not files:
        fail(parser, "no evaluation files given")
    return files


def load_groups(files: list[Path], parser: argparse.ArgumentParser) -> dict[str, list[dict]]:
    """Evaluations grouped by curve label; a file that is not an evaluation is an error."""
    groups: dict[str, list[dict]] = {}
    for path in files:
        try:
            evaluation = read_eval(path)
        except ValueError as e:  # read_eval's message names the file and what is wrong
            fail(parser, str(e))
        label = label_of(evaluation)
        evaluation["_file"] = str(path)
        groups.setdefault(label, []).append(evaluation)
    return groups


def warn_mismatches(groups: dict[str, list[dict]]) -> None:
    """Warn (stderr) when curves were evaluated differently or a run appears twice."""
    evaluations = [e for group in groups.values() for e in group]
    for key in COMPARED:
        values = sorted({str(e.get(key)) for e in evaluations})
        if len(values) > 1:
            print(f"warning: evaluations differ in {key}: {', '.join(values)}", file=sys.stderr)
    for label, group in groups.items():
        runs = [e.get("run_dir") for e in group]
        if len(set(runs)) < len(runs):
            print(f"warning: {label!r} has the same run more than once: "
                  f"{', '.join(e['_file'] for e in group)}", file=sys.stderr)


def ordered_labels(labels: list[str], order: list[str]) -> list[str]:
    """Methods in ``order`` first, other methods sorted, then random init and oracle."""
    methods = [x for x in labels if x not in (RANDOM, ORACLE)]
    known = [x for x in order if x in methods]
    rest = sorted(x for x in methods if x not in known)
    return known + rest + [x for x in (RANDOM, ORACLE) if x in labels]


def runs_text(n: int) -> str:
    return f"{n} seed" if n == 1 else f"{n} seeds"


def draw_curve(ax: Axes, label: str, rows: list[dict[str, Any]], color: str) -> None:
    """A method (or random init) curve: line with markers and its shaded 95% band."""
    steps = [r["step"] for r in rows]
    means = [r["mean"] for r in rows]
    lo, hi = [r["ci95"][0] for r in rows], [r["ci95"][1] for r in rows]
    style = {"linestyle": "--", "marker": "^"} if label == RANDOM else {"marker": "o"}
    ax.plot(steps, means, color=color, label=f"{label} ({runs_text(rows[0]['runs'])})",
            markersize=4, **style)
    ax.fill_between(steps, lo, hi, color=color, alpha=0.2, linewidth=0)


def draw_oracle(ax: Axes, rows: list[dict[str, Any]], x_max: int) -> None:
    """The oracle's step-0 return as a horizontal red line with a light band."""
    first = rows[0]
    ax.hlines(first["mean"], 0, x_max, colors="red",
              label=f"{ORACLE} ({runs_text(first['runs'])})")
    ax.fill_between([0, x_max], [first["ci95"][0]] * 2, [first["ci95"][1]] * 2,
                    color="red", alpha=0.1, linewidth=0)


def setting_text(groups: dict[str, list[dict]]) -> str:
    """Each distinct dynamics and horizon of the evaluations, e.g. 'maml dynamics, 200
    steps × 0.01 s = 2 s'."""
    texts = sorted({describe_horizon(e) for group in groups.values() for e in group} - {""})
    return "; ".join(texts)


def success_curves(groups: dict[str, list[dict]], labels: list[str]
                   ) -> dict[str, list[dict]] | None:
    """Per label the success rate after 0..K steps combined over seeds, where every
    evaluation has one (``success_by_step``: Meta-World); None otherwise."""
    if not all("success_by_step" in e for group in groups.values() for e in group):
        return None
    return {label: combine_seeds([{**e, "by_step": e["success_by_step"]}
                                  for e in groups[label]]) for label in labels}


def plot(curves: dict[str, list[dict]], labels: list[str], out: Path, title: str | None,
         success: dict[str, list[dict]] | None = None) -> None:
    """Draw every curve into one figure (a second panel for ``success`` rates) and save
    it to ``out``."""
    plt = pyplot()

    fig, axes = plt.subplots(1, 1 + (success is not None), squeeze=False,
                             figsize=(6 + 5 * (success is not None), 4.2))
    _panel(axes[0][0], curves, labels, "average return")
    if success is not None:
        _panel(axes[0][1], success, labels, "success rate")
    if title:
        fig.suptitle(title, fontsize="medium")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=150)
    plt.close(fig)


def _panel(ax: Axes, curves: dict[str, list[dict]], labels: list[str], ylabel: str) -> None:
    """One measure's curves (and the oracle's line) against gradient steps."""
    from matplotlib.ticker import MaxNLocator

    others = [lab for lab in labels if lab != ORACLE]
    x_max = max((curves[lab][-1]["step"] for lab in others), default=0)
    if not others:
        x_max = curves[ORACLE][-1]["step"]
    colors = iter(PALETTE * (len(labels) // len(PALETTE) + 1))
    for label in others:
        draw_curve(ax, label, curves[label], "black" if label == RANDOM else next(colors))
    if ORACLE in curves:
        draw_oracle(ax, curves[ORACLE], max(x_max, 1))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("number of gradient steps")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)


def write_csv(curves: dict[str, list[dict]], labels: list[str], path: Path) -> None:
    """One row per curve and step: label, step, mean, ci95_low, ci95_high, runs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_HEADER)
        for label in labels:
            for r in curves[label]:
                writer.writerow([label, r["step"], r["mean"], r["ci95"][0], r["ci95"][1],
                                 r["runs"]])


def add_args(p: argparse.ArgumentParser) -> None:
    """The flags of ``rkmeta-rl plot adaptation`` and ``scripts/plot_adaptation.py``."""
    p.add_argument("evals", nargs="+", metavar="EVAL_JSON",
                   help="eval JSON files, or directories holding eval*.json")
    p.add_argument("--out", required=True, type=Path, help="figure file (e.g. fig5.png)")
    p.add_argument("--csv", type=Path, help="data file [--out with suffix .csv]")
    p.add_argument("--title", help="figure title")
    p.add_argument("--order", default="", help="method order, e.g. euler,midpoint,heun")


def draw(p: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Draw the evaluations of ``args.evals`` to ``--out`` and write the CSV; bad input
    ends through ``p`` (exit 2)."""
    groups = load_groups(eval_files(args.evals, p), p)
    warn_mismatches(groups)
    order = [x.strip() for x in args.order.split(",") if x.strip()]
    labels = ordered_labels(list(groups), order)
    curves = {label: combine_seeds(groups[label]) for label in labels}
    csv_path = args.csv or args.out.with_suffix(".csv")
    title = "\n".join(t for t in (args.title, setting_text(groups)) if t)
    success = success_curves(groups, labels)
    plot(curves, labels, args.out, title, success)
    write_csv(curves, labels, csv_path)
    if success is not None:
        write_csv(success, labels, csv_path.with_name(csv_path.stem + "-success.csv"))
    print(f"wrote {args.out} and {csv_path} ({', '.join(labels)})")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``scripts/plot_adaptation.py``: its own parser and error lines."""
    return script_main(__doc__, add_args, draw, argv)
