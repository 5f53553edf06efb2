"""Meta-RL task families; importing this package registers them with Gymnasium.

Registered ids:

* ``rkmeta_rl/Nav2D-v0``: :class:`envs.nav2d.Nav2DEnv` (observation ``[x, y]``);
* ``rkmeta_rl/Nav2DGoal-v0``: the same with ``goal_conditioned=True``
  (observation ``[x, y, goal_x, goal_y]``).
* ``rkmeta_rl/HalfCheetahVel-v0``, ``rkmeta_rl/HalfCheetahDir-v0``, ``rkmeta_rl/AntVel-v0``,
  ``rkmeta_rl/AntDir-v0``, ``rkmeta_rl/AntGoal-v0``: the locomotion families of
  :mod:`envs.locomotion` (Gymnasium's MuJoCo v5 robots with a task reward), one per entry
  of :data:`envs.locomotion_tasks.SPECS`, which gives each its id and class. Their
  variants are keyword arguments: ``gymnasium.make(id, dynamics="maml")`` (MAML's step,
  velocity and reward terms, :mod:`envs.locomotion_dynamics`) and
  ``goal_conditioned=True`` (the oracle's observation, with the task appended).

The Nav2D environments count steps and truncate themselves, so they are registered without
``max_episode_steps`` (no ``TimeLimit`` wrapper). They also check their own call order and are
fully tested with ``gymnasium.utils.env_checker.check_env``, so ``gymnasium.make`` returns the
bare environment (no ``OrderEnforcing``/``PassiveEnvChecker`` wrappers); pass
``disable_env_checker=False`` to ``gymnasium.make`` to get the passive checker back.

The locomotion envs are registered as Gymnasium registers its own MuJoCo robots: with a
``TimeLimit`` of ``DEFAULT_HORIZON`` (200) steps (``max_episode_steps=...`` in ``make``
overrides it) and the default ``OrderEnforcing``/``PassiveEnvChecker`` wrappers. Registering
them does not import MuJoCo; ``gymnasium.make`` does.
"""

from __future__ import annotations

import gymnasium

from envs.locomotion_tasks import DEFAULT_HORIZON, SPECS
from envs.nav2d import BatchedNav2D, Nav2DEnv

NAV2D_ID = "rkmeta_rl/Nav2D-v0"
NAV2D_GOAL_ID = "rkmeta_rl/Nav2DGoal-v0"

_REGISTRATIONS: dict[str, dict] = {
    NAV2D_ID: {},
    NAV2D_GOAL_ID: {"goal_conditioned": True},
}

LOCOMOTION_IDS: dict[str, str] = {name: spec.env_id for name, spec in SPECS.items()}
"""The Gymnasium id of each locomotion family."""

HALFCHEETAH_VEL_ID = LOCOMOTION_IDS["halfcheetah-vel"]
HALFCHEETAH_DIR_ID = LOCOMOTION_IDS["halfcheetah-dir"]
ANT_VEL_ID = LOCOMOTION_IDS["ant-vel"]
ANT_DIR_ID = LOCOMOTION_IDS["ant-dir"]
ANT_GOAL_ID = LOCOMOTION_IDS["ant-goal"]

_LOCOMOTION_ENTRY_POINTS: dict[str, str] = {spec.env_id: spec.entry_point
                                            for spec in SPECS.values()}


def register_envs() -> None:
    """Register this package's environments with Gymnasium (idempotent, never warns)."""
    for env_id, kwargs in _REGISTRATIONS.items():
        if env_id in gymnasium.registry:
            continue
        gymnasium.register(
            id=env_id,
            entry_point="envs.nav2d:Nav2DEnv",
            kwargs=dict(kwargs),
            max_episode_steps=None,
            order_enforce=False,
            disable_env_checker=True,
        )
    for env_id, entry_point in _LOCOMOTION_ENTRY_POINTS.items():
        if env_id in gymnasium.registry:
            continue
        gymnasium.register(id=env_id, entry_point=entry_point,
                           max_episode_steps=DEFAULT_HORIZON)


register_envs()

__all__ = [
    "ANT_DIR_ID",
    "ANT_GOAL_ID",
    "ANT_VEL_ID",
    "HALFCHEETAH_DIR_ID",
    "HALFCHEETAH_VEL_ID",
    "LOCOMOTION_IDS",
    "NAV2D_GOAL_ID",
    "NAV2D_ID",
    "BatchedNav2D",
    "Nav2DEnv",
    "register_envs",
]
