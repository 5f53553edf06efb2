"""Held-out return after 0..K adaptation steps at every snapshot of some training runs, and
at the snapshot that ``evaluate --checkpoint best`` picks: does training longer help every
step, and does keeping the best iteration (as MAML did) change the result?

    rkmeta-rl snapshots runs/reproduce-nav2d-h/nav2d-midpoint-s* \\
        --reference "MAML=-40.4,-11.7,-3.3,-3.2" --out results/nav2d-gap/snapshots

Each run needs snapshots (``rkmeta-rl train --snapshot-every N``, 10 by default). Every
snapshot, and the validation pick ``best``, is evaluated with ``rkmeta-rl evaluate
--checkpoint N`` on the same held-out tasks (``--protocol maml`` by default: α for the
first step, α/2 after), as Ray tasks on ``--jobs`` CPUs or a cluster. The evaluations go
to RUN/snapshot-evals/, named by protocol, steps and ``--eval-extra``, and are reused while
they are newer than the run's checkpoint (they are deterministic).

Runs are grouped by PARENT/NAME, their path without its ``-sSEED`` ending, so one call can
compare, say, two studies' midpoint runs. Written to OUT.md: per group, the mean ± 95%
t-interval across seeds at every snapshot, and the best pick with the iterations it
chose; to OUT.png: return after each step against the meta-iteration, one panel per step,
with the ``--reference`` figures as dashed lines.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shlex
from collections import defaultdict
from pathlib import Path

from rkmeta_rl.analysis.plotting import pyplot
from rkmeta_rl.launch.grid import Grid, add_grid_args, check_grid_args
from rkmeta_rl.launch.jobs import Job, run_jobs
from rkmeta_rl.rl.evaluate import PROTOCOLS, combine_seeds, format_row, read_eval
from rkmeta_rl.run.rundir import CHECKPOINT, snapshot_iterations

EVALS = "snapshot-evals"


def group_of(run_dir: Path) -> str:
    """PARENT/NAME of a run directory PARENT/NAME-sSEED: the seeds of one setting."""
    return f"{run_dir.parent.name}/{re.sub(r'-s[0-9]+$', '', run_dir.name)}"


def eval_path(run_dir: Path, args: argparse.Namespace, checkpoint: str) -> Path:
    """RUN/snapshot-evals/PROTOCOL-kSTEPS[-HASH of --eval-extra]-CHECKPOINT.json."""
    extra = " ".join(args.eval_extra)
    tag = f"-{hashlib.sha1(extra.encode()).hexdigest()[:8]}" if extra else ""
    return run_dir / EVALS / f"{args.protocol}-k{args.steps}{tag}-{checkpoint}.json"


def is_current(path: Path, run_dir: Path) -> bool:
    """An evaluation written after the run's last checkpoint (a run trained further
    since, or a new ``best``, needs a new one)."""
    last = run_dir / CHECKPOINT
    return path.exists() and (not last.exists() or path.stat().st_mtime >= last.stat().st_mtime)


def checkpoints(run_dir: Path, only: list[int] | None) -> list[str]:
    """The snapshots to evaluate (those in ``only``, when given), then the best pick."""
    its = [it for it in snapshot_iterations(run_dir) if only is None or it in only]
    return [str(it) for it in its] + ["best"]


def eval_jobs(args: argparse.Namespace) -> list[Job]:
    jobs = []
    for d in args.run_dirs:
        for ck in checkpoints(d, args.iterations):
            out = eval_path(d, args, ck)
            if is_current(out, d):
                continue
            jobs.append(Job(f"{d.name}-{ck}", [
                "rkmeta-rl", "evaluate", str(d), "--checkpoint", ck, "--protocol",
                args.protocol, "--steps", str(args.steps), "--no-progress", "--out", str(out),
                *args.eval_extra]))
    return jobs


def collect(args: argparse.Namespace) -> dict[str, dict[str, list[dict]]]:
    """{group: {checkpoint: [evaluation per run]}}."""
    table: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for d in args.run_dirs:
        for ck in checkpoints(d, args.iterations):
            table[group_of(d)][ck].append(read_eval(eval_path(d, args, ck)))
    return table


def report(args: argparse.Namespace, table: dict[str, dict[str, list[dict]]]) -> str:
    steps = range(args.steps + 1)
    head = "| iteration | runs | " + " | ".join(f"{k} steps" for k in steps) + " |"
    lines = [f"Held-out return after k steps ({PROTOCOLS[args.protocol]}), mean ± 95% "
             "t-interval across seeds, at each snapshot.", ""]
    for name, ref in args.reference.items():
        lines.append(f"Reference {name}: " + ", ".join(f"{v:g}" for v in ref))
    for group, by_ck in table.items():
        lines += ["", f"## {group}", "", head, "|" + "---|" * (len(steps) + 2)]
        for ck, evals in by_ck.items():
            rows = combine_seeds(evals)
            label = ck
            if ck == "best":
                picked = ", ".join(str(e["meta_iterations"]) for e in evals)
                label = f"best ({picked})"
            lines.append(f"| {label} | {len(evals)} | "
                         + " | ".join(format_row(rows[k]) for k in steps) + " |")
    return "\n".join(lines) + "\n"


def plot(args: argparse.Namespace, table: dict[str, dict[str, list[dict]]], out: Path) -> None:
    plt = pyplot()
    steps = list(range(1, args.steps + 1))
    fig, axes = plt.subplots(1, len(steps), figsize=(4 * len(steps), 3.4), squeeze=False)
    for ax, k in zip(axes[0], steps, strict=True):
        for group, by_ck in table.items():
            its = [ck for ck in by_ck if ck != "best"]
            rows = [combine_seeds(by_ck[ck])[k] for ck in its]
            x = [int(ck) for ck in its]
            ax.plot(x, [r["mean"] for r in rows], marker="o", label=group)
            ax.fill_between(x, [r["ci95"][0] for r in rows], [r["ci95"][1] for r in rows],
                            alpha=0.2)
        for name, ref in args.reference.items():
            if k < len(ref):
                ax.axhline(ref[k], ls="--", color="k", lw=1, label=name)
        ax.set(title=f"after {k} step{'s' * (k > 1)}", xlabel="meta-iteration",
               ylabel="held-out return")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def parse_reference(text: str) -> tuple[str, list[float]]:
    name, _, values = text.partition("=")
    try:
        return name, [float(v) for v in values.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--reference must look like NAME=v0,v1,..., got {text!r}") from None


def add_args(p: argparse.ArgumentParser) -> None:
    """The flags of ``rkmeta-rl snapshots`` and ``scripts/study_snapshots.py``."""
    p.add_argument("run_dirs", nargs="+", type=Path)
    p.add_argument("--protocol", default="maml", choices=list(PROTOCOLS))
    p.add_argument("--steps", type=int, default=3, help="adaptation steps evaluated")
    p.add_argument("--iterations", default=None,
                   help="comma-separated snapshot iterations to evaluate [all of them]")
    p.add_argument("--reference", type=parse_reference, action="append", default=[],
                   help="NAME=v0,v1,...: published returns after 0, 1, ... steps, drawn")
    p.add_argument("--eval-extra", default="", help="extra evaluate flags, e.g. '--tasks 5'")
    p.add_argument("--out", type=Path, required=True, help="OUT.md and OUT.png are written")
    p.add_argument("--poll", type=float, default=60.0, help="seconds between status lines")
    add_grid_args(p)


def check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse impossible flags and runs without snapshots (``p.error``); read
    ``--iterations``, ``--reference`` and ``--eval-extra``; check the grid's flags."""
    if args.steps < 1:
        p.error(f"--steps must be >= 1, got {args.steps}")
    if args.iterations is not None:
        try:
            args.iterations = [int(i) for i in args.iterations.split(",") if i]
        except ValueError:
            p.error(f"--iterations must be integers like 10,20, got {args.iterations!r}")
    have: set[int] = set()
    for d in args.run_dirs:
        its = snapshot_iterations(d)
        if not its:
            p.error(f"{d} has no snapshots (train with --snapshot-every N)")
        have.update(its)
    missing = [i for i in args.iterations or [] if i not in have]
    if missing:
        p.error(f"--iterations {','.join(map(str, missing))}: no run has a snapshot there; "
                f"they have {','.join(map(str, sorted(have)))}")
    args.reference = dict(args.reference)
    args.eval_extra = shlex.split(args.eval_extra)
    check_grid_args(p, args)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_args(p)
    args = p.parse_args(argv)
    check_args(p, args)
    return args


def study(args: argparse.Namespace, cwd: Path) -> int:
    """Evaluate what is missing (the commands run in ``cwd``), then write OUT.md and
    OUT.png and print the table."""
    pyplot()  # without matplotlib, fail before the evaluations
    jobs = eval_jobs(args)
    for d in args.run_dirs:
        (d / EVALS).mkdir(exist_ok=True)
    if jobs:
        logs = args.run_dirs[0].parent
        with Grid.from_args(args, logs) as grid:
            run_jobs("evaluate", jobs, grid, args.poll, cwd)
    table = collect(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    text = report(args, table)
    args.out.parent.joinpath(args.out.name + ".md").write_text(text)  # OUT may hold a dot
    plot(args, table, args.out.parent / (args.out.name + ".png"))
    print(text)
    return 0


def cmd_snapshots(p: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str]) -> int:
    """``rkmeta-rl snapshots``: the commands run in the current directory."""
    check_args(p, args)
    return study(args, Path.cwd())


def main(argv: list[str] | None = None, cwd: Path | None = None) -> int:
    """``scripts/study_snapshots.py``: the commands run in ``cwd`` [the current directory]."""
    return study(parse_args(argv), Path.cwd() if cwd is None else cwd)
