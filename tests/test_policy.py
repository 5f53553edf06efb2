"""Tests for rkmeta_rl.rl.policy against torch.distributions and a hand-written numpy MLP."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.distributions import Normal, kl_divergence

from rkmeta_rl.rk import repeat_params
from rkmeta_rl.rl.policy import (
    GaussianMLPPolicy,
    gaussian_kl,
    gaussian_log_prob,
    sample_actions,
)

DT = torch.float64


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _numpy_forward(params, obs):
    """Unbatched reference MLP: ReLU hidden layers, linear output."""
    n_layers = sum(1 for k in params if k.startswith("w"))
    h = obs
    for layer in range(n_layers):
        h = h @ params[f"w{layer}"] + params[f"b{layer}"]
        if layer < n_layers - 1:
            h = np.maximum(h, 0.0)
    return h, params["log_std"]


def _random_params(policy, gen, lead=()):
    return {
        n: torch.randn(*lead, *v.shape, generator=gen, dtype=DT)
        for n, v in policy.named_parameters()
    }


def test_gaussian_log_prob_matches_torch_normal():
    g = _gen(0)
    mean = torch.randn(3, 4, 2, generator=g, dtype=DT)
    log_std = torch.randn(2, generator=g, dtype=DT)
    u = torch.randn(3, 4, 2, generator=g, dtype=DT)
    want = Normal(mean, log_std.exp()).log_prob(u).sum(-1)
    got = gaussian_log_prob(mean, log_std.unsqueeze(0).unsqueeze(0), u)
    assert got.shape == (3, 4)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    # per-element log_std too
    log_std_full = torch.randn(3, 4, 2, generator=g, dtype=DT)
    want = Normal(mean, log_std_full.exp()).log_prob(u).sum(-1)
    torch.testing.assert_close(gaussian_log_prob(mean, log_std_full, u), want, rtol=1e-12,
                               atol=1e-12)


def test_gaussian_kl_matches_torch_kl_divergence():
    g = _gen(1)
    m0, m1 = torch.randn(5, 3, generator=g, dtype=DT), torch.randn(5, 3, generator=g, dtype=DT)
    s0, s1 = torch.randn(5, 3, generator=g, dtype=DT), torch.randn(5, 3, generator=g, dtype=DT)
    want = kl_divergence(Normal(m0, s0.exp()), Normal(m1, s1.exp())).sum(-1)
    got = gaussian_kl(m0, s0, m1, s1)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert torch.all(got >= 0)
    torch.testing.assert_close(gaussian_kl(m0, s0, m0, s0), torch.zeros(5, dtype=DT))


def test_forward_matches_numpy_mlp():
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(3, 2, hidden=(4, 5)).double()
    params = _random_params(policy, _gen(2))
    obs = torch.randn(7, 3, generator=_gen(3), dtype=DT)
    mean, log_std = policy(params, obs)
    want_mean, want_log_std = _numpy_forward({k: v.numpy() for k, v in params.items()},
                                             obs.numpy())
    assert mean.shape == (7, 2)
    np.testing.assert_allclose(mean.numpy(), want_mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        torch.broadcast_to(log_std, mean.shape).numpy(),
        np.broadcast_to(want_log_std, (7, 2)),
    )


def test_batched_params_equal_per_task_calls():
    torch.manual_seed(1)
    policy = GaussianMLPPolicy(2, 3, hidden=(6,)).double()
    n_tasks = 4
    params = _random_params(policy, _gen(4), lead=(n_tasks,))
    obs = torch.randn(n_tasks, 5, 2, generator=_gen(5), dtype=DT)
    mean, log_std = policy(params, obs)
    assert mean.shape == (n_tasks, 5, 3)
    for t in range(n_tasks):
        single = {k: v[t] for k, v in params.items()}
        m_t, s_t = policy(single, obs[t])
        torch.testing.assert_close(mean[t], m_t, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(
            torch.broadcast_to(log_std[t], m_t.shape), torch.broadcast_to(s_t, m_t.shape)
        )
        want, _ = _numpy_forward({k: v.numpy() for k, v in single.items()}, obs[t].numpy())
        np.testing.assert_allclose(mean[t].numpy(), want, rtol=1e-12, atol=1e-12)


def test_repeat_params_gives_equal_tasks_and_summed_gradient():
    torch.manual_seed(2)
    policy = GaussianMLPPolicy(2, 2, hidden=(3,)).double()
    theta = policy.params()
    rep = repeat_params(theta, 3)
    obs = torch.randn(3, 4, 2, generator=_gen(6), dtype=DT)
    mean, _ = policy(rep, obs)
    for t in range(3):
        torch.testing.assert_close(mean[t], policy(theta, obs[t])[0])
    # d/dθ Σ_t f(θ, obs_t) = Σ_t d/dθ f(θ, obs_t)
    (g_rep,) = torch.autograd.grad(mean.sum(), [theta["w0"]])
    g_sum = sum(torch.autograd.grad(policy(theta, obs[t])[0].sum(), [theta["w0"]])[0]
                for t in range(3))
    torch.testing.assert_close(g_rep, g_sum)


def test_forward_with_other_params_leaves_module_untouched():
    torch.manual_seed(3)
    policy = GaussianMLPPolicy(2, 2, hidden=(4,)).double()
    before = {k: v.detach().clone() for k, v in policy.state_dict().items()}
    other = {k: v.requires_grad_() for k, v in _random_params(policy, _gen(7)).items()}
    obs = torch.randn(6, 2, generator=_gen(8), dtype=DT)
    mean, log_std = policy(other, obs)
    (mean.sum() + log_std.sum()).backward()
    for k, v in policy.state_dict().items():
        assert torch.equal(v, before[k])
    assert all(p.grad is None for p in policy.parameters())
    assert all(v.grad is not None for v in other.values())
    want, _ = _numpy_forward({k: v.detach().numpy() for k, v in other.items()}, obs.numpy())
    np.testing.assert_allclose(mean.detach().numpy(), want, rtol=1e-12, atol=1e-12)


def test_initialisation():
    torch.manual_seed(4)
    policy = GaussianMLPPolicy(3, 2, hidden=(8, 8), init_std=0.5)
    p = policy.params()
    assert set(p) == {"w0", "b0", "w1", "b1", "w2", "b2", "log_std"}
    assert p["w0"].shape == (3, 8) and p["w2"].shape == (8, 2) and p["b2"].shape == (2,)
    torch.testing.assert_close(p["log_std"].detach(), torch.full((2,), math.log(0.5)))
    assert torch.all(p["b2"] == 0)
    assert p["w2"].abs().max() <= 0.01 / math.sqrt(8) + 1e-9  # small output layer
    assert p["w0"].abs().max() <= 1 / math.sqrt(3) + 1e-9


@pytest.mark.parametrize("init_std", [0.0, -1.0])
def test_invalid_init_std_raises(init_std):
    with pytest.raises(ValueError):
        GaussianMLPPolicy(2, 2, hidden=(4,), init_std=init_std)


@pytest.mark.parametrize("hidden", [(), (0,), (4, -2), []])
def test_invalid_hidden_raises(hidden):
    with pytest.raises(ValueError):
        GaussianMLPPolicy(2, 2, hidden=hidden)


def test_sample_actions_scales_the_given_normals():
    g = _gen(9)
    mean = torch.randn(4, 3, generator=g, dtype=DT)
    log_std = torch.randn(3, generator=g, dtype=DT)
    eps = torch.randn(mean.shape, generator=_gen(10), dtype=DT)
    u = sample_actions(mean, log_std, eps)
    torch.testing.assert_close(u, mean + log_std.exp() * eps, rtol=0, atol=0)
    eps = torch.randn(20000, 1, generator=_gen(11))
    big = sample_actions(torch.zeros(20000, 1, dtype=DT), torch.tensor([math.log(2.0)],
                                                                          dtype=DT), eps)
    assert abs(big.mean().item()) < 0.06
    assert big.std().item() == pytest.approx(2.0, rel=0.03)
