"""Tests for rkmeta_rl.tableau: what a tableau is (order, validation, conversion, stages and
needs_k, dict and JSON files).

``order()`` is checked against an *independent* measurement (``rk_order``): integrating
nonlinear ODEs with known exact solutions using its own explicit RK loop and reading off
the empirical convergence order of the global error. The named methods of
rkmeta_rl.methods are tested in test_methods.py.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
from rk_order import _LINEAR, _TAN, EXTRA, NONLINEAR_PROBLEMS, _empirical_order

from rkmeta_rl import methods
from rkmeta_rl.methods import METHOD_NAMES, get_tableau
from rkmeta_rl.tableau import Tableau, load_tableau_json

# ----------------------------------------------------------------------------------------
# order() and order_conditions() against the empirical order
# ----------------------------------------------------------------------------------------


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
