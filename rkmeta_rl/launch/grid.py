"""Where a reproduction's commands run: a Ray instance, local or a cluster.

:class:`Grid` holds the scripts' ``--jobs``, ``--ray-address``, ``--cpus-per-job`` and
``--gpus-per-job`` (:func:`add_grid_args`), starts or joins Ray on first use, and submits a
job as a Ray task with its resources (:meth:`Grid.submit`; the task's body is
:func:`rkmeta_rl.launch.job_process.run_command`). Ray is imported only here and only when
needed: without it the scripts stop at once with one line (:func:`require_ray`).
docs/guides/ray.md shows the commands for a machine and for a cluster.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shlex
import signal
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from rkmeta_rl.launch import job_process

RAY_MISSING = 'the commands run on Ray, which is not installed: pip install -e ".[ray]"'
OBJECT_STORE_BYTES = 128 * 1024**2  # a local instance's: the tasks pass a few numbers
DEFAULT_JOBS = 2


@dataclass
class Job:
    name: str
    argv: list[str]  # as a user types it (rkmeta-rl ... or python scripts/...)
    run_dir: Path | None = None  # a training run, for progress
    metric: str = "return_post"  # the metrics key its status line shows
    seconds: float = 0.0
    log: Path | None = None
    num_cpus: float | None = None  # None: the grid's --cpus-per-job
    num_gpus: float | None = None  # None: --gpus-per-job with --device cuda, else 0

    def shell(self) -> str:
        return shlex.join(self.argv)

    def uses_cuda(self) -> bool:
        """Whether the command runs on a GPU (``--device cuda[:N]``)."""
        pairs = zip(self.argv, [*self.argv[1:], ""], strict=True)
        return any((a == "--device" and b.startswith("cuda")) or a.startswith("--device=cuda")
                   for a, b in pairs)


def require_ray(prog: str) -> None:
    """Fail at once, in one line, where Ray is not installed."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise SystemExit(f"{prog}: error: {RAY_MISSING}") from None


def add_grid_args(p: argparse.ArgumentParser) -> None:
    """The flags that say where the commands run."""
    p.add_argument("--jobs", type=int, default=None,
                   help=f"CPUs of the local Ray instance, so commands run at once with one "
                        f"CPU each [{DEFAULT_JOBS}]")
    p.add_argument("--ray-address", default=os.environ.get("RAY_ADDRESS"),
                   help="run on the Ray cluster at this address (HOST:6379, or auto) instead "
                        "of a local instance; every node needs the repository and the runs "
                        "directory at the same paths (shared storage) [$RAY_ADDRESS]")
    p.add_argument("--cpus-per-job", type=float, default=1.0,
                   help="CPUs each command asks Ray for [1]")
    p.add_argument("--gpus-per-job", type=float, default=1.0,
                   help="GPUs a command with --device cuda asks Ray for (0.5: two on a GPU) [1]")


