"""``rkmeta-rl plot adaptation`` (Figure 5), ``plot trajectories`` (Figure 4) and ``plot
training`` (``rkmeta_rl/analysis/plots/``, also run by ``scripts/plot_*.py``) on tiny runs
trained and evaluated inside the test; ``rkmeta-rl plot`` itself, and its modules without
matplotlib."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from rkmeta_rl.analysis.plots import adaptation as plot_adaptation
from rkmeta_rl.analysis.plots import training as plot_training
from rkmeta_rl.analysis.plots import trajectories as plot_trajectories
from rkmeta_rl.cli import main as cli
from rkmeta_rl.rl.adapt import adapt_to_tasks
from rkmeta_rl.rl.tasks import make_family
from rkmeta_rl.rl.trainer import load_run

TINY = ["--env", "nav2d", "--meta-iters", "1", "--meta-batch-size", "2",
        "--fast-batch-size", "2", "--hidden", "8", "--no-progress"]
EVAL = ["--tasks", "3", "--episodes", "2", "--steps", "2", "--no-progress"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """ralston (seeds 0 and 1), euler and the oracle, each trained 1 iteration and
    evaluated; ralston seed 0 also from its random initial weights."""
    root = tmp_path_factory.mktemp("runs")
    out = {name: root / name for name in ("ralston", "ralston-s1", "euler", "oracle")}
    assert cli(["train", "--method", "ralston", "--out", str(out["ralston"]), *TINY]) == 0
    assert cli(["train", "--method", "ralston", "--seed", "1", "--out",
                str(out["ralston-s1"]), *TINY]) == 0
    assert cli(["train", "--method", "euler", "--out", str(out["euler"]), *TINY]) == 0
    assert cli(["train-oracle", "--out", str(out["oracle"]), *TINY]) == 0
    for run in out.values():
        assert cli(["evaluate", str(run), *EVAL]) == 0
    assert cli(["evaluate", str(out["ralston"]), "--init", "random", *EVAL]) == 0
    return out


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def by_label(rows: list[dict[str, str]], label: str) -> list[dict[str, str]]:
    return sorted((r for r in rows if r["label"] == label), key=lambda r: int(r["step"]))


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert len(data) > 1000
    assert data[:8] == PNG_MAGIC


def test_adaptation_figure_and_csv_cover_every_curve(runs, tmp_path):
    args = [str(runs["ralston"]), str(runs["euler"] / "eval.json"), str(runs["oracle"])]
    assert plot_adaptation.main([*args, "--out", str(tmp_path / "fig.png")]) == 0
    assert_png(tmp_path / "fig.png")
    with (tmp_path / "fig.csv").open() as f:
        assert next(csv.reader(f)) == plot_adaptation.CSV_HEADER
    rows = read_csv(tmp_path / "fig.csv")
    assert {r["label"] for r in rows} == {"ralston", "euler", "random init", "oracle"}
    for label in ("ralston", "euler", "random init", "oracle"):
        assert [int(r["step"]) for r in by_label(rows, label)] == [0, 1, 2]
    for r in rows:
        assert float(r["ci95_low"]) <= float(r["mean"]) <= float(r["ci95_high"])
        assert r["runs"] == "1"


def test_adaptation_csv_order_and_explicit_path(runs, tmp_path):
    out, data = tmp_path / "a" / "fig.png", tmp_path / "b" / "data.csv"
    args = [str(runs["ralston"]), str(runs["euler"]), str(runs["oracle"])]
    assert plot_adaptation.main([*args, "--out", str(out), "--csv", str(data),
                                 "--order", "euler,ralston", "--title", "tiny"]) == 0
    assert out.is_file() and not out.with_suffix(".csv").exists()
    labels = list(dict.fromkeys(r["label"] for r in read_csv(data)))
    assert labels == ["euler", "ralston", "random init", "oracle"]


def test_adaptation_csv_means_match_eval_files(runs, tmp_path):
    args = [str(runs["ralston"]), str(runs["ralston-s1"]), str(runs["euler"])]
    assert plot_adaptation.main([*args, "--out", str(tmp_path / "fig.png")]) == 0
    rows = read_csv(tmp_path / "fig.csv")
    euler = json.loads((runs["euler"] / "eval.json").read_text())["by_step"]
    for r, s in zip(by_label(rows, "euler"), euler, strict=True):
        assert float(r["mean"]) == pytest.approx(s["mean"], abs=1e-9)
        assert [float(r["ci95_low"]), float(r["ci95_high"])] == pytest.approx(s["ci95"])
    seeds = [json.loads((runs[n] / "eval.json").read_text())["by_step"]
             for n in ("ralston", "ralston-s1")]
    ralston = by_label(rows, "ralston")
    assert len(ralston) == 3
    for k, r in enumerate(ralston):
        means = [seeds[0][k]["mean"], seeds[1][k]["mean"]]
        assert float(r["mean"]) == pytest.approx(sum(means) / 2, abs=1e-9)
        half = stats.t.ppf(0.975, 1) * np.std(means, ddof=1) / math.sqrt(2)
        assert float(r["ci95_high"]) == pytest.approx(sum(means) / 2 + half, abs=1e-6)
        assert r["runs"] == "2"


def test_adaptation_rejects_non_eval_file(runs, tmp_path, capsys):
    config = runs["euler"] / "config.json"
    with pytest.raises(SystemExit) as e:
        plot_adaptation.main([str(config), "--out", str(tmp_path / "fig.png")])
    assert e.value.code != 0
    assert str(config) in capsys.readouterr().err
    assert not (tmp_path / "fig.png").exists()


@pytest.mark.parametrize("make", [lambda p: p.mkdir() or p, lambda p: p / "missing.json"])
def test_adaptation_rejects_empty_directory_and_missing_file(tmp_path, capsys, make):
    path = make(tmp_path / "empty")
    with pytest.raises(SystemExit) as e:
        plot_adaptation.main([str(path), "--out", str(tmp_path / "fig.png")])
    assert e.value.code != 0
    assert str(path) in capsys.readouterr().err


def test_trajectories_figure_for_two_runs(runs, tmp_path, capsys):
    out = tmp_path / "traj.png"
    args = [str(runs["ralston"]), str(runs["euler"]), "--out", str(out), "--steps", "0,1",
            "--episodes", "4", "--goal", "0.3", "-0.2"]
    assert plot_trajectories.main(args) == 0
    assert_png(out)
    assert str(out) in capsys.readouterr().out


def test_adapted_paths_are_valid_deterministic_and_adapt(runs):
    run, goal = runs["ralston"], [0.3, -0.2]
    paths = plot_trajectories.adapted_paths(run, goal, [0, 1, 2], episodes=4, seed=3)
    again = plot_trajectories.adapted_paths(run, goal, [0], episodes=4, seed=3)
    assert sorted(paths) == [0, 1, 2]
    for path in paths.values():
        assert path.ndim == 2 and path.shape[1] == 2 and len(path) >= 2
        np.testing.assert_array_equal(path[0], [0.0, 0.0])
        assert np.all(np.abs(np.diff(path, axis=0)) <= 0.1 + 1e-6)
    np.testing.assert_array_equal(paths[0], again[0])
    assert not np.allclose(paths[0], paths[1])


def test_adapted_params_match_adapt_to_tasks(runs):
    cfg, policy = load_run(runs["ralston"])
    family, task = make_family(cfg.env), {"goal": np.array([0.3, -0.2])}
    history = plot_trajectories.adapted_params(policy, family, task, [cfg.alpha] * 2, 4, 5)
    assert len(history) == 3
    for name, value in policy.params().items():  # 0 steps: the meta-parameters
        torch.testing.assert_close(history[0][name][0], value.detach())
    for k in (1, 2):  # k steps: what a separate k-step adaptation with the same seed gives
        adapted, _ = adapt_to_tasks(policy, family, [task], cfg.alpha, k, 4, 5)
        for name, value in adapted.items():
            torch.testing.assert_close(history[k][name], value)
    assert not torch.equal(history[1]["w0"], history[2]["w0"])


def test_default_goal_is_first_held_out_eval_goal(runs):
    drawn = json.loads((runs["ralston"] / "eval.json").read_text())["tasks_drawn"][0]["goal"]
    np.testing.assert_allclose(plot_trajectories.default_goal("nav2d"), drawn)


@pytest.mark.parametrize("steps", ["-1", "1.5", "0,x", ","])
def test_trajectories_rejects_bad_steps(runs, tmp_path, capsys, steps):
    with pytest.raises(SystemExit) as e:
        plot_trajectories.main([str(runs["euler"]), "--out", str(tmp_path / "t.png"),
                                "--steps", steps])
    assert e.value.code != 0
    assert "--steps" in capsys.readouterr().err
    assert not (tmp_path / "t.png").exists()


def test_smooth_is_a_trailing_mean():
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    np.testing.assert_allclose(plot_training.smooth(x, 2), [1.0, 1.5, 2.5, 3.5, 4.5])
    np.testing.assert_allclose(plot_training.smooth(x, 9), np.cumsum(x) / np.arange(1, 6))


def test_training_curves_average_the_seeds_metrics(runs, tmp_path):
    out = tmp_path / "training.png"
    assert plot_training.main([str(runs["ralston"]), str(runs["ralston-s1"]),
                               str(runs["euler"]), "--out", str(out)]) == 0
    assert out.read_bytes().startswith(PNG_MAGIC) and out.stat().st_size > 1000
    rows = read_csv(out.with_suffix(".csv"))
    posts = [json.loads((runs[r] / "metrics.jsonl").read_text().splitlines()[0])["return_post"]
             for r in ("ralston", "ralston-s1")]
    ralston = [r for r in rows if r["label"] == "ralston" and r["curve"] == "post"]
    assert len(ralston) == 1 and ralston[0]["runs"] == "2"
    assert float(ralston[0]["mean"]) == pytest.approx(sum(posts) / 2)
    assert {r["label"] for r in rows} == {"ralston", "euler"}


def test_training_curves_name_a_bad_run_dir(tmp_path, capsys):
    with pytest.raises(SystemExit):
        plot_training.main([str(tmp_path / "missing"), "--out", str(tmp_path / "t.png")])
    assert "missing" in capsys.readouterr().err


def test_figures_state_the_dynamics_and_the_horizon(runs, tmp_path, monkeypatch):
    run = tmp_path / "cheetah"
    assert cli(["train", "--env", "halfcheetah-vel", "--dynamics", "maml", "--meta-iters", "1",
                "--meta-batch-size", "2", "--fast-batch-size", "2", "--hidden", "8",
                "--max-episode-steps", "10", "--no-progress", "--out", str(run)]) == 0
    assert cli(["evaluate", str(run), *EVAL]) == 0
    titles = []
    monkeypatch.setattr(plot_adaptation, "plot", lambda *args: titles.append(args[3]))
    assert plot_adaptation.main([str(run), "--out", str(tmp_path / "f.png"), "--title",
                                 "HalfCheetah"]) == 0
    assert plot_adaptation.main([str(runs["ralston"]), "--out", str(tmp_path / "g.png")]) == 0
    assert titles == ["HalfCheetah\nmaml dynamics, 10 steps × 0.01 s = 0.1 s",
                      "100-step episodes"]
    parser = plot_training.argparse.ArgumentParser()
    assert plot_training.load_groups([str(run), str(runs["euler"])], parser)[1] == \
        "100-step episodes; maml dynamics, 10 steps × 0.01 s = 0.1 s"


FIGURES = ("training", "adaptation", "trajectories", "sinusoid-adaptation", "fewshot-steps",
           "tableaus")


def test_rkmeta_rl_plot_draws_a_figure_and_lists_them_all(tmp_path, capsys):
    out = tmp_path / "tableaus.png"
    assert cli(["plot", "tableaus", "--out", str(out), "--dpi", "30"]) == 0
    assert out.read_bytes().startswith(PNG_MAGIC)
    assert f"wrote {out}" in capsys.readouterr().out
    with pytest.raises(SystemExit) as refused:
        cli(["plot", "tableaus", "--out", str(tmp_path / "no" / "t.png")])
    assert refused.value.code == 2
    assert capsys.readouterr().err.strip() == (
        f"rkmeta-rl plot tableaus: error: --out {tmp_path / 'no' / 't.png'}: the folder "
        f"{tmp_path / 'no'} does not exist")
    with pytest.raises(SystemExit) as help_exit:
        cli(["plot", "--help"])
    assert help_exit.value.code == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in FIGURES), listed


def test_the_plot_modules_need_matplotlib_only_to_draw(tmp_path):
    code = ("import sys; sys.modules['matplotlib'] = None\n"  # import matplotlib fails
            "from rkmeta_rl.analysis.plots import adaptation, fewshot_steps, "
            "sinusoid_adaptation, tableaus, trajectories, training\n"
            "from rkmeta_rl.cli import main\n"
            f"sys.exit(main(['plot', 'tableaus', '--out', {str(tmp_path / 't.png')!r}]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr == ('rkmeta-rl: error: drawing the figures needs matplotlib: '
                           'pip install -e ".[plot]"\n')
    assert not (tmp_path / "t.png").exists()


def test_success_rates_get_their_own_panel_and_csv(runs, tmp_path):
    """Evaluations and runs with success rates (written here, as Meta-World's would be):
    the adaptation plot writes their means over seeds to FIG-success.csv, the training
    plot adds success_pre/post curves; without them neither appears."""
    evals = []
    for seed, rates in enumerate(([0.2, 0.5], [0.4, 0.9])):
        e = json.loads((runs["ralston"] / "eval.json").read_text())
        e["train_seed"], e["run_dir"] = seed, f"run{seed}"
        e["by_step"] = e["by_step"][:2]
        e["success_by_step"] = [{"step": k, "mean": r, "ci95": [r, r]}
                                for k, r in enumerate(rates)]
        evals.append(tmp_path / f"eval{seed}.json")
        evals[-1].write_text(json.dumps(e))
    out = tmp_path / "fig.png"
    assert plot_adaptation.main([*map(str, evals), "--out", str(out)]) == 0
    rows = read_csv(tmp_path / "fig-success.csv")
    assert [(r["step"], float(r["mean"]), r["runs"]) for r in rows] == [
        ("0", pytest.approx(0.3), "2"), ("1", pytest.approx(0.7), "2")]
    assert_png(out)
    plain = tmp_path / "plain.png"
    assert plot_adaptation.main([str(runs["euler"]), "--out", str(plain)]) == 0
    assert not (tmp_path / "plain-success.csv").exists()

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text((runs["ralston"] / "config.json").read_text())
    lines = (runs["ralston"] / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(x) for x in lines]
    for i, r in enumerate(records):
        r["success_pre"], r["success_post"] = [(0.1, 0.3), (0.2, 0.6)][i % 2]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "training.png"
    assert plot_training.main([str(run), "--out", str(out), "--window", "1"]) == 0
    curves = {r["curve"] for r in read_csv(out.with_suffix(".csv"))}
    assert curves == {"pre", "post", "success_pre", "success_post"}
    first = [r for r in read_csv(out.with_suffix(".csv")) if r["curve"] == "success_post"][0]
    assert float(first["mean"]) == pytest.approx(0.3)
