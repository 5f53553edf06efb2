"""Tests for rkmeta_rl.rl.trainer and rkmeta_rl.run.rundir: resume, checkpoints, reproducibility,
and the protection against non-finite meta-steps.

Every run is tiny (2 tasks x 2 episodes, an 8x8 policy, at most 3 meta-iterations).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from helpers import interrupt_on_call

from rkmeta_rl.cli import main
from rkmeta_rl.rl import meta_step as meta_step_module
from rkmeta_rl.rl.config import TrainConfig, resolve
from rkmeta_rl.rl.trainer import Trainer, load_run, prepare_run_dir, resume_run
from rkmeta_rl.run import rundir
from rkmeta_rl.run.config import torch_threads


def tiny_config(**overrides) -> TrainConfig:
    settings = dict(meta_batch_size=2, fast_batch_size=2, hidden=[8, 8], meta_iters=3)
    settings.update(overrides)
    return resolve(TrainConfig(**settings))


def without_timing(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith("seconds")} for r in records]


def params_of(policy: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in policy.state_dict().items()}


def assert_params_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def run_to_end(run_dir: Path, **overrides) -> Trainer:
    trainer = prepare_run_dir(tiny_config(**overrides), run_dir)
    trainer.run(progress=False)
    return trainer


# -- resume ------------------------------------------------------------------------------


def test_resume_equals_uninterrupted_run(tmp_path, monkeypatch, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    run_to_end(a)
    records_a = rundir.read_metrics(a)
    assert [r["iter"] for r in records_a] == [0, 1, 2]

    with monkeypatch.context() as m:
        interrupt_on_call(m, 2)
        with pytest.raises(KeyboardInterrupt):
            prepare_run_dir(tiny_config(), b).run(progress=False)
    assert rundir.load_checkpoint(b)["iteration"] == 1
    assert [r["iter"] for r in rundir.read_metrics(b)] == [0]
    # a kill after appending iteration 1's record but before its checkpoint was saved
    bogus = dict(records_a[1], return_pre=12345.0)
    rundir.append_metrics(b, bogus)

    assert main(["train", "--resume", str(b), "--no-progress"]) == 0
    assert "iteration 1/3" in capsys.readouterr().err
    records_b = rundir.read_metrics(b)
    assert [r["iter"] for r in records_b] == [0, 1, 2]
    assert all(r["return_pre"] != 12345.0 for r in records_b)
    assert without_timing(records_b) == without_timing(records_a)
    assert_params_equal(params_of(load_run(a)[1]), params_of(load_run(b)[1]))
    assert rundir.load_checkpoint(b)["iteration"] == 3


def test_resume_run_drops_records_past_the_checkpoint(tmp_path):
    run_to_end(tmp_path, meta_iters=2)
    state = rundir.load_checkpoint(tmp_path)
    state["iteration"] = 1  # as if iteration 1 was recorded but never checkpointed
    rundir.save_checkpoint(tmp_path, state)
    trainer = resume_run(tmp_path)
    assert trainer.iteration == 1
    assert [r["iter"] for r in rundir.read_metrics(tmp_path)] == [0]


def test_resume_survives_a_torn_last_metrics_line(tmp_path, monkeypatch, capsys):
    with monkeypatch.context() as m:
        interrupt_on_call(m, 2)
        with pytest.raises(KeyboardInterrupt):
            prepare_run_dir(tiny_config(), tmp_path).run(progress=False)
    with open(tmp_path / rundir.METRICS, "a") as f:
        f.write('{"iter": 1, "return_pr')  # half of iteration 1's record
    code = main(["train", "--resume", str(tmp_path), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert [r["iter"] for r in rundir.read_metrics(tmp_path)] == [0, 1, 2]


def test_prepare_run_dir_refuses_a_different_run(tmp_path):
    run_to_end(tmp_path, meta_iters=1)
    before = (tmp_path / "config.json").read_bytes()
    with pytest.raises(ValueError, match="different run.*seed"):
        prepare_run_dir(tiny_config(meta_iters=1, seed=1), tmp_path)
    assert (tmp_path / "config.json").read_bytes() == before
    assert prepare_run_dir(tiny_config(meta_iters=1), tmp_path).iteration == 1


# -- load_run ----------------------------------------------------------------------------


def test_load_run_returns_config_and_checkpoint_policy(tmp_path):
    trainer = run_to_end(tmp_path, meta_iters=2)
    cfg, policy = load_run(tmp_path)
    assert isinstance(cfg, TrainConfig)
    assert cfg == TrainConfig.from_dict(json.loads((tmp_path / "config.json").read_text()))
    assert cfg.hidden == [8, 8] and cfg.meta_iters == 2
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert_params_equal(params_of(policy), state["policy"])
    assert_params_equal(params_of(policy), params_of(trainer.policy))
    # the trained policy is not the freshly initialised one
    fresh = Trainer(cfg, tmp_path / "unused").policy
    assert not all(torch.equal(v, fresh.state_dict()[k]) for k, v in params_of(policy).items())


def test_load_run_without_checkpoint_raises(tmp_path):
    prepare_run_dir(tiny_config(), tmp_path)  # config.json only
    with pytest.raises(ValueError, match="no checkpoint"):
        load_run(tmp_path)
    with pytest.raises(ValueError, match="config.json"):
        load_run(tmp_path / "nowhere")


# -- non-finite protection ---------------------------------------------------------------


def _step_with(trainer: Trainer) -> tuple[dict, dict[str, torch.Tensor]]:
    before = params_of(trainer.policy)
    rec = trainer.step()
    return rec, before


def test_nan_natural_step_leaves_theta_unchanged(tmp_path, monkeypatch, capsys):
    def nan_step(grad, fvp, max_kl, cg_iters=10):
        return torch.full_like(grad, math.nan), math.nan

    monkeypatch.setattr(meta_step_module, "natural_step", nan_step)
    trainer = Trainer(tiny_config(), tmp_path)
    with pytest.warns(RuntimeWarning, match="iteration 0: step rejected .non-finite natural "
                                            "step.; θ kept"):
        rec, before = _step_with(trainer)
    assert_params_equal(params_of(trainer.policy), before)
    assert rec["accepted"] is False
    assert rec["rejected"] == "non-finite natural step"


def test_nan_rewards_leave_theta_unchanged(tmp_path, monkeypatch):
    original = Trainer.sampler

    def nan_sampler(self, tasks):
        sample = original(self, tasks)

        def nan_sample(stage, params):
            episodes = sample(stage, params)
            episodes.rewards = torch.full_like(episodes.rewards, math.nan)
            return episodes
        return nan_sample

    monkeypatch.setattr(Trainer, "sampler", nan_sampler)
    trainer = prepare_run_dir(tiny_config(meta_iters=1), tmp_path)
    before = params_of(trainer.policy)
    records = trainer.run(progress=False)
    assert_params_equal(params_of(trainer.policy), before)
    assert_params_equal(params_of(load_run(tmp_path)[1]), before)
    (rec,) = rundir.read_metrics(tmp_path)
    assert rec["accepted"] is False
    assert rec["rejected"] == "non-finite gradient"
    assert rec["iter"] == records[0]["iter"] == 0 and math.isnan(records[0]["return_pre"])
    assert rec["return_pre"] is None  # non-finite values are written as JSON null


def _nan_line_search(monkeypatch, nan_calls) -> None:
    """Wrap meta_step's line search so that evaluate() is NaN on the calls in nan_calls."""
    original = meta_step_module.backtracking_line_search

    def line_search(evaluate, *args, **kwargs):
        calls = []

        def nan_evaluate(x):
            calls.append(1)
            loss, kl = evaluate(x)
            return (math.nan, kl) if len(calls) in nan_calls else (loss, kl)
        return original(nan_evaluate, *args, **kwargs)

    monkeypatch.setattr(meta_step_module, "backtracking_line_search", line_search)


