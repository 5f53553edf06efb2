"""A run directory: config.json, metrics.jsonl, TensorBoard events, checkpoint.pt, and
snapshots/iter-NNNNNN.pt (the policy every few iterations, for ``evaluate --checkpoint``).

What it promises (docs/guides/reliability.md):

* Checkpoints are written to a temporary file and renamed over the old one, so a run
  killed at any moment, or a write that fails (disk full, read-only), leaves the previous
  checkpoint whole. A metrics line is appended whole or not at all.
* Checkpoints hold tensors and plain data only and are read with ``weights_only=True``:
  loading one never runs code. A file that needs more is refused; a trusted old one is
  converted once with :func:`convert_trusted_checkpoint` (``rkmeta-rl convert-checkpoint``).
* One writer per directory (``rkmeta_rl.run.runlock``): :func:`open_run` and the trainers
  hold its lock while they write. Readers (evaluate, plots) take no lock.
* Files read here (config.json, metrics.jsonl, checkpoint.pt) may come from elsewhere: every
  problem is a one-line ``ValueError`` naming the file and what is wrong.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import shutil
import warnings
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Protocol, TypeVar

import numpy as np
import torch

from rkmeta_rl.run.config import torch_threads
from rkmeta_rl.run.runlock import WriterLock

CONFIG = "config.json"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.pt"
SNAPSHOTS = "snapshots"

T = TypeVar("T")


class WriteError(ValueError):
    """A run-directory file could not be written (disk full, read-only, ...)."""


def _write_error(path: Path, err: OSError) -> WriteError:
    reason = err.strerror or str(err)
    return WriteError(f"cannot write {path}: {reason}; the previous checkpoint and metrics "
                      "are intact: free space or fix permissions, then resume with --resume "
                      f"{path.parent}")


def atomic_write_bytes(path: Path, writer: Callable[[IO[bytes]], Any]) -> None:
    """Call writer(file) on ``path``.tmp, fsync, then rename it over ``path``; an OSError
    becomes a :class:`WriteError` and ``path`` is left as it was."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise _write_error(path, err) from None
        raise


def write_config(run_dir: Path, config: dict[str, Any]) -> None:
    text = json.dumps(config, indent=2, sort_keys=True).encode()
    atomic_write_bytes(run_dir / CONFIG, lambda f: f.write(text))


def read_json(path: Path, what: str) -> Any:
    """A JSON file from elsewhere; a missing, unreadable or malformed one is a one-line
    ValueError naming it."""
    if not path.is_file():
        raise ValueError(f"{path}: no such {what}" + (" (it is a directory)" if path.is_dir()
                                                        else ""))
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read {what} ({e})") from None
    if not text.strip():
        raise ValueError(f"{path}: {what} is empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: {what} is not valid JSON ({e})") from None


def read_config(run_dir: Path) -> dict[str, Any]:
    """config.json as a dict (a one-line ValueError if it is not one)."""
    path = Path(run_dir) / CONFIG
    if not path.exists():
        raise ValueError(f"{run_dir} is not a run directory: {path} is missing")
    config = read_json(path, "run config")
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a JSON object of settings, got "
                         f"{type(config).__name__}")
    return config


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> None:
    atomic_write_bytes(run_dir / CHECKPOINT, lambda f: torch.save(state, f))


def _unsafe(path: Path) -> ValueError:
    return ValueError(f"{path} holds objects other than tensors and plain data; loading it could "
                      "run code, so it is refused. If you trust where it came from, convert it "
                      f"once with: rkmeta-rl convert-checkpoint {path}")


def load_checkpoint(run_dir: Path, required: tuple[str, ...] = ("iteration", "policy")
                    ) -> dict[str, Any] | None:
    """The run's checkpoint, None if it has none yet. Read with ``weights_only=True`` (no
    code runs); ValueError if it is unreadable, unsafe, or lacks one of ``required``."""
    path = Path(run_dir) / CHECKPOINT
    if not path.exists():
        return None
    return load_state_file(path, required)


