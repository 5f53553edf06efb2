"""Meta-RL task families; importing this package registers them with Gymnasium.

Registered ids:

* ``rkmeta_rl/Nav2D-v0``: :class:`envs.nav2d.Nav2DEnv` (observation ``[x, y]``);
* ``rkmeta_rl/Nav2DGoal-v0``: the same with ``goal_conditioned=True``
  (observation ``[x, y, goal_x, goal_y]``).

The environments count steps and truncate themselves, so they are registered without
``max_episode_steps`` (no ``TimeLimit`` wrapper). They also check their own call order and are
fully tested with ``gymnasium.utils.env_checker.check_env``, so ``gymnasium.make`` returns the
bare environment (no ``OrderEnforcing``/``PassiveEnvChecker`` wrappers); pass
``disable_env_checker=False`` to ``gymnasium.make`` to get the passive checker back.
"""

from __future__ import annotations

import gymnasium

from envs.nav2d import BatchedNav2D, Nav2DEnv

NAV2D_ID = "rkmeta_rl/Nav2D-v0"
NAV2D_GOAL_ID = "rkmeta_rl/Nav2DGoal-v0"

_REGISTRATIONS: dict[str, dict] = {
    NAV2D_ID: {},
    NAV2D_GOAL_ID: {"goal_conditioned": True},
}


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


register_envs()

__all__ = ["NAV2D_GOAL_ID", "NAV2D_ID", "BatchedNav2D", "Nav2DEnv", "register_envs"]
