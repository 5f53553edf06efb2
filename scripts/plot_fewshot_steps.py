"""The paper's Figure 3: held-out accuracy (or loss) against the number of adaptation
steps, one curve per method, one panel per benchmark setting (e.g. Omniglot 5-way 1-shot).

    python scripts/plot_fewshot_steps.py results/omniglot/runs/* --out figure3.png
    python scripts/plot_fewshot_steps.py runs/a/eval.json runs/b/eval.json --metric loss

The same as ``rkmeta-rl plot fewshot-steps`` (``rkmeta_rl/analysis/plots/fewshot_steps.py``,
where the figure is described), kept for the commands written with the script.
"""

from __future__ import annotations

import sys

from rkmeta_rl.analysis.plots.fewshot_steps import main

if __name__ == "__main__":
    sys.exit(main())
