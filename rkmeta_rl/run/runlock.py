"""One writer per run directory: an exclusive ``flock`` on ``RUN_DIR/.lock``.

The operating system drops the lock when the process ends, however it ends (``kill -9``
included), so there is never a stale lock to delete by hand. The lock file names the
process holding it (pid, host, start time, command), so a refused second writer can say
who is writing. Within one process the lock is re-entrant.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import weakref
from pathlib import Path

try:
    import fcntl  # POSIX; where it is missing (Windows) runs are not locked
except ImportError:  # pragma: no cover
    fcntl = None

LOCK = ".lock"


_HELD: dict[str, list] = {}  # real path -> [open lock file, count] held by this process


def _describe_holder(lock_file: Path) -> str:
    try:
        info = json.loads(lock_file.read_text())
        return (f"process {info['pid']} on {info['host']} (since {info['since']}: "
                f"{info['command']})")
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def lock(run_dir: Path) -> str:
    """Take the run directory's writer lock (re-entrant within this process); returns a key
    for :func:`unlock`. A directory in use by another process is refused at once, naming
    that process. The lock ends with the process, also on kill -9."""
    run_dir = Path(run_dir)
    key = os.path.realpath(run_dir)
    if key in _HELD:
        _HELD[key][1] += 1
        return key
    path = run_dir / LOCK
    try:
        f = open(path, "a+")
    except OSError as e:
        raise ValueError(f"cannot write {path}: {e.strerror or e}") from None
    if fcntl is not None:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            raise ValueError(f"{run_dir} is in use by {_describe_holder(path)}; wait for it "
                             "to finish or stop it, or use another --out") from None
    info = {"pid": os.getpid(), "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)}
    f.seek(0)
    f.truncate()
    f.write(json.dumps(info) + "\n")
    f.flush()
    _HELD[key] = [f, 1]
    return key


def unlock(key: str) -> None:
    """Give back one hold of :func:`lock`; the last one releases the directory."""
    held = _HELD.get(key)
    if held is None:
        return
    held[1] -= 1
    if held[1] <= 0:
        del _HELD[key]
        held[0].close()  # closing the file drops the flock


class WriterLock:
    """One hold of a run directory's writer lock (:func:`lock`), given back by
    :meth:`release` or, at the latest, when this object is garbage-collected."""

    def __init__(self, run_dir: Path) -> None:
        self.key = lock(run_dir)
        self._release = weakref.finalize(self, unlock, self.key)

    def release(self) -> None:
        self._release()  # runs once; later calls do nothing
