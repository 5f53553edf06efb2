"""One reproduction command as a process group that ends with the Ray task running it.

The worker side of :mod:`rkmeta_rl.launch.jobs`: :func:`run_task` is the body of the Ray task of
every job. It starts the command in a session (a process group) of its own, its output
in the job's log, and waits, looking every second for the script's stop file (next to
the logs). When the file appears (the script was stopped, or another command failed),
or when the task is left early (its worker told to exit, as when the script's Ray
instance shuts down), the whole group is stopped (:func:`stop_group`): SIGTERM, which a
training answers by stopping cleanly (docs/guides/reliability.md), a second SIGTERM, then
SIGKILL after :data:`GRACE` seconds; a task that starts after the file appeared does not
start its command. Should the worker itself be killed outright (by Ray's memory monitor,
say), Linux sends the command SIGTERM as its parent dies (``PR_SET_PDEATHSIG``), so no
command outlives its task.

The script stops its tasks through the file rather than ``ray.cancel``: in Ray 2.60 a
cancellation that meets a task just finishing can abort the script's process (a failed
check in Ray's task manager).

This module imports neither Ray nor torch nor anything of the package: Ray ships it to
its workers by value (:meth:`rkmeta_rl.launch.grid.Grid.submit`), so a worker starts quickly.
"""

from __future__ import annotations

import ctypes
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

GRACE = 10.0  # seconds a stopped command gets from the first SIGTERM to SIGKILL
WORKER_VARIABLES = ("RAY_JOB_ID", "RAY_RAYLET_PID")  # the worker's, not the command's


def executable(argv: list[str]) -> list[str]:
    """The argv to run: ``rkmeta-rl`` through this interpreter (no PATH dependence)."""
    if argv[0] == "rkmeta-rl":
        return [sys.executable, "-m", "rkmeta_rl.cli", *argv[1:]]
    if argv[0] == "python":
        return [sys.executable, *argv[1:]]
    return argv


def command_env(threads: int) -> dict[str, str]:
    """This process's environment (Ray's CUDA_VISIBLE_DEVICES included) for the command,
    with ``threads`` OpenMP threads and without the variables naming the Ray worker."""
    env = {k: v for k, v in os.environ.items() if k not in WORKER_VARIABLES}
    return {**env, "OMP_NUM_THREADS": str(threads)}


def _parent_death_signal() -> Callable[[int, int], int] | None:
    """libc's ``prctl`` (Linux), looked up before the fork: the child only calls it."""
    if not sys.platform.startswith("linux"):
        return None
    return ctypes.CDLL(None, use_errno=True).prctl


def _die_with_parent(parent: int, prctl: Callable[[int, int], int] | None) -> None:
    """In the child before exec: SIGTERM when the parent dies, and go at once if it
    already has."""
    if prctl is not None:
        prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(143)


def start(argv: list[str], cwd: Path, log: Path, threads: int = 1) -> subprocess.Popen:
    """Start ``argv`` (as typed: ``rkmeta-rl ...`` or ``python ...``) in ``cwd`` in a
    session of its own, stdout and stderr to ``log`` after a first line saying what runs
    where (``$ cd CWD && COMMAND``: the command to run it by hand)."""
    parent, prctl = os.getpid(), _parent_death_signal()
    with open(log, "w") as out:
        out.write(f"$ cd {shlex.quote(str(cwd))} && {shlex.join(argv)}\n")
        out.flush()
        return subprocess.Popen(executable(argv), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=command_env(threads), cwd=cwd,
                                start_new_session=True,
                                preexec_fn=lambda: _die_with_parent(parent, prctl))


def stop_group(proc: subprocess.Popen, grace: float = GRACE) -> None:
    """Stop the process group of ``proc``: SIGTERM (a training finishes its iteration),
    SIGTERM again after ``grace / 2`` seconds (it discards the iteration), SIGKILL to what
    is left after ``grace``. Returns once ``proc`` has ended."""
    for sig, seconds in ((signal.SIGTERM, grace / 2), (signal.SIGTERM, grace / 2),
                         (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:  # the group is gone already
            break
        try:
            proc.wait(timeout=seconds)
            break
        except subprocess.TimeoutExpired:
            continue
    proc.wait()
    _kill_leftovers(proc.pid)


def _kill_leftovers(pgid: int) -> None:
    """SIGKILL what is left of the group once its leader has ended (its own children)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def wait(proc: subprocess.Popen, stopped: Callable[[], bool], tick: float = 1.0) -> int | None:
    """``proc``'s exit code, or None as soon as ``stopped()`` says so (asked every ``tick``
    seconds; the short slices also let a KeyboardInterrupt or SystemExit in this thread
    be taken at once)."""
    while True:
        try:
            return proc.wait(timeout=tick)
        except subprocess.TimeoutExpired:
            if stopped():
                return None


def never() -> bool:
    return False


def run_command(argv: list[str], cwd: str, log: str, threads: int = 1,
                stopped: Callable[[], bool] = never) -> tuple[int | None, float]:
    """Run one job's command: (exit code, wall seconds), the code None if ``stopped()``
    said to stop first (the command not started, or stopped with its group). The
    command is stopped with its group also if this function is left early."""
    t0 = time.perf_counter()
    if stopped():
        return None, 0.0
    proc = start(argv, Path(cwd), Path(log), threads)
    try:
        code = wait(proc, stopped)
    finally:
        if proc.poll() is None:
            stop_group(proc)
    _kill_leftovers(proc.pid)
    return code, time.perf_counter() - t0


def run_task(argv: list[str], cwd: str, log: str, threads: int,
             stop_file: str) -> tuple[int | None, float]:
    """The Ray task of a job: :func:`run_command` until ``stop_file`` exists. (A file, not
    a Ray call: a task waiting on Ray lends its CPUs to other tasks meanwhile.)"""
    return run_command(argv, cwd, log, threads, lambda: os.path.exists(stop_file))
