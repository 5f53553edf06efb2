"""Held-out return after 0..K adaptation steps at every snapshot of some training runs, and
at the snapshot that ``evaluate --checkpoint best`` picks.

    python scripts/study_snapshots.py runs/reproduce-nav2d-h/nav2d-midpoint-s* \\
        --reference "MAML=-40.4,-11.7,-3.3,-3.2" --out results/nav2d-gap/snapshots

The same as ``rkmeta-rl snapshots`` (``rkmeta_rl/analysis/snapshots.py``, where the
study is described), kept for the commands written with the script; the evaluations run
in the repository root.
"""

from __future__ import annotations

from pathlib import Path

from rkmeta_rl.analysis.snapshots import main
from rkmeta_rl.run.arguments import run_script

REPO = Path(__file__).resolve().parent.parent

if __name__ == "__main__":
    run_script(lambda: main(cwd=REPO))
