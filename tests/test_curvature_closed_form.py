"""The closed-form pieces of rkmeta_rl.rl.curvature on a policy with two hidden layers
(where the R-operator's backward pass crosses a hidden-to-hidden layer), against autograd:
the REINFORCE Hessian against double backward of ``reinforce_loss``, the network's
products against ``torch.func.jvp``/``vjp``, and the whole closed-form curvature against
double backward through the weighted KL of the stage construction."""

from __future__ import annotations

import pytest
import torch

from rkmeta_rl.methods import get_tableau
from rkmeta_rl.rk import Scheme, repeat_params, stage_points
from rkmeta_rl.rl import episodes, mlp_products, reinforce_hessian
from rkmeta_rl.rl.config import MetaStepConfig
from rkmeta_rl.rl.curvature import (
    closed_form_gradient,
    curvature_fvp,
    double_backward_fvp,
    has_closed_form_curvature,
    moving,
    points_by_k1,
    stage_moves,
    stagewise_fvp,
)
from rkmeta_rl.rl.episodes import Episodes
from rkmeta_rl.rl.losses import reinforce_loss
from rkmeta_rl.rl.meta_step import meta_step
from rkmeta_rl.rl.mlp_products import linearize
from rkmeta_rl.rl.paths import DoubleBackward
from rkmeta_rl.rl.policy import GaussianMLPPolicy
from rkmeta_rl.rl.reinforce_hessian import ChunkedHessian
from rkmeta_rl.rl.sampler import LocalSampler
from rkmeta_rl.rl.streams import StreamKey
from rkmeta_rl.rl.tasks import Nav2DFamily
from rkmeta_rl.rl.trpo import flatten

DT = torch.float64
T, E, H, OBS, ACT = 3, 2, 4, 3, 2


@pytest.fixture(params=[8, 0], ids=["thin-ends", "general"])
def ends(request, monkeypatch):
    """The policy here (3 inputs, 2 actions, two hidden layers) takes the thin-ends
    products (mlp_products.ThinMLPLinearization, reinforce_hessian.ThinReinforceHessian);
    with THIN_ENDS = 0 it takes the general ones."""
    monkeypatch.setattr(mlp_products, "THIN_ENDS", request.param)
    return request.param


@pytest.fixture(params=[10_000, 16, 1], ids=["one-chunk", "two-tasks-per-chunk",
                                               "a-task-per-chunk"])
def chunk_rows(request, monkeypatch):
    """The closed-form products split the tasks into chunks of CHUNK_ROWS steps (E·H = 8
    per task here): all 3 tasks at once, chunks of 2 + 1 tasks, one task per chunk."""
    monkeypatch.setattr(episodes, "CHUNK_ROWS", request.param)
    return request.param


def _policy() -> GaussianMLPPolicy:
    torch.manual_seed(3)
    policy = GaussianMLPPolicy(OBS, ACT, hidden=(6, 5)).double()
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():  # a non-trivial output layer and log σ
        for p in policy.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=DT))
    return policy


def _episodes(seed: int) -> Episodes:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(T, E, H, dtype=DT)
    mask[0, 1, 2:] = 0.0  # an episode that ended early
    mask[2, 0, 1:] = 0.0
    obs = torch.randn(T, E, H, OBS, generator=g, dtype=DT) * mask.unsqueeze(-1)
    act = torch.randn(T, E, H, ACT, generator=g, dtype=DT) * mask.unsqueeze(-1)
    adv = torch.randn(T, E, H, generator=g, dtype=DT) * mask
    return Episodes(obs, act, torch.zeros_like(mask), mask, adv)


def _random_like(params: dict, seed: int, per_task: bool) -> dict:
    g = torch.Generator().manual_seed(seed)
    shape = (lambda v: (T, *v.shape)) if per_task else (lambda v: v.shape)
    return {n: torch.randn(shape(v), generator=g, dtype=DT) for n, v in params.items()}


