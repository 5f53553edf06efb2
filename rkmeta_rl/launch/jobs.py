"""Running a reproduction's commands on Ray: each a Ray task, with progress and timing.

Shared by the ``scripts/reproduce_*.py`` scripts. Every command (``rkmeta-rl ...`` or
``python scripts/...``, exactly as printed and as a user may type it by hand in the
repository) runs as a Ray task that asks for its CPUs and GPUs: one CPU by default
(``--cpus-per-job``), and ``--gpus-per-job`` (1) GPUs when the command has
``--device cuda``. The task starts the command as a process group of its own, its output
in ``RUNS/logs/PHASE-NAME.log``, and stops that group when the script tells it to
(:mod:`rkmeta_rl.launch.job_process`). Without ``--ray-address`` the script starts a local Ray
instance with ``--jobs`` CPUs; with it, the commands run on that cluster
(docs/guides/ray.md). The script follows the tasks with ``ray.wait`` and prints a
training job's latest metrics every ``--poll`` seconds. A failing command stops the others
and ends the script with its log's tail; Ctrl-C or SIGTERM stops the running commands,
and the same command run again resumes (each training command continues its run
directory).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rkmeta_rl.launch import job_process
from rkmeta_rl.launch.grid import Grid, Job, add_grid_args, check_grid_args
from rkmeta_rl.run import rundir


def last_record(run_dir: Path) -> dict | None:
    """The run's latest metrics record (a line being written is skipped), None before one."""
    records = rundir.read_metrics(run_dir, drop_torn_last_line=True)
    return records[-1] if records else None


def status_line(running: list[Job], done: int, total: int, t0: float, queued: int = 0) -> str:
    """Jobs done, seconds since ``t0``, and each running job's iteration and metric (a
    training) or name; then how many wait for their resources."""
    parts = []
    for job in running:
        rec = last_record(job.run_dir) if job.run_dir else None
        if rec is not None:
            value = rec.get(job.metric)
            shown = f"{job.metric} {value:.4g}" if isinstance(value, (int, float)) else ""
            parts.append(f"{job.name} it {rec['iter'] + 1} {shown}")
        else:
            parts.append(job.name)
    waiting = f" ({queued} waiting)" if queued else ""
    return f"  {done}/{total} done, {time.perf_counter() - t0:6.0f}s: " + "; ".join(parts) + waiting


def log_tail(job: Job, chars: int = 2000) -> str:
    try:
        return job.log.read_text(errors="replace")[-chars:]
    except OSError:
        return f"(no log at {job.log})"


def run_jobs(phase: str, jobs: list[Job], grid: Grid, poll: float, cwd: Path) -> float:
    """Run ``jobs`` as Ray tasks on ``grid`` in ``cwd``. If one fails, or on Ctrl-C or
    SIGTERM (exit code 128 + the signal), or any error here, the others are stopped
    before the script exits. Returns the phase's wall seconds."""
    refs: dict[Any, Job] = {}
    try:
        grid.connect()
        grid.check(jobs)
        t0 = time.perf_counter()
        print(f"== {phase}: {len(jobs)} commands on {grid.describe()}", flush=True)
        for job in jobs:
            job.log = grid.log_dir / f"{phase}-{job.name}.log"
            job.log.unlink(missing_ok=True)  # it appears when the command starts
            refs[grid.submit(job, cwd)] = job
        follow(refs, poll, t0)
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (Grid)
        signum = grid.signum or signal.SIGINT
        stop(grid, refs)
        print(f"stopped by {signal.Signals(signum).name}: the running commands were stopped "
              f"(logs in {grid.log_dir}); run the same command again to resume",
              file=sys.stderr, flush=True)
        raise SystemExit(128 + signum) from None
    except BaseException:  # a failed command (SystemExit) or an error of the script
        stop(grid, refs)
        raise
    return time.perf_counter() - t0


