"""rkmeta_rl/launch/job_process.py without Ray: a reproduction command runs in a process group of
its own, and nothing of it outlives the task that started it (stopped, interrupted as
``ray.cancel`` does, or killed)."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import processes_with, wait_until_gone

from rkmeta_rl.launch import job_process

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def sleeper(marker: str, deaf: bool = False, child: bool = False) -> list[str]:
    """``python -c`` sleeping 300 s, tagged by ``marker`` in its argv; ``deaf``: it ignores
    SIGTERM; ``child``: it first starts a deaf sleeper of its own (same group)."""
    code = "import signal, subprocess, sys, time\n"
    if deaf:
        code += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    if child:
        code += (f"subprocess.Popen([sys.executable, '-c', 'import signal, time; signal.signal("
                 f"signal.SIGTERM, signal.SIG_IGN); time.sleep(300)', '{marker}-child'])\n")
    code += "print('started', flush=True); time.sleep(300)\n"
    return ["python", "-c", code, marker]


def test_a_command_runs_in_its_directory_in_a_group_of_its_own(tmp_path: Path,
                                                                 monkeypatch) -> None:
    monkeypatch.setenv("RAY_JOB_ID", "01000000")  # a Ray worker's: not the command's
    show = ("import os; print(os.getcwd(), os.environ['OMP_NUM_THREADS'], "
            "os.getpgid(0) == os.getpid(), 'RAY_JOB_ID' in os.environ)")
    log = tmp_path / "job.log"
    code, seconds = job_process.run_command(["python", "-c", show], str(tmp_path), str(log), 3)
    assert code == 0 and seconds > 0
    header, shown = log.read_text().splitlines()
    assert header == f"$ cd {shlex.quote(str(tmp_path))} && {shlex.join(['python', '-c', show])}"
    assert shown.split() == [str(tmp_path), "3", "True", "False"]
    assert job_process.run_command(["python", "-c", "import sys; sys.exit(4)"], str(tmp_path),
                                   str(log))[0] == 4


def test_stopping_a_command_ends_its_whole_group_even_processes_deaf_to_sigterm(
        tmp_path: Path) -> None:
    marker = f"deaf-{tmp_path.name}"
    proc = job_process.start(sleeper(marker, deaf=True, child=True), tmp_path,
                             tmp_path / "job.log")
    assert wait_for(lambda: len(processes_with(marker)) == 2), processes_with(marker)
    t0 = time.monotonic()
    job_process.stop_group(proc, grace=1.0)
    assert proc.returncode == -signal.SIGKILL and time.monotonic() - t0 < 5
    assert wait_until_gone(marker) == []


def test_a_command_stops_cleanly_on_the_first_sigterm(tmp_path: Path) -> None:
    proc = job_process.start(sleeper(f"plain-{tmp_path.name}"), tmp_path, tmp_path / "job.log")
    assert wait_for(lambda: "started" in (tmp_path / "job.log").read_text())
    job_process.stop_group(proc, grace=30.0)
    assert proc.returncode == -signal.SIGTERM


def test_a_command_stops_when_its_flag_says_so_and_never_starts_after(tmp_path: Path) -> None:
    marker, log = f"flagged-{tmp_path.name}", tmp_path / "job.log"
    assert job_process.run_command(sleeper(marker), str(tmp_path), str(log),
                                   stopped=lambda: True) == (None, 0.0)
    assert not log.exists()
    answers = iter([False, False])  # at the start, after a second; then True
    code, seconds = job_process.run_command(sleeper(marker, child=True), str(tmp_path), str(log),
                                            stopped=lambda: next(answers, True))
    assert code is None and 1.0 < seconds < 10 and "started" in log.read_text()
    assert wait_until_gone(marker) == []


@pytest.mark.slow
def test_an_interrupted_task_stops_its_command(tmp_path: Path) -> None:
    """A KeyboardInterrupt in the task's thread (as ``ray.cancel`` raises one) or a
    SystemExit (a Ray worker told to exit): the command's group is stopped first."""
    marker = f"cancelled-{tmp_path.name}"
    task = (f"import _thread, threading\nfrom rkmeta_rl.launch import job_process\n"
            f"threading.Timer(3.0, _thread.interrupt_main).start()\n"
            f"job_process.run_command({sleeper(marker, child=True)!r}, {str(tmp_path)!r}, "
            f"{str(tmp_path / 'job.log')!r})\n")
    run = subprocess.run([sys.executable, "-c", task], env=ENV, capture_output=True, text=True,
                         timeout=60)
    assert run.returncode != 0 and run.stderr.rstrip().endswith("KeyboardInterrupt")
    assert "started" in (tmp_path / "job.log").read_text()  # it ran before the interrupt
    assert wait_until_gone(marker) == []


def test_a_command_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    """A Ray worker killed outright (kill -9) takes its command along (PR_SET_PDEATHSIG)."""
    marker = f"orphan-{tmp_path.name}"
    task = (f"import time\nfrom pathlib import Path\nfrom rkmeta_rl.launch import job_process\n"
            f"job_process.start({sleeper(marker)!r}, Path({str(tmp_path)!r}), "
            f"Path({str(tmp_path / 'job.log')!r}))\nprint('up', flush=True)\ntime.sleep(300)\n")
    parent = subprocess.Popen([sys.executable, "-c", task], env=ENV, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert parent.stdout.readline() == "up\n"
        assert wait_for(lambda: processes_with(marker) != [])
    finally:
        parent.kill()
        parent.wait()
    assert wait_until_gone(marker) == []


def wait_for(condition, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
