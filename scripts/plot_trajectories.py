"""Figure 4: paths of the adapted policy toward one goal after 0, 1, ... gradient steps.

    python scripts/plot_trajectories.py runs/nav2d-ralston-s0 runs/nav2d-euler-s0 --out fig4.png

The same as ``rkmeta-rl plot trajectories`` (``rkmeta_rl/analysis/plots/trajectories.py``,
where the figure is described), kept for the commands written with the script.
"""

from __future__ import annotations

import sys

from rkmeta_rl.analysis.plots.trajectories import main

if __name__ == "__main__":
    sys.exit(main())