def follow(refs: dict[Any, Job], poll: float, t0: float) -> None:
    """Wait for every task, printing each one done and a status line every ``poll``
    seconds; exit at the first failure with the command and its log's tail."""
    import ray
    pending, done, total, last_status = dict(refs), 0, len(refs), t0
    while pending:
        timeout = max(0.0, last_status + poll - time.perf_counter())
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=timeout)
        for ref in ready:
            job = pending.pop(ref)
            failure = outcome(ref, job)
            done += 1
            if failure:
                raise SystemExit(f"{job.shell()} failed ({failure}):\n{log_tail(job)}")
            print(f"  done {job.name} in {job.seconds:.0f}s ({done}/{total})", flush=True)
        if pending and time.perf_counter() - last_status >= poll:
            last_status = time.perf_counter()
            running = [j for j in pending.values() if j.log.exists()]
            print(status_line(running, done, total, t0, len(pending) - len(running)), flush=True)


def outcome(ref: Any, job: Job) -> str:
    """What went wrong with the finished task: its command's exit code, or how the task
    failed; '' if nothing (the command's wall seconds go to ``job.seconds``)."""
    import ray
    try:
        code, job.seconds = ray.get(ref)
    except ray.exceptions.RayTaskError as e:  # run_command raised (no such directory, ...)
        return f"its Ray task raised {type(e.cause).__name__}: {e.cause}"
    except ray.exceptions.RayError as e:  # the worker died (out of memory, ...), ...
        return f"its Ray task: {type(e).__name__}: {str(e).strip().splitlines()[0]}"
    if code is None:  # told to stop: only after stop(), which ends the phase
        return "stopped"
    return "" if code == 0 else str(code)


def stop(grid: Grid, refs: dict[Any, Job], grace: float = job_process.GRACE + 10) -> None:
    """Stop the tasks (their commands with their process groups; queued ones do not start
    them) and wait up to ``grace`` seconds for them to end."""
    if not refs:
        return
    import ray
    grid.stop_tasks()
    ray.wait(list(refs), num_returns=len(refs), timeout=grace)


def record_phase(runs: Path, started: str, phase: str, seconds: float) -> list[dict]:
    """Append a finished phase to the runs' timing history (a resumed reproduction spent
    its training time in an earlier invocation); return the whole history."""
    path = runs / "timing-history.jsonl"
    with open(path, "a") as f:
        f.write(json.dumps({"invocation": started, "phase": phase, "seconds": seconds}) + "\n")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def history_lines(history: list[dict]) -> str:
    by_start: dict[str, list[str]] = {}
    for h in history:
        by_start.setdefault(h["invocation"], []).append(f"{h['phase']} {h['seconds'] / 60:.1f} min")
    return "\n".join(f"- started {k}: " + ", ".join(v) for k, v in by_start.items())


def job_seconds(job: Job) -> float:
    """A training job's meta-iteration seconds (it may have resumed); else its wall time."""
    if job.run_dir is None:
        return job.seconds
    return sum(r["seconds"] for r in rundir.read_metrics(job.run_dir))


def add_common_args(p: argparse.ArgumentParser, name: str) -> None:
    """The flags every supervised reproduction script shares (runs/, results/, Ray)."""
    add_grid_args(p)
    p.add_argument("--runs-dir", default=f"runs/reproduce-{name}", help="training runs")
    p.add_argument("--results-dir", default=f"results/{name}", help="table and copies")
    p.add_argument("--train-extra", default="", help="extra supervised flags")
    p.add_argument("--eval-extra", default="", help="extra supervised-evaluate flags")
    p.add_argument("--poll", type=float, default=60.0, help="seconds between status lines")


def finish_common_args(p: argparse.ArgumentParser, args: argparse.Namespace,
                       argv: list[str] | None) -> None:
    """Keep the command line for the report, split the extra flags, check the grid's
    flags (and that Ray is there)."""
    args.argv = list(argv if argv is not None else sys.argv[1:])
    args.train_extra, args.eval_extra = shlex.split(args.train_extra), shlex.split(args.eval_extra)
    check_grid_args(p, args)


