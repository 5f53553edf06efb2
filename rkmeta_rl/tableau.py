"""Butcher tableaus of the explicit Runge-Kutta meta-updates.

A meta-update in this package is one explicit Runge-Kutta step on the meta-objective,
written with the descent sign (paper Eq. 3)::

    theta_new = theta - h * sum_i a_i k_i,        k_i = grad_theta L_i(theta_i),

where the stage points are (paper Eq. 4)::

    theta_i = theta - h * sum_{j<i} q_ij k_j      (theta_1 = theta).

A method is therefore fully described by its weights ``a`` (length ``s``) and its strictly
lower-triangular stage matrix ``q`` (``s x s``); the nodes ``c_i = sum_j q_ij`` are derived.
The :class:`Tableau` here is pure data (in the spirit of diffrax's ``ButcherTableau``): it is
validated once on construction and never executes anything itself.

Named methods:

* ``euler`` (alias ``pretrain``): one stage, ``a = (1,)``. One Euler step on the summed task
  losses is multi-task pre-training (paper Example 1).
* ``midpoint`` (alias ``maml``): ``a = (0, 1)``, ``q21 = 1/2``. With the inner step size equal
  to ``h/2`` this is exactly MAML (paper Proposition 1).
* ``heun``: ``a = (1/2, 1/2)``, ``q21 = 1``.
* ``ralston``: the paper's "Ralston", ``a = (1/3, 2/3)``, ``q21 = 3/4``.
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

import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "ALIASES",
    "METHOD_NAMES",
    "Tableau",
    "euler",
    "format_table",
    "generic",
    "get_tableau",
    "heun",
    "itb",
    "load_tableau_json",
    "maml",
    "midpoint",
    "pretrain",
    "ralston",
    "ralston23",
    "rk3",
    "rk4",
]

#: Absolute tolerance of the validation checks (sum of weights, nodes).
_VALIDATION_TOL = 1e-9


def _is_sequence(value: Any) -> bool:
    """True for a non-string iterable (list, tuple, numpy array, ...)."""
    if isinstance(value, (str, bytes, bytearray, Mapping)):
        return False
    try:
        iter(value)
    except TypeError:
        return False
    return True


def _to_float(value: Any, what: str) -> float:
    """Convert one coefficient to ``float``; ``what`` names it in the error message."""
    if isinstance(value, (str, bytes, bytearray, bool)) or value is None:
        raise ValueError(f"{what} must be a real number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be a real number, got {value!r}") from exc


def _fmt_num(value: float) -> str:
    """Four significant digits, e.g. 1/3 -> '0.3333', 1 -> '1', -1 -> '-1'."""
    text = f"{value:.4g}"
    return "0" if text == "-0" else text


@dataclass(frozen=True)
class Tableau:
    """Butcher tableau of an explicit Runge-Kutta meta-update.

    The meta-update is ``theta_new = theta - h * sum_i a_i k_i`` (paper Eq. 3) with
    ``k_i = grad L_i(theta_i)`` and stage points ``theta_i = theta - h * sum_{j<i} q_ij k_j``
    (paper Eq. 4). Indices in this class are 0-based: ``q[i][j]`` with ``j < i``.

    Attributes:
        name: Method name (used in logs and ``config.json``).
        a: Weights, length ``s``; must sum to 1.
        q: ``s x s`` strictly lower-triangular stage matrix (explicit method).
        c: Nodes ``c_i = sum_j q_ij``. Derived when omitted (``None``); checked when given.

    Lists (or other sequences) are converted to tuples of floats, so instances are frozen,
    hashable and compare by value. Invalid data raises ``ValueError``.
    """

    name: str
    a: tuple[float, ...]
    q: tuple[tuple[float, ...], ...]
    c: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        name = self.name
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"tableau name must be a non-empty string, got {name!r}")

        # --- shapes ---------------------------------------------------------------------
        if not _is_sequence(self.q):
            raise ValueError(f"tableau {name!r}: q must be a list of rows, got {self.q!r}")
        q_rows = list(self.q)
        s = len(q_rows)
        if s < 1:
            raise ValueError(f"tableau {name!r}: needs at least 1 stage, got q with 0 rows")
        for i, row in enumerate(q_rows):
            if not _is_sequence(row):
                raise ValueError(
                    f"tableau {name!r}: q[{i}] must be a list of {s} numbers, got {row!r}"
                )
        q_rows = [list(row) for row in q_rows]
        for i, row in enumerate(q_rows):
            if len(row) != s:
                raise ValueError(
                    f"tableau {name!r}: q must be square ({s} x {s} for {s} rows), "
                    f"but row q[{i}] has length {len(row)}"
                )
        if not _is_sequence(self.a):
            raise ValueError(f"tableau {name!r}: a must be a list of {s} weights, got {self.a!r}")
        a_list = list(self.a)
        if len(a_list) != s:
            raise ValueError(
                f"tableau {name!r}: a has length {len(a_list)} but q is {s} x {s}; "
                f"a must have one weight per stage (length {s})"
            )

        # --- numbers ---------------------------------------------------------------------
        a = tuple(_to_float(v, f"tableau {name!r}: a[{i}]") for i, v in enumerate(a_list))
        q = tuple(
            tuple(_to_float(v, f"tableau {name!r}: q[{i}][{j}]") for j, v in enumerate(row))
            for i, row in enumerate(q_rows)
        )
        for i, v in enumerate(a):
            if not math.isfinite(v):
                raise ValueError(f"tableau {name!r}: a[{i}] = {v} is not finite")
        for i, row in enumerate(q):
            for j, v in enumerate(row):
                if not math.isfinite(v):
                    raise ValueError(f"tableau {name!r}: q[{i}][{j}] = {v} is not finite")

        # --- explicit method: q strictly lower triangular ---------------------------------
        for i, row in enumerate(q):
            for j in range(i, s):
                if row[j] != 0.0:
                    raise ValueError(
                        f"tableau {name!r} is not explicit: q[{i}][{j}] = {row[j]!r} but q "
                        f"must be strictly lower triangular (q[i][j] == 0 for j >= i)"
                    )

        # --- consistency -----------------------------------------------------------------
        total = math.fsum(a)
        if abs(total - 1.0) > _VALIDATION_TOL:
            raise ValueError(
                f"tableau {name!r}: weights a must sum to 1 (within {_VALIDATION_TOL:g}), "
                f"but sum(a) = {total!r}"
            )

        derived_c = tuple(math.fsum(row) for row in q)
        if self.c is None:
            c = derived_c
        else:
            if not _is_sequence(self.c):
                raise ValueError(f"tableau {name!r}: c must be a list of {s} nodes, got {self.c!r}")
            c_list = list(self.c)
            if len(c_list) != s:
                raise ValueError(
                    f"tableau {name!r}: c has length {len(c_list)} but there are {s} stages"
                )
            c = tuple(_to_float(v, f"tableau {name!r}: c[{i}]") for i, v in enumerate(c_list))
            for i, (given, want) in enumerate(zip(c, derived_c, strict=True)):
                if not (math.isfinite(given) and abs(given - want) <= _VALIDATION_TOL):
                    raise ValueError(
                        f"tableau {name!r}: c[{i}] = {given!r} but must equal the row sum "
                        f"sum_j q[{i}][j] = {want!r}"
                    )

        object.__setattr__(self, "a", a)
        object.__setattr__(self, "q", q)
        object.__setattr__(self, "c", c)

    # ------------------------------------------------------------------------------------
    @property
    def stages(self) -> int:
        """Number of stages ``s`` (gradient evaluations per meta-update)."""
        return len(self.a)

    def order_conditions(self) -> dict[int, list[tuple[float, float]]]:
        """Classical (Butcher) order conditions as ``{p: [(value, required), ...]}``.

        ``c_i = sum_j q_ij`` and ``A = q``:

        * p = 1: ``sum a_i = 1``
        * p = 2: ``sum a_i c_i = 1/2``
        * p = 3: ``sum a_i c_i^2 = 1/3``; ``sum a_i q_ij c_j = 1/6``
        * p = 4: ``sum a_i c_i^3 = 1/4``; ``sum a_i c_i q_ij c_j = 1/8``;
          ``sum a_i q_ij c_j^2 = 1/12``; ``sum a_i q_ij q_jk c_k = 1/24``
        """
        a, q, c = self.a, self.q, self.c
        assert c is not None
        s = self.stages
        qc = [math.fsum(q[i][j] * c[j] for j in range(s)) for i in range(s)]
        qc2 = [math.fsum(q[i][j] * c[j] ** 2 for j in range(s)) for i in range(s)]
        qqc = [math.fsum(q[i][j] * qc[j] for j in range(s)) for i in range(s)]

        def wsum(values: Iterable[float]) -> float:
            return math.fsum(ai * v for ai, v in zip(a, values, strict=True))

        return {
            1: [(math.fsum(a), 1.0)],
            2: [(wsum(c), 1.0 / 2.0)],
            3: [(wsum(ci**2 for ci in c), 1.0 / 3.0), (wsum(qc), 1.0 / 6.0)],
            4: [
                (wsum(ci**3 for ci in c), 1.0 / 4.0),
                (wsum(ci * v for ci, v in zip(c, qc, strict=True)), 1.0 / 8.0),
                (wsum(qc2), 1.0 / 12.0),
                (wsum(qqc), 1.0 / 24.0),
            ],
        }

    def order(self, tol: float = 1e-9) -> int:
        """Highest ``p`` in 1..4 such that all order conditions of orders 1..p hold.

        Returns 0 if even ``sum(a) = 1`` fails (impossible after validation). Orders above
        4 are not checked, so a higher-order method reports 4.
        """
        result = 0
        for p, conditions in sorted(self.order_conditions().items()):
            if all(abs(value - required) <= tol for value, required in conditions):
                result = p
            else:
                break
        return result

    def needs_k(self, j: int) -> bool:
        """True if ``k_j`` (0-based) enters a later stage point, i.e. ``q[i][j] != 0`` for
        some ``i > j``.

        When it is False, ``k_j`` enters the meta-update only through its weight ``a_j``
        (Eq. 3) and not through any stage point ``theta_i`` (Eq. 4); the last stage is
        never needed.
        Raises ``IndexError`` for ``j`` outside ``0..s-1``.
        """
        s = self.stages
        if isinstance(j, bool) or not isinstance(j, int) or not 0 <= j < s:
            raise IndexError(
                f"stage index j={j!r} out of range for {s}-stage tableau "
                f"{self.name!r} (valid: 0..{s - 1})"
            )
        return any(self.q[i][j] != 0.0 for i in range(j + 1, s))

    # ------------------------------------------------------------------------------------
    @classmethod
    def from_rows(cls, name: str, a: Iterable[Any], q: Iterable[Iterable[Any]]) -> Tableau:
        """Build a tableau from weights ``a`` and stage rows ``q``; ``c`` is derived."""
        if not _is_sequence(a):
            raise ValueError(f"tableau {name!r}: a must be a list of weights, got {a!r}")
        if not _is_sequence(q):
            raise ValueError(f"tableau {name!r}: q must be a list of rows, got {q!r}")
        q_rows = []
        for i, row in enumerate(q):
            if not _is_sequence(row):
                raise ValueError(f"tableau {name!r}: q[{i}] must be a list, got {row!r}")
            q_rows.append(tuple(row))
        return cls(name=name, a=tuple(a), q=tuple(q_rows))

    def to_dict(self) -> dict[str, Any]:
        """``{"name", "a", "q", "c"}`` with plain lists, JSON-serialisable."""
        assert self.c is not None
        return {
            "name": self.name,
            "a": list(self.a),
            "q": [list(row) for row in self.q],
            "c": list(self.c),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Tableau:
        """Inverse of :meth:`to_dict`. ``a`` and ``q`` are required; ``name`` defaults to
        ``"custom"``; ``c``, if present, must match the row sums of ``q``."""
        if not isinstance(d, Mapping):
            raise ValueError(f"tableau dict must be a mapping, got {type(d).__name__}")
        missing = [key for key in ("a", "q") if key not in d]
        if missing:
            raise ValueError(
                f"tableau dict is missing required key(s) {', '.join(map(repr, missing))}; "
                f"expected keys 'a', 'q' and optionally 'name', 'c'"
            )
        name = d.get("name", "custom")
        tab = cls.from_rows(name, d["a"], d["q"])
        if d.get("c") is not None:
            # re-run validation with the given nodes so a mismatch is reported
            tab = cls(name=tab.name, a=tab.a, q=tab.q, c=d["c"])
        return tab


# ----------------------------------------------------------------------------------------
# Named methods
# ----------------------------------------------------------------------------------------

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

#: Canonical method names, in display order.
METHOD_NAMES: tuple[str, ...] = (
    "euler",
    "midpoint",
    "heun",
    "ralston",
    "ralston23",
    "itb",
    "rk3",
    "rk4",
)

#: Alias -> canonical name.
ALIASES: dict[str, str] = {"pretrain": "euler", "maml": "midpoint"}

_NAMED: dict[str, Tableau] = {
    t.name: t for t in (euler, midpoint, heun, ralston, ralston23, itb, rk3, rk4)
}
assert tuple(_NAMED) == METHOD_NAMES

_GENERIC_PREFIX = "generic:"


def _valid_choices() -> str:
    by_target: dict[str, list[str]] = {}
    for alias, target in ALIASES.items():
        by_target.setdefault(target, []).append(alias)
    parts = []
    for name in METHOD_NAMES:
        aliases = by_target.get(name)
        parts.append(f"{name} ({', '.join(aliases)})" if aliases else name)
    parts.append("generic:X (X > 0)")
    return ", ".join(parts)


def generic(x: float) -> Tableau:
    """The two-stage second-order method ``a = (1 - 1/(2x), 1/(2x))``, ``q21 = x``.

    This is the corrected form of the paper's Table 1 generic row (which swaps ``a1`` and
    ``a2``). ``x`` must be a finite number > 0.
    """
    xf = _to_float(x, "generic:X parameter X")
    if not (math.isfinite(xf) and xf > 0):
        raise ValueError(f"generic:X needs a finite X > 0, got X = {x!r}")
    short = f"{xf:g}"
    label = short if float(short) == xf else repr(xf)
    a2 = 1.0 / (2.0 * xf)
    return Tableau.from_rows(f"{_GENERIC_PREFIX}{label}", a=(1.0 - a2, a2), q=((0, 0), (xf, 0)))


def get_tableau(name: str) -> Tableau:
    """Look up a method by name or alias (case-insensitive), or ``generic:X`` with ``X > 0``.

    Raises ``ValueError`` listing the valid choices for an unknown name.
    """
    if not isinstance(name, str):
        raise ValueError(
            f"method name must be a string, got {name!r}; valid choices: {_valid_choices()}"
        )
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key in _NAMED:
        return _NAMED[key]
    if key.startswith(_GENERIC_PREFIX):
        raw = key[len(_GENERIC_PREFIX) :].strip()
        try:
            x = float(raw)
        except ValueError:
            raise ValueError(
                f"invalid method {name!r}: X in generic:X must be a number > 0, got {raw!r}"
            ) from None
        if not (math.isfinite(x) and x > 0):
            raise ValueError(
                f"invalid method {name!r}: X in generic:X must be a finite number > 0, got {raw!r}"
            )
        return generic(x)
    raise ValueError(f"unknown method {name!r}; valid choices: {_valid_choices()}")


# ----------------------------------------------------------------------------------------
# Files and display
# ----------------------------------------------------------------------------------------

_JSON_KEYS = ("name", "a", "q", "c")


def load_tableau_json(path: str | os.PathLike[str]) -> Tableau:
    """Load a custom tableau from a JSON file.

    The file holds an object with ``a`` (list of weights), ``q`` (list of rows, square and
    strictly lower triangular), optionally ``name`` (default: the file stem) and optionally
    ``c`` (checked against the row sums of ``q``; it is always derived). Every problem is
    reported as ``ValueError`` naming the path.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"{p}: tableau file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{p}: cannot read tableau file: {exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{p}: invalid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(
            f"{p}: expected a JSON object with keys 'a' and 'q', got {type(data).__name__}"
        )
    unknown = sorted(set(data) - set(_JSON_KEYS))
    if unknown:
        raise ValueError(
            f"{p}: unknown key(s) {', '.join(map(repr, unknown))}; "
            f"allowed keys: 'a', 'q', 'name', 'c'"
        )
    for key in ("a", "q"):
        if key not in data:
            raise ValueError(f"{p}: missing required key {key!r}")
    a, q = data["a"], data["q"]
    name = data.get("name", p.stem)
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{p}: 'name' must be a non-empty string, got {name!r}")
    if not isinstance(a, list) or not a:
        raise ValueError(f"{p}: 'a' must be a non-empty list of numbers, got {a!r}")
    if not isinstance(q, list) or not all(isinstance(row, list) for row in q):
        raise ValueError(f"{p}: 'q' must be a list of rows (lists of numbers), got {q!r}")
    for key, values in [("a", a)] + [(f"q[{i}]", row) for i, row in enumerate(q)]:
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"{p}: {key!r} must contain only numbers, got {v!r}")
    s = len(q)
    bad_rows = [i for i, row in enumerate(q) if len(row) != s]
    if s == 0 or bad_rows:
        lengths = [len(row) for row in q]
        raise ValueError(
            f"{p}: 'q' must be square (s x s with s = number of rows = {s}), "
            f"got row lengths {lengths}"
        )
    c = data.get("c")
    if c is not None and not isinstance(c, list):
        raise ValueError(f"{p}: 'c' must be a list of numbers, got {c!r}")
    try:
        return Tableau(name=name, a=tuple(a), q=tuple(tuple(row) for row in q), c=c)
    except ValueError as exc:
        raise ValueError(f"{p}: {exc}") from exc