def test_nan_line_search_candidates_leave_theta_unchanged(tmp_path, monkeypatch):
    cfg = tiny_config()
    _nan_line_search(monkeypatch, range(1, cfg.ls_steps + 1))
    trainer = Trainer(cfg, tmp_path)
    rec, before = _step_with(trainer)
    assert_params_equal(params_of(trainer.policy), before)
    assert rec["accepted"] is False
    assert rec["line_search_steps"] == cfg.ls_steps
    assert rec["rejected"] == f"{cfg.ls_steps} non-finite line-search candidates"
    assert rec["kl"] == 0.0 and rec["surrogate_improvement"] == 0.0


def test_accepted_step_after_a_nan_candidate_is_not_reported_as_rejected(
        tmp_path, monkeypatch, capsys):
    _nan_line_search(monkeypatch, {1})
    trainer = Trainer(tiny_config(), tmp_path)
    rec, before = _step_with(trainer)
    if not rec["accepted"] or rec["line_search_steps"] < 2:
        pytest.fail(f"precondition: a later candidate should be accepted, got {rec}")
    if all(torch.equal(v, before[k]) for k, v in params_of(trainer.policy).items()):
        pytest.fail("precondition: θ should have changed")
    err = capsys.readouterr().err
    assert "θ kept" not in err
    assert rec["rejected"] == ""


