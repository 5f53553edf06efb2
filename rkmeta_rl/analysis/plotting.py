"""Matplotlib, optional (``pip install -e ".[plot]"``): imported when a figure is drawn."""

from __future__ import annotations

from types import ModuleType


def pyplot() -> ModuleType:
    """``matplotlib.pyplot`` on the Agg backend (files, no display); without matplotlib a
    ValueError, one line naming the install command."""
    try:
        import matplotlib
    except ImportError:
        raise ValueError('drawing the figures needs matplotlib: pip install -e ".[plot]"'
                         ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt
