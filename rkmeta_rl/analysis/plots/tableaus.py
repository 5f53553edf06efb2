"""Figure 1 from the tableau data: each named tableau's stage points and slopes on a quadratic.

    rkmeta-rl plot tableaus --out docs/figures/tableaus.png

On the 1-D quadratic loss L(θ) = ½ a θ², one RK step of size h from θ: the stage points
θ_i = θ − h Σ_j q_ij k_j, the slope k_i at each, and the step's end θ − h Σ_i a_i k_i,
against the gradient flow's exact point θ e^{−ah} that the step approximates. Everything
comes from the ``Tableau`` objects of ``rkmeta_rl.methods`` (``get_tableau(name)``): the
stage points are built by the package's own ``rkmeta_rl.rk.stage_points``.

Why one dimension: there the loss is a curve and k_i is literally its slope at θ_i, drawn
as a tangent segment; on an isotropic 2-D bowl every point would still lie on one line
through the minimum, and an anisotropic one needs contours and arrows to say as much.

k_i is drawn as ∇L(θ_i), the classical RK slope and the package's ``--first-order`` k_i.
The exact mode's k_i is the total derivative dL(θ_i(θ))/dθ, which multiplies ∇L(θ_i) by
dθ_i/dθ (see docs/method.md, "The RK meta-gradient"); for every two-stage tableau the stage
points are the same in both modes.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from rkmeta_rl.analysis.plotting import pyplot
from rkmeta_rl.methods import get_tableau
from rkmeta_rl.rk import stage_points
from rkmeta_rl.run.arguments import fail
from rkmeta_rl.tableau import Tableau

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

HERE = Path(".")  # --out defaults into docs/figures/ of the current directory

ROWS = (("euler", "midpoint", "heun", "ralston", "itb"), ("rk3", "rk4"))
STAGE_POINTS = r"stage points $\theta_i$"  # line labels
STEP_END = r"step end $\theta - h \sum_i a_i k_i$"
FLOW = r"gradient flow $\theta e^{-ah}$"
COLOURS = ["tab:blue", "tab:orange", "tab:green", "tab:purple"]  # one per stage


@dataclass
class Step:
    """One RK step on the quadratic: stage points, slopes k_i and the end point."""

    tableau: Tableau
    points: list[float]
    slopes: list[float]
    end: float


def loss(curvature: float, theta: torch.Tensor) -> torch.Tensor:
    """L(θ) = ½ a θ²."""
    return 0.5 * curvature * theta.pow(2).sum()


def rk_step(tableau: Tableau, curvature: float, theta: float, h: float) -> Step:
    """The stage points of ``tableau`` from θ (``rk.stage_points``, first-order k_i), the
    gradient at each and the end point θ − h Σ a_i k_i."""
    start = {"theta": torch.tensor([theta], dtype=torch.float64)}
    points = stage_points(start, tableau, h, lambda i, p: loss(curvature, p["theta"]),
                          first_order=True, create_graph=False)
    xs = [float(p["theta"].detach()) for p in points]
    slopes = []
    for x in xs:
        at = torch.tensor([x], dtype=torch.float64, requires_grad=True)
        slopes.append(float(torch.autograd.grad(loss(curvature, at), at)[0]))
    end = theta - h * math.fsum(a * k for a, k in zip(tableau.a, slopes, strict=True))
    return Step(tableau, xs, slopes, end)


def draw_panel(ax: Axes, step: Step, curvature: float, theta: float, h: float) -> None:
    """The loss curve, θ, the stage points with their slope segments, the step's end, the
    gradient flow's exact point, and below the curve the step as arrows −h a_i k_i."""
    low = min(0.0, *step.points, step.end)
    margin = 0.15 * (theta - low)
    grid = np.linspace(low - margin, theta + margin, 200)
    top = 0.5 * curvature * max(abs(grid[0]), abs(grid[-1])) ** 2
    ax.plot(grid, 0.5 * curvature * grid**2, color="0.75", lw=1)
    half = 0.1 * (theta - low)
    for i, (x, k) in enumerate(zip(step.points, step.slopes, strict=True)):
        y, colour = 0.5 * curvature * x**2, COLOURS[i % len(COLOURS)]
        ax.plot([x - half, x + half], [y - k * half, y + k * half], color=colour, lw=2.5,
                alpha=0.8)
        ax.annotate(f"{i + 1}", (x, y), textcoords="offset points", xytext=(-6, 5),
                    fontsize=8, color=colour)
    ys = [0.5 * curvature * x**2 for x in step.points]
    ax.plot(step.points, ys, "o", color="black", ms=4, label=STAGE_POINTS, zorder=3)
    ax.plot([step.end], [0.5 * curvature * step.end**2], "*", color="tab:red", ms=11,
            label=STEP_END, zorder=3)
    ax.axvline(theta * math.exp(-curvature * h), color="tab:red", lw=0.8, ls=":",
               label=FLOW)
    ax.axvline(theta, color="0.3", lw=0.8, ls="--", label=r"$\theta$")
    x, level = theta, -0.1 * top
    for i, (a, k) in enumerate(zip(step.tableau.a, step.slopes, strict=True)):
        if a != 0.0:
            ax.annotate("", (x - h * a * k, level), (x, level), arrowprops=dict(
                arrowstyle="->", color=COLOURS[i % len(COLOURS)], lw=1.8))
            x, level = x - h * a * k, level - 0.06 * top
    a = ", ".join(f"{w:.3g}" for w in step.tableau.a)
    ax.set_title(f"{step.tableau.name} (order {step.tableau.order()})\na = ({a})",
                 fontsize=9)
    ax.set_xlim(grid[0], grid[-1])
    ax.set_ylim(level - 0.05 * top, 1.05 * top)
    ax.tick_params(labelsize=7)