# -- reproducibility ---------------------------------------------------------------------


def test_same_seed_reproduces_and_other_seed_differs(tmp_path):
    a, b, c = (run_to_end(tmp_path / name, seed=seed)
               for name, seed in (("a", 0), ("b", 0), ("c", 1)))
    rec_a, rec_b, rec_c = (without_timing(rundir.read_metrics(t.run_dir)) for t in (a, b, c))
    assert len(rec_a) == 3
    assert rec_a == rec_b
    assert_params_equal(params_of(load_run(a.run_dir)[1]), params_of(load_run(b.run_dir)[1]))
    assert rec_c != rec_a
    assert rec_c[0]["return_pre"] != rec_a[0]["return_pre"]


# -- atomic checkpoints ------------------------------------------------------------------


def _state(iteration: int) -> dict:
    return {"iteration": iteration, "policy": {"w": torch.full((3,), float(iteration))}}


def test_save_checkpoint_leaves_no_temporary_file(tmp_path):
    rundir.save_checkpoint(tmp_path, _state(1))
    rundir.save_checkpoint(tmp_path, _state(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]
    state = rundir.load_checkpoint(tmp_path)
    assert state["iteration"] == 2 and torch.equal(state["policy"]["w"], torch.full((3,), 2.0))


def _failing_save(obj, f, *args, **kwargs):
    f.write(b"PK\x03\x04 half a checkpoint")
    raise OSError("disk full")


def test_failing_writer_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    rundir.save_checkpoint(tmp_path, _state(1))
    before = (tmp_path / "checkpoint.pt").read_bytes()
    monkeypatch.setattr(torch, "save", _failing_save)
    with pytest.raises(rundir.WriteError, match="cannot write .*checkpoint.pt: disk full"):
        rundir.save_checkpoint(tmp_path, _state(2))
    monkeypatch.undo()
    assert (tmp_path / "checkpoint.pt").read_bytes() == before
    state = rundir.load_checkpoint(tmp_path)
    assert state["iteration"] == 1 and torch.equal(state["policy"]["w"], torch.ones(3))


def test_failing_writer_leaves_no_temporary_file(tmp_path, monkeypatch):
    rundir.save_checkpoint(tmp_path, _state(1))
    monkeypatch.setattr(torch, "save", _failing_save)
    with pytest.raises(rundir.WriteError):
        rundir.save_checkpoint(tmp_path, _state(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_trainer_checkpoint_round_trips_the_task_stream(tmp_path):
    trainer = run_to_end(tmp_path, meta_iters=1)
    state = rundir.load_checkpoint(tmp_path)
    assert state["iteration"] == 1
    assert "generator" not in state  # the sampling streams are (seed, iteration, stage)
    assert state["task_rng"] == trainer.family.rng_state()
    resumed = resume_run(tmp_path)
    assert resumed.iteration == 1
    assert resumed.family.sample_tasks(2)[0]["goal"].tolist() == \
        trainer.family.sample_tasks(2)[0]["goal"].tolist()


def test_a_checkpoint_with_the_old_torch_generator_resumes(tmp_path):
    """Checkpoints written before the per-episode streams hold a torch generator's state:
    it is ignored, and the run continues as one that never had it."""
    a, b = tmp_path / "a", tmp_path / "b"
    run_to_end(a)
    with pytest.MonkeyPatch.context() as m:
        interrupt_on_call(m, 2)
        with pytest.raises(KeyboardInterrupt):
            prepare_run_dir(tiny_config(), b).run(progress=False)
    state = rundir.load_checkpoint(b)
    rundir.save_checkpoint(b, {**state, "generator": torch.Generator().get_state()})
    assert main(["train", "--resume", str(b), "--no-progress"]) == 0
    assert without_timing(rundir.read_metrics(b)) == without_timing(rundir.read_metrics(a))


def test_directory_with_run_files_but_no_config_is_refused(tmp_path):
    (tmp_path / rundir.METRICS).write_text('{"iter": 0}\n')
    with pytest.raises(ValueError, match="no config.json"):
        prepare_run_dir(tiny_config(meta_iters=1), tmp_path)
    assert (tmp_path / rundir.METRICS).read_text() == '{"iter": 0}\n'
    assert not (tmp_path / rundir.CONFIG).exists()


# -- a tableau per parameter group ---------------------------------------------------------

ANIL = "[wb]2=midpoint,*=frozen:midpoint"  # hidden 8,8: w2, b2 are the output layer


def test_anil_trains_resumes_exactly_and_adapts_only_the_head(tmp_path, monkeypatch, capsys):
    argv = ["train", "--meta-batch-size", "2", "--fast-batch-size", "2", "--hidden", "8,8",
            "--meta-iters", "3", "--layer-methods", ANIL, "--no-progress"]
    a, b = tmp_path / "a", tmp_path / "b"
    assert main([*argv, "--out", str(a)]) == 0
    with monkeypatch.context() as m:
        interrupt_on_call(m, 2)
        assert main([*argv, "--out", str(b)]) == 130
    assert main(["train", "--resume", str(b)]) == 0
    assert without_timing(rundir.read_metrics(a)) == without_timing(rundir.read_metrics(b))
    assert all(r["accepted"] for r in rundir.read_metrics(a))
    assert main(["evaluate", str(a), "--tasks", "2", "--episodes", "2", "--steps", "1",
                 "--no-progress"]) == 0
    result = json.loads((a / "eval.json").read_text())
    assert result["alpha"] == {"w0": 0.0, "b0": 0.0, "w1": 0.0, "b1": 0.0, "w2": 0.16,
                               "b2": 0.16, "log_std": 0.0}
    assert result["method"] == f"layers {ANIL}"


def test_groups_with_their_own_weights_are_refused_by_trpo(tmp_path, capsys):
    out = tmp_path / "split"
    assert main(["train", "--hidden", "8,8", "--layer-methods", "[wb]2=midpoint,*=ralston",
                 "--out", str(out)]) == 2
    assert "TRPO needs one objective" in capsys.readouterr().err
    assert not out.exists()


def test_the_same_seed_and_number_of_threads_repeat_the_metrics(tmp_path):
    """What README promises: the same seed and --num-threads give the same metrics. (Another
    thread count may change the last bits on some CPUs: BLAS may split a long product by
    thread; on Intel Xeon the first KL differed in the fifth digit.)"""
    runs = []
    for name in ("a", "b"):
        # 2x100 and two threads: long enough products for BLAS to split them by thread
        trainer = prepare_run_dir(tiny_config(num_threads=2, meta_batch_size=8,
                                              fast_batch_size=5, hidden=[100, 100],
                                              meta_iters=2), tmp_path / name)
        trainer.run(progress=False)
        runs.append(without_timing(rundir.read_metrics(tmp_path / name)))
    assert len(runs[0]) == 2 and runs[0] == runs[1]


def test_resume_extends_a_finished_run_as_if_it_had_been_given_more(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    run_to_end(a, meta_iters=5)
    run_to_end(b, meta_iters=3)
    assert main(["train", "--resume", str(b), "--meta-iters", "5", "--no-progress"]) == 0
    assert "iteration 3/5" in capsys.readouterr().err
    assert without_timing(rundir.read_metrics(b)) == without_timing(rundir.read_metrics(a))
    assert_params_equal(params_of(load_run(a)[1]), params_of(load_run(b)[1]))
    assert rundir.read_config(b)["meta_iters"] == 5
    assert main(["train", "--resume", str(b), "--no-progress"]) == 0  # done: nothing to do
    assert rundir.load_checkpoint(b)["iteration"] == 5


@pytest.mark.parametrize("value", ["2", "0", "-1"])
def test_resume_refuses_fewer_iterations_than_done(tmp_path, capsys, value):
    run_to_end(tmp_path, meta_iters=3)
    before = (tmp_path / "config.json").read_bytes(), rundir.read_metrics(tmp_path)
    assert main(["train", "--resume", str(tmp_path), "--meta-iters", value]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--meta-iters {value}" in err and "done 3" in err
    assert ((tmp_path / "config.json").read_bytes(), rundir.read_metrics(tmp_path)) == before
    assert resume_run(tmp_path).writer_lock is not None  # the lock was released


def test_resume_takes_another_number_of_threads_and_says_it_may_differ(tmp_path, capsys):
    prepare_run_dir(tiny_config(num_threads=1, meta_iters=2), tmp_path)  # nothing done yet
    assert main(["train", "--resume", str(tmp_path), "--num-threads", "2",
                 "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert ("rkmeta-rl: warning: --num-threads 2 differs from the run's own (1): the "
            "continued run may differ in the last bits") in err
    assert rundir.read_config(tmp_path)["num_threads"] == 1  # the run's own setting stays
    assert [r["iter"] for r in rundir.read_metrics(tmp_path)] == [0, 1]
    run_to_end(tmp_path / "same", num_threads=1, meta_iters=1)
    assert main(["train", "--resume", str(tmp_path / "same"), "--num-threads", "1",
                 "--meta-iters", "2", "--no-progress"]) == 0
    assert "warning" not in capsys.readouterr().err


@pytest.mark.parametrize("size,expected", [
    # 2 × T·E·H × Σ in·out: 2 × 10·10·20 × (2·32 + 32·32 + 32·2·2): examples/own_env.py's
    (dict(meta_batch_size=10, fast_batch_size=10, max_episode_steps=20, hidden=[32, 32]), 1),
    (dict(meta_batch_size=40, fast_batch_size=20, hidden=[100, 100]), 3),  # the paper's
    (dict(meta_batch_size=40, fast_batch_size=20, hidden=[100, 100], num_threads=2), 2),
])
def test_num_threads_zero_takes_one_thread_for_a_small_problem(tmp_path, monkeypatch, size,
                                                               expected):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    steps = size["meta_batch_size"] * size["fast_batch_size"] * size.get("max_episode_steps",
                                                                         100)
    h = size["hidden"]
    flops = 2 * steps * (2 * h[0] + h[0] * h[1] + h[1] * 2)
    assert (flops < 1e7) == (expected == 1)
    trainer = Trainer(tiny_config(**size), tmp_path)
    assert trainer.threads() == expected
    if expected == 1:  # and a run trains on that many
        before = torch.get_num_threads()
        try:
            torch.set_num_threads(2)
            prepare_run_dir(tiny_config(**size, meta_iters=1), tmp_path / "run").run(
                progress=False)
            assert torch.get_num_threads() == 1
        finally:
            torch.set_num_threads(before)


def test_a_small_supervised_problem_takes_one_thread(tmp_path, monkeypatch):
    from supervised_runs import sinusoid

    from rkmeta_rl.supervised.trainer import SupervisedTrainer
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    trainer = SupervisedTrainer(sinusoid(), tmp_path)
    assert trainer.threads() == 1 and trainer.threads(2) == 2
    assert torch_threads(0, forward_flops=1e9) == 3


def test_num_threads_zero_means_every_core_this_process_may_use(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    assert torch_threads(0) == 3
    assert torch_threads(2) == 2
    with pytest.raises(ValueError, match="--num-threads must be >= 0"):
        torch_threads(-1)
    assert TrainConfig().num_threads == 0  # the default
