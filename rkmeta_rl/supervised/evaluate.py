"""Meta-test evaluation of a supervised run: adapt to held-out tasks, report mean ± 95% CI.

Held-out tasks come from the benchmark's test stream (fresh sinusoids, held-out Omniglot
characters, MiniImagenet's test classes), drawn with a fixed seed so every run meets the
same tasks. Each is adapted with plain gradient steps of α on its support set; the query
loss (MSE or cross-entropy) and accuracy are recorded after 0..steps steps. For Omniglot,
``runs`` also scores the 20 standard 20-way one-shot runs (``all_runs.zip``): each run is
one task whose support set is its 20 training drawings and whose queries are its 20 test
drawings.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from rkmeta_rl.layer_methods import method_of
from rkmeta_rl.run import rundir
from rkmeta_rl.run.config import check_seed
from rkmeta_rl.stats import summarize
from rkmeta_rl.supervised.fewshot import FewShotBatch
from rkmeta_rl.supervised.omniglot import load_one_shot_runs
from rkmeta_rl.supervised.trainer import adapted_scores, load_supervised_run

DEFAULT_TEST_SEED = 20170309  # training draws from --seed: keep the two apart
CHUNK = 50  # tasks adapted at once (bounds memory at 20-way)


def _check(name: str, value: int | float | None, minimum: float) -> None:
    if value is not None and not value >= minimum:
        raise ValueError(f"--{name} must be >= {minimum:g}, got {value}")


def one_shot_batch(runs) -> FewShotBatch:
    """The standard runs as tasks: support = training drawings (label = their index)."""
    xs = torch.stack([r.train for r in runs])  # (R, W, 1, S, S)
    ys = torch.arange(xs.shape[1]).expand(len(runs), -1)
    return FewShotBatch(xs, ys, torch.stack([r.test for r in runs]),
                        torch.stack([r.labels for r in runs]))


def _by_step(losses: list[torch.Tensor], accs: list[torch.Tensor]) -> list[dict[str, Any]]:
    steps = []
    for k, loss in enumerate(losses):
        row: dict[str, Any] = {"step": k, "loss": summarize(loss)}
        if accs:
            row["accuracy"] = summarize(accs[k])
        steps.append(row)
    return steps


def evaluate_supervised_run(run_dir: str | Path, out: str | Path | None = None, *,
                            tasks: int | None = None, steps: int | None = None,
                            alpha: float | None = None, seed: int | None = None,
                            runs: str | Path | None = None) -> dict[str, Any]:
    """Adapt the run's meta-parameters to held-out tasks; write and return the result."""
    _check("tasks", tasks, 1)
    _check("steps", steps, 0)
    if alpha is not None and not (alpha > 0 and alpha < float("inf")):
        raise ValueError(f"--alpha must be a positive number, got {alpha}")
    seed = DEFAULT_TEST_SEED if seed is None else seed
    check_seed(seed)
    cfg, bench, theta = load_supervised_run(run_dir)
    if runs is not None and cfg.benchmark != "omniglot":
        raise ValueError(f"--runs scores Omniglot's one-shot runs; {run_dir} is {cfg.benchmark}")
    one_shot = _load_runs(cfg, runs) if runs is not None else None  # fail before the work
    tasks = cfg.test_tasks if tasks is None else tasks
    steps = cfg.test_steps if steps is None else steps
    if alpha is None:  # the run's own: one α, or one per parameter group
        alpha = method_of(cfg, theta)[2]
    g = torch.Generator().manual_seed(seed)
    losses: list[list[torch.Tensor]] = [[] for _ in range(steps + 1)]
    accs: list[list[torch.Tensor]] = [[] for _ in range(steps + 1)]
    for start in range(0, tasks, CHUNK):
        batch = bench.test(min(CHUNK, tasks - start), g)
        chunk_losses, chunk_accs = adapted_scores(bench, theta, batch, alpha, steps)
        for k in range(steps + 1):
            losses[k].append(chunk_losses[k])
            if chunk_accs:
                accs[k].append(chunk_accs[k])
    result: dict[str, Any] = {
        "run_dir": str(run_dir), "benchmark": cfg.benchmark, "method": cfg.method,
        "ways": cfg.ways, "shots": cfg.shots, "queries": cfg.queries, "tasks": tasks,
        "steps": steps, "alpha": alpha, "seed": seed,
        "by_step": _by_step([torch.cat(v) for v in losses],
                            [torch.cat(v) for v in accs] if accs[0] else []),
    }
    method = cfg.method if cfg.layer_methods is None else f"layers {cfg.layer_methods}"
    shown = f"{alpha:g}" if not isinstance(alpha, dict) else "per group " + ", ".join(
        f"{v:g}" for v in sorted(set(alpha.values())))
    summary = [f"{method}: {tasks} held-out tasks, α = {shown}"]
    for row in result["by_step"]:
        text = f"  after {row['step']} steps: loss {_pm(row['loss'])}"
        if "accuracy" in row:
            text += f", accuracy {_pm(row['accuracy'], 100)} %"
        summary.append(text)
    if one_shot is not None:
        result["one_shot_runs"] = _score_runs(bench, theta, one_shot, str(runs), alpha, steps)
        summary.append(f"  20 standard one-shot runs after {steps} steps: accuracy "
                       f"{_pm(result['one_shot_runs']['accuracy'], 100)} %")
    result["summary"] = summary
    if out is not None:
        text = json.dumps(result, indent=1).encode()
        rundir.atomic_write_bytes(Path(out), lambda f: f.write(text))
    return result


def _load_runs(cfg, path):
    runs = load_one_shot_runs(path)
    ways = runs[0].train.shape[0]
    if cfg.ways != ways:
        raise ValueError(f"the one-shot runs in {path} are {ways}-way but the model was "
                         f"trained {cfg.ways}-way; score them with a {ways}-way run")
    return runs


def _score_runs(bench, theta, runs, path: str, alpha: float | dict[str, float], steps: int
                ) -> dict[str, Any]:
    _, accs = adapted_scores(bench, theta, one_shot_batch(runs), alpha, steps)
    return {"path": path, "runs": len(runs), "steps": steps, "accuracy": summarize(accs[-1]),
            "accuracy_by_step": [float(a.mean()) for a in accs]}


def _pm(s: dict[str, Any], scale: float = 1.0) -> str:
    lo, hi = s["ci95"]
    return f"{scale * s['mean']:.4g} ± {scale * (hi - lo) / 2:.2g}"
