"""A tableau per layer (the paper's "Extension to ANIL"): midpoint head, Ralston body.

    python scripts/study_layer_methods.py          # sinusoid and Omniglot 5-way 1-shot, 3 seeds

Three configurations, each trained with seeds 0, 1, 2 and evaluated on held-out tasks:

* ``midpoint``: ``--method midpoint`` for every parameter (MAML);
* ``ralston``: ``--method ralston`` for every parameter;
* ``split``: ``--layer-methods "HEAD=midpoint,*=ralston"``, HEAD being the output layer
  (the sinusoid MLP's ``layers.2``, the conv net's ``head``).

Benchmarks: the 10-shot sinusoid (the benchmark's settings, fewer meta-iterations;
600 held-out sinusoids, MSE after 0..10 steps) and Omniglot 5-way 1-shot on the two
"background small" subsets in ``--data`` (reduced meta-batch and meta-iterations; held-out
characters, accuracy after the benchmark's 3 test steps). Every run of a benchmark is
evaluated on the same held-out tasks.

Phases: train (``rkmeta-rl supervised``, as Ray tasks ``--jobs`` at a time, one thread
each, or on a cluster with ``--ray-address``: docs/guides/ray.md), evaluate
(``rkmeta-rl supervised-evaluate``), report (``RESULTS_DIR/README.md``: mean ± 95% CI across
seeds, paired seed-by-seed differences, the commands and the time taken). Run it again
after an interruption: finished runs are kept, a killed one resumes, evaluations are
recomputed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import time
from pathlib import Path

from rkmeta_rl.launch.grid import parallelism
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
from rkmeta_rl.stats import summarize
from rkmeta_rl.supervised.omniglot import BACKGROUND_SMALL

REPO = Path(__file__).resolve().parent.parent

BENCHMARKS = ("sinusoid", "omniglot")
CONFIGS = ("midpoint", "ralston", "split")
HEAD = {"sinusoid": "layers.2", "omniglot": "head"}  # each model's output layer
PAPER_BUDGET = {"sinusoid": "meta-batch 25 × 100,000 meta-iterations",
                "omniglot": "meta-batch 32 × 30,000 meta-iterations, 1200 training characters"}


def method_args(config: str, benchmark: str) -> list[str]:
    if config == "split":
        return ["--layer-methods", f"{HEAD[benchmark]}=midpoint,*=ralston"]
    return ["--method", config]


def describe(config: str, benchmark: str) -> str:
    if config == "split":
        return f"`{HEAD[benchmark]}` midpoint, the rest ralston"
    return f"{config} everywhere"


def run_dir(runs: Path, benchmark: str, config: str, seed: int) -> Path:
    return runs / f"{benchmark}-{config}-s{seed}"


def benchmark_args(args, benchmark: str) -> list[str]:
    if benchmark == "sinusoid":
        return ["--benchmark", "sinusoid", "--meta-iters", str(args.sinusoid_iters)]
    return ["--benchmark", "omniglot", "--ways", "5", "--shots", "1",
            "--data", *(str(Path(args.data) / z) for z in BACKGROUND_SMALL),
            "--meta-batch-size", str(args.omniglot_batch),
            "--meta-iters", str(args.omniglot_iters),
            "--eval-every", str(max(args.omniglot_iters // 4, 1))]


def train_jobs(args, runs: Path) -> list[Job]:
    jobs = []
    for benchmark in sorted(args.benchmarks, key=lambda b: b != "omniglot"):  # long ones first
        metric = "val_loss_post" if benchmark == "sinusoid" else "val_accuracy_post"
        for config in CONFIGS:
            for seed in args.seeds:
                d = run_dir(runs, benchmark, config, seed)
                jobs.append(Job(d.name, [
                    "rkmeta-rl", "supervised", *benchmark_args(args, benchmark),
                    *method_args(config, benchmark), "--seed", str(seed), "--num-threads", "1",
                    "--no-progress", "--out", str(d), *args.train_extra], d, metric=metric))
    return jobs


def eval_jobs(args, train: list[Job]) -> list[Job]:
    jobs = []
    for job in train:
        tasks = ["--tasks", str(args.omniglot_tasks)] if job.name.startswith("omniglot") else []
        jobs.append(Job(job.name, ["rkmeta-rl", "supervised-evaluate", str(job.run_dir), *tasks,
                                   *args.eval_extra]))
    return jobs


def evaluation(runs: Path, benchmark: str, config: str, seed: int) -> dict:
    return json.loads((run_dir(runs, benchmark, config, seed) / "eval.json").read_text())


def seed_values(args, runs: Path, benchmark: str, config: str, step: int, key: str
                ) -> list[float]:
    """Each seed's mean over the held-out tasks of ``key`` after ``step`` steps."""
    return [evaluation(runs, benchmark, config, s)["by_step"][step][key]["mean"]
            for s in args.seeds]


