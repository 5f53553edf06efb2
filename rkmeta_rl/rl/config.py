"""Every RL training setting: its default, its help and its flag, in one place (the
``train`` and ``train-oracle`` flags are generated from these fields, ``rkmeta_rl.run.flags``).

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
import numbers
import re
import types
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from envs import metaworld
from envs.locomotion_dynamics import DYNAMICS, GYMNASIUM
from rkmeta_rl.layer_methods import parse_layer_methods
from rkmeta_rl.rl.gym_tasks import FORMS
from rkmeta_rl.rl.sampler import SAMPLERS
from rkmeta_rl.rl.tasks import (
    FAMILIES,
    GYM_INNER_LR,
    META_BATCH_SIZE,
    describe,
    describe_episodes,
    episodes_of,
    family_entry,
    horizon_of,
)
from rkmeta_rl.run import rundir
from rkmeta_rl.run.config import (
    FIRST_ORDER_HELP,
    METHOD_HELP,
    STEP_SIZE_HELP,
    STEPS,
    StoredConfig,
    check_seed,
    inner_lr_help,
    resolve_steps,
    torch_threads,
)
from rkmeta_rl.run.flags import check_choices, flag_name, layer_sizes, setting

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


def train_config(settings: dict[str, Any], tableau_file: str | None = None) -> TrainConfig:
    """The resolved config of the ``settings`` given (TrainConfig's field names): the
    dataclass defaults, then the preset's (``settings["preset"]``), then ``settings``; the
    family's defaults fill what is left (:func:`resolve`, which raises ValueError)."""
    preset = settings.get("preset")
    values = dict(preset_values(preset)) if preset is not None else {}
    values.update(settings)
    return resolve(TrainConfig(**values), tableau_file=tableau_file)


@dataclass
class MetaStepConfig:
    """The settings of one RK-TRPO meta-step (``rkmeta_rl.rl.meta_step``)."""

    max_kl: float = setting(0.01, help="TRPO KL bound δ")
    cg_iters: int = setting(10, help="conjugate-gradient iterations")
    cg_damping: float = setting(0.01, help="added to the curvature: (F + damping·I)")
    ls_ratio: float = setting(0.8, help="backtracking shrink")
    ls_steps: int = setting(15, help="line-search candidates")
    gamma: float = setting(0.99, flag=False, help="discount")
    gae_lambda: float = setting(1.0, flag=False, help="GAE λ")
    first_order: bool = setting(False, help=FIRST_ORDER_HELP)
    # 1.0 is exact; less is an approximation (the gradient and line search stay exact).
    curvature_fraction: float = setting(
        1.0, help="share of each task's episodes for the CG curvature; < 1 approximates")


@dataclass
class TrainConfig(MetaStepConfig, StoredConfig):
    """A training run: the meta-step's settings plus the run's own."""

    env: str = setting("nav2d", help="task family: " + ", ".join(FAMILIES) + ", "
                       + metaworld.FORMS + " (pip install 'rkmeta-rl[metaworld]'), or "
                       + FORMS + " of an env with the task protocol")
    dynamics: str = setting(  # envs/locomotion_dynamics
        GYMNASIUM, choices=DYNAMICS,
        help=f"{' or '.join(DYNAMICS)}: the MuJoCo families' step, velocity and reward terms, "
             "Gymnasium v5's (0.05 s steps) or the MAML code's (0.01 s HalfCheetah, 0.02 s "
             "Ant; see docs/guides/locomotion.md); other envs have gymnasium only; recorded "
             "in config.json")
    # a named tableau, or the name of a --tableau file's tableau
    method: str = setting("ralston", help=METHOD_HELP)
    tableau: dict[str, Any] | None = setting(
        None, flag=False, help="the resolved tableau (a, q, c); filled by resolve()")
    layer_methods: str | None = setting(
        None, metavar="RULES",
        help="a tableau per parameter group (replaces --method), e.g. 'w2=midpoint,*=frozen:"
             "midpoint' (ANIL; the groups must share the weights a; the policy's parameters "
             "are w0, b0, ..., wL, bL and log_std)")
    meta_iters: int = setting(100, help="meta-iterations")
    snapshot_every: int = setting(
        10, help="keep the policy every N iterations in RUN_DIR/snapshots, for evaluate "
                 "--checkpoint; 0: never")
    preset: str | None = setting(
        None, choices=PRESETS,
        help="a named budget replacing some defaults (flags given still win): "
             + "; ".join(f"{k}: {v}" for k, v in PRESETS.items()))
    max_episode_steps: int | None = setting(
        None, help="horizon [the family's: " + describe("horizon") + "; Gymnasium envs: their "
                   "spec's max_episode_steps, required if it has none]")
    meta_batch_size: int | None = setting(
        None, help="tasks per meta-iteration [the family's: " + describe("meta_batch_size")
                   + f"; {META_BATCH_SIZE}: Gymnasium envs]")
    fast_batch_size: int | None = setting(
        None, help=f"episodes per task and stage [{describe_episodes()}]")
    inner_lr: float | None = setting(
        None, exclusive=STEPS, help=inner_lr_help("the family's: " + describe("inner_lr")
                                                  + f"; {GYM_INNER_LR}: Gymnasium envs"))
    step_size: float | None = setting(None, exclusive=STEPS, help=STEP_SIZE_HELP)
    hidden: list[int] | None = setting(
        None, type=layer_sizes, help="hidden layer sizes [the family's: "
                                      + describe("hidden", ",") + "]")
    init_std: float = setting(1.0, flag=False, help="the policy's initial standard deviation")
    seed: int = setting(0, help="tasks, weights and sampling")
    num_threads: int = setting(  # config.torch_threads
        0, help="torch threads; 0: every core this process may use; 1 when another process "
                "shares the cores")
    device: str = setting(
        "cpu", help="cpu or cuda[:N]: where the meta-step runs (sampling runs on the CPU)")
    sampler: str = setting(  # rkmeta_rl.rl.sampler
        "local", choices=SAMPLERS,
        help="; ".join(f"{k}: {v}" for k, v in SAMPLERS.items())
             + "; the episodes are the same either way")
    workers: int = setting(0, help="Ray workers, one CPU each [0: one per CPU of the Ray "
                                   "instance]")
    ray_address: str | None = setting(
        None, metavar="ADDR", help="join the Ray cluster at ADDR (HOST:PORT, or auto) "
                                   "instead of starting a local instance")
    alpha: float | None = setting(None, flag=False, help="the resolved adaptation step α")
    h: float | None = setting(None, flag=False, help="the resolved RK step h")


# TrainConfig's fields that resolve() fills: no setting of the Python API (what to give).
RESOLVED = {"alpha": "give inner_lr", "h": "give step_size", "tableau": "give tableau="}
PYTHON_SETTINGS = tuple(sorted(f.name for f in fields(TrainConfig) if f.name not in RESOLVED))
_KINDS = {bool: "True or False", int: "an integer", float: "a number", str: "a string",
          list: "a list of positive integers"}


def python_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """Settings given in Python (``rkmeta_rl.rl.api.MetaRL``), each in its field's type
    (an int for a float, a tuple for a list); a one-line ValueError names an unknown
    setting with the valid ones, or a value of the wrong type."""
    unknown = sorted(set(settings) - set(PYTHON_SETTINGS))
    if unknown:
        hints = "".join(f" ({name} is resolved: {RESOLVED[name]})" for name in unknown
                        if name in RESOLVED)
        raise ValueError(f"unknown setting{'s' if len(unknown) > 1 else ''} "
                         f"{', '.join(map(repr, unknown))}{hints}; valid settings: "
                         f"{', '.join(PYTHON_SETTINGS)}")
    return {name: _typed(name, value) for name, value in settings.items()}


def in_python_terms(error: ValueError) -> ValueError:
    """``error`` (from :func:`resolve`, which speaks in flags) with every ``--flag-name``
    of a setting written as the keyword a Python user gave, ``flag_name``; other flags
    (``--resume``, ``--out``) stay as they are."""
    def keyword(match: re.Match[str]) -> str:
        name = match.group(1).replace("-", "_")
        return name if name in PYTHON_SETTINGS else match.group(0)

    return ValueError(re.sub(r"--([a-z][a-z0-9-]*)", keyword, str(error)))


def _typed(name: str, value: Any) -> Any:
    """``value`` in the type of TrainConfig's field ``name`` (ValueError otherwise)."""
    hint, optional = typing.get_type_hints(TrainConfig)[name], False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint, optional = next(a for a in typing.get_args(hint) if a is not type(None)), True
    if value is None and optional:
        return None
    base = typing.get_origin(hint) or hint
    integral = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if base is bool and isinstance(value, bool):
        return value
    if base is int and integral:
        return int(value)
    if base is float and isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    if base is str and isinstance(value, str):
        return value
    if base is list and isinstance(value, (list, tuple)) and all(
            isinstance(x, numbers.Integral) and not isinstance(x, bool) for x in value):
        return [int(x) for x in value]
    raise ValueError(f"{name} must be {_KINDS[base]}{' or None' if optional else ''}, "
                     f"got {value!r}")


_POSITIVE_INTS = ("meta_iters", "meta_batch_size", "fast_batch_size", "cg_iters", "ls_steps",
                  "max_episode_steps")


def resolve(cfg: TrainConfig, tableau_file: str | None = None) -> TrainConfig:
    """Validate every setting and fill in the tableau, the horizon, α and h (ValueError)."""
    tab = cfg.resolve_tableau(tableau_file)
    family = family_entry(cfg.env)
    check_choices(cfg)  # --preset, --dynamics, --sampler
    _fill_family_defaults(cfg)
    _check_ranges(cfg)
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


def _fill_family_defaults(cfg: TrainConfig) -> None:
    """The family's horizon, episodes per task, meta-batch size and hidden sizes where the
    config leaves them open (the episodes' ValueError: a dynamics the family does not
    have)."""
    cfg.max_episode_steps = horizon_of(cfg.env, cfg.max_episode_steps)
    episodes = episodes_of(cfg.env, cfg.dynamics)
    if cfg.fast_batch_size is None:
        cfg.fast_batch_size = episodes
    entry = family_entry(cfg.env)
    if cfg.meta_batch_size is None:
        cfg.meta_batch_size = entry.meta_batch_size
    if cfg.hidden is None:
        cfg.hidden = list(entry.hidden)


def _check_ranges(cfg: TrainConfig) -> None:
    """Counts, the trust region, the line search and the snapshot interval in range."""
    for name in _POSITIVE_INTS:
        if int(getattr(cfg, name)) <= 0:
            raise ValueError(f"{flag_name(name)} must be > 0, got {getattr(cfg, name)}")
    for name in ("max_kl", "init_std"):
        value = getattr(cfg, name)
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{flag_name(name)} must be > 0, got {value}")
    if not 0 < cfg.curvature_fraction <= 1:
        raise ValueError(f"--curvature-fraction must be in (0, 1], got {cfg.curvature_fraction}")
    if not 0 < cfg.ls_ratio < 1:
        raise ValueError(f"--ls-ratio must be in (0, 1), got {cfg.ls_ratio}")
    if not (math.isfinite(cfg.cg_damping) and cfg.cg_damping >= 0):
        raise ValueError(f"--cg-damping must be a finite number >= 0, got {cfg.cg_damping}")
    if cfg.snapshot_every < 0:
        raise ValueError(f"--snapshot-every must be >= 0 (0: no snapshots), got "
                         f"{cfg.snapshot_every}")


def _check_device(device: str) -> None:
    """cpu or cuda[:N] (every family: sampling runs on the CPU, the meta-step on the
    device; ``rkmeta_rl/rl/trainer.py``)."""
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"--device must be cpu or cuda[:N], got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine")


def _check_sampler(sampler: str, workers: int, address: str | None) -> None:
    """Ray's settings only with ``ray``, and Ray installed for it (the sampler's name is
    one of ``SAMPLERS``: :func:`rkmeta_rl.run.flags.check_choices`)."""
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
