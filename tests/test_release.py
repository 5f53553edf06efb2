"""The release files: the repository names no machine's absolute paths, CITATION.cff and
CHANGELOG.md match the version, and (slow) the sdist and wheel build, hold what they must,
and the wheel installed in a fresh virtual environment runs ``rkmeta-rl`` from elsewhere.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

from rkmeta_rl import __version__

ROOT = Path(__file__).resolve().parents[1]
PAPER = "Model-Agnostic Meta-Learning using Runge-Kutta Methods"
MACHINE_DIRS = ("work", "tmp", "root", "home")  # spelt apart: this file names none of them
# an absolute path into one of those folders, not a relative one such as runs/NAME/x
ABSOLUTE = re.compile(r"(?<![\w.~-])/(?:" + "|".join(MACHINE_DIRS) + ")/")
SDIST_FILES = ("LICENSE", "CHANGELOG.md", "CITATION.cff", "README.md")
TRAIN = ["train", "--env", "nav2d", "--method", "ralston", "--meta-iters", "1",
         "--meta-batch-size", "2", "--fast-batch-size", "2", "--hidden", "8,8",
         "--num-threads", "1", "--no-progress"]


# -- no machine paths --------------------------------------------------------------------


def tracked_files() -> list[Path]:
    """The files git tracks in this checkout (skips where it is no git checkout)."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout (or no git): the tracked files are unknown")
    done = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                          check=True)
    return [ROOT / name for name in done.stdout.decode().split("\0") if name]


def absolute_paths(path: Path) -> list[str]:
    """``FILE:LINE: text`` for each line of a text file that names an absolute path."""
    data = path.read_bytes() if path.is_file() else b""
    if b"\0" in data:  # binary (figures)
        return []
    lines = data.decode("utf-8", errors="replace").splitlines()
    return [f"{path.relative_to(ROOT)}:{n}: {line.strip()[:120]}"
            for n, line in enumerate(lines, 1) if ABSOLUTE.search(line)]


def test_no_tracked_file_names_an_absolute_machine_path():
    found = [hit for path in tracked_files() for hit in absolute_paths(path)]
    assert not found, "absolute paths (write them relative to the repository):\n" + \
        "\n".join(found)


@pytest.mark.parametrize("folder", MACHINE_DIRS)
def test_the_absolute_path_pattern(folder):
    assert ABSOLUTE.search(f'"data": ["/{folder}/shared/data/omniglot/a.zip"]')
    assert ABSOLUTE.search(f"--out /{folder}/sin-midpoint")
    assert not ABSOLUTE.search(f"--data ../shared/data runs/{folder}/x ~/{folder}/y "
                               f"https://example.org/{folder}/ ./{folder}/z")


# -- citation and changelog --------------------------------------------------------------


def test_citation_names_the_software_and_the_paper():
    yaml = pytest.importorskip("yaml")
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0"
    assert (cff["title"], str(cff["version"]), cff["license"]) == ("rkmeta-rl", __version__,
                                                                  "MIT")
    paper = cff["preferred-citation"]
    assert paper["title"] == PAPER and paper["year"] == 2019
    assert paper["url"] == "https://arxiv.org/abs/1910.07368"
    assert [a["family-names"] for a in paper["authors"]] == ["Im", "Jiang", "Verma"]
    assert [r["title"] for r in cff["references"]] == [PAPER]


def test_changelog_has_this_version_and_unreleased():
    headings = re.findall(r"^## \[([^\]]+)\]", (ROOT / "CHANGELOG.md").read_text(), re.M)
    assert headings[:2] == ["Unreleased", __version__]


# -- the wheel, installed ----------------------------------------------------------------


def missing_build_tools() -> list[str]:
    """What ``python -m build --no-isolation`` needs (pyproject.toml's build-system) and
    this Python lacks."""
    missing = [] if importlib.util.find_spec("build") else ["build"]
    try:
        major = int(metadata.version("setuptools").split(".")[0])
    except metadata.PackageNotFoundError:
        major = 0
    return missing + (["setuptools>=77"] if major < 77 else [])


