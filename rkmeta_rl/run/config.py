"""What every run's config shares, RL and supervised: its JSON form, its tableau, and
the two readings of the step size (docs/method.md, "Step sizes: the two readings")."""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, TypeVar

from rkmeta_rl.methods import METHOD_NAMES, get_tableau
from rkmeta_rl.tableau import Tableau, load_tableau_json

C = TypeVar("C", bound="StoredConfig")


class StoredConfig:
    """Base of the wings' config dataclasses: ``config.json`` round trip and the tableau
    (``method``'s, or the resolved ``tableau`` dict of a ``--tableau`` file)."""

    method: str
    tableau: dict[str, Any] | None
    layer_methods: str | None  # a tableau per parameter group (rkmeta_rl.layer_methods)
    inner_lr: float | None
    step_size: float | None
    alpha: float | None  # resolved
    h: float | None  # resolved

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


@dataclasses.dataclass(frozen=True)
class SettingNames:
    """How errors name the step-size settings: the CLI's flags, or a Python API's
    arguments (:data:`PYTHON_NAMES`)."""

    inner_lr: str = "--inner-lr"
    step_size: str = "--step-size"
    layer_methods: str = "--layer-methods"


CLI_NAMES = SettingNames()
PYTHON_NAMES = SettingNames("inner_lr", "step_size", "layer_methods")

# The help of the method settings both wings declare (rkmeta_rl.run.flags.setting).
METHOD_HELP = (f"tableau name: {', '.join(METHOD_NAMES)}, generic:X (rkmeta-rl methods "
               "lists them)")
FIRST_ORDER_HELP = "k_i at its point, not differentiated through θ_i(θ)"
STEP_SIZE_HELP = "RK step h, α = c2·h"
STEPS = "step"  # --inner-lr and --step-size exclude each other (flags.setting's exclusive)


def inner_lr_help(default: str) -> str:
    """--inner-lr's help; ``default`` says where α's default comes from."""
    return f"adaptation step α, h = α / c2 [{default}]"


def resolve_steps(tableau: Tableau, inner_lr: float | None, step_size: float | None,
                  default_inner_lr: float, names: SettingNames = CLI_NAMES
                  ) -> tuple[float, float]:
    """(α, h) under one of the two readings of α = c2·h: α given (h = α / c2, the default,
    ``default_inner_lr`` when neither is given) or h given (α = c2·h). One-stage
    tableaus have no c2: α and h coincide. Errors name the settings by ``names``."""
    if inner_lr is not None and step_size is not None:
        raise ValueError(f"give either {names.inner_lr} (α) or {names.step_size} (h), "
                         "not both")
    for flag, value in ((names.inner_lr, inner_lr), (names.step_size, step_size)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ValueError(f"{flag} must be a positive number, got {value}")
    c2 = tableau.c[1] if tableau.stages > 1 else 1.0
    if step_size is not None:
        return c2 * step_size, step_size
    alpha = default_inner_lr if inner_lr is None else inner_lr
    if c2 <= 0:
        raise ValueError(
            f"tableau {tableau.name!r} has c2 = {c2}, so h = α / c2 is undefined; "
            f"give {names.step_size} h instead"
        )
    return alpha, alpha / c2


# One forward pass over a meta-batch (FLOPs) below which --num-threads 0 takes one thread.
# Measured on a 2-core AMD EPYC, seconds per RL iteration with 1 and 2 threads: examples/
# own_env.py's size (4.8e6) 0.18-0.22 s both; nav2d 10 tasks × 10 episodes with 32×32
# (2.4e7) 0.47-0.67 against 0.34-0.53 s, with 48×48 (5e7) 0.53-0.67 against 0.36-0.60 s.
# Two threads on a small problem gain nothing, and lost 6× (66 s against 11 s) while
# another process held a core: OpenMP's threads wait for each other after every product.
SMALL_PROBLEM_FLOPS = 1e7


def torch_threads(requested: int, forward_flops: float | None = None) -> int:
    """Torch threads for ``--num-threads``: the number given; with 0 (the default) every
    core this process may use, or one where ``forward_flops`` (one forward pass of the
    model over a meta-batch's data) is below :data:`SMALL_PROBLEM_FLOPS`. Measured on a
    quiet 2-core machine, an exact paper-size nav2d iteration takes 0.55× the time on two
    threads that it takes on one (docs/guides/threads.md); a process that shares the cores with
    another (the reproduction scripts run jobs side by side) should ask for 1: two threads
    on one free core ran 2-4× slower. The same number repeats a run's metrics; another may
    change their last bits on some CPUs (docs/method.md, "Reproducibility")."""
    if requested < 0:
        raise ValueError(f"--num-threads must be >= 0 (0: every core this process may use, "
                         f"one for a small problem), got {requested}")
    if requested:
        return requested
    if forward_flops is not None and forward_flops < SMALL_PROBLEM_FLOPS:
        return 1
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no affinity on this platform (macOS, Windows)
        return max(1, os.cpu_count() or 1)


def check_seed(seed: int, flag: str = "--seed") -> None:
    """Seeds are 32-bit (torch and numpy generators accept them on every platform)."""
    if not 0 <= seed < 2**32:
        raise ValueError(f"{flag} must be in [0, 2**32), got {seed}")
