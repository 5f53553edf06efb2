"""Fixtures shared by test modules: the supervised ones (test_supervised_train.py,
test_supervised_evaluate.py, test_supervised_cli.py), module-scoped, each module that uses
one builds its own; and the documentation site (test_docs.py, test_docs_browser.py), built
once per session.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from docs_site import build
from supervised_fixtures import omniglot_folder
from supervised_runs import sinusoid, train


@pytest.fixture(scope="module")
def omniglot_root(tmp_path_factory) -> Path:
    """4 alphabets x 5 distinct characters x 2 drawings: 15 training and 5 held-out
    characters (enough for 5-way tasks; rotations add no classes)."""
    return omniglot_folder(tmp_path_factory.mktemp("omniglot") / "omni", num_alphabets=4)


@pytest.fixture(scope="module")
def sinusoid_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("sinusoid") / "run"
    train(sinusoid(), run)
    return run


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Path:
    """The documentation site, built once with ``mkdocs build --strict`` (tests that use it
    skip first where the docs extra is missing)."""
    site_dir = tmp_path_factory.mktemp("site")
    done = build(site_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    return site_dir
