"""Sinusoid adaptation: trained runs' predictions after 0, 1 and 10 gradient steps.

    python scripts/plot_sinusoid_adaptation.py runs/sin-midpoint runs/sin-ralston \\
        --out docs/figures/sinusoid-adaptation.png

The same as ``rkmeta-rl plot sinusoid-adaptation``
(``rkmeta_rl/analysis/plots/sinusoid_adaptation.py``, where the figure is described), kept
for the commands written with the script; ``--out`` defaults into this checkout's
docs/figures/.
"""

from __future__ import annotations

import sys
from pathlib import Path

from rkmeta_rl.analysis.plots.sinusoid_adaptation import main

REPO = Path(__file__).resolve().parent.parent

if __name__ == "__main__":
    sys.exit(main(repo=REPO))