def across(values: list[float], scale: float = 1.0, digits: int = 3) -> str:
    """'mean ± 95% half-width' across seeds (t-interval of the seeds' means)."""
    if not all(math.isfinite(v) for v in values):
        return "diverged (" + " / ".join(f"{v:.3g}" for v in values) + ")"
    s = summarize(values)
    text = f"{scale * s['mean']:.{digits}f}"
    if len(values) > 1:
        text += f" ± {scale * (s['ci95'][1] - s['ci95'][0]) / 2:.{digits}f}"
    return text


def per_seed(values: list[float], scale: float = 1.0) -> str:
    return " / ".join(f"{scale * v:.3g}" for v in values)


def verdict(split: list[float], other: list[float], lower_is_better: bool,
            scale: float = 1.0, digits: int = 4) -> tuple[str, str]:
    """The paired seed-by-seed difference split − other ('mean ± half-width') and whether
    its 95% interval says the split is better, worse, or cannot tell."""
    diff = [a - b for a, b in zip(split, other, strict=True)]
    if len(diff) < 2 or not all(math.isfinite(d) for d in diff):
        return across(diff, scale, digits), "not testable (one seed or a divergence)"
    s = summarize(diff)
    lo, hi = s["ci95"]
    text = across(diff, scale, digits)
    if lo <= 0.0 <= hi:
        return text, "indistinguishable"
    better = hi < 0.0 if lower_is_better else lo > 0.0
    return text, "split better" if better else "split worse"


def best_mean(values: dict[str, list[float]], what: str, best, scale: float, digits: int
              ) -> str:
    """'the best WHAT is CONFIG's (a; others b, c)' over the configurations' seed means."""
    means = {c: scale * sum(v) / len(v) for c, v in values.items()}
    finite = {c: m for c, m in means.items() if math.isfinite(m)}
    if not finite:
        return f"every configuration diverged ({what})"
    winner = best(finite, key=finite.get)
    others = ", ".join(f"{c} {m:.{digits}f}" for c, m in means.items() if c != winner)
    return f"the best mean {what} is {winner}'s ({means[winner]:.{digits}f}; {others})"


def sinusoid_section(args, runs: Path) -> tuple[list[str], list[str], str]:
    ev = evaluation(runs, "sinusoid", CONFIGS[0], args.seeds[0])
    last = len(ev["by_step"]) - 1
    one = min(1, last)
    lines = [f"## Sinusoid: 10-shot regression, MSE on {ev['tasks']} held-out sinusoids", "",
             f"| configuration | methods | MSE, {one} step | MSE, {last} steps | {last} steps, per "
             f"seed | MSE before adapting |", "|---|---|---|---|---|---|"]
    values = {}
    for config in CONFIGS:
        values[config] = seed_values(args, runs, "sinusoid", config, last, "loss")
        lines.append(
            f"| {config} | {describe(config, 'sinusoid')} | "
            f"{across(seed_values(args, runs, 'sinusoid', config, one, 'loss'))} | "
            f"{across(values[config])} | {per_seed(values[config])} | "
            f"{across(seed_values(args, runs, 'sinusoid', config, 0, 'loss'))} |")
    lines += ["", f"Paired by seed (same seed, same held-out tasks), MSE after {last} steps:", "",
              "| difference | mean ± 95% CI across seeds | reading |", "|---|---|---|"]
    verdicts = []
    for other in ("midpoint", "ralston"):
        text, word = verdict(values["split"], values[other], lower_is_better=True)
        lines.append(f"| split − {other} | {text} | {word} |")
        verdicts.append(f"sinusoid vs {other}: {word}")
    return lines + [""], verdicts, best_mean(values, "sinusoid MSE", min, 1, 3)


