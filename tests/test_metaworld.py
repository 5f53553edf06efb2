"""Meta-World's benchmarks as task families (envs/metaworld.py, rkmeta_rl/rl/tasks.py):
the adapter against metaworld's own API, the names, the success measure, a tiny ML1 run
and its evaluation on the test tasks.

Needs metaworld (``pip install "rkmeta-rl[metaworld]"``, or ``pip install --no-deps
metaworld==3.1.1`` beside MuJoCo 4); the tests that do not skip without it."""

from __future__ import annotations

import json
import sys

import gymnasium as gym
import mujoco
import numpy as np
import pytest
import torch
from gymnasium import spaces

from envs.gym_batch import BatchedGymEnv
from rkmeta_rl.cli import main
from rkmeta_rl.rl.episodes import rollout
from rkmeta_rl.rl.policy import GaussianMLPPolicy
from rkmeta_rl.rl.tasks import family_entry

try:
    import metaworld as _metaworld  # noqa: F401
    HAVE_METAWORLD = True
except ImportError:
    HAVE_METAWORLD = False
needs_metaworld = pytest.mark.skipif(not HAVE_METAWORLD, reason="metaworld is not installed")

REACH = "metaworld-ml1:reach-v3"
TINY = ["--meta-batch-size", "2", "--fast-batch-size", "2", "--hidden", "8",
        "--max-episode-steps", "12", "--meta-iters", "2", "--no-progress", "--num-threads", "1"]


# ---------------------------------------------------------------- success, without metaworld
class FlagEnv(gym.Env):
    """A task env reporting ``info["success"]`` at the steps its task lists, ending its
    episode at step ``task["end"]`` (terminated)."""

    observation_space = spaces.Box(-1.0, 1.0, (2,))
    action_space = spaces.Box(-1.0, 1.0, (1,))

    def sample_tasks(self, n):
        return [{"at": [], "end": 99} for _ in range(n)]

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.task, self.t = (options or {})["task"], 0
        return np.zeros(2, dtype=np.float32), {}

    def step(self, action):
        self.t += 1
        info = {"success": float(self.t in self.task["at"])}
        return np.zeros(2, dtype=np.float32), 0.0, self.t >= self.task["end"], False, info


def test_an_episode_succeeds_if_any_of_its_steps_reports_success():
    tasks = [{"at": [3], "end": 99}, {"at": [], "end": 99}, {"at": [6], "end": 4},
             {"at": [1, 2], "end": 99}]
    envs = [FlagEnv() for _ in range(8)]
    batch = BatchedGymEnv(envs, tasks, 2, list(range(8)), max_episode_steps=5)
    policy = GaussianMLPPolicy(2, 1, [4])
    params = {n: v.detach().expand(4, *v.shape) for n, v in policy.params().items()}
    episodes = rollout(policy, params, batch, torch.tensor([-1.0]), torch.tensor([1.0]), None)
    # task 0 at step 3; task 1 never; task 2 ends at step 4, before its success at 6
    # (frozen rows report nothing); task 3 at steps 1 and 2 (counted once)
    assert episodes.success.tolist() == [[1, 1], [0, 0], [0, 0], [1, 1]]
    assert episodes.task_success().tolist() == [1.0, 0.0, 0.0, 1.0]
    assert episodes.success_rate() == 0.5
    assert episodes.first_episodes(1).success.shape == (4, 1)


def test_envs_without_a_success_flag_record_none(tmp_path):
    assert main(["train", "--env", "nav2d", *TINY, "--out", str(tmp_path / "r")]) == 0
    record = json.loads((tmp_path / "r" / "metrics.jsonl").read_text().splitlines()[0])
    assert "success_pre" not in record


def test_a_missing_metaworld_says_how_to_install_it(monkeypatch):
    from envs import metaworld
    from rkmeta_rl.rl import tasks

    monkeypatch.setitem(sys.modules, "metaworld", None)
    monkeypatch.setattr(tasks, "_metaworld_entry", tasks._metaworld_entry.__wrapped__)
    metaworld.ml1_names.cache_clear()
    with pytest.raises(ValueError, match=r"Meta-World is not installed.*rkmeta-rl\[metaworld\]"
                       r".*--no-deps metaworld==3\.1\.1") as err:
        family_entry(REACH)
    assert "\n" not in str(err.value)
    metaworld.ml1_names.cache_clear()


