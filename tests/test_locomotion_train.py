"""Locomotion families in the trainer, evaluator and renderer: the same run directory,
resume, reproducibility and evaluation as nav2d, and a clean end on Ctrl-C.

Every run is tiny: 2 tasks × 2 episodes of 10 steps, an 8-unit policy, 2 iterations."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import os_thread_ids, threads_left_since

from envs.mujoco_batch import BatchedLocomotion
from rkmeta_rl.cli import main
from rkmeta_rl.rl.config import TrainConfig, read_train_config, resolve
from rkmeta_rl.rl.episodes import Episodes
from rkmeta_rl.rl.evaluate import EvalConfig, evaluate_run, label_of
from rkmeta_rl.rl.tasks import FAMILIES, LOCOMOTION, make_family
from rkmeta_rl.rl.trainer import load_run, prepare_run_dir
from rkmeta_rl.run import rundir

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


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")
def test_cuda_without_cuda_is_refused_for_every_family(tmp_path, capsys):
    for env in ("ant-dir", "nav2d"):
        assert main(["train", "--env", env, "--device", "cuda:0", "--out",
                     str(tmp_path / "x")]) == 2
        assert "CUDA is not available" in capsys.readouterr().err


def test_sampling_runs_on_the_cpu_and_each_stage_moves_to_the_device_once(
        tmp_path, monkeypatch):
    """The device hand-off (Trainer.sample_on_cpu): the sampler gets CPU parameters, and
    each stage's episodes move to cfg.device in one Episodes.to call."""
    trainer = prepare_run_dir(tiny(meta_iters=1), tmp_path)
    sampled, moved = [], []
    original_sampler, original_to = trainer.sample_episodes, Episodes.to

    def sampler(policy, params, tasks, episodes_per_task, key):
        sampled.append(({v.device.type for v in params.values()}, key))
        return original_sampler(policy, params, tasks, episodes_per_task, key)

    def to(self, device):
        moved.append(str(device))
        return original_to(self, device)

    trainer.sample_episodes = sampler
    monkeypatch.setattr(Episodes, "to", to)
    trainer.run(progress=False)
    assert [devices for devices, _ in sampled] == [{"cpu"}, {"cpu"}]  # ralston: 2 stages
    assert [(k.seed, k.iteration, k.stage) for _, k in sampled] == [(0, 0, 0), (0, 0, 1)]
    assert moved == [trainer.cfg.device] * 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_halfcheetah_trains_and_resumes_exactly_on_cuda(tmp_path):
    """MuJoCo sampled on the CPU, the meta-step on the GPU; resume is exact there too."""
    a, b = tmp_path / "a", tmp_path / "b"
    records = prepare_run_dir(tiny(device="cuda", dynamics="maml"), a).run(progress=False)
    assert all(r["accepted"] for r in records)
    assert load_run(a)[1].params()["w0"].device.type == "cpu"  # checkpoints load anywhere
    prepare_run_dir(tiny(device="cuda", dynamics="maml", meta_iters=1), b).run(progress=False)
    cfg = json.loads((b / "config.json").read_text())
    cfg["meta_iters"] = 2
    (b / "config.json").write_text(json.dumps(cfg))
    assert main(["train", "--resume", str(b), "--no-progress"]) == 0
    assert without_timing(rundir.read_metrics(b)) == without_timing(records)


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
    assert "rkmeta-rl plot trajectories" in capsys.readouterr().err


# ---------------------------------------------------------------------- --dynamics, oracles
def test_maml_dynamics_are_recorded_and_resume_exactly(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    records = prepare_run_dir(tiny(dynamics="maml"), a).run(progress=False)
    stored = json.loads((a / "config.json").read_text())
    assert stored["dynamics"] == "maml" and stored["fast_batch_size"] == 2
    prepare_run_dir(tiny(dynamics="maml", meta_iters=1), b).run(progress=False)
    stored = json.loads((b / "config.json").read_text())
    stored["meta_iters"] = 2
    (b / "config.json").write_text(json.dumps(stored))
    assert main(["train", "--resume", str(b), "--no-progress"]) == 0
    assert without_timing(rundir.read_metrics(b)) == without_timing(records)
    gym = prepare_run_dir(tiny(), tmp_path / "g").run(progress=False)
    assert without_timing(gym) != without_timing(records)  # another simulation


def test_a_config_written_before_the_dynamics_reads_as_gymnasium(tmp_path):
    run = tmp_path / "old"
    prepare_run_dir(tiny(meta_iters=1), run).run(progress=False)
    stored = json.loads((run / "config.json").read_text())
    del stored["dynamics"]
    stored["meta_iters"] = 2
    (run / "config.json").write_text(json.dumps(stored))
    assert read_train_config(run).dynamics == "gymnasium"
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert [r["iter"] for r in rundir.read_metrics(run)] == [0, 1]


@pytest.mark.parametrize(("env", "dynamics", "episodes"), [
    ("ant-dir", "maml", 40), ("ant-dir-oracle", "maml", 40), ("ant-dir", "gymnasium", 20),
    ("halfcheetah-vel", "maml", 20), ("nav2d", "gymnasium", 20)])
def test_episodes_per_task_come_from_the_registry(env, dynamics, episodes):
    cfg = resolve(TrainConfig(env=env, dynamics=dynamics))
    assert cfg.fast_batch_size == episodes == FAMILIES[env].episodes[dynamics]
    assert resolve(TrainConfig(env=env, dynamics=dynamics, fast_batch_size=7)).fast_batch_size \
        == 7


@pytest.mark.parametrize(("argv", "message"), [
    (["--env", "halfcheetah-vel", "--dynamics", "rllab"],
     "unknown dynamics 'rllab'; valid choices: gymnasium, maml"),
    (["--env", "nav2d", "--dynamics", "maml"], "env 'nav2d' has only gymnasium"),
])
def test_bad_dynamics_are_refused_in_one_line(tmp_path, capsys, argv, message):
    assert main(["train", *argv, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_the_oracle_of_a_maml_family_trains_and_evaluates_as_the_ceiling(tmp_path):
    run, oracle = tmp_path / "run", tmp_path / "oracle"
    flags = ["--env", "halfcheetah-dir", "--dynamics", "maml", "--meta-iters", "1",
             "--meta-batch-size", "2", "--fast-batch-size", "2", "--hidden", "8",
             "--max-episode-steps", "10", "--no-progress"]
    assert main(["train", *flags, "--out", str(run)]) == 0
    assert main(["train-oracle", *flags, "--out", str(oracle)]) == 0
    cfg = read_train_config(oracle)
    assert (cfg.env, cfg.method, cfg.dynamics) == ("halfcheetah-dir-oracle", "euler", "maml")
    ecfg = EvalConfig(tasks=3, episodes=2, steps=1)
    plain = evaluate_run(run, ecfg, out=tmp_path / "p.json", progress=False)
    ceiling = evaluate_run(oracle, ecfg, out=tmp_path / "o.json", progress=False)
    assert plain["tasks_drawn"] == ceiling["tasks_drawn"]  # the same held-out tasks
    assert (label_of(plain), label_of(ceiling)) == ("ralston", "oracle")
    for result in (plain, ceiling):
        assert result["dynamics"] == "maml" and result["max_episode_steps"] == 10
        assert result["seconds_per_step"] == pytest.approx(0.01)
        assert result["episode_seconds"] == pytest.approx(0.1)
    family = make_family("halfcheetah-dir-oracle", max_episode_steps=10, dynamics="maml")
    assert family.obs_dim == make_family("halfcheetah-dir").obs_dim + 1
