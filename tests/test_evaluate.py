"""Meta-test evaluation, the random-init baseline and the oracle (rkmeta-rl evaluate,
train-oracle). Every run is tiny: 2 tasks × 2 episodes, an 8×8 policy, 1-2 iterations."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from rkmeta_rl.cli import main
from rkmeta_rl.rl.config import TrainConfig, resolve
from rkmeta_rl.rl.evaluate import (
    DEFAULT_EVAL_SEED,
    EvalConfig,
    combine_seeds,
    evaluate_run,
    evaluation_policy,
    held_out_tasks,
    label_of,
    read_eval,
    step_sizes,
)
from rkmeta_rl.rl.tasks import make_family, oracle_env
from rkmeta_rl.rl.trainer import Trainer, make_policy, prepare_run_dir
from rkmeta_rl.stats import summarize

TINY = ["--meta-batch-size", "2", "--fast-batch-size", "2", "--hidden", "8,8",
        "--no-progress"]
SMALL_EVAL = EvalConfig(tasks=3, episodes=2, steps=2)


def tiny_run(path: Path, iters: int = 1, **overrides) -> Path:
    cfg = resolve(TrainConfig(meta_batch_size=2, fast_batch_size=2, hidden=[8, 8],
                              meta_iters=iters, **overrides))
    prepare_run_dir(cfg, path).run(progress=False)
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return tiny_run(tmp_path_factory.mktemp("eval") / "run", iters=2)


# -- pieces ------------------------------------------------------------------------------


def test_step_sizes_per_protocol() -> None:
    assert step_sizes(0.2, 3, "constant") == [0.2, 0.2, 0.2]
    assert step_sizes(0.2, 3, "maml") == [0.2, 0.1, 0.1]
    assert step_sizes(0.2, 0, "maml") == []


def test_summarize_matches_t_interval_by_hand() -> None:
    x = np.array([-3.0, -1.0, -2.0, -6.0, -4.0, -2.5, -1.5, -3.5, -2.0, -4.5])
    s = summarize(torch.tensor(x))
    mean = x.sum() / 10
    std = math.sqrt(((x - mean) ** 2).sum() / 9)
    half = 2.262157 * std / math.sqrt(10)  # t_{0.975, 9} from a table
    assert s["mean"] == pytest.approx(mean)
    assert s["std"] == pytest.approx(std)
    assert s["ci95"] == pytest.approx([mean - half, mean + half], rel=1e-6)
    assert s["per_task"] == pytest.approx(x.tolist())


def test_held_out_goals_are_shared_by_the_oracle_and_differ_from_training() -> None:
    plain = held_out_tasks(make_family("nav2d"), 5, DEFAULT_EVAL_SEED)
    oracle = held_out_tasks(make_family(oracle_env("nav2d")), 5, DEFAULT_EVAL_SEED)
    for a, b in zip(plain, oracle, strict=True):
        np.testing.assert_array_equal(a["goal"], b["goal"])
    training = make_family("nav2d")
    training.seed(0)
    assert not np.allclose(plain[0]["goal"], training.sample_tasks(1)[0]["goal"])


def test_oracle_observation_adds_the_goal_and_nothing_else_changes() -> None:
    goals = torch.tensor([[0.3, -0.2], [-0.4, 0.1]])
    tasks, seeds = [{"goal": g.numpy()} for g in goals], range(6)
    plain = make_family("nav2d").batched_env(tasks, 3, seeds)
    seen = make_family(oracle_env("nav2d")).batched_env(tasks, 3, seeds)
    obs_p, obs_o = plain.reset(), seen.reset()
    gen = torch.Generator().manual_seed(0)
    for _ in range(12):
        torch.testing.assert_close(obs_o[..., :2], obs_p)
        torch.testing.assert_close(obs_o[..., 2:], goals[:, None].expand(2, 3, 2))
        action = 0.3 * torch.randn(2, 3, 2, generator=gen)
        obs_p, r_p, term_p, trunc_p = plain.step(action)
        obs_o, r_o, term_o, trunc_o = seen.step(action)
        assert torch.equal(r_p, r_o) and torch.equal(term_p, term_o)
        assert torch.equal(trunc_p, trunc_o)


def test_oracle_config_differs_from_euler_only_in_env(tmp_path: Path) -> None:
    assert main(["train-oracle", "--env", "nav2d", "--meta-iters", "1", *TINY,
                 "--out", str(tmp_path / "o")]) == 0
    assert main(["train", "--env", "nav2d", "--method", "euler", "--meta-iters", "1", *TINY,
                 "--out", str(tmp_path / "e")]) == 0
    o = json.loads((tmp_path / "o" / "config.json").read_text())
    e = json.loads((tmp_path / "e" / "config.json").read_text())
    assert o["env"] == "nav2d-goal" and e["env"] == "nav2d"
    assert {k for k in o if o[k] != e[k]} == {"env"}


def test_train_oracle_refuses_an_env_without_a_variant(tmp_path: Path, capsys) -> None:
    assert main(["train-oracle", "--env", "nav2d-goal", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "nav2d-goal" in err and "valid choices: nav2d" in err


# -- evaluate ----------------------------------------------------------------------------


def test_evaluation_is_deterministic_for_a_seed(run: Path, tmp_path: Path) -> None:
    a = evaluate_run(run, SMALL_EVAL, out=tmp_path / "a.json", progress=False)
    b = evaluate_run(run, SMALL_EVAL, out=tmp_path / "b.json", progress=False)
    assert (tmp_path / "a.json").read_text() == (tmp_path / "b.json").read_text()
    assert [s["mean"] for s in a["by_step"]] == [s["mean"] for s in b["by_step"]]
    other = evaluate_run(run, EvalConfig(tasks=3, episodes=2, steps=2, seed=7),
                         out=tmp_path / "c.json", progress=False)
    assert other["by_step"][0]["per_task"] != a["by_step"][0]["per_task"]


def test_eval_json_holds_every_step_with_its_statistics(run: Path) -> None:
    result = evaluate_run(run, SMALL_EVAL, progress=False)
    on_disk = read_eval(run / "eval.json")
    assert on_disk["by_step"] == json.loads(json.dumps(result["by_step"]))
    assert [s["step"] for s in on_disk["by_step"]] == [0, 1, 2]
    for s in on_disk["by_step"]:
        assert len(s["per_task"]) == 3
        assert s["mean"] == pytest.approx(np.mean(s["per_task"]))
        assert s["ci95"][0] <= s["mean"] <= s["ci95"][1]
    assert on_disk["alpha"] == pytest.approx(0.16) and on_disk["meta_iterations"] == 2
    assert len(on_disk["tasks_drawn"]) == 3


def test_maml_protocol_shares_the_first_step_and_halves_the_rest(run: Path,
                                                                  tmp_path: Path) -> None:
    const = evaluate_run(run, SMALL_EVAL, out=tmp_path / "c.json", progress=False)
    maml = evaluate_run(run, EvalConfig(tasks=3, episodes=2, steps=2, protocol="maml"),
                        progress=False)
    assert (run / "eval-maml.json").exists()
    assert maml["step_sizes"] == pytest.approx([0.16, 0.08])
    for k in (0, 1):  # same α for the first step, same random streams
        assert maml["by_step"][k]["per_task"] == const["by_step"][k]["per_task"]
    assert maml["by_step"][2]["per_task"] != const["by_step"][2]["per_task"]


def test_random_init_is_the_runs_starting_policy(run: Path) -> None:
    cfg, random_policy, iters = evaluation_policy(run, "random")
    _, trained, trained_iters = evaluation_policy(run, "trained")
    start = make_policy(cfg, make_family(cfg.env))  # what Trainer began from
    fresh = Trainer(cfg, run).policy
    assert iters == 0 and trained_iters == 2
    for name, value in random_policy.state_dict().items():
        assert torch.equal(value, start.state_dict()[name])
        assert torch.equal(value, fresh.state_dict()[name])
        if name != "log_std":
            assert not torch.equal(value, trained.state_dict()[name])


def test_labels_and_seed_combination(run: Path, tmp_path: Path) -> None:
    e0 = evaluate_run(run, SMALL_EVAL, out=tmp_path / "0.json", progress=False)
    run1 = tiny_run(tmp_path / "seed1", seed=1)
    e1 = evaluate_run(run1, SMALL_EVAL, progress=False)
    rnd = evaluate_run(run, EvalConfig(tasks=3, episodes=2, steps=2, init="random"),
                       progress=False)
    assert label_of(e0) == "ralston" and label_of(rnd) == "random init"
    rows = combine_seeds([e0, e1])
    for k, row in enumerate(rows):
        means = [e0["by_step"][k]["mean"], e1["by_step"][k]["mean"]]
        assert row["mean"] == pytest.approx(sum(means) / 2) and row["runs"] == 2
        half = 12.706204736 * abs(means[0] - means[1]) / math.sqrt(2) / math.sqrt(2)  # t(1)
        assert row["ci95"] == pytest.approx([row["mean"] - half, row["mean"] + half])
    assert combine_seeds([e0])[1]["ci95"] == e0["by_step"][1]["ci95"]


def test_evaluate_cli_writes_eval_json_and_reports(run: Path, capsys) -> None:
    out = run.parent / "cli.json"
    assert main(["evaluate", str(run), "--tasks", "2", "--episodes", "2", "--steps", "1",
                 "--out", str(out), "--no-progress"]) == 0
    assert "after 0..1 steps" in capsys.readouterr().out
    assert len(read_eval(out)["by_step"]) == 2


@pytest.mark.parametrize("flags, shown", [
    (["--protocol", "halving"], "unknown protocol 'halving'; valid choices: constant, maml"),
    (["--init", "zeros"], "unknown init 'zeros'; valid choices: trained, random"),
    (["--steps", "-1"], "--steps must be >= 0"),
    (["--tasks", "0"], "--tasks must be > 0"),
    (["--alpha", "-0.1"], "--alpha must be a positive number"),
])
def test_evaluate_cli_rejects_bad_values(run: Path, capsys, flags: list[str],
                                         shown: str) -> None:
    assert main(["evaluate", str(run), *flags]) == 2
    assert shown in capsys.readouterr().err


def test_evaluate_cli_names_a_missing_run_or_checkpoint(tmp_path: Path, capsys) -> None:
    assert main(["evaluate", str(tmp_path / "nowhere")]) == 2
    assert "nowhere: no such run directory" in capsys.readouterr().err
    cfg = resolve(TrainConfig(meta_batch_size=2, fast_batch_size=2, hidden=[8]))
    prepare_run_dir(cfg, tmp_path / "fresh")  # config written, no iteration yet
    assert main(["evaluate", str(tmp_path / "fresh")]) == 2
    assert "no checkpoint yet" in capsys.readouterr().err
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(ValueError, match="not an evaluation file"):
        read_eval(tmp_path / "x.json")