def format_table(tableaus: Iterable[Tableau] | None = None) -> str:
    """Plain-text aligned table with columns name, stages, order, a, c.

    Coefficients are shown with 4 significant digits (``1/3`` -> ``0.3333``). With
    ``tableaus=None`` all named methods are listed, aliases noted in parentheses, followed
    by a line describing the ``generic:X`` family. Backs the ``rkmeta-rl methods`` command.
    """
    list_all = tableaus is None
    items = [_NAMED[n] for n in METHOD_NAMES] if list_all else list(tableaus)
    by_target: dict[str, list[str]] = {}
    for alias, target in ALIASES.items():
        by_target.setdefault(target, []).append(alias)

    header = ("name", "stages", "order", "a", "c")
    rows = [header]
    for tab in items:
        is_named = _NAMED.get(tab.name) == tab
        aliases = by_target.get(tab.name) if is_named else None
        label = f"{tab.name} ({', '.join(aliases)})" if aliases else tab.name
        assert tab.c is not None
        rows.append(
            (
                label,
                str(tab.stages),
                str(tab.order()),
                "(" + ", ".join(_fmt_num(v) for v in tab.a) + ")",
                "(" + ", ".join(_fmt_num(v) for v in tab.c) + ")",
            )
        )
    widths = [max(len(row[k]) for row in rows) for k in range(len(header))]
    right = {1, 2}  # numeric columns

    def render(row: tuple[str, ...]) -> str:
        cells = [
            cell.rjust(widths[k]) if k in right else cell.ljust(widths[k])
            for k, cell in enumerate(row)
        ]
        return "  ".join(cells).rstrip()

    lines = [render(rows[0]), "  ".join("-" * w for w in widths)]
    lines.extend(render(row) for row in rows[1:])
    if list_all:
        lines.append("")
        lines.append("generic:X (X > 0): 2 stages, order 2, a = (1 - 1/(2X), 1/(2X)), c = (0, X)")
    return "\n".join(lines)
