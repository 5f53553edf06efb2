"""Any Gymnasium env as a task family (rkmeta_rl/rl/gym_tasks.py, envs/gym_batch.py).

The generic batched loop against stepping the env by hand; nav2d through its Gymnasium id
(trains, resumes exactly); the example env by import path (trains, evaluates, plots); the
refusals, one line each; the example script. Every run is tiny.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env
from helpers import interrupt_on_call

from envs.gym_batch import BatchedGymEnv
from rkmeta_rl.analysis.plots import adaptation as plot_adaptation
from rkmeta_rl.analysis.plots import training as plot_training
from rkmeta_rl.cli import main
from rkmeta_rl.rl.cli import run_name
from rkmeta_rl.rl.config import TrainConfig, resolve
from rkmeta_rl.rl.tasks import GYM_INNER_LR, GymFamily, family_entry, make_family
from rkmeta_rl.rl.trainer import prepare_run_dir
from rkmeta_rl.run import rundir

ROOT = Path(__file__).resolve().parents[1]
POINT = "examples.point_env:PointEnv"
TINY = ["--meta-batch-size", "2", "--fast-batch-size", "2", "--hidden", "8,8", "--no-progress"]


@pytest.fixture(autouse=True)
def repo_root_importable(monkeypatch):
    """``examples.point_env`` resolves from the repository root, as under ``python -m``."""
    monkeypatch.syspath_prepend(str(ROOT))


def point_env():
    from examples.point_env import PointEnv
    return PointEnv()


def without_timing(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith("seconds")} for r in records]



# -- the example env and the generic loop -------------------------------------------------


def test_point_env_passes_gymnasium_check_env():
    check_env(point_env(), skip_render_check=True)


def by_hand(tasks, seeds, actions_of, horizon):
    """Each (task, episode) stepped alone until it ends: per episode a list of
    (obs before the step, reward, terminated, truncated)."""
    out = []
    for i, seed in enumerate(seeds):
        env, rows = point_env(), []
        obs, _ = env.reset(seed=seed, options={"task": tasks[i // 2]})
        for t in range(horizon):
            nxt, reward, terminated, truncated, _ = env.step(actions_of(i, t, obs))
            ended = terminated or truncated or t + 1 == horizon
            rows.append((obs, reward, terminated, ended and not terminated))
            obs = nxt
            if ended:
                break
        out.append((rows, obs))
    return out


def test_generic_loop_matches_stepping_the_env_by_hand():
    tasks = [{"goal": np.array([0.15, -0.1])}, {"goal": np.array([-0.7, 0.4])},
             {"goal": np.array([0.05, 0.12])}]  # E = 2 episodes each
    seeds, horizon = [11, 12, 13, 14, 15, 16], 6
    noise = np.random.default_rng(0).uniform(-0.3, 0.3, (6, horizon, 2)).astype(np.float32)

    def actions_of(i, t, obs):  # even copies head for the goal (and arrive), odd ones wander
        goal = tasks[i // 2]["goal"]
        return (goal - obs).astype(np.float32) if i % 2 == 0 else noise[i, t]

    expected = by_hand(tasks, seeds, actions_of, horizon)
    batch = BatchedGymEnv([point_env() for _ in seeds], tasks, 2, seeds, horizon)
    obs = batch.reset()  # (3, 2, 2)
    for t in range(horizon):
        alive = batch.alive.clone().reshape(-1)
        flat = obs.reshape(6, 2).numpy()
        action = torch.tensor(np.stack([actions_of(i, t, flat[i]) for i in range(6)]))
        obs, reward, terminated, truncated = batch.step(action.reshape(3, 2, 2))
        for i, (rows, last) in enumerate(expected):
            assert bool(alive[i]) == (t < len(rows))
            if t < len(rows):
                ob, r, term, trunc = rows[t]
                np.testing.assert_array_equal(flat[i], ob)
                assert reward.reshape(-1)[i] == np.float32(r)
                assert (terminated.reshape(-1)[i], truncated.reshape(-1)[i]) == (term, trunc)
            else:  # frozen: reward 0, no flags, the last observation
                assert reward.reshape(-1)[i] == 0 and not terminated.reshape(-1)[i]
                np.testing.assert_array_equal(obs.reshape(6, 2)[i].numpy(), last)
    lengths = [len(rows) for rows, _ in expected]
    assert min(lengths) < horizon == max(lengths)  # some ended early, some ran to the end
    assert not batch.alive.any()


def test_family_batches_are_functions_of_their_seeds():
    family = make_family(POINT, max_episode_steps=5)
    assert isinstance(family, GymFamily)
    family.seed(3)
    tasks = family.sample_tasks(2)
    first = family.batched_env(tasks, 3, range(6)).reset()
    second = family.batched_env(tasks, 3, range(6, 12)).reset()  # new seeds, same pool
    again = family.batched_env(tasks, 3, range(6)).reset()
    assert torch.equal(first, again) and not torch.equal(first, second)
    assert len(family.pool) == 6


# -- training through the generic loop ----------------------------------------------------


def test_nav2d_by_its_gymnasium_id_trains_and_resumes_exactly(tmp_path, monkeypatch, capsys):
    cfg = dict(env="rkmeta_rl/Nav2D-v0", max_episode_steps=10, meta_batch_size=2,
               fast_batch_size=2, hidden=[8, 8], meta_iters=3)
    a, b = tmp_path / "a", tmp_path / "b"
    trainer = prepare_run_dir(resolve(TrainConfig(**cfg)), a)
    assert isinstance(trainer.family, GymFamily) and trainer.cfg.alpha == GYM_INNER_LR
    trainer.run(progress=False)
    with monkeypatch.context() as m:
        interrupt_on_call(m, 2)
        with pytest.raises(KeyboardInterrupt):
            prepare_run_dir(resolve(TrainConfig(**cfg)), b).run(progress=False)
    assert main(["train", "--resume", str(b), "--no-progress"]) == 0
    assert "iteration 1/3" in capsys.readouterr().err
    records = rundir.read_metrics(a)
    assert [r["iter"] for r in records] == [0, 1, 2]
    assert without_timing(rundir.read_metrics(b)) == without_timing(records)


def test_custom_env_by_import_path_trains_evaluates_and_plots(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--env", POINT, "--max-episode-steps", "8", "--meta-iters", "2",
                 "--out", str(run), *TINY]) == 0
    config = json.loads((run / "config.json").read_text())
    assert (config["env"], config["alpha"], config["max_episode_steps"]) == (POINT, 0.1, 8)
    assert main(["evaluate", str(run), "--tasks", "3", "--episodes", "2", "--steps", "2",
                 "--no-progress"]) == 0
    result = json.loads((run / "eval.json").read_text())
    assert len(result["by_step"]) == 3 and len(result["tasks_drawn"]) == 3
    assert plot_adaptation.main([str(run), "--out", str(tmp_path / "a.png")]) == 0
    assert plot_training.main([str(run), "--out", str(tmp_path / "t.png")]) == 0
    assert (tmp_path / "a.png").stat().st_size > 0 and (tmp_path / "t.png").stat().st_size > 0


def test_a_registered_id_brings_its_horizon():
    cfg = resolve(TrainConfig(env="examples.point_env:rkmeta_examples/Point-v0"))
    assert (cfg.max_episode_steps, cfg.alpha) == (20, GYM_INNER_LR)
    assert family_entry("nav2d").inner_lr == 0.16  # built-in names unchanged


def test_default_run_directory_names_are_plain():
    assert run_name("nav2d") == "nav2d"
    assert run_name("rkmeta_rl/Nav2D-v0") == "rkmeta_rl-Nav2D-v0"
    assert run_name(POINT) == "examples.point_env-PointEnv"


# -- refusals -----------------------------------------------------------------------------


class NoTasksEnv(gym.Env):
    observation_space = spaces.Box(-1, 1, (2,), np.float32)
    action_space = spaces.Box(-1, 1, (2,), np.float32)


class DiscreteEnv(NoTasksEnv):
    action_space = spaces.Discrete(3)

    def sample_tasks(self, n):
        return [{}] * n


class ImageEnv(DiscreteEnv):
    action_space = spaces.Box(-1, 1, (2,), np.float32)
    observation_space = spaces.Box(0, 1, (4, 4), np.float32)


class UnboundedEnv(DiscreteEnv):
    action_space = spaces.Box(-np.inf, np.inf, (2,), np.float32)


class NoOptionsEnv(DiscreteEnv):
    action_space = spaces.Box(-1, 1, (2,), np.float32)

    def reset(self, seed=None):
        return np.zeros(2, np.float32), {}


class TaskOnlyEnv(NoOptionsEnv):
    def reset(self, seed=None, options=None):
        if not options:
            raise RuntimeError("no task given")
        return np.zeros(2, np.float32), {}


REFUSALS = {
    "no-sample-tasks": ([f"{__name__}:NoTasksEnv"], ("NoTasksEnv", "no sample_tasks(n)")),
    "discrete": ([f"{__name__}:DiscreteEnv"], ("Discrete(3)", "not a 1-D", "Box")),
    "image-obs": ([f"{__name__}:ImageEnv"], ("observation space", "not a flat")),
    "unbounded": ([f"{__name__}:UnboundedEnv"], ("unbounded",)),
    "no-options": ([f"{__name__}:NoOptionsEnv"], ("reset(seed=0, options=", "failed")),
    "task-only-reset": ([f"{__name__}:TaskOnlyEnv"], ("reset(seed=0) without a task failed",
                                                      "no task given")),
    "unimportable": (["no_such_pkg.envs:MyEnv"], ("cannot import module 'no_such_pkg.envs'",
                                                   "module:Class")),
    "no-class": ([f"{__name__}:Missing"], ("has no 'Missing'",)),
    "unknown-id": (["rkmeta_rl/NoSuch-v0"], ("unknown env 'rkmeta_rl/NoSuch-v0'",
                                             "valid choices: nav2d", "module:Class")),
    "no-horizon": ([POINT], ("no registered horizon", "--max-episode-steps")),
}


@pytest.mark.parametrize("env, expected", REFUSALS.values(), ids=REFUSALS.keys())
def test_an_env_without_the_protocol_is_refused_in_one_line(env, expected, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--env", *env, "--out", str(out), *TINY]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rkmeta-rl: error: "), lines
    assert all(text in lines[0] for text in expected), lines[0]
    assert not out.exists()


def test_train_oracle_names_the_families_that_have_one(capsys):
    assert main(["train-oracle", "--env", POINT, *TINY]) == 2
    assert "no oracle variant" in capsys.readouterr().err


# -- the example script -------------------------------------------------------------------


@pytest.mark.slow
def test_example_script_trains_and_evaluates(tmp_path):
    out = tmp_path / "example"
    proc = subprocess.run(
        [sys.executable, "examples/own_env.py", "--out", str(out), "--iters", "1",
         "--tasks", "2", "--episodes", "2", "--steps", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "held-out goals after 0..1 steps" in proc.stdout
    assert len(json.loads((out / "eval.json").read_text())["by_step"]) == 2
