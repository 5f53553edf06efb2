"""Every training setting and its default, in one place (the CLI reads its defaults here).

Defaults are the paper's 2D-navigation setting (Appendix A.3, NOTES.md): 2×100 ReLU
policy, adaptation step α = 0.16, max KL 0.01, 40 tasks × 20 episodes, 100 meta-iterations.
Two settings depend on the task family (``rkmeta_rl.tasks.FAMILY_DEFAULTS``): α (0.1 for
locomotion, as in the MAML paper) and the horizon. A preset (``PRESETS``) replaces some
defaults at once; flags given explicitly still win.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, TypeVar

from rkmeta_rl.tableau import Tableau, get_tableau, load_tableau_json

DEFAULT_INNER_LR = 0.16

# Named budgets (--preset): they replace these defaults; explicit flags still win.
PRESETS: dict[str, dict[str, Any]] = {
    # a visible improvement on HalfCheetah within 15 minutes on 2 cores
    "quick": {"meta_batch_size": 20, "fast_batch_size": 10, "max_episode_steps": 100,
              "meta_iters": 300, "curvature_fraction": 0.25},
}


C = TypeVar("C", bound="StoredConfig")


class StoredConfig:
    """What every run config shares: its JSON form and its tableau (``method`` or the
    resolved ``tableau`` dict). Subclasses are dataclasses."""

    method: str
    tableau: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls: type[C], d: dict[str, Any]) -> C:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; valid keys: {sorted(known)}")
        return cls(**d)

    def get_tableau(self) -> Tableau:
        if self.tableau is None:
            return get_tableau(self.method)
        return Tableau.from_dict(self.tableau)

    def resolve_tableau(self, tableau_file: str | None) -> Tableau:
        """Fix the tableau: a JSON file's (which names the method) or ``method``'s."""
        if tableau_file is not None:
            tab = load_tableau_json(tableau_file)
            self.method = tab.name
        else:
            tab = self.get_tableau()
        self.tableau = tab.to_dict()
        return tab


@dataclass
class TrainConfig(StoredConfig):
    env: str = "nav2d"
    method: str = "ralston"  # a named tableau, or the name of a --tableau file's tableau
    tableau: dict[str, Any] | None = None  # resolved (a, q, c); filled by resolve()
    first_order: bool = False
    meta_iters: int = 100
    preset: str | None = None  # the PRESETS entry these settings started from
    max_episode_steps: int | None = None  # horizon; None: the family's default
    meta_batch_size: int = 40  # tasks per meta-iteration
    fast_batch_size: int = 20  # episodes per task and stage
    inner_lr: float | None = None  # α; h = α / c2 (default reading)
    step_size: float | None = None  # h; α = c2 · h (the other reading)
    max_kl: float = 0.01
    cg_iters: int = 10
    cg_damping: float = 0.01
    ls_ratio: float = 0.8
    ls_steps: int = 15
    curvature_fraction: float = 1.0  # < 1: KL curvature on a subsample (approximation)
    gamma: float = 0.99
    gae_lambda: float = 1.0
    hidden: list[int] = field(default_factory=lambda: [100, 100])
    init_std: float = 1.0
    seed: int = 0
    num_threads: int = 1
    device: str = "cpu"
    alpha: float | None = None  # resolved adaptation step α
    h: float | None = None  # resolved RK step h



def resolve_steps(tableau: Tableau, inner_lr: float | None, step_size: float | None,
                  default_inner_lr: float = DEFAULT_INNER_LR) -> tuple[float, float]:
    """(α, h) from one of the two readings in NOTES.md: α given (h = α / c2, default)
    or h given (α = c2 · h). One-stage tableaus have no c2: α and h coincide."""
    if inner_lr is not None and step_size is not None:
        raise ValueError("give either --inner-lr (α) or --step-size (h), not both")
    for flag, value in (("--inner-lr", inner_lr), ("--step-size", step_size)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ValueError(f"{flag} must be a positive number, got {value}")
    c2 = tableau.c[1] if tableau.stages > 1 else 1.0
    if step_size is not None:
        return c2 * step_size, step_size
    alpha = default_inner_lr if inner_lr is None else inner_lr
    if c2 <= 0:
        raise ValueError(
            f"tableau {tableau.name!r} has c2 = {c2}, so h = α / c2 is undefined; "
            "give --step-size h instead"
        )
    return alpha, alpha / c2


def resolve(cfg: TrainConfig, tableau_file: str | None = None) -> TrainConfig:
    """Validate every setting and fill in the tableau, α and h (raises ValueError)."""
    tab = cfg.resolve_tableau(tableau_file)
    from rkmeta_rl.tasks import FAMILY_DEFAULTS, check_env_name

    check_env_name(cfg.env)
    family = FAMILY_DEFAULTS[cfg.env]
    if cfg.preset is not None and cfg.preset not in PRESETS:
        raise ValueError(f"unknown preset {cfg.preset!r}; valid choices: {', '.join(PRESETS)}")
    if cfg.max_episode_steps is None:
        cfg.max_episode_steps = family["max_episode_steps"]
    for name in ("meta_iters", "meta_batch_size", "fast_batch_size", "cg_iters", "ls_steps",
                 "num_threads", "max_episode_steps"):
        if int(getattr(cfg, name)) <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be > 0, got {getattr(cfg, name)}")
    for name in ("max_kl", "init_std"):
        value = getattr(cfg, name)
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"--{name.replace('_', '-')} must be > 0, got {value}")
    if not 0 < cfg.curvature_fraction <= 1:
        raise ValueError(f"--curvature-fraction must be in (0, 1], got {cfg.curvature_fraction}")
    if not 0 < cfg.ls_ratio < 1:
        raise ValueError(f"--ls-ratio must be in (0, 1), got {cfg.ls_ratio}")
    if not (math.isfinite(cfg.cg_damping) and cfg.cg_damping >= 0):
        raise ValueError(f"--cg-damping must be a finite number >= 0, got {cfg.cg_damping}")
    if not 0 <= cfg.seed < 2**32:
        raise ValueError(f"--seed must be in [0, 2**32), got {cfg.seed}")
    for name in ("gamma", "gae_lambda"):
        if not 0 <= getattr(cfg, name) <= 1:
            raise ValueError(f"{name} must be in [0, 1], got {getattr(cfg, name)}")
    if not cfg.hidden or any(int(x) <= 0 for x in cfg.hidden):
        raise ValueError(f"--hidden must be positive layer sizes like 100,100, got {cfg.hidden}")
    if cfg.device != "cpu" and not cfg.device.startswith("cuda"):
        raise ValueError(f"--device must be cpu or cuda[:N], got {cfg.device!r}")
    from rkmeta_rl.tasks import LOCOMOTION

    if cfg.device != "cpu" and cfg.env in LOCOMOTION:
        raise ValueError(f"--device {cfg.device}: the MuJoCo families ({cfg.env}) sample and "
                         "train on the CPU; use --device cpu")
    if cfg.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ValueError(f"--device {cfg.device}: CUDA is not available on this machine")
    cfg.alpha, cfg.h = resolve_steps(tab, cfg.inner_lr, cfg.step_size, family["inner_lr"])
    return cfg


def read_train_config(run_dir) -> TrainConfig:
    """The RL run's config.json; a supervised run is named as such, not misread."""
    from rkmeta_rl import rundir

    stored = rundir.read_config(run_dir)
    if stored.get("kind") == "supervised":
        raise ValueError(f"{run_dir} holds a supervised run; use rkmeta-rl supervised-evaluate "
                         "or rkmeta-rl supervised --resume for it")
    return TrainConfig.from_dict(stored)
