"""rkmeta_rl/launch/jobs.py and grid.py: a reproduction's commands run as Ray tasks with their
resources; a failure stops the others with its log; SIGTERM to a script stops its
commands (no orphan process) and the same command run again resumes.

The tests share one local Ray instance of 2 CPUs (starting one takes seconds); the last
starts scripts/reproduce_table2.py as a process, which starts its own."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import load_script, wait_until_gone

from rkmeta_rl.launch import jobs
from rkmeta_rl.launch.grid import Grid
from rkmeta_rl.launch.jobs import Job
from rkmeta_rl.run import rundir

ray = pytest.importorskip("ray")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ray_instance():
    sigterm = signal.getsignal(signal.SIGTERM)  # ray.init takes SIGTERM, shutdown keeps it
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level="WARNING", object_store_memory=128 * 1024**2)
    yield
    ray.shutdown()
    signal.signal(signal.SIGTERM, sigterm)


def stamped(name: str, out: Path, seconds: float = 1.5) -> Job:
    """A job that writes when it started and ended to OUT/NAME.json."""
    code = (f"import json, os, time; t0 = time.time(); time.sleep({seconds}); "
            f"open({str(out / name)!r} + '.json', 'w').write(json.dumps([t0, time.time(), "
            "os.getcwd(), os.environ['OMP_NUM_THREADS']]))")
    return Job(name, ["python", "-c", code])


def spans(out: Path, names: list[str]) -> list[list]:
    return [json.loads((out / f"{n}.json").read_text()) for n in names]


@pytest.mark.parametrize("cpus_per_job", [2.0, 1.0])
@pytest.mark.slow
def test_jobs_run_as_ray_tasks_with_their_cpus(ray_instance, tmp_path: Path, capsys,
                                               cpus_per_job: float) -> None:
    """Two jobs of 2 CPUs each on the 2-CPU instance run one after the other; of 1 CPU
    each, side by side. Each runs in the repository with its CPUs as OpenMP threads."""
    grid = Grid(tmp_path / "logs", cpus_per_job=cpus_per_job)
    batch = [stamped("a", tmp_path, 2.5), stamped("b", tmp_path, 2.5)]
    with grid:
        seconds = jobs.run_jobs("train", batch, grid, 0.5, REPO)
    (a0, a1, cwd, threads), (b0, b1, _, _) = spans(tmp_path, ["a", "b"])
    overlap = min(a1, b1) - max(a0, b0)  # < 0: one after the other
    assert overlap < 0 if cpus_per_job == 2 else overlap > 0
    assert cwd == str(REPO) and threads == str(int(cpus_per_job))
    assert all(j.seconds >= 2.5 and j.log == tmp_path / "logs" / f"train-{j.name}.log"
               for j in batch)
    out = capsys.readouterr().out
    assert "== train: 2 commands on a local Ray instance (2 CPUs" in out
    assert re.search(r"done [ab] in \d+s \(1/2\)", out)
    if cpus_per_job == 2:  # a status line while a runs
        assert re.search(r"0/2 done, +\d+s: a \(1 waiting\)", out), out
    assert seconds >= (5.0 if cpus_per_job == 2 else 2.5)


def test_a_job_asks_for_its_own_resources_or_the_grids() -> None:
    grid = Grid(Path("logs"), cpus_per_job=2, gpus_per_job=0.5)
    cuda = Job("gpu", ["rkmeta-rl", "train", "--device", "cuda"])
    assert grid.resources(cuda) == {"num_cpus": 2, "num_gpus": 0.5}
    assert grid.resources(Job("g", ["rkmeta-rl", "train", "--device=cuda:1"]))["num_gpus"] == 0.5
    assert grid.resources(Job("cpu", ["rkmeta-rl", "train", "--device", "cpu"]))["num_gpus"] == 0
    own = Job("own", ["rkmeta-rl", "evaluate", "run"], num_cpus=1, num_gpus=1)
    assert grid.resources(own) == {"num_cpus": 1, "num_gpus": 1}


def test_a_job_the_instance_cannot_hold_is_refused_before_anything_runs(
        ray_instance, tmp_path: Path) -> None:
    grid = Grid(tmp_path / "logs")
    big = [stamped("small", tmp_path), Job("big", ["python", "-c", "pass"], num_cpus=3)]
    with grid, pytest.raises(SystemExit, match=r"python -c pass needs 3 CPUs; a local Ray"):
        jobs.run_jobs("train", big, grid, 60.0, REPO)
    assert not (tmp_path / "small.json").exists()


@pytest.mark.slow
def test_a_failing_job_stops_the_others_and_reports_its_log(ray_instance,
                                                            tmp_path: Path) -> None:
    marker = f"long-{tmp_path.name}"
    long = Job("long", ["python", "-c", "import subprocess, sys, time; subprocess.Popen("
                        "[sys.executable, '-c', 'import time; time.sleep(300)', sys.argv[1]]); "
                        "time.sleep(300)", marker])
    failing = Job("failing", ["python", "-c", "import time; time.sleep(2); print('boom'); "
                              "raise SystemExit(3)"])
    queued = stamped("queued", tmp_path, seconds=5.0)  # stopped, if it even starts
    grid = Grid(tmp_path / "logs")
    t0 = time.monotonic()
    with grid, pytest.raises(SystemExit) as failure:
        jobs.run_jobs("train", [long, failing, queued], grid, 60.0, REPO)
    message = str(failure.value.code)
    assert message.startswith(failing.shell() + " failed (3):\n") and "boom" in message
    assert time.monotonic() - t0 < 60
    assert wait_until_gone(marker) == []  # the long job and its own child
    assert not (tmp_path / "queued.json").exists()


def test_a_task_that_cannot_start_its_command_says_why(ray_instance, tmp_path: Path) -> None:
    grid = Grid(tmp_path / "logs")
    with grid, pytest.raises(SystemExit, match="its Ray task raised FileNotFoundError"):
        jobs.run_jobs("train", [stamped("a", tmp_path)], grid, 60.0, tmp_path / "missing")


def test_without_ray_the_scripts_stop_at_once_with_the_install_line(tmp_path: Path,
                                                                   monkeypatch) -> None:
    table2 = load_script("reproduce_table2")
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(SystemExit) as missing:
        table2.parse_args(["--runs-dir", str(tmp_path / "runs")])
    assert str(missing.value.code).endswith('pip install -e ".[ray]"')
    assert "\n" not in str(missing.value.code) and not (tmp_path / "runs").exists()


def test_jobs_is_for_a_local_instance_only(capsys, monkeypatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    table2 = load_script("reproduce_table2")
    with pytest.raises(SystemExit) as refused:
        table2.parse_args(["--jobs", "4", "--ray-address", "auto"])
    assert refused.value.code == 2
    assert "the cluster's resources decide" in capsys.readouterr().err
    assert table2.parse_args(["--ray-address", "auto"]).jobs is None
    assert table2.parse_args([]).jobs == 2


def test_run_phases_adds_later_jobs_just_before_their_phase(tmp_path: Path,
                                                            monkeypatch) -> None:
    """``later[phase]()`` is called once the earlier phases ran; its jobs run with the
    phase's own and stay in ``commands`` for the report."""
    ran: list[tuple[str, list[str]]] = []

    def fake_run_jobs(phase: str, job_list: list[Job], grid: Grid, poll: float,
                      cwd: Path) -> float:
        ran.append((phase, [j.name for j in job_list]))
        return 1.0

    monkeypatch.setattr(jobs, "run_jobs", fake_run_jobs)
    commands = {"evaluate": [Job("e", ["true"])], "plot": [Job("p0", ["true"])]}
    args = argparse.Namespace(ray_address=None, jobs=1, cpus_per_job=1.0, gpus_per_job=1.0,
                              poll=60.0)
    phases, history = jobs.run_phases(commands, tmp_path, args, tmp_path, later={
        "plot": lambda: [Job(f"after-{ran[-1][0]}", ["true"])]})
    assert ran == [("evaluate", ["e"]), ("plot", ["p0", "after-evaluate"])]
    assert [j.name for j in commands["plot"]] == ["p0", "after-evaluate"]
    assert phases == {"evaluate": 1.0, "plot": 1.0}
    assert [h["phase"] for h in history] == ["evaluate", "plot"]
    assert jobs.run_phases({"train": []}, tmp_path / "b", args, tmp_path)[0] == {"train": 1.0}