def run_phases(commands: dict[str, list[Job]], runs: Path, args: argparse.Namespace,
               cwd: Path, later: dict[str, Callable[[], list[Job]]] | None = None
               ) -> tuple[dict[str, float], list[dict]]:
    """Run each phase's jobs in order on the grid of ``args`` (logs in RUNS/logs), a
    status line every ``args.poll`` seconds. ``later[phase]()``, called just before that
    phase runs, gives jobs known only once the earlier phases are done (e.g. a plot of the
    evaluations that exist); they are appended to ``commands[phase]``, so a report of
    ``commands`` lists them. Returns the wall seconds of each phase and the timing history
    of every invocation."""
    (runs / "logs").mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    phases: dict[str, float] = {}
    history: list[dict] = []
    with Grid.from_args(args, runs) as grid:
        for phase, jobs in commands.items():
            if later and phase in later:
                jobs.extend(later[phase]())
            phases[phase] = run_jobs(phase, jobs, grid, args.poll, cwd)
            history = record_phase(runs, started, phase, phases[phase])
    return phases, history


def copy_runs(train: list[Job], results: Path, root: Path | None = None) -> None:
    """Each training run's config, metrics and evaluations to RESULTS/runs/NAME/; the
    evaluations without their per-task lists (those stay in the run directory). Absolute
    paths in the config and evaluations (the data a run read, resolved when it started)
    are written relative to ``root`` (default: the current directory, the repository root
    the scripts run from), so that the results name no folder of the machine they ran on."""
    root = Path.cwd() if root is None else root
    for job in train:
        dest = results / "runs" / job.run_dir.name
        dest.mkdir(parents=True, exist_ok=True)
        config = _relative_paths(json.loads((job.run_dir / "config.json").read_text()), root)
        (dest / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
        shutil.copy2(job.run_dir / "metrics.jsonl", dest / "metrics.jsonl")
        for f in job.run_dir.glob("eval*.json"):
            summary = _relative_paths(_drop_per_task(json.loads(f.read_text())), root)
            (dest / f.name).write_text(json.dumps(summary, indent=1) + "\n")


def _relative_paths(value: Any, root: Path) -> Any:
    """``value`` with every string that is an absolute path made relative to ``root``."""
    if isinstance(value, dict):
        return {k: _relative_paths(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [_relative_paths(v, root) for v in value]
    if isinstance(value, str) and os.path.isabs(value):
        return os.path.relpath(value, root)
    return value


def _drop_per_task(value):
    if isinstance(value, dict):
        return {k: _drop_per_task(v) for k, v in value.items() if k != "per_task"}
    if isinstance(value, list):
        return [_drop_per_task(v) for v in value]
    return value


def command_line(script: str, argv: list[str]) -> str:
    """How a reproduction script was run, for its report: ``python scripts/NAME.py ARGS``."""
    return shlex.join(["python", f"scripts/{script}.py", *argv])


def timing_and_commands(phases: dict[str, float], history: list[dict],
                        commands: dict[str, list[Job]], extra: list[str] | None = None
                        ) -> list[str]:
    """A report's last lines: this invocation's phases, the ``extra`` lines, every
    invocation's phases (``history_lines``) and the commands, one a line in a code block."""
    return ["- phases of this invocation: " + ", ".join(
                f"{k} {v / 60:.1f} min" for k, v in phases.items()), *(extra or []),
            "- every invocation:", history_lines(history), "",
            "## Commands", "", "```", *(j.shell() for jobs in commands.values() for j in jobs),
            "```", ""]


def phase_minutes(phases: dict[str, float]) -> str:
    """Each phase's minutes and their total, a Markdown list."""
    return ("\n".join(f"- {p}: {s / 60:.1f} min" for p, s in phases.items())
            + f"\n- total: {sum(phases.values()) / 60:.1f} min\n")


def timed_commands(commands: dict[str, list[Job]]) -> list[str]:
    """A code block per phase: each command with its seconds (``job_seconds``)."""
    return [f"{phase}:\n\n```bash\n" + "\n".join(f"{j.shell()}   # {job_seconds(j):.0f}s"
                                                 for j in jobs) + "\n```\n"
            for phase, jobs in commands.items()]
