"""A dependency-free progress bar: one line, redrawn in place on a terminal, one line
per update otherwise (logs stay readable)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    def __init__(self, total: int, start: int = 0, stream: TextIO | None = None, width: int = 24):
        self.total, self.done, self.width = total, start, width
        self.stream = stream if stream is not None else sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.t_start = time.perf_counter()
        self.start = start

    def update(self, done: int, **fields: float) -> None:
        self.done = done
        filled = int(self.width * done / max(self.total, 1))
        bar = "#" * filled + "-" * (self.width - filled)
        rate = (time.perf_counter() - self.t_start) / max(done - self.start, 1)
        text = " ".join(f"{k} {v:.4g}" for k, v in fields.items())
        line = f"[{bar}] {done}/{self.total} {text} {rate:.2f}s/it"
        if self.tty:
            self.stream.write("\r" + line)
            if done >= self.total:
                self.stream.write("\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
