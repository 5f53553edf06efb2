"""scripts/reproduce_table2.py and scripts/reproduce_omniglot.py end to end at toy size:
every phase runs its real ``rkmeta-rl`` commands and the README holds what they measured.

By default the commands run in this process (``rkmeta_rl.cli.main`` on the very argv the
script built, one after another): each subprocess would spend seconds importing torch, and
the 18 commands would take well over a minute on two busy cores. ``jobs.run_jobs`` itself
(Ray tasks, logs, failure handling) is what tests/test_jobs.py and tests/test_reproduce.py
run; set ``RKMETA_RL_SLOW_TESTS=1`` to also run both reproductions through it here (~2 min).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import load_script, run_in_process, table_row
from supervised_fixtures import omniglot_reproduction_data

from rkmeta_rl.launch import jobs
from rkmeta_rl.run import rundir
from rkmeta_rl.stats import summarize

table2 = load_script("reproduce_table2")
omniglot = load_script("reproduce_omniglot")


SLOW = pytest.mark.skipif(not os.environ.get("RKMETA_RL_SLOW_TESTS"),
                          reason="set RKMETA_RL_SLOW_TESTS=1 for real subprocesses (~1 min each)")


@pytest.fixture(params=["in-process", pytest.param("subprocess", marks=SLOW)])
def runner(request, monkeypatch):
    """How the scripts run their commands (in process: ``jobs.run_jobs`` is replaced)."""
    if request.param == "in-process":
        threads = torch.get_num_threads()  # the commands set 1 thread
        monkeypatch.setattr(jobs, "run_jobs", run_in_process)
        yield request.param
        torch.set_num_threads(threads)
    else:
        yield request.param


def mean_loss(path: Path, step: int) -> float:
    return json.loads(path.read_text())["by_step"][step]["loss"]["mean"]


def test_table2_at_toy_size(runner, tmp_path: Path, capsys) -> None:
    runs, results = tmp_path / "runs", tmp_path / "results"
    assert table2.main([
        "--methods", "euler,midpoint,heun", "--seeds", "0", "--meta-iters", "20",
        "--runs-dir", str(runs), "--results-dir", str(results),
        "--eval-extra", "--tasks 5 --steps 2",
        "--train-extra", "--hidden 8,8 --log-every 10 --eval-every 20 --eval-tasks 4",
        "--poll", "1"]) == 0
    # euler and midpoint train identically under both readings: one run each
    trained = sorted(p.name for p in runs.iterdir() if (p / rundir.CHECKPOINT).exists())
    assert trained == ["alpha-euler-s0", "alpha-heun-s0", "alpha-midpoint-s0", "h-heun-s0"]
    alphas = {}
    for name in trained:
        d = runs / name
        assert [r["iter"] for r in rundir.read_metrics(d)] == [9, 19]
        for f in d.glob("eval-*.json"):
            ev = json.loads(f.read_text())
            assert ev["tasks"] == 5 and len(ev["by_step"]) == 3
            alphas[(name, f.name)] = ev["alpha"]
            copy = json.loads((results / "runs" / name / f.name).read_text())
            assert copy["alpha"] == ev["alpha"] and copy["summary"] == ev["summary"]
    assert alphas == {("alpha-euler-s0", "eval-alpha.json"): 0.01,
                      ("alpha-euler-s0", "eval-h.json"): 0.02,
                      ("alpha-midpoint-s0", "eval-alpha.json"): 0.01,
                      ("alpha-midpoint-s0", "eval-h.json"): 0.01,
                      ("alpha-heun-s0", "eval-alpha.json"): 0.01,
                      ("h-heun-s0", "eval-h.json"): 0.02}
    config = json.loads((runs / "h-heun-s0" / rundir.CONFIG).read_text())
    assert (config["step_size"], config["alpha"], config["h"]) == (0.02, 0.02, 0.02)
    config = json.loads((runs / "alpha-heun-s0" / rundir.CONFIG).read_text())
    assert (config["inner_lr"], config["alpha"], config["h"]) == (0.01, 0.01, 0.01)

    text = (results / "README.md").read_text()
    assert text.count("| method | α at test | MSE, 1 step | MSE, 2 steps |") == 2
    readings = text.split("## Reading `h`")
    assert len(readings) == 2 and "## Reading `alpha`" in readings[0]
    alpha_part, h_part = readings
    # one seed: the cells are that run's mean MSE; the task CI is its own half-width
    midpoint = table_row(alpha_part, "midpoint")
    ev = runs / "alpha-midpoint-s0" / "eval-alpha.json"
    assert midpoint[:5] == ["midpoint", "0.01", f"{mean_loss(ev, 1):.3f}",
                            f"{mean_loss(ev, 2):.3f}", f"{mean_loss(ev, 2):.3g}"]
    last = json.loads(ev.read_text())["by_step"][2]["loss"]
    assert midpoint[5] == f"{np.median(last['per_task']):.3f}"
    ci = last["ci95"]
    assert midpoint[6] == f"± {(ci[1] - ci[0]) / 2:.3f}" and midpoint[7] == "0.13 ± 0.04"
    copied = json.loads((results / "runs" / "alpha-midpoint-s0" / "eval-alpha.json").read_text())
    assert "per_task" not in copied["by_step"][2]["loss"]
    assert copied["by_step"][2]["loss"]["mean"] == last["mean"]
    euler = mean_loss(runs / "alpha-euler-s0" / "eval-h.json", 1)
    assert table_row(h_part, "euler")[:3] == ["euler", "0.02", f"{euler:.3f}"]
    heun = mean_loss(runs / "h-heun-s0" / "eval-h.json", 1)
    assert table_row(h_part, "heun")[:3] == ["heun", "0.02", f"{heun:.3f}"]
    assert "rkmeta-rl supervised --benchmark sinusoid --method heun --step-size 0.02" in text
    assert "rkmeta-rl supervised-evaluate" in text and "--eval-extra" in text
    history = [json.loads(line) for line in
               (runs / "timing-history.jsonl").read_text().splitlines()]
    assert [h["phase"] for h in history] == ["train", "evaluate"]
    assert "wrote" in capsys.readouterr().out


def test_table2_across_seeds_is_a_t_interval(tmp_path: Path) -> None:
    """The across-seeds cell of several runs: mean ± t half-width of the runs' means."""
    files = []
    for seed, losses in enumerate(([1.0, 2.0, 3.0], [2.0, 2.0, 2.0], [4.0, 5.0, 3.0])):
        f = tmp_path / f"s{seed}.json"
        f.write_text(json.dumps({"by_step": [{"loss": summarize(losses)}]}))
        files.append(f)
    stats = table2.across_seeds(files, 0)
    s = summarize([2.0, 2.0, 4.0])
    assert stats["text"] == f"{s['mean']:.3f} ± {(s['ci95'][1] - s['ci95'][0]) / 2:.3f}"
    assert stats["per_seed"] == "2 / 2 / 4"
    assert stats["median"] == pytest.approx((2.0 + 2.0 + 4.0) / 3)
    halves = [(summarize(x)["ci95"][1] - summarize(x)["ci95"][0]) / 2
              for x in ([1.0, 2.0, 3.0], [2.0, 2.0, 2.0], [4.0, 5.0, 3.0])]
    assert stats["task_hw"] == pytest.approx(sum(halves) / 3)


