"""rkmeta_rl.rl.api.MetaRL: the Python API trains, saves, resumes and evaluates exactly as
the command line does. Every run is tiny (2 tasks × 2 episodes, an 8×8 policy, one torch
thread, at most 3 meta-iterations)."""

from __future__ import annotations

import inspect
import json
import shutil
from pathlib import Path

import pytest
import torch

from rkmeta_rl.cli import main
from rkmeta_rl.methods import get_tableau
from rkmeta_rl.rl import load_run
from rkmeta_rl.rl.api import MetaRL
from rkmeta_rl.rl.evaluate import EvalConfig, evaluate_run
from rkmeta_rl.rl.trainer import Trainer
from rkmeta_rl.run import rundir
from rkmeta_rl.stats import summarize

TINY = {"meta_batch_size": 2, "fast_batch_size": 2, "hidden": [8, 8], "num_threads": 1}
TINY_FLAGS = ["--meta-batch-size", "2", "--fast-batch-size", "2", "--hidden", "8,8",
              "--num-threads", "1", "--no-progress"]
EVAL = {"tasks": 3, "episodes": 2, "steps": 2}
EVAL_FLAGS = ["--tasks", "3", "--episodes", "2", "--steps", "2", "--no-progress"]


def without_timing(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith("seconds")} for r in records]


def as_json(records: list[dict]) -> list[dict]:
    """Records as metrics.jsonl holds them (NaN as null)."""
    return without_timing([json.loads(line) for line in
                           (rundir._metrics_line(r).decode() for r in records)])


def params_of(policy: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in policy.state_dict().items()}


def assert_params_equal(a: torch.nn.Module, b: torch.nn.Module) -> None:
    pa, pb = params_of(a), params_of(b)
    assert pa.keys() == pb.keys()
    for k in pa:
        assert torch.equal(pa[k], pb[k]), k


def one_line(err: ValueError) -> str:
    text = str(err)
    assert "\n" not in text, text
    return text


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory) -> Path:
    """``rkmeta-rl train`` for 3 iterations with the tiny settings (never modified)."""
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", *TINY_FLAGS, "--meta-iters", "3", "--out", str(out)]) == 0
    return out


@pytest.fixture
def cli_records(cli_run: Path) -> list[dict]:
    return without_timing(rundir.read_metrics(cli_run))


# -- training ------------------------------------------------------------------------------


def test_an_agent_in_memory_trains_what_the_cli_trains(cli_run, cli_records, tmp_path,
                                                        monkeypatch):
    monkeypatch.chdir(tmp_path)
    agent = MetaRL("nav2d", meta_iters=3, **TINY)
    assert agent.config.to_dict() == json.loads((cli_run / rundir.CONFIG).read_text())
    records = agent.learn(progress=False)  # to meta_iters, as the command
    assert as_json(records) == cli_records
    assert_params_equal(agent.policy, load_run(cli_run)[1])
    assert agent.iteration == 3 and agent.run_dir is None
    assert agent.learn(progress=False) == []  # the target is reached
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_learn_in_parts_equals_one_call(cli_records):
    agent, seen = MetaRL("nav2d", **TINY), []
    first = agent.learn(2, callback=seen.append, progress=False)
    second = agent.learn(1, callback=[seen.append], progress=False)
    assert [r["iter"] for r in first + second] == [0, 1, 2]
    assert seen == first + second == agent.records
    assert as_json(first + second) == cli_records
    assert agent.config.meta_iters == 3


def test_a_run_dir_agent_writes_what_the_cli_writes(cli_run, cli_records, tmp_path):
    out = tmp_path / "api"
    agent = MetaRL("nav2d", run_dir=out, **TINY)
    agent.learn(2, progress=False)
    agent.learn(1, progress=False)  # continues the directory: --resume --meta-iters 3
    assert without_timing(rundir.read_metrics(out)) == cli_records
    for name in (rundir.CONFIG, ".lock"):
        assert (out / name).exists()
    assert json.loads((out / rundir.CONFIG).read_text()) == \
        json.loads((cli_run / rundir.CONFIG).read_text())
    assert rundir.load_checkpoint(out)["iteration"] == 3
    assert len(list(out.glob("events.out.tfevents.*"))) == 2
    assert_params_equal(load_run(out)[1], load_run(cli_run)[1])
    # the same settings continue the run, as `rkmeta-rl train --out` with them does
    again = MetaRL("nav2d", run_dir=out, meta_iters=3, **TINY)
    assert again.iteration == 3 and again.records == agent.records


