"""Supervised config resolution (rkmeta_rl.supervised.config.resolve): each benchmark's paper
defaults, the two step-size readings (α or h) and the errors that name the bad value.
"""

from __future__ import annotations

import math

import pytest

from rkmeta_rl.supervised.config import SupervisedConfig, resolve


def test_resolve_fills_each_benchmarks_paper_defaults(tmp_path):
    data = [str(tmp_path)]
    sin = resolve(SupervisedConfig(benchmark="sinusoid"))
    assert (sin.alpha, sin.inner_steps, sin.test_steps, sin.meta_batch_size) == (0.01, 1, 10, 25)
    assert (sin.shots, sin.queries, sin.hidden, sin.meta_iters) == (10, 10, [40, 40], 100_000)
    assert sin.ways == 1 and sin.data is None and sin.filters is None
    assert sin.method == "ralston" and sin.h == pytest.approx(0.01 / 0.75)
    assert sin.meta_lr == 0.001

    five = resolve(SupervisedConfig(benchmark="omniglot", data=data))
    assert (five.ways, five.shots, five.queries) == (5, 1, 1)
    assert (five.alpha, five.inner_steps, five.test_steps) == (0.4, 1, 3)
    assert (five.meta_batch_size, five.filters, five.meta_iters) == (32, 64, 30_000)
    assert five.data == [str(tmp_path.resolve())]

    twenty = resolve(SupervisedConfig(benchmark="omniglot", data=data, ways=20))
    assert (twenty.alpha, twenty.inner_steps, twenty.test_steps) == (0.1, 5, 5)
    assert (twenty.meta_batch_size, twenty.filters, twenty.meta_iters) == (32, 64, 50_000)

    one = resolve(SupervisedConfig(benchmark="miniimagenet", data=data))
    five_shot = resolve(SupervisedConfig(benchmark="miniimagenet", data=data, shots=5))
    for cfg in (one, five_shot):
        assert (cfg.ways, cfg.queries, cfg.alpha) == (5, 15, 0.01)
        assert (cfg.inner_steps, cfg.test_steps, cfg.filters) == (5, 10, 32)
    assert (one.shots, one.meta_batch_size) == (1, 4)
    assert (five_shot.shots, five_shot.meta_batch_size) == (5, 2)

    given = resolve(SupervisedConfig(benchmark="omniglot", data=data, ways=20, inner_lr=0.3,
                                     inner_steps=2, filters=8, meta_batch_size=3))
    assert (given.alpha, given.inner_steps, given.filters, given.meta_batch_size) == (
        0.3, 2, 8, 3)


@pytest.mark.parametrize("method, c2", [("heun", 1.0), ("ralston", 0.75)])
def test_resolve_both_step_size_readings(method, c2):
    by_alpha = resolve(SupervisedConfig(method=method, inner_lr=0.03))
    assert by_alpha.alpha == 0.03 and by_alpha.h == pytest.approx(0.03 / c2)
    by_h = resolve(SupervisedConfig(method=method, step_size=0.03))
    assert by_h.h == 0.03 and by_h.alpha == pytest.approx(c2 * 0.03)
    default = resolve(SupervisedConfig(method=method))  # the benchmark's α, h = α / c2
    assert default.alpha == 0.01 and default.h == pytest.approx(0.01 / c2)


RESOLVE_ERRORS = {
    "benchmark": (dict(benchmark="cifar"),
                  r"unknown benchmark 'cifar'; valid choices: sinusoid, omniglot, miniimagenet"),
    "method": (dict(method="rk9"), r"unknown method 'rk9'; valid choices: euler .*ralston"),
    "no data": (dict(benchmark="omniglot"), r"--data is required for omniglot"),
    "no data mini": (dict(benchmark="miniimagenet"),
                     r"--data is required for miniimagenet: give the MiniImagenet root"),
    "missing data": (dict(benchmark="omniglot", data=["DATA/nowhere"]),
                     r"--data path\(s\) not found: .*nowhere"),
    "one way": (dict(benchmark="omniglot", data=["DATA"], ways=1),
                r"--ways must be >= 2 for classification, got 1"),
    "sinusoid ways": (dict(ways=3), r"--ways is for classification; sinusoid has none \(got 3\)"),
    "meta-lr zero": (dict(meta_lr=0.0), r"--meta-lr must be a positive number, got 0"),
    "meta-lr negative": (dict(meta_lr=-0.5), r"--meta-lr must be a positive number, got -0.5"),
    "meta-lr nan": (dict(meta_lr=math.nan), r"--meta-lr must be a positive number, got nan"),
    "meta-iters": (dict(meta_iters=0), r"--meta-iters must be an integer >= 1, got 0"),
    "inner-steps": (dict(inner_steps=-2), r"--inner-steps must be an integer >= 1, got -2"),
    "meta-batch": (dict(meta_batch_size=0), r"--meta-batch-size must be an integer >= 1, got 0"),
    "test-steps": (dict(test_steps=-1), r"--test-steps must be >= 0, got -1"),
    "both steps": (dict(inner_lr=0.01, step_size=0.02),
                   r"give either --inner-lr \(α\) or --step-size \(h\), not both"),
    "inner-lr": (dict(inner_lr=-0.1), r"--inner-lr must be a positive number, got -0.1"),
    "step-size": (dict(step_size=0.0), r"--step-size must be a positive number, got 0"),
    "hidden": (dict(hidden=[40, 0]), r"--hidden must be positive layer sizes.*\[40, 0\]"),
    "filters": (dict(benchmark="omniglot", data=["DATA"], filters=0),
                r"--filters must be >= 1, got 0"),
    "seed": (dict(seed=-1), r"--seed must be in \[0, 2\*\*32\), got -1"),
}


@pytest.mark.parametrize("name", list(RESOLVE_ERRORS))
def test_resolve_errors_name_the_bad_value(name, tmp_path):
    kwargs, match = RESOLVE_ERRORS[name]
    if "data" in kwargs:
        kwargs = {**kwargs, "data": [d.replace("DATA", str(tmp_path)) for d in kwargs["data"]]}
    with pytest.raises(ValueError, match=match):
        resolve(SupervisedConfig(**kwargs))
