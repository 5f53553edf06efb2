"""``rkmeta-rl plot tableaus`` (Figure 1 from the tableau data), ``plot
sinusoid-adaptation`` (a trained sinusoid run after 0, 1, ... steps) and ``plot
fewshot-steps`` (Figure 3), from ``rkmeta_rl/analysis/plots/`` (also run by
``scripts/plot_*.py``), in process: the figures are written, and what they plot matches an
independent computation."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from supervised_runs import sinusoid, train

from rkmeta_rl.analysis.plots import fewshot_steps as fewshot
from rkmeta_rl.analysis.plots import sinusoid_adaptation as adaptation
from rkmeta_rl.analysis.plots import tableaus
from rkmeta_rl.supervised.evaluate import CHUNK
from rkmeta_rl.supervised.sinusoid import sample_sinusoid_tasks
from rkmeta_rl.supervised.trainer import load_supervised_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def line(ax: plt.Axes, label: str):
    (found,) = [ln for ln in ax.get_lines() if ln.get_label().startswith(label)]
    return found


# ------------------------------------------------------------------------ tableaus


def test_plot_tableaus_writes_the_figure(tmp_path, capsys):
    out = tmp_path / "tableaus.png"
    assert tableaus.main(["--out", str(out), "--dpi", "30"]) == 0
    assert out.read_bytes().startswith(PNG_MAGIC)
    assert f"wrote {out}" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        tableaus.main(["--out", str(tmp_path / "no" / "t.png")])
    assert f"the folder {tmp_path / 'no'} does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tableaus.main(["--h", "0"])
    assert "must be a finite number > 0, got '0'" in capsys.readouterr().err


def test_plotted_stage_points_are_the_tableaus(tmp_path):
    """On L = ½ a θ² the k_i are a θ_i: midpoint's θ_2 = θ − (h/2) a θ, rk3's
    θ_3 = θ − h(−k_1 + 2 k_2), and rk4's step is θ's Taylor polynomial of e^{−ah} to z⁴."""
    a, theta, h = 2.0, 1.5, 0.3
    fig = tableaus.plot(a, theta, h)
    panels = {ax.get_title().split()[0]: ax for ax in fig.axes if ax.get_title()}
    assert list(panels) == [name for row in tableaus.ROWS for name in row]

    mid = panels["midpoint"]
    theta2 = theta - h / 2 * a * theta
    assert line(mid, tableaus.STAGE_POINTS).get_xdata() == pytest.approx([theta, theta2])
    assert line(mid, tableaus.STEP_END).get_xdata() == pytest.approx([theta - h * a * theta2])

    k1, k2 = a * theta, a * theta2
    theta3 = theta - h * (-k1 + 2 * k2)
    assert line(panels["rk3"], tableaus.STAGE_POINTS).get_xdata() == pytest.approx(
        [theta, theta2, theta3])
    z = a * h
    rk4_end = theta * sum((-z) ** n / math.factorial(n) for n in range(5))
    assert line(panels["rk4"], tableaus.STEP_END).get_xdata() == pytest.approx([rk4_end])
    euler = line(panels["euler"], tableaus.STEP_END).get_xdata()
    assert euler == pytest.approx([theta * (1 - z)])
    plt.close(fig)


# ------------------------------------------------------------------------ sinusoid


@pytest.fixture(scope="module")
def ralston_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("sinusoid-ralston") / "run"
    train(sinusoid(method="ralston"), run)
    return run


def test_plot_sinusoid_adaptation_writes_the_figure(sinusoid_run, ralston_run, tmp_path):
    out = tmp_path / "sin.png"
    assert adaptation.main([str(sinusoid_run), str(ralston_run), "--out", str(out),
                            "--steps", "0,1,3", "--task", "2", "--dpi", "30"]) == 0
    assert out.read_bytes().startswith(PNG_MAGIC)


def test_plotted_predictions_are_the_adapted_model(sinusoid_run):
    """The truth, the support points and the curves after 0 and 1 steps against the task
    drawn again and one gradient step of α on its support set computed here."""
    seed, task = 7, 3
    fig = adaptation.plot([sinusoid_run], seed, task, [0, 1])
    (ax,) = fig.axes
    cfg, bench, theta = load_supervised_run(sinusoid_run)
    batch = sample_sinusoid_tasks(CHUNK, cfg.shots, cfg.queries,
                                  torch.Generator().manual_seed(seed))
    amp, phase = float(batch.amplitude[task]), float(batch.phase[task])
    xs, ys = batch.xs[task : task + 1], batch.ys[task : task + 1]  # (1, K, 1)
    grid = line(ax, "truth").get_xdata()
    np.testing.assert_allclose(line(ax, "truth").get_ydata(), amp * np.sin(grid + phase),
                               rtol=1e-5, atol=1e-5)
    support = line(ax, "K = ")
    np.testing.assert_allclose(support.get_xdata(), xs.view(-1).numpy(), rtol=1e-6)
    np.testing.assert_allclose(support.get_ydata(), ys.view(-1).numpy(), rtol=1e-6)

    params = {n: v.unsqueeze(0).requires_grad_() for n, v in theta.items()}
    x = torch.as_tensor(grid, dtype=torch.float32).view(1, -1, 1)
    before = bench.model(params, x).view(-1).detach().numpy()
    loss = (bench.model(params, xs) - ys).pow(2).mean()
    grads = torch.autograd.grad(loss, list(params.values()))
    stepped = {n: v - cfg.alpha * g for (n, v), g in zip(params.items(), grads, strict=True)}
    after = bench.model(stepped, x).view(-1).detach().numpy()
    assert not np.allclose(before, after, atol=1e-4)  # the step moves the curve
    np.testing.assert_allclose(line(ax, "after 0 steps").get_ydata(), before, atol=1e-5)
    np.testing.assert_allclose(line(ax, "after 1 step ").get_ydata(), after, atol=1e-5)
    assert ax.get_title() == "midpoint (α = 0.01, 20 meta-iterations)"
    plt.close(fig)


def test_plot_sinusoid_adaptation_refuses_bad_input(sinusoid_run, tmp_path, capsys):
    other = tmp_path / "five-shot"
    train(sinusoid(shots=5, meta_iters=1), other)
    cases = [
        ([str(sinusoid_run), str(other)], "the runs differ in K (shots: [5, 10])"),
        ([str(tmp_path / "nothing")], "is not a run directory"),
        ([str(sinusoid_run), "--steps", "1,x"], "must be comma-separated step counts >= 0"),
        ([str(sinusoid_run), "--task", str(CHUNK)], f"--task must be in 0..{CHUNK - 1}"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as stop:
            adaptation.main([*argv, "--out", str(tmp_path / "x.png")])
        assert stop.value.code == 2
        err = capsys.readouterr().err
        assert message in err.strip().splitlines()[-1], err  # after argparse's usage, if any
    assert not (tmp_path / "x.png").exists()


# ------------------------------------------------------------ Figure 3 (few-shot steps)


def _fake_eval(path: Path, method: str, ways: int, accuracies: list[float]) -> Path:
    by_step = [{"step": k, "loss": {"mean": 1.0 - a, "std": 0.1, "ci95": [0.9 - a, 1.1 - a]},
                "accuracy": {"mean": a, "std": 0.1, "ci95": [a - 0.01, a + 0.01]}}
               for k, a in enumerate(accuracies)]
    path.write_text(json.dumps({"benchmark": "omniglot", "method": method, "ways": ways,
                                "shots": 1, "by_step": by_step}))
    return path


def test_fewshot_figure_averages_seeds_per_method_and_panel(tmp_path):
    files = [_fake_eval(tmp_path / "m0.json", "midpoint", 5, [0.2, 0.90, 0.95]),
             _fake_eval(tmp_path / "m1.json", "midpoint", 5, [0.2, 0.80, 0.85]),
             _fake_eval(tmp_path / "r0.json", "ralston", 5, [0.2, 0.70, 0.75]),
             _fake_eval(tmp_path / "w0.json", "midpoint", 20, [0.05, 0.5, 0.6, 0.7])]
    out = tmp_path / "fig3.png"
    assert fewshot.main([*map(str, files), "--out", str(out)]) == 0
    assert out.read_bytes().startswith(PNG_MAGIC)
    rows = {(r[0], r[1], int(r[2])): r for r in
            csv.reader(out.with_suffix(".csv").read_text().splitlines()[1:])}
    two_seeds = rows[("omniglot 5-way 1-shot", "midpoint", 1)]
    assert float(two_seeds[3]) == pytest.approx(0.85) and two_seeds[6] == "2"
    half = 12.706 * 0.05 / 1.0  # t(0.975, 1) · std(0.9, 0.8) / sqrt(2)
    assert float(two_seeds[5]) - float(two_seeds[3]) == pytest.approx(half, rel=1e-3)
    one_run = rows[("omniglot 5-way 1-shot", "ralston", 2)]
    assert float(one_run[3]) == pytest.approx(0.75) and float(one_run[4]) == pytest.approx(0.74)
    assert ("omniglot 20-way 1-shot", "midpoint", 3) in rows


def test_fewshot_figure_refuses_a_file_that_is_not_an_evaluation(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"by_step": []}')
    with pytest.raises(SystemExit):
        fewshot.main([str(bad), "--out", str(tmp_path / "f.png")])
    assert "not an eval JSON of supervised-evaluate" in capsys.readouterr().err
