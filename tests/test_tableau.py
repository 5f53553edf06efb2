"""Tests for rkmeta_rl.tableau (what a tableau is) and rkmeta_rl.methods (the named ones).

The order of every tableau is checked against an *independent* measurement: the test
integrates nonlinear ODEs with known exact solutions using its own explicit RK loop and
reads off the empirical convergence order of the global error (halving the step size).
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from rkmeta_rl import methods
from rkmeta_rl.methods import ALIASES, METHOD_NAMES, format_table, get_tableau
from rkmeta_rl.tableau import Tableau, load_tableau_json

# ----------------------------------------------------------------------------------------
# Independent empirical order measurement
# ----------------------------------------------------------------------------------------


def _rk_step(f, t, y, h, a, q):
    """One explicit RK step y_{n+1} = y_n + h sum a_i k_i, k_i = f(t + c_i h, Y_i)."""
    s = len(a)
    ks = []
    for i in range(s):
        ci = sum(q[i][:i])
        yi = [y[m] + h * sum(q[i][j] * ks[j][m] for j in range(i)) for m in range(len(y))]
        ks.append(f(t + ci * h, yi))
    return [y[m] + h * sum(a[i] * ks[i][m] for i in range(s)) for m in range(len(y))]


def _global_error(problem, a, q, n_steps):
    f, y0, t_end, exact = problem
    h = t_end / n_steps
    y, t = list(y0), 0.0
    for _ in range(n_steps):
        y = _rk_step(f, t, y, h, a, q)
        t += h
    return max(abs(u - v) for u, v in zip(y, exact(t_end), strict=True))


# y' = 1 + y^2, y(0) = 0  ->  y = tan(t)          (scalar, autonomous, nonlinear)
# (kept to t <= 0.5, well away from the pole at pi/2, so the error is in its asymptotic regime)
_TAN = (lambda t, y: [1.0 + y[0] ** 2], [0.0], 0.5, lambda t: [math.tan(t)])

# y' = -2 t y^2, y(0) = 1  ->  y = 1 / (1 + t^2)  (non-autonomous: exercises the nodes c)
_NONAUT = (
    lambda t, y: [-2.0 * t * y[0] ** 2],
    [1.0],
    2.0,
    lambda t: [1.0 / (1.0 + t * t)],
)


def _kepler(t, y):
    x1, x2, v1, v2 = y
    r3 = (x1 * x1 + x2 * x2) ** 1.5
    return [v1, v2, -x1 / r3, -x2 / r3]


# circular Kepler orbit (4-d nonlinear system)
_KEPLER = (
    _kepler,
    [1.0, 0.0, 0.0, 1.0],
    2.0,
    lambda t: [math.cos(t), math.sin(t), -math.sin(t), math.cos(t)],
)

# y' = y: linear; sees only the "tall tree" conditions, so it cannot tell all orders apart
_LINEAR = (lambda t, y: [y[0]], [1.0], 1.0, lambda t: [math.exp(t)])

NONLINEAR_PROBLEMS = {"tan": _TAN, "nonautonomous": _NONAUT, "kepler": _KEPLER}


def _empirical_order(problem, a, q, n=40):
    e1 = _global_error(problem, a, q, n)
    e2 = _global_error(problem, a, q, 2 * n)
    return math.log2(e1 / e2)


EXPECTED_ORDER = {
    "euler": 1,
    "midpoint": 2,
    "heun": 2,
    "ralston": 2,
    "ralston23": 2,
    "itb": 2,
    "rk3": 3,
    "rk4": 4,
}

# Extra (non-registry) tableaus with known orders, to test order() beyond the named ones.
EXTRA = {
    # Heun's third-order method
    "heun3": (
        Tableau.from_rows("heun3", [1 / 4, 0, 3 / 4], [[0, 0, 0], [1 / 3, 0, 0], [0, 2 / 3, 0]]),
        3,
    ),
    # Kutta's 3/8 rule
    "rk38": (
        Tableau.from_rows(
            "rk38",
            [1 / 8, 3 / 8, 3 / 8, 1 / 8],
            [[0, 0, 0, 0], [1 / 3, 0, 0, 0], [-1 / 3, 1, 0, 0], [1, -1, 1, 0]],
        ),
        4,
    ),
    # satisfies the linear ("tall tree") third-order condition sum a q c = 1/6 but not
    # sum a c^2 = 1/3, so it is only second order (but looks third order on y' = y)
    "fake3": (
        Tableau.from_rows("fake3", [1 / 3, 1 / 3, 1 / 3], [[0, 0, 0], [1 / 2, 0, 0], [0, 1, 0]]),
        2,
    ),
}


@pytest.mark.parametrize("name", METHOD_NAMES)
@pytest.mark.parametrize("problem", sorted(NONLINEAR_PROBLEMS))
def test_named_tableau_order_matches_empirical_convergence(name, problem):
    tab = get_tableau(name)
    assert tab.name == name
    slope = _empirical_order(NONLINEAR_PROBLEMS[problem], tab.a, tab.q)
    assert abs(slope - EXPECTED_ORDER[name]) < 0.3, (name, problem, slope)
    assert tab.order() == EXPECTED_ORDER[name]


@pytest.mark.parametrize("key", sorted(EXTRA))
@pytest.mark.parametrize("problem", sorted(NONLINEAR_PROBLEMS))
def test_extra_tableau_order_matches_empirical_convergence(key, problem):
    tab, expected = EXTRA[key]
    slope = _empirical_order(NONLINEAR_PROBLEMS[problem], tab.a, tab.q)
    assert abs(slope - expected) < 0.3, (key, problem, slope)
    assert tab.order() == expected


def test_linear_ode_cannot_distinguish_fake_third_order():
    # documents why the order checks above use nonlinear problems
    tab, expected = EXTRA["fake3"]
    assert expected == 2
    assert abs(_empirical_order(_LINEAR, tab.a, tab.q) - 3) < 0.3
    assert abs(_empirical_order(_TAN, tab.a, tab.q) - 2) < 0.3


def test_order_conditions_detail():
    conds = methods.rk4.order_conditions()
    assert sorted(conds) == [1, 2, 3, 4]
    assert [len(conds[p]) for p in (1, 2, 3, 4)] == [1, 1, 2, 4]
    for p in conds:
        for value, required in conds[p]:
            assert value == pytest.approx(required, abs=1e-12)
    # a 3-stage method with order 3 fails some order-4 condition
    assert any(abs(v - r) > 1e-3 for v, r in methods.rk3.order_conditions()[4])


def test_order_respects_tolerance():
    # ralston23 weights rounded to 3 digits: second order only within a loose tolerance
    tab = Tableau.from_rows("rounded", [0.25, 0.75], [[0, 0], [0.667, 0]])
    assert tab.order() == 1
    assert tab.order(tol=1e-3) == 2


# ----------------------------------------------------------------------------------------
# Two-stage family
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["midpoint", "heun", "ralston", "ralston23", "itb"])
def test_second_order_conditions_two_stage(name):
    tab = get_tableau(name)
    assert tab.stages == 2
    a1, a2 = tab.a
    q21 = tab.q[1][0]
    assert a1 + a2 == pytest.approx(1.0, abs=1e-12)
    assert a2 * q21 == pytest.approx(0.5, abs=1e-12)
    assert tab.c == (0.0, q21)


def test_named_coefficients():
    assert methods.euler.a == (1.0,) and methods.euler.q == ((0.0,),) and methods.euler.c == (0.0,)
    assert methods.midpoint.a == (0.0, 1.0) and methods.midpoint.q[1][0] == 0.5
    assert methods.heun.a == (0.5, 0.5) and methods.heun.q[1][0] == 1.0
    assert methods.ralston.a == pytest.approx((1 / 3, 2 / 3)) and methods.ralston.c[1] == 0.75
    assert methods.ralston23.a == (0.25, 0.75) and methods.ralston23.q[1][0] == pytest.approx(2 / 3)
    assert methods.itb.a == pytest.approx((2 / 3, 1 / 3)) and methods.itb.q[1][0] == 1.5
    assert methods.rk3.q == ((0.0, 0.0, 0.0), (0.5, 0.0, 0.0), (-1.0, 2.0, 0.0))
    assert methods.rk3.c == (0.0, 0.5, 1.0)
    assert methods.rk4.c == (0.0, 0.5, 0.5, 1.0)
    assert methods.rk4.a == pytest.approx((1 / 6, 1 / 3, 1 / 3, 1 / 6))
    for t in (methods.euler, methods.rk4):
        assert all(isinstance(v, float) for v in t.a)
        assert all(isinstance(v, float) for row in t.q for v in row)


def test_generic_half_is_midpoint():
    g = get_tableau("generic:0.5")
    assert g.a == methods.midpoint.a
    assert g.q == methods.midpoint.q
    assert g.c == methods.midpoint.c
    g1 = get_tableau("generic:1")
    assert g1.a == methods.heun.a and g1.q == methods.heun.q


@pytest.mark.parametrize("x", [0.1, 0.5, 2 / 3, 0.75, 1.0, 1.5, 3.0])
def test_generic_is_second_order(x):
    g = get_tableau(f"generic:{x!r}")
    assert g.a == pytest.approx((1 - 1 / (2 * x), 1 / (2 * x)))
    assert g.q[1][0] == x
    assert g.order() == 2
    slope = _empirical_order(_TAN, g.a, g.q)
    assert abs(slope - 2) < 0.3, (x, slope)


@pytest.mark.parametrize(
    "spec", ["generic:0", "generic:-1", "generic:abc", "generic:", "generic:nan", "generic:inf"]
)
def test_generic_bad_parameter_refused(spec):
    raw = spec.split(":", 1)[1]
    with pytest.raises(ValueError, match="X > 0|> 0") as err:
        get_tableau(spec)
    assert repr(raw) in str(err.value)


def test_generic_function_refuses_nonpositive():
    with pytest.raises(ValueError, match="X > 0"):
        methods.generic(0.0)
    assert methods.generic(2.0).name == "generic:2"


# ----------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------


def test_not_explicit_diagonal():
    with pytest.raises(ValueError, match="not explicit") as err:
        Tableau.from_rows("bad", [0.5, 0.5], [[0.1, 0], [1, 0]])
    assert "q[0][0]" in str(err.value)


def test_not_explicit_upper():
    with pytest.raises(ValueError, match="not explicit") as err:
        Tableau.from_rows("bad", [0.5, 0.5], [[0, 0.3], [1, 0]])
    assert "q[0][1]" in str(err.value)
    assert "'bad'" in str(err.value)


def test_weights_must_sum_to_one():
    with pytest.raises(ValueError, match="sum to 1") as err:
        Tableau.from_rows("bad", [0.5, 0.25], [[0, 0], [1, 0]])
    assert "sum(a) = 0.75" in str(err.value)


def test_weights_sum_tolerance():
    Tableau.from_rows("ok", [0.5 + 1e-12, 0.5], [[0, 0], [1, 0]])
    with pytest.raises(ValueError, match="sum"):
        Tableau.from_rows("bad", [0.5 + 1e-6, 0.5], [[0, 0], [1, 0]])


def test_non_square_q():
    with pytest.raises(ValueError, match="square") as err:
        Tableau.from_rows("bad", [0.5, 0.5], [[0, 0], [1]])
    assert "q[1]" in str(err.value)
    with pytest.raises(ValueError, match="square"):
        Tableau.from_rows("bad", [0.5, 0.5], [[0, 0, 0], [1, 0, 0]])


def test_wrong_a_length():
    with pytest.raises(ValueError, match="a has length 3") as err:
        Tableau.from_rows("bad", [0.2, 0.3, 0.5], [[0, 0], [1, 0]])
    assert "length 2" in str(err.value)


@pytest.mark.parametrize("where", ["a", "q"])
def test_nan_refused(where):
    a = [0.5, 0.5]
    q = [[0, 0], [1, 0]]
    if where == "a":
        a[1] = float("nan")
        expected = "a[1]"
    else:
        q[1][0] = float("nan")
        expected = "q[1][0]"
    with pytest.raises(ValueError, match="not finite") as err:
        Tableau.from_rows("bad", a, q)
    assert expected in str(err.value)


def test_zero_stages_and_non_numbers_refused():
    with pytest.raises(ValueError, match="at least 1 stage"):
        Tableau.from_rows("bad", [], [])
    with pytest.raises(ValueError, match="real number"):
        Tableau.from_rows("bad", ["1"], [[0]])
    with pytest.raises(ValueError, match="non-empty string"):
        Tableau.from_rows("", [1], [[0]])


def test_c_checked_when_given():
    Tableau("ok", (0.5, 0.5), ((0, 0), (1, 0)), (0, 1))
    with pytest.raises(ValueError, match=r"c\[1\]"):
        Tableau("bad", (0.5, 0.5), ((0, 0), (1, 0)), (0, 0.9))


def test_conversion_frozen_hashable():
    t1 = Tableau("x", [1 / 2, 1 / 2], [[0, 0], [1, 0]])
    t2 = Tableau.from_rows("x", (0.5, 0.5), ((0.0, 0.0), (1.0, 0.0)))
    assert isinstance(t1.a, tuple) and isinstance(t1.q[1], tuple) and isinstance(t1.c, tuple)
    assert t1 == t2 and hash(t1) == hash(t2) and len({t1, t2, methods.heun}) == 2
    assert t1.q == methods.heun.q and t1 != methods.heun  # different names
    with pytest.raises(dataclasses.FrozenInstanceError):
        t1.name = "y"  # type: ignore[misc]


def test_stages_and_needs_k():
    assert [get_tableau(n).stages for n in METHOD_NAMES] == [1, 2, 2, 2, 2, 2, 3, 4]
    assert methods.euler.needs_k(0) is False
    assert [methods.midpoint.needs_k(j) for j in range(2)] == [True, False]
    assert [methods.rk3.needs_k(j) for j in range(3)] == [True, True, False]
    assert [methods.rk4.needs_k(j) for j in range(4)] == [True, True, True, False]
    # k_1 only used through q31 == 0 in this one: not needed by later stages
    t = Tableau.from_rows("t", [0, 0, 1], [[0, 0, 0], [0, 0, 0], [0, 0.5, 0]])
    assert [t.needs_k(j) for j in range(3)] == [False, True, False]
    with pytest.raises(IndexError):
        methods.rk4.needs_k(4)
    with pytest.raises(IndexError):
        methods.rk4.needs_k(-1)


def test_dict_round_trip():
    for name in METHOD_NAMES:
        tab = get_tableau(name)
        d = json.loads(json.dumps(tab.to_dict()))
        assert set(d) == {"name", "a", "q", "c"}
        assert Tableau.from_dict(d) == tab
    d = methods.rk3.to_dict()
    d["c"] = [0, 0.5, 0.9]
    with pytest.raises(ValueError, match=r"c\[2\]"):
        Tableau.from_dict(d)
    with pytest.raises(ValueError, match="missing required key 'q'"):
        Tableau.from_dict({"a": [1]})
    with pytest.raises(ValueError, match="unknown key.*'weights'"):
        Tableau.from_dict({"a": [1], "q": [[0]], "weights": [1]})
    assert Tableau.from_dict({"a": [1], "q": [[0]], "c": None}).name == "custom"


# ----------------------------------------------------------------------------------------
# Lookup
# ----------------------------------------------------------------------------------------


def test_method_names_and_aliases():
    assert METHOD_NAMES == (
        "euler",
        "midpoint",
        "heun",
        "ralston",
        "ralston23",
        "itb",
        "rk3",
        "rk4",
    )
    assert ALIASES == {"pretrain": "euler", "maml": "midpoint"}
    assert get_tableau("pretrain") is methods.euler
    assert get_tableau("maml") is methods.midpoint
    assert methods.maml is methods.midpoint and methods.pretrain is methods.euler


def test_case_insensitive():
    assert get_tableau("MAML") is methods.midpoint
    assert get_tableau("Rk4") is methods.rk4
    assert get_tableau("Ralston23") is methods.ralston23
    assert get_tableau("GENERIC:0.5").a == methods.midpoint.a


def test_unknown_name_lists_choices():
    with pytest.raises(ValueError) as err:
        get_tableau("foo")
    assert str(err.value) == (
        "unknown method 'foo'; valid choices: euler (pretrain), midpoint (maml), heun, "
        "ralston, ralston23, itb, rk3, rk4, generic:X (X > 0)"
    )


# ----------------------------------------------------------------------------------------
# JSON files
# ----------------------------------------------------------------------------------------


def test_load_json_round_trip(tmp_path):
    path = tmp_path / "my_rk3.json"
    path.write_text(json.dumps(methods.rk3.to_dict()))
    loaded = load_tableau_json(path)
    assert loaded == methods.rk3
    assert loaded.order() == 3
    # name defaults to the file stem, c is derived
    path2 = tmp_path / "custom_heun.json"
    path2.write_text(json.dumps({"a": [0.5, 0.5], "q": [[0, 0], [1, 0]]}))
    loaded2 = load_tableau_json(str(path2))
    assert loaded2.name == "custom_heun"
    assert loaded2.c == (0.0, 1.0) and loaded2.order() == 2


def test_load_json_missing_file(tmp_path):
    path = tmp_path / "nope.json"
    with pytest.raises(ValueError, match="not found") as err:
        load_tableau_json(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"q": [[0]]}', "missing required key 'a'"),
        ('{"a": [1]}', "missing required key 'q'"),
        ('{"a": 1, "q": [[0]]}', r"\ba must be a list"),
        ('{"a": [1], "q": [0]}', r"q\[0\] must be a list"),
        ('{"a": ["1"], "q": [[0]]}', r"a\[0\] must be a real number, got '1'"),
        ('{"a": [true], "q": [[0]]}', r"a\[0\] must be a real number, got True"),
        ('{"a": [1], "q": [[null]]}', r"q\[0\]\[0\] must be a real number, got None"),
        ('{"a": [1' + "0" * 400 + '], "q": [[0]]}', r"a\[0\] must be a real number"),
        ('{"a": [0.5, 0.5], "q": [[0, 0], [1, 0]], "c": [0, 2]}', r"c\[1\] = 2\.0"),
        ('{"a": [0.5, 0.5], "q": [[0, 0], [1]]}', "square"),
        ('{"a": [0.5, 0.5], "q": [[0, 0], [1, 0]], "weights": 1}', "unknown key"),
        ('{"a": [0.5, 0.5], "q": [[0, 0], [1, 0]], "name": 3}', "name must be a non-empty"),
        ('{"a": [0.5, 0.5], "q": [[0, 1], [1, 0]]}', "not explicit"),
        ('{"a": [0.5, 0.6], "q": [[0, 0], [1, 0]]}', "sum"),
    ],
)
def test_load_json_bad_files(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as err:
        load_tableau_json(path)
    assert str(err.value).startswith(f"{path}: ")
    assert "\n" not in str(err.value)


def test_load_json_bad_nested_value_names_file_and_field(tmp_path):
    path = tmp_path / "my.json"
    path.write_text(json.dumps({"name": "x", "a": [0.5, 0.5], "q": [[0, 0], ["a", 0]]}))
    with pytest.raises(ValueError) as err:
        load_tableau_json(path)
    assert str(err.value) == f"{path}: tableau 'x': q[1][0] must be a real number, got 'a'"
    # without a name, the error names the tableau after the file stem
    path.write_text(json.dumps({"a": [0.5, 0.5], "q": [[0, 0], [1, float("nan")]]}))
    with pytest.raises(ValueError) as err:
        load_tableau_json(path)
    assert str(err.value) == f"{path}: tableau 'my': q[1][1] = nan is not finite"


# ----------------------------------------------------------------------------------------
# Table
# ----------------------------------------------------------------------------------------


def test_format_table_lists_all_methods_with_order():
    text = format_table()
    lines = text.splitlines()
    assert lines[0].split() == ["name", "stages", "order", "a", "c"]
    for name in METHOD_NAMES:
        row = [ln for ln in lines if ln.split()[:1] == [name]]
        assert len(row) == 1, name
        tab = get_tableau(name)
        fields = row[0].split()
        # alias noted in parentheses
        offset = 2 if name in ALIASES.values() else 1
        assert fields[offset] == str(tab.stages)
        assert fields[offset + 1] == str(EXPECTED_ORDER[name])
    assert "euler (pretrain)" in text and "midpoint (maml)" in text
    assert "0.3333" in text and "0.6667" in text and "0.1667" in text
    assert "generic:X" in text
    # columns aligned: every table row has the 'order' column at the same offset
    col = lines[0].index("order")
    assert all(ln[col + 4] in "1234" for ln in lines[2:10])


def test_format_table_custom_list():
    text = format_table([EXTRA["fake3"][0], methods.rk4])
    assert "fake3" in text and "rk4" in text and "euler" not in text
    assert "generic:X" not in text
    assert format_table([]).splitlines()[0].split() == ["name", "stages", "order", "a", "c"]
