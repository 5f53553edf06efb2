"""Tests for the ``rkmeta-rl`` command line (rkmeta_rl.cli).

Commands run in-process through ``cli.main(argv)`` (its exit code and captured output);
one test runs the installed console script to prove the entry point works, one runs
``python -m rkmeta_rl.cli`` for ``--version`` and the bare help. Every
training run is tiny (2 tasks x 2 episodes, an 8x8 policy, 1-3 meta-iterations).
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import interrupt_on_call

from rkmeta_rl import __version__
from rkmeta_rl.cli import build_parser, main
from rkmeta_rl.methods import METHOD_NAMES, get_tableau
from rkmeta_rl.rl.config import PRESETS, TrainConfig
from rkmeta_rl.run import rundir

TINY = ["--meta-batch-size", "2", "--fast-batch-size", "2", "--hidden", "8,8", "--no-progress"]
METHODS = ("euler", "midpoint", "heun", "ralston", "ralston23", "itb", "rk3", "rk4")
TIMING = "seconds"
ROOT = Path(__file__).resolve().parents[1]


def train_argv(out: Path, *extra: str, iters: int = 1) -> list[str]:
    return ["train", *TINY, "--meta-iters", str(iters), "--out", str(out), *extra]


def snapshot(path: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``path``: relative name -> (contents, mtime_ns)."""
    return {str(p.relative_to(path)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(path.rglob("*")) if p.is_file()}


def error_line(err: str) -> str:
    """The single ``rkmeta-rl: error:`` line of a failed command (asserts there is one)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one error line, got {lines}"
    assert lines[0].startswith("rkmeta-rl: error: "), lines[0]
    return lines[0]


def without_timing(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith(TIMING)} for r in records]


@pytest.fixture(scope="module")
def template_run(tmp_path_factory) -> Path:
    """A finished 1-iteration ralston run with seed 0 (copied, never touched directly)."""
    out = tmp_path_factory.mktemp("template") / "run"
    assert main(train_argv(out)) == 0
    return out


@pytest.fixture
def existing_run(template_run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "existing"
    shutil.copytree(template_run, out)
    return out


# -- methods -----------------------------------------------------------------------------


def _first_column(text: str) -> set[str]:
    return {line.split()[0] for line in text.splitlines() if line.strip()}


def test_methods_lists_every_named_method(capsys):
    assert main(["methods"]) == 0
    out, err = capsys.readouterr()
    assert set(METHODS) <= _first_column(out)
    assert set(METHOD_NAMES) == set(METHODS)
    assert err == ""


def test_console_script_methods():
    exe = shutil.which("rkmeta-rl")
    assert exe is not None, "the rkmeta-rl console script is not installed"
    proc = subprocess.run([exe, "methods"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert set(METHODS) <= _first_column(proc.stdout)


def test_bare_command_prints_the_full_help(capsys):
    assert main([]) == 0
    out, err = capsys.readouterr()
    assert out == build_parser().format_help() and err == ""
    assert "train" in out and "--version" in out


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr() == (f"rkmeta-rl {__version__}\n", "")


@pytest.mark.slow
def test_module_entry_point_version_and_help():
    """``python -m rkmeta_rl.cli`` as a user runs it: --version and no arguments exit 0."""
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "rkmeta_rl.cli", *args], cwd=ROOT,
                              capture_output=True, text=True, timeout=300)

    version, bare = run("--version"), run()
    assert (version.returncode, version.stdout) == (0, f"rkmeta-rl {__version__}\n")
    assert bare.returncode == 0 and bare.stderr == ""
    assert bare.stdout.startswith("usage: rkmeta-rl") and "convert-checkpoint" in bare.stdout


# -- train end to end --------------------------------------------------------------------


def test_train_end_to_end_writes_a_complete_run_dir(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_argv(out, iters=2)) == 0
    stdout, err = capsys.readouterr()
    assert stdout.startswith("final: return_pre ")
    assert f"run directory {out}" in err and "α = 0.16" in err

    config = json.loads((out / "config.json").read_text())
    assert set(config) == {f.name for f in dataclasses.fields(TrainConfig)}
    assert config["method"] == "ralston"
    assert config["alpha"] == pytest.approx(0.16)
    assert config["h"] == pytest.approx(0.16 / 0.75)
    assert config["tableau"] == get_tableau("ralston").to_dict()
    assert config["hidden"] == [8, 8] and config["meta_iters"] == 2
    assert TrainConfig.from_dict(config).get_tableau() == get_tableau("ralston")

    lines = (out / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["iter"] for r in records] == [0, 1]
    for r in records:
        for key in ("return_pre", "return_post", "kl", "surrogate_improvement", "seconds",
                    "return_stage1", "return_stage2"):
            assert isinstance(r[key], float) and math.isfinite(r[key]), (key, r)
        assert isinstance(r["line_search_steps"], int) and r["line_search_steps"] >= 0
        assert isinstance(r["accepted"], bool)
        assert "return_stage3" not in r
        # the two-stage return_post is the stage-2 (adapted) return
        assert r["return_post"] == r["return_stage2"]
        assert r["return_pre"] == r["return_stage1"]
        assert 0.0 <= r["kl"] <= 0.01 * (1 + 1e-6)

    events = list(out.glob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 0
    state = rundir.load_checkpoint(out)
    assert state is not None and state["iteration"] == 2
    assert state["config"] == config


def test_tensorboard_events_hold_one_scalar_per_iteration(tmp_path):
    ea_mod = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    out = tmp_path / "run"
    assert main(train_argv(out, iters=2)) == 0
    acc = ea_mod.EventAccumulator(str(out))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"return_pre", "return_post", "kl", "return_stage2"} <= tags
    records = rundir.read_metrics(out)
    events = acc.Scalars("return_pre")
    assert [e.step for e in events] == [0, 1]
    assert [e.value for e in events] == pytest.approx([r["return_pre"] for r in records])


def test_train_euler_has_a_finite_return_post(tmp_path):
    out = tmp_path / "run"
    assert main(train_argv(out, "--method", "euler", iters=2)) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["alpha"] == config["h"] == pytest.approx(0.16)
    records = rundir.read_metrics(out)
    assert [r["iter"] for r in records] == [0, 1]
    for r in records:
        assert math.isfinite(r["return_post"]) and math.isfinite(r["return_stage1"])
        assert "return_stage2" not in r
        assert r["return_pre"] == r["return_stage1"]


@pytest.mark.parametrize(
    ("flags", "alpha", "h"),
    [
        ([], 0.16, 0.16 / 0.75),
        (["--step-size", "0.2"], 0.75 * 0.2, 0.2),
        (["--inner-lr", "0.1"], 0.1, 0.1 / 0.75),
        (["--method", "midpoint"], 0.16, 0.32),
        (["--method", "euler", "--step-size", "0.2"], 0.2, 0.2),
    ],
    ids=["default", "step-size", "inner-lr", "midpoint", "euler-step-size"],
)
def test_step_size_readings_are_recorded(tmp_path, capsys, flags, alpha, h):
    out = tmp_path / "run"
    assert main(train_argv(out, *flags)) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["alpha"] == pytest.approx(alpha, rel=1e-12)
    assert config["h"] == pytest.approx(h, rel=1e-12)
    assert f"α = {alpha:g}, h = {h:g}" in capsys.readouterr().err


# -- train again into the same directory -------------------------------------------------


def test_train_again_with_same_settings_resumes(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    argv = train_argv(out, iters=3)
    with monkeypatch.context() as m:
        interrupt_on_call(m, 2)
        assert main(argv) == 130
    assert "--resume" in capsys.readouterr().err
    assert [r["iter"] for r in rundir.read_metrics(out)] == [0]
    assert rundir.load_checkpoint(out)["iteration"] == 1

    assert main(argv) == 0
    _, err = capsys.readouterr()
    assert "iteration 1/3" in err
    assert [r["iter"] for r in rundir.read_metrics(out)] == [0, 1, 2]
    assert rundir.load_checkpoint(out)["iteration"] == 3

    # a finished run: the same command again trains nothing and changes no record
    before = (out / "metrics.jsonl").read_text(), (out / "checkpoint.pt").read_bytes()
    assert main(argv) == 0
    stdout, err = capsys.readouterr()
    assert "final:" not in stdout and "iteration 3/3" in err
    assert ((out / "metrics.jsonl").read_text(), (out / "checkpoint.pt").read_bytes()) == before


def test_resume_flag_continues_a_run(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        interrupt_on_call(m, 3)
        assert main(train_argv(out, iters=3)) == 130
    assert main(["train", "--resume", str(out), "--no-progress"]) == 0
    assert "iteration 2/3" in capsys.readouterr().err
    assert [r["iter"] for r in rundir.read_metrics(out)] == [0, 1, 2]


# -- bad input: exit 2, one error line, nothing written ------------------------------------


def _check_refused(argv: list[str], capsys, *names: str) -> None:
    code = main(argv)
    _, err = capsys.readouterr()
    assert code == 2, err
    line = error_line(err)
    for name in names:
        assert name in line, (name, line)


def _write_tableau(tmp_path: Path, text: str) -> str:
    path = tmp_path / "bad_tableau.json"
    path.write_text(text)
    return str(path)


BAD_VALUES = [
    pytest.param(["--env", "gridworld"], ("'gridworld'", "valid choices", "nav2d"), id="env"),
    pytest.param(["--method", "rk5"], ("'rk5'", "valid choices", "euler", "ralston", "rk4"),
                 id="method"),
    pytest.param(["--tableau", "{upper}"], ("bad_tableau.json", "lower triangular"),
                 id="tableau-upper-triangular"),
    pytest.param(["--tableau", "{weights}"], ("bad_tableau.json", "sum to 1"),
                 id="tableau-weights"),
    pytest.param(["--tableau", "{notjson}"], ("bad_tableau.json", "invalid JSON"),
                 id="tableau-not-json"),
    pytest.param(["--tableau", "{missing}"], ("no_such_tableau.json", "not found"),
                 id="tableau-missing"),
    pytest.param(["--inner-lr", "0"], ("--inner-lr", "0"), id="inner-lr-0"),
    pytest.param(["--inner-lr", "-1"], ("--inner-lr", "-1"), id="inner-lr-negative"),
    pytest.param(["--inner-lr", "nan"], ("--inner-lr", "nan"), id="inner-lr-nan"),
    pytest.param(["--step-size", "0"], ("--step-size", "0"), id="step-size-0"),
    pytest.param(["--curvature-fraction", "0"], ("--curvature-fraction", "0"),
                 id="curvature-fraction-0"),
    pytest.param(["--curvature-fraction", "1.5"], ("--curvature-fraction", "1.5"),
                 id="curvature-fraction-1.5"),
    pytest.param(["--max-kl", "0"], ("--max-kl", "0"), id="max-kl-0"),
    pytest.param(["--meta-iters", "0"], ("--meta-iters", "0"), id="meta-iters-0"),
    pytest.param(["--ls-ratio", "1"], ("--ls-ratio", "1"), id="ls-ratio-1"),
    pytest.param(["--device", "tpu"], ("--device", "tpu"), id="device"),
    pytest.param(["--device", "cuda"], ("--device cuda", "not available"), id="no-cuda",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present")),
    pytest.param(["--seed", "-1"], ("--seed", "-1"), id="seed-negative"),
    pytest.param(["--cg-damping", "nan"], ("--cg-damping", "nan"), id="cg-damping-nan"),
    pytest.param(["--preset", "fast"], ("'fast'", "valid choices", "quick"), id="preset"),
    pytest.param(["--max-episode-steps", "0"], ("--max-episode-steps", "0"), id="horizon-0"),
]


def _fill(flags: list[str], tmp_path: Path) -> list[str]:
    files = {
        "{upper}": lambda: _write_tableau(
            tmp_path, json.dumps({"a": [0.5, 0.5], "q": [[0, 1], [0, 0]]})),
        "{weights}": lambda: _write_tableau(
            tmp_path, json.dumps({"a": [0.5, 0.4], "q": [[0, 0], [1, 0]]})),
        "{notjson}": lambda: _write_tableau(tmp_path, '{"a": [1], "q": [[0]'),
        "{missing}": lambda: str(tmp_path / "no_such_tableau.json"),
    }
    return [files[f]() if f in files else f for f in flags]


@pytest.mark.parametrize(("flags", "names"), BAD_VALUES)
def test_bad_value_is_refused_and_nothing_is_written(tmp_path, capsys, existing_run, flags,
                                                     names):
    flags = _fill(flags, tmp_path)
    fresh = tmp_path / "fresh"
    _check_refused(train_argv(fresh, *flags), capsys, *names)
    assert not fresh.exists()

    before = snapshot(existing_run)
    _check_refused(train_argv(existing_run, *flags), capsys, *names)
    assert snapshot(existing_run) == before


@pytest.mark.parametrize(
    ("flags", "names"),
    [
        (["--inner-lr", "0.1", "--step-size", "0.2"], ("--inner-lr", "--step-size")),
        (["--hidden", "0,5"], ("--hidden", "'0,5'")),
        (["--hidden", "abc"], ("--hidden", "'abc'")),
        (["--meta-iters", "two"], ("--meta-iters", "'two'")),
    ],
    ids=["inner-lr-and-step-size", "hidden-zero", "hidden-abc", "meta-iters-abc"],
)
def test_bad_argument_is_an_argparse_error(tmp_path, capsys, existing_run, flags, names):
    fresh = tmp_path / "fresh"
    before = snapshot(existing_run)
    for out in (fresh, existing_run):
        with pytest.raises(SystemExit) as exc:
            main(train_argv(out, *flags))
        assert exc.value.code == 2
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if "error:" in line]
        assert len(errors) == 1, err
        for name in names:
            assert name in errors[0], (name, errors[0])
    assert not fresh.exists()
    assert snapshot(existing_run) == before


@pytest.mark.parametrize(
    ("flags", "setting"),
    [(["--seed", "1"], "seed"), (["--method", "heun"], "method"),
     (["--inner-lr", "0.1"], "alpha")],
    ids=["seed", "method", "inner-lr"],
)
def test_out_holding_a_different_run_is_refused(capsys, existing_run, flags, setting):
    before = snapshot(existing_run)
    _check_refused(train_argv(existing_run, *flags), capsys, "different run", setting,
                   str(existing_run))
    assert snapshot(existing_run) == before
    assert json.loads((existing_run / "config.json").read_text())["seed"] == 0


def test_resume_of_a_directory_without_config_is_refused(tmp_path, capsys):
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "notes.txt").write_text("not a run\n")
    before = snapshot(plain)
    _check_refused(["train", "--resume", str(plain)], capsys, str(plain), "config.json")
    assert snapshot(plain) == before

    missing = tmp_path / "missing"
    _check_refused(["train", "--resume", str(missing)], capsys, str(missing))
    assert not missing.exists()


@pytest.mark.parametrize("extra", [["--seed", "3"], ["--seed=3"], ["--hidden", "4,4"]])
def test_resume_with_extra_settings_is_refused(capsys, existing_run, extra):
    before = snapshot(existing_run)
    _check_refused(["train", "--resume", str(existing_run), *extra], capsys,
                   extra[0].split("=")[0])
    assert snapshot(existing_run) == before


@pytest.mark.parametrize("how", ["resume", "same-settings"])
def test_corrupt_checkpoint_is_refused_and_left_as_is(capsys, existing_run, how):
    (existing_run / "checkpoint.pt").write_bytes(b"\x00garbage, not a checkpoint\xff" * 8)
    before = snapshot(existing_run)
    argv = (["train", "--resume", str(existing_run)] if how == "resume"
            else train_argv(existing_run))
    _check_refused(argv, capsys, "corrupt", "checkpoint.pt")
    assert snapshot(existing_run) == before


def test_truncated_checkpoint_is_reported_as_corrupt(capsys, existing_run):
    ckpt = existing_run / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:200])
    before = snapshot(existing_run)
    _check_refused(["train", "--resume", str(existing_run)], capsys, "corrupt")
    assert snapshot(existing_run) == before


def test_checkpoint_without_policy_is_reported_as_corrupt(capsys, existing_run):
    torch.save({"iteration": 1}, existing_run / "checkpoint.pt")
    before = snapshot(existing_run)
    _check_refused(["train", "--resume", str(existing_run)], capsys, "corrupt", "policy")
    assert snapshot(existing_run) == before


def test_main_reads_sys_argv_by_default(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["rkmeta-rl", "methods"])
    assert main() == 0
    assert set(METHODS) <= _first_column(capsys.readouterr().out)


def test_preset_fills_defaults_and_explicit_flags_win(tmp_path):
    out = tmp_path / "quick"
    assert main(["train", "--preset", "quick", "--meta-iters", "1", "--hidden", "8",
                 "--meta-batch-size=3", "--out", str(out), "--no-progress"]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["preset"] == "quick"
    assert cfg["meta_iters"] == 1 and cfg["meta_batch_size"] == 3  # given: kept
    assert cfg["fast_batch_size"] == PRESETS["quick"]["fast_batch_size"]  # from the preset
    assert cfg["curvature_fraction"] == PRESETS["quick"]["curvature_fraction"]
    assert cfg["max_episode_steps"] == PRESETS["quick"]["max_episode_steps"]


def test_horizon_defaults_per_family_and_is_recorded(tmp_path):
    assert main(train_argv(tmp_path / "a")) == 0
    assert json.loads((tmp_path / "a" / "config.json").read_text())["max_episode_steps"] == 100
    assert main(train_argv(tmp_path / "b", "--max-episode-steps", "7")) == 0
    assert json.loads((tmp_path / "b" / "config.json").read_text())["max_episode_steps"] == 7
    records = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    # 7 steps, each ending within √2·0.5 + 7·0.1·√2 < 1.42 of the goal: a hard bound that
    # 100-step episodes (about -70 at this point) break
    assert records[0]["return_pre"] > -7 * 1.42


def test_run_made_before_a_setting_existed_still_resumes(tmp_path, capsys):
    out = tmp_path / "old"
    assert main(train_argv(out, iters=1)) == 0
    cfg = json.loads((out / "config.json").read_text())
    del cfg["max_episode_steps"], cfg["preset"]  # as an older rkmeta-rl wrote it
    (out / "config.json").write_text(json.dumps(cfg))
    assert main(train_argv(out, iters=1)) == 0
    assert "iteration 1/1" in capsys.readouterr().err
