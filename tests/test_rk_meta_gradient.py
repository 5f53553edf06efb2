"""Tests for rkmeta_rl.rk.meta_gradient: the Runge-Kutta meta-gradient of one parameter set.

Every check compares against a computation that does not go through ``rkmeta_rl.rk``:

* second-order MAML written out as (I - αH_1) ∇L_2(θ - α∇L_1) with an explicit Hessian
  from ``torch.autograd.functional.hessian`` (midpoint, Heun, Euler);
* a closed form for linear-quadratic stage losses (every k_i is affine in θ, so the
  meta-gradient is a product of matrices, computed in numpy) for rk3, rk4 and a custom
  3-stage tableau;
* central finite differences of F(θ) = Σ a_i L_i(θ_i(θ)) built by a separate loop;
* a hand-written first-order loop for ``first_order=True``;
* for several adaptation steps (``inner_steps``): finite differences of a separately built
  multi-step objective and the closed forms of two-step MAML and first-order MAML (and
  a bad ``inner_steps`` is refused).

The test problem and the independent stage points come from ``rk_problem``; the stage
points themselves, per-task parameters and the call protocol are in test_rk_stage_points.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from rk_problem import CUSTOM3, DT, N_STAGES, Problem, _flat, _my_points

from rkmeta_rl.methods import get_tableau
from rkmeta_rl.rk import meta_gradient, rk_combination, stage_points
from rkmeta_rl.tableau import Tableau


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
