"""Run directories that are safe to share and to run (README, "Reliability"): checkpoints
that never run code on load, one writer per directory, clean stops on SIGTERM/SIGINT, and
writes that fail (disk full, read-only) without losing anything."""

from __future__ import annotations

import errno
import fractions
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from rkmeta_rl.cli import main
from rkmeta_rl.rl import load_run
from rkmeta_rl.run import rundir, runlock
from rkmeta_rl.run.stopping import RunStopped, StopSignals

TINY = ["--env", "nav2d", "--meta-batch-size", "2", "--fast-batch-size", "2", "--hidden", "8",
        "--max-episode-steps", "10", "--no-progress"]
SINUSOID = ["--benchmark", "sinusoid", "--meta-batch-size", "2", "--hidden", "8,8",
            "--log-every", "5", "--eval-every", "0", "--eval-tasks", "2", "--no-progress"]
EVAL = ["--tasks", "2", "--episodes", "2", "--steps", "1", "--no-progress"]


def train(out: Path, iters: int) -> list[str]:
    return ["train", *TINY, "--meta-iters", str(iters), "--out", str(out)]


def metrics(run: Path) -> list[dict]:
    """metrics.jsonl without the timing fields (they differ between runs)."""
    return [{k: v for k, v in r.items() if not k.startswith("seconds")}
            for r in rundir.read_metrics(run)]


def one_error_line(capsys) -> str:
    """The one error line a failed command printed (after its status line, if any)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines()
             if line.strip() and not line.startswith("rkmeta-rl: run directory")]
    assert len(lines) == 1 and lines[0].startswith("rkmeta-rl: error: "), err
    return lines[0]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted 6-iteration run: what every interrupted run must end up equal to."""
    out = tmp_path_factory.mktemp("reference") / "run"
    assert main(train(out, 6)) == 0
    return out


# -- checkpoints never run code --------------------------------------------------------


