"""HalfCheetah's engine for MuJoCo 3 (LoopPhysics, no mujoco.batch): the batch tests of
tests/test_mujoco_batch.py against Gymnasium run again with it, and on MuJoCo 4 it is
bitwise the batch engine."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest
import test_mujoco_batch as batch_tests

from envs.locomotion import make_locomotion_env
from envs.locomotion_dynamics import robot_dynamics
from envs.mujoco_physics import ENGINES, HAS_BATCH, LoopPhysics


@pytest.fixture
def loop_engine(monkeypatch):
    """BatchedLocomotion's HalfCheetah on LoopPhysics, whatever MuJoCo is installed."""
    monkeypatch.setitem(ENGINES, "halfcheetah", LoopPhysics)


@pytest.mark.parametrize("family", ["halfcheetah-vel", "halfcheetah-dir"])
def test_matches_gymnasium(loop_engine, family):
    batch_tests.test_matches_gymnasium(family)


@pytest.mark.parametrize("oracle", [False, True])
def test_matches_the_env_under_maml_dynamics(loop_engine, oracle):
    batch_tests.test_matches_the_env_under_maml_dynamics("halfcheetah-vel", oracle)


@pytest.mark.parametrize("dynamics", ["gymnasium", "maml"])
def test_a_row_resets_as_the_env_does_with_its_seed(loop_engine, dynamics):
    batch_tests.test_a_row_resets_as_the_env_does_with_its_seed("halfcheetah-vel", dynamics)


def test_seeds_threads_truncation_and_close(loop_engine):
    batch_tests.test_seeds_and_threads("halfcheetah-vel")
    batch_tests.test_truncation_freezes_episodes()
    batch_tests.test_close_releases_threads("halfcheetah-vel")


def test_unstable_step_leaves_every_state_unchanged(loop_engine):
    batch_tests.test_unstable_step_leaves_every_state_unchanged()


def engine_run(engine: type, at_new_state: bool, steps: int = 15) -> list[np.ndarray]:
    """States, xy and velocities of 5 HalfCheetahs stepped with seeded actions, every
    third step on a subset of rows, from states drawn by the test."""
    env = make_locomotion_env("halfcheetah-vel")
    model, dyn = env.unwrapped.model, robot_dynamics("halfcheetah", "maml")
    rng = np.random.default_rng(7)
    physics = engine(model, 5, dyn.frame_skip, 0.01, 2, at_new_state)
    physics.start(model.qpos0 + 0.1 * rng.standard_normal((5, model.nq)),
                  0.1 * rng.standard_normal((5, model.nv)))
    out = []
    for k in range(steps):
        rows = np.array([0, 2, 3]) if k % 3 == 2 else slice(None)
        n = 3 if k % 3 == 2 else 5
        moved = physics.advance(rows, rng.uniform(-1, 1, (n, model.nu)))
        out += [moved.state.copy(), moved.xy.copy(), physics.state.copy()]
        if at_new_state:
            out.append(moved.velocity.copy())
    physics.close()
    env.close()
    return out


@pytest.mark.skipif(not HAS_BATCH, reason=f"MuJoCo {mujoco.__version__} has no mujoco.batch")
@pytest.mark.parametrize("at_new_state", [False, True])
def test_bitwise_the_batch_engine(at_new_state):
    from envs.mujoco_physics import CheetahPhysics

    for x, y in zip(engine_run(LoopPhysics, at_new_state),
                    engine_run(CheetahPhysics, at_new_state), strict=True):
        np.testing.assert_array_equal(x, y)