def snapshot_path(run_dir: Path, iteration: int) -> Path:
    return Path(run_dir) / SNAPSHOTS / f"iter-{iteration:06d}.pt"


def save_snapshot(run_dir: Path, iteration: int, policy: dict[str, Any]) -> None:
    """The policy after ``iteration`` meta-iterations, written atomically."""
    path = snapshot_path(run_dir, iteration)
    path.parent.mkdir(exist_ok=True)
    atomic_write_bytes(path, lambda f: torch.save({"iteration": iteration, "policy": policy}, f))


def snapshot_iterations(run_dir: Path) -> list[int]:
    """The iterations the run has snapshots of, in order (other files are ignored)."""
    folder = Path(run_dir) / SNAPSHOTS
    names = folder.glob("iter-*.pt") if folder.is_dir() else []
    found = (p.stem.removeprefix("iter-") for p in names)
    return sorted(int(n) for n in found if len(n) == 6 and n.isdigit())


def load_snapshot(run_dir: Path, iteration: int) -> dict[str, Any]:
    """A snapshot written by :func:`save_snapshot` (ValueError if missing or damaged)."""
    path = snapshot_path(run_dir, iteration)
    if not path.exists():
        have = snapshot_iterations(run_dir)
        raise ValueError(f"{run_dir} has no snapshot of iteration {iteration}; it has "
                         f"{', '.join(map(str, have)) if have else 'none'}")
    state = load_state_file(path, ("iteration", "policy"))
    if state["iteration"] != iteration:
        raise ValueError(f"snapshot {path} is corrupt: it holds iteration {state['iteration']}")
    return state


def load_state_file(path: Path, required: tuple[str, ...]) -> dict[str, Any]:
    """A checkpoint-like file read with ``weights_only=True``; ValueError if it is
    unreadable, unsafe, lacks one of ``required`` or has no iteration count."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" in str(e):
            raise _unsafe(path) from None
        raise ValueError(f"checkpoint {path} is corrupt or unreadable ({e})") from None
    except Exception as e:  # torch raises many kinds for a damaged file
        first = str(e).splitlines()[0] if str(e) else ""
        raise ValueError(f"checkpoint {path} is corrupt or unreadable ({type(e).__name__}: "
                         f"{first})") from None
    if not isinstance(state, dict) or any(key not in state for key in required):
        raise ValueError(f"checkpoint {path} is corrupt or of another kind of run: it lacks "
                         f"one of {list(required)}")
    it = state.get("iteration")
    if isinstance(it, bool) or not isinstance(it, int) or it < 0:
        raise ValueError(f"checkpoint {path} is corrupt: its iteration {it!r} is not a count")
    return state


def _plain(value: Any, where: str) -> Any:
    """``value`` as tensors and plain data (numpy arrays become tensors); anything else
    is refused, naming where it was found."""
    if isinstance(value, np.generic):  # first: np.float64 is also a float
        return value.item()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.array(value))
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return value
    if isinstance(value, dict):
        items = ((k, _plain(v, f"{where}[{k!r}]")) for k, v in value.items())
        return OrderedDict(items) if isinstance(value, OrderedDict) else dict(items)
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v, f"{where}[{i}]") for i, v in enumerate(value))
    raise ValueError(f"cannot convert {where}: a {type(value).__name__} is not plain data")


def convert_trusted_checkpoint(path: str | Path) -> Path:
    """Rewrite a checkpoint YOU TRUST as tensors and plain data, so that it loads with
    ``weights_only=True``. Loading it here may run code from the file. The original is
    kept beside it as ``*.orig``; returns that path."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.is_file():
        raise ValueError(f"{path}: no such checkpoint file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise ValueError(f"checkpoint {path} is corrupt or unreadable ({type(e).__name__})"
                         ) from None
    plain = _plain(state, "checkpoint")
    backup = path.with_name(path.name + ".orig")
    shutil.copy2(path, backup)
    atomic_write_bytes(path, lambda f: torch.save(plain, f))  # a failure leaves the original
    return backup


