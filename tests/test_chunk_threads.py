"""rkmeta_rl.rl.chunk_threads: the closed-form curvature's chunks of tasks on several
Python threads, torch on one thread each. The products' values against autograd are
checked in tests/test_curvature_closed_form.py (which runs on torch's default threads);
here: that the chunks do run side by side, in order, and that the numbers are those of
one thread, bit for bit."""

from __future__ import annotations

import threading

import pytest
import torch

from rkmeta_rl.methods import get_tableau
from rkmeta_rl.rl import episodes
from rkmeta_rl.rl.chunk_threads import map_chunks
from rkmeta_rl.rl.config import MetaStepConfig
from rkmeta_rl.rl.curvature import curvature_fvp, points_by_k1
from rkmeta_rl.rl.episodes import Episodes
from rkmeta_rl.rl.losses import StageObjective
from rkmeta_rl.rl.policy import GaussianMLPPolicy
from rkmeta_rl.rl.reinforce_hessian import ChunkedHessian

T, E, H = 6, 4, 25


@pytest.fixture
def torch_threads():
    """Sets torch's thread count for a test; the count before is restored after."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def test_map_chunks_runs_the_items_side_by_side_in_order(torch_threads):
    torch_threads(2)
    both_started = threading.Barrier(2, timeout=30)  # breaks unless two items overlap
    seen = []

    def square(x: int) -> int:
        seen.append((threading.get_ident(), torch.get_num_threads(), torch.is_grad_enabled()))
        if x < 2:
            both_started.wait()
        return x * x

    with torch.no_grad():
        assert map_chunks(square, list(range(5))) == [0, 1, 4, 9, 16]
    assert len({ident for ident, _, _ in seen}) == 2
    assert all(threads == 1 and not grad for _, threads, grad in seen)  # the caller's mode
    assert torch.get_num_threads() == 2  # restored


@pytest.mark.parametrize("threads,device", [(1, "cpu"), (2, "meta")])
def test_map_chunks_runs_in_the_callers_thread_on_one_thread_or_off_the_cpu(
        torch_threads, threads, device):
    torch_threads(threads)
    idents = []
    out = map_chunks(lambda x: idents.append(threading.get_ident()) or x, [1, 2, 3], device)
    assert out == [1, 2, 3] and set(idents) == {threading.get_ident()}


def _problem(thin: bool):
    """A float32 policy and a midpoint step's episodes (T tasks, 2 per chunk)."""
    torch.manual_seed(0)
    obs_dim, act_dim = (2, 2) if thin else (5, 3)
    policy = GaussianMLPPolicy(obs_dim, act_dim, hidden=(32, 24))
    g = torch.Generator().manual_seed(1)

    def sample() -> Episodes:
        mask = torch.ones(T, E, H)
        mask[1, 2, 10:] = 0.0
        obs = torch.randn(T, E, H, obs_dim, generator=g) * mask.unsqueeze(-1)
        act = torch.randn(T, E, H, act_dim, generator=g) * mask.unsqueeze(-1)
        return Episodes(obs, act, torch.zeros_like(mask), mask,
                        torch.randn(T, E, H, generator=g) * mask)

    return policy, {0: sample(), 1: sample()}


@pytest.mark.parametrize("thin", [True, False], ids=["thin-ends", "general"])
def test_the_closed_form_on_two_threads_gives_the_numbers_of_one(torch_threads, monkeypatch,
                                                                 thin):
    monkeypatch.setattr(episodes, "CHUNK_ROWS", 2 * E * H)  # 3 chunks of 2 tasks
    policy, data = _problem(thin)
    tableau, cfg = get_tableau("midpoint"), MetaStepConfig()
    theta = policy.params()
    v = torch.randn(sum(p.numel() for p in theta.values()),
                    generator=torch.Generator().manual_seed(2))

    def numbers(threads: int) -> list[torch.Tensor]:
        torch_threads(threads)
        hessian = ChunkedHessian(policy, theta, data[0])
        k1 = hessian.gradient()
        points = points_by_k1(theta, k1, tableau, 0.5)
        fvp = curvature_fvp(policy, tableau, 0.5, data, points, theta, cfg, hessian)
        back = hessian(k1, per_task=False)
        values = StageObjective(policy, tableau, data, points).values(points)
        return [fvp(v), fvp(2.0 * v), *k1.values(), *back.values(), torch.tensor(values)]

    one, two = numbers(1), numbers(2)
    assert one[0].abs().max() > 0
    for a, b in zip(one, two, strict=True):
        assert torch.equal(a, b)
