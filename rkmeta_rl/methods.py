"""Which tableaus the package names: the named methods, their aliases, lookup and display.

What a tableau *is* (data, validation, order conditions, JSON files) lives in
:mod:`rkmeta_rl.tableau`; see docs/method.md, "Tableaus (Table 1, corrected)", for the derivations.

* ``euler`` (alias ``pretrain``): one stage, ``a = (1,)``. One Euler step on the summed task
  losses is multi-task pre-training (paper Example 1).
* ``midpoint`` (alias ``maml``): ``a = (0, 1)``, ``q21 = 1/2``. With the inner step size equal
  to ``h/2`` this is exactly MAML (paper Proposition 1).
* ``heun``: ``a = (1/2, 1/2)``, ``q21 = 1``.
* ``ralston``: the paper's "Ralston", i.e. ``generic:X`` at ``X = 3/4``:
  ``a = (1/3, 2/3)``, ``q21 = 3/4``.
* ``ralston23``: Ralston's minimum-error second-order method, ``a = (1/4, 3/4)``,
  ``q21 = 2/3``.
* ``itb``: ``a = (2/3, 1/3)``, ``q21 = 3/2``.
* ``generic:X`` for ``X > 0``: the one-parameter family of two-stage second-order methods,
  ``a = (1 - 1/(2X), 1/(2X))``, ``q21 = X``. The paper's Table 1 has ``a1``/``a2`` swapped in
  its generic row; this module uses the corrected weights (``generic:0.5`` is ``midpoint``,
  ``generic:1`` is ``heun``).
* ``rk3``: Kutta's third-order method.
* ``rk4``: the classic fourth-order method.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from rkmeta_rl.tableau import Tableau, real_number

__all__ = [
    "ALIASES",
    "METHOD_NAMES",
    "euler",
    "format_table",
    "generic",
    "get_tableau",
    "heun",
    "itb",
    "maml",
    "midpoint",
    "pretrain",
    "ralston",
    "ralston23",
    "rk3",
    "rk4",
]

euler = Tableau.from_rows("euler", a=(1,), q=((0,),))
midpoint = Tableau.from_rows("midpoint", a=(0, 1), q=((0, 0), (0.5, 0)))
heun = Tableau.from_rows("heun", a=(0.5, 0.5), q=((0, 0), (1, 0)))
ralston = Tableau.from_rows("ralston", a=(1 / 3, 2 / 3), q=((0, 0), (0.75, 0)))
ralston23 = Tableau.from_rows("ralston23", a=(0.25, 0.75), q=((0, 0), (2 / 3, 0)))
itb = Tableau.from_rows("itb", a=(2 / 3, 1 / 3), q=((0, 0), (1.5, 0)))
rk3 = Tableau.from_rows(
    "rk3",
    a=(1 / 6, 2 / 3, 1 / 6),
    q=((0, 0, 0), (0.5, 0, 0), (-1, 2, 0)),
)
rk4 = Tableau.from_rows(
    "rk4",
    a=(1 / 6, 1 / 3, 1 / 3, 1 / 6),
    q=((0, 0, 0, 0), (0.5, 0, 0, 0), (0, 0.5, 0, 0), (0, 0, 1, 0)),
)

#: Alias for multi-task pre-training (paper Example 1).
pretrain = euler
#: Alias for MAML (paper Proposition 1).
maml = midpoint

_NAMED: dict[str, Tableau] = {
    t.name: t for t in (euler, midpoint, heun, ralston, ralston23, itb, rk3, rk4)
}

#: Canonical method names, in display order.
METHOD_NAMES: tuple[str, ...] = tuple(_NAMED)

#: Alias -> canonical name.
ALIASES: dict[str, str] = {"pretrain": "euler", "maml": "midpoint"}

#: Canonical name -> its aliases (the inverse of ``ALIASES``).
_ALIASES_OF: dict[str, tuple[str, ...]] = {
    name: tuple(alias for alias, target in ALIASES.items() if target == name)
    for name in METHOD_NAMES
}

_GENERIC_PREFIX = "generic:"


def _label(name: str) -> str:
    """``name``, followed by its aliases in parentheses if it has any."""
    aliases = _ALIASES_OF.get(name)
    return f"{name} ({', '.join(aliases)})" if aliases else name


_VALID_CHOICES = ", ".join([*map(_label, METHOD_NAMES), "generic:X (X > 0)"])


def generic(x: float) -> Tableau:
    """The two-stage second-order method ``a = (1 - 1/(2x), 1/(2x))``, ``q21 = x``.

    This is the corrected form of the paper's Table 1 generic row (which swaps ``a1`` and
    ``a2``). ``x`` must be a finite number > 0.
    """
    xf = real_number(x, "generic:X parameter X")
    if not (math.isfinite(xf) and xf > 0):
        raise ValueError(f"generic:X needs a finite X > 0, got X = {x!r}")
    short = f"{xf:g}"
    label = short if float(short) == xf else repr(xf)
    a2 = 1.0 / (2.0 * xf)
    return Tableau.from_rows(f"{_GENERIC_PREFIX}{label}", a=(1.0 - a2, a2), q=((0, 0), (xf, 0)))


def get_tableau(name: str) -> Tableau:
    """Look up a method by name or alias (case-insensitive), or ``generic:X`` with ``X > 0``.

    Args:
        name: a named method (``rkmeta-rl methods`` lists them), an alias such as ``maml``,
            or ``generic:X``.

    Returns:
        The method's tableau.

    Raises:
        ValueError: an unknown name (the message lists the valid choices), or a
            ``generic:X`` whose X is not a finite number > 0.
    """
    if not isinstance(name, str):
        raise ValueError(
            f"method name must be a string, got {name!r}; valid choices: {_VALID_CHOICES}"
        )
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key in _NAMED:
        return _NAMED[key]
    if key.startswith(_GENERIC_PREFIX):
        raw = key[len(_GENERIC_PREFIX) :].strip()
        try:
            return generic(float(raw))
        except ValueError:
            raise ValueError(
                f"invalid method {name!r}: X in generic:X must be a finite number > 0, got {raw!r}"
            ) from None
    raise ValueError(f"unknown method {name!r}; valid choices: {_VALID_CHOICES}")


def _fmt_num(value: float) -> str:
    """Four significant digits, e.g. 1/3 -> '0.3333', 1 -> '1', -1 -> '-1'."""
    text = f"{value:.4g}"
    return "0" if text == "-0" else text


def _fmt_vector(values: Iterable[float]) -> str:
    return "(" + ", ".join(map(_fmt_num, values)) + ")"


def format_table(tableaus: Iterable[Tableau] | None = None) -> str:
    """Plain-text aligned table with columns name, stages, order, a, c.

    Coefficients are shown with 4 significant digits (``1/3`` -> ``0.3333``). With
    ``tableaus=None`` all named methods are listed, aliases noted in parentheses, followed
    by a line describing the ``generic:X`` family. Backs the ``rkmeta-rl methods`` command.
    """
    list_all = tableaus is None
    items = list(_NAMED.values()) if list_all else list(tableaus or ())
    header = ("name", "stages", "order", "a", "c")
    rows = [header]
    for tab in items:
        assert tab.c is not None
        label = _label(tab.name) if _NAMED.get(tab.name) == tab else tab.name
        rows.append(
            (label, str(tab.stages), str(tab.order()), _fmt_vector(tab.a), _fmt_vector(tab.c))
        )
    widths = [max(len(row[k]) for row in rows) for k in range(len(header))]
    right = {1, 2}  # numeric columns

    def render(row: tuple[str, ...]) -> str:
        cells = [
            cell.rjust(widths[k]) if k in right else cell.ljust(widths[k])
            for k, cell in enumerate(row)
        ]
        return "  ".join(cells).rstrip()

    lines = [render(header), "  ".join("-" * w for w in widths)]
    lines.extend(render(row) for row in rows[1:])
    if list_all:
        lines.append("")
        lines.append("generic:X (X > 0): 2 stages, order 2, a = (1 - 1/(2X), 1/(2X)), c = (0, X)")
    return "\n".join(lines)
