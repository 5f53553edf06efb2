"""``--sampler``, ``--workers`` and ``--ray-address``: recorded in config.json, bad values
refused with one line naming the value and the valid choices before anything is written,
and ``--sampler ray`` without Ray installed saying how to install it. No Ray starts here."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from rkmeta_rl.cli import main
from rkmeta_rl.rl import config as config_module

TINY = ["train", "--meta-batch-size", "2", "--fast-batch-size", "2", "--hidden", "8",
        "--max-episode-steps", "5", "--meta-iters", "1", "--no-progress"]


def _refused(capsys, argv: list[str], *names: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for name in names:
        assert name in err, (name, err)


def test_the_local_sampler_is_the_default_and_recorded(tmp_path):
    assert main([*TINY, "--out", str(tmp_path / "run")]) == 0
    stored = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (stored["sampler"], stored["workers"], stored["ray_address"]) == ("local", 0, None)


@pytest.mark.parametrize("flags, names", [
    (["--sampler", "dask"], ("unknown sampler 'dask'", "valid choices: local, ray")),
    (["--sampler", "ray", "--workers", "-1"], ("--workers must be >= 0", "-1")),
    (["--workers", "2"], ("--workers needs --sampler ray", "local")),
    (["--ray-address", "head:6379"], ("--ray-address needs --sampler ray",)),
    (["--sampler", "ray", "--ray-address", " "], ("--ray-address must be", "auto")),
])
def test_bad_sampler_settings_are_refused_before_anything_is_written(tmp_path, capsys,
                                                                     flags, names):
    out = tmp_path / "run"
    _refused(capsys, [*TINY, *flags, "--out", str(out)], *names)
    assert not out.exists()


def _without_ray(monkeypatch) -> None:
    """As if Ray were not installed (the config's check asks importlib)."""
    real = importlib.util.find_spec
    monkeypatch.setattr(config_module.importlib.util, "find_spec",
                        lambda name, *a: None if name == "ray" else real(name, *a))


def test_sampler_ray_without_ray_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    _without_ray(monkeypatch)
    out = tmp_path / "run"
    _refused(capsys, [*TINY, "--sampler", "ray", "--out", str(out)],
             "--sampler ray needs Ray", 'pip install -e ".[ray]"')
    assert not out.exists()


def test_a_ray_run_evaluates_without_ray(tmp_path, capsys, monkeypatch):
    """Evaluation samples locally: a run trained with --sampler ray needs no Ray there."""
    run = tmp_path / "run"
    assert main([*TINY, "--out", str(run)]) == 0
    stored = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**stored, "sampler": "ray", "workers": 2}))
    _without_ray(monkeypatch)
    assert main(["evaluate", str(run), "--tasks", "2", "--episodes", "2", "--steps", "1",
                 "--no-progress"]) == 0, capsys.readouterr().err
    assert Path(run / "eval.json").exists()
