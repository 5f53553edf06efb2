"""Every RL training setting and its default, in one place (the CLI reads its defaults
and help here).

Defaults are the paper's 2D-navigation setting: 2×100 ReLU policy, max KL 0.01, 40 tasks
× 20 episodes, 100 meta-iterations. Three settings depend on the task family and come from
its entry in the registry (``rkmeta_rl.rl.tasks.family_entry``): α, the horizon and the
episodes per task (which also depend on the dynamics). A preset (``PRESETS``) replaces some
defaults at once; flags given explicitly still win. A config.json written before the
dynamics existed reads as ``gymnasium``, the dynamics it ran.
"""

from __future__ import annotations

import copy
import importlib.util
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from envs.locomotion_dynamics import GYMNASIUM
from rkmeta_rl import rundir
from rkmeta_rl.config import StoredConfig, check_seed, resolve_steps, torch_threads
from rkmeta_rl.layer_methods import parse_layer_methods
from rkmeta_rl.rl.sampler import SAMPLERS
from rkmeta_rl.rl.tasks import episodes_of, family_entry, horizon_of

# Named budgets (--preset): they replace these defaults; explicit flags still win.
PRESETS: dict[str, dict[str, Any]] = {
    # a visible improvement on HalfCheetah within 15 minutes on 2 cores
    "quick": {"meta_batch_size": 20, "fast_batch_size": 10, "max_episode_steps": 100,
              "meta_iters": 300, "curvature_fraction": 0.25},
}


