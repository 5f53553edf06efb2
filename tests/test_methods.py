"""Tests for rkmeta_rl.methods: the named tableaus, the generic two-stage family, name
lookup (get_tableau) and the method table (format_table).

The order of every named tableau is checked against an *independent* measurement
(``rk_order``): integrating nonlinear ODEs with known exact solutions using its own
explicit RK loop and reading off the empirical convergence order of the global error.
What a tableau is (validation, order(), JSON files) is tested in test_tableau.py.
"""

from __future__ import annotations

import pytest
from rk_order import _TAN, EXTRA, NONLINEAR_PROBLEMS, _empirical_order

from rkmeta_rl import methods
from rkmeta_rl.methods import ALIASES, METHOD_NAMES, format_table, get_tableau

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


# ----------------------------------------------------------------------------------------
# Orders of the named tableaus
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", METHOD_NAMES)
@pytest.mark.parametrize("problem", sorted(NONLINEAR_PROBLEMS))
def test_named_tableau_order_matches_empirical_convergence(name, problem):
    tab = get_tableau(name)
    assert tab.name == name
    slope = _empirical_order(NONLINEAR_PROBLEMS[problem], tab.a, tab.q)
    assert abs(slope - EXPECTED_ORDER[name]) < 0.3, (name, problem, slope)
    assert tab.order() == EXPECTED_ORDER[name]


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