def test_a_callback_returning_false_stops_and_learn_goes_on_to_the_target(cli_records):
    agent = MetaRL("nav2d", **TINY)
    records = agent.learn(3, callback=lambda rec: rec["iter"] < 1, progress=False)
    assert [r["iter"] for r in records] == [0, 1] and agent.iteration == 2
    assert as_json(agent.learn(progress=False)) == cli_records[2:]


def test_an_interrupted_learn_keeps_what_it_trained(cli_records, monkeypatch):
    agent, calls = MetaRL("nav2d", **TINY), []
    meta_step = Trainer.meta_step

    def interrupted(self, tasks):  # Ctrl-C in the second iteration, its tasks drawn
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return meta_step(self, tasks)

    with monkeypatch.context() as m:
        m.setattr(Trainer, "meta_step", interrupted)
        with pytest.raises(KeyboardInterrupt):
            agent.learn(3, progress=False)
    assert agent.iteration == 1 and [r["iter"] for r in agent.records] == [0]
    agent.learn(2, progress=False)
    assert as_json(agent.records) == cli_records


# -- save and load ------------------------------------------------------------------------


def test_save_and_load_round_trip_and_continue_exactly(cli_run, cli_records, tmp_path,
                                                       capsys):
    agent = MetaRL("nav2d", **TINY)
    agent.learn(2, progress=False)
    saved = agent.save(tmp_path / "saved")
    assert sorted(p.name for p in saved.iterdir()) == [".lock", rundir.CHECKPOINT,
                                                       rundir.CONFIG, rundir.METRICS]
    loaded = MetaRL.load(saved)
    assert_params_equal(loaded.policy, agent.policy)
    assert loaded.config == agent.config and loaded.iteration == 2
    assert loaded.records == json.loads(json.dumps(agent.records))
    assert_params_equal(load_run(saved)[1], agent.policy)
    # the CLI resumes the saved directory; the agent continues it: both as uninterrupted
    resumed = tmp_path / "resumed"
    shutil.copytree(saved, resumed)
    assert main(["train", "--resume", str(resumed), "--meta-iters", "3", "--no-progress"]) == 0
    assert without_timing(rundir.read_metrics(resumed)) == cli_records
    assert as_json(loaded.learn(1, progress=False)) == cli_records[2:]
    assert without_timing(rundir.read_metrics(saved)) == cli_records
    assert_params_equal(loaded.policy, load_run(cli_run)[1])
    capsys.readouterr()


def test_save_refuses_another_run_or_a_later_state(cli_run, tmp_path):
    later = tmp_path / "later"
    shutil.copytree(cli_run, later)
    other = MetaRL("nav2d", **{**TINY, "seed": 1})
    with pytest.raises(ValueError, match="different run .*seed") as err:
        other.save(later)
    one_line(err.value)
    earlier = MetaRL("nav2d", **TINY)
    earlier.learn(1, progress=False)
    with pytest.raises(ValueError, match="iteration 3, past this agent's 1"):
        earlier.save(later)
    assert without_timing(rundir.read_metrics(later)) == \
        without_timing(rundir.read_metrics(cli_run))
    loaded = MetaRL.load(later)
    assert loaded.save(later) == later  # the same state: written again, unchanged
    assert_params_equal(load_run(later)[1], load_run(cli_run)[1])


# -- evaluate and adapt ---------------------------------------------------------------------


@pytest.mark.parametrize("settings, flags", [
    ({}, []),
    ({"protocol": "maml", "init": "random", "seed": 5},
     ["--protocol", "maml", "--init", "random", "--seed", "5"]),
], ids=["defaults", "maml-random"])
def test_evaluate_equals_the_clis_eval_json(cli_run, tmp_path, capsys, settings, flags):
    out = tmp_path / "eval.json"
    assert main(["evaluate", str(cli_run), *EVAL_FLAGS, *flags, "--out", str(out)]) == 0
    expected = json.loads(out.read_text())
    result = MetaRL.load(cli_run).evaluate(**EVAL, **settings, progress=False)
    assert json.loads(json.dumps(result)) == expected
    assert result == evaluate_run(cli_run, EvalConfig(**EVAL, **settings),
                                  out=tmp_path / "again.json", progress=False)
    capsys.readouterr()


