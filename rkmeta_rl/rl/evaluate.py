"""Meta-test evaluation (Figure 5): adapt a run's policy to held-out tasks, 0..K steps.

The held-out tasks are drawn from the run's task family seeded with the evaluation seed,
so every run (and the goal-conditioned oracle) meets the same goals. At each step the
adapted policies sample ``episodes`` fresh episodes per task (step k's from the streams of
(evaluation seed, 0, k), ``rkmeta_rl/rl/streams.py``); the mean return per task
is recorded and then one REINFORCE step is taken (of α, or with the MAML test protocol
α first and α/2 after). The result is written to ``eval.json`` next to the run.
:func:`evaluate_policy` is the evaluation itself, of any policy in memory;
:func:`evaluate_run` chooses a run directory's policy, evaluates it and writes the result.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from rkmeta_rl.rl.adapt import adapt_to_tasks
from rkmeta_rl.rl.config import TrainConfig, read_train_config
from rkmeta_rl.rl.episodes import Episodes
from rkmeta_rl.rl.policy import GaussianMLPPolicy
from rkmeta_rl.rl.tasks import ORACLE_ENVS, TaskFamily
from rkmeta_rl.rl.trainer import checkpoint_policy, make_policy, run_alpha, run_family
from rkmeta_rl.run import rundir
from rkmeta_rl.run.config import check_seed
from rkmeta_rl.run.flags import check_choices, setting
from rkmeta_rl.run.progress import ProgressBar
from rkmeta_rl.stats import summarize

PROTOCOLS = {"constant": "α at every step", "maml": "α at the first step, α/2 after"}
INITS = {"trained": "the run's meta-trained weights", "random": "the run's initial weights"}
CHECKPOINTS = {"last": "the last checkpoint",
               "best": "the snapshot (or last checkpoint) with the highest mean return after "
                       "one step on validation tasks, as MAML kept its best iteration",
               "N": "the snapshot of iteration N"}
DEFAULT_EVAL_SEED = 20170309  # held-out goals: no training run draws tasks from this stream
VALIDATION_SEED = 20170310  # validation goals for --checkpoint best, apart from the test goals


@dataclass(frozen=True)
class EvalConfig:
    """The evaluate command's settings (its flags are generated from them: rkmeta_rl.run.flags)."""

    tasks: int = setting(40, help="held-out tasks")
    # the paper's 40 samples
    episodes: int = setting(40, help="episodes per task and adaptation step")
    steps: int = setting(9, help="gradient steps (returns after 0..STEPS of them)")
    alpha: float | None = setting(None, help="adaptation step [the run's α]")
    protocol: str = setting("constant", choices=PROTOCOLS,
                            help="; ".join(f"{k}: {v}" for k, v in PROTOCOLS.items()))
    seed: int = setting(DEFAULT_EVAL_SEED, help="held-out tasks and sampling")
    init: str = setting("trained", choices=INITS,
                        help="; ".join(f"{k}: {v}" for k, v in INITS.items()))
    # a CHECKPOINTS key or an iteration with a snapshot
    checkpoint: str = setting("last", help="; ".join(f"{k}: {v}" for k, v in CHECKPOINTS.items()))

    def check(self) -> None:
        """Raise ValueError naming the bad value and the valid choices."""
        for name in ("tasks", "episodes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name} must be > 0, got {getattr(self, name)}")
        if self.steps < 0:
            raise ValueError(f"--steps must be >= 0, got {self.steps}")
        if self.alpha is not None and not (math.isfinite(self.alpha) and self.alpha > 0):
            raise ValueError(f"--alpha must be a positive number, got {self.alpha}")
        check_choices(self)  # --protocol, --init
        if self.checkpoint not in ("last", "best") and not self.checkpoint.isdigit():
            raise ValueError(f"--checkpoint must be last, best or an iteration N with a "
                             f"snapshot, got {self.checkpoint!r}")
        if self.init == "random" and self.checkpoint != "last":
            raise ValueError(f"--checkpoint {self.checkpoint} chooses trained weights; "
                             "--init random has none")
        check_seed(self.seed)

    def default_filename(self) -> str:
        """eval.json, with -random / -maml for the non-default policy and protocol."""
        parts = ["eval"]
        if self.init != "trained":
            parts.append(self.init)
        if self.protocol != "constant":
            parts.append(self.protocol)
        if self.checkpoint != "last":
            parts.append(self.checkpoint if self.checkpoint == "best"
                         else f"iter{int(self.checkpoint)}")
        return "-".join(parts) + ".json"


