"""Supervised meta-training loop: RK meta-gradient + Adam, run directory, checkpoints.

The run directory has the same files as an RL run (config.json, metrics.jsonl,
TensorBoard events, checkpoint.pt written atomically). Iterations are milliseconds long
here, so one metrics record (window means), TensorBoard point and checkpoint is written
every ``log_every`` iterations; validation (adapt held-out tasks ``test_steps`` steps) runs
every ``eval_every``. A killed run resumes from its last checkpoint and redoes the rest
of that window, giving the same numbers as an uninterrupted run. A SIGINT/SIGTERM stops
the run at the next iteration and discards the iterations since the last checkpoint (they
are redone on resume). The run directory's writer lock is held as in RL training.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Iterable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from rkmeta_rl.layer_methods import method_of
from rkmeta_rl.rk import Params, repeat_params
from rkmeta_rl.run import loop, rundir, runlock
from rkmeta_rl.run.config import torch_threads
from rkmeta_rl.run.loop import Callback
from rkmeta_rl.supervised.benchmarks import VALIDATION_SEED_OFFSET, Benchmark, make_benchmark
from rkmeta_rl.supervised.config import SupervisedConfig, resolve
from rkmeta_rl.supervised.meta import adapt, meta_step, task_losses

KIND = "supervised"  # config.json marks the run so `evaluate` knows which code reads it


def initial_params(cfg: SupervisedConfig, bench: Benchmark) -> Params:
    return bench.model.init_params(torch.Generator().manual_seed(cfg.seed))


def adapted_scores(bench: Benchmark, theta: Params, batch, alpha: float | dict[str, float],
                   steps: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per-task query loss and accuracy (T,) after 0..steps adaptation steps of α
    (accuracies empty for regression)."""
    losses: list[torch.Tensor] = []
    accs: list[torch.Tensor] = []

    def score(k: int, params: Params) -> None:
        with torch.no_grad():
            loss, acc = task_losses(bench.model, params, batch.xq, batch.yq)
        losses.append(loss)
        if acc is not None:
            accs.append(acc)

    adapt(bench.model, theta, batch.xs, batch.ys, alpha, steps, on_step=score)
    return losses, accs


def forward_flops(bench: Benchmark, theta: Params, meta_batch_size: int) -> float:
    """FLOPs of one forward pass of the model over a meta-batch's support sets, counted on
    one task drawn from a generator of its own (the run's streams are not touched)."""
    batch = bench.train(1, torch.Generator().manual_seed(0))
    params = repeat_params({n: v.detach() for n, v in theta.items()}, 1)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        bench.model(params, batch.xs)  # params (1, ...), x (1, B, ...)
    return float(counter.get_total_flops()) * meta_batch_size


