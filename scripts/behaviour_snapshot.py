"""Run a fixed set of tiny commands (every RL family, both wings, evaluate and
supervised-evaluate) and keep what they wrote, without timing fields, to compare a
restructure's outputs with the code before it:

    python scripts/behaviour_snapshot.py ../snap-before   # on the old commit
    python scripts/behaviour_snapshot.py ../snap-after    # on the new one
    diff -r ../snap-before ../snap-after                  # nothing: the same behaviour

Each command runs on one torch thread (``--num-threads 1``), so the outputs are one
function of the code on a given machine. Omniglot needs its data (``--omniglot``,
default ``../shared/data/omniglot``); it is skipped, saying so, where the folder is missing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--meta-iters", "2", "--meta-batch-size", "3", "--fast-batch-size", "2",
        "--hidden", "16,16", "--num-threads", "1", "--no-progress"]
EVAL = ["--tasks", "3", "--episodes", "2", "--steps", "2", "--num-threads", "1",
        "--no-progress"]
RL_RUNS = {
    "nav2d-midpoint": ["--env", "nav2d", "--method", "midpoint"],
    "nav2d-rk3-fraction": ["--env", "nav2d", "--method", "rk3", "--curvature-fraction", "0.5"],
    "nav2d-layers": ["--env", "nav2d", "--layer-methods", "w2=midpoint,*=frozen:midpoint"],
    "nav2d-first-order": ["--env", "nav2d", "--method", "heun", "--first-order"],
    "halfcheetah-vel": ["--env", "halfcheetah-vel", "--max-episode-steps", "20"],
    "halfcheetah-dir-maml": ["--env", "halfcheetah-dir", "--dynamics", "maml",
                             "--max-episode-steps", "20"],
    "ant-vel": ["--env", "ant-vel", "--max-episode-steps", "20"],
    "ant-dir-maml": ["--env", "ant-dir", "--dynamics", "maml", "--max-episode-steps", "20"],
    "ant-goal": ["--env", "ant-goal", "--max-episode-steps", "20", "--method", "euler"],
    "own-env": ["--env", "examples.point_env:PointEnv", "--max-episode-steps", "20"],
}
SUPERVISED_RUNS = {
    "sinusoid": ["--benchmark", "sinusoid", "--meta-iters", "20", "--log-every", "5",
                 "--eval-every", "10", "--hidden", "8,8"],
    "sinusoid-layers": ["--benchmark", "sinusoid", "--meta-iters", "10", "--log-every", "5",
                        "--hidden", "8,8", "--layer-methods", "layers.2=midpoint,*=ralston"],
}
OMNIGLOT = ["--benchmark", "omniglot", "--ways", "5", "--meta-iters", "2", "--log-every",
            "1", "--meta-batch-size", "2", "--filters", "4", "--eval-tasks", "2",
            "--test-tasks", "3"]


def cli(*args: str) -> None:
    cmd = [sys.executable, "-m", "rkmeta_rl.cli", *args]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr}")


def keep(run: Path, out: Path) -> None:
    """metrics.jsonl without timing fields, and every eval*.json without its run
    directory, into ``out``."""
    out.mkdir(parents=True)
    lines = [json.dumps({k: v for k, v in json.loads(line).items()
                         if not k.startswith("seconds")}, sort_keys=True)
             for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    (out / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    for path in sorted(run.glob("eval*.json")):  # less the temporary run directory's path
        result = {k: v for k, v in json.loads(path.read_text()).items() if k != "run_dir"}
        (out / path.name).write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="a new folder for the outputs")
    p.add_argument("--omniglot", type=Path, default=ROOT.parent / "shared/data/omniglot")
    args = p.parse_args()
    args.out.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name, extra in RL_RUNS.items():
            run = Path(tmp) / name
            cli("train", *extra, *TINY, "--out", str(run))
            cli("evaluate", str(run), *EVAL)
            keep(run, args.out / name)
        runs = dict(SUPERVISED_RUNS)
        if args.omniglot.is_dir():
            runs["omniglot"] = [*OMNIGLOT, "--data", str(args.omniglot)]
        else:
            print(f"skipped omniglot: {args.omniglot} is not a folder")
        for name, extra in runs.items():
            run = Path(tmp) / name
            cli("supervised", *extra, "--num-threads", "1", "--no-progress", "--out", str(run))
            cli("supervised-evaluate", str(run), "--tasks", "4", "--num-threads", "1")
            keep(run, args.out / name)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