Alpha = float | dict[str, float]  # one step size, or one per parameter


def step_sizes(alpha: Alpha, steps: int, protocol: str) -> list[Alpha]:
    """The adaptation step of each gradient step under ``protocol``."""
    def half(a: Alpha) -> Alpha:
        return {n: v / 2 for n, v in a.items()} if isinstance(a, dict) else a / 2

    if protocol == "maml":
        return [alpha if k == 0 else half(alpha) for k in range(steps)]
    return [alpha] * steps


def held_out_tasks(family: TaskFamily, n: int, seed: int, test: bool = True) -> list[dict]:
    """``n`` tasks drawn from ``family``'s own task stream seeded with ``seed``: its test
    tasks (``test``; Meta-World's test set, the training distribution elsewhere) or, for
    validation, its training tasks."""
    family.seed(seed)
    return family.sample_test_tasks(n) if test else family.sample_tasks(n)


def evaluation_policy(run_dir: Path, init: str, cfg: TrainConfig | None = None,
                      family: TaskFamily | None = None, checkpoint: str = "last"
                      ) -> tuple[TrainConfig, GaussianMLPPolicy, int]:
    """(config, policy, meta-iterations it had) for ``init`` "trained" (from the last
    checkpoint, or the snapshot of iteration ``checkpoint``) or "random"; ``cfg`` and
    ``family``: the run's, when the caller has them already."""
    if cfg is None:
        cfg = read_train_config(run_dir)
    if family is None:
        family = run_family(cfg)
    if init == "random":
        return cfg, make_policy(cfg, family), 0
    if checkpoint == "last":
        return cfg, *checkpoint_policy(run_dir, cfg, family)
    iteration = int(checkpoint)
    state = rundir.load_snapshot(run_dir, iteration)
    policy = make_policy(cfg, family)
    rundir.restore(run_dir, lambda st: policy.load_state_dict(st["policy"]), state,
                   rundir.snapshot_path(run_dir, iteration).relative_to(run_dir).as_posix())
    return cfg, policy, iteration


def validation_scores(run_dir: Path, cfg: TrainConfig, family: TaskFamily,
                      ecfg: EvalConfig) -> tuple[dict[int, float], int]:
    """Mean return after one step of α on ``ecfg.tasks`` validation tasks (their own seed,
    not the test goals'), per snapshot and for the last checkpoint; and the last
    checkpoint's iteration."""
    iterations = rundir.snapshot_iterations(run_dir)
    _, last, done = evaluation_policy(run_dir, "trained", cfg, family)
    tasks = held_out_tasks(family, ecfg.tasks, VALIDATION_SEED, test=False)
    scores = {}
    for it in sorted({*iterations, done}):
        policy = last if it == done else evaluation_policy(run_dir, "trained", cfg, family,
                                                           str(it))[1]
        alpha = run_alpha(cfg, policy) if ecfg.alpha is None else ecfg.alpha
        _, returns = adapt_to_tasks(policy, family, tasks, [alpha], 1, ecfg.episodes,
                                    VALIDATION_SEED,
                                    cfg.gamma, cfg.gae_lambda)
        scores[it] = float(returns[1].mean())
    return scores, done


