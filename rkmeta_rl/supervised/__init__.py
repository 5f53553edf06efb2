"""Supervised meta-learning benchmarks."""
