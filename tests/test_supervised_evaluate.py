"""Supervised evaluation (rkmeta_rl.supervised.evaluate.evaluate_supervised_run) of tiny
trained runs: per-step losses and confidence intervals on held-out sinusoid tasks, defaults
and task chunks, argument errors, and Omniglot accuracy with the standard one-shot runs.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from supervised_fixtures import omniglot_folder, one_shot_runs, write_zip
from supervised_runs import train

from rkmeta_rl.supervised.config import SupervisedConfig, resolve
from rkmeta_rl.supervised.evaluate import evaluate_supervised_run


@pytest.fixture(scope="module")
def all_runs_zip(tmp_path_factory) -> Path:
    """all_runs.zip with 2 standard runs of 20 ways."""
    return write_zip(tmp_path_factory.mktemp("runs") / "all_runs.zip", one_shot_runs(2, 20))


def test_evaluate_sinusoid(sinusoid_run, tmp_path):
    out = tmp_path / "eval.json"
    result = evaluate_supervised_run(sinusoid_run, out, tasks=7, steps=3)
    assert json.loads(out.read_text()) == result
    assert (result["benchmark"], result["method"], result["tasks"], result["steps"]) == (
        "sinusoid", "midpoint", 7, 3)
    assert result["alpha"] == 0.01 and len(result["by_step"]) == 4
    for k, row in enumerate(result["by_step"]):
        assert row["step"] == k and "accuracy" not in row
        loss = row["loss"]
        per_task = np.array(loss["per_task"])
        assert len(per_task) == 7 and (per_task >= 0).all()
        assert loss["mean"] == pytest.approx(per_task.mean())
        assert loss["std"] == pytest.approx(per_task.std(ddof=1))
        half = stats.t.ppf(0.975, df=6) * per_task.std(ddof=1) / math.sqrt(7)
        assert loss["ci95"] == pytest.approx([per_task.mean() - half, per_task.mean() + half])
    assert result["summary"][0] == "midpoint: 7 held-out tasks, α = 0.01"

    again = tmp_path / "again.json"
    evaluate_supervised_run(sinusoid_run, again, tasks=7, steps=3)
    assert again.read_bytes() == out.read_bytes()
    other = evaluate_supervised_run(sinusoid_run, None, tasks=7, steps=3, seed=5)
    assert other["seed"] == 5
    assert other["by_step"][0]["loss"]["per_task"] != result["by_step"][0]["loss"]["per_task"]
    bigger = evaluate_supervised_run(sinusoid_run, None, tasks=7, steps=3, alpha=0.05)
    assert bigger["alpha"] == 0.05
    assert bigger["by_step"][0] == result["by_step"][0]  # same tasks, same θ before adapting
    assert bigger["by_step"][1] != result["by_step"][1]


def test_evaluate_defaults_and_task_chunks(sinusoid_run):
    default = evaluate_supervised_run(sinusoid_run, None)  # the run's test_tasks, test_steps
    assert default["tasks"] == 6 and default["steps"] == 10 and len(default["by_step"]) == 11
    fifty = evaluate_supervised_run(sinusoid_run, None, tasks=50, steps=1)
    sixty = evaluate_supervised_run(sinusoid_run, None, tasks=60, steps=1)  # 2 chunks: 50 + 10
    for k in (0, 1):
        assert sixty["by_step"][k]["loss"]["per_task"][:50] == \
            fifty["by_step"][k]["loss"]["per_task"]
        assert len(sixty["by_step"][k]["loss"]["per_task"]) == 60


@pytest.mark.parametrize("kwargs, match", [
    (dict(tasks=0), r"--tasks must be >= 1, got 0"),
    (dict(steps=-1), r"--steps must be >= 0, got -1"),
    (dict(alpha=-0.1), r"--alpha must be a positive number, got -0.1"),
    (dict(seed=-3), r"--seed must be in \[0, 2\*\*32\), got -3"),
    (dict(runs="all_runs.zip"), r"--runs scores Omniglot's one-shot runs; .* is sinusoid"),
])
def test_evaluate_errors(sinusoid_run, kwargs, match):
    with pytest.raises(ValueError, match=match):
        evaluate_supervised_run(sinusoid_run, None, **kwargs)


def test_evaluate_omniglot_with_the_standard_runs(omniglot_root, all_runs_zip, tmp_path):
    common = dict(benchmark="omniglot", method="midpoint", shots=1, filters=4,
                  meta_batch_size=1, meta_iters=1, eval_tasks=1)
    forty = omniglot_folder(tmp_path / "omni40", num_alphabets=8)  # 20 train, 20 held out
    twenty = tmp_path / "20way"
    train(resolve(SupervisedConfig(ways=20, num_train_classes=20, data=[forty], **common)),
          twenty)
    result = evaluate_supervised_run(twenty, twenty / "eval.json", tasks=3, steps=1,
                                     runs=all_runs_zip)
    assert result["ways"] == 20 and result["alpha"] == 0.1 and len(result["by_step"]) == 2
    for row in result["by_step"]:
        assert len(row["accuracy"]["per_task"]) == 3
        assert all(0 <= a <= 1 for a in row["accuracy"]["per_task"])
    standard = result["one_shot_runs"]
    assert standard["runs"] == 2 and standard["steps"] == 1
    assert standard["path"] == str(all_runs_zip)
    assert len(standard["accuracy"]["per_task"]) == 2 and len(standard["accuracy_by_step"]) == 2
    assert 0 <= standard["accuracy"]["mean"] <= 1
    assert standard["accuracy_by_step"][-1] == pytest.approx(standard["accuracy"]["mean"])
    assert "20 standard one-shot runs after 1 steps: accuracy" in result["summary"][-1]

    five = tmp_path / "5way"
    train(resolve(SupervisedConfig(ways=5, data=[omniglot_root], **common)), five)
    with pytest.raises(ValueError, match=r"runs in .*all_runs.zip are 20-way but the model "
                                         r"was trained 5-way"):
        evaluate_supervised_run(five, five / "eval.json", tasks=2, steps=1, runs=all_runs_zip)
    assert not (five / "eval.json").exists()
    plain = evaluate_supervised_run(five, None, tasks=2, steps=1)
    assert "one_shot_runs" not in plain and len(plain["by_step"][1]["accuracy"]["per_task"]) == 2