def check_grid_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse impossible grid flags (``p.error``); then fail early if Ray is missing."""
    if args.jobs is not None and args.ray_address:
        p.error("--jobs sets the CPUs of a local Ray instance; with --ray-address (or "
                "RAY_ADDRESS) the cluster's resources decide")
    if args.jobs is None and not args.ray_address:
        args.jobs = DEFAULT_JOBS
    if args.jobs is not None and args.jobs <= 0:
        p.error(f"--jobs must be > 0, got {args.jobs}")
    if not (math.isfinite(args.cpus_per_job) and args.cpus_per_job > 0):
        p.error(f"--cpus-per-job must be > 0, got {args.cpus_per_job}")
    if not (math.isfinite(args.gpus_per_job) and args.gpus_per_job >= 0):
        p.error(f"--gpus-per-job must be >= 0, got {args.gpus_per_job}")
    require_ray(p.prog)


def parallelism(args: argparse.Namespace) -> str:
    """How the commands ran, for a report: '2 jobs at a time' or the cluster."""
    if args.ray_address:
        return f"on the Ray cluster at {args.ray_address}"
    return f"{args.jobs} job{'s' if args.jobs != 1 else ''} at a time"


@dataclass
class Grid:
    """The Ray cluster at ``address``, or a local instance with ``cpus`` CPUs, started on
    first use (:meth:`connect`) and shut down when the ``with grid:`` block ends. Inside
    that block SIGTERM raises KeyboardInterrupt, as Ctrl-C does (the one exception Ray
    passes through ``ray.wait``), and sets :attr:`signum`, so the script stops its commands
    and exits with 128 + the signal."""

    log_dir: Path
    address: str | None = None
    cpus: int = DEFAULT_JOBS
    cpus_per_job: float = 1.0
    gpus_per_job: float = 1.0
    started: bool = field(default=False, repr=False)  # this process started Ray
    signum: int | None = field(default=None, repr=False)  # SIGTERM once received
    _old_handler: Any = field(default=None, repr=False)
    _task: Any = field(default=None, repr=False)  # the Ray remote function
    _stop_file: Path | None = field(default=None, repr=False)  # appears: tasks stop

    @classmethod
    def from_args(cls, args: argparse.Namespace, runs: Path) -> Grid:
        """The grid of :func:`add_grid_args`' flags; logs in RUNS/logs."""
        return cls(runs / "logs", args.ray_address or None, args.jobs or DEFAULT_JOBS,
                   args.cpus_per_job, args.gpus_per_job)

    def __enter__(self) -> Grid:
        if threading.current_thread() is threading.main_thread():
            self._old_handler = signal.signal(signal.SIGTERM, self._on_sigterm)
        return self

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum
        raise KeyboardInterrupt

    def __exit__(self, *exc: object) -> None:
        if self._old_handler is not None:
            signal.signal(signal.SIGTERM, self._old_handler)
            self._old_handler = None
        if self.started:  # its tasks end with it, so a stop file has done its work
            import ray
            ray.shutdown()
            self.started = False
            if self._stop_file is not None:
                self._stop_file.unlink(missing_ok=True)

    def connect(self) -> None:
        """Start the local instance or join the cluster, unless Ray already runs in this
        process (a test's instance); LOG_DIR/ray-session.txt points to Ray's own logs.
        ``ray.init``'s own SIGTERM handler (it exits the script at once) is undone."""
        import ray

        from rkmeta_rl.run.ray_session import init_keeping_signals
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if ray.is_initialized():
            return
        local = {} if self.address else {"num_cpus": self.cpus, "include_dashboard": False,
                                         "object_store_memory": OBJECT_STORE_BYTES}
        self.started = True
        info = init_keeping_signals(address=self.address, log_to_driver=False,
                                    logging_level=logging.WARNING, **local)
        session = (getattr(info, "address_info", None) or {}).get("session_dir", "?")
        (self.log_dir / "ray-session.txt").write_text(
            f"{self.describe()}\nRay's own logs: {session}/logs\n")

    def describe(self) -> str:
        """Where the commands run and with what, for the printout."""
        import ray
        total = ray.cluster_resources()
        where = f"the Ray cluster at {self.address}" if self.address else "a local Ray instance"
        each = f"{self.cpus_per_job:g} CPU{'' if self.cpus_per_job == 1 else 's'}"
        return (f"{where} ({total.get('CPU', 0):g} CPUs, {total.get('GPU', 0):g} GPUs; "
                f"{each} per command)")

    def resources(self, job: Job) -> dict[str, float]:
        """The job's ``num_cpus`` and ``num_gpus`` for Ray: its own, else the grid's."""
        cpus = self.cpus_per_job if job.num_cpus is None else job.num_cpus
        if job.num_gpus is not None:
            return {"num_cpus": cpus, "num_gpus": job.num_gpus}
        return {"num_cpus": cpus, "num_gpus": self.gpus_per_job if job.uses_cuda() else 0.0}

    def check(self, jobs: list[Job]) -> None:
        """A command that asks for more than the whole cluster has would wait forever: on
        a local instance that is an error, on a cluster a warning (an autoscaler may add
        nodes)."""
        import ray
        total = ray.cluster_resources()
        for job in jobs:
            need = self.resources(job)
            short = " and ".join(f"{need[k]:g} {r}s" for k, r in
                                 (("num_cpus", "CPU"), ("num_gpus", "GPU"))
                                 if need[k] > total.get(r, 0))
            if short and not self.address:
                raise SystemExit(f"{job.shell()} needs {short}; {self.describe()} has fewer "
                                 "(--jobs sets its CPUs)")
            if short:
                warnings.warn(f"{job.name} needs {short}, more than the cluster has now; it "
                              "waits for them", stacklevel=2)

    def submit(self, job: Job, cwd: Path) -> Any:
        """Start ``job`` as a Ray task in ``cwd``, output in ``job.log``: an ObjectRef of
        (exit code or None if stopped, wall seconds). Its code travels by value: a worker
        imports neither the package nor torch to run it."""
        import ray
        if self._task is None:
            ray.cloudpickle.register_pickle_by_value(job_process)
            self._task = ray.remote(job_process.run_task)
            self._stop_file = (self.log_dir / f".stop-{os.getpid()}-{time.time_ns()}").resolve()
        need = self.resources(job)
        task = self._task.options(name=job.name, max_retries=0, **need)
        threads = max(1, math.floor(need["num_cpus"]))
        return task.remote(job.argv, str(cwd.resolve()), str(job.log.resolve()), threads,
                           str(self._stop_file))

    def stop_tasks(self) -> None:
        """Tell every task to stop its command (the stop file); the ones yet to start
        never will."""
        if self._stop_file is not None:
            self._stop_file.touch()
