"""Tests for rkmeta_rl.rk's stage points and how it handles its inputs.

* ``stage_points`` gives exact points (k_j as total derivatives) in graph mode, in value
  mode (``create_graph=False``), from θ without grad and under ``torch.no_grad()``,
  checked against independent stage points built by nested autograd;
* per-task (batched) parameters give each task's own meta-gradient and stage points, and
  parameters shared through ``expand`` sum the task gradients;
* the order of ``on_point`` / ``stage_loss`` calls, and refused step sizes.

The test problem and the independent stage points come from ``rk_problem``; the value of
the meta-gradient itself is checked in test_rk_meta_gradient.py.
"""

from __future__ import annotations

import pytest
import torch
from rk_problem import CUSTOM3, DT, Problem, _flat, _make_data, _model_loss, _my_points

from rkmeta_rl.methods import get_tableau
from rkmeta_rl.rk import meta_gradient, rk_combination, stage_points

# ----------------------------------------------------------------------------------------
# Stage points against independent ones
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["rk3", "rk4", "custom3", "midpoint"])
def test_stage_points_value_mode_matches_graph_mode(name):
    """create_graph=False must still give exact later points (k_j as total derivatives)."""
    tab = CUSTOM3 if name == "custom3" else get_tableau(name)
    prob = Problem(13)
    h = 0.6
    graph_pts = stage_points(prob.theta_dict(), tab, h, prob.stage_loss, create_graph=True)
    value_pts = stage_points(prob.theta_dict(), tab, h, prob.stage_loss, create_graph=False)
    _, mine, _ = _my_points(prob, prob.theta0, tab, h)
    assert len(graph_pts) == len(value_pts) == tab.stages
    for g, v, m in zip(graph_pts, value_pts, mine, strict=True):
        torch.testing.assert_close(_flat(v).detach(), m.detach(), rtol=1e-12, atol=1e-13)
        torch.testing.assert_close(_flat(g).detach(), m.detach(), rtol=1e-12, atol=1e-13)
    # and they differ from what first-order k's would give (the check is not vacuous)
    fo = stage_points(prob.theta_dict(), tab, h, prob.stage_loss, first_order=True)
    if tab.stages > 2:
        assert (_flat(fo[-1]) - mine[-1]).abs().max().item() > 1e-4


def test_stage_points_without_grad_input_are_exact():
    """θ given without requires_grad (as in the TRPO line search): still exact points."""
    tab = get_tableau("rk4")
    prob = Problem(14)
    h = 0.5
    w, v = Problem.split(prob.theta0)
    pts = stage_points({"w": w.clone(), "v": v.clone()}, tab, h, prob.stage_loss,
                       create_graph=False)
    _, mine, _ = _my_points(prob, prob.theta0, tab, h)
    for p, m in zip(pts, mine, strict=True):
        torch.testing.assert_close(_flat(p).detach(), m.detach(), rtol=1e-12, atol=1e-13)


# ----------------------------------------------------------------------------------------
# Per-task parameters
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["midpoint", "rk3"])
@pytest.mark.parametrize("first_order", [False, True])
def test_per_task_parameters_match_separate_tasks(name, first_order):
    tab = get_tableau(name)
    n_tasks, h = 3, 0.5
    xs, ys = _make_data(31, tasks=n_tasks)
    g = torch.Generator().manual_seed(32)
    w0 = 0.7 * torch.randn(n_tasks, 2, 2, generator=g, dtype=DT)
    v0 = 0.7 * torch.randn(n_tasks, 2, generator=g, dtype=DT)

    def batched_loss(i, p):
        return _model_loss(xs[i], ys[i], p["w"], p["v"]).sum()

    params = {"w": w0.clone().requires_grad_(), "v": v0.clone().requires_grad_()}
    got = meta_gradient(params, tab, h, batched_loss, first_order=first_order)
    assert got["w"].shape == (n_tasks, 2, 2) and got["v"].shape == (n_tasks, 2)
    for t in range(n_tasks):

        def task_loss(i, p, t=t):
            return _model_loss(xs[i][t], ys[i][t], p["w"], p["v"])

        single = {"w": w0[t].clone().requires_grad_(), "v": v0[t].clone().requires_grad_()}
        want = meta_gradient(single, tab, h, task_loss, first_order=first_order)
        torch.testing.assert_close(got["w"][t], want["w"], rtol=1e-12, atol=1e-13)
        torch.testing.assert_close(got["v"][t], want["v"], rtol=1e-12, atol=1e-13)
        if name == "midpoint" and not first_order:
            # and against the explicit MAML formula for this task alone
            z = torch.cat([w0[t].reshape(-1), v0[t]])

            def flat(u, i, t=t):
                return _model_loss(xs[i][t], ys[i][t], u[:4].reshape(2, 2), u[4:])

            def grad(i, u):
                u = u.detach().requires_grad_()
                return torch.autograd.grad(flat(u, i), u)[0]

            hess = torch.autograd.functional.hessian(lambda u: flat(u, 0), z)
            alpha = h / 2
            maml = (torch.eye(6, dtype=DT) - alpha * hess) @ grad(1, z - alpha * grad(0, z))
            torch.testing.assert_close(
                torch.cat([got["w"][t].reshape(-1), got["v"][t]]), maml, rtol=1e-10, atol=1e-12
            )