def _per_task_point(policy: GaussianMLPPolicy) -> dict:
    """Per-task parameters that differ between tasks (like adapted stage points)."""
    theta = {n: v.detach() for n, v in policy.params().items()}
    shift = _random_like(theta, 9, per_task=True)
    return {n: v + 0.2 * shift[n] for n, v in repeat_params(theta, T).items()}


@pytest.mark.parametrize("point", ["shared", "per-task"])
@pytest.mark.parametrize("tangent", ["shared", "per-task"])
@pytest.mark.parametrize("per_task_out", [True, False])
def test_reinforce_hessian_equals_double_backward(point, tangent, per_task_out, ends):
    policy, ep = _policy(), _episodes(1)
    theta = {n: v.detach() for n, v in policy.params().items()}
    at = theta if point == "shared" else _per_task_point(policy)
    v = _random_like(theta, 5, per_task=tangent == "per-task")
    hessian = reinforce_hessian.reinforce_hessian(policy, at, ep)
    assert isinstance(hessian, reinforce_hessian.ThinReinforceHessian) == (ends > 0)
    got = hessian(v, per_task=per_task_out)

    # reference: per-task copies, Hessian of Σ_t L_t by double backward, tangent per task
    leaf = {n: (x if x.dim() > theta[n].dim() else x.expand(T, *x.shape)).clone()
            .requires_grad_() for n, x in at.items()}
    v_rep = {n: x if x.dim() > theta[n].dim() else x.expand(T, *x.shape) for n, x in v.items()}
    grads = torch.autograd.grad(reinforce_loss(policy, leaf, ep), list(leaf.values()),
                                create_graph=True)
    hv = torch.autograd.grad(grads, list(leaf.values()), [v_rep[n] for n in leaf])
    for (name, ref) in zip(leaf, hv, strict=True):
        expected = ref if per_task_out else ref.sum(0)
        assert expected.abs().max() > 1e-3
        torch.testing.assert_close(got[name], expected, rtol=1e-10, atol=1e-12)


