"""Chunks of tasks on CPU threads, one chunk per thread: how the closed-form curvature
uses several cores (docs/method.md, "The exact curvature product").

A chunk's work (``Episodes.task_chunks``: about 10k steps) is a few hundred torch ops,
many of them thin products and elementwise passes that torch's own threads split poorly.
With torch's T threads, :func:`map_chunks` runs the chunks on T Python threads instead,
each running torch on one thread (torch releases the GIL inside an op). Every chunk is
then computed exactly as on one thread, so the results do not depend on the thread
count, and the callers add the chunks' parts in chunk order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

from rkmeta_rl.rl.episodes import one_torch_thread

Item = TypeVar("Item")
Out = TypeVar("Out")


def map_chunks(fn: Callable[[Item], Out], items: Sequence[Item],
               device: torch.device | str = "cpu") -> list[Out]:
    """``[fn(x) for x in items]``, in that order. On the CPU with torch on T > 1 threads,
    the items run on min(T, len(items)) Python threads, torch on one thread each; the
    same numbers as on one thread."""
    threads = torch.get_num_threads()
    if threads == 1 or len(items) < 2 or torch.device(device).type != "cpu":
        return [fn(x) for x in items]
    grad = torch.is_grad_enabled()  # thread-local: the caller's mode, in every thread

    def run(x: Item) -> Out:
        with torch.set_grad_enabled(grad):
            return fn(x)

    # set in each thread too: torch's setting of MKL's thread count is per thread
    with one_torch_thread(), ThreadPoolExecutor(
            min(threads, len(items)), initializer=torch.set_num_threads, initargs=(1,)) as pool:
        return list(pool.map(run, items))
