"""Meta-train on your own environment, then evaluate it: ``python examples/own_env.py``.

The env is ``examples/point_env.py``'s ``PointEnv``, named to rkmeta-rl by its import path
``examples.point_env:PointEnv``. The script does in Python, with
:class:`rkmeta_rl.rl.api.MetaRL`, what these two commands do from the repository root
(where that module path starts):

    python -m rkmeta_rl.cli train --env examples.point_env:PointEnv --max-episode-steps 20 ...
    python -m rkmeta_rl.cli evaluate RUN_DIR ...

It writes the same run directory (``--out``) and eval.json in it; run again with the same
flags, it finds the run finished and only evaluates it. The defaults took 10-13 s on a
2-core AMD EPYC (2026-12-06; the two commands run as subprocesses took 21 s): a problem
this small trains on one torch thread (``num_threads`` 0 decides by its size;
docs/guides/threads.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the repository root
# ``examples.point_env`` is a module path from the repository root: put the root on the
# path, as ``python -m`` run from there would (``python examples/own_env.py`` puts
# examples/ there instead).
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from rkmeta_rl.rl.api import MetaRL  # noqa: E402  (after the path is set)

ENV = "examples.point_env:PointEnv"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/point-env-example"),
                   help="run directory (relative to the current directory)")
    p.add_argument("--iters", type=int, default=20, help="meta-iterations")
    p.add_argument("--tasks", type=int, default=10, help="tasks per meta-batch and at test")
    p.add_argument("--episodes", type=int, default=10, help="episodes per task")
    p.add_argument("--steps", type=int, default=3, help="adaptation steps at test")
    args = p.parse_args(argv)
    out = args.out.resolve()
    agent = MetaRL(ENV, max_episode_steps=20, method="ralston", meta_iters=args.iters,
                   meta_batch_size=args.tasks, fast_batch_size=args.episodes,
                   hidden=[32, 32], run_dir=out)
    print(f"training {ENV} in {out} (iteration {agent.iteration}/{args.iters})", flush=True)
    records = agent.learn(progress=False)  # to meta_iters: nothing left if already done
    if records:
        last = records[-1]
        print(f"final: return_pre {last['return_pre']:.2f} return_post "
              f"{last['return_post']:.2f}")
    result = agent.evaluate(tasks=args.tasks, episodes=args.episodes, steps=args.steps,
                            out=out / "eval.json", progress=False)
    means = [round(row["mean"], 2) for row in result["by_step"]]
    print(f"mean return on {args.tasks} held-out goals after 0..{args.steps} steps: {means}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
