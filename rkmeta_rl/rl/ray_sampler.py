"""``--sampler ray``: the meta-batch's tasks spread over Ray actors, whole tasks each.

:class:`RaySampler` implements the sampler call of ``rkmeta_rl/rl/sampler.py``. Each of
its ``workers`` actors (one CPU each: one torch thread, one physics thread) builds the task
family itself (``make_family(env, "cpu", horizon, dynamics)``) and a policy of the run's
sizes, whose own weights it never uses. A call splits the tasks into one contiguous share
per worker, sends each worker its tasks, their per-task parameters (CPU tensors), their
first index in the meta-batch and the call's stream key, and concatenates the returned
episodes in task order. Every worker runs :func:`rkmeta_rl.rl.sampler.sample_share`, the
local sampler's code, and every episode draws from its own stream
(``rkmeta_rl/rl/streams.py``), so the episodes are bitwise those of ``--sampler local``
for any number of workers (``tests/test_ray_sampler.py``).

Faults. A worker that dies while sampling (killed, out of memory, its node lost: Ray's
``RayActorError``, ``ActorDiedError``, ``WorkerCrashedError``) is replaced by a new actor
and its share sampled again, up to :data:`MAX_TRIES` times per share and call; the streams
make the result that of an uninterrupted run. An error raised inside an env ends the run
with a :class:`~rkmeta_rl.rl.sampler.SamplingError` naming the task (index and dict), the
episode and the worker (its slot, pid and node).

The Ray node this process runs on dying (its raylet killed, out of memory, the machine
lost) is another matter: no worker can be started any more, so the run ends with
:class:`RayNodeDied`, a one-line ``ConnectionError`` naming the node, what the run
directory's last checkpoint holds and the command that resumes it. A worker that cannot
start for another reason (on a cluster, a node without rkmeta-rl or the env's module) says
so. A SIGTERM while the workers start undoes the start (workers, the instance started here,
its temporary directory) and raises :class:`~rkmeta_rl.run.stopping.RunStopped`, as a SIGTERM
during training does; asking for more workers than the CPUs this process may use starts
them all with a warning (they share the cores). ``tests/test_ray_faults.py`` checks these.
Where Ray runs and where its logs go: ``rkmeta_rl/run/ray_session.py``.
"""

from __future__ import annotations

import functools
import os
import signal
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ray
import torch
from ray.exceptions import (
    GetTimeoutError,
    RayActorError,
    RayError,
    RayTaskError,
    WorkerCrashedError,
)

from rkmeta_rl.rk import Params
from rkmeta_rl.rl.episodes import Episodes
from rkmeta_rl.rl.policy import GaussianMLPPolicy
from rkmeta_rl.rl.sampler import SamplingError, sample_share
from rkmeta_rl.rl.streams import StreamKey
from rkmeta_rl.rl.tasks import make_family
from rkmeta_rl.run import rundir
from rkmeta_rl.run.config import torch_threads
from rkmeta_rl.run.ray_session import RaySession, SigtermHold
from rkmeta_rl.run.stopping import RunStopped

MAX_TRIES = 3  # attempts per share and call when workers die
DEATHS = (RayActorError, WorkerCrashedError)  # ActorDiedError is a RayActorError
NODE_CHECK_S = 5.0  # while waiting on workers, how often to ask Ray if this node lives


class RayNodeDied(ConnectionError):
    """The Ray node this process runs on died: the run cannot go on (an OSError, so the
    CLI prints it as one line and exits with 2, as for a disk that fails)."""


class SamplingWorker:
    """A Ray actor's state: its own task family and a policy of the run's sizes."""

    def __init__(self, env: str, horizon: int, dynamics: str, hidden: Sequence[int],
                 slot: int) -> None:
        torch.set_num_threads(1)
        self.family = make_family(env, "cpu", horizon, dynamics)
        if hasattr(self.family, "nthread"):
            self.family.nthread = 1  # one CPU per actor; results do not depend on it
        self.policy = GaussianMLPPolicy(self.family.obs_dim, self.family.act_dim, hidden)
        self.name = (f"ray worker {slot} (pid {os.getpid()} on "
                     f"{ray.util.get_node_ip_address()})")

    def ready(self) -> str:
        return self.name

    def sample(self, params: Params, tasks: list[dict], first_task: int,
               episodes_per_task: int, key: StreamKey) -> Episodes:
        return sample_share(self.family, self.policy, params, tasks, episodes_per_task, key,
                            first_task, self.name)