def chosen_policy(run_dir: Path, cfg: TrainConfig, family: TaskFamily, ecfg: EvalConfig
                  ) -> tuple[GaussianMLPPolicy, int, dict[int, float] | None]:
    """(policy, meta-iterations it had, validation scores or None) that ``ecfg`` chooses
    from the run: ``init`` and ``checkpoint``, "best" picked by :func:`validation_scores`."""
    chosen, validation = ecfg.checkpoint, None
    if chosen == "best":
        validation, done = validation_scores(run_dir, cfg, family, ecfg)
        best = max(validation, key=lambda it: (validation[it], it))
        chosen = "last" if best == done else str(best)
    _, policy, iteration = evaluation_policy(run_dir, ecfg.init, cfg, family, chosen)
    return policy, iteration, validation


def evaluate_policy(policy: GaussianMLPPolicy, cfg: TrainConfig, ecfg: EvalConfig,
                    family: TaskFamily, iteration: int, run_dir: Path | None = None,
                    validation: dict[int, float] | None = None, progress: bool = True
                    ) -> dict[str, Any]:
    """Adapt ``policy`` (on the CPU; a run's, config ``cfg``, after ``iteration``
    meta-iterations) to ``ecfg``'s held-out tasks of ``family`` (reseeded here: give it a
    family the run does not train with); the evaluation eval.json holds. ``ecfg`` is
    checked by the caller; ``run_dir`` (None: a policy in memory) and ``validation`` (the
    scores of ``checkpoint best``) are recorded as they are."""
    tasks = held_out_tasks(family, ecfg.tasks, ecfg.seed)
    alpha = run_alpha(cfg, policy) if ecfg.alpha is None else ecfg.alpha
    alphas = step_sizes(alpha, ecfg.steps, ecfg.protocol)
    bar = ProgressBar(ecfg.steps + 1) if progress else None

    def on_step(k: int, returns: Tensor, _params) -> None:
        if bar is not None:
            bar.update(k + 1, step=k, mean_return=float(returns.mean()))

    success: list[Tensor] = []  # (T,) per step, where the env reports success

    def on_episodes(k: int, episodes: Episodes) -> None:
        if episodes.success is not None:
            success.append(episodes.task_success())

    _, returns = adapt_to_tasks(policy, family, tasks, alphas, ecfg.steps, ecfg.episodes,
                                ecfg.seed, cfg.gamma, cfg.gae_lambda, on_step=on_step,
                                on_episodes=on_episodes)
    return {
        "run_dir": None if run_dir is None else str(run_dir),
        "env": cfg.env,
        **horizon_record(cfg, family),
        "method": cfg.method if cfg.layer_methods is None else f"layers {cfg.layer_methods}",
        "first_order": cfg.first_order,
        "train_seed": cfg.seed,
        "meta_iterations": iteration,
        **asdict(ecfg),
        "validation": None if validation is None else {
            "seed": VALIDATION_SEED, "after_one_step": {str(k): v for k, v in validation.items()}},
        "alpha": alpha,
        "step_sizes": alphas,
        "tasks_drawn": [{k: np.asarray(v).tolist() for k, v in t.items()} for t in tasks],
        "by_step": [{"step": k, **summarize(r)} for k, r in enumerate(returns)],
        **success_record(success, [family.task_class(t) for t in tasks]),
    }


def success_record(success: list[Tensor], classes: list[str | None]) -> dict[str, Any]:
    """``success_by_step``: per step the success rate over the tasks (mean, 95% interval
    over tasks) and, where tasks come in classes (Meta-World ML10/ML45), each class's;
    nothing where the env reports no success."""
    if not success:
        return {}
    rows = []
    for k, rates in enumerate(success):
        row = {"step": k, **summarize(rates)}
        if all(c is not None for c in classes):
            row["by_class"] = {c: float(rates[[i for i, x in enumerate(classes) if x == c]]
                                        .mean()) for c in sorted(set(classes))}
        rows.append(row)
    return {"success_by_step": rows}


def write_eval(result: dict[str, Any], path: str | Path) -> None:
    """Write an evaluation (:func:`evaluate_policy`) to ``path`` atomically."""
    text = (json.dumps(result, indent=1) + "\n").encode()
    rundir.atomic_write_bytes(Path(path), lambda f: f.write(text))