def test_table2_reports_divergence_instead_of_nan(tmp_path: Path) -> None:
    files = []
    for seed, losses in enumerate(([1.0, float("inf"), 3.0], [2.0, float("nan"), 2.0])):
        f = tmp_path / f"s{seed}.json"
        f.write_text(json.dumps({"by_step": [{"loss": summarize(losses)}]}))
        files.append(f)
    stats = table2.across_seeds(files, 0)
    assert stats["text"] == "diverged (2 of 6 tasks)"
    assert stats["median"] == pytest.approx((3.0 + 2.0) / 2)  # a diverged task counts as inf


def test_table2_refuses_bad_arguments_before_running(tmp_path: Path, capsys) -> None:
    with pytest.raises(ValueError, match="unknown method 'rk9'"):
        table2.main(["--methods", "euler,rk9", "--runs-dir", str(tmp_path / "r")])
    with pytest.raises(SystemExit):
        table2.main(["--seeds", "a,b", "--runs-dir", str(tmp_path / "r")])
    assert "--seeds must be integers like 0,1,2, got 'a,b'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def pct(summary: dict) -> str:
    lo, hi = summary["ci95"]
    return f"{100 * summary['mean']:.2f} ± {100 * (hi - lo) / 2:.2f}"


def omniglot_toy(data: Path, tmp_path: Path, *extra: str) -> list[str]:
    return ["--data", str(data), "--runs-dir", str(tmp_path / "runs"), "--results-dir",
            str(tmp_path / "results"), "--iters-5", "2", "--iters-20", "1", "--batch-5", "2",
            "--batch-20", "1", "--train-extra", "--filters 4 --eval-tasks 2", "--eval-extra",
            "--tasks 4", "--figure-steps", "4", "--poll", "1", *extra]


