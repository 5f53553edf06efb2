"""Sinusoid adaptation: trained runs' predictions after 0, 1 and 10 gradient steps.

    rkmeta-rl plot sinusoid-adaptation runs/sin-midpoint runs/sin-ralston \\
        --out docs/figures/sinusoid-adaptation.png

Each argument is a run directory of ``rkmeta-rl supervised --benchmark sinusoid``; each gets
a panel. Every run meets the same held-out task: task ``--task`` of the first chunk of
held-out tasks that ``rkmeta-rl supervised-evaluate`` draws with ``--seed`` (its default
seed by default), so the task pictured is one of those it scores. A panel shows
the true sinusoid, the K support points, and the model's prediction after each of
``--steps`` adaptation steps of the run's own α (the package's ``supervised.meta.adapt``,
as in evaluation), with the prediction's MSE against the truth over the input range.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from rkmeta_rl.analysis.plotting import pyplot
from rkmeta_rl.layer_methods import method_of
from rkmeta_rl.run.arguments import fail
from rkmeta_rl.supervised.evaluate import CHUNK, DEFAULT_TEST_SEED
from rkmeta_rl.supervised.meta import adapt
from rkmeta_rl.supervised.sinusoid import X_RANGE, RegressionBatch, sinusoid
from rkmeta_rl.supervised.trainer import load_supervised_run

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from rkmeta_rl.rk import Params
    from rkmeta_rl.supervised.benchmarks import Benchmark

HERE = Path(".")  # --out defaults into docs/figures/ of the current directory

DEFAULT_STEPS = "0,1,10"
GRID_POINTS = 200
STEP_COLOURS = ["tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown"]


def step_label(k: int) -> str:
    return f"after {k} step" + ("" if k == 1 else "s")


def parse_steps(text: str) -> list[int]:
    """'0,1,10' -> [0, 1, 10] (argparse type of --steps)."""
    try:
        steps = sorted({int(x) for x in text.split(",")})
    except ValueError:
        steps = []
    if not steps or steps[0] < 0:
        raise argparse.ArgumentTypeError(
            f"must be comma-separated step counts >= 0 like {DEFAULT_STEPS}, got {text!r}")
    return steps


def held_out_task(bench: Benchmark, seed: int, task: int) -> RegressionBatch:
    """Task ``task`` (0-based) of the first chunk of held-out tasks that evaluation draws
    with ``seed``."""
    batch = bench.test(CHUNK, torch.Generator().manual_seed(seed))
    pick = slice(task, task + 1)
    return RegressionBatch(batch.xs[pick], batch.ys[pick], batch.xq[pick], batch.yq[pick],
                           batch.amplitude[pick], batch.phase[pick])


def predictions(run_dir: Path, seed: int, task: int, steps: list[int], grid: torch.Tensor
                ) -> tuple[dict, RegressionBatch, dict[int, torch.Tensor]]:
    """The run's config (as a dict with its α), the held-out task, and the prediction on
    ``grid`` (G,) after each number of ``steps`` (ValueError for a run that is not a
    sinusoid run)."""
    cfg, bench, theta = load_supervised_run(run_dir)
    if cfg.benchmark != "sinusoid":
        raise ValueError(f"{run_dir} is a {cfg.benchmark} run; this figure needs sinusoid runs")
    alpha = method_of(cfg, theta)[2]
    batch = held_out_task(bench, seed, task)
    curves: dict[int, torch.Tensor] = {}

    def record(k: int, params: Params) -> None:
        if k in steps:
            with torch.no_grad():
                curves[k] = bench.model(params, grid.view(1, -1, 1)).view(-1)

    adapt(bench.model, theta, batch.xs, batch.ys, alpha, max(steps), on_step=record)
    info = {"method": cfg.method, "alpha": alpha, "iters": cfg.meta_iters, "shots": cfg.shots}
    return info, batch, curves


def draw_panel(ax: Axes, info: dict, batch: RegressionBatch, curves: dict[int, torch.Tensor],
               grid: torch.Tensor) -> None:
    truth = sinusoid(grid.view(1, -1, 1), batch.amplitude, batch.phase).view(-1)
    ax.plot(grid, truth, color="black", lw=2, label="truth")
    for n, (k, y) in enumerate(sorted(curves.items())):
        mse = float((y - truth).pow(2).mean())
        ax.plot(grid, y, color=STEP_COLOURS[n % len(STEP_COLOURS)], lw=1.5,
                ls="--" if k == 0 else "-", label=f"{step_label(k)} (MSE {mse:.3g})")
    ax.plot(batch.xs.view(-1), batch.ys.view(-1), "^", color="tab:red", ms=6,
            label=f"K = {batch.xs.shape[1]} support points")
    alpha = info["alpha"]
    alpha_text = f"{alpha:g}" if isinstance(alpha, float) else "per group"
    ax.set_title(f"{info['method']} (α = {alpha_text}, {info['iters']:,} meta-iterations)",
                 fontsize=10)
    ax.set_xlabel("x")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2,
              frameon=False)


def plot(runs: list[Path], seed: int, task: int, steps: list[int]) -> Figure:
    """One panel per run, every run on the same held-out task."""
    grid = torch.linspace(*X_RANGE, GRID_POINTS)
    loaded = [predictions(run, seed, task, steps, grid) for run in runs]
    shots = {info["shots"] for info, _, _ in loaded}
    if len(shots) > 1:
        raise ValueError(f"the runs differ in K (shots: {sorted(shots)}), so they would not "
                         "meet the same held-out task")
    plt = pyplot()
    fig, axes = plt.subplots(1, len(runs), figsize=(4.2 * len(runs), 4.4), squeeze=False,
                             sharey=True)
    for ax, (info, batch, curves) in zip(axes[0], loaded, strict=True):
        draw_panel(ax, info, batch, curves, grid)
    batch = loaded[0][1]
    fig.suptitle(f"Held-out sinusoid y = {float(batch.amplitude):.2f} sin(x + "
                 f"{float(batch.phase):.2f}) (task {task} of seed {seed})", fontsize=10)
    fig.tight_layout()
    return fig


def add_args(p: argparse.ArgumentParser, repo: Path = HERE) -> None:
    """The flags of ``rkmeta-rl plot sinusoid-adaptation`` and
    ``scripts/plot_sinusoid_adaptation.py`` (``--out`` defaults into ``repo``'s docs/)."""
    p.add_argument("runs", nargs="+", type=Path, help="sinusoid run directories")
    p.add_argument("--out", type=Path,
                   default=repo / "docs" / "figures" / "sinusoid-adaptation.png")
    p.add_argument("--seed", type=int, default=DEFAULT_TEST_SEED,
                   help="seed of the held-out task stream")
    p.add_argument("--task", type=int, default=0,
                   help=f"which of the first {CHUNK} held-out tasks (0-based)")
    p.add_argument("--steps", type=parse_steps, default=parse_steps(DEFAULT_STEPS),
                   help="adaptation steps to draw, comma-separated")
    p.add_argument("--dpi", type=int, default=90)


def check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse a task or seed out of range and an ``--out`` without its folder (exit 2)."""
    if not 0 <= args.task < CHUNK:
        p.error(f"--task must be in 0..{CHUNK - 1}, got {args.task}")
    if not 0 <= args.seed < 2**32:
        p.error(f"--seed must be in [0, 2**32), got {args.seed}")
    if not args.out.parent.is_dir():
        fail(p, f"--out {args.out}: the folder {args.out.parent} does not exist")


def draw(p: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Check the flags, draw the runs of ``args.runs`` to ``--out``; bad input ends
    through ``p`` (exit 2)."""
    check_args(p, args)
    try:
        fig = plot(args.runs, args.seed, args.task, args.steps)
    except ValueError as e:
        fail(p, str(e))
    fig.savefig(args.out, dpi=args.dpi)
    pyplot().close(fig)
    print(f"wrote {args.out}")
    return 0


def main(argv: list[str] | None = None, repo: Path | None = None) -> int:
    """``scripts/plot_sinusoid_adaptation.py``: its own parser and error lines; ``--out``
    defaults into ``repo``'s docs/ [the current directory's]."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_args(p, HERE if repo is None else repo)
    return draw(p, p.parse_args(argv))
