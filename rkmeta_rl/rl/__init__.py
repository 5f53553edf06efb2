"""Reinforcement-learning pieces: episodes, baseline, losses, sampler, the RK-TRPO meta-step."""
