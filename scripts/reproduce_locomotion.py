"""MAML's locomotion experiment (HalfCheetah velocity and direction) with RK meta-updates.

    python scripts/reproduce_locomotion.py --envs halfcheetah-vel,halfcheetah-dir \\
        --methods midpoint,ralston,heun --seeds 0,1 --meta-iters 200 --dynamics maml

Phases, each a list of ``rkmeta-rl`` / ``scripts/`` commands run as Ray tasks, ``--jobs``
at a time here or on a cluster with ``--ray-address`` (one CPU and one torch thread each;
docs/guides/ray.md):

1. train: every env, method and seed at MAML's setting (40 tasks × the family's episodes,
   20 for HalfCheetah; α = 0.1, max KL 0.01, 2×100 ReLU, a 200-step horizon) under
   ``--dynamics`` (MAML's by default: 0.01 s HalfCheetah steps, so 2 s episodes), and one
   oracle per env and seed (``rkmeta-rl train-oracle``: the task in the observation);
2. evaluate: every run on the same 40 held-out tasks with MAML's test protocol (its
   ``test_maml_cheetah*.py``): 0-3 gradient steps, α for the first and α/2 after, each step
   on fresh episodes, as many as the family takes per task in training (HalfCheetah 20:
   MAML's 4000 steps of 200-step episodes; ant-dir 40); plus each seed's random
   initialisation adapted the same way;
3. plot: per env, Figure 5 (``plot_adaptation.py``: the methods, random init, and the
   oracle as the ceiling) and the training curves (``plot_training.py``);
4. report: ``RESULTS_DIR/README.md`` with, per env, the mean return after 0-3 steps
   (± the 95% interval across seeds) beside MAML's published figures, the dynamics and
   horizon, the exact commands and how long each phase took.

Interrupted? Run the same command again: finished training runs are kept, a killed one
resumes from its last checkpoint, evaluations are recomputed (they are deterministic).
"""

from __future__ import annotations

import argparse
import json
import shlex
import time
from pathlib import Path

from envs.locomotion_tasks import SPECS
from rkmeta_rl.launch.grid import parallelism
from rkmeta_rl.launch.jobs import (
    Job,
    add_common_args,
    copy_runs,
    finish_common_args,
    history_lines,
    phase_minutes,
    run_phases,
    timed_commands,
)
from rkmeta_rl.methods import get_tableau
from rkmeta_rl.rl.config import TrainConfig, resolve
from rkmeta_rl.rl.evaluate import (
    combine_seeds,
    describe_horizon,
    format_row,
    label_of,
    read_eval,
)
from rkmeta_rl.rl.tasks import episodes_of
from rkmeta_rl.run.arguments import run_script

REPO = Path(__file__).resolve().parent.parent

ENVS = "halfcheetah-vel,halfcheetah-dir"
METHODS = "midpoint,ralston,heun"
STEPS = 3  # MAML's test: returns after 0..3 gradient steps
EVAL_TASKS = 40
EVAL_FILE = "eval-maml.json"  # rkmeta-rl evaluate --protocol maml
RANDOM_FILE = "eval-random-maml.json"
MAML_PUBLISHED = {  # MAML (Finn et al., 2017): before adaptation, after 1 step, oracle
    "halfcheetah-vel": (-129.5, -78.6, -54.5),
    "halfcheetah-dir": (-50.7, 293.2, 442.7),
}


def train_jobs(args: argparse.Namespace, runs: Path) -> tuple[list[Job], dict[str, Path]]:
    """Every (env, method, seed) run, the longest (multi-stage) first, then the oracles."""
    common = ["--dynamics", args.dynamics, "--meta-iters", str(args.meta_iters),
              "--curvature-fraction", str(args.curvature_fraction), "--num-threads", "1",
              "--no-progress", *args.train_extra]
    jobs, dirs = [], {}
    for method in args.methods:
        for env in args.envs:
            for seed in args.seeds:
                name = f"{env}-{method}-s{seed}"
                dirs[name] = runs / name
                jobs.append(Job(name, ["rkmeta-rl", "train", "--env", env, "--method", method,
                                       "--seed", str(seed), "--out", str(dirs[name]), *common],
                                dirs[name]))
    for env in args.envs:
        for seed in args.seeds:
            name = f"{env}-oracle-s{seed}"
            dirs[name] = runs / name
            jobs.append(Job(name, ["rkmeta-rl", "train-oracle", "--env", env, "--seed",
                                   str(seed), "--out", str(dirs[name]), *common], dirs[name]))
    return jobs, dirs