def evaluate_run(run_dir: str | Path, ecfg: EvalConfig = EvalConfig(),
                 out: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Adapt the run's policy to the held-out tasks; write and return the evaluation."""
    ecfg.check()
    run_dir = Path(run_dir)
    cfg = read_train_config(run_dir)
    family = run_family(cfg)
    policy, iteration, validation = chosen_policy(run_dir, cfg, family, ecfg)
    result = evaluate_policy(policy, cfg, ecfg, family, iteration, run_dir, validation,
                             progress)
    write_eval(result, out if out is not None else run_dir / ecfg.default_filename())
    return result


def horizon_record(cfg: TrainConfig, family: TaskFamily) -> dict[str, Any]:
    """The dynamics and the horizon in steps and, where the env has a clock, in seconds."""
    seconds = family.seconds_per_step
    return {"dynamics": cfg.dynamics, "max_episode_steps": cfg.max_episode_steps,
            "seconds_per_step": seconds,
            "episode_seconds": None if seconds is None else seconds * cfg.max_episode_steps}


def describe_horizon(record: dict[str, Any]) -> str:
    """'maml dynamics, 200 steps = 2 s' from a :func:`horizon_record` (or a config.json
    with ``seconds_per_step``); records made before it existed give ''."""
    steps, seconds = record.get("max_episode_steps"), record.get("seconds_per_step")
    if steps is None:
        return ""
    if seconds is None:
        return f"{steps}-step episodes"
    dynamics = record.get("dynamics") or "gymnasium"
    return f"{dynamics} dynamics, {steps} steps × {seconds:g} s = {steps * seconds:g} s"


def read_eval(path: str | Path) -> dict[str, Any]:
    """An ``eval.json`` written by :func:`evaluate_run` (ValueError if it is not one)."""
    path = Path(path)
    data = rundir.read_json(path, "evaluation file (run rkmeta-rl evaluate first)")
    if not isinstance(data, dict) or not isinstance(data.get("by_step"), list):
        raise ValueError(f"{path} is not an evaluation file (no 'by_step' list)")
    for key in ("env", "method", "init"):
        if not isinstance(data.get(key), str):
            raise ValueError(f"{path} is not an evaluation file ('{key}' is not a string)")
    for k, row in enumerate(data["by_step"]):
        ci = row.get("ci95") if isinstance(row, dict) else None
        if not (isinstance(ci, list) and len(ci) == 2 and all(_is_number(x) for x in ci)
                and _is_number(row.get("mean"))):
            raise ValueError(f"{path} is not an evaluation file (by_step[{k}] needs a number "
                             "'mean' and a two-number 'ci95')")
    if not data["by_step"]:
        raise ValueError(f"{path} is not an evaluation file ('by_step' is empty)")
    return data


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def label_of(evaluation: dict[str, Any]) -> str:
    """The curve an evaluation belongs to: its method, "random init" or "oracle"."""
    if evaluation["init"] == "random":
        return "random init"
    if evaluation["env"] in ORACLE_ENVS:
        return "oracle"
    return evaluation["method"] + ("-fo" if evaluation.get("first_order") else "")


def format_row(row: dict[str, Any]) -> str:
    """A row of :func:`combine_seeds` as "mean ± half-width of its 95% interval"."""
    lo, hi = row["ci95"]
    return f"{row['mean']:.1f} ± {(hi - lo) / 2:.1f}"


def combine_seeds(evaluations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per step: mean over runs (seeds) of their mean returns and a t-based 95% interval
    across runs; a single run keeps its own interval across tasks."""
    if not evaluations:
        raise ValueError("no evaluations to combine")
    steps = min(len(e["by_step"]) for e in evaluations)
    rows = []
    for k in range(steps):
        if len(evaluations) == 1:
            s = evaluations[0]["by_step"][k]
            mean, ci = s["mean"], s["ci95"]
        else:
            s = summarize([e["by_step"][k]["mean"] for e in evaluations])
            mean, ci = s["mean"], s["ci95"]
        rows.append({"step": k, "mean": mean, "ci95": ci, "runs": len(evaluations)})
    return rows
