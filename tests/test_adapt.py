"""Fast adaptation: REINFORCE steps of α, checked against a per-task hand computation."""

import math

import torch

from rkmeta_rl.rk import repeat_params
from rkmeta_rl.rl.adapt import adapt_to_tasks, reinforce_step
from rkmeta_rl.rl.episodes import Episodes
from rkmeta_rl.rl.policy import GaussianMLPPolicy
from rkmeta_rl.rl.tasks import make_family


def _episodes(t: int = 2, e: int = 3, h: int = 4) -> Episodes:
    g = torch.Generator().manual_seed(0)
    mask = torch.ones(t, e, h)
    mask[0, 1, 2:] = 0.0  # one episode ends early
    return Episodes(torch.randn(t, e, h, 2, generator=g), torch.randn(t, e, h, 2, generator=g),
                    torch.randn(t, e, h, generator=g) * mask, mask,
                    torch.randn(t, e, h, generator=g) * mask)


def test_reinforce_step_matches_per_task_formula() -> None:
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(2, 2, hidden=(6,)).double()
    eps = _episodes()
    eps = Episodes(*(x.double() for x in (eps.obs, eps.actions, eps.rewards, eps.mask,
                                            eps.advantages)))
    theta = {n: v.detach() for n, v in policy.params().items()}
    adapted = reinforce_step(policy, repeat_params(theta, 2), eps, alpha=0.3)
    for t in range(2):
        # independent: log N(u; μ, σ²) written out, mean over valid steps, plain autograd
        p = {n: v.clone().requires_grad_() for n, v in theta.items()}
        obs = eps.obs[t].reshape(-1, 2)
        act = eps.actions[t].reshape(-1, 2)
        adv, mask = eps.advantages[t].reshape(-1), eps.mask[t].reshape(-1)
        h = torch.relu(obs @ p["w0"] + p["b0"])
        mean = h @ p["w1"] + p["b1"]
        std = p["log_std"].exp()
        logp = (-((act - mean) / std) ** 2 / 2 - p["log_std"] - math.log(2 * math.pi) / 2).sum(-1)
        loss = -(logp * adv * mask).sum() / mask.sum()
        grads = torch.autograd.grad(loss, list(p.values()))
        for (name, v), g in zip(theta.items(), grads, strict=True):
            torch.testing.assert_close(adapted[name][t], v - 0.3 * g)
    assert torch.equal(policy.params()["w0"], theta["w0"])  # the module is never mutated


def test_adapt_to_tasks_is_seeded_and_returns_every_step() -> None:
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(2, 2, hidden=(8,))
    family = make_family("nav2d")
    family.seed(3)
    tasks = family.sample_tasks(2)
    runs = [adapt_to_tasks(policy, family, tasks, 0.1, 2, 3, seed=1) for _ in range(2)]
    assert len(runs[0][1]) == 3 and runs[0][1][0].shape == (2,)
    for a, b in zip(runs[0][1], runs[1][1], strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(runs[0][0]["w0"][0], policy.params()["w0"])  # it did adapt
