"""Your own env's outputs and tasks, checked (envs/gym_batch.py, envs/checks.py and the
task-protocol probe of rkmeta_rl/rl/gym_tasks.py).

What ``reset`` or ``step`` returns that is not Gymnasium's tuple with an observation of
the observation space's shape, finite values and a finite scalar reward ends in one line
naming the task, the episode and the step (mid-training: exit 1, as any env failure), or
is refused before anything is written when the probe meets it (exit 2). An env whose reset
ignores ``options["task"]`` is refused in one line; where the probe cannot be sure it warns.
Every env here is a point on the plane, every run tiny.
"""

from __future__ import annotations

import warnings
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

from envs.batch import EnvError
from envs.gym_batch import BatchedGymEnv
from rkmeta_rl.cli import main
from rkmeta_rl.rl.gym_tasks import inspect_task_env

TINY = ["--meta-batch-size", "2", "--fast-batch-size", "2", "--hidden", "8", "--no-progress",
        "--meta-iters", "1", "--max-episode-steps", "8"]


class Point(gym.Env):
    """A point moved by its action (a velocity in [-0.1, 0.1]²) from a seeded start; a task
    is ``{"goal": (2,)}``, the reward minus the distance to it. Subclasses spoil one thing."""

    observation_space = spaces.Box(-5, 5, (2,), np.float32)
    action_space = spaces.Box(-0.1, 0.1, (2,), np.float32)

    def __init__(self) -> None:
        self.goal, self.pos, self.task, self.t = np.zeros(2), np.zeros(2, np.float32), {}, 0

    def sample_tasks(self, n: int) -> list[dict]:
        return [{"goal": g} for g in self.np_random.uniform(-1, 1, (n, 2))]

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if options and "task" in options:
            self.task = dict(options["task"])
            self.goal = np.asarray(self.task["goal"], dtype=np.float64)
        self.pos, self.t = self.np_random.uniform(-0.05, 0.05, 2).astype(np.float32), 0
        return self.pos.copy(), {}

    def step(self, action: np.ndarray):
        self.pos = (self.pos + np.clip(action, -0.1, 0.1)).astype(np.float32)
        self.t += 1
        return self.pos.copy(), -float(np.linalg.norm(self.pos - self.goal)), False, False, {}


# -- what reset and step return -----------------------------------------------------------

FAULTS: dict[str, Any] = {  # fault -> (what the env returns instead, words in the error)
    "wide-obs": (lambda r: (np.zeros(3, np.float32), *r[1:]),
                 ("returned an observation of shape (3,)", "observation space has shape (2,)")),
    "nan-obs": (lambda r: (np.array([np.nan, 0.0], np.float32), *r[1:]),
                ("observation that is not finite", "nan")),
    "text-obs": (lambda r: (np.array(["a", "b"]), *r[1:]),
                 ("observation that is not numeric", "'a'")),
    "vector-reward": (lambda r: (r[0], np.array([1.0, 2.0]), *r[2:]),
                      ("reward that is not a number", "array([1., 2.])")),
    "none-reward": (lambda r: (r[0], None, *r[2:]), ("reward that is not a number: None",)),
    "nan-reward": (lambda r: (r[0], float("nan"), *r[2:]), ("reward that is not finite: nan",)),
    "four-values": (lambda r: r[:4],
                    ("not (obs, reward, terminated, truncated, info)",)),
}


class FaultyPoint(Point):
    """A task with ``"fault": name`` spoils what ``step`` returns from step ``"at"`` on
    (:data:`FAULTS`); ``"reset-fault"`` spoils ``reset`` (``wide`` or ``obs-only``)."""

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = super().reset(seed=seed, options=options)
        fault = self.task.get("reset-fault")
        if fault == "wide":
            return np.zeros(3, np.float32), info
        return obs if fault == "obs-only" else (obs, info)

    def step(self, action: np.ndarray):
        result = super().step(action)
        fault = self.task.get("fault")
        return FAULTS[fault][0](result) if fault and self.t >= self.task["at"] else result


def faulty_batch(bad_task: dict) -> BatchedGymEnv:
    """Two tasks × two episodes; task 1 is ``bad_task`` (a goal added)."""
    tasks = [{"goal": np.array([0.5, 0.5])}, {"goal": np.array([-0.5, 0.5]), **bad_task}]
    return BatchedGymEnv([FaultyPoint() for _ in range(4)], tasks, 2, range(4), 6)


@pytest.mark.parametrize("fault", FAULTS)
def test_a_bad_step_result_names_the_task_episode_and_step(fault):
    batch = faulty_batch({"fault": fault, "at": 2})
    batch.reset()
    batch.step(torch.zeros(2, 2, 2))  # step 1 is fine
    with pytest.raises(EnvError) as caught:
        batch.step(torch.zeros(2, 2, 2))
    message = str(caught.value)
    assert (caught.value.task, caught.value.episode) == (1, 0)
    assert message.startswith("step() at step 2 returned ") and "\n" not in message
    assert message.endswith("(task 1, episode 0)")
    assert all(words in message for words in FAULTS[fault][1]), message


@pytest.mark.parametrize("fault, words", [
    ("wide", ("reset() returned an observation of shape (3,)", "has shape (2,)")),
    ("obs-only", ("reset() returned array(", "not (obs, info)")),
])
def test_a_bad_reset_result_names_the_task_and_episode(fault, words):
    with pytest.raises(EnvError, match=r"\(task 1, episode 0\)$") as caught:
        faulty_batch({"reset-fault": fault}).reset()
    assert all(w in str(caught.value) for w in words), str(caught.value)