def test_evaluate_in_memory_and_adapt_agree(cli_run, tmp_path):
    agent = MetaRL("nav2d", meta_iters=3, **TINY)
    agent.learn(progress=False)
    result = agent.evaluate(**EVAL, out=tmp_path / "eval.json", progress=False)
    on_disk = evaluate_run(cli_run, EvalConfig(**EVAL), out=tmp_path / "cli.json",
                           progress=False)
    assert result["run_dir"] is None
    assert {k: v for k, v in result.items() if k != "run_dir"} == \
        {k: v for k, v in on_disk.items() if k != "run_dir"}
    assert json.loads((tmp_path / "eval.json").read_text()) == json.loads(json.dumps(result))
    _, returns = agent.adapt(result["tasks_drawn"], steps=EVAL["steps"],
                             episodes=EVAL["episodes"], seed=result["seed"])
    assert [{"step": k, **summarize(r)} for k, r in enumerate(returns)] == result["by_step"]
    params, returns = agent.adapt([{"goal": [0.3, -0.2]}], steps=1, episodes=2, seed=0)
    assert len(returns) == 2 and all(v.shape[0] == 1 for v in params.values())
    with pytest.raises(ValueError, match="chooses among the snapshots"):
        agent.evaluate(**EVAL, checkpoint="best", progress=False)


def test_evaluate_defaults_are_the_commands():
    defaults = {name: p.default
                for name, p in inspect.signature(MetaRL.evaluate).parameters.items()}
    for name, value in vars(EvalConfig()).items():
        assert defaults[name] == value, name


# -- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize("settings, expected", [
    ({"meta_batch_sise": 2}, ["unknown setting 'meta_batch_sise'", "valid settings: ",
                              "meta_batch_size", "fast_batch_size"]),
    ({"alpha": 0.1}, ["unknown setting 'alpha'", "give inner_lr", "inner_lr"]),
    ({"hidden": "8,8"}, ["hidden must be a list of positive integers or None, got '8,8'"]),
    ({"meta_iters": 2.5}, ["meta_iters must be an integer, got 2.5"]),
    ({"meta_batch_size": 0}, ["meta_batch_size must be > 0, got 0"]),
    ({"ls_ratio": 1.5}, ["ls_ratio must be in (0, 1), got 1.5"]),
    ({"env": "nowhere"}, ["unknown env 'nowhere'", "nav2d"]),
    ({"env": "no_such_module:Env"}, ["cannot import module 'no_such_module'"]),
], ids=["typo", "resolved", "type", "float-count", "range", "range-float", "env",
        "import-path"])
def test_bad_settings_are_refused_in_one_line_before_anything_is_written(
        tmp_path, settings, expected):
    env = settings.pop("env", "nav2d")
    with pytest.raises(ValueError) as err:
        MetaRL(env, run_dir=tmp_path / "run", **{**TINY, **settings})
    for text in expected:
        assert text in one_line(err.value)
    assert "--" not in str(err.value)  # the keywords given, not the command line's flags
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("count", [0, -1, 1.5, True, "2"])
def test_learn_refuses_a_count_that_is_not_positive(count):
    agent = MetaRL("nav2d", **TINY)
    with pytest.raises(ValueError, match=f"meta_iters must be .*got {count!r}") as err:
        agent.learn(count, progress=False)
    one_line(err.value)
    assert agent.iteration == 0


def test_bad_meta_test_settings_are_refused():
    agent = MetaRL("nav2d", **TINY)
    for call, message in [(lambda: agent.adapt([], steps=1), "non-empty list of task dicts"),
                          (lambda: agent.adapt([{"goal": [0, 0]}], steps=-1), "steps must be"),
                          (lambda: agent.adapt([{"goal": [0, 0]}], alpha=0.0), "alpha must be"),
                          (lambda: agent.evaluate(tasks=0), "tasks must be an integer >= 1, got 0"),
                          (lambda: agent.evaluate(protocol="fast"), "unknown protocol 'fast'")]:
        with pytest.raises(ValueError, match=message) as err:
            call()
        one_line(err.value)
    with pytest.raises(TypeError, match="callback must be"):
        agent.learn(1, callback=[print, 3], progress=False)


def test_a_tableau_object_is_its_named_method():
    named = MetaRL("nav2d", method="rk4", **TINY).config
    given = MetaRL("nav2d", tableau=get_tableau("rk4"), **TINY).config
    assert given == named
