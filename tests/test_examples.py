"""The scripts in examples/ run as a user runs them (``python examples/NAME.py``), at a
reduced budget, and do what they say."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(name: str, *args: str) -> str:
    done = subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True,
                          text=True, timeout=300, cwd=EXAMPLES.parent)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.slow
def test_own_model_meta_learns_sine_waves():
    out = run("own_model.py", "--iters", "300")
    before, after = map(float, re.search(r"steps: ([\d.]+) before .*, ([\d.]+) after", out)
                        .groups())
    assert after < 0.7 * before, out  # seed 0: 3.78 -> 2.04


@pytest.mark.slow
def test_layer_methods_trains_each_rule_string():
    out = run("layer_methods.py", "--iters", "40")
    lines = out.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["*=ralston", "4=midpoint,*=ralston",
                                                   "4=midpoint,*=frozen:midpoint"]
    assert "step sizes α 0, 0.01" in lines[2]  # ANIL: the body does not move
    assert all(float(line.split()[-1]) < 10 for line in lines)