def build_dists(out: Path) -> tuple[Path, Path]:
    """The sdist, and the wheel built from it, without downloading a build environment
    (the sdist's egg-info in the checkout is removed again unless it was there before)."""
    egg_info = ROOT / "rkmeta_rl.egg-info"
    keep = egg_info.exists()
    try:
        done = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir",
                               str(out), str(ROOT)], capture_output=True, text=True, timeout=600)
    finally:
        if not keep:
            shutil.rmtree(egg_info, ignore_errors=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (sdist,), (wheel,) = out.glob("*.tar.gz"), out.glob("*.whl")
    return sdist, wheel


def check_wheel(wheel: Path) -> None:
    info = f"rkmeta_rl-{__version__}.dist-info"
    with zipfile.ZipFile(wheel) as whl:
        names, meta = whl.namelist(), whl.read(f"{info}/METADATA").decode()
    assert "rkmeta_rl/py.typed" in names and "rkmeta_rl/cli.py" in names
    assert "envs/__init__.py" in names and "envs/nav2d.py" in names
    assert f"{info}/licenses/LICENSE" in names
    assert f"\nVersion: {__version__}\n" in meta and "\nLicense-Expression: MIT\n" in meta


def check_sdist(sdist: Path) -> None:
    with tarfile.open(sdist) as tar:
        names = set(tar.getnames())
    top = f"rkmeta_rl-{__version__}"
    assert {f"{top}/{name}" for name in SDIST_FILES} <= names
    assert f"{top}/rkmeta_rl/py.typed" in names


def outside_env() -> dict[str, str]:
    """The environment less PYTHONPATH: the venv's Python finds only what it installed."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def run_in(venv: Path, cwd: Path, *argv: str) -> subprocess.CompletedProcess:
    exe = venv / "bin" / argv[0]
    return subprocess.run([str(exe), *argv[1:]], cwd=cwd, env=outside_env(),
                          capture_output=True, text=True, timeout=600)


def install_in_venv(wheel: Path, venv: Path) -> None:
    """A fresh venv that sees the system's packages (torch and the rest, no download) and
    has the wheel installed in it."""
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                   check=True, timeout=300)
    done = run_in(venv, venv, "pip", "install", "--no-deps", "--no-index", str(wheel))
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow
@pytest.mark.skipif(bool(missing_build_tools()),
                    reason=f"needs {' and '.join(missing_build_tools())} to build offline "
                           "(pip install -e '.[dev]')")
def test_wheel_installs_and_runs_outside_the_repository(tmp_path):
    """Build, check the contents, install in a new venv and run from tmp_path: 23-32 s
    on 2 shared cores (mostly the venv, three torch imports and one tiny training)."""
    sdist, wheel = build_dists(tmp_path / "dist")
    check_wheel(wheel)
    check_sdist(sdist)
    venv, work = tmp_path / "venv", tmp_path / "work"
    work.mkdir()
    install_in_venv(wheel, venv)

    where = run_in(venv, work, "python", "-c",
                   "import envs, rkmeta_rl; print(rkmeta_rl.__file__); print(envs.__file__)")
    assert where.returncode == 0, where.stderr
    paths = [Path(f).resolve() for f in where.stdout.split()]
    assert all(p.is_relative_to(venv.resolve()) for p in paths), where.stdout

    version = run_in(venv, work, "rkmeta-rl", "--version")
    assert (version.returncode, version.stdout) == (0, f"rkmeta-rl {__version__}\n")

    train = run_in(venv, work, "rkmeta-rl", *TRAIN, "--out", "run")
    assert train.returncode == 0, train.stderr
    assert len((work / "run" / "metrics.jsonl").read_text().splitlines()) == 1
