"""A run directory: config.json, metrics.jsonl, TensorBoard events, checkpoint.pt.

Checkpoints are written to a temporary file and renamed over the old one, so a run
killed at any moment leaves either the previous or the new checkpoint, never half of one.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch

CONFIG = "config.json"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.pt"


def atomic_write_bytes(path: Path, writer) -> None:
    """Call writer(file) on ``path``.tmp, fsync, then rename it over ``path``."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_config(run_dir: Path, config: dict[str, Any]) -> None:
    text = json.dumps(config, indent=2, sort_keys=True).encode()
    atomic_write_bytes(run_dir / CONFIG, lambda f: f.write(text))


def read_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / CONFIG
    if not path.is_file():
        raise ValueError(f"{run_dir} is not a run directory: {path} is missing")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> None:
    atomic_write_bytes(run_dir / CHECKPOINT, lambda f: torch.save(state, f))


def load_checkpoint(run_dir: Path, required: tuple[str, ...] = ("iteration", "policy")
                    ) -> dict[str, Any] | None:
    """The run's checkpoint, None if it has none yet; ValueError if it is unreadable or
    lacks one of the ``required`` keys."""
    path = run_dir / CHECKPOINT
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises many kinds for a damaged file
        raise ValueError(f"checkpoint {path} is corrupt or unreadable ({type(e).__name__}: {e})"
                         ) from None
    if not isinstance(state, dict) or any(key not in state for key in required):
        raise ValueError(f"checkpoint {path} is corrupt: it lacks one of {list(required)}")
    return state


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


def append_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    line = json.dumps({k: _json_safe(v) for k, v in record.items()}, allow_nan=False)
    with open(run_dir / METRICS, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_metrics(run_dir: Path, drop_torn_last_line: bool = False) -> list[dict[str, Any]]:
    """The records of metrics.jsonl. A run killed while appending can leave a torn last
    line: it is dropped when ``drop_torn_last_line``, any other bad line is an error."""
    path = run_dir / METRICS
    if not path.exists():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    records = []
    for n, line in enumerate(lines, start=1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            if drop_torn_last_line and n == len(lines):
                break
            raise ValueError(f"{path} line {n} is not valid JSON ({e})") from None
    return records


def truncate_metrics(run_dir: Path, iterations_done: int) -> None:
    """Keep only records of iterations < iterations_done (a resumed run redoes the rest)."""
    records = [r for r in read_metrics(run_dir, drop_torn_last_line=True)
               if r["iter"] < iterations_done]
    text = "".join(json.dumps(r) + "\n" for r in records).encode()
    atomic_write_bytes(run_dir / METRICS, lambda f: f.write(text))
