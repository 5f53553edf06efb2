"""Tests for rkmeta_rl.rk (stage points and the Runge-Kutta meta-gradient).

Every check compares against a computation that does not go through ``rkmeta_rl.rk``:

* second-order MAML written out as (I - αH_1) ∇L_2(θ - α∇L_1) with an explicit Hessian
  from ``torch.autograd.functional.hessian`` (midpoint, Heun, Euler);
* a closed form for linear-quadratic stage losses (every k_i is affine in θ, so the
  meta-gradient is a product of matrices, computed in numpy) for rk3, rk4 and a custom
  3-stage tableau;
* central finite differences of F(θ) = Σ a_i L_i(θ_i(θ)) built by a separate loop;
* a hand-written first-order loop for ``first_order=True``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from rkmeta_rl.methods import get_tableau

from rkmeta_rl.rk import meta_gradient, rk_combination, stage_points
from rkmeta_rl.tableau import Tableau

DT = torch.float64
N_STAGES = 4  # enough data sets for rk4
N_DATA = 5

# a custom explicit 3-stage tableau with a negative weight and negative q entry
CUSTOM3 = Tableau.from_rows(
    "custom3", a=(0.45, -0.25, 0.8), q=((0, 0, 0), (0.7, 0, 0), (-0.4, 1.3, 0))
)


# ----------------------------------------------------------------------------------------
# A small smooth non-quadratic problem: params {"w": (2, 2), "v": (2,)}, 6 numbers
# ----------------------------------------------------------------------------------------


def _make_data(seed: int, tasks: int | None = None):
    g = torch.Generator().manual_seed(seed)
    lead = () if tasks is None else (tasks,)
    xs = [torch.randn(*lead, N_DATA, 2, generator=g, dtype=DT) for _ in range(N_STAGES)]
    ys = [torch.randn(*lead, N_DATA, generator=g, dtype=DT) for _ in range(N_STAGES)]
    return xs, ys


def _model_loss(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, v: torch.Tensor):
    """Per-task loss (shape = leading dims of w): squared error of v·tanh(xW) + regulariser."""
    pred = (torch.tanh(x @ w) * v.unsqueeze(-2)).sum(-1)
    err = ((pred - y) ** 2).mean(-1)
    return err + 0.1 * (w**4).sum((-2, -1)) + 0.3 * torch.logsumexp(v, -1)


class Problem:
    """Stage losses L_i(p) on data set i (dict form for rk.py, flat form for the tests)."""

    def __init__(self, seed: int = 0):
        self.xs, self.ys = _make_data(seed)
        g = torch.Generator().manual_seed(seed + 100)
        self.theta0 = 0.7 * torch.randn(6, generator=g, dtype=DT)

    @staticmethod
    def split(z: torch.Tensor):
        return z[:4].reshape(2, 2), z[4:]

    def flat_loss(self, i: int, z: torch.Tensor) -> torch.Tensor:
        w, v = self.split(z)
        return _model_loss(self.xs[i], self.ys[i], w, v)

    def stage_loss(self, i: int, p: dict) -> torch.Tensor:
        return _model_loss(self.xs[i], self.ys[i], p["w"], p["v"]).sum()

    def theta_dict(self, z: torch.Tensor | None = None) -> dict:
        z = self.theta0 if z is None else z
        w, v = self.split(z)
        return {"w": w.clone().requires_grad_(), "v": v.clone().requires_grad_()}

    def grad(self, i: int, z: torch.Tensor) -> torch.Tensor:
        z = z.detach().requires_grad_()
        return torch.autograd.grad(self.flat_loss(i, z), z)[0]

    def hessian(self, i: int, z: torch.Tensor) -> torch.Tensor:
        return torch.autograd.functional.hessian(lambda u: self.flat_loss(i, u), z.detach())


def _flat(params: dict) -> torch.Tensor:
    return torch.cat([params["w"].reshape(-1), params["v"].reshape(-1)])


def _my_points(prob: Problem, z: torch.Tensor, tab: Tableau, h: float):
    """Independent stage points with exact total-derivative k's (nested autograd)."""
    z = z.detach().requires_grad_()
    ks, pts = [], []
    for i in range(tab.stages):
        p = z
        for j in range(i):
            if tab.q[i][j] != 0.0:
                p = p - h * tab.q[i][j] * ks[j]
        pts.append(p)
        ks.append(torch.autograd.grad(prob.flat_loss(i, p), z, create_graph=True)[0])
    return z, pts, ks


