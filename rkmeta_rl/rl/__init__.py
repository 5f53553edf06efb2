"""The reinforcement-learning wing: task families, policy, REINFORCE adaptation, the RK-TRPO
meta-step, training, evaluation and rendering. ``load_run`` reads a trained run back."""

from rkmeta_rl.rl.trainer import load_run

__all__ = ["load_run"]