def check_new_or_same(run_dir: Path, wanted: dict[str, Any], existing=None) -> bool:
    """True if ``run_dir`` already holds the run ``wanted`` (continue it), False if it is
    new. ``existing()`` gives the stored config re-resolved (so a setting added since
    compares by its default). A different run, or leftovers without a config, is refused.
    """
    if (run_dir / CONFIG).exists():
        old = json.loads(json.dumps(existing() if existing else read_config(run_dir)))
        new = json.loads(json.dumps(wanted))
        if old != new:
            diff = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
            raise ValueError(
                f"{run_dir} already holds a different run (settings differ: {', '.join(diff)}); "
                "use --resume to continue it or --out for a new directory"
            )
        return True
    leftovers = [name for name in (METRICS, CHECKPOINT) if (run_dir / name).exists()]
    if leftovers:
        raise ValueError(f"{run_dir} holds {', '.join(leftovers)} but no {CONFIG}; "
                         "refusing to mix a new run into it (use another --out)")
    return False


def log_scalars(writer, run_dir: Path, record: dict[str, Any], step: int) -> None:
    """Append ``record`` to metrics.jsonl and its numbers to TensorBoard at ``step``."""
    append_metrics(run_dir, record)
    for k, v in record.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "iter":
            writer.add_scalar(k, v, step)
    writer.flush()