def test_linearization_products_equal_autograd(ends):
    policy, ep = _policy(), _episodes(2)
    at = _per_task_point(policy)
    obs = ep.flat()[0]
    net = linearize(policy, at, obs)
    v = _random_like({n: x[0] for n, x in at.items()}, 6, per_task=True)  # (T, ...) each
    (mean, log_std), (d_mean, d_log_std) = torch.func.jvp(
        lambda p: policy(p, obs), (at,), (v,))
    torch.testing.assert_close(net.mean, mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(net.jvp_mean(v), d_mean, rtol=1e-10, atol=1e-12)
    g = torch.Generator().manual_seed(7)
    cot_mean = torch.randn(mean.shape, generator=g, dtype=DT)
    cot_log_std = torch.randn(T, ACT, generator=g, dtype=DT)
    _, pullback = torch.func.vjp(lambda p: policy(p, obs), at)
    expected = pullback((cot_mean, cot_log_std.unsqueeze(-2)))[0]
    for per_task in (True, False):
        got = net.vjp(cot_mean, cot_log_std, per_task)
        for name, ref in expected.items():
            torch.testing.assert_close(got[name], ref if per_task else ref.sum(0),
                                       rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("method", ["midpoint", "ralston", "heun", "itb", "euler"])
@pytest.mark.parametrize("first_order", [False, True])
def test_closed_form_curvature_equals_double_backward_through_the_kl(method, first_order,
                                                                     chunk_rows, ends):
    """The fast product against plain double backward through Σ_i w_i KL_i(θ_i(θ)), the
    yardstick implementation, on a two-hidden-layer policy."""
    policy, tab, h = _policy(), get_tableau(method), 0.6
    data = {i: _episodes(10 + i) for i in range(tab.stages)}
    theta = policy.params()
    cfg = MetaStepConfig(cg_damping=0.0, first_order=first_order)
    assert has_closed_form_curvature(tab, cfg)
    points = stage_points(repeat_params(theta, T), tab, h,
                          lambda i, p: reinforce_loss(policy, p, data[i]),
                          first_order=first_order)
    fast = curvature_fvp(policy, tab, h, data, points, theta, cfg)
    slow = double_backward_fvp(policy, Scheme.uniform(tab, h, theta), data, points, theta,
                               cfg)
    assert_same_products(fast, slow, flatten(theta).numel())


def assert_same_products(fast, slow, n: int) -> None:
    """``fast(v) == slow(v)`` (float64, 1e-9) on three seeded random directions v (n,)."""
    g = torch.Generator().manual_seed(8)
    for _ in range(3):
        v = torch.randn(n, generator=g, dtype=DT)
        expected = slow(v)
        assert expected.abs().max() > 1e-4
        torch.testing.assert_close(fast(v), expected, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("method", ["rk3", "rk4"])
@pytest.mark.parametrize("fraction", [1.0, 0.5])
def test_stagewise_curvature_equals_double_backward_through_the_kl(method, fraction):
    """The stagewise product for rk3 and rk4 (J_i with third and fourth derivatives)
    against plain double backward through Σ_i w_i KL_i(θ_i(θ)) on a two-hidden-layer
    policy, exact and with a curvature subsample."""
    policy, tab, h = _policy(), get_tableau(method), 0.6
    data = {i: _episodes(10 + i) for i in range(tab.stages)}
    theta = policy.params()
    cfg = MetaStepConfig(cg_damping=0.0, curvature_fraction=fraction)
    rep = repeat_params(theta, T)
    points = stage_points(rep, tab, h, lambda i, p: reinforce_loss(policy, p, data[i]))
    fast = stagewise_fvp(policy, tab, h, data, rep, points, theta, cfg)
    slow = double_backward_fvp(policy, Scheme.uniform(tab, h, theta), data, points, theta,
                               cfg)
    assert_same_products(fast, slow, flatten(theta).numel())


def test_closed_form_applies_only_where_points_move_by_k1():
    cfg = MetaStepConfig()
    assert all(has_closed_form_curvature(get_tableau(m), cfg)
               for m in ("euler", "midpoint", "heun", "ralston", "itb"))
    assert not has_closed_form_curvature(get_tableau("rk3"), cfg)
    assert not has_closed_form_curvature(get_tableau("rk4"), cfg)
    assert has_closed_form_curvature(get_tableau("rk4"), MetaStepConfig(first_order=True))


@pytest.mark.parametrize("method", ["midpoint", "ralston", "itb", "euler"])
@pytest.mark.parametrize("first_order", [False, True])
def test_closed_form_gradient_equals_autograd_through_the_stages(method, first_order,
                                                                 chunk_rows, ends):
    """∇_θ Σ_i a_i S_i(θ_i(θ)) by the closed form J_iᵀ = I - β_i H against plain autograd
    through the stage construction (create_graph), for a per-stage objective S_i that is
    not the inner loss (a quadratic in the policy's mean and log σ)."""
    policy, tab, h = _policy(), get_tableau(method), 0.6
    data = {i: _episodes(20 + i) for i in range(tab.stages)}
    theta = policy.params()
    cfg = MetaStepConfig(first_order=first_order)

    def objective(points):
        total = 0.0
        for i, (a, p) in enumerate(zip(tab.a, points, strict=True)):
            mean, log_std = policy(p, data[i].flat()[0])
            total = total + a * ((mean - 0.3).pow(2).mean() + log_std.pow(2).sum())
        return total

    def stage_loss(i, p):
        return reinforce_loss(policy, p, data[i])

    graph_points = stage_points(repeat_params(theta, T), tab, h, stage_loss,
                                first_order=first_order)
    expected = torch.autograd.grad(objective(graph_points), list(theta.values()))
    points = stage_points(repeat_params(theta, T), tab, h, stage_loss,
                          first_order=first_order, create_graph=False)
    moves = stage_moves(tab, h, theta, cfg)
    hessian = ChunkedHessian(policy, theta, data[0]) if any(map(moving, moves)) else None
    value, got = closed_form_gradient(objective, points, moves, hessian)
    torch.testing.assert_close(value, objective(graph_points).detach())
    for name, ref in zip(theta, expected, strict=True):
        torch.testing.assert_close(got[name], ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("method", ["midpoint", "ralston", "itb"])
def test_points_by_k1_equal_the_autograd_stage_points(method, chunk_rows):
    """k_1 from the closed form (each task's own REINFORCE gradient) and the points
    θ - h q_i1 k_1 against ``rk.stage_points`` with autograd."""
    policy, tab, h = _policy(), get_tableau(method), 0.6
    data = {i: _episodes(30 + i) for i in range(tab.stages)}
    theta = policy.params()
    expected = stage_points(repeat_params(theta, T), tab, h,
                            lambda i, p: reinforce_loss(policy, p, data[i]), create_graph=False)
    k1 = ChunkedHessian(policy, theta, data[0]).gradient()
    assert k1["w1"].shape == (T, *theta["w1"].shape)
    for got, ref in zip(points_by_k1(theta, k1, tab, h), expected, strict=True):
        for name in theta:
            torch.testing.assert_close(got[name], ref[name].detach(), rtol=1e-12, atol=1e-12)


def _meta_step_theta(tableau_or_scheme, h, seed=0, path=None, first_order=False):
    """θ after one meta-step on a small nav2d batch, sampled from a seeded generator."""
    torch.manual_seed(seed)
    policy = GaussianMLPPolicy(2, 2, hidden=(8, 8)).double()
    family = Nav2DFamily(max_episode_steps=10)
    family.seed(seed)
    tasks = family.sample_tasks(4)
    sampler = LocalSampler(family)

    def sample(stage, params):  # sampled in single precision, the step taken in double
        episodes = sampler(policy, {n: v.float() for n, v in params.items()}, tasks, 5,
                           StreamKey(seed, 0, stage))
        return Episodes(episodes.obs.double(), episodes.actions.double(),
                        episodes.rewards.double(), episodes.mask.double())

    res = meta_step(policy, sample, len(tasks), tableau_or_scheme, h,
                    MetaStepConfig(max_kl=0.05, first_order=first_order), path=path)
    return res, flatten(policy.params()).detach()


@pytest.mark.parametrize("method", ["midpoint", "heun"])
def test_meta_step_in_closed_form_equals_the_autograd_step(method, ends):
    """The whole TRPO meta-step (points, gradient, CG, line search) with the closed form
    against the same step through autograd (the scheme path: double backward through the
    stage construction), on the same episodes."""
    tab, h = get_tableau(method), 0.5
    fast, theta_fast = _meta_step_theta(tab, h)
    names = GaussianMLPPolicy(2, 2, hidden=(8, 8)).params()
    slow, theta_slow = _meta_step_theta(Scheme.uniform(tab, h, names), None,
                                        path=DoubleBackward)
    assert fast.accepted and slow.accepted
    assert fast.line_search_steps == slow.line_search_steps
    torch.testing.assert_close(theta_fast, theta_slow, rtol=1e-7, atol=1e-9)
    assert fast.expected_improvement == pytest.approx(slow.expected_improvement, rel=1e-6)


# A tableau per parameter group whose points move by k_1 alone: J_i = I - D_i H with D_i a
# move per parameter tensor (not symmetric), in closed form since the scheme path came to
# curvature.py; checked against double backward through the stage construction, which
# takes the groups' moves from rk.stage_points and knows nothing of D_i.
SCHEMES = {
    # ANIL: the output layer adapts by midpoint, the body and log σ stay put
    "anil": lambda n: ("midpoint" if n in ("w2", "b2") else "frozen:midpoint", 0.6),
    # midpoint everywhere, a step of its own per layer
    "steps": lambda n: ("midpoint", {"0": 0.3, "1": 0.6, "2": 0.9}.get(n[-1], 0.45)),
}


def _scheme(kind: str, names) -> Scheme:
    from rkmeta_rl.layer_methods import method_tableau

    rule = {n: SCHEMES[kind](n) for n in names}
    return Scheme({n: method_tableau(m) for n, (m, _) in rule.items()},
                  {n: h for n, (_, h) in rule.items()})


@pytest.mark.parametrize("kind", sorted(SCHEMES))
@pytest.mark.parametrize("first_order", [False, True])
def test_a_tableau_per_group_takes_the_closed_form_exactly(kind, first_order, chunk_rows,
                                                           ends):
    """Points, meta-gradient and curvature of a scheme in closed form against autograd
    through ``rk.stage_points`` (the points; the gradient by create_graph) and double
    backward through the weighted KL (the curvature), float64."""
    policy = _policy()
    theta = policy.params()
    scheme = _scheme(kind, theta)
    data = {i: _episodes(40 + i) for i in range(scheme.stages)}
    cfg = MetaStepConfig(cg_damping=0.0, first_order=first_order)
    assert has_closed_form_curvature(scheme, cfg)

    def stage_loss(i, p):
        return reinforce_loss(policy, p, data[i])

    graph_points = stage_points(repeat_params(theta, T), scheme, None, stage_loss,
                                first_order=first_order)
    hessian = ChunkedHessian(policy, theta, data[0])
    points = points_by_k1(theta, hessian.gradient(), scheme, None)
    for got, ref in zip(points, graph_points, strict=True):
        for name in theta:
            torch.testing.assert_close(got[name], ref[name].detach(), rtol=1e-12, atol=1e-12)
    moved = points[1]["w2"] - points[0]["w2"]
    frozen = points[1]["w0"] - points[0]["w0"]
    assert moved.abs().max() > 1e-3 and (frozen.abs().max() == 0) == (kind == "anil")

    def objective(pts):  # Σ_i a_i S_i, S_i a quadratic in the policy's output
        total = 0.0
        for i, p in enumerate(pts):
            mean, log_std = policy(p, data[i].flat()[0])
            a = scheme.weight(i)["w0"]
            total = total + a * ((mean - 0.3).pow(2).mean() + log_std.pow(2).sum())
        return total

    expected = torch.autograd.grad(objective(graph_points), list(theta.values()))
    _, got = closed_form_gradient(objective, points, stage_moves(scheme, None, theta, cfg),
                                  hessian)
    for name, ref in zip(theta, expected, strict=True):
        assert ref.abs().max() > 1e-4
        torch.testing.assert_close(got[name], ref, rtol=1e-10, atol=1e-12)

    fast = curvature_fvp(policy, scheme, None, data, points, theta, cfg)
    slow = double_backward_fvp(policy, scheme, data, points, theta, cfg)
    assert_same_products(fast, slow, flatten(theta).numel())


@pytest.mark.parametrize("kind,first_order", [("anil", False), ("rk4-head", True)])
def test_a_meta_step_per_group_in_closed_form_equals_the_double_backward_step(
        kind, first_order, ends):
    """A scheme's whole TRPO meta-step (points, gradient, CG, line search) in closed form
    against the same step forced through double backward, on the same episodes: ANIL, and
    in first-order mode an rk4 head on a frozen body (points through the stages, J_i = I)."""
    from rkmeta_rl.layer_methods import method_tableau

    names = GaussianMLPPolicy(2, 2, hidden=(8, 8)).params()
    if kind == "anil":
        scheme = _scheme("anil", names)
    else:
        scheme = Scheme({n: method_tableau("rk4" if n in ("w2", "b2") else "frozen:rk4")
                         for n in names}, dict.fromkeys(names, 0.5))
    fast, theta_fast = _meta_step_theta(scheme, None, first_order=first_order)
    slow, theta_slow = _meta_step_theta(scheme, None, path=DoubleBackward,
                                        first_order=first_order)
    assert fast.accepted and slow.accepted
    assert fast.line_search_steps == slow.line_search_steps
    assert (theta_fast - flatten(names).detach()).abs().max() > 1e-3
    torch.testing.assert_close(theta_fast, theta_slow, rtol=1e-7, atol=1e-9)
    assert fast.expected_improvement == pytest.approx(slow.expected_improvement, rel=1e-6)
