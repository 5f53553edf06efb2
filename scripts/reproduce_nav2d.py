r"""Reproduce the paper's 2D-navigation experiment (Figures 4 and 5) from scratch.

    python scripts/reproduce_nav2d.py                       # 5 methods × 3 seeds + oracles

Phases, each a list of ``rkmeta-rl`` / ``scripts/`` commands run as Ray tasks, ``--jobs``
at a time here or on a cluster with ``--ray-address`` (one CPU and one torch thread each;
docs/guides/ray.md):

1. train: every method and seed at the paper's setting (40 tasks × 20 episodes,
   α = 0.16, max KL 0.01, 100 meta-iterations), and one oracle per seed
   (``rkmeta-rl train-oracle``: the same policy on the goal-conditioned env);
2. evaluate: every run on the same 40 held-out goals, 40 episodes per step, 0-9
   gradient steps, plus each seed's random initialisation adapted the same way;
3. plot: Figure 5 (``plot_adaptation.py``, PNG + CSV) and Figure 4
   (``plot_trajectories.py``, the first seed's runs);
4. report: ``RESULTS_DIR/README.md`` with the table (mean ± 95% CI across seeds at 0, 1,
   2, 3 and 9 steps), the exact commands, and how long each phase took; each run's
   config, metrics and evaluations are copied next to it.

The other reading of the step size (docs/method.md, "Step sizes: the two readings"):
``--step-size H`` trains every method with one h, so each adapts with its own α = c2·h
(midpoint h/2, ralston 3h/4, heun h, itb 3h/2); ``--common-alpha A`` adds a control, every
run evaluated again with one α = A:

    python scripts/reproduce_nav2d.py --methods midpoint,ralston,heun,itb --step-size 0.32 \
        --common-alpha 0.16 --runs-dir runs/reproduce-nav2d-h --results-dir results/nav2d-h

A method ``NAME-fo`` trains tableau NAME with the first-order meta-gradient; ``--no-oracle``
leaves the oracles out, for a study that adds methods to runs that already have them (the
runs directory is shared, finished runs are kept):

    python scripts/reproduce_nav2d.py --methods midpoint,ralston,ralston-fo --step-size 0.32 \
        --runs-dir runs/reproduce-nav2d-h --results-dir results/nav2d-fo

Interrupted? Run the same command again: finished training runs are kept, a killed one
resumes from its last checkpoint, evaluations are recomputed (they are deterministic).

``--curvature-fraction`` defaults to 0.25 here: conjugate gradient sees the KL curvature
of 5 of each task's 20 episodes (the gradient, the KL bound and the line search use all
of them). It made 18 runs fit in about an hour on 2 cores, where the exact curvature took
about 2.5 hours before it was computed in closed form (docs/speed.md); see
results/nav2d-issue2.md for the comparison.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import shutil
import sys
from pathlib import Path

from rkmeta_rl.launch.grid import add_grid_args, check_grid_args, parallelism
from rkmeta_rl.launch.jobs import (
    Job,
    history_lines,
    phase_minutes,
    run_phases,
    timed_commands,
)
from rkmeta_rl.methods import get_tableau
from rkmeta_rl.rl.evaluate import (
    INITS,
    PROTOCOLS,
    EvalConfig,
    combine_seeds,
    format_row,
    label_of,
    read_eval,
)
from rkmeta_rl.run.arguments import run_script

REPO = Path(__file__).resolve().parent.parent

METHODS = "euler,midpoint,heun,ralston,itb"
FIRST_ORDER = "-fo"  # a method NAME-fo trains tableau NAME with --first-order
COMMON_ALPHA_FILES = ("eval-common-alpha.json", "eval-random-common-alpha.json")
TABLE_STEPS = (0, 1, 2, 3, 9)
MAML_PAPER = {  # Finn et al. (2017), Figure 5 numbers: mean return at 0/1/2/3 steps
    "MAML (midpoint)": (-40.4, -11.7, -3.3, -3.2),
    "pre-trained": (-40.8, -19.7, -11.7, -8.5),
    "random": (-82.7, -58.0, -53.8, -46.8),
    "oracle": (-2.3,),
}


def train_jobs(args: argparse.Namespace, runs: Path) -> tuple[list[Job], dict[str, Path]]:
    common = ["--curvature-fraction", str(args.curvature_fraction), "--no-progress",
              "--num-threads", "1", *args.train_extra]
    step = [] if args.step_size is None else ["--step-size", str(args.step_size)]
    jobs, dirs = [], {}
    for method in args.methods:  # longest (two-stage) first keeps both workers busy
        tableau = method.removesuffix(FIRST_ORDER)
        order = ["--first-order"] if tableau != method else []
        for seed in args.seeds:
            name = f"{method}-s{seed}"
            dirs[name] = runs / f"nav2d-{name}"
            jobs.append(Job(name, ["rkmeta-rl", "train", "--env", "nav2d", "--method", tableau,
                                   *order, "--seed", str(seed), "--out", str(dirs[name]),
                                   *step, *common], dirs[name]))
    jobs.sort(key=lambda j: j.name.startswith("euler"))
    for seed in args.seeds if args.oracle else []:
        name = f"oracle-s{seed}"
        dirs[name] = runs / f"nav2d-{name}"
        jobs.append(Job(name, ["rkmeta-rl", "train-oracle", "--env", "nav2d", "--seed",
                               str(seed), "--out", str(dirs[name]), *common], dirs[name]))
    return jobs, dirs


def eval_jobs(args: argparse.Namespace, dirs: dict[str, Path]) -> list[Job]:
    jobs = []
    for protocol in PROTOCOLS:
        common = ["--no-progress", *args.eval_extra]
        common += [] if protocol == "constant" else ["--protocol", protocol]
        tag = "" if protocol == "constant" else f"-{protocol}"
        jobs += [Job(name + tag, ["rkmeta-rl", "evaluate", str(d), *common])
                 for name, d in dirs.items()]
        for seed in args.seeds:  # every method of a seed starts from the same weights
            d = dirs[f"{args.methods[0]}-s{seed}"]
            jobs.append(Job(f"random-s{seed}{tag}", ["rkmeta-rl", "evaluate", str(d), "--init",
                                                     "random", *common]))
    if args.common_alpha is not None:  # the control: one α for every run
        common = ["--no-progress", "--alpha", str(args.common_alpha), *args.eval_extra]
        for name, d in dirs.items():
            jobs.append(Job(f"{name}-common-alpha", ["rkmeta-rl", "evaluate", str(d), *common,
                                                     "--out", str(d / COMMON_ALPHA_FILES[0])]))
        for seed in args.seeds:
            d = dirs[f"{args.methods[0]}-s{seed}"]
            jobs.append(Job(f"random-s{seed}-common-alpha", [
                "rkmeta-rl", "evaluate", str(d), "--init", "random", *common,
                "--out", str(d / COMMON_ALPHA_FILES[1])]))
    return jobs


def common_alpha_files(dirs: dict[str, Path], first: str) -> list[Path]:
    """Every evaluation file of the runs with the common α: the trained runs', and the
    random initialisations' of the ``first`` method's runs (where eval_jobs put them)."""
    trained, random = COMMON_ALPHA_FILES
    return _existing(dirs, first, trained, random)


def eval_files(dirs: dict[str, Path], protocol: str, first: str) -> list[Path]:
    """Every evaluation file of the runs under ``protocol``: the trained runs', and the
    random initialisations' of the ``first`` method's runs. Another study sharing the runs
    may have left random-init files in other runs, adapted with their method's α."""
    trained, random = (EvalConfig(init=init, protocol=protocol).default_filename()
                       for init in INITS)
    return _existing(dirs, first, trained, random)