class LateWideObsPoint(Point):
    """From step 7 on (after the protocol probe's steps), observations of shape (3,)."""

    def step(self, action: np.ndarray):
        obs, *rest = super().step(action)
        return (np.append(obs, 0.0) if self.t >= 7 else obs, *rest)


def test_a_wrong_observation_while_training_ends_in_one_line_naming_task_episode_step(
        tmp_path, capsys):
    assert main(["train", "--env", f"{__name__}:LateWideObsPoint", "--out",
                 str(tmp_path / "run"), *TINY]) == 1  # an env failure, as an env's exception
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("rkmeta-rl: error")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("rkmeta-rl: error: sampling failed in task 0 {'goal': ["), err
    for words in ("episode 0, on the local sampler", "step() at step 7 returned an "
                  "observation of shape (3,), but its observation space has shape (2,)"):
        assert words in lines[0], lines[0]


class WideObsPoint(Point):
    def step(self, action: np.ndarray):
        obs, *rest = super().step(action)
        return (np.append(obs, 0.0), *rest)


class NanRewardPoint(Point):
    def step(self, action: np.ndarray):
        obs, _, *rest = super().step(action)
        return (obs, float("nan") if self.t == 3 else 0.0, *rest)


class OldApiPoint(Point):
    def step(self, action: np.ndarray):
        return super().step(action)[:4]


PROBE_REFUSALS = {
    "wide-obs": ("WideObsPoint", "step() at step 1 returned an observation of shape (3,), but "
                                 "its observation space has shape (2,)"),
    "nan-reward": ("NanRewardPoint", "step() at step 3 returned a reward that is not finite"),
    "old-api": ("OldApiPoint", "step() at step 1 returned (array("),
}


@pytest.mark.parametrize("env, words", PROBE_REFUSALS.values(), ids=PROBE_REFUSALS.keys())
def test_a_bad_step_result_is_refused_before_training(env, words, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--env", f"{__name__}:{env}", "--out", str(out), *TINY]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"rkmeta-rl: error: env '{__name__}:{env}': "
                                                   f"{words}"), lines
    assert not out.exists()


# -- tasks that change nothing ------------------------------------------------------------


class TaskBlindPoint(Point):
    """Its reset ignores options["task"]: the goal stays where the constructor put it."""

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        return super().reset(seed=seed)


class RedrawingPoint(Point):
    """Draws a goal of its own at every reset (from the seeded np_random), task or not."""

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = super().reset(seed=seed)
        self.goal = self.np_random.uniform(-1, 1, 2)
        return obs, info


@pytest.mark.parametrize("env", ["TaskBlindPoint", "RedrawingPoint"])
def test_an_env_ignoring_its_task_is_refused_in_one_line(env, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--env", f"{__name__}:{env}", "--out", str(out), *TINY]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"rkmeta-rl: error: env '{__name__}:{env}': "
                                                   "3 different tasks"), lines
    for words in ("same observations and rewards over 5 steps",
                  "reset(seed=0, options={'task': task})", "its reset ignores options['task']",
                  "set the task from options['task'] in reset"):
        assert words in lines[0], lines[0]
    assert not out.exists()


class OneTaskPoint(Point):
    def sample_tasks(self, n: int) -> list[dict]:
        return [{"goal": np.array([0.3, 0.3])} for _ in range(n)]


class UnseededPoint(Point):
    """Its start is drawn from a generator the seed does not fix."""

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed, options=options)
        self.pos = np.random.default_rng().uniform(-0.05, 0.05, 2).astype(np.float32)
        return self.pos.copy(), {}


class SparsePoint(Point):
    """Reward 1 within 0.05 of the goal, else 0: over a few steps every task looks alike."""

    def step(self, action: np.ndarray):
        obs, reward, *rest = super().step(action)
        return (obs, float(-reward < 0.05), *rest)


@pytest.mark.parametrize("env, words", [
    ("OneTaskPoint", "drew 20 equal tasks"),
    ("UnseededPoint", "not fixed by the seed"),
    ("SparsePoint", "(a constant reward 0.0): fine if a task only shows later"),
])
def test_where_the_probe_cannot_be_sure_it_warns(env, words):
    with pytest.warns(UserWarning) as caught:
        inspect_task_env(f"{__name__}:{env}")
    (warning,) = caught
    assert warning.category.__name__ == "TaskProtocolWarning"
    assert str(warning.message).startswith(f"env '{__name__}:{env}': ") and words in str(
        warning.message), str(warning.message)


class SparseTrainsPoint(SparsePoint):
    """SparsePoint under a name no other test checks (each name is checked once)."""


def test_a_warned_env_still_trains(tmp_path, capsys):
    """The warning is either shown by the CLI on stderr or left to Python's warnings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["train", "--env", f"{__name__}:SparseTrainsPoint", "--out",
                     str(tmp_path / "run"), *TINY]) == 0
    shown = [str(w.message) for w in caught] + capsys.readouterr().err.splitlines()
    assert any(f"env '{__name__}:SparseTrainsPoint': 3 different tasks" in line
               and "constant reward" in line for line in shown), shown


class WindyPoint(Point):
    """The task is a wind that moves the point; the reward does not depend on it."""

    def sample_tasks(self, n: int) -> list[dict]:
        return [{"goal": np.zeros(2), "wind": w} for w in self.np_random.uniform(-1, 1, (n, 2))]

    def step(self, action: np.ndarray):
        self.pos = (self.pos + 0.05 * self.task["wind"]).astype(np.float32)
        return super().step(action)


@pytest.mark.parametrize("env", [f"{__name__}:Point", f"{__name__}:WindyPoint",
                                 "rkmeta_rl/Nav2D-v0", "rkmeta_rl/Nav2DGoal-v0"])
def test_envs_whose_tasks_matter_pass_without_a_warning(env):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        inspect_task_env(env)