def _my_objective(prob: Problem, z: torch.Tensor, tab: Tableau, h: float) -> float:
    """F(θ) = Σ a_i L_i(θ_i(θ)) as a plain number."""
    _, pts, _ = _my_points(prob, z, tab, h)
    terms = [tab.a[i] * prob.flat_loss(i, pts[i]).detach() for i in range(tab.stages)]
    return float(sum(terms))


def _central_fd(f, z: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    out = torch.zeros_like(z)
    for k in range(z.numel()):
        e = torch.zeros_like(z)
        e[k] = eps
        out[k] = (f(z + e) - f(z - e)) / (2 * eps)
    return out


# ----------------------------------------------------------------------------------------
# Two-stage methods against explicit second-order formulas
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("h", [0.3, 0.8])
def test_midpoint_is_second_order_maml(h):
    prob = Problem(1)
    z = prob.theta0
    alpha = h / 2
    z_adapted = z - alpha * prob.grad(0, z)
    expected = (torch.eye(6, dtype=DT) - alpha * prob.hessian(0, z)) @ prob.grad(1, z_adapted)
    got = _flat(meta_gradient(prob.theta_dict(), get_tableau("midpoint"), h, prob.stage_loss))
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    # the second-order term matters here: first-order MAML differs noticeably
    assert (got - prob.grad(1, z_adapted)).abs().max() > 1e-3


def test_maml_alias_equals_midpoint():
    prob = Problem(2)
    a = meta_gradient(prob.theta_dict(), get_tableau("maml"), 0.4, prob.stage_loss)
    b = meta_gradient(prob.theta_dict(), get_tableau("midpoint"), 0.4, prob.stage_loss)
    torch.testing.assert_close(_flat(a), _flat(b), rtol=0, atol=0)


def test_euler_is_plain_gradient_of_first_loss():
    prob = Problem(3)
    got = meta_gradient(prob.theta_dict(), get_tableau("euler"), 0.5, prob.stage_loss)
    torch.testing.assert_close(_flat(got), prob.grad(0, prob.theta0), rtol=1e-12, atol=1e-14)


def test_heun_formula():
    prob = Problem(4)
    h = 0.6
    z = prob.theta0
    g1 = prob.grad(0, z)
    second = (torch.eye(6, dtype=DT) - h * prob.hessian(0, z)) @ prob.grad(1, z - h * g1)
    expected = 0.5 * g1 + 0.5 * second
    got = _flat(meta_gradient(prob.theta_dict(), get_tableau("heun"), h, prob.stage_loss))
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("x", [0.3, 1.7])
def test_generic_two_stage_formula(x):
    prob = Problem(5)
    h = 0.5
    z = prob.theta0
    a2 = 1 / (2 * x)
    g1 = prob.grad(0, z)
    second = (torch.eye(6, dtype=DT) - h * x * prob.hessian(0, z)) @ prob.grad(1, z - h * x * g1)
    expected = (1 - a2) * g1 + a2 * second
    got = _flat(meta_gradient(prob.theta_dict(), get_tableau(f"generic:{x}"), h, prob.stage_loss))
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------------------
# Linear-quadratic stage losses: closed form (numpy) for any tableau
# ----------------------------------------------------------------------------------------


def _quadratic_problem(seed: int, n: int = 6):
    rng = np.random.default_rng(seed)
    mats, vecs = [], []
    for _ in range(N_STAGES):
        m = rng.normal(size=(n, n))
        mats.append(0.5 * (m + m.T))  # symmetric, indefinite
        vecs.append(rng.normal(size=n))
    return mats, vecs, rng.normal(size=n)


def _closed_form_meta_gradient(mats, vecs, theta, tab: Tableau, h: float) -> np.ndarray:
    """θ_i = M_i θ + m_i, k_i = K_i θ + κ_i with K_i = M_iᵀ A_i M_i, κ_i = M_iᵀ (A_i m_i + b_i)."""
    n = theta.size
    big_k, small_k = [], []
    for i in range(tab.stages):
        m_mat = np.eye(n) - h * sum((tab.q[i][j] * big_k[j] for j in range(i)), np.zeros((n, n)))
        m_vec = -h * sum((tab.q[i][j] * small_k[j] for j in range(i)), np.zeros(n))
        big_k.append(m_mat.T @ mats[i] @ m_mat)
        small_k.append(m_mat.T @ (mats[i] @ m_vec + vecs[i]))
    return sum(a * (kk @ theta + kv) for a, kk, kv in zip(tab.a, big_k, small_k, strict=True))


@pytest.mark.parametrize("name", ["rk3", "rk4", "custom3", "heun", "ralston"])
def test_quadratic_closed_form(name):
    tab = CUSTOM3 if name == "custom3" else get_tableau(name)
    mats, vecs, theta = _quadratic_problem(7)
    h = 0.35
    at = [torch.tensor(m) for m in mats]
    bt = [torch.tensor(b) for b in vecs]

    def stage_loss(i, p):
        z = torch.cat([p["a"].reshape(-1), p["b"]])
        return 0.5 * z @ at[i] @ z + bt[i] @ z

    th = torch.tensor(theta)
    params = {
        "a": th[:4].reshape(2, 2).clone().requires_grad_(),
        "b": th[4:].clone().requires_grad_(),
    }
    got = meta_gradient(params, tab, h, stage_loss)
    got_flat = torch.cat([got["a"].reshape(-1), got["b"]]).numpy()
    expected = _closed_form_meta_gradient(mats, vecs, theta, tab, h)
    np.testing.assert_allclose(got_flat, expected, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------------------
# Higher-order tableaus on the non-quadratic problem: finite differences
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["rk3", "rk4", "custom3"])
def test_meta_gradient_matches_finite_differences(name):
    tab = CUSTOM3 if name == "custom3" else get_tableau(name)
    prob = Problem(11)
    h = 0.4
    fd = _central_fd(lambda u: _my_objective(prob, u, tab, h), prob.theta0)
    got = _flat(meta_gradient(prob.theta_dict(), tab, h, prob.stage_loss))
    torch.testing.assert_close(got, fd, rtol=1e-7, atol=1e-8)


def test_rk3_finite_differences_of_rk_combination_values():
    """d/dθ of the value rk_combination(stage_points(θ, create_graph=False)) is meta_gradient."""
    tab = get_tableau("rk3")
    prob = Problem(12)
    h = 0.5

    def value(z):
        pts = stage_points(prob.theta_dict(z), tab, h, prob.stage_loss, create_graph=False)
        return rk_combination(pts, tab, prob.stage_loss).item()

    # the value itself equals the independently built objective
    assert value(prob.theta0) == pytest.approx(_my_objective(prob, prob.theta0, tab, h), rel=1e-12)
    fd = _central_fd(value, prob.theta0)
    got = _flat(meta_gradient(prob.theta_dict(), tab, h, prob.stage_loss))
    torch.testing.assert_close(got, fd, rtol=1e-7, atol=1e-8)


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
# First order
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["midpoint", "heun", "rk3", "rk4", "custom3"])
def test_first_order(name):
    tab = CUSTOM3 if name == "custom3" else get_tableau(name)
    prob = Problem(21)
    h = 0.5
    z = prob.theta0
    ks, pts = [], []
    for i in range(tab.stages):
        p = z - h * sum((tab.q[i][j] * ks[j] for j in range(i)), torch.zeros_like(z))
        pts.append(p)
        ks.append(prob.grad(i, p))
    expected = sum(a * k for a, k in zip(tab.a, ks, strict=True))
    got = meta_gradient(prob.theta_dict(), tab, h, prob.stage_loss, first_order=True)
    torch.testing.assert_close(_flat(got), expected, rtol=1e-12, atol=1e-13)
    points = stage_points(prob.theta_dict(), tab, h, prob.stage_loss, first_order=True)
    for p, m in zip(points, pts, strict=True):
        torch.testing.assert_close(_flat(p).detach(), m, rtol=1e-12, atol=1e-13)
    # differs from the exact (second-order) meta-gradient
    exact = meta_gradient(prob.theta_dict(), tab, h, prob.stage_loss)
    assert (_flat(exact) - expected).abs().max() > 1e-4


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


