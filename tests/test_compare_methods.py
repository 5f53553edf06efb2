"""``rkmeta-rl compare`` (``rkmeta_rl.analysis.compare``; ``scripts/compare_methods.py``
drives it): differences to a baseline, paired on seeds and tasks, checked
against values and t-intervals worked out in the test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import load_script

from rkmeta_rl.analysis import compare
from rkmeta_rl.cli import main as cli

T_1DF, T_2DF = 12.706204736, 4.302652730  # t(0.975) with 1 and 2 degrees of freedom


def write_eval(run: Path, method: str, seed: int, per_task_by_step: list[list[float]],
               tasks: list | None = None) -> None:
    run.mkdir(parents=True)
    by_step = [{"step": k, "mean": sum(v) / len(v), "ci95": [0.0, 0.0], "per_task": v}
               for k, v in enumerate(per_task_by_step)]
    (run / "eval.json").write_text(json.dumps({
        "env": "nav2d", "method": method, "init": "trained", "first_order": False,
        "train_seed": seed, "tasks_drawn": tasks or [[0], [1], [2]], "by_step": by_step}))


@pytest.fixture
def runs(tmp_path) -> list[Path]:
    values = {  # method, seed -> per-task returns at steps 0 and 1
        ("midpoint", 0): [[1, 2, 3], [4, 5, 6]],
        ("midpoint", 1): [[2, 2, 2], [5, 5, 5]],
        ("ralston", 0): [[2, 3, 4], [4, 6, 8]],
        ("ralston", 1): [[2, 2, 2], [8, 8, 8]],
    }
    dirs = []
    for (method, seed), v in values.items():
        dirs.append(tmp_path / f"{method}-s{seed}")
        write_eval(dirs[-1], method, seed, v)
    return dirs


def test_differences_and_intervals_by_hand(runs, capsys) -> None:
    assert compare.main([*map(str, runs), "--steps", "0,1"]) == 0
    rows = [r for r in capsys.readouterr().out.splitlines() if r.startswith("| ralston")]
    # step 0: seed 0 differs by +1 on every task, seed 1 by 0: per seed +1, 0
    # mean 0.5, sd √0.5, half-width t(1)·√0.5/√2 = t(1)/2; per task (1+0)/2 = 0.5 each: sd 0
    half = T_1DF / 2
    assert rows[0] == (f"| ralston | 0 | 2 | +0.50 | [{0.5 - half:+.2f}, {0.5 + half:+.2f}] | "
                       "[+0.50, +0.50] * | +1.00 / +0.00 |")
    # step 1: seed 0 per task 0, 1, 2 (mean 1); seed 1: 3, 3, 3 (mean 3); per seed 1, 3
    # per task averaged over seeds: 1.5, 2, 2.5 -> mean 2, sd 0.5, half t(2)·0.5/√3
    half_tasks = T_2DF * 0.5 / 3 ** 0.5
    assert rows[1] == (f"| ralston | 1 | 2 | +2.00 | [{2 - T_1DF:+.2f}, {2 + T_1DF:+.2f}] | "
                       f"[{2 - half_tasks:+.2f}, {2 + half_tasks:+.2f}] * | +1.00 / +3.00 |")


@pytest.mark.parametrize("argv, words", [
    (["--baseline", "heun"], ["baseline 'heun'", "midpoint, ralston"]),
    (["--steps", "5"], ["--steps 5", "0..1"]),
])
def test_bad_requests_are_one_line_errors(runs, argv, words, capsys) -> None:
    assert compare.main([*map(str, runs), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and all(w in err for w in words), err


def test_a_missing_run_directory_is_named(runs, tmp_path, capsys) -> None:
    with pytest.raises(SystemExit):
        compare.main([*map(str, runs), str(tmp_path / "nav2d-typo-s0")])
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith(f": error: no such run directory: {tmp_path / 'nav2d-typo-s0'}")


def test_runs_on_different_tasks_are_refused(tmp_path, capsys) -> None:
    write_eval(tmp_path / "a", "midpoint", 0, [[1, 2, 3]])
    write_eval(tmp_path / "b", "ralston", 0, [[1, 2, 3]], tasks=[[5], [6], [7]])
    assert compare.main([str(tmp_path / "a"), str(tmp_path / "b"), "--steps", "0"]) == 2
    assert "different tasks" in capsys.readouterr().err


def test_the_baseline_can_read_another_evaluation(runs, capsys) -> None:
    for d in runs:  # the baseline's other evaluation: every per-task value 1 lower
        e = json.loads((d / "eval.json").read_text())
        for row in e["by_step"]:
            row["per_task"] = [v - 1 for v in row["per_task"]]
        (d / "eval-small-alpha.json").write_text(json.dumps(e))
    assert compare.main([*map(str, runs), "--steps", "0", "--baseline-eval-file",
                         "eval-small-alpha.json"]) == 0
    rows = [r for r in capsys.readouterr().out.splitlines() if r.startswith("| ralston")]
    # as in the test above (per seed +1, 0), plus the 1 the baseline lost: +2, +1
    half = T_1DF / 2
    assert rows == [f"| ralston | 0 | 2 | +1.50 | [{1.5 - half:+.2f}, {1.5 + half:+.2f}] | "
                    "[+1.50, +1.50] * | +2.00 / +1.00 |"]


def test_the_subcommand_and_the_script_write_the_same_table(runs, tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as help_exit:
        cli(["compare", "--help"])
    assert help_exit.value.code == 0 and "--baseline-eval-file" in capsys.readouterr().out
    argv = [*map(str, runs), "--steps", "0,1"]
    assert cli(["compare", *argv, "--out", str(tmp_path / "cli.md")]) == 0
    by_cli = capsys.readouterr().out
    script = load_script("compare_methods")
    assert script.main is compare.main  # the script only drives the package
    assert script.main([*argv, "--out", str(tmp_path / "script.md")]) == 0
    assert capsys.readouterr().out == by_cli
    assert (tmp_path / "cli.md").read_text() == (tmp_path / "script.md").read_text()


def test_the_subcommand_answers_bad_input_in_one_line(runs, tmp_path, capsys) -> None:
    assert cli(["compare", *map(str, runs), "--baseline", "heun"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rkmeta-rl: error: no runs of the baseline 'heun'"), err
    assert cli(["compare", str(tmp_path / "typo")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"rkmeta-rl: error: no such run directory: {tmp_path / 'typo'}")