def eval_jobs(args: argparse.Namespace, dirs: dict[str, Path]) -> list[Job]:
    """MAML's test protocol for every run, and each seed's random initialisation."""
    jobs = []
    for env in args.envs:
        common = ["--protocol", "maml", "--steps", str(STEPS), "--tasks", str(EVAL_TASKS),
                  "--episodes", str(episodes_of(env, args.dynamics)), "--no-progress",
                  *args.eval_extra]
        runs = {name: d for name, d in dirs.items() if name.startswith(f"{env}-")}
        jobs += [Job(name, ["rkmeta-rl", "evaluate", str(d), *common])
                 for name, d in runs.items()]
        for seed in args.seeds:  # every method of a seed starts from the same weights
            d = dirs[f"{env}-{args.methods[0]}-s{seed}"]
            jobs.append(Job(f"{env}-random-s{seed}",
                            ["rkmeta-rl", "evaluate", str(d), "--init", "random", *common]))
    return jobs


def env_dirs(dirs: dict[str, Path], env: str, oracle: bool = True) -> list[Path]:
    return [d for name, d in dirs.items() if name.startswith(f"{env}-")
            and (oracle or "-oracle-" not in name)]


def plot_jobs(args: argparse.Namespace, dirs: dict[str, Path], results: Path) -> list[Job]:
    """Per env: Figure 5 from the runs' eval*.json files, and the training curves."""
    jobs = []
    for env in args.envs:
        jobs.append(Job(f"{env}-figure5", [
            "python", "scripts/plot_adaptation.py", *map(str, env_dirs(dirs, env)),
            "--order", ",".join(args.methods), "--out", str(results / f"{env}-figure5.png"),
            "--title", f"{env}, {EVAL_TASKS} held-out tasks: α, then α/2"]))
        jobs.append(Job(f"{env}-training", [
            "python", "scripts/plot_training.py", *map(str, env_dirs(dirs, env, False)),
            "--out", str(results / f"{env}-training.png"), "--title", env]))
    return jobs


def env_table(args: argparse.Namespace, dirs: dict[str, Path], env: str) -> tuple[str, str]:
    """The env's table (methods, random init, oracle, MAML's figures) and its setting."""
    groups: dict[str, list[dict]] = {}
    for d in env_dirs(dirs, env):
        for path in (d / EVAL_FILE, d / RANDOM_FILE):
            if path.exists():
                e = read_eval(path)
                groups.setdefault(label_of(e), []).append(e)
    head = "| method | runs | " + " | ".join(f"{k} steps" for k in range(STEPS + 1)) + " |"
    lines = [head, "|---|---|" + "---|" * (STEPS + 1)]
    for label in [m for m in args.methods if m in groups] + ["random init", "oracle"]:
        rows = combine_seeds(groups.get(label, []))[:1 if label == "oracle" else None]
        cells = [format_row(r) for r in rows] + [""] * (STEPS + 1 - len(rows))
        lines.append(f"| {label} | {len(groups[label])} | " + " | ".join(cells) + " |")
    published = MAML_PUBLISHED.get(env)
    if published is not None:
        before, after, oracle = published
        lines.append(f"| MAML (published) | | {before} | {after} | | |")
        lines.append(f"| oracle (published) | | {oracle} | | | |")
    first = next(iter(groups.values()))[0]
    return "\n".join(lines), describe_horizon(first)


