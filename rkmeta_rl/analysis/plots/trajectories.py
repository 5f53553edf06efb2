"""Figure 4: paths of the adapted policy toward one goal after 0, 1, ... gradient steps.

    rkmeta-rl plot trajectories runs/nav2d-ralston-s0 runs/nav2d-euler-s0 --out fig4.png

For each run directory (one panel each) the meta-trained policy is adapted to a single
2D-navigation goal with REINFORCE steps on ``--episodes`` sampled episodes, exactly as
``rkmeta-rl evaluate`` adapts (same step sizes and protocol). After each requested number
of steps the path of the adapted policy's MEAN action (no exploration noise) is drawn.
The goal is ``--goal X Y`` or else the first held-out evaluation goal.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from rkmeta_rl.analysis.plotting import pyplot, script_main
from rkmeta_rl.rl.adapt import adapt_to_tasks
from rkmeta_rl.rl.episodes import rollout
from rkmeta_rl.rl.evaluate import DEFAULT_EVAL_SEED, PROTOCOLS, held_out_tasks, step_sizes
from rkmeta_rl.rl.policy import GaussianMLPPolicy, Params
from rkmeta_rl.rl.tasks import FAMILIES, Nav2DFamily, TaskFamily, make_family
from rkmeta_rl.rl.trainer import load_run, run_alpha
from rkmeta_rl.run.arguments import fail

if TYPE_CHECKING:
    from rkmeta_rl.rl.config import TrainConfig


def adapted_params(policy: GaussianMLPPolicy, family: TaskFamily, task: dict, alphas: list[float],
                   episodes: int, seed: int, gamma: float = 0.99,
                   gae_lambda: float = 1.0) -> list[Params]:
    """Per-task (T=1) parameters after 0, 1, ..., len(alphas) REINFORCE steps (episodes
    from the streams of ``seed``, as ``rkmeta-rl evaluate``)."""
    history: list[Params] = []
    adapt_to_tasks(policy, family, [task], alphas, len(alphas), episodes, seed, gamma,
                   gae_lambda, on_step=lambda k, returns, params: history.append(params))
    return history


def mean_path(policy: GaussianMLPPolicy, params: Params, family: Nav2DFamily, task: dict
              ) -> np.ndarray:
    """Positions (n, 2) visited with the mean action, from the origin to the final one."""
    env = family.batched_env([task], 1, [0])  # nav2d starts at the origin: no draws
    batch = rollout(policy, params, env, family.action_low, family.action_high, None)
    valid = batch.mask[0, 0] > 0
    positions = torch.cat([batch.obs[0, 0, valid, :2], env.pos[0, 0].unsqueeze(0)])
    return positions.numpy().astype(np.float64)


def run_family(cfg: TrainConfig) -> Nav2DFamily:
    """The run's task family; only 2D navigation has positions to draw."""
    if cfg.env not in FAMILIES or FAMILIES[cfg.env].mujoco:
        planar = [name for name, entry in FAMILIES.items() if not entry.mujoco]
        raise ValueError(f"env {cfg.env!r} is not a 2D-navigation family "
                         f"(trajectories need one of {', '.join(planar)})")
    family = make_family(cfg.env, max_episode_steps=cfg.max_episode_steps)
    assert isinstance(family, Nav2DFamily)
    return family


def default_goal(env: str) -> np.ndarray:
    """The first held-out evaluation goal of family ``env``."""
    return np.asarray(held_out_tasks(make_family(env), 1, DEFAULT_EVAL_SEED)[0]["goal"])


def paths_of(cfg: TrainConfig, policy: GaussianMLPPolicy, goal: np.ndarray | list[float] | None,
             show_steps: list[int], episodes: int, seed: int, protocol: str
             ) -> dict[int, np.ndarray]:
    """{k: mean-action path (n, 2) after k steps} for a loaded run (``goal`` None: the
    first held-out evaluation goal)."""
    family = run_family(cfg)
    goal = default_goal(cfg.env) if goal is None else np.asarray(goal, dtype=np.float64)
    task = {"goal": goal}
    alphas = step_sizes(run_alpha(cfg, policy), max(show_steps), protocol)
    history = adapted_params(policy, family, task, alphas, episodes, seed, cfg.gamma,
                             cfg.gae_lambda)
    return {k: mean_path(policy, history[k], family, task) for k in sorted(set(show_steps))}


def adapted_paths(run_dir: str | Path, goal: np.ndarray | list[float] | None,
                  show_steps: list[int], episodes: int = 40, seed: int = DEFAULT_EVAL_SEED,
                  protocol: str = "constant") -> dict[int, np.ndarray]:
    """{k: mean-action path (n, 2) after k adaptation steps} for each k in ``show_steps``;
    ``goal`` None means the first held-out evaluation goal."""
    cfg, policy = load_run(run_dir)
    return paths_of(cfg, policy, goal, show_steps, episodes, seed, protocol)