def task_shares(num_tasks: int, workers: int) -> list[range]:
    """Contiguous shares of whole tasks, sizes differing by at most one (no empty one)."""
    base, extra = divmod(num_tasks, workers)
    shares, start = [], 0
    for w in range(workers):
        size = base + (w < extra)
        if size:
            shares.append(range(start, start + size))
        start += size
    return shares


def _plural(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def saved_iterations(run_dir: Path | None) -> int | None:
    """The iterations the run directory's last checkpoint holds (0 without one; None
    without a run directory or with an unreadable checkpoint)."""
    if run_dir is None:
        return None
    try:
        state = rundir.load_checkpoint(run_dir, required=("iteration",))
    except (ValueError, OSError):
        return None
    return 0 if state is None else int(state["iteration"])


def checkpoint_status(run_dir: Path | None) -> str:
    """What a run that ends now leaves, and how to continue it, for a one-line message."""
    if run_dir is None:
        return "nothing was written for the iteration in progress"
    saved = saved_iterations(run_dir)
    path = Path(run_dir) / rundir.CHECKPOINT
    held = (f"{path} could not be read" if saved is None
            else f"{run_dir} has no checkpoint yet" if not path.exists()
            else f"the last checkpoint, {path}, is intact: {_plural(saved, 'iteration')} "
                 f"saved")
    return (f"{held}, nothing was written for the iteration in progress; resume with: "
            f"rkmeta-rl train --resume {run_dir}")


def _last_line(text: Any) -> str:
    """The last non-blank line of ``text`` (of a traceback: the exception itself)."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[-1] if lines else ""


@functools.cache
def _remote_worker():
    """:class:`SamplingWorker` as a Ray actor class, one CPU each, never restarted by Ray
    (the sampler replaces dead workers itself)."""
    return ray.remote(num_cpus=1, max_restarts=0)(SamplingWorker)


class RaySampler:
    """The sampler call on Ray actors (module docstring). ``workers`` 0: one per CPU of
    the instance (a local one gets every core this process may use); ``address`` None:
    start a local instance, whose logs go to ``run_dir``."""

    def __init__(self, env: str, horizon: int, dynamics: str, hidden: Sequence[int],
                 workers: int = 0, address: str | None = None,
                 run_dir: Path | None = None) -> None:
        self.spec = (env, horizon, dynamics, tuple(hidden))
        self.wanted = workers
        local_cpus = workers or torch_threads(0)
        self.session = RaySession(address, None if address else local_cpus, run_dir)
        self.run_dir = run_dir
        self.actors: list[Any] = []
        self.names: list[str] = []
        self.replaced = 0  # workers replaced since start (for reports and tests)

    # -- life cycle -----------------------------------------------------------
    def start(self) -> None:
        """Connect to Ray and start the workers (idempotent). Whatever ends the start
        early undoes it; a SIGTERM meanwhile ends it with RunStopped."""
        if self.actors:
            return
        with SigtermHold() as hold:
            try:
                self._start_workers()
            except BaseException as error:
                self.close()
                if not hold.caught(error):
                    raise
        if hold.received:
            self.close()
            saved = saved_iterations(self.run_dir) or 0
            raise RunStopped(signal.SIGTERM, saved, False) from None

    def _start_workers(self) -> None:
        self.session.open()
        cpus = int(ray.cluster_resources().get("CPU", 0))
        count = self.wanted or max(1, cpus)
        if count > cpus:
            raise SamplingError(f"--workers {count}: the Ray instance has {cpus} CPUs "
                                f"(each worker takes one); give at most {cpus}, or 0 for "
                                "one per CPU")
        if self.session.started_here:
            self._warn_oversubscribed(count)
        self.actors = [self._new_actor(slot) for slot in range(count)]
        self.names = [self._ready(slot) for slot in range(count)]

    @staticmethod
    def _warn_oversubscribed(count: int) -> None:
        """A local instance gets one CPU per worker, whatever the machine has."""
        cores = torch_threads(0)
        if count > cores:
            warnings.warn(f"--workers {count} is more than the {_plural(cores, 'CPU')} this "
                          f"process may use: the {count} workers share them, which makes "
                          "sampling no faster (--workers 0: one per CPU)", stacklevel=3)

    def close(self) -> None:
        """Stop the workers, and the Ray instance if this sampler started it."""
        for actor in self.actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # already gone with its node or the instance
                pass
        self.actors, self.names = [], []
        self.session.close()

    def _new_actor(self, slot: int):
        env, horizon, dynamics, hidden = self.spec
        return _remote_worker().remote(env, horizon, dynamics, hidden, slot)

    def _ready(self, slot: int) -> str:
        """The worker's name once it has built its family: RayNodeDied if this process's
        node died meanwhile, SamplingError if the worker cannot start."""
        ref = self.actors[slot].ready.remote()
        while True:
            try:
                return ray.get(ref, timeout=NODE_CHECK_S)
            except GetTimeoutError:  # building the family takes time, or the node is gone
                self._check_node()  # (a worker created after its death waits for ever)
            except RayActorError as e:
                self._check_node()
                raise SamplingError(f"ray worker {slot} could not start: {_last_line(e)}; "
                                    "on a cluster every node needs rkmeta-rl and the "
                                    "env's module installed") from None

    def _check_node(self) -> None:
        """Raise RayNodeDied if Ray reports this process's node dead."""
        try:
            mine = ray.get_runtime_context().get_node_id()
            node = next((n for n in ray.nodes() if n.get("NodeID") == mine), None)
        except Exception:  # Ray cannot even say: the node is not known to be dead
            return
        if node is not None and not node.get("Alive", True):
            raise RayNodeDied(self._node_died(node)) from None

    def _node_died(self, node: dict[str, Any]) -> str:
        where = node.get("NodeManagerAddress") or "?"
        ident = str(node.get("NodeID", "?"))[:8]
        back = " once Ray runs on this node again" if self.session.address else ""
        return (f"the Ray node {where} (id {ident}) this process runs on died: its raylet "
                "ended (killed, out of memory, or the machine went down); "
                f"{checkpoint_status(self.run_dir)}{back}")

    # -- the sampler call -----------------------------------------------------
    def __call__(self, policy: GaussianMLPPolicy, params: Params, tasks: list[dict],
                 episodes_per_task: int, key: StreamKey) -> Episodes:
        self.start()
        shares = task_shares(len(tasks), len(self.actors))
        cpu = {n: v.detach().to("cpu") for n, v in params.items()}

        def submit(slot: int) -> Any:
            share = shares[slot]
            part = {n: v[share.start:share.stop].contiguous() for n, v in cpu.items()}
            return self.actors[slot].sample.remote(part, tasks[share.start:share.stop],
                                                   share.start, episodes_per_task, key)

        jobs = {submit(slot): (slot, 1) for slot in range(len(shares))}
        results: dict[int, Episodes] = {}
        while jobs:
            done, _ = ray.wait(list(jobs), num_returns=1, timeout=NODE_CHECK_S)
            if not done:
                self._check_node()
                continue
            (ref,) = done
            slot, tries = jobs.pop(ref)
            try:
                results[slot] = ray.get(ref)
            except DEATHS as e:
                self._check_node()
                self._replace(slot, tries, e)
                jobs[submit(slot)] = (slot, tries + 1)
            except RayTaskError as e:
                raise self._failure(e, slot, shares[slot]) from None
            except RayError as e:  # Ray itself failed (a result lost, its system)
                self._check_node()
                raise SamplingError(f"sampling failed on {self.names[slot]}: Ray: "
                                    f"{type(e).__name__}: {_last_line(e)}") from None
        return Episodes.cat([results[slot] for slot in range(len(shares))])

    def _replace(self, slot: int, tries: int, error: Exception) -> None:
        """A new actor in ``slot`` after its worker died (SamplingError after MAX_TRIES)."""
        why = _last_line(getattr(error, "error_msg", "") or error)
        if tries >= MAX_TRIES:
            raise SamplingError(f"{self.names[slot]} died {tries} times on the same tasks "
                                f"(last: {why}); giving up")
        warnings.warn(f"{self.names[slot]} died ({why}); a new worker samples its tasks "
                      "again", RuntimeWarning, stacklevel=2)
        try:
            ray.kill(self.actors[slot], no_restart=True)
        except Exception:  # it is gone already
            pass
        self.actors[slot] = self._new_actor(slot)
        self.names[slot] = self._ready(slot)
        self.replaced += 1

    def _failure(self, error: RayTaskError, slot: int, share: range) -> SamplingError:
        """A worker's exception as one SamplingError (an env's names its task already)."""
        cause = getattr(error, "cause", None)
        if isinstance(cause, SamplingError):
            return SamplingError(str(cause))
        what = (f"{type(cause).__name__}: {cause}" if cause is not None
                else _last_line(error))
        return SamplingError(f"sampling failed on {self.names[slot]} (tasks {share.start}.."
                             f"{share.stop - 1}): {what}")