@pytest.mark.parametrize("name, valid", [
    ("metaworld-ml3", "valid forms: metaworld-ml1:ENV"),
    ("metaworld-ml1", "valid forms: metaworld-ml1:ENV"),
    ("metaworld-ml10:reach-v3", "valid forms: metaworld-ml1:ENV"),
])
def test_a_bad_benchmark_name_lists_the_valid_forms(name, valid):
    with pytest.raises(ValueError, match=valid) as err:
        family_entry(name)
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------- with metaworld
@needs_metaworld
def test_a_bad_ml1_environment_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown Meta-World ML1 environment 'reach-v9'; "
                                         r"valid choices: .*push-v3.*reach-v3"):
        family_entry("metaworld-ml1:reach-v9")


@needs_metaworld
def test_the_adapter_is_metaworlds_env_with_its_task():
    """An episode through the adapter against metaworld's own API: the same Task object
    set on a fresh env of its class, the same actions."""
    from envs.metaworld import BENCHMARK_SEED, MetaWorldTaskEnv, load_benchmark

    env = MetaWorldTaskEnv("ml1", "reach-v3")
    env.reset(seed=1)
    task = env.sample_test_tasks(1)[0]
    assert task["split"] == "test" and task["env_name"] == "reach-v3"
    bench = load_benchmark("ml1", "reach-v3")  # metaworld.ML1("reach-v3", seed=0), built once
    assert BENCHMARK_SEED == 0 and type(bench).__name__ == "ML1"
    raw = bench.test_classes["reach-v3"]()
    raw.set_task(bench.test_tasks[task["index"]])
    obs, _ = env.reset(seed=5, options={"task": task})
    raw_obs, _ = raw.reset()
    np.testing.assert_array_equal(obs, raw_obs)
    rng = np.random.default_rng(0)
    for _ in range(30):
        a = rng.uniform(-1, 1, 4).astype(np.float32)
        o, r, te, tr, info = env.step(a)
        ro, rr, rte, rtr, rinfo = raw.step(a)
        np.testing.assert_array_equal(o, ro)
        assert (r, te, tr, info["success"]) == (rr, rte, rtr, rinfo["success"])
    assert env.observation_space.shape == (39,) and env.action_space.shape == (4,)
    assert env.max_path_length == 500


@needs_metaworld
def test_tasks_are_drawn_from_the_split_with_the_envs_seed():
    from envs.metaworld import MetaWorldTaskEnv

    env = MetaWorldTaskEnv("ml1", "reach-v3")
    env.reset(seed=3)
    first = env.sample_tasks(20)
    env.reset(seed=3)
    assert env.sample_tasks(20) == first  # the seed fixes the draw
    assert len({t["index"] for t in first}) == 20  # no repeats while the 50 goals last
    assert {t["split"] for t in first} == {"train"}
    assert {t["split"] for t in env.sample_test_tasks(5)} == {"test"}
    with pytest.raises(ValueError, match="not a task of Meta-World ml1"):
        env.reset(options={"task": {"env_name": "reach-v3", "split": "test", "index": 50}})


@needs_metaworld
def test_the_task_protocol_check_passes():
    from envs.metaworld import MetaWorldTaskEnv
    from rkmeta_rl.rl.gym_tasks import check_protocol, check_spaces

    env = MetaWorldTaskEnv("ml1", "reach-v3")
    check_spaces(env, REACH)
    check_protocol(env, REACH)  # tasks change the episodes, seeds repeat


@needs_metaworld
@pytest.mark.skipif(int(mujoco.__version__.split(".")[0]) < 4, reason="MuJoCo 3 needs no fix")
def test_on_mujoco_4_the_welds_get_metaworlds_eleven_values():
    from envs.metaworld import MetaWorldTaskEnv

    env = MetaWorldTaskEnv("ml1", "reach-v3")
    model = env._inner.model
    welds = [i for i in range(model.neq) if model.eq_type[i] == mujoco.mjtEq.mjEQ_WELD]
    assert welds
    for i in welds:
        np.testing.assert_array_equal(model.eq_data[i, :11], [0, 0, 0, 0, 0, 0, -1, 0, 0, 0, 5])


