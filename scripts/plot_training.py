"""Meta-training curves: return before and after adaptation against meta-iteration.

    python scripts/plot_training.py runs/nav2d-*-s* --out training.png

The same as ``rkmeta-rl plot training`` (``rkmeta_rl/analysis/plots/training.py``, where the
figure is described), kept for the commands written with the script.
"""

from __future__ import annotations

import sys

from rkmeta_rl.analysis.plots.training import main

if __name__ == "__main__":
    sys.exit(main())