def test_omniglot_at_toy_size(runner, tmp_path: Path, capsys) -> None:
    data = omniglot_reproduction_data(tmp_path / "data", chars=16)
    runs, results = tmp_path / "runs", tmp_path / "results"
    assert omniglot.main(omniglot_toy(data, tmp_path)) == 0
    text = (results / "README.md").read_text()
    for ways in (5, 20):
        for method in ("midpoint", "ralston"):
            name = f"{ways}way-{method}-s0"
            config = json.loads((runs / name / rundir.CONFIG).read_text())
            assert (config["ways"], config["method"], config["filters"]) == (ways, method, 4)
            assert len(config["data"]) == 2
            assert config["meta_iters"] == (2 if ways == 5 else 1)
            ev = json.loads((runs / name / "eval.json").read_text())
            assert ev["tasks"] == 4 and len(ev["by_step"]) == (4 if ways == 5 else 6)
            assert (results / "runs" / name / "eval.json").exists()
            # Figure 3's evaluation: the same held-out tasks, 0..--figure-steps steps
            fig = json.loads((runs / name / omniglot.FIGURE_EVAL).read_text())
            assert len(fig["by_step"]) == 5 and fig["by_step"][0] == ev["by_step"][0]
            assert (results / "runs" / name / omniglot.FIGURE_EVAL).exists()
            cells = [c.strip() for c in next(
                line for line in text.splitlines()
                if line.startswith(f"| {ways}-way 1-shot | {method} |")).strip("|").split("|")]
            assert cells[2] == pct(ev["by_step"][0]["accuracy"])
            assert cells[3].startswith(pct(ev["by_step"][-1]["accuracy"]))
            if ways == 20:
                assert ev["one_shot_runs"]["runs"] == 2
                assert cells[4] == pct(ev["one_shot_runs"]["accuracy"])
                assert re.fullmatch(r"\d+\.\d\d ± \d+\.\d\d", cells[4])
            else:
                assert "one_shot_runs" not in ev and cells[4] == "-"
            assert cells[5] == omniglot.PAPER[(ways, method)]
    assert text.count("-way 1-shot |") == 4
    assert (results / "figure3.png").stat().st_size > 1000 and "![Figure 3](figure3.png)" in text
    assert "--runs " + str(data / "all_runs.zip") in text
    assert "wrote" in capsys.readouterr().out


def test_omniglot_refuses_a_data_folder_without_the_zips(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        omniglot.main(["--data", str(tmp_path), "--runs-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert "images_background_small1.zip, images_background_small2.zip, all_runs.zip" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("runner", ["in-process"], indirect=True)
def test_omniglot_reports_a_method_without_paper_figures(runner, tmp_path: Path) -> None:
    data = omniglot_reproduction_data(tmp_path / "data", chars=16)
    assert omniglot.main(omniglot_toy(data, tmp_path, "--methods", "heun")) == 0
    text = (tmp_path / "results" / "README.md").read_text()
    assert "| 5-way 1-shot | heun |" in text and "| 20-way 1-shot | heun |" in text


def test_omniglot_refuses_bad_arguments_before_running(tmp_path: Path, capsys) -> None:
    data = omniglot_reproduction_data(tmp_path / "data")
    with pytest.raises(SystemExit):
        omniglot.parse_args(["--data", str(data), "--jobs", "0"])
    with pytest.raises(ValueError, match="unknown method 'rk9'"):
        omniglot.parse_args(["--data", str(data), "--methods", "midpoint,rk9"])