def preset_values(name: str) -> dict[str, Any]:
    """The settings preset ``name`` replaces; unknown names list the valid ones."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid choices: {', '.join(PRESETS)}")
    return PRESETS[name]


@dataclass
class MetaStepConfig:
    """The settings of one RK-TRPO meta-step (``rkmeta_rl.rl.meta_step``)."""

    max_kl: float = 0.01
    cg_iters: int = 10
    cg_damping: float = 0.01
    ls_ratio: float = 0.8
    ls_steps: int = 15
    gamma: float = 0.99
    gae_lambda: float = 1.0
    first_order: bool = False
    # Share of each task's episodes used for the KL curvature in conjugate gradient.
    # 1.0 is exact; less is an approximation (the gradient and line search stay exact).
    curvature_fraction: float = 1.0


@dataclass
class TrainConfig(MetaStepConfig, StoredConfig):
    """A training run: the meta-step's settings plus the run's own."""

    env: str = "nav2d"
    dynamics: str = GYMNASIUM  # the MuJoCo families: gymnasium or maml (envs/locomotion_dynamics)
    method: str = "ralston"  # a named tableau, or the name of a --tableau file's tableau
    tableau: dict[str, Any] | None = None  # resolved (a, q, c); filled by resolve()
    layer_methods: str | None = None  # a tableau per parameter group (replaces method)
    meta_iters: int = 100
    snapshot_every: int = 10  # keep the policy every N iterations (evaluate --checkpoint); 0: never
    preset: str | None = None  # the PRESETS entry these settings started from
    max_episode_steps: int | None = None  # horizon; None: the family's default
    meta_batch_size: int = 40  # tasks per meta-iteration
    fast_batch_size: int | None = None  # episodes per task and stage; None: the family's
    inner_lr: float | None = None  # α; h = α / c2 (default reading); None: the family's
    step_size: float | None = None  # h; α = c2 · h (the other reading)
    hidden: list[int] = field(default_factory=lambda: [100, 100])
    init_std: float = 1.0
    seed: int = 0
    num_threads: int = 0  # 0: every core this process may use (config.torch_threads)
    device: str = "cpu"
    sampler: str = "local"  # a SAMPLERS name (rkmeta_rl.rl.sampler)
    workers: int = 0  # Ray workers; 0: one per CPU of the Ray instance
    ray_address: str | None = None  # a Ray cluster to join; None: start a local instance
    alpha: float | None = None  # resolved adaptation step α
    h: float | None = None  # resolved RK step h


_POSITIVE_INTS = ("meta_iters", "meta_batch_size", "fast_batch_size", "cg_iters", "ls_steps",
                  "max_episode_steps")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def resolve(cfg: TrainConfig, tableau_file: str | None = None) -> TrainConfig:
    """Validate every setting and fill in the tableau, the horizon, α and h (ValueError)."""
    tab = cfg.resolve_tableau(tableau_file)
    family = family_entry(cfg.env)
    if cfg.preset is not None:
        preset_values(cfg.preset)
    if cfg.max_episode_steps is None:
        cfg.max_episode_steps = horizon_of(cfg.env)
    episodes = episodes_of(cfg.env, cfg.dynamics)
    if cfg.fast_batch_size is None:
        cfg.fast_batch_size = episodes
    for name in _POSITIVE_INTS:
        if int(getattr(cfg, name)) <= 0:
            raise ValueError(f"{_flag(name)} must be > 0, got {getattr(cfg, name)}")
    for name in ("max_kl", "init_std"):
        value = getattr(cfg, name)
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{_flag(name)} must be > 0, got {value}")
    if not 0 < cfg.curvature_fraction <= 1:
        raise ValueError(f"--curvature-fraction must be in (0, 1], got {cfg.curvature_fraction}")
    if not 0 < cfg.ls_ratio < 1:
        raise ValueError(f"--ls-ratio must be in (0, 1), got {cfg.ls_ratio}")
    if not (math.isfinite(cfg.cg_damping) and cfg.cg_damping >= 0):
        raise ValueError(f"--cg-damping must be a finite number >= 0, got {cfg.cg_damping}")
    if cfg.snapshot_every < 0:
        raise ValueError(f"--snapshot-every must be >= 0 (0: no snapshots), got "
                         f"{cfg.snapshot_every}")
    check_seed(cfg.seed)
    torch_threads(cfg.num_threads)  # ValueError for a negative count
    for name in ("gamma", "gae_lambda"):
        if not 0 <= getattr(cfg, name) <= 1:
            raise ValueError(f"{name} must be in [0, 1], got {getattr(cfg, name)}")
    if not cfg.hidden or any(int(x) <= 0 for x in cfg.hidden):
        raise ValueError(f"--hidden must be positive layer sizes like 100,100, got {cfg.hidden}")
    _check_device(cfg.device)
    _check_sampler(cfg.sampler, cfg.workers, cfg.ray_address)
    cfg.alpha, cfg.h = resolve_steps(tab, cfg.inner_lr, cfg.step_size, family.inner_lr)
    if cfg.layer_methods is not None:
        parse_layer_methods(cfg.layer_methods)  # the names are checked with the policy
    return cfg


def _check_device(device: str) -> None:
    """cpu or cuda[:N] (every family: sampling runs on the CPU, the meta-step on the
    device; ``rkmeta_rl/rl/trainer.py``)."""
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"--device must be cpu or cuda[:N], got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine")


def _check_sampler(sampler: str, workers: int, address: str | None) -> None:
    """A known sampler; Ray's settings only with ``ray``, and Ray installed for it."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; valid choices: {', '.join(SAMPLERS)}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"--workers must be >= 0 (0: one per CPU of the Ray instance), "
                         f"got {workers!r}")
    if address is not None and (not isinstance(address, str) or not address.strip()):
        raise ValueError(f"--ray-address must be an address like HOST:6379 or auto, "
                         f"got {address!r}")
    if sampler != "ray":
        given = [f for f, v in (("--workers", workers), ("--ray-address", address)) if v]
        if given:
            verb = "needs" if len(given) == 1 else "need"
            raise ValueError(f"{' and '.join(given)} {verb} --sampler ray (got --sampler "
                             f"{sampler})")
    elif importlib.util.find_spec("ray") is None:
        raise ValueError('--sampler ray needs Ray, which is not installed: pip install -e '
                         '".[ray]"')


def read_train_config(run_dir: str | Path, check_device: bool = False) -> TrainConfig:
    """The RL run's config.json, every value validated (a one-line ValueError naming the
    file otherwise); a supervised run is named as such, not misread. The device and the
    sampler are only checked when ``check_device`` (training); evaluation runs on the CPU
    with the local sampler."""
    path = Path(run_dir) / rundir.CONFIG
    stored = rundir.read_config(Path(run_dir))
    if stored.get("kind") == "supervised":
        raise ValueError(f"{run_dir} holds a supervised run; use rkmeta-rl supervised-evaluate "
                         "or rkmeta-rl supervised --resume for it")
    try:
        cfg = TrainConfig.from_dict(stored)
        probe = copy.deepcopy(cfg)
        if not check_device:
            probe.device, probe.sampler, probe.workers, probe.ray_address = (
                "cpu", "local", 0, None)
        resolve(probe)
    except (TypeError, ValueError, AttributeError) as e:
        raise ValueError(f"{path}: {e}") from None
    return cfg
