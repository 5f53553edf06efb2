"""The speed benchmark's yardstick (scripts/plain_trpo.py, a straightforward double-backward
implementation) must take the same step as the package's meta-step, or the speed ratio
compares different algorithms."""

from __future__ import annotations

import pytest
from helpers import load_script

from rkmeta_rl.rl.config import TrainConfig, resolve
from rkmeta_rl.rl.trainer import Trainer
from rkmeta_rl.rl.trpo import flatten


def _trainer(method: str, first_order: bool) -> Trainer:
    cfg = resolve(TrainConfig(method=method, meta_batch_size=4, fast_batch_size=5,
                              max_episode_steps=20, hidden=[16, 16], first_order=first_order,
                              seed=3))
    return Trainer(cfg, "unused")


@pytest.mark.parametrize("method,first_order", [("midpoint", False), ("heun", False),
                                                ("ralston", True), ("euler", False)])
def test_plain_yardstick_takes_the_packages_step(method, first_order):
    plain = load_script("plain_trpo")
    ours, theirs = _trainer(method, first_order), _trainer(method, first_order)
    before = flatten(ours.policy.params()).detach().clone()
    for _ in range(1):  # one iteration: later ones sample from slightly different θ
        tasks = ours.family.sample_tasks(4)
        theirs.family.sample_tasks(4)  # the same draws: the trainers' streams stay equal
        res = ours.meta_step(tasks)
        seconds = plain.plain_meta_step(theirs, tasks)
        assert res.accepted and seconds["accepted"] == 1.0
        assert res.line_search_steps == seconds["line_search_steps"]
        assert res.expected_improvement == pytest.approx(seconds["expected_improvement"],
                                                         rel=1e-5)
    a, b = flatten(ours.policy.params()).detach(), flatten(theirs.policy.params()).detach()
    # single precision: conjugate gradient amplifies rounding most for midpoint, whose
    # curvature has no stage-1 term (measured 7e-4 of the step there, 3e-6 elsewhere);
    # tests/test_curvature_closed_form.py compares the steps in double precision
    assert (a - before).norm() > 1e-2
    assert (a - b).norm() < 2e-3 * (a - before).norm()


def test_plain_yardstick_refuses_tableaus_it_does_not_run():
    with pytest.raises(ValueError, match="move by k_1 alone"):
        trainer = _trainer("rk4", False)
        load_script("plain_trpo").plain_meta_step(trainer, trainer.family.sample_tasks(4))


def test_the_floor_counts_every_matrix_product_forward_and_backward():
    """scripts/bench_meta_step.py's FLOP count: 2·m·k·n per product, by hand."""
    import torch

    bench = load_script("bench_meta_step")
    a = torch.randn(3, 5, 7, requires_grad=True)
    w, m = torch.randn(3, 7, 2), torch.randn(4, 6)
    with bench.ProductFlops() as counter:
        y = torch.bmm(a, w).sum() + (m @ torch.randn(6, 8)).sum()
        y.backward()  # dL/da = ones (3,5,2) @ wᵀ: one more bmm of 3·5·2·7
        torch.nn.functional.linear(m, torch.randn(9, 6), torch.randn(9))  # addmm
    by_hand = 2 * (3 * 5 * 7 * 2) + 2 * (4 * 6 * 8) + 2 * (3 * 5 * 2 * 7) + 2 * (4 * 6 * 9)
    assert counter.flops == by_hand


def test_the_floor_splits_the_step_into_its_phases():
    bench = load_script("bench_meta_step")
    trainer = _trainer("midpoint", False)
    for impl in ("rkmeta-rl", "plain"):
        flops = bench.counted_flops(trainer, trainer.cfg, impl)
        assert 0 < flops["flops cg"] < flops["flops total"]
    assert bench.cpu_model()


def test_the_bench_takes_the_familys_sizes_and_refuses_an_unknown_env(monkeypatch, capsys):
    """scripts/bench_meta_step.py --env: the family's episodes and horizon unless given, in
    its first line; an unknown env, dynamics or method, or rules that match no parameter,
    are one line naming the valid choices, before any timing."""
    import sys

    bench = load_script("bench_meta_step")
    monkeypatch.setattr(bench, "rates", lambda *a: print("rates", *a))  # no timing here
    monkeypatch.setattr(sys, "argv", ["bench", "--env", "halfcheetah-vel", "--dynamics",
                                      "maml", "--rates"])
    bench.main()
    out = capsys.readouterr().out
    assert "halfcheetah-vel (maml dynamics)" in out and "20 episodes x 200 steps" in out
    assert "rates 40 4000 100" in out  # meta-batch, steps per task, width: the family's
    for flags, message in ((["--env", "nope"], "unknown env 'nope'; valid choices: nav2d"),
                           (["--env", "halfcheetah-vel", "--dynamics", "bad"],
                            "unknown dynamics 'bad'; valid choices: gymnasium, maml"),
                           (["--method", "nope"], "unknown method 'nope'; valid choices"),
                           (["--layer-methods", "zz=midpoint"],
                            "--layer-methods: no pattern matches w0, b0")):
        monkeypatch.setattr(sys, "argv", ["bench", *flags])
        with pytest.raises(SystemExit):
            bench.main()
        assert message in capsys.readouterr().err


@pytest.mark.parametrize("layer_methods", [None, "[wb]2=midpoint,*=frozen:midpoint"])
def test_the_benchs_autograd_impl_takes_double_backward(layer_methods, monkeypatch):
    """--impl autograd forces double backward, also for a scheme that choose_path sends to
    the closed form (ANIL), and takes the same step as the package's default path."""
    from rkmeta_rl.rl import paths

    bench = load_script("bench_meta_step")
    calls = []
    real = paths.double_backward_fvp
    monkeypatch.setattr(paths, "double_backward_fvp",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    cfg = resolve(TrainConfig(method="midpoint", layer_methods=layer_methods,
                              meta_batch_size=4, fast_batch_size=5, max_episode_steps=20,
                              hidden=[16, 16], seed=3))
    ours, theirs = bench.make_trainer(cfg, "rkmeta-rl"), bench.make_trainer(cfg, "autograd")
    tasks = ours.family.sample_tasks(4)
    theirs.family.sample_tasks(4)
    before = flatten(ours.policy.params()).detach().clone()
    ours.meta_step(tasks)
    assert calls == []  # the closed form
    theirs.meta_step(tasks)
    assert calls == [1]
    a, b = flatten(ours.policy.params()).detach(), flatten(theirs.policy.params()).detach()
    assert (a - before).norm() > 1e-2
    assert (a - b).norm() < 2e-3 * (a - before).norm()
