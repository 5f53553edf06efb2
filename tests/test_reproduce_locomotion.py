"""scripts/reproduce_locomotion.py at a toy size: every phase runs its real commands
(train, train-oracle, evaluate, both plots) in process, and the report holds what they
measured beside MAML's published figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import load_script, run_in_process, table_row

from rkmeta_rl.launch import jobs
from rkmeta_rl.rl.evaluate import combine_seeds, read_eval
from rkmeta_rl.run import rundir

reproduce = load_script("reproduce_locomotion")

TOY_TRAIN = "--meta-batch-size 2 --fast-batch-size 2 --hidden 8 --max-episode-steps 10"
TOY_EVAL = "--tasks 3 --episodes 2"


def test_reproduction_at_toy_size(tmp_path: Path, monkeypatch) -> None:
    threads = torch.get_num_threads()
    monkeypatch.setattr(jobs, "run_jobs", run_in_process)
    runs, results = tmp_path / "runs", tmp_path / "results"
    argv = ["--envs", "halfcheetah-dir", "--methods", "midpoint,ralston", "--seeds", "0",
            "--meta-iters", "1", "--runs-dir", str(runs), "--results-dir", str(results),
            "--train-extra", TOY_TRAIN, "--eval-extra", TOY_EVAL, "--poll", "1000"]
    try:
        assert reproduce.main(argv) == 0
        assert reproduce.main(argv) == 0  # again: the finished runs are kept
    finally:
        torch.set_num_threads(threads)
    for name in ("midpoint-s0", "ralston-s0", "oracle-s0"):
        run = runs / f"halfcheetah-dir-{name}"
        assert json.loads((run / "config.json").read_text())["dynamics"] == "maml"
        evaluation = read_eval(run / "eval-maml.json")
        assert evaluation["step_sizes"] == [0.1, 0.05, 0.05] and len(evaluation["by_step"]) == 4
        assert (results / "runs" / run.name / "eval-maml.json").exists()
    metrics = rundir.read_metrics(runs / "halfcheetah-dir-ralston-s0")
    assert [r["iter"] for r in metrics] == [0]  # not trained again
    for fig in ("halfcheetah-dir-figure5.png", "halfcheetah-dir-training.png"):
        assert (results / fig).stat().st_size > 1000
    text = (results / "README.md").read_text()
    assert "## halfcheetah-dir (maml dynamics, 10 steps × 0.01 s = 0.1 s)" in text
    ralston = combine_seeds([read_eval(runs / "halfcheetah-dir-ralston-s0" / "eval-maml.json")])
    assert table_row(text, "ralston")[2:] == [reproduce.format_row(r) for r in ralston]
    oracle = read_eval(runs / "halfcheetah-dir-oracle-s0" / "eval-maml.json")
    assert table_row(text, "oracle")[2] == reproduce.format_row(combine_seeds([oracle])[0])
    assert table_row(text, "random init")[1] == "1"
    assert table_row(text, "MAML (published)")[2:4] == ["-50.7", "293.2"]
    assert table_row(text, "oracle (published)")[2] == "442.7"
    assert "rkmeta-rl train-oracle --env halfcheetah-dir --seed 0" in text


@pytest.mark.parametrize(("argv", "message"), [
    (["--methods", "rk9"], "unknown method 'rk9'"),
    (["--envs", "halfcheetah-dir-oracle"], "valid choices: halfcheetah-vel"),
    (["--dynamics", "rllab"], "valid choices: gymnasium, maml"),
])
def test_bad_settings_fail_before_training(tmp_path: Path, argv, message) -> None:
    with pytest.raises(ValueError, match=message):
        reproduce.main([*argv, "--runs-dir", str(tmp_path / "r"), "--results-dir",
                        str(tmp_path / "o")])
    assert not (tmp_path / "r").exists()