@needs_metaworld
def test_a_tiny_ml1_run_records_success_and_evaluates_on_test_tasks(tmp_path):
    run = tmp_path / "reach"
    assert main(["train", "--env", REACH, *TINY, "--out", str(run)]) == 0
    config = json.loads((run / "config.json").read_text())
    assert (config["meta_batch_size"], config["max_episode_steps"]) == (2, 12)
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    for r in records:
        assert 0 <= r["success_pre"] <= 1 and 0 <= r["success_post"] <= 1
    assert main(["evaluate", str(run), "--tasks", "3", "--episodes", "2", "--steps", "1",
                 "--no-progress"]) == 0
    result = json.loads((run / "eval.json").read_text())
    assert {t["split"] for t in result["tasks_drawn"]} == {"test"}
    rows = result["success_by_step"]
    assert [r["step"] for r in rows] == [0, 1]
    for row in rows:
        assert len(row["per_task"]) == 3 and row["mean"] == np.mean(row["per_task"])
        assert "by_class" not in row  # one class in ML1


@needs_metaworld
def test_the_defaults_are_the_meta_world_papers():
    from rkmeta_rl.rl.config import train_config

    cfg = train_config({"env": REACH})
    assert (cfg.meta_batch_size, cfg.fast_batch_size, cfg.max_episode_steps, cfg.hidden,
            cfg.max_kl, cfg.alpha) == (20, 10, 500, [128, 128], 0.01, 0.1)
    with pytest.raises(ValueError, match=r"--max-episode-steps for metaworld-ml1:reach-v3 must "
                                         r"be in 1\.\.500 .*got 501"):
        train_config({"env": REACH, "max_episode_steps": 501})


def test_copies_are_matched_to_the_rows_classes():
    from types import SimpleNamespace

    from envs.metaworld import match_classes

    def copy(name):
        env = SimpleNamespace(task={"env_name": name})
        env.unwrapped = env
        return env

    pool = [copy(c) for c in ("a", "b", "b", "c", "a")]
    rows = ["b", "a", "d", "b"]
    out = match_classes(pool, rows)
    assert sorted(map(id, out)) == sorted(map(id, pool))  # a reordering
    assert [out[i].task["env_name"] for i in (0, 1, 3)] == ["b", "a", "b"]
    assert out[2].task["env_name"] in ("a", "c")  # no free copy of d: any other


@needs_metaworld
@pytest.mark.slow
def test_ml10_rows_give_the_same_episodes_on_any_copy():
    """ML10's copies hold different environment classes from batch to batch: a batch of the
    same tasks and seeds is the same whichever copies run it; test tasks are the 5 held-out
    classes."""
    from rkmeta_rl.rl.tasks import make_family

    family = make_family("metaworld-ml10", max_episode_steps=5)
    policy = GaussianMLPPolicy(family.obs_dim, family.act_dim, [8])
    family.seed(0)
    tasks, other = family.sample_tasks(10), family.sample_tasks(10)
    assert len({family.task_class(t) for t in tasks}) == 10  # one per class

    def run(ts):
        params = {n: v.detach().expand(len(ts), *v.shape) for n, v in policy.params().items()}
        env = family.batched_env(ts, 2, list(range(2 * len(ts))))
        return rollout(policy, params, env, family.action_low, family.action_high,
                       torch.randn(len(ts), 2, 5, family.act_dim,
                                   generator=torch.Generator().manual_seed(1)))

    first = run(tasks)
    run(other[::-1])  # the copies now hold other classes in another order
    again = run(tasks)
    assert torch.equal(first.obs, again.obs) and torch.equal(first.rewards, again.rewards)
    test = family.sample_test_tasks(10)
    assert {family.task_class(t) for t in test} == {
        "door-close-v3", "drawer-open-v3", "lever-pull-v3", "shelf-place-v3", "sweep-into-v3"}
