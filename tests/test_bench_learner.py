"""scripts/bench_learner.py runs and reports every variant against the built-in path."""

from __future__ import annotations

import torch
from helpers import load_script


def test_bench_learner_times_every_variant(capsys):
    bench = load_script("bench_learner")
    threads = torch.get_num_threads()
    try:
        assert bench.main(["--problems", "sinusoid", "--iters", "2", "--warmup", "0",
                           "--loop"]) == 0
    finally:
        torch.set_num_threads(threads)  # the script sets the process's
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("sinusoid: midpoint, 1 thread(s), medians of 2 steps")
    assert [line.split()[0] for line in lines[1:]] == ["builtin", "stacked", "list", "loop"]
