"""Each method against a baseline method, paired on the same seeds and held-out tasks.

    rkmeta-rl compare runs/reproduce-locomotion/halfcheetah-vel-* \\
        --eval-file eval-maml.json --baseline midpoint --steps 0,1,2,3

Reads one evaluation file per run directory (``rkmeta-rl evaluate``; the oracle and
random-init files are skipped), groups the runs by method (``label_of``) and pairs each
method's runs with the baseline's by training seed. Every run of one env is evaluated on
the same held-out tasks, so at each step the difference method − baseline is known per
seed and per task. Printed per method and step, as a Markdown table:

* the mean difference over the paired seeds;
* the 95% t-interval across seeds (the seeds are the independent repetitions: this is
  the interval a claim "A beats B" needs; with 2 seeds t has 1 degree of freedom and the
  interval is wide);
* the 95% t-interval across tasks of the per-task difference averaged over the seeds
  (how consistent the difference is over tasks for these trained policies; it leaves out
  the spread between seeds, so it is narrower and no substitute for the first);
* each seed's difference.

``--baseline-eval-file`` reads another evaluation for the baseline's runs only: e.g. each
method with one common α against the baseline with a smaller α.

An interval that excludes 0 is marked with a star. ``--out FILE`` also writes the table.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from rkmeta_rl.rl.evaluate import label_of, read_eval
from rkmeta_rl.stats import summarize


def load(run_dirs: list[Path], eval_file: str) -> dict[str, dict[int, dict]]:
    """{method: {training seed: evaluation}} of the runs that have ``eval_file``."""
    by_method: dict[str, dict[int, dict]] = defaultdict(dict)
    for d in run_dirs:
        path = d / eval_file
        if not path.exists():
            continue
        e = read_eval(path)
        label = label_of(e)
        if label in ("oracle", "random init"):
            continue
        seed = int(e["train_seed"])
        if seed in by_method[label]:
            raise ValueError(f"two runs of {label} with seed {seed} (one is {d})")
        by_method[label][seed] = e
    return by_method


def interval(values: np.ndarray) -> str:
    if values.size < 2:
        return "n/a"
    lo, hi = summarize(values)["ci95"]
    star = " *" if lo > 0 or hi < 0 else ""
    return f"[{lo:+.2f}, {hi:+.2f}]{star}"


def differences(method: dict[int, dict], base: dict[int, dict], step: int
                ) -> tuple[list[int], np.ndarray, np.ndarray]:
    """(paired seeds, per-seed differences, per-task differences averaged over seeds)."""
    seeds = sorted(set(method) & set(base))
    per_task = []
    for s in seeds:
        n = min(len(method[s]["by_step"]), len(base[s]["by_step"]))
        if not 0 <= step < n:
            raise ValueError(f"--steps {step}: the runs of seed {s} were evaluated after "
                             f"0..{n - 1} steps")
        a, b = method[s]["by_step"][step], base[s]["by_step"][step]
        if "per_task" not in a or "per_task" not in b:
            raise ValueError(f"seed {s}: an evaluation without per-task values (the copies "
                             "under results/ drop them): point at the run directories")
        if method[s]["tasks_drawn"] != base[s]["tasks_drawn"]:
            raise ValueError(f"seed {s}: the two runs were evaluated on different tasks")
        per_task.append(np.asarray(a["per_task"]) - np.asarray(b["per_task"]))
    per_task = np.asarray(per_task)  # (seeds, tasks)
    return seeds, per_task.mean(axis=1), per_task.mean(axis=0)


def table(by_method: dict[str, dict[int, dict]], baseline: str, steps: list[int]) -> str:
    if baseline not in by_method:
        raise ValueError(f"no runs of the baseline {baseline!r}; methods found: "
                         f"{', '.join(sorted(by_method)) or 'none'}")
    lines = ["| method − " + baseline + " | step | seeds | mean difference | 95% CI across "
             "seeds | 95% CI across tasks | per seed |", "|---|---|---|---|---|---|---|"]
    for label in sorted(m for m in by_method if m != baseline):
        for k in steps:
            seeds, per_seed, per_task = differences(by_method[label], by_method[baseline], k)
            if not seeds:
                continue
            each = " / ".join(f"{d:+.2f}" for d in per_seed)
            lines.append(f"| {label} | {k} | {len(seeds)} | {per_seed.mean():+.2f} | "
                         f"{interval(per_seed)} | {interval(per_task)} | {each} |")
    return "\n".join(lines)


def add_args(p: argparse.ArgumentParser) -> None:
    """The flags of ``rkmeta-rl compare`` and ``scripts/compare_methods.py``."""
    p.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR")
    p.add_argument("--eval-file", default="eval.json", help="the evaluation in each run")
    p.add_argument("--baseline", default="midpoint", help="the method the others are set against")
    p.add_argument("--baseline-eval-file", default=None,
                   help="the baseline's evaluation, when it differs (e.g. another --alpha) "
                        "[--eval-file]")
    p.add_argument("--steps", default="0,1,2,3", help="comma-separated adaptation steps")
    p.add_argument("--out", type=Path, help="also write the table here")


def missing_dirs(args: argparse.Namespace) -> str:
    """The RUN_DIRs that are no directory, comma-separated ('' when none)."""
    return ", ".join(str(d) for d in args.run_dirs if not d.is_dir())


def compare(args: argparse.Namespace) -> str:
    """The Markdown table of a command line; bad input raises ValueError."""
    try:
        steps = [int(s) for s in args.steps.split(",") if s]
        by_method = load(args.run_dirs, args.eval_file)
        if args.baseline_eval_file is not None:
            by_method[args.baseline] = load(args.run_dirs, args.baseline_eval_file).get(
                args.baseline, {})
            by_method = {m: runs for m, runs in by_method.items() if runs}
        return table(by_method, args.baseline, steps)
    except KeyError as e:  # an evaluation without a field it needs
        raise ValueError(str(e)) from e


def show(args: argparse.Namespace, text: str) -> int:
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return 0


def cmd_compare(args: argparse.Namespace, argv: list[str]) -> int:
    """``rkmeta-rl compare``: bad input is one line from ``rkmeta-rl`` (ValueError)."""
    missing = missing_dirs(args)
    if missing:
        raise ValueError(f"no such run directory: {missing}")
    return show(args, compare(args))


def main(argv: list[str] | None = None) -> int:
    """``scripts/compare_methods.py``: its own parser and error lines, as before."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_args(p)
    args = p.parse_args(argv)
    missing = missing_dirs(args)
    if missing:
        p.error(f"no such run directory: {missing}")
    try:
        text = compare(args)
    except ValueError as e:
        print(f"compare_methods.py: {e}", file=sys.stderr)
        return 2
    return show(args, text)