def report(args, phases, history, dirs, results: Path, commands: dict[str, list[Job]]) -> None:
    cfg = resolve(TrainConfig(env=args.envs[0], dynamics=args.dynamics))
    sections = [
        "# Locomotion: adaptation after meta-training, beside MAML\n",
        "Made by `scripts/reproduce_locomotion.py`; do not edit by hand (rerun it).\n",
        f"Command: `python scripts/reproduce_locomotion.py {shlex.join(args.argv)}`".rstrip()
        + f"\n\nMethods {', '.join(args.methods)}; seeds {', '.join(map(str, args.seeds))}; "
        f"{args.meta_iters} meta-iterations of {cfg.meta_batch_size} tasks; α = {cfg.alpha}; "
        f"curvature fraction {args.curvature_fraction}; {parallelism(args)}, one "
        f"torch thread each. Evaluation: MAML's test protocol on {EVAL_TASKS} held-out "
        "tasks, the same for every run (α for the first step, α/2 after; fresh episodes at "
        "every step); ± is the 95% t-interval across seeds (across the tasks when a row has "
        "one run). The oracle row is its return without adaptation. MAML's figures are "
        "for its own dynamics on rllab's models and MuJoCo 1.31 (docs/guides/locomotion.md).\n",
    ]
    for env in args.envs:
        table, setting = env_table(args, dirs, env)
        sections += [f"## {env} ({setting})\n", table + "\n",
                     f"![{env}: Figure 5]({env}-figure5.png)\n\n"
                     f"![{env}: training]({env}-training.png)\n"]
    sections += [
        "## Time on this machine\n",
        phase_minutes(phases),
        "Every invocation on these run directories:\n", history_lines(history) + "\n",
        "## Commands, as run\n",
        "After each training command: the seconds its meta-iterations took (from "
        "metrics.jsonl, whichever invocation ran them); after the others: wall seconds.\n"]
    sections += timed_commands(commands)
    (results / "README.md").write_text("\n".join(sections))
    (results / "timing.json").write_text(json.dumps(
        {"finished": time.strftime("%Y-%m-%d %H:%M:%S"), "phases_seconds": phases},
        indent=1) + "\n")


def comma_list(p: argparse.ArgumentParser, flag: str, text: str) -> list[str]:
    items = [x for x in text.split(",") if x]
    if not items:
        p.error(f"{flag} needs at least one entry, got {text!r}")
    return items


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--envs", default=ENVS, help="comma-separated locomotion families")
    p.add_argument("--methods", default=METHODS, help="comma-separated tableau names")
    p.add_argument("--seeds", default="0,1", help="comma-separated training seeds")
    p.add_argument("--meta-iters", type=int, default=200, help="meta-iterations per run")
    p.add_argument("--dynamics", default="maml", help="gymnasium or maml")
    p.add_argument("--curvature-fraction", type=float, default=0.25,
                   help="share of episodes for the CG curvature (1: exact)")
    add_common_args(p, "locomotion")
    args = p.parse_args(argv)
    finish_common_args(p, args, argv)
    args.envs = comma_list(p, "--envs", args.envs)
    args.methods = comma_list(p, "--methods", args.methods)
    try:
        args.seeds = [int(s) for s in comma_list(p, "--seeds", args.seeds)]
    except ValueError:
        p.error(f"--seeds must be integers like 0,1, got {args.seeds!r}")
    return args


def check(args: argparse.Namespace) -> None:
    """Every method, env and the dynamics are valid (ValueError) before any training."""
    for m in args.methods:
        get_tableau(m)
    for env in args.envs:
        if env not in SPECS:  # the oracles are trained here, from their families
            raise ValueError(f"--envs: unknown locomotion family {env!r}; valid choices: "
                             f"{', '.join(SPECS)}")
        resolve(TrainConfig(env=env, dynamics=args.dynamics, meta_iters=args.meta_iters,
                            curvature_fraction=args.curvature_fraction))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check(args)
    runs, results = Path(args.runs_dir), Path(args.results_dir)
    results.mkdir(parents=True, exist_ok=True)
    train, dirs = train_jobs(args, runs)
    commands = {"train": train, "evaluate": eval_jobs(args, dirs),
                "plot": plot_jobs(args, dirs, results)}
    phases, history = run_phases(commands, runs, args, REPO)
    copy_runs(train, results)
    report(args, phases, history, dirs, results, commands)
    print(f"wrote {results / 'README.md'} ({sum(phases.values()) / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    run_script(main)