# ----------------------------------------------------------------------------------------
# Several adaptation steps (inner_steps): multi-step MAML and its RK generalisation
# ----------------------------------------------------------------------------------------


def _my_multi_step_objective(prob: Problem, z: torch.Tensor, tab: Tableau, h: float,
                             m: int) -> float:
    """Σ a_i L_i(θ_i) where θ_i (i > 1) takes m - 1 more support steps of c_i·h."""
    ks, total = [], 0.0
    z = z.detach().requires_grad_()
    for i in range(tab.stages):
        p = z
        for j in range(i):
            if tab.q[i][j] != 0.0:
                p = p - h * tab.q[i][j] * ks[j]
        if i > 0:
            for _ in range(m - 1):
                g = torch.autograd.grad(prob.flat_loss(0, p), p, create_graph=True)[0]
                p = p - h * tab.c[i] * g
        ks.append(torch.autograd.grad(prob.flat_loss(i, p), z, create_graph=True)[0])
        total += tab.a[i] * float(prob.flat_loss(i, p))
    return total


@pytest.mark.parametrize("name", ["midpoint", "ralston", "rk3"])
def test_inner_steps_match_finite_differences(name):
    tab = get_tableau(name)
    prob, h, m = Problem(21), 0.3, 3
    fd = _central_fd(lambda u: _my_multi_step_objective(prob, u, tab, h, m), prob.theta0)
    got = _flat(meta_gradient(prob.theta_dict(), tab, h, prob.stage_loss, inner_steps=m))
    torch.testing.assert_close(got, fd, rtol=1e-7, atol=1e-8)


