"""Tests for rkmeta_rl.rl.baseline against hand-written loops and numpy least squares."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rkmeta_rl.rl.baseline import (
    baseline_features,
    discounted_returns,
    fit_linear_baseline,
    gae,
    normalize_per_task,
)

DT = torch.float64
GAMMA = 0.9


def _episode_data(seed: int = 0):
    """(T=2, E=3, H=5) rewards and values with episodes of lengths 5, 3, 1 / 2, 5, 4."""
    g = torch.Generator().manual_seed(seed)
    lengths = [[5, 3, 1], [2, 5, 4]]
    mask = torch.zeros(2, 3, 5, dtype=DT)
    for t, row in enumerate(lengths):
        for e, n in enumerate(row):
            mask[t, e, :n] = 1.0
    rewards = torch.randn(2, 3, 5, generator=g, dtype=DT) * mask
    # garbage after the end: must be ignored
    values = torch.randn(2, 3, 5, generator=g, dtype=DT)
    values = torch.where(mask > 0, values, torch.full_like(values, 1e6))
    return rewards, values, mask, lengths


def _hand_returns(rewards, lengths, gamma):
    out = np.zeros(rewards.shape)
    r = rewards.numpy()
    for t, row in enumerate(lengths):
        for e, n in enumerate(row):
            for s in range(n):
                out[t, e, s] = sum(gamma ** (k - s) * r[t, e, k] for k in range(s, n))
    return out


def test_discounted_returns_hand_loop():
    rewards, _, mask, lengths = _episode_data()
    got = discounted_returns(rewards, mask, GAMMA)
    np.testing.assert_allclose(got.numpy(), _hand_returns(rewards, lengths, GAMMA), atol=1e-12)
    assert torch.all(got[mask == 0] == 0)


def test_discounted_returns_ignore_rewards_on_padding():
    rewards, _, mask, lengths = _episode_data(1)
    noisy = rewards + 5.0 * (1 - mask)
    np.testing.assert_allclose(
        discounted_returns(noisy, mask, GAMMA).numpy(),
        _hand_returns(rewards, lengths, GAMMA), atol=1e-12,
    )


def test_gae_lambda_one_is_returns_minus_values():
    rewards, values, mask, lengths = _episode_data(2)
    adv = gae(rewards, values, mask, GAMMA, 1.0)
    expected = (_hand_returns(rewards, lengths, GAMMA) - values.numpy()) * mask.numpy()
    np.testing.assert_allclose(adv.numpy(), expected, atol=1e-10)


def test_gae_lambda_zero_is_td_residual():
    rewards, values, mask, lengths = _episode_data(3)
    adv = gae(rewards, values, mask, GAMMA, 0.0).numpy()
    r, v = rewards.numpy(), values.numpy()
    for t, row in enumerate(lengths):
        for e, n in enumerate(row):
            for s in range(5):
                if s >= n:
                    assert adv[t, e, s] == 0.0
                    continue
                next_v = v[t, e, s + 1] if s + 1 < n else 0.0
                assert adv[t, e, s] == pytest.approx(r[t, e, s] + GAMMA * next_v - v[t, e, s],
                                                     abs=1e-12)


def test_gae_general_lambda_matches_sum_of_residuals():
    rewards, values, mask, lengths = _episode_data(4)
    lam = 0.7
    adv = gae(rewards, values, mask, GAMMA, lam).numpy()
    r, v = rewards.numpy(), values.numpy()
    for t, row in enumerate(lengths):
        for e, n in enumerate(row):
            deltas = [r[t, e, s] + GAMMA * (v[t, e, s + 1] if s + 1 < n else 0.0) - v[t, e, s]
                      for s in range(n)]
            for s in range(n):
                want = sum((GAMMA * lam) ** (k - s) * deltas[k] for k in range(s, n))
                assert adv[t, e, s] == pytest.approx(want, abs=1e-10)


def test_baseline_features_layout():
    obs = torch.tensor([[[[1.0, -2.0], [3.0, 0.5], [9.0, 9.0]]]], dtype=DT)  # (1, 1, 3, 2)
    mask = torch.tensor([[[1.0, 1.0, 0.0]]], dtype=DT)
    f = baseline_features(obs, mask)
    assert f.shape == (1, 1, 3, 8)
    t1 = 0.01
    np.testing.assert_allclose(f[0, 0, 0].numpy(), [1, -2, 1, 4, 0, 0, 0, 1])
    np.testing.assert_allclose(f[0, 0, 1].numpy(), [3, 0.5, 9, 0.25, t1, t1**2, t1**3, 1])
    assert torch.all(f[0, 0, 2] == 0)


# ----------------------------------------------------------------------------------------
# fit_linear_baseline
# ----------------------------------------------------------------------------------------


def test_fit_linear_baseline_matches_lstsq():
    g = torch.Generator().manual_seed(5)
    n_tasks, n_feat = 3, 4
    x = torch.randn(n_tasks, 4, 10, n_feat, generator=g, dtype=DT)
    true_w = torch.randn(n_tasks, n_feat, generator=g, dtype=DT)
    y = torch.einsum("tehf,tf->teh", x, true_w) + 0.1 * torch.randn(
        n_tasks, 4, 10, generator=g, dtype=DT
    )
    coef = fit_linear_baseline(x, y)
    assert coef.shape == (n_tasks, n_feat) and coef.dtype == DT
    for t in range(n_tasks):
        xt = x[t].reshape(-1, n_feat).numpy()
        yt = y[t].reshape(-1).numpy()
        w_ls = np.linalg.lstsq(xt, yt, rcond=None)[0]
        np.testing.assert_allclose(coef[t].numpy(), w_ls, rtol=1e-5, atol=1e-6)
        # and the exact ridge solution with the documented reg = 1e-5
        w_ridge = np.linalg.solve(xt.T @ xt + 1e-5 * np.eye(n_feat), xt.T @ yt)
        np.testing.assert_allclose(coef[t].numpy(), w_ridge, rtol=1e-9, atol=1e-11)


def test_fit_linear_baseline_float32_and_padding_rows():
    g = torch.Generator().manual_seed(6)
    obs = torch.randn(2, 3, 6, 2, generator=g)
    mask = torch.ones(2, 3, 6)
    mask[0, 0, 3:] = 0
    mask[1, 2, 1:] = 0
    rewards = torch.randn(2, 3, 6, generator=g) * mask
    feats = baseline_features(obs, mask)
    returns = discounted_returns(rewards, mask, 0.99)
    coef = fit_linear_baseline(feats, returns)
    assert coef.dtype == torch.float32
    for t in range(2):
        keep = mask[t].reshape(-1) > 0
        xt = feats[t].reshape(-1, feats.shape[-1])[keep].double().numpy()
        yt = returns[t].reshape(-1)[keep].double().numpy()
        w_ridge = np.linalg.solve(xt.T @ xt + 1e-5 * np.eye(xt.shape[1]), xt.T @ yt)
        np.testing.assert_allclose(coef[t].double().numpy(), w_ridge, rtol=1e-4, atol=1e-4)


def _ridge(feats, returns, mask, t, reg=1e-5):
    keep = mask[t].reshape(-1) > 0
    xt = feats[t].reshape(-1, feats.shape[-1])[keep].double().numpy()
    yt = returns[t].reshape(-1)[keep].double().numpy()
    w = np.linalg.solve(xt.T @ xt + reg * np.eye(xt.shape[1]), xt.T @ yt)
    return xt, yt, w


def test_fit_linear_baseline_degenerate_episodes():
    g = torch.Generator().manual_seed(7)
    n_tasks, n_ep, horizon = 3, 4, 8
    obs = torch.randn(n_tasks, n_ep, horizon, 2, generator=g, dtype=DT)
    mask = torch.ones(n_tasks, n_ep, horizon, dtype=DT)
    obs[0] = torch.tensor([0.3, -0.7], dtype=DT)  # task 0: every observation equal
    mask[1, :, 1:] = 0.0  # task 1: every episode ends at its first step
    mask[2] = 0.0  # task 2: no valid step at all
    rewards = torch.randn(n_tasks, n_ep, horizon, generator=g, dtype=DT) * mask
    feats = baseline_features(obs, mask)
    returns = discounted_returns(rewards, mask, 0.99)
    coef = fit_linear_baseline(feats, returns)
    assert coef.shape == (n_tasks, feats.shape[-1])
    assert torch.isfinite(coef).all()
    assert torch.all(coef[2] == 0)
    for t in (0, 1):
        # rank-deficient features: the ridge term makes the solution unique
        xt, yt, w = _ridge(feats, returns, mask, t)
        pred = xt @ coef[t].numpy()
        np.testing.assert_allclose(pred, xt @ w, rtol=1e-7, atol=1e-9)
        # and the baseline explains part of the returns (never worse than no baseline)
        assert np.sum((yt - pred) ** 2) < np.sum(yt**2)


@pytest.mark.parametrize("scale", [1e2, 1e4])
def test_fit_linear_baseline_badly_scaled_constant_observations(scale):
    """XᵀX far too ill-conditioned for reg = 1e-5: finite, and no worse than zero."""
    g = torch.Generator().manual_seed(8)
    obs = torch.full((1, 3, 6, 2), scale, dtype=torch.float32)
    mask = torch.ones(1, 3, 6)
    rewards = torch.randn(1, 3, 6, generator=g)
    feats = baseline_features(obs, mask)
    returns = discounted_returns(rewards, mask, 0.99)
    coef = fit_linear_baseline(feats, returns)
    assert coef.shape == (1, 8) and torch.isfinite(coef).all()
    xt = feats[0].reshape(-1, 8).double().numpy()
    yt = returns[0].reshape(-1).double().numpy()
    resid = np.sum((yt - xt @ coef[0].double().numpy()) ** 2)
    assert resid <= np.sum(yt**2) * (1 + 1e-6)


def test_fit_linear_baseline_all_zero_input_gives_zero():
    feats = torch.zeros(2, 2, 3, 5, dtype=DT)
    coef = fit_linear_baseline(feats, torch.zeros(2, 2, 3, dtype=DT))
    assert torch.equal(coef, torch.zeros(2, 5, dtype=DT))


# ----------------------------------------------------------------------------------------
# normalize_per_task
# ----------------------------------------------------------------------------------------


def test_normalize_per_task():
    _, _, mask, _ = _episode_data(8)
    g = torch.Generator().manual_seed(9)
    adv = 3.0 + 5.0 * torch.randn(mask.shape, generator=g, dtype=DT)
    adv[1] += 100.0  # tasks with very different scales
    out = normalize_per_task(adv * mask + 7.0 * (1 - mask), mask)
    for t in range(mask.shape[0]):
        m = mask[t].numpy() > 0
        vals = out[t].numpy()[m]
        assert vals.mean() == pytest.approx(0.0, abs=1e-12)
        assert vals.std() == pytest.approx(1.0, abs=1e-6)  # population std
        raw = adv[t].numpy()[m]
        np.testing.assert_allclose(vals, (raw - raw.mean()) / raw.std(), rtol=1e-6, atol=1e-7)
    assert torch.all(out[mask == 0] == 0)


def test_normalize_per_task_empty_or_constant_task_is_finite():
    mask = torch.ones(2, 2, 3, dtype=DT)
    mask[0] = 0.0
    adv = torch.full((2, 2, 3), 4.0, dtype=DT)
    out = normalize_per_task(adv, mask)
    assert torch.isfinite(out).all()
    assert torch.all(out == 0)


# ----------------------------------------------------------------------------------------
# rows of several episodes (segments): MAML's sampling restarts ended episodes in a row
# ----------------------------------------------------------------------------------------

# (T=2, E=2, H=7): each row's segments as (first step, length); the rest is padding
SEGMENTS = [[[(0, 3), (3, 4)], [(0, 7)]],
            [[(0, 1), (1, 2), (3, 4)], [(0, 2), (2, 3)]]]


def _segmented_data(seed: int = 0):
    """rewards, values, obs (d=2), mask, starts of :data:`SEGMENTS`, garbage on padding."""
    g = torch.Generator().manual_seed(seed)
    shape = (2, 2, 7)
    mask, starts = torch.zeros(shape, dtype=DT), torch.zeros(shape, dtype=DT)
    for t, rows in enumerate(SEGMENTS):
        for e, segments in enumerate(rows):
            for begin, length in segments:
                starts[t, e, begin] = 1.0
                mask[t, e, begin:begin + length] = 1.0
    rewards = torch.where(mask > 0, torch.randn(shape, generator=g, dtype=DT), 9.0)
    values = torch.where(mask > 0, torch.randn(shape, generator=g, dtype=DT), 1e6)
    obs = torch.randn(*shape, 2, generator=g, dtype=DT)
    return rewards, values, obs, mask, starts


def _per_segment(fn):
    """fn(t, e, begin, length) for every segment of :data:`SEGMENTS`."""
    for t, rows in enumerate(SEGMENTS):
        for e, segments in enumerate(rows):
            for begin, length in segments:
                fn(t, e, begin, length)


def _hand_segment_returns(rewards, gamma):
    r, out = rewards.numpy(), np.zeros(rewards.shape)

    def fill(t, e, begin, length):
        for s in range(length):
            out[t, e, begin + s] = sum(gamma ** k * r[t, e, begin + s + k]
                                       for k in range(length - s))

    _per_segment(fill)
    return out


def test_discounted_returns_stop_at_each_segment_start():
    rewards, _, _, mask, starts = _segmented_data()
    got = discounted_returns(rewards, mask, GAMMA, starts)
    np.testing.assert_allclose(got.numpy(), _hand_segment_returns(rewards, GAMMA), atol=1e-12)


@pytest.mark.parametrize("lam", [0.0, 0.7, 1.0])
def test_gae_stops_at_each_segment_start(lam):
    rewards, values, _, mask, starts = _segmented_data(1)
    adv = gae(rewards, values, mask, GAMMA, lam, starts).numpy()
    r, v, want = rewards.numpy(), values.numpy(), np.zeros(rewards.shape)

    def fill(t, e, begin, length):
        steps = range(begin, begin + length)
        deltas = [r[t, e, s] + GAMMA * (v[t, e, s + 1] if s + 1 < begin + length else 0.0)
                  - v[t, e, s] for s in steps]
        for i in range(length):
            want[t, e, begin + i] = sum((GAMMA * lam) ** (k - i) * deltas[k]
                                        for k in range(i, length))

    _per_segment(fill)
    np.testing.assert_allclose(adv, want, atol=1e-10)


def test_baseline_time_feature_counts_from_each_segment_start():
    _, _, obs, mask, starts = _segmented_data(2)
    feats = baseline_features(obs, mask, starts)
    want = np.zeros(feats.shape)
    o = obs.numpy()

    def fill(t, e, begin, length):
        for i in range(length):
            s, k = begin + i, i / 100.0
            want[t, e, s] = [*o[t, e, s], *o[t, e, s] ** 2, k, k**2, k**3, 1.0]

    _per_segment(fill)
    np.testing.assert_allclose(feats.numpy(), want, atol=1e-15)


def test_one_segment_per_row_is_bitwise_the_unsegmented_computation():
    rewards, values, mask, _ = _episode_data(5)
    obs = torch.randn(*mask.shape, 3, dtype=DT, generator=torch.Generator().manual_seed(5))
    starts = torch.zeros_like(mask)
    starts[..., 0] = 1.0
    assert torch.equal(discounted_returns(rewards, mask, GAMMA, starts),
                       discounted_returns(rewards, mask, GAMMA))
    assert torch.equal(gae(rewards, values, mask, GAMMA, 0.8, starts),
                       gae(rewards, values, mask, GAMMA, 0.8))
    assert torch.equal(baseline_features(obs, mask, starts), baseline_features(obs, mask))
