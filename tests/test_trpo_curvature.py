"""Tests for the KL curvature used by the RK-TRPO meta-step: the KL of the adapted policy
through the stage points, and the products of rkmeta_rl.rl.curvature that TRPO's conjugate
gradient uses (closed form, stagewise, double backward).

Reference values come from central finite differences of the KL gradient, plain double
backward through the whole stage construction, and the Gauss-Newton identity H = Jᵀ K J
at the old parameters, with the Jacobian J = I - αH_1 of the adaptation step built from
explicit Hessians.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from rkmeta_rl.layer_methods import method_tableau
from rkmeta_rl.methods import get_tableau
from rkmeta_rl.rk import Scheme, repeat_params, stage_points
from rkmeta_rl.rl import curvature
from rkmeta_rl.rl.config import MetaStepConfig
from rkmeta_rl.rl.episodes import Episodes
from rkmeta_rl.rl.losses import mean_kl, reinforce_loss
from rkmeta_rl.rl.policy import GaussianMLPPolicy
from rkmeta_rl.rl.trpo import flatten, unflatten

DT = torch.float64


# ----------------------------------------------------------------------------------------
# Curvature of the KL through the stage points (the meta-RL TRPO constraint)
# ----------------------------------------------------------------------------------------

N_TASKS, N_EP, HORIZON, OBS, ACT = 2, 3, 3, 2, 2
STEP_H = 0.8  # midpoint: adaptation step alpha = h / 2


def _fake_episodes(seed: int) -> Episodes:
    g = torch.Generator().manual_seed(seed)
    shape = (N_TASKS, N_EP, HORIZON)
    mask = torch.ones(shape, dtype=DT)
    mask[0, 1, 2:] = 0.0  # episodes ending early
    mask[1, 0, 1:] = 0.0
    obs = torch.randn(*shape, OBS, generator=g, dtype=DT) * mask.unsqueeze(-1)
    act = torch.randn(*shape, ACT, generator=g, dtype=DT) * mask.unsqueeze(-1)
    adv = torch.randn(shape, generator=g, dtype=DT) * mask
    return Episodes(obs, act, torch.zeros(shape, dtype=DT), mask, adv)


def _sub(ep: Episodes, t: int, n_eps: int = N_EP) -> Episodes:
    """Task t alone (leading dim 1), its first n_eps episodes."""
    sl = (slice(t, t + 1), slice(0, n_eps))
    return Episodes(ep.obs[sl], ep.actions[sl], ep.rewards[sl], ep.mask[sl], ep.advantages[sl])


class KLSetup:
    """Midpoint stage-2 KL as a function of the flat meta-parameters x."""

    def __init__(self):
        torch.manual_seed(0)
        self.policy = GaussianMLPPolicy(OBS, ACT, hidden=(5,)).double()
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():  # make the output layer and log_std non-trivial
            for p in self.policy.parameters():
                p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=DT))
        self.data = {0: _fake_episodes(10), 1: _fake_episodes(11)}
        self.tab = get_tableau("midpoint")
        self.like = {n: v.detach().clone() for n, v in self.policy.params().items()}
        self.x_old = flatten(self.like)
        pts = self.points(self.x_old.clone().requires_grad_())
        obs1 = self.data[1].flat()[0]
        with torch.no_grad():
            self.old_mean, self.old_log_std = self.policy(pts[1], obs1)

    def stage_loss(self, i, p):
        return reinforce_loss(self.policy, p, self.data[i])

    def points(self, x):
        th = unflatten(x, self.like)
        return stage_points(repeat_params(th, N_TASKS), self.tab, STEP_H, self.stage_loss)

    def kl(self, x):
        pts = self.points(x)
        return mean_kl(self.policy, pts[1], self.data[1], self.old_mean, self.old_log_std)

    def grad_kl(self, x, create_graph=False):
        x = x if x.requires_grad else x.detach().clone().requires_grad_()
        return torch.autograd.grad(self.kl(x), x, create_graph=create_graph)[0], x

    def hvp(self, x, v):
        g, xx = self.grad_kl(x, create_graph=True)
        return torch.autograd.grad(g.dot(v), xx)[0]

    def hessian(self, x):
        g, xx = self.grad_kl(x, create_graph=True)
        rows = [torch.autograd.grad(g[k], xx, retain_graph=True)[0] for k in range(g.numel())]
        return torch.stack(rows)


def _gauss_newton(setup, tab, h, n_eps=N_EP, first_order=False):
    """Σ_i w_i Σ_t J_itᵀ K_it J_it for a 1- or 2-stage tableau, w_i = |a_i| / Σ|a_j|.

    θ_2,t(θ) = θ - h q21 ∇L_1,t(θ) on the task's full stage-1 data (exact point);
    J_2t = I - h q21 ∇²L_1,t on its first n_eps episodes (identity when first_order);
    K_it = Hessian of task t's share of the stage-i KL (first n_eps episodes) at θ_i,t.
    At θ_old the KL gradient vanishes, so this is the exact Hessian of the weighted KL.
    """
    policy, like, x_old = setup.policy, setup.like, setup.x_old
    n = x_old.numel()
    total = sum(abs(a) for a in tab.a)
    weights = [abs(a) / total for a in tab.a]
    out = torch.zeros(n, n, dtype=DT)
    for t in range(N_TASKS):

        def inner(z, ep):
            return reinforce_loss(policy, repeat_params(unflatten(z, like), 1), ep)

        zz = x_old.clone().requires_grad_()
        g1 = torch.autograd.grad(inner(zz, _sub(setup.data[0], t)), zz)[0]
        for i, w in enumerate(weights):
            if w == 0:
                continue
            if i == 0:
                point, jac = x_old, torch.eye(n, dtype=DT)
            else:
                point = x_old - h * tab.q[1][0] * g1
                jac = torch.eye(n, dtype=DT)
                if not first_order:
                    hess1 = torch.autograd.functional.hessian(
                        lambda z, t=t: inner(z, _sub(setup.data[0], t, n_eps)), x_old
                    )
                    jac = jac - h * tab.q[1][0] * hess1
            ep = _sub(setup.data[i], t, n_eps)
            with torch.no_grad():
                old_mean, old_log_std = policy(repeat_params(unflatten(point, like), 1),
                                               ep.flat()[0])

            def task_kl(z, ep=ep, old_mean=old_mean, old_log_std=old_log_std, w=w):
                p = repeat_params(unflatten(z, like), 1)
                # mean over tasks: this task contributes 1/T of the stage's KL
                return w * mean_kl(policy, p, ep, old_mean, old_log_std) / N_TASKS

            k_it = torch.autograd.functional.hessian(task_kl, point)
            out += jac.T @ k_it @ jac
    return out


@pytest.fixture(scope="module")
def setup():
    return KLSetup()


def test_kl_zero_with_zero_gradient_at_old_params(setup):
    x = setup.x_old.clone().requires_grad_()
    kl = setup.kl(x)
    assert abs(kl.item()) < 1e-14
    g, _ = setup.grad_kl(setup.x_old)
    assert g.abs().max() < 1e-12


@pytest.mark.parametrize("where", ["old", "shifted"])
def test_kl_hvp_matches_finite_differences_of_gradient(setup, where):
    gen = torch.Generator().manual_seed(20)
    x = setup.x_old.clone()
    if where == "shifted":
        x = x + 0.05 * torch.randn(x.shape, generator=gen, dtype=DT)
    v = torch.randn(x.shape, generator=gen, dtype=DT)
    hv = setup.hvp(x, v)
    eps = 1e-5
    fd = (setup.grad_kl(x + eps * v)[0] - setup.grad_kl(x - eps * v)[0]) / (2 * eps)
    assert hv.abs().max() > 1e-3  # non-trivial curvature
    torch.testing.assert_close(hv, fd, rtol=1e-6, atol=1e-8)


def test_kl_hessian_symmetric_psd_and_gauss_newton(setup):
    hess = setup.hessian(setup.x_old)
    n = hess.shape[0]
    torch.testing.assert_close(hess, hess.T, rtol=1e-10, atol=1e-12)
    gen = torch.Generator().manual_seed(30)
    v, w = torch.randn(n, generator=gen, dtype=DT), torch.randn(n, generator=gen, dtype=DT)
    assert float(v @ setup.hvp(setup.x_old, w)) == pytest.approx(
        float(w @ setup.hvp(setup.x_old, v)), rel=1e-10
    )
    eig = torch.linalg.eigvalsh(hess)
    assert eig.min() > -1e-10 * eig.max()
    assert eig.max() > 1e-3
    expected = _gauss_newton(setup, setup.tab, STEP_H)
    torch.testing.assert_close(hess, expected, rtol=1e-9, atol=1e-11)


# --- rkmeta_rl.rl.curvature: the Gauss-Newton products used by TRPO -----------------------

_curvature_fvp = curvature.stagewise_fvp


IMPLS = ["closed-form", "stagewise"]


def _library_fvp(setup, tab, impl="stagewise", **cfg_kw):
    policy = setup.policy
    theta = policy.params()
    known = {f.name for f in dataclasses.fields(MetaStepConfig)}
    cfg = MetaStepConfig(**{k: v for k, v in cfg_kw.items() if k in known})

    def stage_loss(i, p):
        return reinforce_loss(policy, p, setup.data[i])

    rep = repeat_params(theta, N_TASKS)
    points = stage_points(rep, tab, STEP_H, stage_loss, first_order=cfg.first_order,
                          create_graph=True)
    data = {i: setup.data[i] for i in range(tab.stages)}
    if impl == "closed-form":
        assert curvature.has_closed_form_curvature(tab, cfg)
        return curvature.curvature_fvp(policy, tab, STEP_H, data, points, theta, cfg)
    return _curvature_fvp(policy, tab, STEP_H, data, rep, points, theta, cfg)


def _probe_vectors(n, k=3, seed=40):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(n, generator=gen, dtype=DT) for _ in range(k)]


@pytest.mark.parametrize("impl", IMPLS)
def test_curvature_fvp_exact_midpoint(setup, impl):
    fvp = _library_fvp(setup, setup.tab, impl, cg_damping=0.0)
    expected = _gauss_newton(setup, setup.tab, STEP_H)
    for v in _probe_vectors(setup.x_old.numel()):
        got = fvp(v)
        torch.testing.assert_close(got, expected @ v, rtol=1e-9, atol=1e-11)
        torch.testing.assert_close(got, setup.hvp(setup.x_old, v), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("impl", IMPLS)
def test_curvature_fvp_damping(setup, impl):
    v = _probe_vectors(setup.x_old.numel(), k=1)[0]
    plain = _library_fvp(setup, setup.tab, impl, cg_damping=0.0)(v)
    damped = _library_fvp(setup, setup.tab, impl, cg_damping=0.25)(v)
    torch.testing.assert_close(damped - plain, 0.25 * v, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["heun", "ralston", "euler"])
@pytest.mark.parametrize("impl", IMPLS)
def test_curvature_fvp_weighted_stages(setup, name, impl):
    tab = get_tableau(name)
    fvp = _library_fvp(setup, tab, impl, cg_damping=0.0)
    expected = _gauss_newton(setup, tab, STEP_H)
    for v in _probe_vectors(setup.x_old.numel()):
        torch.testing.assert_close(fvp(v), expected @ v, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("impl", IMPLS)
def test_curvature_fvp_first_order(setup, impl):
    tab = get_tableau("heun")
    fvp = _library_fvp(setup, tab, impl, cg_damping=0.0, first_order=True)
    expected = _gauss_newton(setup, tab, STEP_H, first_order=True)
    for v in _probe_vectors(setup.x_old.numel()):
        torch.testing.assert_close(fvp(v), expected @ v, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("fraction", [0.5, 0.34])
@pytest.mark.parametrize("impl", IMPLS)
def test_curvature_fvp_episode_subsample(setup, fraction, impl):
    """Subsample: exact points, Jacobian and KL from the first ⌈f·E⌉ episodes."""
    keep = math.ceil(fraction * N_EP)
    assert keep < N_EP
    fvp = _library_fvp(setup, setup.tab, impl, cg_damping=0.0, curvature_fraction=fraction,
                       curvature_chunk=1)
    expected = _gauss_newton(setup, setup.tab, STEP_H, n_eps=keep)
    exact = _gauss_newton(setup, setup.tab, STEP_H)
    for v in _probe_vectors(setup.x_old.numel()):
        got = fvp(v)
        torch.testing.assert_close(got, expected @ v, rtol=1e-9, atol=1e-11)
        assert (got - exact @ v).abs().max() > 1e-6  # it is an approximation indeed


@pytest.mark.parametrize("name", ["rk3", "rk4", "heun"])
def test_curvature_fvp_equals_double_backward_for_any_tableau(setup, name):
    """3- and 4-stage Jacobians involve third derivatives; the Gauss-Newton product must
    still equal the Hessian of the weighted KL Σ w_i KL_i(θ_i(θ)) taken by plain double
    backward through the whole stage construction."""
    tab = get_tableau(name)
    policy, like = setup.policy, setup.like
    data = {i: setup.data[i % 2] for i in range(tab.stages)}
    weights = [abs(a) / sum(abs(b) for b in tab.a) for a in tab.a]

    def points(x):
        return stage_points(repeat_params(unflatten(x, like), N_TASKS), tab, STEP_H,
                            lambda i, p: reinforce_loss(policy, p, data[i]))

    with torch.no_grad():
        old = [policy(p, data[i].flat()[0]) for i, p in
               enumerate(points(setup.x_old.clone().requires_grad_()))]

    def kl(x):
        return sum(w * mean_kl(policy, p, data[i], *old[i])
                   for i, (w, p) in enumerate(zip(weights, points(x), strict=True)) if w)

    xx = setup.x_old.clone().requires_grad_()
    grad = torch.autograd.grad(kl(xx), xx, create_graph=True)[0]
    cfg = MetaStepConfig(cg_damping=0.0)
    theta = policy.params()
    rep = repeat_params(theta, N_TASKS)
    pts = stage_points(rep, tab, STEP_H, lambda i, p: reinforce_loss(policy, p, data[i]))
    fvp = _curvature_fvp(policy, tab, STEP_H, data, rep, pts, theta, cfg)
    for v in _probe_vectors(setup.x_old.numel()):
        expected = torch.autograd.grad(grad.dot(v), xx, retain_graph=True)[0]
        assert expected.abs().max() > 1e-4
        torch.testing.assert_close(fvp(v), expected, rtol=1e-8, atol=1e-10)


def _scheme(setup, head_method: str, body_method: str) -> Scheme:
    names = list(setup.like)
    tableaus = {n: method_tableau(head_method if n in ("w1", "b1") else body_method)
                for n in names}
    return Scheme(tableaus, {n: 0.0 if t.name.startswith("frozen:") else STEP_H
                             for n, t in tableaus.items()})


def _points(setup, scheme: Scheme, data=None) -> list:
    data = setup.data if data is None else data
    return stage_points(repeat_params(setup.policy.params(), N_TASKS), scheme, None,
                        lambda i, p: reinforce_loss(setup.policy, p, data[i]))


def test_double_backward_fvp_for_a_tableau_per_group(setup):
    """ANIL (midpoint head, frozen body): the KL Hessian through θ_2 = θ - (h/2) P_head k_1,
    built here by hand, against the scheme's double-backward product."""
    policy, like, data = setup.policy, setup.like, setup.data
    scheme = _scheme(setup, "midpoint", "frozen:midpoint")

    def point2(x):
        rep = repeat_params(unflatten(x, like), N_TASKS)
        k1 = torch.autograd.grad(reinforce_loss(policy, rep, data[0]), list(rep.values()),
                                 create_graph=True)
        return {n: v - 0.5 * STEP_H * k if n in ("w1", "b1") else v
                for (n, v), k in zip(rep.items(), k1, strict=True)}

    old = tuple(t.detach() for t in policy(point2(setup.x_old.clone().requires_grad_()),
                                           data[1].flat()[0]))
    xx = setup.x_old.clone().requires_grad_()
    grad = torch.autograd.grad(mean_kl(policy, point2(xx), data[1], *old), xx,
                               create_graph=True)[0]
    fvp = curvature.double_backward_fvp(policy, scheme, data, _points(setup, scheme),
                                        policy.params(), MetaStepConfig(cg_damping=0.0))
    for v in _probe_vectors(setup.x_old.numel()):
        expected = torch.autograd.grad(grad.dot(v), xx, retain_graph=True)[0]
        assert expected.abs().max() > 1e-4
        torch.testing.assert_close(fvp(v), expected, rtol=1e-8, atol=1e-10)


