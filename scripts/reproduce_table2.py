"""Reproduce the paper's Table 2: 10-shot sinusoid MSE for euler, midpoint, heun, ralston, itb.

    python scripts/reproduce_table2.py                 # 5 methods × 3 seeds, both readings

Both step-size readings (docs/method.md) are run:

* ``alpha``: one adaptation step α = 0.01 for every method (h = α / c2);
* ``h``: one RK step h = 0.02 for every method (α = c2·h: midpoint 0.01, ralston 0.015,
  heun 0.02, itb 0.03; euler, which has no second stage, adapts with α = h).

Tableaus with c2 = 1/2 (midpoint, rk3, rk4) train identically under both readings (α = 0.01,
h = 0.02) and euler's training never uses α, so those runs are shared; only their test-time α
differs.

Phases: train (``rkmeta-rl supervised``, as Ray tasks ``--jobs`` at a time, one thread
each, or on a cluster with ``--ray-address``: docs/guides/ray.md), evaluate
(``rkmeta-rl supervised-evaluate``: 600 held-out sinusoids, the same for every run, MSE
after 0..10 steps), report (``RESULTS_DIR/README.md``: mean ± 95% CI across seeds next to
the paper's figures, the commands and the time each phase took). Run it again after an
interruption: finished runs are kept, a killed one resumes, evaluations are recomputed.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

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
from rkmeta_rl.stats import summarize

REPO = Path(__file__).resolve().parent.parent

METHODS = ("euler", "midpoint", "heun", "ralston", "itb")
PAPER = {"euler": "2.72 ± 0.17", "midpoint": "0.13 ± 0.04", "heun": "0.19 ± 0.05",
         "ralston": "0.12 ± 0.04", "itb": "0.18 ± 0.05"}
ALPHA, H = 0.01, 0.02
READINGS = {"alpha": f"α = {ALPHA} for every method (h = α / c2)",
            "h": f"h = {H} for every method (α = c2·h)"}


def trains_separately(reading: str, method: str) -> bool:
    """Whether the h reading trains differently from the α reading: not for euler (its
    training never uses α) nor for a tableau with c2 = 1/2 (midpoint, rk3, rk4: α = h/2 is
    the α reading's α)."""
    tab = get_tableau(method)
    return reading == "alpha" or (tab.stages > 1 and not math.isclose(tab.c[1] * H, ALPHA))


def test_alpha(reading: str, method: str) -> float:
    if reading == "alpha":
        return ALPHA
    tab = get_tableau(method)
    return H if tab.stages == 1 else tab.c[1] * H


def run_dir(runs: Path, reading: str, method: str, seed: int) -> Path:
    reading = reading if trains_separately(reading, method) else "alpha"
    return runs / f"{reading}-{method}-s{seed}"


def train_jobs(args, runs: Path) -> list[Job]:
    jobs = []
    for reading in READINGS:
        step = ["--inner-lr", str(ALPHA)] if reading == "alpha" else ["--step-size", str(H)]
        for method in args.methods:
            if not trains_separately(reading, method):
                continue
            for seed in args.seeds:
                d = run_dir(runs, reading, method, seed)
                jobs.append(Job(d.name, [
                    "rkmeta-rl", "supervised", "--benchmark", "sinusoid", "--method", method,
                    *step, "--meta-iters", str(args.meta_iters), "--seed", str(seed),
                    "--num-threads", "1", "--no-progress", "--out", str(d), *args.train_extra],
                    d, metric="val_loss_post"))
    return jobs


def eval_file(runs: Path, reading: str, method: str, seed: int) -> Path:
    return run_dir(runs, reading, method, seed) / f"eval-{reading}.json"


def eval_jobs(args, runs: Path) -> list[Job]:
    jobs = []
    for reading in READINGS:
        for method in args.methods:
            for seed in args.seeds:
                d = run_dir(runs, reading, method, seed)
                jobs.append(Job(f"{reading}-{method}-s{seed}", [
                    "rkmeta-rl", "supervised-evaluate", str(d), "--alpha",
                    str(test_alpha(reading, method)), "--out",
                    str(eval_file(runs, reading, method, seed)), *args.eval_extra]))
    return jobs


def across_seeds(files: list[Path], step: int) -> dict[str, str | float]:
    """The seeds' mean MSE after ``step`` steps as 'mean ± 95% half-width' (or how many
    tasks diverged), each seed's mean, the median task MSE (averaged over seeds) and the
    average per-run 95% half-width over tasks."""
    rows = [json.loads(f.read_text())["by_step"][step]["loss"] for f in files]
    per_task = [np.asarray(row["per_task"], dtype=float) for row in rows]
    diverged = sum(int((~np.isfinite(x)).sum()) for x in per_task)
    means = [row["mean"] for row in rows]
    if diverged:
        text = f"diverged ({diverged} of {sum(x.size for x in per_task)} tasks)"
    else:
        s = summarize(means)
        lo, hi = s["ci95"]
        text = f"{s['mean']:.3f} ± {(hi - lo) / 2:.3f}" if len(means) > 1 else f"{s['mean']:.3f}"
    medians = [np.median(np.where(np.isfinite(x), x, np.inf)) for x in per_task]
    return {"text": text, "per_seed": " / ".join(f"{m:.3g}" for m in means),
            "median": float(np.mean(medians)),
            "task_hw": float(np.mean([(r["ci95"][1] - r["ci95"][0]) / 2 for r in rows]))}


def report(args, runs: Path, results: Path, phases, history, commands) -> None:
    steps = json.loads(eval_file(runs, "alpha", args.methods[0], args.seeds[0]).read_text())
    last = len(steps["by_step"]) - 1
    cfg = json.loads((run_dir(runs, "alpha", args.methods[0], args.seeds[0]) / "config.json"
                      ).read_text())
    command = command_line("reproduce_table2", args.argv)
    lines = [
        "# Table 2: 10-shot sinusoid regression", "", f"Command: `{command}`", "",
        f"Settings: MLP {'-'.join(map(str, cfg['hidden']))} ReLU, K = {cfg['shots']} support "
        f"and {cfg['queries']} query points, meta-batch {cfg['meta_batch_size']}, Adam "
        f"{cfg['meta_lr']:g}, {cfg['inner_steps']} adaptation step in training, "
        f"{cfg['meta_iters']} meta-iterations (the paper: 100,000), seeds "
        f"{', '.join(map(str, args.seeds))}. Test: {steps['tasks']} held-out sinusoids (the "
        f"same for every run), MSE on {cfg['queries']} query points after 1 and {last} "
        f"gradient steps on the support points. ± is the 95% t-interval across seeds; the "
        "per-run column is the average 95% half-width over the tasks of one run.", "",
    ]
    for reading, text in READINGS.items():
        lines += [f"## Reading `{reading}`: {text}", "",
                  f"| method | α at test | MSE, 1 step | MSE, {last} steps | {last} steps, per "
                  f"seed | {last} steps, median task | per-run task CI ({last} steps) | paper |",
                  "|---|---|---|---|---|---|---|---|"]
        for m in args.methods:
            files = [eval_file(runs, reading, m, s) for s in args.seeds]
            one, many = across_seeds(files, min(1, last)), across_seeds(files, last)
            lines.append(f"| {m} | {test_alpha(reading, m):g} | {one['text']} | {many['text']} | "
                         f"{many['per_seed']} | {many['median']:.3f} | ± {many['task_hw']:.3f} | "
                         f"{PAPER.get(m, '')} |")
        lines.append("")
    seconds = {m: sum(job_seconds(j) for j in commands["train"] if j.name.split("-")[1] == m)
               for m in args.methods}
    lines += ["## Time on this machine (2 cores)", "", *timing_and_commands(
        phases, history, commands,
        extra=["- training seconds per method (all its runs, summed meta-iteration time): "
               + ", ".join(f"{m} {s:.0f}" for m, s in seconds.items())])]
    (results / "README.md").write_text("\n".join(lines))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated tableaus")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    p.add_argument("--meta-iters", type=int, default=40_000, help="per run (paper: 100,000)")
    add_common_args(p, "table2")
    args = p.parse_args(argv)
    finish_common_args(p, args, argv)
    args.methods = [m for m in args.methods.split(",") if m]
    try:
        args.seeds = [int(s) for s in args.seeds.split(",") if s]
    except ValueError:
        p.error(f"--seeds must be integers like 0,1,2, got {args.seeds!r}")
    if not args.methods or not args.seeds or args.meta_iters <= 0:
        p.error("--methods and --seeds need an entry; --meta-iters must be > 0")
    for m in args.methods:
        get_tableau(m)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runs, results = Path(args.runs_dir), Path(args.results_dir)
    results.mkdir(parents=True, exist_ok=True)
    commands = {"train": train_jobs(args, runs), "evaluate": eval_jobs(args, runs)}
    phases, history = run_phases(commands, runs, args, REPO)
    copy_runs(commands["train"], results)
    report(args, runs, results, phases, history, commands)
    print(f"wrote {results / 'README.md'}")
    return 0


if __name__ == "__main__":
    run_script(main)
