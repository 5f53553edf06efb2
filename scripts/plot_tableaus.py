"""Figure 1 from the tableau data: each named tableau's stage points and slopes on a quadratic.

    python scripts/plot_tableaus.py --out docs/figures/tableaus.png

The same as ``rkmeta-rl plot tableaus`` (``rkmeta_rl/analysis/plots/tableaus.py``, where the
figure is described), kept for the commands written with the script; ``--out`` defaults into
this checkout's docs/figures/.
"""

from __future__ import annotations

import sys
from pathlib import Path

from rkmeta_rl.analysis.plots.tableaus import main

REPO = Path(__file__).resolve().parent.parent

if __name__ == "__main__":
    sys.exit(main(repo=REPO))
