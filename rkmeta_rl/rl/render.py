"""``rkmeta-rl render``: a GIF of a run's policy after K adaptation steps on one task.

The policy is adapted exactly as ``rkmeta-rl evaluate`` adapts it (K REINFORCE steps of
the run's α on ``episodes`` sampled episodes), then one episode of the adapted policy's
mean action is played in the family's Gymnasium env with ``render_mode="rgb_array"``.
MuJoCo renders offscreen: ``MUJOCO_GL`` defaults to ``egl`` here (``osmesa`` also works
where it is installed); set it before running to choose.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import imageio.v2 as imageio
import numpy as np
import torch
from gymnasium.wrappers import TimeLimit

from envs.locomotion import make_locomotion_env
from rkmeta_rl.rl.adapt import adapt_to_tasks
from rkmeta_rl.rl.episodes import scale_action
from rkmeta_rl.rl.evaluate import DEFAULT_EVAL_SEED, held_out_tasks
from rkmeta_rl.rl.tasks import LOCOMOTION
from rkmeta_rl.rl.trainer import load_run, run_alpha, run_family


class RenderError(ValueError):
    """Offscreen rendering is not available with the chosen MUJOCO_GL back end (a
    setting the user chooses, hence a ValueError: the CLI prints it without traceback)."""


def parse_task(text: str | None, family) -> dict:
    """A task from JSON (``'{"velocity": 1.5}'``), or the first held-out task."""
    if text is None:
        return held_out_tasks(family, 1, DEFAULT_EVAL_SEED)[0]
    try:
        task = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"--task must be JSON like '{{\"velocity\": 1.5}}', got {text!r} ({e})"
                         ) from None
    return family.env.locomotion_spec.check_task(task)


def play_episode(policy, params: dict[str, torch.Tensor], env, low: torch.Tensor,
                 high: torch.Tensor, seed: int) -> tuple[list[np.ndarray], float]:
    """Frames and return of one mean-action episode of task 0's ``params`` in ``env``."""
    obs, _ = env.reset(seed=seed)
    frames, total, done = [render_frame(env)], 0.0, False
    while not done:
        with torch.no_grad():  # params (T=1, ...), obs (1, 1, d) -> mean (1, 1, a)
            mean, _ = policy(params, torch.as_tensor(obs, dtype=torch.float32)[None, None])
        action = scale_action(mean[0, 0], low, high)
        obs, reward, terminated, truncated, _ = env.step(action.numpy())
        total += float(reward)
        done = terminated or truncated
        frames.append(render_frame(env))
    return frames, total


def render_frame(env) -> np.ndarray:
    """One RGB frame; a failing GL back end is reported with what to try instead."""
    try:
        return env.render()
    except Exception as e:  # GL back ends fail in many ways
        raise RenderError(f"offscreen rendering failed with MUJOCO_GL="
                          f"{os.environ.get('MUJOCO_GL')} ({type(e).__name__}: {e}); try "
                          "MUJOCO_GL=egl or MUJOCO_GL=osmesa") from e


def render_run(run_dir: str | Path, out: str | Path, task_json: str | None = None,
               steps: int = 1, episodes: int = 40, seed: int = DEFAULT_EVAL_SEED,
               width: int = 320, height: int = 240, fps: int = 30) -> dict[str, Any]:
    """Adapt, play and write the GIF; returns what was rendered (task, return, frames)."""
    if steps < 0 or episodes <= 0 or width <= 0 or height <= 0 or fps <= 0:
        raise ValueError(f"--steps must be >= 0 and --episodes, --width, --height, --fps > 0; "
                         f"got {steps}, {episodes}, {width}, {height}, {fps}")
    out = Path(out)
    if out.suffix.lower() != ".gif":
        raise ValueError(f"--out must end in .gif, got {str(out)!r}")
    cfg, policy = load_run(run_dir)
    if cfg.env not in LOCOMOTION:
        raise ValueError(f"render draws MuJoCo families ({', '.join(LOCOMOTION)}); run "
                         f"{run_dir} is {cfg.env!r}: use rkmeta-rl plot trajectories for it")
    os.environ.setdefault("MUJOCO_GL", "egl")
    family = run_family(cfg)
    task = parse_task(task_json, family)
    params, returns = adapt_to_tasks(policy, family, [task], run_alpha(cfg, policy), steps,
                                     episodes, seed)
    env = TimeLimit(make_locomotion_env(cfg.env, task=task, dynamics=cfg.dynamics,
                                        render_mode="rgb_array", width=width, height=height,
                                        camera_name="track"),  # the model's camera that follows
                                                               # the centre of mass
                    cfg.max_episode_steps)
    try:
        frames, total = play_episode(policy, params, env, family.action_low,
                                     family.action_high, seed)
    except Exception as e:  # GL back ends fail in many ways; say how to choose another
        raise RenderError(f"offscreen rendering failed with MUJOCO_GL="
                           f"{os.environ['MUJOCO_GL']} ({type(e).__name__}: {e}); try "
                           "MUJOCO_GL=egl or MUJOCO_GL=osmesa") from e
    finally:
        env.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.gif")
    imageio.mimsave(tmp, frames, duration=1000 / fps, loop=0)
    os.replace(tmp, out)
    task_out = {k: np.asarray(v).tolist() for k, v in task.items()}
    return {"task": task_out, "steps": steps, "return": total, "frames": len(frames),
            "sampled_returns": [float(r[0]) for r in returns]}
