"""Figure 5: average return on held-out tasks against the number of gradient steps.

    python scripts/plot_adaptation.py runs/*/eval*.json --out fig5.png
    python scripts/plot_adaptation.py runs/nav2d-ralston-s0 runs/nav2d-euler-s0 --out fig5.png

The same as ``rkmeta-rl plot adaptation`` (``rkmeta_rl/analysis/plots/adaptation.py``, where
the figure is described), kept for the commands written with the script.
"""

from __future__ import annotations

import sys

from rkmeta_rl.analysis.plots.adaptation import main

if __name__ == "__main__":
    sys.exit(main())
