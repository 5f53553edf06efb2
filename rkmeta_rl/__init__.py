"""rkmeta-rl: gradient-based meta-learning whose meta-update is an explicit Runge-Kutta step."""

from rkmeta_rl.config import TrainConfig
from rkmeta_rl.tableau import Tableau, get_tableau

__version__ = "0.1.0"


def load_run(path):
    """(config, meta-trained policy) of a run directory; see ``rkmeta_rl.trainer.load_run``."""
    from rkmeta_rl.trainer import load_run as _load_run

    return _load_run(path)


__all__ = ["Tableau", "TrainConfig", "get_tableau", "load_run", "__version__"]
