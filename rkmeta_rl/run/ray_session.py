"""The Ray instance a training run samples on: started here, joined, or already there.

* No address and Ray not initialised: this process starts a local instance with
  ``num_cpus`` CPUs, no dashboard, and ``log_to_driver=False`` (the workers' output stays
  in Ray's log files, not over the progress bar); :meth:`RaySession.close` shuts it down,
  so no ``raylet`` or ``ray::`` process outlives the run (``tests/test_ray_sampler.py``).
  Ray's files live in a short temporary directory (its unix sockets allow about 107
  characters, more than many run directories leave), and the run directory's
  ``ray-logs/SESSION`` points to the session's logs while it runs; at the end the logs are
  moved there and the temporary directory removed.
* An address (``--ray-address HOST:PORT`` or ``auto``): this process joins that cluster and
  leaves it running at the end (its workers are killed, the connection closed).
* Ray already initialised in this process (a script or a test that called ``ray.init``):
  it is used as it is and left running.

``ray.init`` installs its own SIGTERM handler (``sys.exit``) and leaves it behind after
``ray.shutdown``; :func:`init_keeping_signals` puts the previous handler back, since the
trainer handles SIGTERM itself (``rkmeta_rl/run/stopping.py``) and a library should not
change a process's handlers for good.

A start that fails, however (an error, Ctrl-C, or a SIGTERM that ``ray.init``'s handler
turns into ``SystemExit``), leaves nothing: :meth:`RaySession.open` shuts down what it
started and removes the temporary directory before the exception goes on. A SIGTERM that
would kill the process outright while Ray and its workers start (no handler of its own) is
held by :class:`SigtermHold` (``RaySampler.start``) until the start is undone
(``tests/test_ray_faults.py``).
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import ray

LOGS = "ray-logs"
_SHORT_TMP = "/tmp"  # a short parent for Ray's sockets where it exists


def init_keeping_signals(**options: Any) -> Any:
    """``ray.init(**options)`` (its result) with SIGTERM's handler as it was before (main
    thread): the training run's and the launcher's (``rkmeta_rl/launch/grid.py``) alike."""
    main = threading.current_thread() is threading.main_thread()
    saved = signal.getsignal(signal.SIGTERM) if main else None
    try:
        return ray.init(**options)
    finally:
        if main and saved is not None:
            signal.signal(signal.SIGTERM, saved)


class SigtermHold:
    """``with SigtermHold() as hold:`` around a start-up, in the main thread: a SIGTERM that
    would end the process at once (its handler is the default) only sets ``hold.received``,
    so that the caller can undo the start-up first; :meth:`caught` also counts the
    ``SystemExit(SIGTERM)`` of ``ray.init``'s own handler. A handler the process has of its
    own stays in place; the default one is back when the block ends."""

    def __init__(self) -> None:
        self.received = False
        self._held = False

    def __enter__(self) -> SigtermHold:
        main = threading.current_thread() is threading.main_thread()
        if main and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, self._record)
            self._held = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._held:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            self._held = False

    def _record(self, signum: int, frame: FrameType | None) -> None:
        self.received = True

    def caught(self, error: BaseException) -> bool:
        """Whether a SIGTERM came during the start-up (``error``: how the start-up ended)."""
        if isinstance(error, SystemExit) and error.code == signal.SIGTERM:
            self.received = True  # ray.init's handler: sys.exit(signum)
        return self.received


class RaySession:
    """One run's use of Ray (module docstring): :meth:`open`, then :meth:`close`."""

    def __init__(self, address: str | None, num_cpus: int | None,
                 log_dir: Path | None) -> None:
        self.address, self.num_cpus, self.log_dir = address, num_cpus, log_dir
        self.owned = False  # this process called ray.init (and calls ray.shutdown)
        self.temp_dir: str | None = None
        self.link: Path | None = None

    def open(self) -> None:
        """Connect as the module docstring says (idempotent); a start that fails, by an
        error or a signal, is undone before its exception goes on."""
        if self.owned or ray.is_initialized():
            return
        try:
            self._start()
        except BaseException:  # SystemExit from ray.init's SIGTERM handler, Ctrl-C, errors
            self._discard()
            raise
        self.owned = True

    def _start(self) -> None:
        options = dict(log_to_driver=False, configure_logging=False)
        if self.address is not None:
            init_keeping_signals(address=self.address, **options)
            return
        parent = _SHORT_TMP if os.path.isdir(_SHORT_TMP) else None
        self.temp_dir = tempfile.mkdtemp(prefix="rkray-", dir=parent)
        init_keeping_signals(num_cpus=self.num_cpus, include_dashboard=False,
                             _temp_dir=self.temp_dir, **options)
        self._link_logs()

    def _discard(self) -> None:
        """Undo a start that failed: whatever Ray started, the link, the temporary
        directory (nothing of it was a session yet worth keeping logs of)."""
        try:
            ray.shutdown()  # safe on a half-started or never-started Ray
        finally:
            if self.link is not None:
                self.link.unlink(missing_ok=True)
                self.link = None
            if self.temp_dir is not None:
                shutil.rmtree(self.temp_dir, ignore_errors=True)
                self.temp_dir = None

    @property
    def started_here(self) -> bool:
        """Whether this process started the instance (no address, not there before)."""
        return self.owned and self.address is None

    def close(self) -> None:
        """Disconnect; shut down the instance if this process started it and move its logs
        into the run directory (idempotent)."""
        if not self.owned:
            return
        self.owned = False
        ray.shutdown()
        if self.temp_dir is not None:
            self._keep_logs()
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            self.temp_dir = None

    def _session_logs(self) -> Path | None:
        """The session's log directory under the temporary directory."""
        latest = Path(self.temp_dir) / "session_latest"
        return latest.resolve() / "logs" if latest.exists() else None

    def _link_logs(self) -> None:
        """``LOG_DIR/ray-logs/SESSION`` -> the live logs."""
        logs = self._session_logs()
        if self.log_dir is None or logs is None:
            return
        self.link = Path(self.log_dir) / LOGS / logs.parent.name
        try:
            self.link.parent.mkdir(parents=True, exist_ok=True)
            self.link.unlink(missing_ok=True)
            self.link.symlink_to(logs, target_is_directory=True)
        except OSError:
            self.link = None  # a run directory without links: the logs stay in temp_dir

    def _keep_logs(self) -> None:
        """Replace the link by the logs themselves."""
        logs = self._session_logs()
        if self.link is None or logs is None:
            return
        try:
            self.link.unlink(missing_ok=True)
            shutil.copytree(logs, self.link, symlinks=True)
        except OSError:
            pass  # the run's own files matter more than Ray's logs
        self.link = None
