"""Meta-training curves: return before and after adaptation against meta-iteration.

    rkmeta-rl plot training runs/nav2d-*-s* --out training.png

Each argument is a run directory. Runs are grouped by method (config.json); a group of
several seeds is drawn as the mean over seeds with a t-based 95% band across them. The
numbers are the training metrics (``return_pre``, ``return_post``: the meta-batch's mean
return with θ and after one step of α), smoothed over ``--window`` iterations, and are
written as CSV next to the figure. Where every run's env reports success (Meta-World:
``success_pre``, ``success_post``), a second row of panels shows the success rates. The
figure says each run's dynamics and horizon (in steps, and in simulated seconds for a MuJoCo
family).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from scipy import stats

from rkmeta_rl.analysis.plotting import pyplot, script_main
from rkmeta_rl.rl.evaluate import describe_horizon
from rkmeta_rl.rl.tasks import seconds_per_step
from rkmeta_rl.run import rundir
from rkmeta_rl.run.arguments import fail

CSV_HEADER = ["label", "curve", "iter", "mean", "ci95_low", "ci95_high", "runs"]


def load_groups(paths: list[str], parser: argparse.ArgumentParser
                ) -> tuple[dict[str, list[dict[str, np.ndarray]]], str]:
    """{label: [{"pre": (I,), "post": (I,)} per run]}, label = method (+ env if not nav2d),
    and the runs' distinct dynamics and horizons as text."""
    groups: dict[str, list[dict[str, np.ndarray]]] = {}
    settings: set[str] = set()
    for text in paths:
        try:
            cfg = rundir.read_config(Path(text))
            records = rundir.read_metrics(Path(text), drop_torn_last_line=True)
        except ValueError as e:
            fail(parser, str(e))
        if not records:
            fail(parser, f"{text}: no meta-iterations in metrics.jsonl yet")
        if not all(isinstance(cfg.get(k), str) for k in ("method", "env")) or any(
                f"return_{k}" not in r for r in records for k in ("pre", "post")):
            fail(parser, f"{text}: not an RL training run (its config.json needs 'method' and "
                         "'env', its metrics.jsonl 'return_pre' and 'return_post')")
        label = cfg["method"] + ("" if cfg["env"] == "nav2d" else f" ({cfg['env']})")
        curves = {k: np.array([np.nan if r[f"return_{k}"] is None else r[f"return_{k}"]
                               for r in records]) for k in ("pre", "post")}
        if all("success_pre" in r for r in records):
            curves.update({f"success_{k}": np.array([r[f"success_{k}"] for r in records],
                                                     dtype=float) for k in ("pre", "post")})
        groups.setdefault(label, []).append(curves)
        settings.add(describe_horizon(setting_of(cfg)))
    return groups, "; ".join(sorted(settings - {""}))


def setting_of(cfg: dict) -> dict:
    """A run's dynamics and horizon, with the seconds per step of its env (if it has one)."""
    dynamics = cfg.get("dynamics") or "gymnasium"  # written before the dynamics existed
    try:
        seconds = seconds_per_step(cfg["env"], dynamics)
    except ValueError:  # not a dynamics of this env: show the steps only
        seconds = None
    return {"dynamics": dynamics, "max_episode_steps": cfg.get("max_episode_steps"),
            "seconds_per_step": seconds}


def smooth(x: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over ``window`` iterations (over fewer at the start)."""
    c = np.concatenate([[0.0], np.cumsum(x)])
    i = np.arange(1, len(x) + 1)
    start = np.maximum(i - window, 0)
    return (c[i] - c[start]) / (i - start)


def band(curves: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over runs and the t-based 95% interval across them (zero width for one run)."""
    length = min(len(c) for c in curves)
    x = np.stack([c[:length] for c in curves])
    mean = x.mean(0)
    if len(curves) < 2:
        return mean, mean, mean
    half = stats.t.ppf(0.975, len(curves) - 1) * x.std(0, ddof=1) / np.sqrt(len(curves))
    return mean, mean - half, mean + half


def add_args(p: argparse.ArgumentParser) -> None:
    """The flags of ``rkmeta-rl plot training`` and ``scripts/plot_training.py``."""
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", required=True, type=Path, help="figure file")
    p.add_argument("--window", type=int, default=5, help="smoothing window (iterations)")
    p.add_argument("--title", help="figure title")


def draw(p: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Check ``--window``, draw the curves of ``args.runs`` to ``--out`` and write the
    CSV beside it; bad input ends through ``p`` (exit 2)."""
    if args.window <= 0:
        p.error(f"--window must be > 0, got {args.window}")
    groups, settings = load_groups(args.runs, p)
    plt = pyplot()
    success = all("success_pre" in run for runs in groups.values() for run in runs)
    fig, axes = plt.subplots(1 + success, 2, figsize=(11, 4 + 3.5 * success), sharey="row",
                             squeeze=False)
    rows = []
    measures = [("", "return", "mean return")] + [("success_", "success rate",
                                                   "success rate")] * success
    for ax_row, (prefix, what, ylabel) in zip(axes, measures, strict=True):
        for label in sorted(groups):
            for ax, key in zip(ax_row, ("pre", "post"), strict=True):
                rows += _draw_band(ax, label, groups[label], prefix + key, args.window)
        for ax, key in zip(ax_row, ("before adaptation", "after one gradient step"),
                           strict=True):
            ax.set(xlabel="meta-iteration", title=f"{what} {key}")
            ax.grid(alpha=0.3)
        ax_row[0].set_ylabel(f"{ylabel} (trailing mean of {args.window})")
    axes[0][1].legend(fontsize="small")
    title = "\n".join(t for t in (args.title, settings) if t)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=150)
    plt.close(fig)
    with args.out.with_suffix(".csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_HEADER)
        w.writerows(rows)
    print(f"wrote {args.out} and {args.out.with_suffix('.csv')}")
    return 0


def _draw_band(ax, label: str, runs: list[dict[str, np.ndarray]], key: str, window: int
               ) -> list[list]:
    """One group's smoothed curve ``key`` with its band across seeds; its CSV rows."""
    mean, lo, hi = band([smooth(run[key], window) for run in runs])
    it = np.arange(len(mean))
    n = len(runs)
    ax.plot(it, mean, label=f"{label} ({n} seed{'s' if n > 1 else ''})")
    ax.fill_between(it, lo, hi, alpha=0.2, linewidth=0)
    return [[label, key, i, m, a, b, n] for i, m, a, b in zip(it, mean, lo, hi, strict=True)]


def main(argv: list[str] | None = None) -> int:
    """``scripts/plot_training.py``: its own parser and error lines."""
    return script_main(__doc__, add_args, draw, argv)