def omniglot_section(args, runs: Path) -> tuple[list[str], list[str], str]:
    ev = evaluation(runs, "omniglot", CONFIGS[0], args.seeds[0])
    last = len(ev["by_step"]) - 1
    lines = [f"## Omniglot 5-way 1-shot: accuracy (%) on {ev['tasks']} held-out tasks", "",
             f"| configuration | methods | accuracy after {last} steps | after {last} steps, per "
             f"seed | query loss after {last} steps | accuracy before adapting |",
             "|---|---|---|---|---|---|"]
    values = {}
    for config in CONFIGS:
        values[config] = seed_values(args, runs, "omniglot", config, last, "accuracy")
        lines.append(
            f"| {config} | {describe(config, 'omniglot')} | {across(values[config], 100, 2)} | "
            f"{per_seed(values[config], 100)} | "
            f"{across(seed_values(args, runs, 'omniglot', config, last, 'loss'))} | "
            f"{across(seed_values(args, runs, 'omniglot', config, 0, 'accuracy'), 100, 2)} |")
    lines += ["", f"Paired by seed (same seed, same held-out tasks), accuracy after {last} steps:",
              "", "| difference | mean ± 95% CI across seeds (percentage points) | reading |",
              "|---|---|---|"]
    verdicts = []
    for other in ("midpoint", "ralston"):
        text, word = verdict(values["split"], values[other], lower_is_better=False,
                             scale=100, digits=2)
        lines.append(f"| split − {other} | {text} | {word} |")
        verdicts.append(f"Omniglot vs {other}: {word}")
    return lines + [""], verdicts, best_mean(values, "Omniglot accuracy (%)", max, 100, 2)


SECTIONS = {"sinusoid": sinusoid_section, "omniglot": omniglot_section}


def budget_lines(args, runs: Path) -> list[str]:
    """The settings the runs used (from a run's config.json), next to the paper's."""
    lines = []
    for benchmark in args.benchmarks:
        cfg = json.loads((run_dir(runs, benchmark, CONFIGS[0], args.seeds[0]) / "config.json"
                          ).read_text())
        if benchmark == "sinusoid":
            what = (f"- sinusoid: MLP {'-'.join(map(str, cfg['hidden']))} ReLU, K = "
                    f"{cfg['shots']} support and {cfg['queries']} query points")
        else:
            what = (f"- Omniglot {cfg['ways']}-way {cfg['shots']}-shot: conv net 4 × "
                    f"{cfg['filters']} filters, the characters of {' and '.join(BACKGROUND_SMALL)} "
                    f"split (--split-seed {cfg['split_seed']}) into training and held-out ones")
        lines.append(f"{what}; meta-batch {cfg['meta_batch_size']} × {cfg['meta_iters']} "
                     f"meta-iterations, α = {cfg['alpha']:g}, {cfg['inner_steps']} adaptation "
                     f"step(s) in training, {cfg['test_steps']} at test (the paper: "
                     f"{PAPER_BUDGET[benchmark]})")
    lines.append(f"- seeds {', '.join(map(str, args.seeds))}; Adam {cfg['meta_lr']:g}; every "
                 "setting not named here is the benchmark's default (`rkmeta-rl supervised "
                 "--help`)")
    if args.train_extra or args.eval_extra:
        lines.append(f"- extra flags: train `{shlex.join(args.train_extra)}`, evaluate "
                     f"`{shlex.join(args.eval_extra)}`")
    return lines


READING = (
    "Why differences may be small: under the default one-α reading (α fixed, h = α / c2 of "
    "each tableau) the second stage point is the same for midpoint (c2 = 1/2, h = 2α) and "
    "Ralston (c2 = 3/4, h = 4α/3): θ − α k1 in both. The test-time adaptation step is α for "
    "every parameter in all three configurations. The configurations differ only in the "
    "weights a that mix the two stage gradients into the meta-gradient, a = (0, 1) "
    "(midpoint: the MAML gradient k2) against a = (1/3, 2/3) (Ralston: a third of the "
    "pre-adaptation gradient k1 mixed in), per parameter group for the split; Adam then "
    "rescales each parameter's step.")


def reading(verdicts: list[str], bests: list[str], args) -> str:
    n = len(args.seeds)
    caveat = ("the reduced budgets (above) leave the runs short of the paper's; a difference "
              "found or missed here need not hold at full length.")
    points = "Point estimates: " + "; ".join(bests) + ". "
    if n < 2:
        return ("With one seed there is no interval across seeds, so this study cannot say "
                "whether the split is better or worse. " + points + caveat[0].upper() + caveat[1:])
    words = [v.split(": ", 1)[1] for v in verdicts]
    if all(w == "indistinguishable" for w in words):
        overall = ("At this budget the split is indistinguishable from both uniform methods "
                   f"on every benchmark here: each paired 95% interval across the {n} seeds "
                   "contains 0.")
    else:
        overall = (f"At this budget the paired 95% intervals across the {n} seeds say: "
                   + "; ".join(verdicts) + ".")
    return (f"{overall} {points}With {n} seeds the intervals are wide (t with {n - 1} "
            f"degree{'s' if n > 2 else ''} of freedom), so only a large effect would show, and "
            + caveat)