@pytest.mark.slow
def test_sigterm_stops_a_scripts_commands_and_the_same_command_resumes(tmp_path: Path) -> None:
    """scripts/reproduce_table2.py as a user runs it: SIGTERM while it trains stops the
    training cleanly (no process of it left), exit 143; the same command then continues
    the run from its checkpoint, evaluates and reports."""
    runs = tmp_path / "runs"
    argv = [sys.executable, "scripts/reproduce_table2.py", "--methods", "midpoint", "--seeds",
            "0", "--meta-iters", "4000", "--jobs", "2", "--poll", "1", "--runs-dir", str(runs),
            "--results-dir", str(tmp_path / "results"), "--eval-extra", "--tasks 3 --steps 1",
            "--train-extra", "--hidden 8,8 --log-every 100 --eval-every 4000 --eval-tasks 2"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    run_dir, log = runs / "alpha-midpoint-s0", runs / "logs" / "train-alpha-midpoint-s0.log"
    script = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        assert wait_for(lambda: iterations(run_dir) >= 500, 120), script.poll()
    finally:
        script.send_signal(signal.SIGTERM)
        output = script.communicate(timeout=60)[0]
    assert script.returncode == 143, output
    assert "stopped by SIGTERM: the running commands were stopped" in output
    assert wait_until_gone(str(tmp_path)) == []
    assert "rkmeta-rl: stopped by SIGTERM" in log.read_text()  # a clean stop, resumable
    saved = iterations(run_dir)
    assert 0 < saved < 4000
    again = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"(iteration {saved}/4000" in log.read_text()
    assert iterations(run_dir) == 4000 and (tmp_path / "results" / "README.md").exists()


def iterations(run_dir: Path) -> int:
    """Meta-iterations recorded in the run's metrics.jsonl."""
    records = rundir.read_metrics(run_dir, drop_torn_last_line=True)
    return records[-1]["iter"] + 1 if records else 0


def wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_copied_results_name_no_folder_of_the_machine(tmp_path):
    """copy_runs writes the data paths a run resolved (absolute) relative to the repository
    root, drops the per-task lists, and copies the metrics as they are."""
    root, shared = tmp_path / "repo", tmp_path / "shared" / "data"
    run = tmp_path / "runs" / "omniglot-s0"
    run.mkdir(parents=True)
    config = {"benchmark": "omniglot", "data": [str(shared / "a.zip")], "seed": 0}
    rundir.write_config(run, config)
    (run / "metrics.jsonl").write_text('{"iter": 0}\n')
    (run / "eval.json").write_text(json.dumps(
        {"one_shot_runs": {"path": str(shared / "runs.zip")}, "run_dir": "runs/omniglot-s0",
         "by_step": [{"step": 0, "mean": 0.5, "per_task": [0.4, 0.6]}]}))
    jobs.copy_runs([Job("omniglot-s0", ["true"], run_dir=run)], root / "results", root)
    dest = root / "results" / "runs" / "omniglot-s0"
    assert json.loads((dest / "config.json").read_text()) == {
        **config, "data": [os.path.join("..", "shared", "data", "a.zip")]}
    evaluation = json.loads((dest / "eval.json").read_text())
    assert evaluation == {"one_shot_runs": {"path": os.path.join("..", "shared", "data",
                                                                  "runs.zip")},
                          "run_dir": "runs/omniglot-s0", "by_step": [{"step": 0, "mean": 0.5}]}
    assert (dest / "metrics.jsonl").read_text() == '{"iter": 0}\n'