def _existing(dirs: dict[str, Path], first: str, trained: str, random: str) -> list[Path]:
    paths = [d / trained for d in dirs.values()]
    paths += [d / random for name, d in dirs.items() if name.startswith(f"{first}-s")]
    return sorted(p for p in paths if p.exists())


def plot_jobs(args: argparse.Namespace, dirs: dict[str, Path], results: Path) -> list[Job]:
    jobs = []
    seed = args.seeds[0]
    shown = [str(dirs[f"{m}-s{seed}"]) for m in args.methods]
    for protocol in PROTOCOLS:
        tag = "" if protocol == "constant" else f"-{protocol}"
        steps = PROTOCOLS[protocol]
        jobs.append(Job(f"figure5{tag}", [
            "python", "scripts/plot_adaptation.py",
            *map(str, eval_files(dirs, protocol, args.methods[0])),
            "--order", ",".join(args.methods), "--out", str(results / f"figure5{tag}.png"),
            "--title", f"2D navigation, 40 held-out goals: {steps}"]))
        jobs.append(Job(f"figure4{tag}", [
            "python", "scripts/plot_trajectories.py", *shown, "--steps", "0,1,3",
            "--protocol", protocol, "--out", str(results / f"figure4{tag}.png")]))
    if args.common_alpha is not None:
        jobs.append(Job("figure5-common-alpha", [
            "python", "scripts/plot_adaptation.py",
            *map(str, common_alpha_files(dirs, args.methods[0])),
            "--order", ",".join(args.methods), "--out", str(results / "figure5-common-alpha.png"),
            "--title", f"2D navigation, 40 held-out goals: one α = {args.common_alpha}"]))
    jobs.append(Job("training", [
        "python", "scripts/plot_training.py",
        *(str(d) for name, d in dirs.items() if not name.startswith("oracle")),
        "--out", str(results / "training.png")]))
    return jobs


