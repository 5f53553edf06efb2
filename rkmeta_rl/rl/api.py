"""A Python API for the RL wing in the style of stable-baselines3: ``MetaRL``. It goes
through the functions the command line uses (``rkmeta_rl/rl/trainer.py``,
``rkmeta_rl/run/loop.py``, ``rkmeta_rl/run/rundir.py``, ``rkmeta_rl/rl/evaluate.py``), so
both give the same numbers."""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from rkmeta_rl.rk import Params
from rkmeta_rl.rl.adapt import adapt_to_tasks
from rkmeta_rl.rl.config import (
    TrainConfig,
    in_python_terms,
    python_settings,
    read_train_config,
    train_config,
)
from rkmeta_rl.rl.evaluate import (
    DEFAULT_EVAL_SEED,
    Alpha,
    EvalConfig,
    chosen_policy,
    evaluate_policy,
    write_eval,
)
from rkmeta_rl.rl.policy import GaussianMLPPolicy
from rkmeta_rl.rl.tasks import TaskFamily
from rkmeta_rl.rl.trainer import (
    Trainer,
    make_policy,
    prepare_run_dir,
    run_alpha,
    run_family,
    stored_config,
)
from rkmeta_rl.run import rundir, runlock
from rkmeta_rl.run.config import check_seed
from rkmeta_rl.run.loop import Callback, Record
from rkmeta_rl.tableau import Tableau


