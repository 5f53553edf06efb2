"""Examples: ``point_env.py`` (a task env following the protocol) and ``own_env.py`` (trains
and evaluates on it). Run them from the repository root: ``python examples/own_env.py``."""
