"""Tests for rkmeta_rl.rl.trpo: flatten / unflatten, conjugate gradient, the backtracking
line search and the natural step.

Reference values come from explicit linear algebra (torch.linalg.solve on explicit SPD
matrices) and hand-computed line-search outcomes. The KL curvature the RK-TRPO meta-step
feeds to the conjugate gradient is tested in test_trpo_curvature.py.
"""

from __future__ import annotations

import math

import pytest
import torch

from rkmeta_rl.rl.trpo import (
    backtracking_line_search,
    conjugate_gradient,
    conjugate_gradient_and_product,
    dot,
    flatten,
    natural_step,
    unflatten,
)

DT = torch.float64


def _spd(n: int, lo: float, hi: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=DT))
    eig = torch.linspace(lo, hi, n, dtype=DT)
    return q @ torch.diag(eig) @ q.T


# ----------------------------------------------------------------------------------------
# flatten / unflatten
# ----------------------------------------------------------------------------------------


def test_flatten_unflatten_round_trip():
    params = {
        "w": torch.arange(6, dtype=DT).reshape(2, 3),
        "b": torch.tensor([10.0, 11.0], dtype=DT),
        "s": torch.tensor(7.0, dtype=DT),
    }
    flat = flatten(params)
    assert flat.tolist() == [0, 1, 2, 3, 4, 5, 10, 11, 7]
    back = unflatten(flat, params)
    assert list(back) == ["w", "b", "s"]
    for name, v in params.items():
        assert back[name].shape == v.shape
        assert torch.equal(back[name], v)


def test_unflatten_is_differentiable():
    like = {"a": torch.zeros(2, 2, dtype=DT), "b": torch.zeros(3, dtype=DT)}
    x = torch.randn(7, dtype=DT, requires_grad=True)
    p = unflatten(x, like)
    weights = torch.arange(7, dtype=DT)
    loss = (p["a"].reshape(-1) * weights[:4]).sum() + (p["b"] * weights[4:]).sum()
    (g,) = torch.autograd.grad(loss, x)
    assert torch.equal(g, weights)


@pytest.mark.parametrize("n", [6, 8])
def test_unflatten_wrong_size_raises(n):
    like = {"a": torch.zeros(2, 2), "b": torch.zeros(3)}
    with pytest.raises((ValueError, RuntimeError)):
        unflatten(torch.zeros(n), like)


# ----------------------------------------------------------------------------------------
# conjugate gradient
# ----------------------------------------------------------------------------------------


def test_conjugate_gradient_random_spd_system():
    a = _spd(20, 0.5, 20.0, seed=0)
    b = torch.randn(20, generator=torch.Generator().manual_seed(1), dtype=DT)
    x = conjugate_gradient(lambda v: a @ v, b, iters=40, residual_tol=1e-28)
    exact = torch.linalg.solve(a, b)
    assert (x - exact).norm() / exact.norm() < 1e-6


def _counted(a):
    """v -> a v, and the list that grows by one at every call."""
    calls = []

    def matvec(v):
        calls.append(1)
        return a @ v

    return matvec, calls


def test_conjugate_gradient_well_conditioned_ten_iterations():
    a = _spd(20, 1.0, 1.5, seed=2)
    b = torch.randn(20, generator=torch.Generator().manual_seed(3), dtype=DT)
    matvec, calls = _counted(a)
    x = conjugate_gradient(matvec, b, iters=10, residual_tol=1e-30)
    exact = torch.linalg.solve(a, b)
    assert (x - exact).norm() / exact.norm() < 1e-6
    assert len(calls) <= 10


def test_conjugate_gradient_zero_rhs_returns_zero_without_matvec():
    def matvec(v):
        raise AssertionError("matvec must not be called for b = 0")

    x = conjugate_gradient(matvec, torch.zeros(5, dtype=DT), iters=10)
    assert torch.equal(x, torch.zeros(5, dtype=DT))


# ----------------------------------------------------------------------------------------
# backtracking line search
# ----------------------------------------------------------------------------------------


def _recorder(fn):
    seen = []

    def evaluate(x):
        seen.append(x.clone())
        return fn(x)

    return evaluate, seen


def test_line_search_refuses_step_that_raises_loss():
    x0 = torch.tensor([1.0, 2.0], dtype=DT)
    step = torch.tensor([0.5, -0.5], dtype=DT)
    evaluate, seen = _recorder(lambda x: (3.0 + float((x - x0).norm()), 0.0))
    res = backtracking_line_search(evaluate, x0, step, loss0=3.0, max_kl=0.01, max_steps=6)
    assert not res.accepted
    assert torch.equal(res.x, x0)
    assert res.steps == 6 and len(seen) == 6
    assert res.loss == 3.0 and res.kl == 0.0 and res.rejected_nonfinite == 0
    # candidates were x0 + 0.8^j step
    for j, x in enumerate(seen):
        torch.testing.assert_close(x, x0 + 0.8**j * step, rtol=0, atol=1e-15)


def test_line_search_refuses_kl_violation_even_if_loss_improves():
    x0 = torch.zeros(3, dtype=DT)
    step = torch.ones(3, dtype=DT)
    res = backtracking_line_search(
        lambda x: (-100.0, 1.0), x0, step, loss0=0.0, max_kl=0.5, max_steps=5
    )
    assert not res.accepted and torch.equal(res.x, x0) and res.steps == 5