class MetaRL:
    """A meta-RL agent: a policy meta-trained with an RK meta-update and TRPO.

    Settings are resolved exactly as ``rkmeta-rl train`` resolves its flags (dataclass
    defaults, then the preset's, then those given; the task family fills the horizon, the
    episodes per task and α), so an agent with the command's settings trains what the
    command trains, metric for metric with the same ``num_threads`` on the same machine
    (docs/method.md, "Reproducibility").

    Without ``run_dir`` the agent trains in memory and writes nothing until ``save``.
    With ``run_dir`` it behaves as ``rkmeta-rl train --out RUN_DIR``: a new directory gets
    config.json, and training writes, under the directory's writer lock, a metrics.jsonl
    line, TensorBoard scalars and an atomic checkpoint after every iteration, and a
    snapshot every ``snapshot_every``; a directory holding this same run (all settings
    equal) is continued, one holding another run is refused.

    Examples:
        >>> agent = MetaRL("nav2d", meta_batch_size=4, fast_batch_size=4, hidden=[32, 32])
        >>> records = agent.learn(2, progress=False)
        >>> [r["iter"] for r in records]
        [0, 1]
    """

    def __init__(self, env: str, *, run_dir: str | Path | None = None,
                 tableau: Tableau | str | Path | None = None, **settings: Any) -> None:
        """Resolve the settings and build the policy (or continue the run in ``run_dir``).

        Args:
            env: The task family: a family name such as ``"nav2d"`` or
                ``"halfcheetah-vel"``, an import path ``"pkg.module:Class"`` or a
                registered Gymnasium id of an env with the task protocol
                (``rkmeta_rl/rl/gym_tasks.py``).
            run_dir: A run directory to train in, as ``rkmeta-rl train --out``; None
                trains in memory.
            tableau: A ``rkmeta_rl.tableau.Tableau``, or the path of a JSON tableau
                file as ``--tableau`` takes; it replaces ``method`` (which becomes its
                name).
            **settings: Any other field of ``TrainConfig``
                (``rkmeta_rl/rl/config.py``): the flags of ``rkmeta-rl train`` with ``_``
                for ``-`` (``method``, ``meta_iters``, ``meta_batch_size``,
                ``fast_batch_size``, ``hidden``, ``seed``, ``num_threads``, ...) and
                ``gamma``, ``gae_lambda``, ``init_std``. An int is taken for a float and
                a tuple for a list.

        Raises:
            ValueError: A keyword that is no setting (the message names the valid ones), a
                value of the wrong type or out of range, an env that cannot be made or
                lacks the task protocol, or a ``run_dir`` that holds another run or is in
                use by another process. Nothing is written then.
        """
        values = {"env": env, **python_settings(settings)}
        tableau_file = None
        if isinstance(tableau, Tableau):
            values.update(method=tableau.name, tableau=tableau.to_dict())
        elif tableau is not None:
            tableau_file = str(tableau)
        try:
            cfg = train_config(values, tableau_file)
        except ValueError as e:  # resolve() names flags; say the keywords given here
            raise in_python_terms(e) from None
        if run_dir is None:
            self._start(Trainer(cfg), [])
            return
        trainer = prepare_run_dir(cfg, Path(run_dir))
        trainer.writer_lock.release()  # held again while learn() writes
        trainer.writer_lock = None
        self._start(trainer, rundir.read_metrics(trainer.run_dir))

    def _start(self, trainer: Trainer, records: list[Record]) -> None:
        self._trainer = trainer
        self._records = records

    @classmethod
    def load(cls, path: str | Path) -> MetaRL:
        """An agent positioned after a run directory's last checkpoint, with its config.

        Nothing is written or locked: ``learn`` continues the run in ``path`` as
        ``rkmeta-rl train --resume PATH`` does, with the iterations an uninterrupted run
        makes; ``adapt`` and ``evaluate`` use its policy.

        Args:
            path: A run directory written by ``rkmeta-rl train``, by training with
                ``run_dir`` or by ``save``.

        Returns:
            The agent, its ``run_dir`` set to ``path``.

        Raises:
            ValueError: ``path`` is no RL run directory, its config.json or checkpoint is
                damaged or does not fit, or its device or sampler (Ray) is not available
                here.
        """
        run_dir = Path(path)
        trainer = Trainer(read_train_config(run_dir, check_device=True), run_dir)
        state = rundir.load_checkpoint(run_dir)
        if state is not None:
            rundir.restore(run_dir, trainer.load_state, state)
        records = rundir.read_metrics(run_dir, drop_torn_last_line=True)
        agent = cls.__new__(cls)
        agent._start(trainer, [r for r in records if r["iter"] < trainer.iteration])
        return agent

    @property
    def config(self) -> TrainConfig:
        """The resolved settings, as config.json records them. ``meta_iters`` is the run's
        target, which ``learn`` raises; make a new agent for other settings."""
        return self._trainer.cfg

    @property
    def policy(self) -> GaussianMLPPolicy:
        """The policy being meta-trained, a ``torch.nn.Module`` on ``config.device``
        (``rkmeta_rl/rl/policy.py``); ``learn`` updates it in place."""
        return self._trainer.policy

    @property
    def run_dir(self) -> Path | None:
        """The run directory training writes to; None in memory."""
        return self._trainer.run_dir

    @property
    def iteration(self) -> int:
        """Meta-iterations done."""
        return self._trainer.iteration

    @property
    def records(self) -> list[Record]:
        """The metrics record of every meta-iteration done, in order (as metrics.jsonl)."""
        return list(self._records)

    def __repr__(self) -> str:
        cfg = self.config
        return f"MetaRL({cfg.env!r}, method={cfg.method!r}, iteration={self.iteration})"

    def learn(self, meta_iters: int | None = None,
              callback: Callback | Sequence[Callback] | None = None,
              progress: bool = True) -> list[Record]:
        """Meta-train: continue from the iterations done.

        Iterations are counted on over calls, and every call continues the same task and
        sampling streams: ``learn(2)`` then ``learn(1)`` gives the records of ``learn(3)``.
        With a run directory each call is ``rkmeta-rl train --resume RUN_DIR --meta-iters
        N``: it takes the directory's writer lock, restores its last checkpoint (the state
        this agent left there), cuts metrics.jsonl back to it and records the new target in
        config.json.

        Args:
            meta_iters: Meta-iterations to train in this call; None trains to
                ``config.meta_iters`` (the ``meta_iters`` setting on a new agent, as
                ``rkmeta-rl train`` does; nothing once it is reached).
            callback: A callable, or a list of them, called with each iteration's metrics
                record (``iter``, ``return_pre``, ``return_post``, ``kl``, ...); one that
                returns ``False`` stops training after that iteration.
            progress: Show a progress bar on stderr.

        Returns:
            The metrics records of this call's iterations. An exception (Ctrl-C) keeps the
            iterations finished, and a later call continues as if there had been none.

        Raises:
            ValueError: ``meta_iters`` is not a positive integer, or the run directory is
                in use by another process or damaged.
            TypeError: ``callback`` is no callable or list of callables.
            rkmeta_rl.run.stopping.RunStopped: With a run directory, SIGINT or SIGTERM
                stopped training between iterations (the last checkpoint is whole).
            rkmeta_rl.rl.sampler.SamplingError: The env failed while sampling.
        """
        if meta_iters is not None and not (_is_int(meta_iters) and meta_iters > 0):
            raise ValueError(f"meta_iters must be a positive number of meta-iterations "
                             f"(None: train to config.meta_iters), got {meta_iters!r}")
        callbacks = _callbacks(callback)
        self._position(meta_iters)
        trainer, drawn = self._trainer, [self._trainer.family.rng_state()]

        def keep(record: Record) -> None:  # called first: before a callback may stop
            self._records.append(record)
            drawn[0] = trainer.family.rng_state()

        try:
            return trainer.run(progress=progress, callbacks=[keep, *callbacks])
        except BaseException:  # Ctrl-C: an unfinished iteration had drawn its tasks
            trainer.family.set_rng_state(drawn[0])
            raise

    def _position(self, meta_iters: int | None) -> None:
        """Set the target of a ``learn`` call; with a run directory, continue the run from
        there first (``--resume RUN_DIR --meta-iters N``, holding its writer lock)."""
        if self.run_dir is not None:
            rundir.continue_run(self.run_dir, self._trainer,
                                rundir.load_checkpoint(self.run_dir))
            self._records = rundir.read_metrics(self.run_dir)
        done = self.iteration
        target = max(done, self.config.meta_iters if meta_iters is None else done + meta_iters)
        if self.run_dir is None:
            self.config.meta_iters = target
        elif target != self.config.meta_iters:  # releases the lock if it fails
            rundir.change_on_resume(self.run_dir, self._trainer, meta_iters=target)

    def save(self, path: str | Path) -> Path:
        """Write the agent's run directory: config.json, metrics.jsonl and checkpoint.pt.

        Each file is written atomically (a temporary file renamed over the old one) under
        the directory's writer lock, in the format ``rkmeta-rl train`` writes, so that
        ``rkmeta-rl evaluate``, ``rkmeta-rl train --resume``,
        ``rkmeta_rl.rl.load_run`` and ``load`` read it. Snapshots and TensorBoard
        events are written only by training with a run directory.

        Args:
            path: The directory: new, empty, or holding this same run (settings equal but
                ``meta_iters``) at no more iterations than this agent's.

        Returns:
            ``path``.

        Raises:
            ValueError: ``path`` holds another run, this run further trained, or files of
                no run; or another process writes to it.
            rkmeta_rl.run.rundir.WriteError: A file could not be written (the previous
                one is intact).
            OSError: ``path`` cannot be made a directory.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        lock = runlock.WriterLock(path)
        try:
            self._check_save(path)
            rundir.write_config(path, self.config.to_dict())
            rundir.write_metrics(path, self._records)
            rundir.save_checkpoint(path, self._trainer.state())
        finally:
            lock.release()
        return path

    def _check_save(self, path: Path) -> None:
        """Refuse a ``path`` holding another run, or this run at more iterations."""
        wanted = self.config.to_dict()

        def stored() -> dict[str, Any]:
            return {**stored_config(path), "meta_iters": wanted["meta_iters"]}

        state = rundir.load_checkpoint(path) if rundir.check_new_or_same(
            path, wanted, stored) else None
        if state is not None and state["iteration"] > self.iteration:
            raise ValueError(f"{path} holds this run at iteration {state['iteration']}, "
                             f"past this agent's {self.iteration}; save to another directory")

    def adapt(self, tasks: Sequence[Mapping[str, Any]], steps: int = 1, episodes: int = 40,
              seed: int = DEFAULT_EVAL_SEED,
              alpha: Alpha | Sequence[Alpha] | None = None) -> tuple[Params, list[Tensor]]:
        """Adapt the policy to ``tasks`` with REINFORCE steps on fresh episodes.

        This is ``rkmeta_rl.rl.adapt.adapt_to_tasks`` on the CPU (docs/method.md,
        "Test-time adaptation"): step k samples from the streams of (``seed``, 0, k), as
        ``evaluate`` does, so the evaluation's ``tasks_drawn`` adapted here with the
        same settings give its returns.

        Args:
            tasks: Task dicts as the family's ``sample_tasks`` makes them, e.g.
                ``[{"goal": [0.3, -0.2]}]`` for nav2d or ``[{"velocity": 1.5}]``.
            steps: Gradient steps.
            episodes: Episodes per task and step.
            seed: The episodes' streams.
            alpha: The step size α: one number, one per parameter name, or one of those
                per step; None takes the run's (``config.alpha``, or each parameter
                group's with ``layer_methods``).

        Returns:
            The adapted parameters (name -> tensor with one row per task) and the mean
            return per task (a tensor of ``len(tasks)``) before the first step and after
            each step (``steps + 1`` of them).

        Raises:
            ValueError: No tasks, a negative ``steps``, a non-positive ``episodes``, a
                seed outside [0, 2**32) or a non-positive α.
        """
        if not tasks or not all(isinstance(t, Mapping) for t in tasks):
            raise ValueError(f"tasks must be a non-empty list of task dicts, got {tasks!r}")
        _check_meta_test(steps, episodes, seed)
        if isinstance(alpha, numbers.Real) and not (math.isfinite(alpha) and alpha > 0):
            raise ValueError(f"alpha must be a positive number, got {alpha!r}")
        policy = self._cpu_policy()
        step = run_alpha(self.config, policy) if alpha is None else alpha
        torch.set_num_threads(self._trainer.threads())
        return adapt_to_tasks(policy, run_family(self.config), [dict(t) for t in tasks], step,
                              steps, episodes, seed, self.config.gamma, self.config.gae_lambda)

    def evaluate(self, tasks: int = 40, episodes: int = 40, steps: int = 9,
                 alpha: float | None = None, protocol: str = "constant",
                 seed: int = DEFAULT_EVAL_SEED, init: str = "trained", checkpoint: str = "last",
                 out: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
        """The meta-test of ``rkmeta-rl evaluate``, in memory: no run directory needed.

        The policy is adapted to ``tasks`` held-out tasks with 0..``steps`` REINFORCE
        steps (docs/method.md, "Evaluation"). The defaults are the command's; on a saved
        run the result equals the eval.json ``rkmeta-rl evaluate`` writes with the same
        settings (in memory, ``run_dir`` is None).

        Args:
            tasks: Held-out tasks, drawn from the family seeded with ``seed``.
            episodes: Episodes per task and adaptation step.
            steps: Gradient steps (returns after 0..steps of them).
            alpha: The adaptation step; None takes the run's α.
            protocol: ``"constant"`` (α at every step) or ``"maml"`` (α, then α/2).
            seed: The held-out tasks and the episodes' streams.
            init: ``"trained"`` (this agent's policy) or ``"random"`` (the run's initial
                weights).
            checkpoint: ``"last"`` (this agent's policy); ``"best"`` or an iteration
                ``"N"`` choose a snapshot of the run directory, as ``--checkpoint``.
            out: Also write the result to this JSON file (atomically).
            progress: Show a progress bar on stderr.

        Returns:
            The evaluation, as eval.json holds it: ``run_dir`` (None in memory), the run's
            ``env``, horizon, ``method`` and ``train_seed``, ``meta_iterations``, the
            evaluation settings, ``validation`` (with ``checkpoint="best"``), ``alpha``,
            ``step_sizes``, ``tasks_drawn`` and ``by_step`` (per step: the mean, std, 95%
            interval and per-task returns).

        Raises:
            ValueError: A setting out of range or no choice, or ``checkpoint`` other than
                ``"last"`` without a run directory.
        """
        _check_meta_test(steps, episodes, seed, tasks)
        ecfg = EvalConfig(tasks=tasks, episodes=episodes, steps=steps, alpha=alpha,
                          protocol=protocol, seed=seed, init=init, checkpoint=checkpoint)
        ecfg.check()
        family = run_family(self.config)  # the meta-test's own: it is reseeded
        policy, iteration, validation = self._evaluated_policy(ecfg, family)
        torch.set_num_threads(self._trainer.threads())
        result = evaluate_policy(policy, self.config, ecfg, family, iteration, self.run_dir,
                                 validation, progress)
        if out is not None:
            write_eval(result, out)
        return result

    def _evaluated_policy(self, ecfg: EvalConfig, family: TaskFamily
                          ) -> tuple[GaussianMLPPolicy, int, dict[int, float] | None]:
        """(policy, iterations it had, validation scores) that ``ecfg`` chooses."""
        if ecfg.checkpoint != "last":
            if self.run_dir is None:
                raise ValueError(f"checkpoint {ecfg.checkpoint!r} chooses among the snapshots "
                                 "of a run directory; this agent trains in memory (give it "
                                 "run_dir, or evaluate checkpoint 'last')")
            return chosen_policy(self.run_dir, self.config, family, ecfg)
        if ecfg.init == "random":
            return make_policy(self.config, family), 0, None
        return self._cpu_policy(), self.iteration, None

    def _cpu_policy(self) -> GaussianMLPPolicy:
        """The policy, or a CPU copy of it (the meta-test samples on the CPU)."""
        if self.config.device == "cpu":
            return self.policy
        return copy.deepcopy(self.policy).to("cpu")


def _is_int(n: Any) -> bool:
    return isinstance(n, numbers.Integral) and not isinstance(n, bool)


def _check_meta_test(steps: Any, episodes: Any, seed: Any, tasks: Any = 1) -> None:
    """Integers: ``steps`` >= 0, ``episodes`` and ``tasks`` > 0, a 32-bit ``seed``."""
    for name, value, least in (("tasks", tasks, 1), ("steps", steps, 0),
                               ("episodes", episodes, 1), ("seed", seed, 0)):
        if not _is_int(value) or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    check_seed(seed, "seed")


def _callbacks(callback: Callback | Sequence[Callback] | None) -> list[Callback]:
    """``callback`` as a list of callables (TypeError for anything else)."""
    callbacks = [] if callback is None else [callback] if callable(callback) else list(callback)
    for c in callbacks:
        if not callable(c):
            raise TypeError(f"callback must be a callable or a list of them, got {c!r}")
    return callbacks