class SupervisedTrainer:
    """A run's meta-parameters, Adam state and task stream; ``run()`` trains to the end
    (``rkmeta_rl.run.loop``). ``run_dir`` None trains in memory: nothing is written."""

    def __init__(self, cfg: SupervisedConfig, run_dir: Path | None = None) -> None:
        self.cfg = cfg
        self.run_dir = None if run_dir is None else Path(run_dir)  # None: train in memory
        self.bench = make_benchmark(cfg)
        self.theta = {n: v.requires_grad_() for n, v in initial_params(cfg, self.bench).items()}
        self.tableau, self.h, self.alpha = method_of(cfg, self.theta)
        self.optimizer = torch.optim.Adam(list(self.theta.values()), lr=cfg.meta_lr)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.forward_flops = forward_flops(self.bench, self.theta, cfg.meta_batch_size)
        self.iteration = 0
        self.writer_lock: runlock.WriterLock | None = None
        self._window: list[dict[str, float]] = []  # iterations since the last record

    # -- state ---------------------------------------------------------------
    def state(self, iteration: int | None = None) -> dict[str, Any]:
        """Everything a resume needs after ``iteration`` iterations (by default those done)."""
        done = self.iteration if iteration is None else iteration
        return {"iteration": done, "params": {n: v.detach().clone()
                                                        for n, v in self.theta.items()},
                "optimizer": self.optimizer.state_dict(), "generator": self.generator.get_state(),
                "config": self.cfg.to_dict()}

    def load_state(self, state: dict[str, Any]) -> None:
        params = checked_params(state["params"], self.theta)
        with torch.no_grad():
            for n, v in self.theta.items():
                v.copy_(params[n])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.iteration = state["iteration"]  # a count: checked by rundir.load_checkpoint

    def threads(self, requested: int | None = None) -> int:
        """Torch threads for ``requested`` (the run's ``num_threads`` by default): with 0,
        one for a small problem (``config.torch_threads``), judged by the FLOPs of one
        forward pass over a meta-batch's support sets."""
        return torch_threads(self.cfg.num_threads if requested is None else requested,
                             self.forward_flops)

    # -- one iteration and validation --------------------------------------------------
    def step(self) -> dict[str, float]:
        t0 = time.perf_counter()
        batch = self.bench.train(self.cfg.meta_batch_size, self.generator)
        res = meta_step(self.bench.model, self.theta, self.optimizer, batch, self.tableau,
                        self.h, inner_steps=self.cfg.inner_steps,
                        first_order=self.cfg.first_order)
        if res.rejected:
            warnings.warn(f"iteration {self.iteration}: step rejected ({res.rejected}); θ kept",
                          RuntimeWarning, stacklevel=2)
        rec = {f"loss_stage{i + 1}": v for i, v in res.stage_loss.items()}
        rec.update({f"accuracy_stage{i + 1}": v for i, v in res.stage_accuracy.items()})
        rec.update(grad_norm=res.grad_norm, rejected=float(bool(res.rejected)),
                   seconds=time.perf_counter() - t0)
        return rec

    def validate(self) -> dict[str, float]:
        """Held-out tasks (the same ones every time) before and after test_steps of α."""
        g = torch.Generator().manual_seed(self.cfg.seed + VALIDATION_SEED_OFFSET)
        batch = self.bench.validation(self.cfg.eval_tasks, g)
        theta = {n: v.detach() for n, v in self.theta.items()}
        losses, accs = adapted_scores(self.bench, theta, batch, self.alpha,
                                      self.cfg.test_steps)
        rec = {"val_loss_pre": float(losses[0].mean()), "val_loss_post": float(losses[-1].mean())}
        if accs:
            rec.update(val_accuracy_pre=float(accs[0].mean()),
                       val_accuracy_post=float(accs[-1].mean()))
        return rec

    # -- the loop (rkmeta_rl.run.loop) ------------------------------------------------
    def run(self, progress: bool = True, callbacks: Iterable[Callback] = ()
            ) -> list[dict[str, Any]]:
        """Train to ``meta_iters``; the records written. With a run directory it raises
        ``RunStopped`` on SIGINT/SIGTERM; a callback returning False stops training."""
        self._window = []  # iterations since the last record
        return loop.train(self, progress, callbacks)

    @property
    def total(self) -> int:
        return self.cfg.meta_iters

    def record(self, rec: dict[str, float], done: int) -> dict[str, Any] | None:
        """Window means every ``log_every`` iterations, with validation every
        ``eval_every`` and at the last; None in between (records, checkpoints and
        validations fall on fixed iterations)."""
        cfg = self.cfg
        self._window.append(rec)
        due_eval = done == cfg.meta_iters or (cfg.eval_every > 0 and done % cfg.eval_every == 0)
        if not (due_eval or done % cfg.log_every == 0):
            return None
        out = {"iter": done - 1, **_window_means(self._window)}
        self._window = []
        if due_eval:
            out.update(self.validate())
        return out

    def save_snapshot(self, done: int) -> None:
        pass  # supervised runs keep their last checkpoint only

    def shown(self, rec: dict[str, Any]) -> dict[str, float]:
        keys = ("loss_stage1", f"loss_stage{self.tableau.stages}", "val_loss_post",
                "val_accuracy_post")
        return {k: rec[k] for k in keys if k in rec}

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass


def checked_params(params: Any, like: Params) -> Params:
    """Stored parameters with exactly ``like``'s names, shapes and dtypes (ValueError)."""
    if not isinstance(params, dict) or set(params) != set(like):
        names = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"parameters {names} do not match the model's {sorted(like)}")
    for n, v in like.items():
        p = params[n]
        if not isinstance(p, torch.Tensor) or p.shape != v.shape or p.dtype != v.dtype:
            got = tuple(p.shape) if isinstance(p, torch.Tensor) else type(p).__name__
            raise ValueError(f"parameter {n!r} is {got}, the model needs {tuple(v.shape)} "
                             f"{v.dtype}")
    return params


def _window_means(window: list[dict[str, float]]) -> dict[str, float]:
    keys = {k for rec in window for k in rec}
    means = {k: math.fsum(r[k] for r in window if k in r) / sum(k in r for r in window)
             for k in sorted(keys)}
    means["rejected"] = sum(r["rejected"] for r in window)  # a count, not a mean
    means["seconds_per_iter"] = means["seconds"]
    means["seconds"] = math.fsum(r["seconds"] for r in window)  # the window's total
    return means


def _stored_config(run_dir: Path) -> dict[str, Any]:
    """config.json as written, re-resolved (a setting added since takes its default)."""
    cfg = resolve(SupervisedConfig.from_dict(read_supervised_config(run_dir)))
    return {"kind": KIND, **cfg.to_dict()}


def read_supervised_config(run_dir: Path) -> dict[str, Any]:
    """config.json of a supervised run, without its ``kind`` marker, every value validated
    (a one-line ValueError naming the file otherwise)."""
    stored = rundir.read_config(Path(run_dir))
    if stored.pop("kind", None) != KIND:
        raise ValueError(f"{run_dir} holds an RL run, not a supervised one")
    try:
        resolve(SupervisedConfig.from_dict(copy.deepcopy(stored)))
    except (TypeError, ValueError, AttributeError) as e:
        raise ValueError(f"{Path(run_dir) / rundir.CONFIG}: {e}") from None
    return stored


def prepare_supervised_run(cfg: SupervisedConfig, run_dir: Path) -> SupervisedTrainer:
    """Create ``run_dir`` for ``cfg``, or continue it if it holds this same run (a
    different run, or one another process trains, is refused)."""
    run_dir = Path(run_dir)
    return rundir.open_run(run_dir, {"kind": KIND, **cfg.to_dict()},
                           partial(_stored_config, run_dir),
                           new=lambda: SupervisedTrainer(cfg, run_dir),
                           resume=lambda: resume_supervised_run(run_dir))


def resume_supervised_run(run_dir: Path, meta_iters: int | None = None,
                          num_threads: int | None = None) -> SupervisedTrainer:
    """A trainer positioned after the run's last checkpoint (its own config), holding the
    directory's writer lock; ``meta_iters`` extends the run, ``num_threads`` overrides the
    run's for this process (:func:`rkmeta_rl.run.rundir.change_on_resume`). An extended run's
    parameters are those of a run given ``meta_iters`` from the start; its metrics keep the
    record (and validation) made at the old last iteration."""
    run_dir = Path(run_dir)
    cfg = SupervisedConfig.from_dict(read_supervised_config(run_dir))
    state = rundir.load_checkpoint(run_dir, required=("iteration", "params"))
    trainer = rundir.continue_run(run_dir, SupervisedTrainer(cfg, run_dir), state)
    rundir.change_on_resume(run_dir, trainer, meta_iters, num_threads)
    return trainer


def load_supervised_run(run_dir: str | Path) -> tuple[SupervisedConfig, Benchmark, Params]:
    """(config, benchmark, meta-trained parameters) from the run's last checkpoint."""
    run_dir = Path(run_dir)
    cfg = SupervisedConfig.from_dict(read_supervised_config(run_dir))
    state = rundir.load_checkpoint(run_dir, required=("iteration", "params"))
    if state is None:
        raise ValueError(f"{run_dir} has no checkpoint yet ({rundir.CHECKPOINT} is missing)")
    bench = make_benchmark(cfg)
    like = initial_params(cfg, bench)
    holder: dict[str, Params] = {}
    rundir.restore(run_dir, lambda st: holder.update(p=checked_params(st["params"], like)),
                   state)
    return cfg, bench, holder["p"]