def table(files: list[Path], order: list[str]) -> str:
    groups: dict[str, list[dict]] = {}
    for path in files:
        e = read_eval(path)
        groups.setdefault(label_of(e), []).append(e)
    labels = [m for m in order if m in groups] + ["random init", "oracle"]
    steps = [k for k in TABLE_STEPS if all(len(e["by_step"]) > k for g in groups.values()
                                           for e in g if label_of(e) != "oracle")]
    head = "| method | runs | " + " | ".join(f"{k} steps" for k in steps) + " |"
    lines = [head, "|" + "---|" * (len(steps) + 2)]
    for label in labels:
        if label not in groups:
            continue
        rows = combine_seeds(groups[label])
        if label == "oracle":  # the ceiling: its return without adaptation
            cells = [format_row(rows[0])] + [""] * (len(steps) - 1)
        else:
            cells = [format_row(rows[k]) for k in steps]
        lines.append(f"| {label} | {rows[0]['runs']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def copy_provenance(dirs: dict[str, Path], results: Path) -> None:
    for d in dirs.values():
        dest = results / "runs" / d.name
        dest.mkdir(parents=True, exist_ok=True)
        for f in ["config.json", "metrics.jsonl", *(p.name for p in d.glob("eval*.json"))]:
            shutil.copy2(d / f, dest / f)


def common_alpha_section(args: argparse.Namespace, dirs: dict[str, Path]) -> list[str]:
    if args.common_alpha is None:
        return []
    return [f"## The control: every run evaluated with one α = {args.common_alpha}\n",
            table(common_alpha_files(dirs, args.methods[0]), args.methods) + "\n",
            "![Figure 5, one α](figure5-common-alpha.png)\n"]


def report(args, phases, history, dirs, results: Path, commands: dict[str, list[Job]]) -> None:
    reading = (", the family's default for every method" if args.step_size is None
               else f": α = c2·h with one h = {args.step_size}")
    ref = "\n".join(f"| {k} | " + " | ".join(f"{v:.1f}" for v in vals) + " |"
                    for k, vals in MAML_PAPER.items())
    sections = [
        "# 2D navigation: adaptation after meta-training (Figures 4 and 5)\n",
        "Made by `scripts/reproduce_nav2d.py`; do not edit by hand (rerun it).\n",
        f"Command: `python scripts/reproduce_nav2d.py {shlex.join(sys.argv[1:])}`".rstrip()
        + f"\n\nMethods {', '.join(args.methods)}; seeds {', '.join(map(str, args.seeds))}; "
        f"curvature fraction {args.curvature_fraction}; {parallelism(args)}, one torch "
        "thread each. Evaluation: the same held-out goals for every run, episodes sampled "
        "fresh at every step; ± is the 95% t-interval across seeds (across the tasks when "
        "a row has one run). The oracle row is its return without adaptation.\n",
        f"## Mean return after k gradient steps of α (each run's own α{reading})\n",
        table(eval_files(dirs, "constant", args.methods[0]), args.methods) + "\n",
        "![Figure 5](figure5.png)\n\n![Figure 4](figure4.png)\n",
        "## The same with MAML's test protocol: α for the first step, α/2 after\n",
        table(eval_files(dirs, "maml", args.methods[0]), args.methods) + "\n",
        "![Figure 5, MAML protocol](figure5-maml.png)\n\n"
        "![Figure 4, MAML protocol](figure4-maml.png)\n",
        *common_alpha_section(args, dirs),
        "Original MAML paper (Finn et al. 2017, 2D navigation, 40 tasks) for comparison:\n",
        "| method | 0 | 1 | 2 | 3 |\n|---|---|---|---|---|\n" + ref + "\n",
        "Meta-training (return on the meta-batch before and after one step of α, trailing "
        "mean of 5 iterations, band across seeds):\n\n![training](training.png)\n",
        "## Time on this machine\n",
        "This invocation:\n",
        phase_minutes(phases),
        "Every invocation on these run directories (training resumes where a previous "
        "one stopped, so the training time is spread over them):\n",
        history_lines(history) + "\n",
        "## Commands, as run\n",
    ]
    sections.append("After each training command: the seconds its meta-iterations took (from "
                    "metrics.jsonl, whichever invocation ran them); after the others: wall "
                    "seconds in this invocation.\n")
    sections += timed_commands(commands)
    (results / "README.md").write_text("\n".join(sections))
    (results / "timing.json").write_text(json.dumps(
        {"phases_seconds": phases, "jobs_seconds": {f"{p}/{j.name}": j.seconds
                                                    for p, js in commands.items() for j in js}},
        indent=1) + "\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default=METHODS,
                   help="comma-separated tableau names; NAME-fo: tableau NAME, first order")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    add_grid_args(p)
    p.add_argument("--curvature-fraction", type=float, default=0.25,
                   help="1 is the exact TRPO curvature")
    p.add_argument("--step-size", type=float, default=None,
                   help="one h for every method, each adapting with α = c2·h [one α]")
    p.add_argument("--common-alpha", type=float, default=None,
                   help="also evaluate every run with this one α (a control)")
    p.add_argument("--no-oracle", dest="oracle", action="store_false",
                   help="train and show no oracle (another study of the runs has them)")
    p.add_argument("--runs-dir", default="runs/reproduce-nav2d", help="training runs")
    p.add_argument("--results-dir", default="results/nav2d", help="figures, table, copies")
    p.add_argument("--train-extra", default="", help="extra train flags, e.g. '--meta-iters 5'")
    p.add_argument("--eval-extra", default="", help="extra evaluate flags, e.g. '--tasks 5'")
    p.add_argument("--poll", type=float, default=60.0, help="seconds between status lines")
    args = p.parse_args(argv)
    args.methods = [m for m in args.methods.split(",") if m]
    try:
        args.seeds = [int(s) for s in args.seeds.split(",") if s]
    except ValueError:
        p.error(f"--seeds must be integers like 0,1,2, got {args.seeds!r}")
    if not args.methods or not args.seeds:
        p.error("--methods and --seeds need at least one entry each")
    for flag in ("step_size", "common_alpha"):
        value = getattr(args, flag)
        if value is not None and not (math.isfinite(value) and value > 0):
            p.error(f"--{flag.replace('_', '-')} must be a finite number > 0, got {value}")
    args.train_extra, args.eval_extra = shlex.split(args.train_extra), shlex.split(args.eval_extra)
    check_grid_args(p, args)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for m in args.methods:
        get_tableau(m.removesuffix(FIRST_ORDER))  # unknown: fails before any training
    runs, results = Path(args.runs_dir), Path(args.results_dir)
    for d in (runs, results, runs / "logs"):
        d.mkdir(parents=True, exist_ok=True)
    train, dirs = train_jobs(args, runs)
    commands: dict[str, list[Job]] = {"train": train, "evaluate": eval_jobs(args, dirs),
                                      "plot": []}
    phases, history = run_phases(  # the plots' file lists are known once the evaluations exist
        commands, runs, args, REPO, later={"plot": lambda: plot_jobs(args, dirs, results)})
    copy_provenance(dirs, results)
    report(args, phases, history, dirs, results, commands)
    print(f"wrote {results / 'README.md'} ({sum(phases.values()) / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    run_script(main)
