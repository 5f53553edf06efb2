"""What a Butcher tableau of an explicit Runge-Kutta meta-update is.

A meta-update in this package is one explicit Runge-Kutta step on the meta-objective,
written with the descent sign (paper Eq. 3)::

    theta_new = theta - h * sum_i a_i k_i,        k_i = grad_theta L_i(theta_i),

where the stage points are (paper Eq. 4)::

    theta_i = theta - h * sum_{j<i} q_ij k_j      (theta_1 = theta).

A method is therefore fully described by its weights ``a`` (length ``s``) and its strictly
lower-triangular stage matrix ``q`` (``s x s``); the nodes ``c_i = sum_j q_ij`` are derived.
The :class:`Tableau` here is pure data (in the spirit of diffrax's ``ButcherTableau``): it is
validated once, in ``__post_init__``, and never executes anything itself. Every other way in
(:meth:`Tableau.from_rows`, :meth:`Tableau.from_dict`, :func:`load_tableau_json`) goes through
that one validation.

The methods the package names (``euler``, ``maml``, ``rk4``, ``generic:X``, ...) live in
:mod:`rkmeta_rl.methods`; see docs/method.md, "Tableaus (Table 1, corrected)".
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Tableau", "load_tableau_json", "real_number"]

#: Absolute tolerance of the validation checks (sum of weights, nodes).
_VALIDATION_TOL = 1e-9

#: Keys of a tableau dict / JSON file; ``a`` and ``q`` are required.
_KEYS = ("a", "q", "name", "c")
_KEYS_TEXT = "'a', 'q' and optionally 'name', 'c'"


def _is_sequence(value: Any) -> bool:
    """True for a non-string iterable (list, tuple, numpy array, ...)."""
    if isinstance(value, (str, bytes, bytearray, Mapping)):
        return False
    try:
        iter(value)
    except TypeError:
        return False
    return True


def real_number(value: Any, what: str) -> float:
    """``value`` as a ``float``; strings, booleans and ``None`` are refused.

    ``what`` names the value in the ``ValueError``. Finiteness is not checked here.
    """
    if not isinstance(value, (str, bytes, bytearray, bool)) and value is not None:
        try:
            return float(value)
        except (TypeError, ValueError, OverflowError):
            pass
    raise ValueError(f"{what} must be a real number, got {value!r}")


def _finite(value: Any, what: str) -> float:
    number = real_number(value, what)
    if not math.isfinite(number):
        raise ValueError(f"{what} = {number} is not finite")
    return number


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
    hashable and compare by value. Invalid data raises a one-line ``ValueError`` naming the
    tableau and the offending field, e.g. ``tableau 'x': q[1][0] must be a real number``.
    """

    name: str
    a: tuple[float, ...]
    q: tuple[tuple[float, ...], ...]
    c: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"tableau name must be a non-empty string, got {self.name!r}")
        where = f"tableau {self.name!r}"
        q = _stage_matrix(self.q, where)
        s = len(q)
        if not _is_sequence(self.a):
            raise ValueError(f"{where}: a must be a list of {s} weights, got {self.a!r}")
        a_list = list(self.a)
        if len(a_list) != s:
            raise ValueError(
                f"{where}: a has length {len(a_list)} but q is {s} x {s}; "
                f"a must have one weight per stage (length {s})"
            )
        a = tuple(_finite(v, f"{where}: a[{i}]") for i, v in enumerate(a_list))
        total = math.fsum(a)
        if abs(total - 1.0) > _VALIDATION_TOL:
            raise ValueError(
                f"{where}: weights a must sum to 1 (within {_VALIDATION_TOL:g}), "
                f"but sum(a) = {total!r}"
            )
        c = tuple(math.fsum(row) for row in q)
        if self.c is not None:
            _check_nodes(self.c, c, where)
        object.__setattr__(self, "a", a)
        object.__setattr__(self, "q", q)
        object.__setattr__(self, "c", c)

    @property
    def stages(self) -> int:
        """Number of stages ``s`` (gradient evaluations per meta-update)."""
        return len(self.a)

    def order_conditions(self) -> dict[int, list[tuple[float, float]]]:
        """Classical (Butcher) order conditions.

        With ``c_i = sum_j q_ij`` and ``A = q``:

        * p = 1: ``sum a_i = 1``
        * p = 2: ``sum a_i c_i = 1/2``
        * p = 3: ``sum a_i c_i^2 = 1/3``; ``sum a_i q_ij c_j = 1/6``
        * p = 4: ``sum a_i c_i^3 = 1/4``; ``sum a_i c_i q_ij c_j = 1/8``;
          ``sum a_i q_ij c_j^2 = 1/12``; ``sum a_i q_ij q_jk c_k = 1/24``

        Returns:
            ``{p: [(value, required), ...]}`` for p = 1..4.
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
        """The order the tableau reaches.

        Args:
            tol: absolute tolerance of each order condition.

        Returns:
            The highest ``p`` in 1..4 such that all order conditions of orders 1..p hold;
            0 if even ``sum(a) = 1`` fails (impossible after validation). Orders above 4
            are not checked, so a higher-order method reports 4.
        """
        result = 0
        for p, conditions in sorted(self.order_conditions().items()):
            if not all(abs(value - required) <= tol for value, required in conditions):
                break
            result = p
        return result

    def needs_k(self, j: int) -> bool:
        """Whether ``k_j`` enters a later stage point.

        When it does not, ``k_j`` enters the meta-update only through its weight ``a_j``
        (Eq. 3) and not through any stage point ``theta_i`` (Eq. 4); the last stage is
        never needed.

        Args:
            j: the stage, 0-based.

        Returns:
            True if ``q[i][j] != 0`` for some ``i > j``.

        Raises:
            IndexError: ``j`` is outside ``0..s-1``.
        """
        s = self.stages
        if isinstance(j, bool) or not isinstance(j, int) or not 0 <= j < s:
            raise IndexError(
                f"stage index j={j!r} out of range for {s}-stage tableau "
                f"{self.name!r} (valid: 0..{s - 1})"
            )
        return any(self.q[i][j] != 0.0 for i in range(j + 1, s))

    @classmethod
    def from_rows(cls, name: str, a: Iterable[Any], q: Iterable[Iterable[Any]]) -> Tableau:
        """Build a tableau from its weights and stage rows; ``c`` is derived.

        Args:
            name: the method's name.
            a: the weights, one per stage.
            q: the stage rows, square and strictly lower triangular.

        Returns:
            The validated tableau.

        Raises:
            ValueError: the data is not a valid explicit tableau.
        """
        return cls(name=name, a=a, q=q)  # type: ignore[arg-type]  # converted on validation

    def to_dict(self) -> dict[str, Any]:
        """The tableau as plain data.

        Returns:
            ``{"name", "a", "q", "c"}`` with plain lists, JSON-serialisable.
        """
        assert self.c is not None
        return {
            "name": self.name,
            "a": list(self.a),
            "q": [list(row) for row in self.q],
            "c": list(self.c),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Tableau:
        """Inverse of :meth:`to_dict`.

        Args:
            d: a mapping with ``a`` and ``q`` (required); ``name`` defaults to
                ``"custom"``; ``c``, if present (and not ``None``), must match the row sums
                of ``q``.

        Returns:
            The validated tableau.

        Raises:
            ValueError: ``d`` is not a mapping, has another key, misses ``a`` or ``q``, or
                holds an invalid tableau.
        """
        if not isinstance(d, Mapping):
            raise ValueError(
                f"a tableau must be a mapping with keys {_KEYS_TEXT}, got {type(d).__name__}"
            )
        unknown = sorted(set(d) - set(_KEYS), key=str)
        if unknown:
            raise ValueError(
                f"unknown key(s) {', '.join(map(repr, unknown))}; allowed keys: {_KEYS_TEXT}"
            )
        missing = [key for key in ("a", "q") if key not in d]
        if missing:
            raise ValueError(
                f"tableau is missing required key {' and '.join(map(repr, missing))}; "
                f"expected keys {_KEYS_TEXT}"
            )
        return cls(name=d.get("name", "custom"), a=d["a"], q=d["q"], c=d.get("c"))


def _stage_matrix(q: Any, where: str) -> tuple[tuple[float, ...], ...]:
    """``q`` as a square, strictly lower-triangular tuple of finite floats."""
    if not _is_sequence(q):
        raise ValueError(f"{where}: q must be a list of rows, got {q!r}")
    rows = list(q)
    s = len(rows)
    if s < 1:
        raise ValueError(f"{where}: needs at least 1 stage, got q with 0 rows")
    for i, row in enumerate(rows):
        if not _is_sequence(row):
            raise ValueError(f"{where}: q[{i}] must be a list of {s} numbers, got {row!r}")
    rows = [list(row) for row in rows]
    for i, row in enumerate(rows):
        if len(row) != s:
            raise ValueError(
                f"{where}: q must be square ({s} x {s} for {s} rows), "
                f"but row q[{i}] has length {len(row)}"
            )
    matrix = tuple(
        tuple(_finite(v, f"{where}: q[{i}][{j}]") for j, v in enumerate(row))
        for i, row in enumerate(rows)
    )
    for i, row in enumerate(matrix):
        for j in range(i, s):
            if row[j] != 0.0:
                raise ValueError(
                    f"{where} is not explicit: q[{i}][{j}] = {row[j]!r} but q "
                    f"must be strictly lower triangular (q[i][j] == 0 for j >= i)"
                )
    return matrix


def _check_nodes(given: Any, derived: tuple[float, ...], where: str) -> None:
    """Check user-given nodes ``c`` against the row sums of ``q``."""
    s = len(derived)
    if not _is_sequence(given):
        raise ValueError(f"{where}: c must be a list of {s} nodes, got {given!r}")
    nodes = list(given)
    if len(nodes) != s:
        raise ValueError(f"{where}: c has length {len(nodes)} but there are {s} stages")
    for i, (value, want) in enumerate(zip(nodes, derived, strict=True)):
        node = real_number(value, f"{where}: c[{i}]")
        if not (math.isfinite(node) and abs(node - want) <= _VALIDATION_TOL):
            raise ValueError(
                f"{where}: c[{i}] = {node!r} but must equal the row sum sum_j q[{i}][j] = {want!r}"
            )


def load_tableau_json(path: str | os.PathLike[str]) -> Tableau:
    """Load a custom tableau from a JSON file.

    The file holds an object with ``a`` (list of weights), ``q`` (list of rows, square and
    strictly lower triangular), optionally ``name`` (default: the file stem) and optionally
    ``c`` (checked against the row sums of ``q``; it is always derived). The object goes
    through :meth:`Tableau.from_dict`; every problem is a ``ValueError`` prefixed with the
    path, e.g. ``my.json: tableau 'x': q[1][0] must be a real number, got 'a'``.
    """
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{p}: tableau file not found") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{p}: invalid JSON: {exc}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{p}: cannot read tableau file: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(
            f"{p}: expected a JSON object with keys {_KEYS_TEXT}, got {type(data).__name__}"
        )
    try:
        return Tableau.from_dict({"name": p.stem, **data})
    except ValueError as exc:
        raise ValueError(f"{p}: {exc}") from exc
