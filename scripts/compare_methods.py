"""Each method against a baseline method, paired on the same seeds and held-out tasks.

    python scripts/compare_methods.py runs/reproduce-locomotion/halfcheetah-vel-* \\
        --eval-file eval-maml.json --baseline midpoint --steps 0,1,2,3

The same as ``rkmeta-rl compare`` (``rkmeta_rl/analysis/compare.py``, where the method is
described), kept for the commands written with the script.
"""

from __future__ import annotations

import sys

from rkmeta_rl.analysis.compare import main

if __name__ == "__main__":
    sys.exit(main())