def test_double_backward_fvp_equals_the_fast_product_for_one_tableau(setup):
    policy, data = setup.policy, setup.data
    theta = policy.params()
    cfg = MetaStepConfig(cg_damping=0.0)
    scheme = _scheme(setup, "midpoint", "midpoint")
    slow = curvature.double_backward_fvp(policy, scheme, data, _points(setup, scheme), theta,
                                         cfg)
    fast = _library_fvp(setup, setup.tab, "closed-form", cg_damping=0.0)
    for v in _probe_vectors(setup.x_old.numel()):
        torch.testing.assert_close(slow(v), fast(v), rtol=1e-8, atol=1e-10)


# --- --curvature-fraction on every path, against the definition ---------------------------


def _first_episodes(ep: Episodes, keep: int) -> Episodes:
    return Episodes(*(x[:, :keep] for x in (ep.obs, ep.actions, ep.rewards, ep.mask,
                                              ep.advantages)))


def _definition_fvp(setup, method, data, fraction):
    """The curvature docs/method.md defines, by plain double backward: the Hessian at θ_old
    of Σ_i w_i KL(π_{θ_i} || π_{θ_i + θ̃_i(θ) - θ̃_i(θ_old)}) on the first ⌈f·E⌉ episodes'
    states, with θ_i the exact stage points (all episodes) and θ̃_i the stage construction
    rebuilt on the subsample."""
    policy, like, x_old = setup.policy, setup.like, setup.x_old
    keep = math.ceil(fraction * N_EP)
    sub = {i: _first_episodes(ep, keep) for i, ep in data.items()}
    h = None if isinstance(method, Scheme) else STEP_H
    tab = next(iter(method.tableaus.values())) if isinstance(method, Scheme) else method
    weights = [abs(a) / sum(abs(b) for b in tab.a) for a in tab.a]

    def points(x, d):
        return stage_points(repeat_params(unflatten(x, like), N_TASKS), method, h,
                            lambda i, p: reinforce_loss(policy, p, d[i]))

    def values(d):
        return [{n: v.detach() for n, v in p.items()}
                for p in points(x_old.clone().requires_grad_(), d)]

    exact, sub_old = values(data), values(sub)
    with torch.no_grad():
        old = [policy(exact[i], sub[i].flat()[0]) for i in range(tab.stages)]

    def kl(x):
        moving = points(x, sub)
        return sum(w * mean_kl(policy, {n: exact[i][n] + moving[i][n] - sub_old[i][n]
                                        for n in like}, sub[i], *old[i])
                   for i, w in enumerate(weights) if w)

    xx = x_old.clone().requires_grad_()
    grad = torch.autograd.grad(kl(xx), xx, create_graph=True)[0]
    return lambda v: torch.autograd.grad(grad.dot(v), xx, retain_graph=True)[0]