def test_repeated_shared_parameters_sum_task_gradients():
    """θ shared by all tasks via expand: the meta-gradient is the sum over tasks."""
    tab = get_tableau("midpoint")
    n_tasks, h = 3, 0.4
    xs, ys = _make_data(41, tasks=n_tasks)
    z = 0.5 * torch.randn(6, generator=torch.Generator().manual_seed(42), dtype=DT)

    def batched_loss(i, p):
        return _model_loss(xs[i], ys[i], p["w"], p["v"]).sum()

    w = z[:4].reshape(2, 2).clone().requires_grad_()
    v = z[4:].clone().requires_grad_()
    rep = {"w": w.unsqueeze(0).expand(n_tasks, 2, 2), "v": v.unsqueeze(0).expand(n_tasks, 2)}
    pts = stage_points(rep, tab, h, batched_loss)
    total = rk_combination(pts, tab, batched_loss)
    gw, gv = torch.autograd.grad(total, [w, v])
    expected = torch.zeros(6, dtype=DT)
    for t in range(n_tasks):

        def flat(u, i, t=t):
            return _model_loss(xs[i][t], ys[i][t], u[:4].reshape(2, 2), u[4:])

        def grad(i, u, flat=flat):
            u = u.detach().requires_grad_()
            return torch.autograd.grad(flat(u, i), u)[0]

        hess = torch.autograd.functional.hessian(lambda u, flat=flat: flat(u, 0), z)
        expected += (torch.eye(6, dtype=DT) - h / 2 * hess) @ grad(1, z - h / 2 * grad(0, z))
    torch.testing.assert_close(torch.cat([gw.reshape(-1), gv]), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["rk3", "rk4"])
def test_value_mode_from_expanded_detached_theta(name):
    """The TRPO line search's call: repeat_params-style expanded views without grad."""
    tab = get_tableau(name)
    n_tasks, h = 3, 0.5
    xs, ys = _make_data(43, tasks=n_tasks)
    z = 0.6 * torch.randn(6, generator=torch.Generator().manual_seed(44), dtype=DT)

    def batched_loss(i, p):
        return _model_loss(xs[i], ys[i], p["w"], p["v"]).sum()

    rep = {"w": z[:4].reshape(2, 2).unsqueeze(0).expand(n_tasks, 2, 2),
           "v": z[4:].unsqueeze(0).expand(n_tasks, 2)}
    pts = stage_points(rep, tab, h, batched_loss, create_graph=False)
    for t in range(n_tasks):
        prob = Problem(0)
        prob.xs = [x[t] for x in xs]
        prob.ys = [y[t] for y in ys]
        _, mine, _ = _my_points(prob, z, tab, h)
        for p, m in zip(pts, mine, strict=True):
            got = torch.cat([p["w"][t].reshape(-1), p["v"][t]]).detach()
            torch.testing.assert_close(got, m.detach(), rtol=1e-12, atol=1e-13)


# ----------------------------------------------------------------------------------------
# Call protocol and argument checks
# ----------------------------------------------------------------------------------------


def test_on_point_called_before_stage_loss_in_order():
    tab = get_tableau("rk4")
    prob = Problem(51)
    events = []

    def on_point(i, p):
        events.append(("point", i))

    def stage_loss(i, p):
        events.append(("loss", i))
        return prob.stage_loss(i, p)

    stage_points(prob.theta_dict(), tab, 0.3, stage_loss, on_point=on_point)
    # k_4 builds no later point, so stage 4's loss is not evaluated here
    assert events == [
        ("point", 0), ("loss", 0), ("point", 1), ("loss", 1),
        ("point", 2), ("loss", 2), ("point", 3),
    ]


def test_midpoint_skips_unneeded_first_stage_loss_in_combination():
    """a_1 = 0 for midpoint: L_1 enters only through θ_2, not the combination."""
    tab = get_tableau("midpoint")
    prob = Problem(52)
    calls = []

    def stage_loss(i, p):
        calls.append(i)
        return prob.stage_loss(i, p)

    pts = stage_points(prob.theta_dict(), tab, 0.3, stage_loss)
    assert calls == [0]
    value = rk_combination(pts, tab, stage_loss)
    assert calls == [0, 1]
    _, mine, _ = _my_points(prob, prob.theta0, tab, 0.3)
    assert value.item() == pytest.approx(prob.flat_loss(1, mine[1]).item(), rel=1e-12)


@pytest.mark.parametrize("h", [0.0, -0.1])
def test_nonpositive_step_raises(h):
    prob = Problem(61)
    with pytest.raises(ValueError):
        stage_points(prob.theta_dict(), get_tableau("midpoint"), h, prob.stage_loss)
    with pytest.raises(ValueError):
        meta_gradient(prob.theta_dict(), get_tableau("rk4"), h, prob.stage_loss)
    with pytest.raises(ValueError):
        meta_gradient(prob.theta_dict(), get_tableau("euler"), h, prob.stage_loss,
                      first_order=True)


@pytest.mark.parametrize("name", ["heun", "rk3", "rk4"])
def test_stage_points_under_no_grad_equal_grad_mode(name):
    """Regression: under torch.no_grad(), views of a vector that requires grad report
    requires_grad=True yet carry no graph; the total derivatives must still be exact."""
    torch.manual_seed(3)
    x = torch.randn(7, dtype=torch.float64, requires_grad=True)
    data = [torch.randn(5, dtype=torch.float64) for _ in range(4)]

    def loss(i, p):
        quartic = (p["b"] ** 4).sum() * data[i][4]
        return (torch.tanh(p["a"] * data[i][:3].sum()) ** 2).sum() + quartic

    def params(vec):
        return {"a": vec[:3].view(3), "b": vec[3:].view(4)}

    tab = get_tableau(name)
    expected = stage_points(params(x), tab, 0.3, loss)
    with torch.no_grad():
        got = stage_points(params(x), tab, 0.3, loss)
    for e, g in zip(expected, got, strict=True):
        for n in e:
            torch.testing.assert_close(g[n], e[n].detach())
