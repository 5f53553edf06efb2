"""Meta-training loop: RK-TRPO meta-iterations, run directory, checkpoints, logging.

A trainer that writes holds its run directory's writer lock (``runlock.WriterLock``) from
``prepare_run_dir``/``resume_run`` until ``run()`` ends; SIGINT/SIGTERM stop ``run()``
between iterations (``rkmeta_rl.run.stopping``).

Devices: sampling always runs on the CPU, for every family, whatever ``--device``: the
physics (MuJoCo, a Gymnasium env) lives there, and nav2d follows the same path so that the
episodes are one function of (θ, tasks, streams) for every device and sampler (local or
Ray): a CUDA run samples what a CPU run at the same θ samples, and nav2d's sampling is a
small share of its iteration next to the meta-step, which runs on ``--device``.
:meth:`Trainer.sample_on_cpu` is the one hand-off: per-task parameters to the CPU, the
stage's episodes back to the device once.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

import torch

from rkmeta_rl.layer_methods import method_of
from rkmeta_rl.rk import Params, Scheme
from rkmeta_rl.rl.config import TrainConfig, read_train_config, resolve
from rkmeta_rl.rl.episodes import Episodes
from rkmeta_rl.rl.meta_step import TRPOStepResult, meta_step, rk_weights
from rkmeta_rl.rl.policy import GaussianMLPPolicy
from rkmeta_rl.rl.sampler import LocalSampler, Sampler
from rkmeta_rl.rl.streams import StreamKey
from rkmeta_rl.rl.tasks import TaskFamily, make_family
from rkmeta_rl.run import loop, rundir, runlock
from rkmeta_rl.run.config import torch_threads
from rkmeta_rl.run.loop import Callback
from rkmeta_rl.tableau import Tableau


def run_family(cfg: TrainConfig, device: str | torch.device = "cpu") -> TaskFamily:
    """The task family a run trains on: its env, horizon and dynamics."""
    return make_family(cfg.env, device, cfg.max_episode_steps, cfg.dynamics)


def make_policy(cfg: TrainConfig, family: TaskFamily) -> GaussianMLPPolicy:
    torch.manual_seed(cfg.seed)  # initial weights are drawn on the CPU for every device
    return GaussianMLPPolicy(family.obs_dim, family.act_dim, cfg.hidden, cfg.init_std)


def run_method(cfg: TrainConfig, policy: GaussianMLPPolicy
               ) -> tuple[Tableau | Scheme, float | None]:
    """The run's RK method over the policy's parameters (``layer_methods.method_of``), for
    TRPO: per-group weights are refused (ValueError)."""
    tableau, h, _ = method_of(cfg, policy.params())
    rk_weights(tableau)  # TRPO's one objective exists
    return tableau, h


def run_alpha(cfg: TrainConfig, policy: GaussianMLPPolicy) -> float | dict[str, float]:
    """The run's test-time step: α, or each parameter's α with ``--layer-methods``."""
    return method_of(cfg, policy.params())[2]


def metrics_record(it: int, res: TRPOStepResult, seconds: float) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "iter": it,
        "return_pre": res.return_pre,
        "return_post": res.return_post,
        "kl": res.kl,
        "surrogate_improvement": res.surrogate_improvement,
        "expected_improvement": res.expected_improvement,
        "line_search_steps": res.line_search_steps,
        "accepted": res.accepted,
        "rejected": res.rejected,
        "seconds": seconds,
    }
    for i, r in enumerate(res.stage_returns):
        rec[f"return_stage{i + 1}"] = r
    if res.success_pre is not None:  # envs reporting success (Meta-World)
        rec["success_pre"], rec["success_post"] = res.success_pre, res.success_post
    for k, v in res.seconds.items():
        rec[f"seconds_{k}"] = v
    return rec


def make_sampler(cfg: TrainConfig, family: TaskFamily, run_dir: Path | None = None) -> Sampler:
    """The sampler ``cfg.sampler`` names (a run's config): local over ``family``, or Ray
    workers building the family themselves (Ray's logs go to ``run_dir``)."""
    if cfg.sampler == "ray":
        from rkmeta_rl.rl.ray_sampler import RaySampler  # Ray is an optional extra
        return RaySampler(cfg.env, cfg.max_episode_steps, cfg.dynamics, cfg.hidden,
                          cfg.workers, cfg.ray_address, run_dir)
    return LocalSampler(family)


class Trainer:
    """Holds a run's policy, task stream, sampler and directory; ``run()`` trains to the
    end (``rkmeta_rl.run.loop``). ``run_dir`` None trains in memory: nothing is written.
    ``sampler``: the one ``cfg.sampler`` names when None (``make_sampler``)."""

    def __init__(self, cfg: TrainConfig, run_dir: Path | None = None,
                 sampler: Sampler | None = None) -> None:
        self.cfg = cfg
        self.run_dir = None if run_dir is None else Path(run_dir)  # None: train in memory
        self.family = run_family(cfg)  # sampling runs on the CPU (module docstring)
        self.sample_episodes = (sampler if sampler is not None
                                else make_sampler(cfg, self.family, self.run_dir))
        self.family.seed(cfg.seed)
        self.policy = make_policy(cfg, self.family).to(cfg.device)
        self.tableau, self.h = run_method(cfg, self.policy)
        self.iteration = 0
        self.writer_lock: runlock.WriterLock | None = None

    # -- state ---------------------------------------------------------------
    def state(self, iteration: int | None = None) -> dict[str, Any]:
        """Everything a resume needs, as tensors and plain data (``iteration``: the count
        of finished iterations to record, by default the current one). The sampling
        streams need nothing: they are a function of (seed, iteration, stage)."""
        return {
            "iteration": self.iteration if iteration is None else iteration,
            "policy": self.policy.state_dict(),
            "task_rng": self.family.rng_state(),
            "config": self.cfg.to_dict(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore ``state`` (a checkpoint from before the streams also holds a torch
        generator's state, which is not needed and ignored)."""
        self.policy.load_state_dict(state["policy"])
        self.family.set_rng_state(state["task_rng"])
        self.iteration = state["iteration"]  # a count: checked by rundir.load_checkpoint

    # -- one iteration -------------------------------------------------------
    def sample_on_cpu(self, params: Params, tasks: list[dict], key: StreamKey) -> Episodes:
        """The device hand-off: ``params`` (per task, on ``cfg.device``) go to the CPU,
        the sampler runs there, its episodes come back to ``cfg.device`` in one move."""
        cpu = {n: v.detach().to("cpu") for n, v in params.items()}
        episodes = self.sample_episodes(self.policy, cpu, tasks, self.cfg.fast_batch_size, key)
        return episodes.to(self.cfg.device)

    def sampler(self, tasks: list[dict]) -> Callable[[int, Params], Episodes]:
        """``sample(stage, params)`` for this iteration's ``tasks``: the streams of
        (seed, iteration, stage)."""
        def sample(stage: int, params: Params) -> Episodes:
            return self.sample_on_cpu(params, tasks,
                                      StreamKey(self.cfg.seed, self.iteration, stage))
        return sample

    def meta_step(self, tasks: list[dict]) -> TRPOStepResult:
        """One RK-TRPO meta-step on ``tasks`` (θ is updated in place if accepted)."""
        return meta_step(self.policy, self.sampler(tasks), len(tasks), self.tableau, self.h,
                         self.cfg)

    def step(self) -> dict[str, Any]:
        """Draw the meta-batch's tasks, take one meta-step, return its metrics record."""
        t0 = time.perf_counter()
        res = self.meta_step(self.family.sample_tasks(self.cfg.meta_batch_size))
        if res.rejected:
            warnings.warn(f"iteration {self.iteration}: step rejected ({res.rejected}); θ kept",
                          RuntimeWarning, stacklevel=2)
        return metrics_record(self.iteration, res, time.perf_counter() - t0)

    def save_snapshot(self, done: int) -> None:
        """The policy after ``done`` iterations, every ``snapshot_every`` of them (written
        before the checkpoint that counts them, so a resumed run never lacks one)."""
        every = self.cfg.snapshot_every
        if every and done % every == 0 and self.run_dir is not None:
            rundir.save_snapshot(self.run_dir, done, self.policy.state_dict())

    # -- the loop (rkmeta_rl.run.loop) ----------------------------------------
    def run(self, progress: bool = True, callbacks: Iterable[Callback] = ()
            ) -> list[dict[str, Any]]:
        """Train to ``meta_iters``; the records written. With a run directory it raises
        ``RunStopped`` on SIGINT/SIGTERM; a callback returning False stops training."""
        return loop.train(self, progress, callbacks)

    @property
    def total(self) -> int:
        return self.cfg.meta_iters

    def record(self, rec: dict[str, Any], done: int) -> dict[str, Any]:
        return rec  # every iteration is written

    def shown(self, rec: dict[str, Any]) -> dict[str, float]:
        shown = {"pre": rec["return_pre"], "post": rec["return_post"], "kl": rec["kl"]}
        if "success_post" in rec:
            shown.update(success_pre=rec["success_pre"], success_post=rec["success_post"])
        return shown

    def start(self) -> None:
        self._sampler_call("start")  # Ray's workers, where the run samples on Ray

    def close(self) -> None:
        self._sampler_call("close")  # and the instance it started

    def threads(self, requested: int | None = None) -> int:
        """Torch threads for ``requested`` (the run's ``num_threads`` by default): with 0,
        one for a small problem (``config.torch_threads``), judged by one policy pass over
        a stage's steps: 2 × T × E × H × Σ (inputs × outputs) FLOPs."""
        sizes = (self.policy.obs_dim, *self.policy.hidden, self.policy.act_dim)
        steps = self.cfg.meta_batch_size * self.cfg.fast_batch_size * \
            self.family.max_episode_steps
        flops = 2.0 * steps * sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        return torch_threads(self.cfg.num_threads if requested is None else requested, flops)

    def _sampler_call(self, name: str) -> None:
        """The sampler's optional ``start()`` or ``close()``."""
        method = getattr(self.sample_episodes, name, None)
        if method is not None:
            method()


def stored_config(run_dir: Path) -> dict[str, Any]:
    """The run's config.json re-resolved, as a dict (a setting added since it was written
    compares by its default)."""
    return resolve(read_train_config(run_dir)).to_dict()


def prepare_run_dir(cfg: TrainConfig, run_dir: Path) -> Trainer:
    """Create ``run_dir`` for ``cfg``, or continue it if it holds this same run.

    A directory holding a different run is refused (nothing is overwritten), and so is one
    that another process is training in.
    """
    run_dir = Path(run_dir)
    return rundir.open_run(run_dir, cfg.to_dict(), partial(stored_config, run_dir),
                           new=lambda: Trainer(cfg, run_dir),
                           resume=lambda: resume_run(run_dir))


def resume_run(run_dir: Path, meta_iters: int | None = None,
               num_threads: int | None = None) -> Trainer:
    """A Trainer positioned after the run's last checkpoint (its own config), holding the
    directory's writer lock; ``meta_iters`` extends the run, ``num_threads`` overrides the
    run's for this process (:func:`rkmeta_rl.run.rundir.change_on_resume`)."""
    run_dir = Path(run_dir)
    cfg = read_train_config(run_dir, check_device=True)
    state = rundir.load_checkpoint(run_dir)
    trainer = rundir.continue_run(run_dir, Trainer(cfg, run_dir), state)
    rundir.change_on_resume(run_dir, trainer, meta_iters, num_threads)
    return trainer


def checkpoint_policy(run_dir: Path, cfg: TrainConfig, family: TaskFamily
                      ) -> tuple[GaussianMLPPolicy, int]:
    """(policy, meta-iterations done) from the run's last checkpoint (one read)."""
    state = rundir.load_checkpoint(run_dir)
    if state is None:
        raise ValueError(f"{run_dir} has no checkpoint yet ({rundir.CHECKPOINT} is missing)")
    policy = make_policy(cfg, family)
    rundir.restore(run_dir, lambda st: policy.load_state_dict(st["policy"]), state)
    return policy, int(state["iteration"])


def load_run(path: str | Path) -> tuple[TrainConfig, GaussianMLPPolicy]:
    """The config and meta-trained policy of a run directory, from its last checkpoint.

    Args:
        path: the run directory (``rkmeta-rl train --out``, or ``MetaRL.save``).

    Returns:
        ``(config, policy)``: the run's resolved ``TrainConfig`` and its
        ``GaussianMLPPolicy``.

    Raises:
        ValueError: not a run directory, or a file in it missing or malformed.
    """
    run_dir = Path(path)
    cfg = read_train_config(run_dir)
    return cfg, checkpoint_policy(run_dir, cfg, run_family(cfg))[0]