PATHS = [("closed-form", "midpoint"), ("closed-form", "heun"), ("stagewise", "midpoint"),
         ("stagewise", "rk3"), ("double-backward", "midpoint/frozen:midpoint"),
         ("double-backward", "rk3/rk3")]


@pytest.mark.parametrize("fraction", [1.0, 0.5, 0.3])
@pytest.mark.parametrize("path,method", PATHS)
def test_every_curvature_path_and_fraction_equals_the_definition(setup, path, method,
                                                                 fraction):
    """Each product (closed form, stagewise, double backward for a tableau per group) with
    --curvature-fraction f against the defined curvature written here by double backward:
    exact points, the subsample's states and stage Jacobians."""
    policy = setup.policy
    tab = (_scheme(setup, *method.split("/")) if path == "double-backward"
           else get_tableau(method))
    data = {i: setup.data[i % 2] for i in range(tab.stages)}
    theta = policy.params()
    cfg = MetaStepConfig(cg_damping=0.0, curvature_fraction=fraction)
    rep = repeat_params(theta, N_TASKS)
    h = None if path == "double-backward" else STEP_H
    points = stage_points(rep, tab, h, lambda i, p: reinforce_loss(policy, p, data[i]))
    if path == "closed-form":
        assert curvature.has_closed_form_curvature(tab, cfg)
        fvp = curvature.curvature_fvp(policy, tab, STEP_H, data, points, theta, cfg)
    elif path == "stagewise":
        fvp = curvature.stagewise_fvp(policy, tab, STEP_H, data, rep, points, theta, cfg)
    else:
        fvp = curvature.double_backward_fvp(policy, tab, data, points, theta, cfg)
    expected = _definition_fvp(setup, tab, data, fraction)
    for v in _probe_vectors(setup.x_old.numel()):
        want = expected(v)
        assert want.abs().max() > 1e-4
        torch.testing.assert_close(fvp(v), want, rtol=1e-9, atol=1e-11)
