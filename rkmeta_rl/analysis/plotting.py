"""Matplotlib, optional (``pip install -e ".[plot]"``): imported when a figure is drawn."""

from __future__ import annotations

import argparse
from collections.abc import Callable
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


def script_main(doc: str, add_args: Callable[[argparse.ArgumentParser], None],
                draw: Callable[[argparse.ArgumentParser, argparse.Namespace], int],
                argv: list[str] | None) -> int:
    """A figure's ``scripts/plot_*.py``: its own parser (``doc`` as the description), the
    figure's flags, and its error lines."""
    p = argparse.ArgumentParser(description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_args(p)
    return draw(p, p.parse_args(argv))
