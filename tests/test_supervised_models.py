"""Tests for the functional, task-batched supervised models."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from rkmeta_rl.rk import repeat_params
from rkmeta_rl.supervised.models import MLP, ConvNet, Params

T = 3


def _per_task(params: Params, tasks: int = T, seed: int = 1, scale: float = 0.1) -> Params:
    """Repeat params for `tasks` tasks and perturb every task differently (a real copy)."""
    g = torch.Generator().manual_seed(seed)
    return {
        k: v + scale * torch.randn(v.shape, generator=g, dtype=v.dtype)
        for k, v in repeat_params(params, tasks).items()
    }


def _to_double(params: Params) -> Params:
    return {k: v.double() for k, v in params.items()}


def _reference_mlp(params: Params, t: int, sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        linear = nn.Linear(fan_in, fan_out)
        linear.weight.data.copy_(params[f"layers.{i}.weight"][t])
        linear.bias.data.copy_(params[f"layers.{i}.bias"][t])
        layers += [linear, nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def _reference_convnet(params: Params, t: int, model: ConvNet) -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = model.in_channels
    for i in range(len(model.blocks)):
        conv = nn.Conv2d(channels, model.filters, 3, padding=1)
        norm = nn.BatchNorm2d(model.filters, track_running_stats=False)
        conv.weight.data.copy_(params[f"blocks.{i}.conv.weight"][t])
        conv.bias.data.copy_(params[f"blocks.{i}.conv.bias"][t])
        norm.weight.data.copy_(params[f"blocks.{i}.norm.weight"][t])
        norm.bias.data.copy_(params[f"blocks.{i}.norm.bias"][t])
        layers += [conv, norm, nn.ReLU(), nn.MaxPool2d(2)]
        channels = model.filters
    head = nn.Linear(model.feature_dim, model.ways)
    head.weight.data.copy_(params["head.weight"][t])
    head.bias.data.copy_(params["head.bias"][t])
    return nn.Sequential(*layers, nn.Flatten(), head).train()


def test_mlp_matches_torch_sequential_per_task() -> None:
    model = MLP(in_dim=2, hidden=(5, 4), out_dim=3)
    params = _per_task(model.init_params(torch.Generator().manual_seed(0)))
    x = torch.randn(T, 6, 2)
    out = model(params, x)
    assert out.shape == (T, 6, 3)
    for t in range(T):
        ref = _reference_mlp(params, t, [2, 5, 4, 3])
        torch.testing.assert_close(out[t], ref(x[t]))


@pytest.mark.parametrize(
    "channels,size,filters,side", [(1, 28, 8, 1), (3, 84, 4, 5)], ids=["omniglot", "mini"]
)
def test_convnet_matches_torch_modules_per_task(
    channels: int, size: int, filters: int, side: int
) -> None:
    model = ConvNet(channels, size, ways=5, filters=filters)
    assert model.feature_dim == filters * side * side
    params = _per_task(model.init_params(torch.Generator().manual_seed(0)))
    x = torch.randn(T, 2, channels, size, size)
    out = model(params, x)
    assert out.shape == (T, 2, 5)
    with torch.no_grad():
        for t in range(T):
            ref = _reference_convnet(params, t, model)
            torch.testing.assert_close(out[t], ref(x[t]), rtol=1e-4, atol=1e-5)


def test_convnet_single_task() -> None:
    model = ConvNet(1, 8, ways=2, filters=2, blocks=2)
    params = repeat_params(model.init_params(torch.Generator().manual_seed(0)), 1)
    x = torch.randn(1, 3, 1, 8, 8)
    out = model(params, x)
    assert out.shape == (1, 3, 2)
    with torch.no_grad():
        torch.testing.assert_close(out[0], _reference_convnet(params, 0, model)(x[0]))


@pytest.mark.parametrize("kind", ["mlp", "convnet"])
def test_per_task_gradients_are_independent(kind: str) -> None:
    if kind == "mlp":
        model: MLP | ConvNet = MLP(1, (4, 4), 1)
        x = torch.randn(T, 5, 1)
    else:
        model = ConvNet(1, 8, ways=2, filters=2, blocks=2)
        x = torch.randn(T, 3, 1, 8, 8)
    params = _per_task(model.init_params(torch.Generator().manual_seed(0)))
    params = {k: v.requires_grad_() for k, v in params.items()}
    loss = model(params, x)[0].pow(2).sum()
    grads = torch.autograd.grad(loss, list(params.values()))
    for g in grads:
        assert g[0].abs().sum() > 0
        assert torch.all(g[1:] == 0)


def _gradcheck_inputs(kind: str) -> tuple[MLP | ConvNet, list[str], Tensor, tuple[Tensor, ...]]:
    if kind == "mlp":
        model: MLP | ConvNet = MLP(1, (4, 4), 1)
        x = torch.randn(2, 3, 1, dtype=torch.float64)
    else:
        model = ConvNet(1, 4, ways=2, filters=2, blocks=1)
        x = torch.randn(2, 3, 1, 4, 4, dtype=torch.float64)
    # Two tasks with different weights; seeds are fixed, so ReLU / max-pool kinks are not hit.
    params = _per_task(_to_double(model.init_params(torch.Generator().manual_seed(0))), tasks=2)
    keys = list(params)
    return model, keys, x, tuple(params[k].requires_grad_() for k in keys)


@pytest.mark.parametrize("kind", ["mlp", "convnet"])
def test_gradcheck_and_gradgradcheck(kind: str) -> None:
    torch.manual_seed(0)
    model, keys, x, values = _gradcheck_inputs(kind)

    def fn(*vals: Tensor) -> Tensor:
        return model(dict(zip(keys, vals, strict=True)), x)

    assert torch.autograd.gradcheck(fn, values)
    assert torch.autograd.gradgradcheck(fn, values)


@pytest.mark.parametrize("kind", ["mlp", "convnet"])
def test_hessian_vector_product_through_inner_step(kind: str) -> None:
    """The MAML meta-gradient (through one inner SGD step) matches central differences."""
    torch.manual_seed(0)
    model, keys, x, values = _gradcheck_inputs(kind)
    target = torch.randn_like(model(dict(zip(keys, values, strict=True)), x))

    def loss(vals: tuple[Tensor, ...]) -> Tensor:
        return (model(dict(zip(keys, vals, strict=True)), x) - target).pow(2).mean()

    def meta_loss(vals: tuple[Tensor, ...], create_graph: bool) -> Tensor:
        grads = torch.autograd.grad(loss(vals), vals, create_graph=create_graph)
        return loss(tuple(v - 0.1 * g for v, g in zip(vals, grads, strict=True)))

    meta_grads = torch.autograd.grad(meta_loss(values, True), values)
    direction = tuple(torch.randn_like(v) for v in values)
    eps = 1e-6
    plus = tuple(
        (v + eps * d).detach().requires_grad_() for v, d in zip(values, direction, strict=True)
    )
    minus = tuple(
        (v - eps * d).detach().requires_grad_() for v, d in zip(values, direction, strict=True)
    )
    fd = (meta_loss(plus, False) - meta_loss(minus, False)) / (2 * eps)
    analytic = sum((g * d).sum() for g, d in zip(meta_grads, direction, strict=True))
    torch.testing.assert_close(analytic, fd, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("kind", ["mlp", "convnet"])
def test_init_params_deterministic_and_shapes(kind: str) -> None:
    if kind == "mlp":
        model: MLP | ConvNet = MLP()
        expected = {
            "layers.0.weight": (40, 1),
            "layers.0.bias": (40,),
            "layers.1.weight": (40, 40),
            "layers.1.bias": (40,),
            "layers.2.weight": (1, 40),
            "layers.2.bias": (1,),
        }
    else:
        model = ConvNet(3, 84, ways=5, filters=32)
        assert model.feature_dim == 800
        expected = {"head.weight": (5, 800), "head.bias": (5,)}
        for i in range(4):
            expected |= {
                f"blocks.{i}.conv.weight": (32, 3 if i == 0 else 32, 3, 3),
                f"blocks.{i}.conv.bias": (32,),
                f"blocks.{i}.norm.weight": (32,),
                f"blocks.{i}.norm.bias": (32,),
            }
    a = model.init_params(torch.Generator().manual_seed(7))
    b = model.init_params(torch.Generator().manual_seed(7))
    c = model.init_params(torch.Generator().manual_seed(8))
    assert {k: tuple(v.shape) for k, v in a.items()} == expected
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
        fan_in = a[k].shape[1:].numel() if a[k].dim() > 1 else None
        if k.endswith("weight") and fan_in is not None:
            assert a[k].abs().max() <= fan_in**-0.5
            assert not torch.equal(a[k], c[k])


def test_repeat_params_is_differentiable_view() -> None:
    base = {"w": torch.randn(2, 3, requires_grad=True)}
    rep = repeat_params(base, 4)
    assert rep["w"].shape == (4, 2, 3)
    assert rep["w"].data_ptr() == base["w"].data_ptr()
    rep["w"].sum().backward()
    torch.testing.assert_close(base["w"].grad, torch.full((2, 3), 4.0))


@pytest.mark.parametrize("kind", ["mlp", "convnet"])
def test_the_models_are_ordinary_modules(kind: str) -> None:
    """model(x) is one task at the module's own parameters (init_params seeded 0, made
    without drawing from torch's global random stream); model(params, x) all tasks."""
    state = torch.random.get_rng_state()
    model: MLP | ConvNet = MLP(1, (4, 4), 1) if kind == "mlp" else ConvNet(1, 8, 2, 2, 2)
    assert torch.equal(torch.random.get_rng_state(), state)
    own = dict(model.named_parameters())
    init = model.init_params(torch.Generator().manual_seed(0))
    assert own.keys() == init.keys()
    for n in own:
        assert torch.equal(own[n].detach(), init[n])
    x = torch.randn(3, 1) if kind == "mlp" else torch.randn(3, 1, 8, 8)
    params = repeat_params({n: p.detach() for n, p in own.items()}, 2)
    with torch.no_grad():
        batched = model(params, torch.stack([x, x]))  # (2, 3, out)
        torch.testing.assert_close(batched[0], model(x))
        torch.testing.assert_close(batched[1], model(x))


def test_the_hand_written_mlp_gives_vmaps_numbers() -> None:
    """MLP.forward_per_task (the learner calls it instead of vmap, for speed) computes what
    vmap over its forward computes, gradients included."""

    class Vmapped(MLP):
        forward_per_task = None  # the learner's own task-batched evaluation

    model, vmapped = MLP(1, (5, 5), 1), Vmapped(1, (5, 5), 1)
    params = _per_task(_to_double(model.init_params(torch.Generator().manual_seed(0))))
    params = {k: v.requires_grad_() for k, v in params.items()}
    x = torch.randn(T, 4, 1, dtype=torch.float64)
    model.double()
    vmapped.double()
    a, b = model(params, x), vmapped(params, x)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    ga = torch.autograd.grad(a.pow(2).sum(), list(params.values()))
    gb = torch.autograd.grad(b.pow(2).sum(), list(params.values()))
    for u, v in zip(ga, gb, strict=True):
        torch.testing.assert_close(u, v, rtol=1e-12, atol=0)
