"""Locomotion families in the trainer, evaluator and renderer: the same run directory,
resume, reproducibility and evaluation as nav2d, and a clean end on Ctrl-C.

Every run is tiny: 2 tasks × 2 episodes of 10 steps, an 8-unit policy, 2 iterations."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import os_thread_ids, threads_left_since

from envs.mujoco_batch import BatchedLocomotion
from rkmeta_rl import rundir
from rkmeta_rl.cli import main
from rkmeta_rl.rl.config import TrainConfig, resolve
from rkmeta_rl.rl.evaluate import EvalConfig, evaluate_run
from rkmeta_rl.rl.tasks import FAMILIES, LOCOMOTION, make_family
from rkmeta_rl.rl.trainer import load_run, prepare_run_dir

TINY = dict(meta_batch_size=2, fast_batch_size=2, hidden=[8], max_episode_steps=10,
            meta_iters=2)


def tiny(env: str = "halfcheetah-vel", **overrides) -> TrainConfig:
    return resolve(TrainConfig(env=env, **{**TINY, **overrides}))


def without_timing(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith("seconds")} for r in records]


@pytest.mark.parametrize("env", LOCOMOTION)
def test_every_family_trains_with_its_defaults(env, tmp_path):
    cfg = tiny(env, meta_iters=1)
    assert cfg.alpha == FAMILIES[env].inner_lr == 0.1
    assert resolve(TrainConfig(env=env)).max_episode_steps == 200
    records = prepare_run_dir(cfg, tmp_path).run(progress=False)
    assert records[0]["accepted"] and torch.isfinite(torch.tensor(records[0]["return_post"]))
    family = make_family(env, max_episode_steps=10)
    assert load_run(tmp_path)[1].params()["w0"].shape[0] == family.obs_dim


def test_same_seed_same_metrics_and_resume_is_exact(tmp_path, monkeypatch):
    a, b, c = (tmp_path / x for x in "abc")
    records_a = prepare_run_dir(tiny(), a).run(progress=False)
    assert without_timing(prepare_run_dir(tiny(), b).run(progress=False)) == \
        without_timing(records_a)
    first = prepare_run_dir(tiny(meta_iters=1), c)
    first.run(progress=False)
    cfg = json.loads((c / "config.json").read_text())
    cfg["meta_iters"] = 2  # continue the same run to 2 iterations
    (c / "config.json").write_text(json.dumps(cfg))
    assert main(["train", "--resume", str(c), "--no-progress"]) == 0
    assert without_timing(rundir.read_metrics(c)) == without_timing(records_a)


def test_ctrl_c_while_sampling_stops_the_physics_threads_and_keeps_the_checkpoint(
        tmp_path, monkeypatch):
    trainer = prepare_run_dir(tiny(meta_iters=3), tmp_path)
    baseline = os_thread_ids()
    original, calls = BatchedLocomotion.step, []

    def step(self, action):
        calls.append(1)
        if len(calls) == 25:  # inside iteration 1's sampling (10 steps per rollout)
            assert os_thread_ids() - baseline  # the physics pool is running
            raise KeyboardInterrupt
        return original(self, action)

    monkeypatch.setattr(BatchedLocomotion, "step", step)
    with pytest.raises(KeyboardInterrupt):
        trainer.run(progress=False)
    assert not threads_left_since(baseline)  # every pool was shut down
    assert rundir.load_checkpoint(tmp_path)["iteration"] == 1
    assert [r["iter"] for r in rundir.read_metrics(tmp_path)] == [0]


def test_evaluate_locomotion_run_is_deterministic(tmp_path):
    prepare_run_dir(tiny(meta_iters=1), tmp_path / "run").run(progress=False)
    ecfg = EvalConfig(tasks=2, episodes=2, steps=1)
    one = evaluate_run(tmp_path / "run", ecfg, out=tmp_path / "1.json", progress=False)
    two = evaluate_run(tmp_path / "run", ecfg, out=tmp_path / "2.json", progress=False)
    assert (tmp_path / "1.json").read_text() == (tmp_path / "2.json").read_text()
    assert all("velocity" in t for t in one["tasks_drawn"]) and len(two["by_step"]) == 2


def test_cuda_is_refused_for_mujoco_families(tmp_path, capsys):
    assert main(["train", "--env", "ant-dir", "--device", "cuda:0", "--out",
                 str(tmp_path / "x")]) == 2
    assert "MuJoCo families" in capsys.readouterr().err


def test_render_writes_a_gif_of_the_adapted_policy(tmp_path, capsys):
    run = tmp_path / "run"
    prepare_run_dir(tiny(meta_iters=1), run).run(progress=False)
    from rkmeta_rl.rl.render import RenderError, render_run

    try:
        info = render_run(run, tmp_path / "a.gif", '{"velocity": 1.5}', steps=1, episodes=2,
                          width=64, height=48)
    except RenderError as e:  # no offscreen GL on this machine
        pytest.skip(str(e))
    import imageio.v2 as imageio

    frames = imageio.mimread(tmp_path / "a.gif")
    assert len(frames) == info["frames"] == 11  # reset + 10 steps
    assert frames[0].shape[:2] == (48, 64) and frames[0].std() > 0
    assert info["task"] == {"velocity": 1.5} and len(info["sampled_returns"]) == 2
    assert main(["render", str(run), "--task", '{"velocity": "fast"}', "--out",
                 str(tmp_path / "b.gif")]) == 2
    assert "must be a finite number" in capsys.readouterr().err
    assert not (tmp_path / "b.gif").exists()


def test_render_refuses_nav2d(tmp_path, capsys):
    run = tmp_path / "nav"
    prepare_run_dir(resolve(TrainConfig(**{**TINY, "meta_iters": 1})), run).run(progress=False)
    assert main(["render", str(run)]) == 2
    assert "plot_trajectories" in capsys.readouterr().err
