"""scripts/study_layer_methods.py end to end at toy size: every phase runs its real
``rkmeta-rl`` commands (in this process, as in tests/test_supervised_scripts.py) on the
sinusoid and on a small Omniglot fixture, and the README holds what they measured."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from helpers import run_in_process, table_row
from supervised_fixtures import omniglot_reproduction_data

from rkmeta_rl.launch import jobs
from rkmeta_rl.run import rundir
from rkmeta_rl.stats import summarize

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "study_layer_methods.py"
spec = importlib.util.spec_from_file_location("study_layer_methods", SCRIPT)
study = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = study
spec.loader.exec_module(study)

SEEDS = (0, 1)


@pytest.fixture
def in_process(monkeypatch):
    threads = torch.get_num_threads()  # the commands set 1 thread
    monkeypatch.setattr(jobs, "run_jobs", run_in_process)
    yield
    torch.set_num_threads(threads)


def toy(data: Path, tmp_path: Path, *extra: str) -> list[str]:
    return ["--data", str(data), "--seeds", ",".join(map(str, SEEDS)),
            "--sinusoid-iters", "4", "--omniglot-iters", "2", "--omniglot-batch", "2",
            "--omniglot-tasks", "4", "--runs-dir", str(tmp_path / "runs"),
            "--results-dir", str(tmp_path / "results"),
            "--train-extra", "--hidden 8,8 --filters 4 --log-every 2 --eval-every 2 "
            "--eval-tasks 2", "--poll", "1", *extra]


def cell(values: list[float], scale: float = 1.0, digits: int = 3) -> str:
    s = summarize(values)
    return (f"{scale * s['mean']:.{digits}f} ± "
            f"{scale * (s['ci95'][1] - s['ci95'][0]) / 2:.{digits}f}")


def seed_means(runs: Path, name: str, step: int, key: str) -> list[float]:
    return [json.loads((runs / f"{name}-s{s}" / "eval.json").read_text())
            ["by_step"][step][key]["mean"] for s in SEEDS]


def test_study_at_toy_size(in_process, tmp_path: Path, capsys) -> None:
    data = omniglot_reproduction_data(tmp_path / "data")
    runs, results = tmp_path / "runs", tmp_path / "results"
    assert study.main(toy(data, tmp_path, "--eval-extra", "--steps 2")) == 0
    text = (results / "README.md").read_text()

    for benchmark, head in (("sinusoid", "layers.2"), ("omniglot", "head")):
        for config in study.CONFIGS:
            for seed in SEEDS:
                name = f"{benchmark}-{config}-s{seed}"
                cfg = json.loads((runs / name / rundir.CONFIG).read_text())
                assert cfg["benchmark"] == benchmark and cfg["seed"] == seed
                assert cfg["meta_iters"] == (4 if benchmark == "sinusoid" else 2)
                if config == "split":
                    assert cfg["layer_methods"] == f"{head}=midpoint,*=ralston"
                else:
                    assert cfg["layer_methods"] is None and cfg["method"] == config
                ev = json.loads((runs / name / "eval.json").read_text())
                assert ev["tasks"] == (600 if benchmark == "sinusoid" else 4)
                assert len(ev["by_step"]) == 3  # 0..2 steps
                copy = json.loads((results / "runs" / name / "eval.json").read_text())
                assert copy["summary"] == ev["summary"]
                assert "per_task" not in copy["by_step"][2]["loss"]
                assert (results / "runs" / name / "metrics.jsonl").exists()
        # the split adapts every parameter with α, like the uniform configurations
        ev = json.loads((runs / f"{benchmark}-split-s0" / "eval.json").read_text())
        uniform = json.loads((runs / f"{benchmark}-ralston-s0" / "eval.json").read_text())
        assert set(ev["alpha"].values()) == {uniform["alpha"]}

    sinusoid, omniglot = text.split("## Omniglot")
    assert "| configuration | methods | MSE, 1 step | MSE, 2 steps |" in sinusoid
    for config in study.CONFIGS:
        cells = table_row(sinusoid, config)
        name = f"sinusoid-{config}"
        assert cells[2] == cell(seed_means(runs, name, 1, "loss"))
        assert cells[3] == cell(seed_means(runs, name, 2, "loss"))
        assert cells[4] == " / ".join(f"{v:.3g}" for v in seed_means(runs, name, 2, "loss"))
        cells = table_row(omniglot, config)
        name = f"omniglot-{config}"
        assert cells[2] == cell(seed_means(runs, name, 2, "accuracy"), 100, 2)
        assert cells[4] == cell(seed_means(runs, name, 2, "loss"))
        assert cells[5] == cell(seed_means(runs, name, 0, "accuracy"), 100, 2)
    assert "`layers.2` midpoint, the rest ralston" in sinusoid
    assert "`head` midpoint, the rest ralston" in omniglot
    # paired differences: split − each uniform configuration, seed by seed
    for part, step_key in ((sinusoid, "loss"), (omniglot, "accuracy")):
        name = "sinusoid" if part is sinusoid else "omniglot"
        split = seed_means(runs, f"{name}-split", 2, step_key)
        for other in ("midpoint", "ralston"):
            diff = [a - b for a, b in zip(split, seed_means(runs, f"{name}-{other}", 2,
                                                            step_key), strict=True)]
            cells = table_row(part, f"split − {other}")
            assert cells[1] == (cell(diff, digits=4) if name == "sinusoid"
                                else cell(diff, 100, 2))
            assert cells[2] in ("indistinguishable", "split better", "split worse")
    assert "--layer-methods 'layers.2=midpoint,*=ralston'" in text
    assert "--layer-methods 'head=midpoint,*=ralston'" in text
    assert "θ − α k1" in text and "a = (0, 1)" in text and "(1/3, 2/3)" in text
    assert "meta-batch 2 × 2 meta-iterations" in text and "30,000" in text
    assert "total training time" in text and "## Reading" in text
    assert text.count("the best mean ") == 2 and "the best mean sinusoid MSE is " in text
    history = [json.loads(line) for line in
               (runs / "timing-history.jsonl").read_text().splitlines()]
    assert [h["phase"] for h in history] == ["train", "evaluate"]
    assert "wrote" in capsys.readouterr().out

    # run again: the finished runs are kept (no iteration redone), the README rewritten
    before = {p.name: len(rundir.read_metrics(p)) for p in runs.iterdir() if p.name[-3:-1] == "-s"}
    assert study.main(toy(data, tmp_path, "--eval-extra", "--steps 2")) == 0
    assert {p: len(rundir.read_metrics(runs / p)) for p in before} == before
    assert (results / "README.md").read_text().count("## Reading") == 1


def test_verdict_reads_the_paired_interval() -> None:
    assert study.verdict([1.0, 2.0, 3.0], [1.1, 2.1, 3.1], lower_is_better=True)[1] == \
        "split better"
    assert study.verdict([1.0, 2.0, 3.0], [1.1, 2.1, 3.1], lower_is_better=False)[1] == \
        "split worse"
    assert study.verdict([1.0, 2.0, 3.0], [1.1, 1.9, 3.0], lower_is_better=True)[1] == \
        "indistinguishable"
    assert "diverged" in study.across([1.0, float("nan")])
    nan = float("nan")
    assert study.best_mean({"midpoint": [1.0, nan], "split": [2.0, 2.0]}, "MSE", min, 1, 1) \
        == "the best mean MSE is split's (2.0; midpoint nan)"


def test_reading_with_one_seed_claims_nothing() -> None:
    args = argparse.Namespace(seeds=[0])
    text = study.reading(["sinusoid vs midpoint: not testable"], ["the best mean x is y's"], args)
    assert text.startswith("With one seed there is no interval across seeds")
    args.seeds = [0, 1, 2]
    text = study.reading(["sinusoid vs midpoint: indistinguishable",
                          "sinusoid vs ralston: split worse"], ["b"], args)
    assert "sinusoid vs ralston: split worse" in text and "2 degrees of freedom" in text


def test_refuses_bad_arguments_before_running(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        study.main(["--benchmarks", "sinusoid,mnist", "--runs-dir", str(tmp_path / "r")])
    assert "--benchmarks: choose from sinusoid, omniglot" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        study.main(["--data", str(tmp_path), "--runs-dir", str(tmp_path / "r")])
    assert "images_background_small1.zip, images_background_small2.zip" in \
        capsys.readouterr().err
    with pytest.raises(SystemExit):
        study.main(["--benchmarks", "sinusoid", "--omniglot-iters", "0"])
    assert not (tmp_path / "r").exists()
