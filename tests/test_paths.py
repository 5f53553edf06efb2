"""rkmeta_rl.rl.paths: which path each tableau takes through the meta-step."""

from __future__ import annotations

import pytest

from rkmeta_rl.layer_methods import method_tableau
from rkmeta_rl.methods import get_tableau
from rkmeta_rl.rk import Scheme
from rkmeta_rl.rl.config import MetaStepConfig
from rkmeta_rl.rl.paths import ClosedForm, DoubleBackward, Stagewise, choose_path

NAMES = ("w0", "b0", "log_std")


@pytest.mark.parametrize("method", ["euler", "midpoint", "heun", "ralston", "itb"])
@pytest.mark.parametrize("first_order", [False, True])
def test_tableaus_whose_points_move_by_k1_take_the_closed_form(method, first_order):
    assert choose_path(get_tableau(method), MetaStepConfig(first_order=first_order)) \
        is ClosedForm


@pytest.mark.parametrize("method", ["rk3", "rk4"])
def test_other_single_tableaus_go_stagewise_and_closed_form_in_first_order(method):
    tab = get_tableau(method)
    assert choose_path(tab, MetaStepConfig()) is Stagewise
    assert choose_path(tab, MetaStepConfig(first_order=True)) is ClosedForm


def _scheme(methods: tuple[str, ...]) -> Scheme:
    """The methods dealt out over NAMES in turn, h = 0.5 each."""
    tableaus = [method_tableau(m) for m in methods]
    return Scheme({n: tableaus[i % len(tableaus)] for i, n in enumerate(NAMES)},
                  dict.fromkeys(NAMES, 0.5))


@pytest.mark.parametrize("methods", [("euler",), ("midpoint",), ("midpoint", "frozen:midpoint"),
                                     ("ralston", "frozen:ralston")])
@pytest.mark.parametrize("first_order", [False, True])
def test_a_tableau_per_group_whose_points_move_by_k1_takes_the_closed_form(methods,
                                                                           first_order):
    scheme = _scheme(methods)
    assert choose_path(scheme, MetaStepConfig(first_order=first_order)) is ClosedForm


@pytest.mark.parametrize("methods", [("rk4",), ("rk3", "frozen:rk3")])
def test_other_tableaus_per_group_take_double_backward_and_closed_form_in_first_order(methods):
    scheme = _scheme(methods)
    assert choose_path(scheme, MetaStepConfig()) is DoubleBackward
    assert choose_path(scheme, MetaStepConfig(first_order=True)) is ClosedForm