def report(args, runs: Path, results: Path, phases, history, commands) -> None:
    command = command_line("study_layer_methods", args.argv)
    lines = ["# A tableau per layer: midpoint head, Ralston body (ANIL extension)", "",
             f"Command: `{command}`", "", f"Written {time.strftime('%Y-%m-%d %H:%M')}.", "",
             "The paper's \"Extension to ANIL\" suggests midpoint for the head and Ralston for "
             "the body. Three configurations: `midpoint` and `ralston` (`--method`, every "
             "parameter) and `split` (`--layer-methods \"HEAD=midpoint,*=ralston\"`, HEAD "
             "being `layers.2` of the sinusoid MLP and `head` of the conv net). ± is the 95% "
             "t-interval across seeds of the seeds' means over the held-out tasks "
             "(`rkmeta_rl.stats.summarize`); every run of a benchmark sees the same held-out "
             "tasks. Runs with the same seed start from the same weights and draw the same "
             "training tasks, so the differences are also given paired by seed.", "",
             "Budgets:", "", *budget_lines(args, runs), ""]
    verdicts, bests = [], []
    for benchmark in BENCHMARKS:
        if benchmark in args.benchmarks:
            section, found, best = SECTIONS[benchmark](args, runs)
            lines += section
            verdicts += found
            bests.append(best)
    lines += ["## Reading", "", reading(verdicts, bests, args) + " " + READING, ""]
    train = commands["train"]
    total = sum(job_seconds(j) for j in train)
    per_config = {f"{b} {c}": sum(job_seconds(j) for j in train
                                  if j.name.startswith(f"{b}-{c}-"))
                  for b in args.benchmarks for c in CONFIGS}
    lines += [f"## Time on this machine ({os.cpu_count()} cores, {parallelism(args)})", "",
              f"- total training time: {total / 60:.1f} min (summed meta-iteration time of "
              f"the {len(train)} runs, {parallelism(args)})",
              "- per configuration (its seeds summed): " + ", ".join(
                  f"{k} {v / 60:.1f} min" for k, v in per_config.items()),
              *timing_and_commands(phases, history, commands)]
    (results / "README.md").write_text("\n".join(lines))


def positive(p, args, names: tuple[str, ...]) -> None:
    for name in names:
        if getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--benchmarks", default=",".join(BENCHMARKS), help="comma-separated")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    p.add_argument("--sinusoid-iters", type=int, default=20_000,
                   help="sinusoid meta-iterations (paper: 100,000)")
    p.add_argument("--omniglot-iters", type=int, default=300,
                   help="Omniglot meta-iterations (paper: 30,000)")
    p.add_argument("--omniglot-batch", type=int, default=8, help="Omniglot meta-batch (paper 32)")
    p.add_argument("--omniglot-tasks", type=int, default=200, help="Omniglot held-out tasks")
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "omniglot"),
                   help="folder with the two background-small zips")
    add_common_args(p, "layer-methods")
    p.set_defaults(runs_dir="runs/study-layer-methods")
    args = p.parse_args(argv)
    finish_common_args(p, args, argv)
    args.benchmarks = [b for b in args.benchmarks.split(",") if b]
    unknown = [b for b in args.benchmarks if b not in BENCHMARKS]
    if unknown or not args.benchmarks:
        p.error(f"--benchmarks: choose from {', '.join(BENCHMARKS)}, got {unknown or 'none'}")
    try:
        args.seeds = [int(s) for s in args.seeds.split(",") if s]
    except ValueError:
        p.error(f"--seeds must be integers like 0,1,2, got {args.seeds!r}")
    if not args.seeds:
        p.error("--seeds needs an entry")
    positive(p, args, ("sinusoid_iters", "omniglot_iters", "omniglot_batch", "omniglot_tasks"))
    if "omniglot" in args.benchmarks:
        missing = [z for z in BACKGROUND_SMALL if not (Path(args.data) / z).exists()]
        if missing:
            p.error(f"--data {args.data}: expected {', '.join(missing)} there")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runs, results = Path(args.runs_dir), Path(args.results_dir)
    results.mkdir(parents=True, exist_ok=True)
    train = train_jobs(args, runs)
    commands = {"train": train, "evaluate": eval_jobs(args, train)}
    phases, history = run_phases(commands, runs, args, REPO)
    copy_runs(train, results)
    report(args, runs, results, phases, history, commands)
    print(f"wrote {results / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
