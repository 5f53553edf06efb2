"""Omniglot 1-shot classification on the real subsets at hand (paper Table 3, reduced).

    python scripts/reproduce_omniglot.py --data ../shared/data/omniglot

Trains midpoint (MAML) and ralston at 5-way 1-shot and 20-way 1-shot on the two
"background small" subsets (242 characters after removing the 50 they share; a seeded
74% of them, every rotation included, for training and the rest held out), then
evaluates every run on 600 tasks of held-out characters and, for the 20-way runs, on the
20 standard one-shot runs of ``all_runs.zip`` (characters of the evaluation alphabets,
never seen in training). Figure 3 (``plot_fewshot_steps.py``) draws each run's held-out
accuracy after 0..``--figure-steps`` adaptation steps.

The budget is far below the paper's (1200 training characters, meta-batch 32, 30,000 and
50,000 meta-iterations): on 2 CPU cores one exact second-order meta-iteration of 32 tasks
takes ~1.5 s at 5-way (1 adaptation step) and ~32 s at 20-way (5 adaptation steps). The
defaults here are meta-batch 16 × 1500 iterations (5-way) and 4 × 400 (20-way); the
architecture, step sizes and numbers of adaptation steps are the paper's.

Every command runs as a Ray task, ``--jobs`` at a time here or on a cluster with
``--ray-address`` (docs/guides/ray.md). Run it again after an interruption:
finished runs are kept, a stopped one resumes, evaluations are recomputed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rkmeta_rl.launch.jobs import (
    Job,
    add_common_args,
    command_line,
    copy_runs,
    finish_common_args,
    job_seconds,
    run_phases,
    timing_and_commands,
)
from rkmeta_rl.methods import get_tableau
from rkmeta_rl.run.arguments import run_script
from rkmeta_rl.supervised.omniglot import BACKGROUND_SMALL

REPO = Path(__file__).resolve().parent.parent

METHODS = ("midpoint", "ralston")
FIGURE_EVAL = "eval-steps.json"  # every run at 0..--figure-steps steps, for Figure 3
PAPER = {(5, "midpoint"): "98.26 ± 1.09", (5, "ralston"): "99.39 ± 0.65",
         (20, "midpoint"): "90.87 ± 1.51", (20, "ralston"): "94.91 ± 1.19"}


def settings(args) -> dict[int, list[str]]:
    return {5: ["--meta-batch-size", str(args.batch_5), "--meta-iters", str(args.iters_5),
                "--eval-every", str(max(args.iters_5 // 4, 1))],
            20: ["--meta-batch-size", str(args.batch_20), "--meta-iters", str(args.iters_20),
                 "--eval-every", str(max(args.iters_20 // 3, 1))]}


def train_jobs(args, runs: Path) -> list[Job]:
    data = [str(Path(args.data) / z) for z in BACKGROUND_SMALL]
    jobs = []
    for ways in (20, 5):  # the long ones first
        for method in args.methods:
            d = runs / f"{ways}way-{method}-s{args.seed}"
            jobs.append(Job(d.name, [
                "rkmeta-rl", "supervised", "--benchmark", "omniglot", "--ways", str(ways),
                "--shots", "1", "--method", method, "--data", *data, *settings(args)[ways],
                "--seed", str(args.seed), "--num-threads", "1", "--no-progress", "--out",
                str(d), *args.train_extra], d, metric="val_accuracy_post"))
    return jobs


def eval_jobs(args, train: list[Job]) -> list[Job]:
    """At the paper's test steps (eval.json, with the standard runs for 20-way), and at
    0..--figure-steps on the same held-out tasks for Figure 3 (FIGURE_EVAL)."""
    runs_zip = str(Path(args.data) / "all_runs.zip")
    jobs = []
    for job in train:
        base = ["rkmeta-rl", "supervised-evaluate", str(job.run_dir)]
        jobs.append(Job(job.name, [*base, *(["--runs", runs_zip] if job.name.startswith("20way")
                                           else []), *args.eval_extra]))
        jobs.append(Job(f"{job.name}-steps", [*base, "--steps", str(args.figure_steps),
                                              "--out", str(job.run_dir / FIGURE_EVAL),
                                              *args.eval_extra]))
    return jobs


def plot_jobs(args, train: list[Job], results: Path) -> list[Job]:
    """Figure 3: held-out accuracy against adaptation steps, a panel per setting."""
    return [Job("figure3", ["python", "scripts/plot_fewshot_steps.py",
                            *(str(job.run_dir / FIGURE_EVAL) for job in train),
                            "--out", str(results / "figure3.png")])]


def pct(summary: dict) -> str:
    lo, hi = summary["ci95"]
    return f"{100 * summary['mean']:.2f} ± {100 * (hi - lo) / 2:.2f}"


def report(args, train: list[Job], results: Path, phases, history, commands) -> None:
    lines = ["# Omniglot 1-shot on the real subsets here (reduced budget)", "",
             f"Command: `{command_line('reproduce_omniglot', args.argv)}`",
             "",
             __doc__.split("\n\n", 2)[2].strip(), "",
             "| setting | method | held-out tasks: acc. before adapting | after | "
             "20 standard runs (all_runs.zip) | paper (full setting) | train min |",
             "|---|---|---|---|---|---|---|"]
    for job in train:
        ways, method = int(job.name.split("way")[0]), job.name.split("-")[1]
        ev = json.loads((job.run_dir / "eval.json").read_text())
        steps = ev["by_step"]
        standard = pct(ev["one_shot_runs"]["accuracy"]) if "one_shot_runs" in ev else "-"
        lines.append(f"| {ways}-way 1-shot | {method} | {pct(steps[0]['accuracy'])} | "
                     f"{pct(steps[-1]['accuracy'])} ({len(steps) - 1} steps) | {standard} | "
                     f"{PAPER.get((ways, method), '')} | {job_seconds(job) / 60:.1f} |")
    lines += ["", f"± is the 95% t-interval over tasks ({ev['tasks']} held-out tasks; the 20 "
              "standard runs).", "",
              f"Figure 3: held-out accuracy after 0..{args.figure_steps} steps (the same tasks "
              "for every run; the paper's test steps are 3 at 5-way, 5 at 20-way).", "",
              "![Figure 3](figure3.png)", "",
              "## Time on this machine (2 cores, jobs sharing them)", "",
              *timing_and_commands(phases, history, commands)]
    (results / "README.md").write_text("\n".join(lines))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "omniglot"),
                   help="folder with the two background-small zips and all_runs.zip")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated tableaus")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-5", type=int, default=16, help="5-way meta-batch (paper 32)")
    p.add_argument("--iters-5", type=int, default=1500, help="5-way iterations (paper 30,000)")
    p.add_argument("--batch-20", type=int, default=4, help="20-way meta-batch (paper 32)")
    p.add_argument("--iters-20", type=int, default=400, help="20-way iterations (paper 50,000)")
    p.add_argument("--figure-steps", type=int, default=10,
                   help="Figure 3 shows accuracy after 0..N adaptation steps")
    add_common_args(p, "omniglot")
    args = p.parse_args(argv)
    finish_common_args(p, args, argv)
    args.methods = [m for m in args.methods.split(",") if m]
    if not args.methods:
        p.error("--methods needs at least one tableau")
    for m in args.methods:
        get_tableau(m)  # an unknown method fails here, before any training
    for name in ("batch_5", "iters_5", "batch_20", "iters_20", "figure_steps"):
        if getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    missing = [z for z in (*BACKGROUND_SMALL, "all_runs.zip") if not (Path(args.data) / z).exists()]
    if missing:
        p.error(f"--data {args.data}: expected {', '.join(missing)} there")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runs, results = Path(args.runs_dir), Path(args.results_dir)
    results.mkdir(parents=True, exist_ok=True)
    train = train_jobs(args, runs)
    commands = {"train": train, "evaluate": eval_jobs(args, train),
                "plot": plot_jobs(args, train, results)}
    phases, history = run_phases(commands, runs, args, REPO)
    copy_runs(train, results)
    report(args, train, results, phases, history, commands)
    print(f"wrote {results / 'README.md'}")
    return 0


if __name__ == "__main__":
    run_script(main)
