"""rkmeta-rl: gradient-based meta-learning whose meta-update is an explicit Runge-Kutta step."""

from typing import TYPE_CHECKING

from rkmeta_rl.learner import RKMetaLearner
from rkmeta_rl.methods import get_tableau
from rkmeta_rl.tableau import Tableau

if TYPE_CHECKING:  # for type checkers; at run time MetaRL is imported on first use
    from rkmeta_rl.rl.api import MetaRL

__version__ = "0.1.0"

__all__ = ["MetaRL", "RKMetaLearner", "Tableau", "get_tableau", "__version__"]


def __getattr__(name: str) -> object:
    """``rkmeta_rl.MetaRL``, the RL wing's Python API, imported on first use (the RL wing
    brings Gymnasium and MuJoCo, which a user of ``RKMetaLearner`` does not need)."""
    if name == "MetaRL":
        from rkmeta_rl.rl.api import MetaRL

        return MetaRL
    raise AttributeError(f"module 'rkmeta_rl' has no attribute {name!r}")
