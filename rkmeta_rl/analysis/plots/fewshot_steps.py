"""The paper's Figure 3: held-out accuracy (or loss) against the number of adaptation
steps, one curve per method, one panel per benchmark setting (e.g. Omniglot 5-way 1-shot).

    rkmeta-rl plot fewshot-steps results/omniglot/runs/* --out figure3.png
    rkmeta-rl plot fewshot-steps runs/a/eval.json runs/b/eval.json --metric loss

Each argument is an eval JSON written by ``rkmeta-rl supervised-evaluate``, or a run
directory whose ``eval.json`` is used. Evaluations are grouped by panel (benchmark, ways,
shots) and curve (the method, with ``-fo`` in first-order mode). A curve of several runs
(seeds) is their mean with a t-based 95% band across runs (``rkmeta_rl.stats.summarize``);
a single run keeps its band across tasks. The plotted numbers are also written as CSV
next to the figure. The default metric is accuracy for classification and the loss (MSE)
for the sinusoid.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

from rkmeta_rl.analysis.plotting import pyplot, script_main
from rkmeta_rl.run.arguments import fail
from rkmeta_rl.stats import summarize

METRICS = ("accuracy", "loss")
CSV_HEADER = ["panel", "method", "step", "mean", "ci95_low", "ci95_high", "runs"]


def read(paths: list[str], parser: argparse.ArgumentParser) -> list[dict[str, Any]]:
    """The evaluations named (files, or run directories' eval.json), checked."""
    out = []
    for raw in paths:
        path = Path(raw) / "eval.json" if Path(raw).is_dir() else Path(raw)
        try:
            evaluation = json.loads(path.read_text())
            evaluation["by_step"][0]["loss"]["mean"]
        except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
            fail(parser, f"{path}: not an eval JSON of supervised-evaluate ({e})")
        out.append(evaluation)
    return out


def panel_of(e: dict[str, Any]) -> str:
    if e.get("benchmark") == "sinusoid":
        return f"sinusoid, K = {e.get('shots', '?')}"
    return f"{e['benchmark']} {e['ways']}-way {e['shots']}-shot"


def curve(runs: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """Per step: mean and 95% interval, across runs when there are several."""
    steps = min(len(e["by_step"]) for e in runs)
    rows = []
    for k in range(steps):
        values = [e["by_step"][k][metric] for e in runs]
        if len(runs) > 1:
            s = summarize([v["mean"] for v in values])
            rows.append({"step": k, "mean": s["mean"], "ci95": s["ci95"], "runs": len(runs)})
        else:
            rows.append({"step": k, "mean": values[0]["mean"], "ci95": values[0]["ci95"],
                         "runs": 1})
    return rows


def add_args(p: argparse.ArgumentParser) -> None:
    """The flags of ``rkmeta-rl plot fewshot-steps`` and ``scripts/plot_fewshot_steps.py``."""
    p.add_argument("evals", nargs="+", help="eval JSON files or run directories")
    p.add_argument("--metric", choices=METRICS, default=None,
                   help="[accuracy; loss for the sinusoid]")
    p.add_argument("--out", default="figure3.png", help="PNG path (a CSV is written beside)")


def draw(p: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Draw the evaluations of ``args.evals`` to ``--out`` and write the CSV beside it; a
    file that is not an evaluation ends through ``p`` (exit 2)."""
    panels: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for e in read(args.evals, p):
        label = e["method"] + ("-fo" if e.get("first_order") else "")
        panels.setdefault(panel_of(e), {}).setdefault(label, []).append(e)
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8), squeeze=False)
    rows_out = []
    for ax, (panel, curves) in zip(axes[0], panels.items(), strict=True):
        metric = args.metric or ("loss" if panel.startswith("sinusoid") else "accuracy")
        for label, runs in curves.items():
            rows = curve(runs, metric)
            steps = [r["step"] for r in rows]
            ax.plot(steps, [r["mean"] for r in rows], marker="o", label=f"{label} ({len(runs)})")
            ax.fill_between(steps, [r["ci95"][0] for r in rows], [r["ci95"][1] for r in rows],
                            alpha=0.2)
            rows_out += [[panel, label, r["step"], r["mean"], *r["ci95"], r["runs"]]
                         for r in rows]
        ax.set(title=panel, xlabel="gradient steps at test",
               ylabel="held-out " + ("MSE" if metric == "loss" else "accuracy"))
        ax.legend(fontsize=8, title="method (runs)", title_fontsize=8)
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    with open(out.with_suffix(".csv"), "w", newline="") as f:
        csv.writer(f).writerows([CSV_HEADER, *rows_out])
    print(f"wrote {out} and {out.with_suffix('.csv')}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``scripts/plot_fewshot_steps.py``: its own parser and error lines."""
    return script_main(__doc__, add_args, draw, argv)
