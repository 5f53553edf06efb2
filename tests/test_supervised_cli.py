"""The supervised command line: ``rkmeta-rl supervised`` and ``supervised-evaluate`` (train,
evaluate, resume, a tableau file), RL commands on a supervised run, bad input (exit 2 with
one error line) and a MiniImagenet run on a generated fixture.
"""

from __future__ import annotations

import json

import pytest
import torch
from helpers import interrupt_on_call
from supervised_fixtures import miniimagenet_root

from rkmeta_rl.cli import main
from rkmeta_rl.run import rundir
from rkmeta_rl.supervised.trainer import SupervisedTrainer, load_supervised_run


def error_line(err: str) -> str:
    """The single ``rkmeta-rl: error:`` line of a failed command (asserts there is one)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one error line, got {lines}"
    assert lines[0].startswith("rkmeta-rl: error: "), lines[0]
    return lines[0]


# -- command line ----------------------------------------------------------------------------

TINY = ["--benchmark", "sinusoid", "--method", "heun", "--hidden", "8,8", "--meta-iters", "20",
        "--meta-batch-size", "5", "--log-every", "10", "--eval-every", "20", "--eval-tasks", "4",
        "--no-progress"]


def test_cli_trains_evaluates_and_resumes(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    assert main(["supervised", *TINY, "--out", str(run)]) == 0
    out, err = capsys.readouterr()
    assert f"rkmeta-rl: run directory {run} (iteration 0/20, α = 0.01, h = 0.01" in err
    assert out.startswith("final: val_loss_pre ")
    assert [r["iter"] for r in rundir.read_metrics(run)] == [9, 19]
    assert (run / rundir.CHECKPOINT).exists() and list(run.glob("events.out.tfevents.*"))
    config = json.loads((run / rundir.CONFIG).read_text())
    assert config["kind"] == "supervised" and config["method"] == "heun"
    assert config["hidden"] == [8, 8] and config["meta_batch_size"] == 5

    assert main(["supervised-evaluate", str(run), "--tasks", "5", "--steps", "2"]) == 0
    out, _ = capsys.readouterr()
    result = json.loads((run / "eval.json").read_text())
    assert result["tasks"] == 5 and len(result["by_step"]) == 3
    assert out.startswith("heun: 5 held-out tasks, α = 0.01") and f"wrote {run}" in out
    other = tmp_path / "other.json"
    assert main(["supervised-evaluate", str(run), "--tasks", "5", "--steps", "2", "--seed",
                 "3", "--alpha", "0.02", "--out", str(other)]) == 0
    assert json.loads(other.read_text())["alpha"] == 0.02

    before = (run / rundir.METRICS).read_text()
    assert main(["supervised", "--resume", str(run), "--no-progress"]) == 0  # finished
    assert "iteration 20/20" in capsys.readouterr().err
    assert (run / rundir.METRICS).read_text() == before
    assert main(["supervised", *TINY, "--out", str(run)]) == 0  # same flags: same run
    assert (run / rundir.METRICS).read_text() == before

    monkeypatch.chdir(tmp_path)  # no --out: runs/BENCHMARK-METHOD-sSEED; a progress bar
    shown = [a for a in TINY if a != "--no-progress"]
    assert main(["supervised", *shown, "--meta-iters", "2", "--seed", "4"]) == 0
    assert (tmp_path / "runs" / "sinusoid-heun-s4" / rundir.CHECKPOINT).exists()
    capsys.readouterr()


def test_cli_tableau_file(tmp_path, capsys):
    path = tmp_path / "half.json"  # midpoint's tableau under another name: c2 = 1/2
    path.write_text(json.dumps({"name": "half", "a": [0, 1], "q": [[0, 0], [0.5, 0]]}))
    run = tmp_path / "run"
    argv = ["supervised", *TINY, "--meta-iters", "2", "--step-size", "0.04", "--out", str(run)]
    argv[argv.index("--method"):argv.index("--method") + 2] = ["--tableau", str(path)]
    assert main(argv) == 0
    config = json.loads((run / rundir.CONFIG).read_text())
    assert config["method"] == "half" and config["tableau"]["c"] == [0.0, 0.5]
    assert (config["alpha"], config["h"]) == (0.02, 0.04)
    assert main(argv) == 0  # the same command again: the same (finished) run
    assert "iteration 2/2" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["evaluate", "RUN", "--tasks", "1", "--no-progress"],
                                  ["train", "--resume", "RUN"]], ids=["evaluate", "resume"])
def test_rl_commands_on_a_supervised_run_say_so(argv, sinusoid_run, capsys):
    assert main([a.replace("RUN", str(sinusoid_run)) for a in argv]) == 2
    assert "supervised" in error_line(capsys.readouterr().err)


CLI_ERRORS = {
    "benchmark": (["supervised", "--benchmark", "cifar"], "unknown benchmark 'cifar'"),
    "method": (["supervised", "--method", "rk9"], "unknown method 'rk9'; valid choices:"),
    "no data": (["supervised", "--benchmark", "omniglot"], "--data is required for omniglot"),
    "missing data": (["supervised", "--benchmark", "miniimagenet", "--data", "TMP/none"],
                     "--data path(s) not found: TMP/none"),
    "ways": (["supervised", "--benchmark", "omniglot", "--data", "TMP", "--ways", "1"],
             "--ways must be >= 2 for classification, got 1"),
    "meta-lr": (["supervised", "--meta-lr", "0"], "--meta-lr must be a positive number, got 0"),
    "meta-iters": (["supervised", "--meta-iters", "-1"],
                   "--meta-iters must be an integer >= 1, got -1"),
    "resume flags": (["supervised", "--resume", "RUN", "--meta-lr", "0.1"],
                     "--resume continues a run with its own config; drop ['--meta-lr']"),
    "resume fewer": (["supervised", "--resume", "RUN", "--meta-iters", "1"],
                     "--meta-iters 1: the run in RUN has done"),
    "resume missing": (["supervised", "--resume", "TMP/none"],
                       "--resume TMP/none: no such run directory"),
    "different run": (["supervised", *TINY, "--meta-lr", "0.01", "--out", "RUN"],
                      "already holds a different run (settings differ: "),
    "layer pattern": (["supervised", *TINY, "--layer-methods", "head=midpoint,*=ralston",
                       "--out", "TMP/new"], "pattern(s) 'head' match no parameter"),
    "layer syntax": (["supervised", *TINY, "--layer-methods", "midpoint", "--out", "TMP/new"],
                     "expected PATTERN=METHOD"),
    "eval dir": (["supervised-evaluate", "TMP/none"], "TMP/none: no such run directory"),
    "eval tasks": (["supervised-evaluate", "RUN", "--tasks", "0"],
                   "--tasks must be >= 1, got 0"),
    "eval threads": (["supervised-evaluate", "RUN", "--num-threads", "-1"],
                     "--num-threads must be >= 0 (0: every core this process may use, one "
                     "for a small problem), got -1"),
    "eval runs": (["supervised-evaluate", "RUN", "--runs", "TMP"],
                  "--runs scores Omniglot's one-shot runs; RUN is sinusoid"),
}


@pytest.mark.parametrize("name", list(CLI_ERRORS))
def test_cli_bad_input_returns_2_with_the_message(name, sinusoid_run, tmp_path, capsys):
    argv, message = CLI_ERRORS[name]

    def fill(text: str) -> str:
        return text.replace("RUN", str(sinusoid_run)).replace("TMP", str(tmp_path))

    before = sorted(p.name for p in sinusoid_run.iterdir())
    assert main([fill(a) for a in argv]) == 2
    out, err = capsys.readouterr()
    assert fill(message) in error_line(err)
    assert sorted(p.name for p in sinusoid_run.iterdir()) == before
    assert not (tmp_path / "new").exists()


def test_layer_methods_train_resume_and_evaluate_with_each_groups_alpha(tmp_path, capsys,
                                                                        monkeypatch):
    spec = "layers.2=midpoint,*=frozen:midpoint"  # ANIL: only the head adapts
    run, ref = tmp_path / "anil", tmp_path / "ref"
    argv = ["supervised", *TINY, "--layer-methods", spec]
    assert main([*argv, "--out", str(ref)]) == 0
    with monkeypatch.context() as m:
        interrupt_on_call(m, 15, SupervisedTrainer)
        assert main([*argv, "--out", str(run)]) == 130
    assert main(["supervised", "--resume", str(run)]) == 0
    strip = lambda rs: [{k: v for k, v in r.items() if "seconds" not in k} for r in rs]  # noqa: E731
    assert strip(rundir.read_metrics(run)) == strip(rundir.read_metrics(ref))
    capsys.readouterr()
    assert main(["supervised-evaluate", str(run), "--tasks", "4", "--steps", "1"]) == 0
    result = json.loads((run / "eval.json").read_text())
    assert result["alpha"]["layers.2.weight"] == 0.01 and result["alpha"]["layers.0.weight"] == 0


def test_cli_argparse_refusals(capsys):
    for argv in (["supervised", "--inner-lr", "0.1", "--step-size", "0.1"],
                 ["supervised", "--hidden", "8,x"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "not allowed with argument" in err and "must be positive layer sizes like" in err


# -- MiniImagenet ----------------------------------------------------------------------------


def test_miniimagenet_fixture_trains_and_evaluates(tmp_path, capsys):
    root = miniimagenet_root(tmp_path / "mini", classes=5, per_class=3)
    run = tmp_path / "run"
    assert main(["supervised", "--benchmark", "miniimagenet", "--data", str(root), "--queries",
                 "2", "--filters", "4", "--meta-batch-size", "2", "--meta-iters", "2",
                 "--inner-steps", "1", "--test-steps", "2", "--log-every", "1",
                 "--eval-tasks", "2", "--no-progress", "--out", str(run)]) == 0
    records = rundir.read_metrics(run)
    assert [r["iter"] for r in records] == [0, 1]
    assert 0 <= records[-1]["val_accuracy_post"] <= 1 and records[-1]["rejected"] == 0
    cfg, bench, params = load_supervised_run(run)
    assert (cfg.ways, cfg.shots, cfg.queries, cfg.filters, cfg.alpha) == (5, 1, 2, 4, 0.01)
    assert cfg.data == [str(root.resolve())]
    batch = bench.test(1, torch.Generator())
    assert batch.xs.shape == (1, 5, 3, 84, 84) and batch.xq.shape == (1, 10, 3, 84, 84)
    assert main(["supervised-evaluate", str(run), "--tasks", "3", "--steps", "1"]) == 0
    result = json.loads((run / "eval.json").read_text())
    assert result["benchmark"] == "miniimagenet" and len(result["by_step"]) == 2
    assert len(result["by_step"][1]["accuracy"]["per_task"]) == 3
    capsys.readouterr()