def panel_title(cfg: TrainConfig) -> str:
    """The run's method (-fo when first-order; marked when goal-conditioned)."""
    title = cfg.method + ("-fo" if cfg.first_order else "")
    return title + (" (goal in obs)" if cfg.env == "nav2d-goal" else "")


def square_limits(points: np.ndarray, margin: float = 0.05) -> tuple[float, float, float, float]:
    """(x0, x1, y0, y1): one square window around every point."""
    lo, hi = points.min(0), points.max(0)
    centre, half = (lo + hi) / 2, float((hi - lo).max()) / 2 + margin
    return centre[0] - half, centre[0] + half, centre[1] - half, centre[1] + half


def plot(panels: list[tuple[str, dict[int, np.ndarray]]], goal: np.ndarray, out: Path,
         protocol: str) -> None:
    """One panel per run, paths coloured by step count, shared square limits."""
    plt = pyplot()
    ncols = min(len(panels), 5)
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 3.6 * nrows + 0.5),
                             squeeze=False)
    points = np.concatenate([p for _, paths in panels for p in paths.values()]
                            + [np.zeros((1, 2)), goal[None]])
    x0, x1, y0, y1 = square_limits(points)
    steps = sorted(panels[0][1])
    cmap = plt.get_cmap("viridis")
    colors = {k: cmap(0.85 * i / max(len(steps) - 1, 1)) for i, k in enumerate(steps)}
    for ax, (title, paths) in zip(axes.flat, panels, strict=False):
        for k, path in paths.items():
            ax.plot(path[:, 0], path[:, 1], color=colors[k], linewidth=1.5,
                    label=f"{k} step" + ("" if k == 1 else "s"))
        ax.plot(0, 0, "o", color="black", markersize=6, label="start")
        ax.plot(goal[0], goal[1], "*", color="red", markersize=14, label="goal")
        ax.set(title=title, xlim=(x0, x1), ylim=(y0, y1), aspect="equal")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize="small")
    fig.suptitle(f"Adapted paths to goal ({goal[0]:.2f}, {goal[1]:.2f}): mean action, "
                 f"{protocol} step sizes")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=150)
    plt.close(fig)


def step_list(text: str) -> list[int]:
    """'0,1,3' -> [0, 1, 3]: non-negative integers, at least one."""
    try:
        steps = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        steps = []
    if not steps or any(k < 0 for k in steps):
        raise argparse.ArgumentTypeError(f"must be non-negative integers like 0,1,3, got {text!r}")
    return sorted(set(steps))


def add_args(p: argparse.ArgumentParser) -> None:
    """The flags of ``rkmeta-rl plot trajectories`` and ``scripts/plot_trajectories.py``."""
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories made by train")
    p.add_argument("--out", required=True, type=Path, help="figure file (e.g. fig4.png)")
    p.add_argument("--goal", nargs=2, type=float, metavar=("X", "Y"),
                   help="goal position [the first held-out evaluation goal]")
    p.add_argument("--steps", type=step_list, default=[0, 1, 3], help="step counts, e.g. 0,1,3")
    p.add_argument("--episodes", type=int, default=40, help="episodes per adaptation step")
    p.add_argument("--seed", type=int, default=DEFAULT_EVAL_SEED, help="adaptation sampling")
    p.add_argument("--protocol", choices=list(PROTOCOLS), default="constant",
                   help="; ".join(f"{k}: {v}" for k, v in PROTOCOLS.items()))


def draw(p: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Check the flags, adapt each run of ``args.runs`` and draw its paths to ``--out``;
    bad input ends through ``p`` (exit 2)."""
    if args.episodes <= 0:
        fail(p, f"--episodes must be > 0, got {args.episodes}")
    if not 0 <= args.seed < 2**63:
        fail(p, f"--seed must be a non-negative integer, got {args.seed}")
    if args.goal is not None and not all(map(math.isfinite, args.goal)):
        fail(p, f"--goal must be finite, got {args.goal}")
    pyplot()  # without matplotlib, fail before adapting
    panels, goal = [], args.goal
    for run in args.runs:
        try:
            cfg, policy = load_run(run)
            run_family(cfg)
            goal = default_goal(cfg.env) if goal is None else np.asarray(goal, dtype=np.float64)
            paths = paths_of(cfg, policy, goal, args.steps, args.episodes, args.seed,
                             args.protocol)
        except (ValueError, FileNotFoundError) as e:
            fail(p, f"{run}: {e}")
        panels.append((panel_title(cfg), paths))
    plot(panels, np.asarray(goal, dtype=np.float64), args.out, args.protocol)
    print(f"wrote {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``scripts/plot_trajectories.py``: its own parser and error lines."""
    return script_main(__doc__, add_args, draw, argv)