def test_line_search_accepts_first_admissible_shrink():
    """loss(x0 + t·s) = (t - 0.3)² - 0.09 < 0 iff t < 0.6; KL = t² ≤ 0.3 iff t ≤ 0.548."""
    x0 = torch.tensor([0.5, -1.0], dtype=DT)
    step = torch.tensor([2.0, 1.0], dtype=DT)
    snorm2 = float(step.dot(step))

    def evaluate(x):
        t = float((x - x0).dot(step)) / snorm2
        return (t - 0.3) ** 2 - 0.09, t * t

    ratio = 0.8
    # hand computation: t_j = 0.8^j -> 1, 0.8, 0.64, 0.512: first with t < 0.6 and t² ≤ 0.3
    res = backtracking_line_search(evaluate, x0, step, loss0=0.0, max_kl=0.3, ratio=ratio)
    assert res.accepted
    assert res.steps == 4
    t = 0.512
    torch.testing.assert_close(res.x, x0 + t * step, rtol=0, atol=1e-14)
    assert res.loss == pytest.approx((t - 0.3) ** 2 - 0.09, abs=1e-14)
    assert res.kl == pytest.approx(t * t, abs=1e-14)
    # now the KL bound alone decides: t² ≤ 0.1 first at t = 0.8^6 = 0.262144
    res = backtracking_line_search(evaluate, x0, step, loss0=0.0, max_kl=0.1, ratio=ratio)
    assert res.accepted and res.steps == 7
    torch.testing.assert_close(res.x, x0 + 0.8**6 * step, rtol=0, atol=1e-14)


def test_line_search_boundaries_strict_loss_inclusive_kl():
    x0 = torch.zeros(2, dtype=DT)
    step = torch.ones(2, dtype=DT)
    # equal loss is not an improvement
    res = backtracking_line_search(lambda x: (1.0, 0.0), x0, step, loss0=1.0, max_kl=1.0,
                                   max_steps=3)
    assert not res.accepted
    # KL exactly at the bound is allowed
    res = backtracking_line_search(lambda x: (0.5, 0.25), x0, step, loss0=1.0, max_kl=0.25,
                                   max_steps=3)
    assert res.accepted and res.steps == 1 and torch.equal(res.x, x0 + step)


def test_line_search_skips_and_counts_nonfinite_candidates():
    x0 = torch.zeros(2, dtype=DT)
    step = torch.ones(2, dtype=DT)
    outcomes = iter([(math.nan, 0.0), (0.0, math.inf), (-math.inf, 0.0), (-1.0, 0.001)])
    res = backtracking_line_search(lambda x: next(outcomes), x0, step, loss0=0.0, max_kl=0.01)
    assert res.accepted and res.steps == 4 and res.rejected_nonfinite == 3
    torch.testing.assert_close(res.x, x0 + 0.8**3 * step, rtol=0, atol=1e-15)
    assert res.loss == -1.0 and res.kl == 0.001

    res = backtracking_line_search(lambda x: (math.nan, math.nan), x0, step, loss0=0.0,
                                   max_kl=0.01, max_steps=4)
    assert not res.accepted and res.rejected_nonfinite == 4 and torch.equal(res.x, x0)


# ----------------------------------------------------------------------------------------
# natural step
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("max_kl", [0.01, 0.3])
def test_natural_step_on_known_fisher(max_kl):
    n = 6
    fisher = _spd(n, 0.5, 4.0, seed=5)
    g = 10.0 * torch.randn(n, generator=torch.Generator().manual_seed(6), dtype=DT)
    step, expected = natural_step(g, lambda v: fisher @ v, max_kl, cg_iters=20)
    nat = torch.linalg.solve(fisher, g)
    want = -math.sqrt(2 * max_kl / float(g.dot(nat))) * nat
    torch.testing.assert_close(step, want, rtol=1e-8, atol=1e-12)
    assert float(0.5 * step @ fisher @ step) == pytest.approx(max_kl, rel=1e-10)
    assert expected == pytest.approx(math.sqrt(2 * max_kl * float(g.dot(nat))), rel=1e-8)
    assert expected > 0


@pytest.mark.parametrize("iters", [1, 3, 6])
def test_cg_tracks_the_product_of_its_answer_without_another_product(iters):
    """A x accumulated from CG's own products equals A x computed afresh, and CG asks for
    exactly one product per iteration (TRPO's step length used to take an eleventh)."""
    a = _spd(8, 0.5, 4.0, seed=7)
    b = torch.randn(8, generator=torch.Generator().manual_seed(8), dtype=DT)
    matvec, calls = _counted(a)
    x, ax = conjugate_gradient_and_product(matvec, b, iters=iters, residual_tol=1e-30)
    assert len(calls) == iters
    torch.testing.assert_close(ax, a @ x, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(x, conjugate_gradient(lambda v: a @ v, b, iters, 1e-30))


def test_dot_is_the_same_whatever_the_number_of_threads():
    g = torch.Generator().manual_seed(5)
    a, b = (torch.randn(100_003, generator=g) for _ in range(2))
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            results.append(dot(a, b))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(results[0], r) for r in results)
    torch.testing.assert_close(results[0].double(), a.double().dot(b.double()), rtol=1e-5,
                               atol=1e-3)
