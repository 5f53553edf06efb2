"""``rkmeta-rl snapshots`` (``rkmeta_rl.analysis.snapshots``; ``scripts/study_snapshots.py``
drives it) at a toy size: every snapshot and the validation pick are
evaluated with the real ``rkmeta-rl evaluate`` and tabulated by group."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from helpers import load_script

from rkmeta_rl.analysis import snapshots as study
from rkmeta_rl.cli import main as cli
from rkmeta_rl.rl.evaluate import combine_seeds, read_eval

TOY = ["--meta-iters", "2", "--meta-batch-size", "2", "--fast-batch-size", "2",
       "--hidden", "8", "--snapshot-every", "1", "--no-progress", "--num-threads", "1"]


def train(out: Path, seed: int) -> None:
    assert cli(["train", "--env", "nav2d", "--method", "midpoint", "--seed", str(seed),
                "--out", str(out), *TOY]) == 0


@pytest.mark.slow
def test_every_snapshot_and_the_best_pick_are_tabulated(tmp_path: Path) -> None:
    runs = [tmp_path / "nav2d-midpoint-s0", tmp_path / "nav2d-midpoint-s1"]
    for seed, d in enumerate(runs):
        train(d, seed)
    out = tmp_path / "report" / "snapshots-alpha0.5"  # a dot in OUT stays
    assert study.main([*map(str, runs), "--eval-extra", "--tasks 2 --episodes 2",
                       "--reference", "paper=-40,-11", "--jobs", "1", "--poll", "1000",
                       "--out", str(out)]) == 0
    text = out.parent.joinpath(out.name + ".md").read_text()
    assert f"## {tmp_path.name}/nav2d-midpoint\n" in text and "Reference paper: -40, -11" in text
    # the row of iteration 2 is the two runs' evaluations of their snapshot 2, combined
    args = study.parse_args([*map(str, runs), "--eval-extra", "--tasks 2 --episodes 2",
                             "--out", str(out)])
    evals = [read_eval(study.eval_path(d, args, "2")) for d in runs]
    assert [e["meta_iterations"] for e in evals] == [2, 2]
    rows = combine_seeds(evals)
    half = [(r["ci95"][1] - r["ci95"][0]) / 2 for r in rows]
    assert ("| 2 | 2 | " + " | ".join(f"{r['mean']:.1f} ± {h:.1f}" for r, h in
                                      zip(rows, half, strict=True)) + " |") in text
    best = [read_eval(study.eval_path(d, args, "best")) for d in runs]
    for e in best:  # the pick is the snapshot with the highest validation score
        scores = e["validation"]["after_one_step"]
        assert e["meta_iterations"] == int(max(scores, key=lambda k: (scores[k], int(k))))
    assert "| best (" + ", ".join(str(e["meta_iterations"]) for e in best) + ") | 2 |" in text
    assert out.parent.joinpath(out.name + ".png").stat().st_size > 1000
    # --iterations keeps the listed snapshots only; the evaluations on disk are reused
    only = tmp_path / "report" / "only-1"
    assert study.main([*map(str, runs), "--iterations", "1", "--eval-extra",
                       "--tasks 2 --episodes 2", "--jobs", "1", "--out", str(only)]) == 0
    lines = only.parent.joinpath(only.name + ".md").read_text().splitlines()
    rows = [line.split("|")[1].strip() for line in lines
            if line.startswith("| ") and not line.startswith("| iteration")]
    assert rows[0] == "1" and rows[1].startswith("best (") and len(rows) == 2
    # the subcommand and the script write the same table (from the same evaluations)
    same = [*map(str, runs), "--iterations", "1", "--eval-extra", "--tasks 2 --episodes 2",
            "--jobs", "1"]
    assert cli(["snapshots", *same, "--out", str(tmp_path / "report" / "by-cli")]) == 0
    script = load_script("study_snapshots")
    assert script.main is study.main  # the script only drives the package
    assert script.main([*same, "--out", str(tmp_path / "report" / "by-script")]) == 0
    for name in ("by-cli", "by-script"):
        assert (tmp_path / "report" / f"{name}.md").read_text() == (
            only.parent / "only-1.md").read_text()
    # other evaluate flags make other files; an evaluation older than the checkpoint is stale
    other = study.parse_args([*map(str, runs), "--eval-extra", "--tasks 3", "--out", str(out)])
    assert study.eval_path(runs[0], other, "2") != study.eval_path(runs[0], args, "2")
    path = study.eval_path(runs[0], args, "2")
    assert study.is_current(path, runs[0])
    os.utime(path, (0, 0))
    assert not study.is_current(path, runs[0])


def test_a_run_without_snapshots_is_refused(tmp_path: Path, capsys) -> None:
    (tmp_path / "r").mkdir()
    with pytest.raises(SystemExit):
        study.main([str(tmp_path / "r"), "--out", str(tmp_path / "o")])
    assert "has no snapshots (train with --snapshot-every N)" in capsys.readouterr().err


def test_a_malformed_reference_is_refused(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        study.main([str(tmp_path), "--reference", "MAML=-3,x", "--out", str(tmp_path / "o")])
    assert "--reference must look like NAME=v0,v1,..., got 'MAML=-3,x'" in capsys.readouterr().err


def test_iterations_that_are_not_integers_are_refused(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        study.main([str(tmp_path), "--iterations", "10,x", "--out", str(tmp_path / "o")])
    assert "--iterations must be integers like 10,20, got '10,x'" in capsys.readouterr().err


def test_iterations_that_no_run_has_are_refused(tmp_path: Path, capsys) -> None:
    runs = [tmp_path / "a-s0", tmp_path / "b-s0"]
    for d, its in zip(runs, ((10, 20), (10, 20, 30, 40)), strict=True):
        (d / "snapshots").mkdir(parents=True)
        for it in its:
            (d / "snapshots" / f"iter-{it:06d}.pt").write_bytes(b"")
    out = ["--out", str(tmp_path / "o")]
    # a snapshot that only some runs have is fine: the others leave that row out
    assert study.parse_args([*map(str, runs), "--iterations", "20,40", *out]).iterations == [20, 40]
    with pytest.raises(SystemExit):
        study.parse_args([*map(str, runs), "--iterations", "20,25,50", *out])
    assert ("--iterations 25,50: no run has a snapshot there; they have 10,20,30,40"
            in capsys.readouterr().err)


def test_the_subcommand_shows_its_help_and_refuses_as_the_script(tmp_path: Path,
                                                                 capsys) -> None:
    with pytest.raises(SystemExit) as help_exit:
        cli(["snapshots", "--help"])
    assert help_exit.value.code == 0 and "--reference" in capsys.readouterr().out
    (tmp_path / "r").mkdir()
    with pytest.raises(SystemExit):
        cli(["snapshots", str(tmp_path / "r"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (f"rkmeta-rl snapshots: error: {tmp_path / 'r'} has no snapshots (train "
                   "with --snapshot-every N)")


def test_without_matplotlib_the_study_stops_in_one_line(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib fails
    with pytest.raises(ValueError, match=r'needs matplotlib: pip install -e "\.\[plot\]"'):
        study.pyplot()
