"""The package on the other MuJoCo: the suite runs on the installed one (MuJoCo 4, or
3.3 where ``.[metaworld]`` installed metaworld's pin); this test installs the other one into
a fresh virtual environment on top of this one's packages and runs there the tests that
depend on the version: the locomotion batches against Gymnasium (HalfCheetah on
``mujoco.batch`` under MuJoCo 4, on ``LoopPhysics`` under 3.3), MAML's dynamics against
plain MuJoCo, and Meta-World (its weld fix under MuJoCo 4, none under 3.3).

It needs the package index (or pip's cache) to install MuJoCo; it skips, saying so, where
pip cannot.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mujoco
import pytest

ROOT = Path(__file__).resolve().parent.parent
OTHER = "mujoco>=4" if int(mujoco.__version__.split(".")[0]) < 4 else "mujoco==3.3.0"
TESTS = ["tests/test_mujoco_loop.py", "tests/test_mujoco_batch.py", "tests/test_metaworld.py",
         "tests/test_locomotion_dynamics.py::test_maml_ant_contacts_are_rllabs",
         "tests/test_locomotion_dynamics.py::test_maml_control_step_and_states_are_plain_mujoco"]


@pytest.mark.slow
def test_the_version_dependent_tests_pass_on_the_other_mujoco(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                   check=True)
    python = str(venv / "bin" / "python")
    install = subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                              OTHER], capture_output=True, text=True)
    if install.returncode != 0:
        pytest.skip(f"pip could not install {OTHER}: {install.stderr.strip()[-300:]}")
    version = subprocess.run([python, "-c", "import mujoco; print(mujoco.__version__)"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert version != mujoco.__version__
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    tail = run.stdout[-3000:] + run.stderr[-1000:]
    assert run.returncode == 0, f"on MuJoCo {version}:\n{tail}"
    assert " passed" in run.stdout.splitlines()[-1], tail
