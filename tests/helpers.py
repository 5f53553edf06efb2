"""Helpers shared by the test modules (imported as ``helpers``: tests/ is on sys.path)."""

import contextlib
import importlib.util
import os
import sys
import time
from pathlib import Path

from rkmeta_rl import cli
from rkmeta_rl.rl.trainer import Trainer


def os_thread_ids() -> set[int]:
    """Ids of this process's threads right now."""
    return {int(t) for t in os.listdir("/proc/self/task")}


def threads_left_since(before: set[int], timeout: float = 10.0) -> set[int]:
    """Threads started since ``before`` (``os_thread_ids()``) that still run once they have
    ended (threads told to stop may exit a moment later on a loaded machine), or after
    ``timeout`` seconds. Threads in ``before`` that end meanwhile, such as an earlier
    test's pool still shutting down, do not count."""
    deadline = time.monotonic() + timeout
    while os_thread_ids() - before and time.monotonic() < deadline:
        time.sleep(0.05)
    return os_thread_ids() - before


def interrupt_on_call(monkeypatch, n: int, trainer_class: type = Trainer) -> None:
    """Make the n-th ``trainer_class.step`` call raise KeyboardInterrupt (a Ctrl-C mid-run)."""
    original, calls = trainer_class.step, []

    def step(self):
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(trainer_class, "step", step)


def processes_with(marker: str) -> list[str]:
    """The command lines of this machine's processes that contain ``marker``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, UnicodeDecodeError):
            continue
        if marker in cmdline and int(pid) != os.getpid():
            found.append(f"{pid}: {cmdline[:200]}")
    return found


def wait_until_gone(marker: str, timeout: float = 20.0) -> list[str]:
    """``processes_with(marker)`` once none is left, or after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    return processes_with(marker)


SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load_script(name: str):
    """``scripts/NAME.py`` loaded as the module NAME (registered in ``sys.modules``: its
    dataclasses look their module up)."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def script_main(path: str):
    """The ``main`` of a ``scripts/NAME.py`` file (loaded as a module)."""
    return load_script(Path(path).stem).main


def run_in_process(phase, job_list, grid, poll, cwd) -> float:
    """``rkmeta_rl.launch.jobs.run_jobs`` without Ray or subprocesses: each ``rkmeta-rl`` command
    through ``cli.main`` and each ``python scripts/NAME.py`` through that script's ``main``,
    its output in the job's log; a failing command fails the test."""
    t0 = time.perf_counter()
    log_dir = grid.log_dir
    for job in job_list:
        assert job.argv[0] == "rkmeta-rl" or (
            job.argv[0] == "python" and job.argv[1].startswith("scripts/")), job.argv
        main = cli.main if job.argv[0] == "rkmeta-rl" else script_main(job.argv[1])
        args = job.argv[1:] if job.argv[0] == "rkmeta-rl" else job.argv[2:]
        job.log = log_dir / f"{phase}-{job.name}.log"
        job.seconds = time.perf_counter()
        with open(job.log, "w") as log, contextlib.redirect_stdout(log), \
                contextlib.redirect_stderr(log):
            code = main(args)
        job.seconds = time.perf_counter() - job.seconds
        assert code == 0, f"{job.shell()} failed ({code}):\n{job.log.read_text()[-2000:]}"
    return time.perf_counter() - t0


def table_row(text: str, first: str) -> list[str]:
    """The cells of the markdown table row starting with ``| first |`` (exactly one)."""
    rows = [line for line in text.splitlines() if line.startswith(f"| {first} |")]
    assert len(rows) == 1, rows
    return [cell.strip() for cell in rows[0].strip("|").split("|")]


def session_processes(sid: int) -> dict[int, str]:
    """Live processes of session ``sid`` (zombies excluded): pid -> name, from /proc."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:]
        fields = rest.split()
        if int(fields[3]) == sid and fields[0] != "Z":
            found[int(entry.name)] = name
    return found
