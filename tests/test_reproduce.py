"""scripts/reproduce_nav2d.py end to end at a toy size: every phase runs its real commands
(train, train-oracle, evaluate, both plots) and the report holds what they measured."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import load_script

from rkmeta_rl.rl.evaluate import combine_seeds, read_eval
from rkmeta_rl.run.arguments import run_script

reproduce = load_script("reproduce_nav2d")

TOY_TRAIN = "--meta-iters 1 --meta-batch-size 2 --fast-batch-size 2 --hidden 8"
TOY_EVAL = "--tasks 3 --episodes 2 --steps 3"


@pytest.mark.slow
def test_reproduction_at_toy_size(tmp_path: Path) -> None:
    runs, results = tmp_path / "runs", tmp_path / "results"
    assert reproduce.main(["--methods", "euler,ralston", "--seeds", "0", "--runs-dir",
                           str(runs), "--results-dir", str(results), "--train-extra",
                           TOY_TRAIN, "--eval-extra", TOY_EVAL, "--poll", "1000",
                           "--step-size", "0.2", "--common-alpha", "0.1"]) == 0
    # the other reading: one h, each method adapting with its own α = c2·h
    ralston_config = json.loads((runs / "nav2d-ralston-s0" / "config.json").read_text())
    assert ralston_config["h"] == 0.2 and ralston_config["alpha"] == pytest.approx(0.15)
    common = read_eval(runs / "nav2d-ralston-s0" / "eval-common-alpha.json")
    assert common["alpha"] == 0.1 and read_eval(
        runs / "nav2d-ralston-s0" / "eval.json")["alpha"] == pytest.approx(0.15)
    assert (runs / "nav2d-euler-s0" / "eval-random-common-alpha.json").exists()
    for name in ("euler-s0", "ralston-s0", "oracle-s0"):
        assert (runs / f"nav2d-{name}" / "checkpoint.pt").exists()
        assert (results / "runs" / f"nav2d-{name}" / "eval.json").exists()
        assert (results / "runs" / f"nav2d-{name}" / "eval-maml.json").exists()
    for fig in ("figure5.png", "figure4.png", "figure5-maml.png", "figure4-maml.png",
                "figure5-common-alpha.png", "training.png"):
        assert (results / fig).stat().st_size > 1000
    assert (results / "figure5.csv").read_text().startswith("label,step,mean")
    text = (results / "README.md").read_text()
    ralston = read_eval(runs / "nav2d-ralston-s0" / "eval.json")
    row = combine_seeds([ralston])[1]
    half = (row["ci95"][1] - row["ci95"][0]) / 2
    assert "| ralston | 1 | " in text and f"{row['mean']:.1f} ± {half:.1f}" in text
    for label in ("| euler | 1 |", "| random init | 1 |", "| oracle | 1 |"):
        assert label in text
    assert text.count("| 0 steps | 1 steps | 2 steps | 3 steps |") == 3  # 9 needs --steps 9
    assert "every run evaluated with one α = 0.1" in text
    assert "α = c2·h with one h = 0.2" in text
    assert "rkmeta-rl train --env nav2d --method ralston --seed 0" in text
    assert "rkmeta-rl train-oracle --env nav2d --seed 0" in text
    history = [json.loads(line) for line in
               (runs / "timing-history.jsonl").read_text().splitlines()]
    assert [h["phase"] for h in history] == ["train", "evaluate", "plot"]


def test_unknown_method_fails_before_training(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown method 'rk9'"):
        reproduce.main(["--methods", "euler,rk9", "--runs-dir", str(tmp_path / "r"),
                        "--results-dir", str(tmp_path / "o")])
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("flag", ["--step-size", "--common-alpha"])
def test_a_step_size_that_is_not_positive_is_refused(tmp_path: Path, flag: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        reproduce.main([flag, "-0.1", "--runs-dir", str(tmp_path / "r"),
                        "--results-dir", str(tmp_path / "o")])
    assert exit_info.value.code == 2
    assert f"{flag} must be a finite number > 0, got -0.1" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_first_order_methods_and_no_oracle_make_the_right_commands(tmp_path: Path) -> None:
    args = reproduce.parse_args(["--methods", "midpoint,ralston-fo", "--seeds", "3",
                                 "--no-oracle", "--runs-dir", str(tmp_path)])
    jobs, dirs = reproduce.train_jobs(args, tmp_path)
    assert sorted(dirs) == ["midpoint-s3", "ralston-fo-s3"]  # no oracle
    by_name = {j.name: j.argv for j in jobs}
    fo = by_name["ralston-fo-s3"]
    assert fo[fo.index("--method") + 1] == "ralston" and "--first-order" in fo
    assert fo[fo.index("--out") + 1] == str(tmp_path / "nav2d-ralston-fo-s3")
    assert "--first-order" not in by_name["midpoint-s3"]
    with_oracle = reproduce.parse_args(["--methods", "midpoint", "--seeds", "3"])
    assert "oracle-s3" in reproduce.train_jobs(with_oracle, tmp_path)[1]


def test_an_unknown_first_order_method_fails_before_training(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown method 'rk9'"):
        reproduce.main(["--methods", "rk9-fo", "--runs-dir", str(tmp_path / "r"),
                        "--results-dir", str(tmp_path / "o")])


def test_random_init_files_count_from_the_first_method_only(tmp_path: Path) -> None:
    # another study on the same runs left random-init evaluations in ralston's runs
    dirs = {name: tmp_path / f"nav2d-{name}" for name in
            ("midpoint-s0", "ralston-s0", "ralston-fo-s0")}
    for d in dirs.values():
        d.mkdir()
        for f in ("eval-maml.json", "eval-random-maml.json", "eval-common-alpha.json",
                  "eval-random-common-alpha.json"):
            (d / f).write_text("{}")
    names = {p.relative_to(tmp_path).as_posix()
             for p in reproduce.eval_files(dirs, "maml", "midpoint")}
    assert names == {"nav2d-midpoint-s0/eval-maml.json", "nav2d-ralston-s0/eval-maml.json",
                     "nav2d-ralston-fo-s0/eval-maml.json",
                     "nav2d-midpoint-s0/eval-random-maml.json"}
    common = {p.relative_to(tmp_path).as_posix()
              for p in reproduce.common_alpha_files(dirs, "ralston")}
    assert "nav2d-ralston-s0/eval-random-common-alpha.json" in common
    assert "nav2d-ralston-fo-s0/eval-random-common-alpha.json" not in common and len(common) == 4


def test_a_bad_method_on_the_command_line_is_one_line_and_exit_2(tmp_path: Path) -> None:
    # the user's view: run as a script, no traceback, nothing written
    script = Path(__file__).resolve().parent.parent / "scripts" / "reproduce_nav2d.py"
    done = subprocess.run([sys.executable, str(script), "--methods", "midpoint,rk9",
                           "--runs-dir", str(tmp_path / "r"), "--results-dir",
                           str(tmp_path / "o")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.startswith("reproduce_nav2d.py: error: unknown method 'rk9'; valid "
                                  "choices: euler (pretrain), midpoint (maml)")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert not (tmp_path / "r").exists()


def test_run_script_keeps_tracebacks_for_anything_but_bad_input(capsys) -> None:
    def bad_input() -> int:
        raise ValueError("--x must be > 0, got -1")

    def bug() -> int:
        raise KeyError("k")

    with pytest.raises(SystemExit) as stop:
        run_script(bad_input)
    assert stop.value.code == 2
    assert capsys.readouterr().err.endswith(": error: --x must be > 0, got -1\n")
    with pytest.raises(SystemExit) as stop:
        run_script(lambda: 0)
    assert stop.value.code == 0
    with pytest.raises(KeyError):
        run_script(bug)
