"""Faults of Ray itself under ``--sampler ray`` (rkmeta_rl/rl/ray_sampler.py and
rkmeta_rl/run/ray_session.py): the node a run samples from dying, a SIGTERM while Ray and
its workers start, and more workers than CPUs.

The CLI runs in a subprocess in a session of its own, which starts and stops its own local
Ray instance: a test finds that instance's processes by session (``/proc``), kills one of
them or signals the CLI, and checks that nothing of the instance is left, its temporary
``rkray-*`` directory included. Runs are tiny (2 tasks × 2 episodes, an 8-unit policy).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from helpers import session_processes  # noqa: E402
from ray_envs import SLOW_START  # noqa: E402

from rkmeta_rl.rl.ray_sampler import RaySampler  # noqa: E402
from rkmeta_rl.run import rundir  # noqa: E402

pytestmark = [pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc"),
              pytest.mark.slow]

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
TINY = ["--meta-batch-size", "2", "--fast-batch-size", "2", "--hidden", "8",
        "--max-episode-steps", "10", "--no-progress", "--num-threads", "1",
        "--sampler", "ray", "--workers", "2"]
FAST_DEATH = {  # Ray declares a silent node dead after ~1 s instead of ~15 s
    "RAY_health_check_period_ms": "500", "RAY_health_check_timeout_ms": "500",
    "RAY_health_check_failure_threshold": "2", "RAY_health_check_initial_delay_ms": "0"}
TEMP_DIR = re.compile(r"(/\S*?/rkray-[^/\s]+)/")


def wait_for(what: str, check: Callable[[], object], proc: subprocess.Popen,
             timeout: float = 60.0) -> object:
    """``check()``'s first true value, polled while ``proc`` runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if proc.poll() is not None:
            pytest.fail(f"the run ended ({proc.returncode}) before {what}: "
                        f"{proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.02)
    pytest.fail(f"no {what} within {timeout:g} s")


def process_named(sid: int, name: str) -> int | None:
    return next((pid for pid, n in session_processes(sid).items() if n == name), None)


def ray_temp_dir(pid: int) -> Path | None:
    """The ``rkray-*`` directory a Ray process of a local instance was started in (None if
    it has gone; its command line is empty for a moment after it starts)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            return None
        match = TEMP_DIR.search(cmdline.decode(errors="replace"))
        if match:
            return Path(match.group(1))
        time.sleep(0.02)
    return None


@pytest.fixture
def train_cli(tmp_path) -> Iterator[Callable[..., subprocess.Popen]]:
    """Start ``rkmeta-rl train`` with Ray; afterwards nothing of it is left running."""
    started: list[subprocess.Popen] = []

    def start(*argv: str, **env: str) -> subprocess.Popen:
        pythonpath = os.pathsep.join([str(ROOT), str(TESTS), os.environ.get("PYTHONPATH", "")])
        proc = subprocess.Popen(
            [sys.executable, "-m", "rkmeta_rl.cli", "train", *TINY, *argv], cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": pythonpath, "OMP_NUM_THREADS": "1", **env},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        started.append(proc)
        return proc

    yield start
    for proc in started:  # a failed test's leftovers: processes, then Ray's directory
        left = session_processes(proc.pid)
        temps = {ray_temp_dir(pid) for pid, name in left.items() if name == "gcs_server"}
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()
        for temp in temps - {None}:
            shutil.rmtree(temp, ignore_errors=True)


def finish(proc: subprocess.Popen, timeout: float = 90.0) -> tuple[int, str]:
    """(exit code, stderr) once ``proc`` ends, after its whole session has ended."""
    _, err = proc.communicate(timeout=timeout)
    deadline = time.monotonic() + 30
    while session_processes(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert session_processes(proc.pid) == {}, err
    return proc.returncode, err


def one_line(err: str, prefix: str) -> str:
    """The one line of ``err`` starting with ``prefix`` (and no traceback)."""
    lines = [line for line in err.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_a_dead_ray_node_ends_the_run_in_one_line_and_resume_is_named(train_cli, tmp_path):
    """The local instance's raylet SIGKILLed in the middle of a run: one line saying the
    node died, what the checkpoint holds (the iterations metrics.jsonl has; nothing of the
    one in progress) and the command that resumes; exit 2; nothing of Ray left."""
    run = tmp_path / "run"
    proc = train_cli("--env", "nav2d", "--meta-iters", "100000", "--out", str(run),
                     **FAST_DEATH)
    metrics = run / rundir.METRICS
    wait_for("two iterations", lambda: metrics.exists()
             and len(metrics.read_text().splitlines()) >= 2, proc)
    raylet = process_named(proc.pid, "raylet")
    assert raylet is not None, session_processes(proc.pid)
    temp = ray_temp_dir(raylet)
    assert temp is not None
    os.kill(raylet, signal.SIGKILL)
    try:
        code, err = finish(proc)
        line = one_line(err, "rkmeta-rl: error:")
        assert code == 2, err
        saved = rundir.load_checkpoint(run)["iteration"]
        assert saved >= 2 and len(rundir.read_metrics(run)) == saved
        for part in ("the Ray node ", " died: its raylet ended",
                     f"{run / rundir.CHECKPOINT}, is intact: {saved} iterations saved",
                     "nothing was written for the iteration in progress",
                     f"resume with: rkmeta-rl train --resume {run}"):
            assert part in line, (part, line)
        assert "could not start" not in line
        assert not temp.exists()
    finally:
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.parametrize("during", ["gcs_server", "ray::SamplingWo"])
def test_sigterm_while_ray_starts_leaves_nothing_and_names_resume(train_cli, tmp_path,
                                                                  during):
    """SIGTERM while ``ray.init`` starts the instance (once its gcs_server runs) or while
    the workers build their envs (slowed down by 3 s): the start is undone (no process, no
    rkray-* directory), and the run stops as a SIGTERM stops it in training: exit 143, the
    line that says how to resume."""
    run = tmp_path / "run"
    proc = train_cli("--env", "ray_envs:SlowStartPointEnv", "--meta-iters", "2",
                     "--out", str(run), **{SLOW_START: "3"})
    pid = wait_for(during, lambda: process_named(proc.pid, during), proc)
    temp = ray_temp_dir(process_named(proc.pid, "gcs_server") or pid)
    os.kill(proc.pid, signal.SIGTERM)
    assert temp is not None
    try:
        code, err = finish(proc)
        line = one_line(err, "rkmeta-rl: stopped by SIGTERM")
        assert code == 128 + signal.SIGTERM, err
        assert line.endswith(f"0 iterations are saved; resume with: rkmeta-rl train "
                             f"--resume {run}"), line
        assert not temp.exists()
        assert rundir.load_checkpoint(run) is None
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def test_more_workers_than_cpus_warns_naming_both(tmp_path, monkeypatch):
    """A local instance started with more workers than the CPUs this process may use (one,
    here) starts them all, with a warning naming the value and the CPUs."""
    if ray.is_initialized():
        pytest.skip("needs to start its own Ray instance")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    sampler = RaySampler("nav2d", 10, "gymnasium", [8], workers=2, run_dir=tmp_path)
    try:
        with pytest.warns(UserWarning, match=r"^--workers 2 is more than the 1 CPU this "
                                             r"process may use: the 2 workers share them"):
            sampler.start()
        assert len(sampler.actors) == 2
        temp = Path(sampler.session.temp_dir)
    finally:
        sampler.close()
    assert not ray.is_initialized() and not temp.exists()
