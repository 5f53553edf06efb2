"""rkmeta-rl: gradient-based meta-learning whose meta-update is an explicit Runge-Kutta step."""

from rkmeta_rl.learner import RKMetaLearner
from rkmeta_rl.methods import get_tableau
from rkmeta_rl.tableau import Tableau

__version__ = "0.1.0"

__all__ = ["RKMetaLearner", "Tableau", "get_tableau", "__version__"]
