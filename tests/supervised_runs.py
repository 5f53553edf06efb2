"""Tiny supervised training runs shared by the supervised trainer, evaluation and command-line
tests (imported as ``supervised_runs``: tests/ is on sys.path).
"""

from __future__ import annotations

from pathlib import Path

from rkmeta_rl.supervised.config import SupervisedConfig, resolve
from rkmeta_rl.supervised.trainer import prepare_supervised_run


def sinusoid(**overrides) -> SupervisedConfig:
    """A resolved tiny sinusoid config: 8x8 MLP, 5 tasks per step, 20 iterations."""
    values = dict(benchmark="sinusoid", method="midpoint", hidden=[8, 8], meta_batch_size=5,
                  meta_iters=20, log_every=5, eval_every=10, eval_tasks=4, test_tasks=6)
    return resolve(SupervisedConfig(**{**values, **overrides}))


def train(cfg: SupervisedConfig, run_dir: Path) -> list[dict]:
    return prepare_supervised_run(cfg, run_dir).run(progress=False)
