"""Running a reproduction's commands: a few at a time, with progress and timing.

Shared by the ``scripts/reproduce_*.py`` scripts. Each command is run as its own process
with one torch thread, from the directory ``cwd`` (the repository, for ``python scripts/...``
commands); a training job's latest metrics record is shown every ``poll`` seconds.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from rkmeta_rl import rundir


@dataclass
class Job:
    name: str
    argv: list[str]  # as a user types it (rkmeta-rl ... or python scripts/...)
    run_dir: Path | None = None  # a training run, for progress
    metric: str = "return_post"  # the metrics key its status line shows
    seconds: float = 0.0
    log: Path | None = None
    proc: subprocess.Popen | None = field(default=None, repr=False)

    def shell(self) -> str:
        return shlex.join(self.argv)


def executable(argv: list[str]) -> list[str]:
    """The argv to run: ``rkmeta-rl`` through this interpreter (no PATH dependence)."""
    if argv[0] == "rkmeta-rl":
        return [sys.executable, "-m", "rkmeta_rl.cli", *argv[1:]]
    if argv[0] == "python":
        return [sys.executable, *argv[1:]]
    return argv


def last_record(run_dir: Path) -> dict | None:
    """The run's latest metrics record (a line being written is skipped), None before one."""
    records = rundir.read_metrics(run_dir, drop_torn_last_line=True)
    return records[-1] if records else None


def status_line(running: list[Job], done: int, total: int, t0: float) -> str:
    parts = []
    for job in running:
        rec = last_record(job.run_dir) if job.run_dir else None
        if rec is not None:
            value = rec.get(job.metric)
            shown = f"{job.metric} {value:.4g}" if isinstance(value, (int, float)) else ""
            parts.append(f"{job.name} it {rec['iter'] + 1} {shown}")
        else:
            parts.append(job.name)
    return f"  {done}/{total} done, {time.perf_counter() - t0:6.0f}s: " + "; ".join(parts)


def job_env() -> dict[str, str]:
    """The environment of every job: one OpenMP thread (jobs run side by side)."""
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def run_jobs(phase: str, jobs: list[Job], n_parallel: int, log_dir: Path,
             env: dict[str, str], poll: float, cwd: Path) -> float:
    """Run ``jobs`` at most ``n_parallel`` at a time; raise if one fails. Wall seconds."""
    print(f"== {phase}: {len(jobs)} commands, {n_parallel} at a time", flush=True)
    t0 = time.perf_counter()
    pending, running, done = list(jobs), [], 0
    last_status = t0
    while pending or running:
        while pending and len(running) < n_parallel:
            job = pending.pop(0)
            job.log = log_dir / f"{phase}-{job.name}.log"
            job.seconds = time.perf_counter()
            with open(job.log, "w") as log:
                job.proc = subprocess.Popen(executable(job.argv), stdout=log,
                                            stderr=subprocess.STDOUT, env=env, cwd=cwd)
            running.append(job)
        time.sleep(0.2)
        for job in [j for j in running if j.proc.poll() is not None]:
            running.remove(job)
            job.seconds = time.perf_counter() - job.seconds
            done += 1
            if job.proc.returncode != 0:
                for other in running:
                    other.proc.terminate()
                tail = job.log.read_text()[-2000:]
                raise SystemExit(f"{job.shell()} failed ({job.proc.returncode}):\n{tail}")
            print(f"  done {job.name} in {job.seconds:.0f}s ({done}/{len(jobs)})", flush=True)
        if running and time.perf_counter() - last_status > poll:
            last_status = time.perf_counter()
            print(status_line(running, done, len(jobs), t0), flush=True)
    return time.perf_counter() - t0


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




def add_common_args(p, name: str) -> None:
    """The flags every supervised reproduction script shares (runs/, results/, jobs)."""
    p.add_argument("--jobs", type=int, default=2, help="commands run at once")
    p.add_argument("--runs-dir", default=f"runs/reproduce-{name}", help="training runs")
    p.add_argument("--results-dir", default=f"results/{name}", help="table and copies")
    p.add_argument("--train-extra", default="", help="extra supervised flags")
    p.add_argument("--eval-extra", default="", help="extra supervised-evaluate flags")
    p.add_argument("--poll", type=float, default=60.0, help="seconds between status lines")


def finish_common_args(p, args, argv: list[str] | None) -> None:
    """Keep the command line for the report, split the extra flags, check --jobs."""
    args.argv = list(argv if argv is not None else sys.argv[1:])
    args.train_extra, args.eval_extra = shlex.split(args.train_extra), shlex.split(args.eval_extra)
    if args.jobs <= 0:
        p.error(f"--jobs must be > 0, got {args.jobs}")


def run_phases(commands: dict[str, list[Job]], runs: Path, n_parallel: int, poll: float,
               cwd: Path) -> tuple[dict[str, float], list[dict]]:
    """Run each phase's jobs in order (one torch thread each); logs go to RUNS/logs.
    Returns the wall seconds of each phase and the timing history of every invocation."""
    log_dir = runs / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    env = job_env()
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    phases: dict[str, float] = {}
    history: list[dict] = []
    for phase, jobs in commands.items():
        phases[phase] = run_jobs(phase, jobs, n_parallel, log_dir, env, poll, cwd)
        history = record_phase(runs, started, phase, phases[phase])
    return phases, history


def copy_runs(train: list[Job], results: Path) -> None:
    """Each training run's config, metrics and evaluations to RESULTS/runs/NAME/; the
    evaluations without their per-task lists (those stay in the run directory)."""
    for job in train:
        dest = results / "runs" / job.run_dir.name
        dest.mkdir(parents=True, exist_ok=True)
        for f in ("config.json", "metrics.jsonl"):
            shutil.copy2(job.run_dir / f, dest / f)
        for f in job.run_dir.glob("eval*.json"):
            summary = _drop_per_task(json.loads(f.read_text()))
            (dest / f.name).write_text(json.dumps(summary, indent=1) + "\n")


def _drop_per_task(value):
    if isinstance(value, dict):
        return {k: _drop_per_task(v) for k, v in value.items() if k != "per_task"}
    if isinstance(value, list):
        return [_drop_per_task(v) for v in value]
    return value