def test_midpoint_two_inner_steps_is_two_step_maml():
    """Closed form of 2-step MAML: (I - αH(θ))(I - αH(θ')) ∇L_2(θ'') with α = h/2."""
    prob, h = Problem(22), 0.5
    alpha, z = h / 2, prob.theta0
    z1 = z - alpha * prob.grad(0, z)
    z2 = z1 - alpha * prob.grad(0, z1)
    eye = torch.eye(6, dtype=DT)
    expected = (eye - alpha * prob.hessian(0, z)) @ (eye - alpha * prob.hessian(0, z1)) \
        @ prob.grad(1, z2)
    got = _flat(meta_gradient(prob.theta_dict(), get_tableau("midpoint"), h, prob.stage_loss,
                              inner_steps=2))
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_first_order_inner_steps_is_fomaml():
    """First order: ∇L_2 at the point reached by two plain steps of α."""
    prob, h = Problem(23), 0.5
    alpha, z = h / 2, prob.theta0
    z1 = z - alpha * prob.grad(0, z)
    z2 = z1 - alpha * prob.grad(0, z1)
    got = _flat(meta_gradient(prob.theta_dict(), get_tableau("midpoint"), h, prob.stage_loss,
                              first_order=True, inner_steps=2))
    torch.testing.assert_close(got, prob.grad(1, z2), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_inner_steps_must_be_positive_int(bad):
    prob = Problem(0)
    with pytest.raises(ValueError, match="inner_steps"):
        meta_gradient(prob.theta_dict(), get_tableau("heun"), 0.1, prob.stage_loss,
                      inner_steps=bad)