class Payload:
    """Unpickling this calls open(marker, "w"): proof that code from the file ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _copy_run(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for name in ("config.json", "checkpoint.pt", "metrics.jsonl"):
        (dst / name).write_bytes((src / name).read_bytes())
    return dst


def test_a_checkpoint_carrying_code_is_refused_and_nothing_runs(reference, tmp_path, capsys):
    run = _copy_run(reference, tmp_path / "shared")
    marker = tmp_path / "code-ran"
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    state["note"] = Payload(marker)
    torch.save(state, run / "checkpoint.pt")
    for argv in (["evaluate", str(run), *EVAL], ["train", "--resume", str(run)],
                 ["render", str(run)]):
        assert main(argv) == 2, argv
        line = one_error_line(capsys)
        assert "checkpoint.pt" in line and "could run code" in line, line
        assert "rkmeta-rl convert-checkpoint" in line
    with pytest.raises(ValueError, match="could run code"):
        load_run(run)
    assert not marker.exists()


def test_a_supervised_checkpoint_carrying_code_is_refused(tmp_path, capsys):
    run = tmp_path / "sin"
    assert main(["supervised", *SINUSOID, "--meta-iters", "5", "--out", str(run)]) == 0
    marker = tmp_path / "code-ran"
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    state["note"] = Payload(marker)
    torch.save(state, run / "checkpoint.pt")
    capsys.readouterr()
    for argv in (["supervised-evaluate", str(run), "--tasks", "2"],
                 ["supervised", "--resume", str(run)]):
        assert main(argv) == 2
        assert "could run code" in one_error_line(capsys)
    assert not marker.exists()


def test_a_trusted_old_checkpoint_is_converted_once(reference, tmp_path, capsys):
    run = _copy_run(reference, tmp_path / "old")
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    state["extra"], state["scale"] = np.arange(3), np.float64(1.5)  # numpy: not allow-listed
    torch.save(state, run / "checkpoint.pt")
    assert main(["evaluate", str(run), *EVAL]) == 2
    assert "could run code" in one_error_line(capsys)

    assert main(["convert-checkpoint", str(run)]) == 0
    assert (run / "checkpoint.pt.orig").exists()
    converted = torch.load(run / "checkpoint.pt", weights_only=True)
    assert torch.equal(converted["extra"], torch.arange(3)) and converted["scale"] == 1.5
    assert main(["evaluate", str(run), *EVAL, "--out", str(tmp_path / "a.json")]) == 0
    assert main(["evaluate", str(reference), *EVAL, "--out", str(tmp_path / "b.json")]) == 0
    a, b = (json.loads((tmp_path / f).read_text())["by_step"] for f in ("a.json", "b.json"))
    assert a == b


def test_convert_refuses_objects_that_are_not_plain_data(reference, tmp_path, capsys):
    run = _copy_run(reference, tmp_path / "odd")
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    state["ratio"] = fractions.Fraction(1, 3)
    torch.save(state, run / "checkpoint.pt")
    before = (run / "checkpoint.pt").read_bytes()
    assert main(["convert-checkpoint", str(run)]) == 2
    assert "checkpoint['ratio']: a Fraction is not plain data" in one_error_line(capsys)
    assert (run / "checkpoint.pt").read_bytes() == before


# -- one writer per run directory ------------------------------------------------------

HOLDER = """
import sys, time
from pathlib import Path
from rkmeta_rl.run import rundir, runlock
runlock.lock(Path(sys.argv[1]))
print("locked", flush=True)
time.sleep(120)
"""


def test_a_directory_in_use_is_refused_and_freed_by_kill_9(reference, tmp_path, capsys):
    run = _copy_run(reference, tmp_path / "busy")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = (run / "metrics.jsonl").read_bytes()
        for argv in (["train", "--resume", str(run)], train(run, 6)):
            assert main(argv) == 2
            line = one_error_line(capsys)
            assert f"{run} is in use by process {holder.pid}" in line, line
        assert (run / "metrics.jsonl").read_bytes() == before  # nothing truncated
        assert main(["evaluate", str(run), *EVAL, "--out", str(tmp_path / "e.json")]) == 0
    finally:
        holder.kill()  # SIGKILL: the lock must not outlive the process
        holder.wait()
    assert main(["train", "--resume", str(run)]) == 0  # no stale lock to delete by hand


def test_the_lock_is_reentrant_within_a_process(tmp_path):
    key = runlock.lock(tmp_path)
    assert runlock.lock(tmp_path) == key
    runlock.unlock(key)
    runlock.unlock(key)
    probe = subprocess.run([sys.executable, "-c", HOLDER.replace("time.sleep(120)", ""),
                            str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert probe.stdout.strip() == "locked", probe.stderr  # released after the last unlock


# -- clean stops ------------------------------------------------------------------------


def _start(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rkmeta_rl.cli", *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_lines(proc: subprocess.Popen, path: Path, n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if path.exists() and len(path.read_text().splitlines()) >= n:
            return
        time.sleep(0.01)
    raise AssertionError(f"no {n} metrics lines in {path}: {proc.communicate()}")


@pytest.mark.slow
def test_sigterm_stops_training_cleanly_and_resume_is_exact(tmp_path, capsys):
    iters = 120  # ~3 s of training: ample time to signal it mid-run
    ref, run = tmp_path / "ref", tmp_path / "run"
    proc = _start(train(run, iters))
    _wait_for_lines(proc, run / "metrics.jsonl", 2)
    assert main(["train", "--resume", str(run)]) == 2  # a real second writer is refused
    assert f"in use by process {proc.pid}" in one_error_line(capsys)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM" in err and f"rkmeta-rl train --resume {run}" in err
    assert "Traceback" not in err
    saved = torch.load(run / "checkpoint.pt", weights_only=True)["iteration"]
    assert 2 <= saved < iters
    assert [r["iter"] for r in rundir.read_metrics(run)] == list(range(saved))  # consistent

    assert main(["train", "--resume", str(run)]) == 0
    assert main(train(ref, iters)) == 0
    assert metrics(run) == metrics(ref)


@pytest.mark.slow
def test_sigint_stops_supervised_training_at_its_last_checkpoint(tmp_path):
    iters = 200
    argv = lambda out: ["supervised", *SINUSOID, "--meta-iters", str(iters),  # noqa: E731
                        "--out", str(out)]
    ref, run = tmp_path / "ref", tmp_path / "run"
    proc = _start(argv(run))
    _wait_for_lines(proc, run / "metrics.jsonl", 2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGINT, err
    assert f"rkmeta-rl supervised --resume {run}" in err and "Traceback" not in err
    saved = torch.load(run / "checkpoint.pt", weights_only=True)["iteration"]
    assert [r["iter"] + 1 for r in rundir.read_metrics(run)] == list(range(5, saved + 1, 5))

    assert main(["supervised", "--resume", str(run)]) == 0
    assert main(argv(ref)) == 0
    assert metrics(run) == metrics(ref)


def test_a_second_signal_discards_the_iteration_but_never_a_write():
    done = []
    with pytest.raises(RunStopped) as stop, StopSignals() as signals:
        with signals.stopping(lambda: len(done)):
            os.kill(os.getpid(), signal.SIGTERM)  # first: finish the iteration
            assert signals.requested
            with signals.writing():
                os.kill(os.getpid(), signal.SIGTERM)  # second, mid-write: deferred
                done.append("written")  # the write completes
            raise AssertionError("the deferred second signal must stop the run here")
    assert stop.value.discarded and stop.value.iteration == 1
    assert stop.value.exit_code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored


# -- failing writes -----------------------------------------------------------------------


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_a_failing_checkpoint_write_loses_nothing(reference, tmp_path, monkeypatch, capsys,
                                                  code):
    run, real_save, calls = tmp_path / "run", torch.save, []

    def save(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # the third checkpoint: disk full / read-only
            raise OSError(code, os.strerror(code))
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    assert main(train(run, 6)) == 2
    line = one_error_line(capsys)
    assert "checkpoint.pt" in line and os.strerror(code) in line and "--resume" in line
    monkeypatch.undo()
    assert torch.load(run / "checkpoint.pt", weights_only=True)["iteration"] == 2
    assert not list(run.glob("*.tmp"))
    assert main(["train", "--resume", str(run)]) == 0  # space is back
    assert metrics(run) == metrics(reference)


class _TornWriter:
    """A metrics file whose ``write`` stores half the line, then fails: disk full."""

    def __init__(self, f) -> None:
        self.f = f

    def write(self, data: bytes) -> int:
        self.f.write(data[: len(data) // 2])
        self.f.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def test_a_failing_metrics_write_leaves_no_torn_line(reference, tmp_path, monkeypatch, capsys):
    run, appends = tmp_path / "run", []

    def opener(path, mode="r", *args, **kwargs):
        f = open(path, mode, *args, **kwargs)
        if Path(path).name == rundir.METRICS and "a" in mode:
            appends.append(1)
            if len(appends) == 3:
                return _TornWriter(f)
        return f

    monkeypatch.setattr(rundir, "open", opener, raising=False)
    assert main(train(run, 6)) == 2
    assert "metrics.jsonl" in one_error_line(capsys)
    monkeypatch.undo()
    text = (run / "metrics.jsonl").read_text()
    assert text.endswith("\n") and len(text.splitlines()) == 2  # whole lines only
    assert main(["train", "--resume", str(run)]) == 0
    assert metrics(run) == metrics(reference)