def _json_safe(value: Any) -> Any:
    """NaN and ±Inf become null: strict JSON readers refuse bare NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _metrics_line(record: dict[str, Any]) -> bytes:
    """One record as one line of metrics.jsonl (strict JSON: NaN and ±Inf as null)."""
    return (json.dumps({k: _json_safe(v) for k, v in record.items()}, allow_nan=False) + "\n"
            ).encode()


def write_metrics(run_dir: Path, records: list[dict[str, Any]]) -> None:
    """Replace metrics.jsonl with ``records``, atomically (:func:`atomic_write_bytes`)."""
    text = b"".join(_metrics_line(r) for r in records)
    atomic_write_bytes(Path(run_dir) / METRICS, lambda f: f.write(text))


def append_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    """Append one line, whole or not at all: on any failure the file is cut back to its
    previous length (no torn line) and an OSError becomes a :class:`WriteError`."""
    line = _metrics_line(record)
    path = run_dir / METRICS
    with open(path, "ab") as f:
        size = f.tell()
        try:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        except BaseException as err:
            _cut_back(f, size)
            if isinstance(err, OSError):
                raise _write_error(path, err) from None
            raise


def _cut_back(f: IO[bytes], size: int) -> None:
    try:
        f.truncate(size)
    except OSError:  # the file system refuses even that: resume drops a torn last line
        pass


def read_metrics(run_dir: Path, drop_torn_last_line: bool = False) -> list[dict[str, Any]]:
    """The records of metrics.jsonl. A run killed while appending can leave a torn last
    line: it is dropped when ``drop_torn_last_line``, any other bad line is an error."""
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read metrics ({e})") from None
    lines = [line for line in text.splitlines() if line.strip()]
    records = []
    for n, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            if drop_torn_last_line and n == len(lines):
                break
            raise ValueError(f"{path} line {n} is not valid JSON ({e})") from None
        if not isinstance(record, dict) or not isinstance(record.get("iter"), int):
            raise ValueError(f"{path} line {n} is not a metrics record (a JSON object with "
                             "an integer 'iter')")
        records.append(record)
    return records


def truncate_metrics(run_dir: Path, iterations_done: int) -> None:
    """Keep only records of iterations < iterations_done (a resumed run redoes the rest)."""
    write_metrics(run_dir, [r for r in read_metrics(run_dir, drop_torn_last_line=True)
                            if r["iter"] < iterations_done])


def open_run(run_dir: Path, wanted: dict[str, Any], existing: Callable[[], dict[str, Any]],
             new: Callable[[], T], resume: Callable[[], T]) -> T:
    """Start the run ``wanted`` in ``run_dir``, or continue it if the directory holds this
    same run. ``new()`` builds the trainer (it validates everything before anything is
    written); ``resume()`` builds one from the directory. A different run is refused, and
    so is a directory another process writes to."""
    if check_new_or_same(run_dir, wanted, existing):
        return resume()
    trainer = new()
    run_dir.mkdir(parents=True, exist_ok=True)
    held = WriterLock(run_dir)
    try:
        if check_new_or_same(run_dir, wanted, existing):  # made meanwhile elsewhere
            return resume()
        write_config(run_dir, wanted)
        trainer.writer_lock = held  # type: ignore[attr-defined]
        held = None
        return trainer
    finally:
        if held is not None:
            held.release()


class Resumable(Protocol):
    """What :func:`continue_run` needs of a trainer (RL and supervised alike)."""

    iteration: int
    writer_lock: WriterLock | None

    def load_state(self, state: dict[str, Any]) -> None: ...


R = TypeVar("R", bound=Resumable)


def continue_run(run_dir: Path, trainer: R, state: dict[str, Any] | None) -> R:
    """Position ``trainer`` after the checkpoint ``state`` (None: at the start), take the
    directory's writer lock, and cut metrics.jsonl back to the iterations done. The lock
    comes before the only write (nothing is touched in a directory another process holds)."""
    if state is not None:
        restore(run_dir, trainer.load_state, state)
    trainer.writer_lock = WriterLock(run_dir)
    truncate_metrics(run_dir, trainer.iteration)
    return trainer


def change_on_resume(run_dir: Path, trainer: Any, meta_iters: int | None = None,
                     num_threads: int | None = None) -> None:
    """What ``--resume DIR`` may change of a run positioned by :func:`continue_run`.

    ``meta_iters``: train to that many iterations, at least those done (a finished run is
    extended; config.json records the new target). The iterations are the same as a run
    given that many from the start would have made. ``num_threads``: for this process only;
    when the count differs from the run's own, the continued run may differ in the last bits
    from an uninterrupted one (docs/method.md, "Reproducibility"), which a warning says."""
    try:
        _change(run_dir, trainer, meta_iters, num_threads)
    except BaseException:
        trainer.writer_lock.release()  # nothing written: the run is as it was
        trainer.writer_lock = None
        raise


def _change(run_dir: Path, trainer: Any, meta_iters: int | None,
            num_threads: int | None) -> None:
    cfg = trainer.cfg
    if num_threads is not None:
        torch_threads(num_threads)  # ValueError for a negative count
    if meta_iters is not None:
        if isinstance(meta_iters, bool) or not isinstance(meta_iters, int) or \
                meta_iters < max(1, trainer.iteration):
            raise ValueError(f"--meta-iters {meta_iters}: the run in {run_dir} has done "
                             f"{trainer.iteration} iterations; give at least that many "
                             "(and at least 1) to continue or extend it")
        stored = read_config(run_dir)
        stored["meta_iters"] = cfg.meta_iters = meta_iters
        write_config(run_dir, stored)
    if num_threads is not None:
        if trainer.threads(num_threads) != trainer.threads(cfg.num_threads):
            warnings.warn(f"--num-threads {num_threads} differs from the run's own "
                          f"({cfg.num_threads}): the continued run may differ in the last "
                          "bits from one that was never interrupted", stacklevel=3)
        cfg.num_threads = num_threads


def restore(run_dir: Path, load: Callable[[dict[str, Any]], Any], state: dict[str, Any],
            name: str = CHECKPOINT) -> None:
    """``load(state)``, with a checkpoint (or the snapshot ``name``) that does not fit the
    run (wrong names, shapes or types) reported as a one-line ValueError naming it."""
    try:
        load(state)
    except (KeyError, IndexError, RuntimeError, TypeError, ValueError, AttributeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"checkpoint {Path(run_dir) / name} does not fit the run in its "
                         f"config.json ({type(e).__name__}: {first})") from None
