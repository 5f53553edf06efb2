"""``--sampler ray`` (rkmeta_rl/rl/ray_sampler.py): the same metrics as ``--sampler local``
for any number of workers, a killed worker replaced without a trace in the metrics, and an
env that raises ending the run with one line, the checkpoint intact and no Ray process left.

Starting Ray costs seconds, so the in-process tests share one instance (the trainer uses
an initialised Ray and leaves it running); the error test runs the CLI in a subprocess,
which starts and stops its own. Runs are tiny: 2-4 tasks × 2 episodes, an 8-unit policy.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from helpers import session_processes  # noqa: E402
from ray_envs import DIE_MARKER  # noqa: E402

from rkmeta_rl.cli import main  # noqa: E402
from rkmeta_rl.rl.config import TrainConfig, resolve  # noqa: E402
from rkmeta_rl.rl.ray_sampler import RaySampler, task_shares  # noqa: E402
from rkmeta_rl.rl.trainer import prepare_run_dir  # noqa: E402
from rkmeta_rl.run import rundir  # noqa: E402
from rkmeta_rl.run.ray_session import init_keeping_signals  # noqa: E402

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
TINY = ["--meta-batch-size", "4", "--fast-batch-size", "2", "--hidden", "8",
        "--max-episode-steps", "10", "--meta-iters", "2", "--no-progress",
        "--num-threads", "1"]


def _pythonpath() -> str:
    """The workers import the repository and tests/ray_envs.py."""
    return os.pathsep.join([str(ROOT), str(TESTS), os.environ.get("PYTHONPATH", "")])


@pytest.fixture(scope="module")
def shared_ray(tmp_path_factory):
    """One local Ray instance (2 CPUs) for the module; its workers see tests/ and the
    DyingPointEnv's marker path (the driver does not: it never dies)."""
    marker = tmp_path_factory.mktemp("ray") / "die"
    saved = dict(os.environ)
    os.environ.update({"PYTHONPATH": _pythonpath(), DIE_MARKER: str(marker)})
    try:
        init_keeping_signals(num_cpus=2, include_dashboard=False, log_to_driver=False,
                             configure_logging=False)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    yield marker
    ray.shutdown()


def metrics(run: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith("seconds")}
            for r in rundir.read_metrics(run)]


def test_ray_leaves_the_signal_handlers_as_they_were(shared_ray):
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_task_shares_are_whole_contiguous_and_balanced():
    assert task_shares(40, 3) == [range(0, 14), range(14, 27), range(27, 40)]
    assert task_shares(2, 4) == [range(0, 1), range(1, 2)]


@pytest.mark.parametrize("env, workers, extra", [
    ("nav2d", 1, []),
    ("nav2d", 2, []),
    ("halfcheetah-vel", 2, ["--dynamics", "maml"]),
    pytest.param("metaworld-ml1:reach-v3", 2, [], marks=[pytest.mark.slow, pytest.mark.skipif(
        importlib.util.find_spec("metaworld") is None, reason="metaworld is not installed")]),
])
def test_ray_gives_the_local_metrics(shared_ray, tmp_path, env, workers, extra):
    local, far = tmp_path / "local", tmp_path / "ray"
    argv = ["train", "--env", env, *TINY, *extra]
    assert main([*argv, "--out", str(local)]) == 0
    assert main([*argv, "--sampler", "ray", "--workers", str(workers), "--out", str(far)]) == 0
    assert metrics(far) == metrics(local) and len(metrics(local)) == 2
    stored = rundir.read_config(far)
    assert (stored["sampler"], stored["workers"], stored["ray_address"]) == ("ray", workers,
                                                                             None)
    assert ray.is_initialized()  # an initialised Ray is used and left running
    assert not (far / "ray-logs").exists()  # its logs are its owner's


class Arming:
    """A sampler that creates the DyingPointEnv's marker before its ``at``-th call."""

    def __init__(self, inner: RaySampler, marker: Path, at: int) -> None:
        self.inner, self.marker, self.at, self.calls = inner, marker, at, 0

    def __call__(self, *args):
        self.calls += 1
        if self.calls == self.at:
            self.marker.touch()
        return self.inner(*args)

    def start(self) -> None:
        self.inner.start()

    def close(self) -> None:
        self.inner.close()


@pytest.mark.slow
def test_a_killed_worker_is_replaced_and_the_metrics_do_not_change(shared_ray, tmp_path):
    """A worker SIGKILLed in the middle of sampling (DyingPointEnv) is replaced, its tasks
    sampled again from the same streams: the run's metrics are the uninterrupted run's."""
    cfg = dict(env="ray_envs:DyingPointEnv", meta_batch_size=4, fast_batch_size=2,
               hidden=[8], max_episode_steps=10, meta_iters=2, num_threads=1)
    prepare_run_dir(resolve(TrainConfig(**cfg)), tmp_path / "local").run(progress=False)
    trainer = prepare_run_dir(resolve(TrainConfig(**cfg, sampler="ray", workers=2)),
                              tmp_path / "ray")
    sampler = trainer.sample_episodes
    assert isinstance(sampler, RaySampler)
    trainer.sample_episodes = Arming(sampler, shared_ray, at=4)  # iteration 1, stage 2
    trainer.run(progress=False)
    assert not shared_ray.exists()  # a worker removed it, and died
    assert sampler.replaced == 1
    assert metrics(tmp_path / "ray") == metrics(tmp_path / "local")


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
@pytest.mark.slow
def test_an_env_error_ends_the_run_with_one_line_and_no_process_left(tmp_path):
    """The CLI in its own session starts a local Ray instance; task 1's env raises in
    iteration 1: one line naming the task, its dict and the worker; exit 1; iteration 0's
    checkpoint and metrics intact; Ray's logs in the run directory; nothing left running."""
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": _pythonpath(), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "rkmeta_rl.cli", "train", "--env", "ray_envs:FailingPointEnv",
         "--meta-batch-size", "2", "--fast-batch-size", "2", "--hidden", "8",
         "--max-episode-steps", "5", "--meta-iters", "3", "--no-progress",
         "--num-threads", "1", "--sampler", "ray", "--workers", "2", "--out", str(run)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    out, err = proc.communicate(timeout=300)
    errors = [line for line in err.splitlines() if line.startswith("rkmeta-rl: error")]
    assert proc.returncode == 1, err
    assert len(errors) == 1 and "Traceback" not in err, err
    line = errors[0]
    for part in ("task 1 {", "'fail': True", "episode 0", "on ray worker 1 (pid",
                 "step() at step 3 raised ValueError: boom", "checkpoint is intact"):
        assert part in line, (part, line)
    assert rundir.load_checkpoint(run)["iteration"] == 1
    assert [r["iter"] for r in rundir.read_metrics(run)] == [0]
    (session,) = (run / "ray-logs").iterdir()
    assert session.is_dir() and not session.is_symlink() and any(session.iterdir())
    deadline = time.monotonic() + 30
    while session_processes(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert session_processes(proc.pid) == {}
