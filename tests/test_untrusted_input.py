"""Files from elsewhere are untrusted input: every command that reads a file it did not
write in this process (evaluate, supervised-evaluate, render, train/supervised --resume,
``load_run``, the plot scripts) answers a malformed, truncated, empty or wrong-kind file with
one line naming the file and what is wrong, and exit code 2: never a traceback."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from rkmeta_rl.analysis.plots import adaptation as plot_adaptation
from rkmeta_rl.analysis.plots import training as plot_training
from rkmeta_rl.analysis.plots import trajectories as plot_trajectories
from rkmeta_rl.cli import main
from rkmeta_rl.rl import load_run

TINY = ["--env", "nav2d", "--meta-batch-size", "2", "--fast-batch-size", "2", "--hidden", "8",
        "--max-episode-steps", "10", "--meta-iters", "1", "--no-progress"]
SINUSOID = ["--benchmark", "sinusoid", "--meta-batch-size", "2", "--hidden", "8,8",
            "--meta-iters", "2", "--log-every", "1", "--eval-tasks", "2", "--no-progress"]


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, Path]:
    """A good RL run (evaluated) and a good supervised run, copied by each test."""
    root = tmp_path_factory.mktemp("made")
    rl, sup = root / "rl", root / "sup"
    assert main(["train", *TINY, "--out", str(rl)]) == 0
    assert main(["evaluate", str(rl), "--tasks", "2", "--episodes", "2", "--steps", "1",
                 "--no-progress"]) == 0
    assert main(["supervised", *SINUSOID, "--out", str(sup)]) == 0
    return {"rl": rl, "sup": sup}


def _error_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def _check(code: int, capsys, *names: str) -> None:
    err = capsys.readouterr().err
    assert code == 2, err
    line = _error_line(err)
    for name in names:
        assert name in line, (name, line)


# -- damaged files, as a collaborator might send them --------------------------------------

CONFIGS: dict[str, Callable[[dict], bytes | dict | list]] = {
    "empty": lambda c: b"",
    "truncated": lambda c: json.dumps(c).encode()[:40],
    "binary": lambda c: b"\x89PNG\r\n\x1a\n\x00\xff",
    "a list": lambda c: [c],
    "a string": lambda c: "nav2d",
    "unknown key": lambda c: {**c, "learning_rate": 1},
    "wrong type": lambda c: {**c, "max_kl": "small"},
    "bad hidden": lambda c: {**c, "hidden": "abc"},
    "unknown env": lambda c: {**c, "env": "pong"},
    "unknown method": lambda c: {**c, "method": "rk9", "tableau": None},
    "bad tableau": lambda c: {**c, "tableau": {"a": [1, "x"], "q": [[0, 0], [1, 0]]}},
}

CHECKPOINTS: dict[str, Callable[[dict], bytes | object]] = {
    "empty": lambda s: b"",
    "truncated": lambda s: None,  # first 300 bytes of the real one
    "garbage": lambda s: b"\x00not a checkpoint\xff" * 20,
    "a list": lambda s: [1, 2, 3],
    "no weights": lambda s: {k: v for k, v in s.items() if k not in ("policy", "params")},
    "wrong shapes": lambda s: _reshaped(s),
    "negative iteration": lambda s: {**s, "iteration": -4},
    "iteration as text": lambda s: {**s, "iteration": "3"},
}


def _reshaped(state: dict) -> dict:
    key = "policy" if "policy" in state else "params"
    weights = {k: torch.zeros(*v.shape, 2) for k, v in state[key].items()}
    return {**state, key: weights}


def _write_config(run: Path, how: str) -> None:
    path = run / "config.json"
    value = CONFIGS[how](json.loads(path.read_text()))
    path.write_bytes(value if isinstance(value, bytes) else json.dumps(value).encode())


def _write_checkpoint(run: Path, how: str) -> None:
    path = run / "checkpoint.pt"
    original = path.read_bytes()
    value = CHECKPOINTS[how](torch.load(path, weights_only=True))
    if how == "truncated":
        path.write_bytes(original[:300])
    elif isinstance(value, bytes):
        path.write_bytes(value)
    else:
        torch.save(value, path)


READERS = {  # command -> (which run it reads, its argv)
    "evaluate": ("rl", lambda run: ["evaluate", str(run), "--tasks", "2", "--episodes", "2",
                                    "--steps", "1", "--no-progress"]),
    "resume": ("rl", lambda run: ["train", "--resume", str(run)]),
    "render": ("rl", lambda run: ["render", str(run)]),
    "supervised-evaluate": ("sup", lambda run: ["supervised-evaluate", str(run), "--tasks",
                                                "2"]),
    "supervised-resume": ("sup", lambda run: ["supervised", "--resume", str(run)]),
}
RL_READERS = [name for name, (kind, _) in READERS.items() if kind == "rl"]
SUPERVISED_READERS = [name for name, (kind, _) in READERS.items() if kind == "sup"]


def _damaged(made: dict[str, Path], tmp_path: Path, reader: str) -> tuple[Path, list[str]]:
    """A copy of the run ``reader`` reads, and its command line."""
    kind, argv = READERS[reader]
    run = shutil.copytree(made[kind], tmp_path / "run")
    return run, argv(run)


@pytest.mark.parametrize("how", CONFIGS)
@pytest.mark.parametrize("reader", RL_READERS)
def test_rl_commands_name_a_damaged_config(made, tmp_path, capsys, reader, how):
    run, argv = _damaged(made, tmp_path, reader)
    _write_config(run, how)
    _check(main(argv), capsys, "config.json")


@pytest.mark.parametrize("how", ["empty", "truncated", "a list", "wrong type", "bad tableau"])
@pytest.mark.parametrize("reader", SUPERVISED_READERS)
def test_supervised_commands_name_a_damaged_config(made, tmp_path, capsys, reader, how):
    run, argv = _damaged(made, tmp_path, reader)
    path = run / "config.json"
    config = json.loads(path.read_text())
    value = {**config, "meta_lr": "fast"} if how == "wrong type" else CONFIGS[how](config)
    path.write_bytes(value if isinstance(value, bytes) else json.dumps(value).encode())
    _check(main(argv), capsys, "config.json")


@pytest.mark.parametrize("how", CHECKPOINTS)
@pytest.mark.parametrize("reader", READERS)
def test_every_command_names_a_damaged_checkpoint(made, tmp_path, capsys, reader, how):
    run, argv = _damaged(made, tmp_path, reader)
    _write_checkpoint(run, how)
    _check(main(argv), capsys, "checkpoint.pt")


def test_a_supervised_checkpoint_in_an_rl_run_is_named(made, tmp_path, capsys):
    run = shutil.copytree(made["rl"], tmp_path / "run")
    shutil.copy(made["sup"] / "checkpoint.pt", run / "checkpoint.pt")
    _check(main(READERS["evaluate"][1](run)), capsys, "checkpoint.pt", "policy")


def test_load_run_raises_one_clear_error(made, tmp_path):
    run = shutil.copytree(made["rl"], tmp_path / "run")
    _write_checkpoint(run, "wrong shapes")
    with pytest.raises(ValueError, match=r"checkpoint\.pt does not fit the run"):
        load_run(run)


def test_a_run_directory_that_is_a_file_is_named(tmp_path, capsys):
    path = tmp_path / "run"
    path.write_text("{}")
    for argv in (["evaluate", str(path)], ["supervised-evaluate", str(path)],
                 ["train", "--resume", str(path)], ["render", str(path)]):
        _check(main(argv), capsys, str(path))


def test_a_tableau_file_is_checked_field_by_field(tmp_path, capsys):
    bad = tmp_path / "mine.json"
    bad.write_text('{"a": [0.5, 0.5], "q": [[0, 0], [true, 0]]}')
    _check(main(["train", *TINY, "--tableau", str(bad), "--out", str(tmp_path / "o")]), capsys,
           "mine.json", "q[1][0]")
    assert not (tmp_path / "o").exists()


# -- the plot scripts (rkmeta_rl/analysis/plots/) --------------------------------------------

EVALS = {
    "empty": b"",
    "truncated": b'{"by_step": [{"mean": 1.0, "ci9',
    "a list": b"[]",
    "no by_step": b'{"env": "nav2d", "method": "x", "init": "trained"}',
    "text means": b'{"env": "nav2d", "method": "x", "init": "trained", '
                  b'"by_step": [{"mean": "high", "ci95": [0, 1]}]}',
}


@pytest.mark.parametrize("how", EVALS)
def test_plot_adaptation_names_a_damaged_evaluation(made, tmp_path, capsys, how):
    bad = tmp_path / "eval.json"
    bad.write_bytes(EVALS[how])
    with pytest.raises(SystemExit) as exit_:
        plot_adaptation.main([str(made["rl"] / "eval.json"), str(bad), "--out",
                              str(tmp_path / "f.png")])
    assert exit_.value.code == 2
    assert str(bad) in _error_line(capsys.readouterr().err)


@pytest.mark.parametrize("how", ["garbage line", "a list line", "supervised metrics"])
def test_plot_training_names_damaged_metrics(made, tmp_path, capsys, how):
    run = shutil.copytree(made["rl"], tmp_path / "run")
    lines = (run / "metrics.jsonl").read_text().splitlines()
    if how == "garbage line":
        lines.insert(0, "{not json")
    elif how == "a list line":
        lines.insert(0, "[1, 2]")
    else:
        lines = [json.dumps({"iter": 0, "loss_stage1": 1.0})]
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(SystemExit) as exit_:
        plot_training.main([str(run), "--out", str(tmp_path / "t.png")])
    assert exit_.value.code == 2
    assert str(run) in _error_line(capsys.readouterr().err)


@pytest.mark.parametrize("how", ["empty", "wrong shapes"])
def test_plot_trajectories_names_a_damaged_checkpoint(made, tmp_path, capsys, how):
    run = shutil.copytree(made["rl"], tmp_path / "run")
    _write_checkpoint(run, how)
    with pytest.raises(SystemExit) as exit_:
        plot_trajectories.main([str(run), "--out", str(tmp_path / "p.png"), "--episodes", "2"])
    assert exit_.value.code == 2
    assert "checkpoint.pt" in _error_line(capsys.readouterr().err)
