"""Snapshots of the policy during training and ``evaluate --checkpoint`` (last, best, N).

Every run is tiny (2 tasks × 2 episodes, an 8×8 policy). A snapshot is checked against a
second run trained only as far as the snapshot (same seed, so the same iterations), and
``--checkpoint best`` against the argmax of its own validation scores and an evaluation of
that snapshot by number.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rkmeta_rl.cli import main
from rkmeta_rl.rl.config import TrainConfig, resolve
from rkmeta_rl.rl.evaluate import VALIDATION_SEED, EvalConfig, evaluate_run
from rkmeta_rl.rl.trainer import load_run, prepare_run_dir
from rkmeta_rl.run import rundir

SMALL_EVAL = EvalConfig(tasks=3, episodes=2, steps=2)


def tiny_run(path: Path, iters: int, every: int = 2) -> Path:
    cfg = resolve(TrainConfig(meta_batch_size=2, fast_batch_size=2, hidden=[8, 8],
                              meta_iters=iters, snapshot_every=every))
    prepare_run_dir(cfg, path).run(progress=False)
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[int, Path]:
    """The same run trained to 2 and to 5 iterations (snapshots every 2)."""
    base = tmp_path_factory.mktemp("snapshots")
    return {n: tiny_run(base / f"run{n}", n) for n in (2, 5)}


def test_snapshots_every_n_iterations_hold_the_policy_of_that_iteration(runs) -> None:
    long, short = runs[5], runs[2]
    assert rundir.snapshot_iterations(long) == [2, 4]
    snap = rundir.load_snapshot(long, 2)
    _, policy_at_2 = load_run(short)  # trained separately, stopped after 2 iterations
    for name, value in policy_at_2.state_dict().items():
        assert torch.equal(snap["policy"][name], value), name
    _, last = load_run(long)
    assert not all(torch.equal(snap["policy"][k], v) for k, v in last.state_dict().items())


def test_no_snapshots_with_zero(tmp_path) -> None:
    run = tiny_run(tmp_path / "run", 2, every=0)
    assert rundir.snapshot_iterations(run) == []
    assert not (run / rundir.SNAPSHOTS).exists()


def test_evaluate_a_snapshot_by_number_equals_the_shorter_runs_last(runs, tmp_path) -> None:
    by_number = evaluate_run(runs[5], EvalConfig(tasks=3, episodes=2, steps=2, checkpoint="2"),
                             out=tmp_path / "a.json", progress=False)
    shorter = evaluate_run(runs[2], SMALL_EVAL, out=tmp_path / "b.json", progress=False)
    assert by_number["meta_iterations"] == 2
    assert by_number["by_step"] == shorter["by_step"]


def test_best_is_the_argmax_of_its_validation_scores(runs, tmp_path) -> None:
    ecfg = EvalConfig(tasks=3, episodes=2, steps=2, checkpoint="best")
    result = evaluate_run(runs[5], ecfg, out=tmp_path / "best.json", progress=False)
    scores = {int(k): v for k, v in result["validation"]["after_one_step"].items()}
    assert sorted(scores) == [2, 4, 5]  # every snapshot and the last checkpoint
    assert result["validation"]["seed"] == VALIDATION_SEED
    best = max(scores, key=lambda it: (scores[it], it))
    assert result["meta_iterations"] == best
    chosen = "last" if best == 5 else str(best)
    again = evaluate_run(runs[5], EvalConfig(tasks=3, episodes=2, steps=2, checkpoint=chosen),
                         out=tmp_path / "again.json", progress=False)
    assert again["by_step"] == result["by_step"]
    assert EvalConfig(checkpoint="best").default_filename() == "eval-best.json"
    assert EvalConfig(checkpoint="40", protocol="maml").default_filename() == \
        "eval-maml-iter40.json"


@pytest.mark.parametrize("argv, words", [
    (["--checkpoint", "newest"], ["--checkpoint", "last, best", "'newest'"]),
    (["--checkpoint", "3"], ["no snapshot of iteration 3", "2, 4"]),
    (["--checkpoint", "best", "--init", "random"], ["--init random"]),
])
def test_bad_checkpoint_choices_are_one_line_errors(runs, argv, words, capsys) -> None:
    code = main(["evaluate", str(runs[5]), "--tasks", "2", "--episodes", "1", "--steps", "1",
                 "--no-progress", *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert all(w in err for w in words), err


def test_damaged_snapshots_are_refused_naming_the_file(runs, tmp_path) -> None:
    run = tmp_path / "copy"
    (run / rundir.SNAPSHOTS).mkdir(parents=True)
    for name in ("config.json", "checkpoint.pt"):
        (run / name).write_bytes((runs[5] / name).read_bytes())
    path = rundir.snapshot_path(run, 2)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="iter-000002.pt"):
        rundir.load_snapshot(run, 2)
    torch.save({"iteration": 4, "policy": {}}, path)  # another iteration's content
    with pytest.raises(ValueError, match="holds iteration 4"):
        rundir.load_snapshot(run, 2)
    torch.save({"iteration": 2, "policy": {"w0": torch.zeros(3)}}, path)  # wrong shapes
    with pytest.raises(ValueError, match="snapshots/iter-000002.pt does not fit"):
        evaluate_run(run, EvalConfig(tasks=2, episodes=1, steps=1, checkpoint="2"),
                     out=tmp_path / "e.json", progress=False)


def test_snapshot_every_is_checked_and_recorded(tmp_path) -> None:
    with pytest.raises(ValueError, match="--snapshot-every must be >= 0"):
        resolve(TrainConfig(snapshot_every=-1))
    run = tiny_run(tmp_path / "run", 1, every=3)
    assert json.loads((run / "config.json").read_text())["snapshot_every"] == 3