def plot(curvature: float, theta: float, h: float) -> Figure:
    """Every tableau of ROWS, a row of panels per row."""
    plt = pyplot()
    width = max(len(row) for row in ROWS)
    fig, axes = plt.subplots(len(ROWS), width, figsize=(2.6 * width, 2.7 * len(ROWS)),
                             squeeze=False)
    for r, row in enumerate(ROWS):
        for c in range(width):
            ax = axes[r][c]
            if c >= len(row):
                ax.axis("off")
                continue
            draw_panel(ax, rk_step(get_tableau(row[c]), curvature, theta, h), curvature,
                       theta, h)
            ax.set_xlabel("θ", fontsize=8)
    handles, labels = axes[0][0].get_legend_handles_labels()
    axes[-1][-1].legend(handles, labels, loc="center", fontsize=8, frameon=False,
                        title="segments: slope k_i at θ_i\narrows: −h a_i k_i, stage by stage",
                        title_fontsize=8)
    fig.suptitle(f"One RK step of h = {h:g} on L(θ) = ½·{curvature:g}·θ² from θ = {theta:g}: "
                 "stage points θ_i = θ − h Σ_j q_ij k_j, slopes k_i = ∇L(θ_i) (coloured by "
                 "stage i)", fontsize=9)
    fig.tight_layout()
    return fig


def positive(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def add_args(p: argparse.ArgumentParser, repo: Path = HERE) -> None:
    """The flags of ``rkmeta-rl plot tableaus`` and ``scripts/plot_tableaus.py``
    (``--out`` defaults into ``repo``'s docs/)."""
    p.add_argument("--out", default=str(repo / "docs" / "figures" / "tableaus.png"))
    p.add_argument("--curvature", type=positive, default=1.0, help="a in L(θ) = ½ a θ²")
    p.add_argument("--theta", type=positive, default=1.0, help="the starting point θ")
    p.add_argument("--h", type=positive, default=0.8, help="the RK step size h")
    p.add_argument("--dpi", type=positive, default=90.0)


def draw(p: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Draw the figure to ``--out``; an ``--out`` without its folder ends through ``p``
    (exit 2)."""
    out = Path(args.out)
    if not out.parent.is_dir():
        fail(p, f"--out {out}: the folder {out.parent} does not exist")
    fig = plot(args.curvature, args.theta, args.h)
    fig.savefig(out, dpi=args.dpi)
    pyplot().close(fig)
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None, repo: Path | None = None) -> int:
    """``scripts/plot_tableaus.py``: its own parser and error lines; ``--out`` defaults into
    ``repo``'s docs/ [the current directory's]."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_args(p, HERE if repo is None else repo)
    args = p.parse_args(argv)
    return draw(argparse.ArgumentParser(prog="plot_tableaus.py"), args)  # its error line, as before
