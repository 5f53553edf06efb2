"""The supervised RK meta-gradient against independently written computations.

* midpoint = second-order MAML, written as a per-task loop with plain autograd (MLP and
  conv net, one and two adaptation steps) and as (I - αH_s)∇L_q(θ') with an explicit
  Hessian from torch.autograd.functional.hessian;
* heun = ½∇L_s(θ) + ½ d/dθ L_q(θ - h∇L_s(θ)), euler = the support gradient, first order =
  FOMAML;
* the Adam step, the rejection of a non-finite step, and test-time adaptation.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from rkmeta_rl.methods import get_tableau
from rkmeta_rl.supervised.fewshot import FewShotBatch
from rkmeta_rl.supervised.meta import (
    adapt,
    meta_gradient,
    meta_step,
    output_losses,
    task_losses,
)
from rkmeta_rl.supervised.models import MLP, ConvNet
from rkmeta_rl.supervised.sinusoid import sample_sinusoid_tasks

DT = torch.float64
TASKS = 3


def sinusoid_problem(seed: int = 0, hidden=(16, 16)):
    g = torch.Generator().manual_seed(seed)
    model = MLP(1, hidden, 1)
    theta = {k: v.to(DT).requires_grad_() for k, v in model.init_params(g).items()}
    batch = sample_sinusoid_tasks(TASKS, 5, 7, g)
    for name in ("xs", "ys", "xq", "yq"):
        setattr(batch, name, getattr(batch, name).to(DT))
    return model, theta, batch


def conv_problem(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    model = ConvNet(1, 8, ways=3, filters=4, blocks=2)
    theta = {k: v.to(DT).requires_grad_() for k, v in model.init_params(g).items()}
    batch = FewShotBatch(torch.rand(TASKS, 3, 1, 8, 8, generator=g, dtype=DT),
                         torch.arange(3).repeat(TASKS, 1),
                         torch.rand(TASKS, 6, 1, 8, 8, generator=g, dtype=DT),
                         torch.arange(3).repeat_interleave(2).repeat(TASKS, 1))
    return model, theta, batch


def one_task_loss(model, params, x, y) -> torch.Tensor:
    """Task loss written directly with torch.nn.functional (T = 1 slice)."""
    out = model({k: v.unsqueeze(0) for k, v in params.items()}, x.unsqueeze(0))[0]
    return F.mse_loss(out, y) if y.dtype.is_floating_point else F.cross_entropy(out, y)


def maml_reference(model, theta, batch, alpha: float, steps: int, first_order=False):
    """(1/T) Σ_t d/dθ L_q,t(θ'_t), θ'_t after ``steps`` steps of α, one task at a time."""
    total = {k: torch.zeros_like(v) for k, v in theta.items()}
    for t in range(TASKS):
        p = dict(theta)
        for _ in range(steps):
            grads = torch.autograd.grad(one_task_loss(model, p, batch.xs[t], batch.ys[t]),
                                        list(p.values()), create_graph=not first_order)
            p = {k: v - alpha * g for (k, v), g in zip(p.items(), grads, strict=True)}
        wrt = list(p.values()) if first_order else list(theta.values())
        grads = torch.autograd.grad(one_task_loss(model, p, batch.xq[t], batch.yq[t]), wrt)
        for k, g in zip(theta, grads, strict=True):
            total[k] += g / TASKS
    return total


def assert_close_params(a, b, **kw):
    for k in a:
        torch.testing.assert_close(a[k], b[k], **kw)


@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("problem", [sinusoid_problem, conv_problem])
def test_midpoint_is_maml(problem, steps):
    model, theta, batch = problem()
    alpha = 0.3 if problem is conv_problem else 0.01
    got = meta_gradient(model, theta, batch, get_tableau("midpoint"), 2 * alpha,
                        inner_steps=steps)
    assert_close_params(got, maml_reference(model, theta, batch, alpha, steps),
                        rtol=1e-9, atol=1e-11)


def test_midpoint_matches_explicit_hessian_formula():
    model, theta, batch = sinusoid_problem(1, hidden=(6,))
    names, shapes = list(theta), [v.shape for v in theta.values()]
    sizes = [v.numel() for v in theta.values()]
    alpha = 0.05

    def unflat(z):
        return dict(zip(names, (c.view(s) for c, s in zip(z.split(sizes), shapes, strict=True)),
                        strict=True))

    z0 = torch.cat([v.detach().reshape(-1) for v in theta.values()])
    expected = torch.zeros_like(z0)
    for t in range(TASKS):
        def support(z, t=t):
            return one_task_loss(model, unflat(z), batch.xs[t], batch.ys[t])

        def query(z, t=t):
            return one_task_loss(model, unflat(z), batch.xq[t], batch.yq[t])

        zs = z0.clone().requires_grad_()
        z_adapted = z0 - alpha * torch.autograd.grad(support(zs), zs)[0]
        za = z_adapted.detach().requires_grad_()
        g_query = torch.autograd.grad(query(za), za)[0]
        hess = torch.autograd.functional.hessian(support, z0)
        expected += (torch.eye(len(z0), dtype=DT) - alpha * hess) @ g_query / TASKS
    got = meta_gradient(model, theta, batch, get_tableau("midpoint"), 2 * alpha)
    torch.testing.assert_close(torch.cat([got[k].reshape(-1) for k in names]), expected,
                               rtol=1e-9, atol=1e-11)


def test_heun_is_mean_of_support_and_adapted_gradients():
    model, theta, batch = sinusoid_problem(2)
    h = 0.02
    support = maml_reference(model, theta, _as_support_only(batch), h, 0)
    adapted = maml_reference(model, theta, batch, h, 1)
    got = meta_gradient(model, theta, batch, get_tableau("heun"), h)
    assert_close_params(got, {k: 0.5 * support[k] + 0.5 * adapted[k] for k in got},
                        rtol=1e-9, atol=1e-11)


def _as_support_only(batch):
    """A batch whose 'query' is the support set: 0 steps then gives ∇L_s(θ)."""
    return type(batch)(**{**vars(batch), "xq": batch.xs, "yq": batch.ys})


def test_euler_is_the_support_gradient():
    model, theta, batch = sinusoid_problem(3)
    got = meta_gradient(model, theta, batch, get_tableau("euler"), 0.01)
    assert_close_params(got, maml_reference(model, theta, _as_support_only(batch), 0.01, 0),
                        rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("steps", [1, 3])
def test_first_order_is_fomaml(steps):
    model, theta, batch = conv_problem(4)
    got = meta_gradient(model, theta, batch, get_tableau("midpoint"), 0.6, first_order=True,
                        inner_steps=steps)
    assert_close_params(got, maml_reference(model, theta, batch, 0.3, steps, first_order=True),
                        rtol=1e-9, atol=1e-11)


def test_meta_step_is_one_adam_step_on_the_meta_gradient():
    model, theta, batch = sinusoid_problem(5)
    tab, h, lr = get_tableau("ralston"), 0.02, 1e-3
    grad = meta_gradient(model, theta, batch, tab, h)
    before = {k: v.detach().clone() for k, v in theta.items()}
    opt = torch.optim.Adam(list(theta.values()), lr=lr)
    res = meta_step(model, theta, opt, batch, tab, h)
    assert res.rejected == ""
    for k, g in grad.items():  # Adam's first step: lr · g / (|g| + eps), bias-corrected
        torch.testing.assert_close(theta[k].detach(), before[k] - lr * g / (g.abs() + 1e-8))
    norm = math.sqrt(sum(float(g.pow(2).sum()) for g in grad.values()))
    assert res.grad_norm == pytest.approx(norm)
    assert set(res.stage_loss) == {0, 1}


def test_stage_losses_are_support_at_theta_and_query_at_the_stage_point():
    model, theta, batch = sinusoid_problem(6)
    from rkmeta_rl.supervised.meta import AdamStepResult

    res = AdamStepResult()
    meta_gradient(model, theta, batch, get_tableau("heun"), 0.05, inner_steps=2, result=res)
    support = sum(float(one_task_loss(model, theta, batch.xs[t], batch.ys[t]).detach())
                  for t in range(TASKS)) / TASKS
    adapted = adapt(model, theta, batch.xs, batch.ys, 0.05, 2)  # heun: c2·h = h per step
    query = float(task_losses(model, adapted, batch.xq, batch.yq)[0].mean())
    assert res.stage_loss[0] == pytest.approx(support, rel=1e-12)
    assert res.stage_loss[1] == pytest.approx(query, rel=1e-9)


def test_non_finite_step_is_rejected_and_theta_kept():
    model, theta, batch = sinusoid_problem(7)
    batch.yq[0, 0, 0] = float("nan")
    before = {k: v.detach().clone() for k, v in theta.items()}
    opt = torch.optim.Adam(list(theta.values()), lr=1e-3)
    res = meta_step(model, theta, opt, batch, get_tableau("midpoint"), 0.02)
    assert "non-finite" in res.rejected
    assert_close_params({k: v.detach() for k, v in theta.items()}, before, rtol=0, atol=0)
    assert not opt.state  # Adam's moments were not touched either


def test_adapt_takes_plain_gradient_steps_per_task():
    model, theta, batch = conv_problem(8)
    seen = []
    got = adapt(model, theta, batch.xs, batch.ys, 0.2, 2, on_step=lambda k, p: seen.append(k))
    assert seen == [0, 1, 2]
    for t in range(TASKS):
        p = {k: v.detach() for k, v in theta.items()}
        for _ in range(2):
            x = {k: v.clone().requires_grad_() for k, v in p.items()}
            grads = torch.autograd.grad(one_task_loss(model, x, batch.xs[t], batch.ys[t]),
                                        list(x.values()))
            p = {k: v.detach() - 0.2 * g for (k, v), g in zip(x.items(), grads, strict=True)}
        assert_close_params({k: v[t] for k, v in got.items()}, p, rtol=1e-10, atol=1e-12)


def test_task_losses_match_torch_functions():
    model, theta, batch = conv_problem(9)
    params = {k: v.unsqueeze(0).expand(TASKS, *v.shape) for k, v in theta.items()}
    loss, acc = task_losses(model, params, batch.xq, batch.yq)
    logits = model(params, batch.xq)
    for t in range(TASKS):
        assert float(loss[t]) == pytest.approx(float(F.cross_entropy(logits[t], batch.yq[t])))
        assert float(acc[t]) == pytest.approx(
            float((logits[t].argmax(-1) == batch.yq[t]).double().mean()))
    model, theta, batch = sinusoid_problem(9)
    params = {k: v.unsqueeze(0).expand(TASKS, *v.shape) for k, v in theta.items()}
    loss, acc = task_losses(model, params, batch.xs, batch.ys)
    assert acc is None
    out = model(params, batch.xs)
    for t in range(TASKS):
        assert float(loss[t]) == pytest.approx(float(F.mse_loss(out[t], batch.ys[t])))


# -- the same numbers as the hand-written task-batched code before RKMetaLearner -------------


def _old_mlp(params, x):
    """The sinusoid MLP as it was written by hand: x (T, B, 1) -> (T, B, 1)."""
    h, layers = x, len(params) // 2
    for i in range(layers):
        w, b = params[f"layers.{i}.weight"], params[f"layers.{i}.bias"]
        h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
        h = F.relu(h) if i < layers - 1 else h
    return h


def _old_convnet(params, x, blocks: int = 2):
    """The conv net as it was written by hand: tasks folded into the channels, one group
    per task, x (T, B, C, H, W) -> logits (T, B, ways)."""
    T, B = x.shape[:2]
    h = x.transpose(0, 1).reshape(B, T * x.shape[2], *x.shape[3:])  # (B, T*C, H, W)
    for i in range(blocks):
        w = params[f"blocks.{i}.conv.weight"]
        h = F.conv2d(h, w.reshape(T * w.shape[1], *w.shape[2:]),
                     params[f"blocks.{i}.conv.bias"].reshape(-1), padding=1, groups=T)
        h = F.batch_norm(h, None, None, params[f"blocks.{i}.norm.weight"].reshape(-1),
                         params[f"blocks.{i}.norm.bias"].reshape(-1), training=True, eps=1e-5)
        h = F.max_pool2d(F.relu(h), 2)
    feats = h.reshape(B, T, -1).transpose(0, 1)  # (T, B, features)
    return torch.baddbmm(params["head.bias"].unsqueeze(1), feats,
                         params["head.weight"].transpose(1, 2))


def _old_meta_gradient(old_model, theta, batch, tableau, h, inner_steps, first_order):
    """supervised.meta.meta_gradient as it was: stage points on per-task copies of θ."""
    from rkmeta_rl.rk import Scheme, combined_gradient, repeat_params, rk_combination, stage_points

    def stage_loss(i, params):
        x, y = (batch.xs, batch.ys) if i == 0 else (batch.xq, batch.yq)
        return output_losses(old_model(params, x), y)[0].sum()

    T = batch.xs.shape[0]
    points = stage_points(repeat_params(theta, T), tableau, h, stage_loss,
                          first_order=first_order, inner_steps=inner_steps)
    if isinstance(tableau, Scheme) and tableau.shared_weights is None:
        return {n: g / T for n, g in combined_gradient(points, tableau, stage_loss,
                                                       theta).items()}
    grads = torch.autograd.grad(rk_combination(points, tableau, stage_loss) / T,
                                list(theta.values()))
    return dict(zip(theta, grads, strict=True))


@pytest.mark.parametrize("case", ["mlp-midpoint", "mlp-rk4", "mlp-heun-fo-2",
                                  "mlp-layers", "conv-ralston", "conv-rk3", "conv-midpoint-2"])
def test_the_same_float32_numbers_as_the_hand_written_code(case):
    """Bit for bit, in float32: the learner's task-batched layers run the products the
    hand-written models ran, in the same order."""
    from rkmeta_rl.layer_methods import build_scheme, parse_layer_methods

    kind, method, *rest = case.split("-")
    first_order, inner_steps = "fo" in rest, 2 if "2" in rest else 1
    g = torch.Generator().manual_seed(11)
    if kind == "mlp":
        model, old = MLP(1, (16, 16), 1), _old_mlp
        batch = sample_sinusoid_tasks(4, 5, 7, g)
    else:
        model, old = ConvNet(1, 8, ways=3, filters=4, blocks=2), _old_convnet
        batch = FewShotBatch(torch.rand(3, 3, 1, 8, 8, generator=g), torch.arange(3).repeat(3, 1),
                             torch.rand(3, 6, 1, 8, 8, generator=g),
                             torch.arange(3).repeat_interleave(2).repeat(3, 1))
    theta = {k: v.requires_grad_() for k, v in model.init_params(g).items()}
    if method == "layers":
        tableau, h = build_scheme(parse_layer_methods("layers.2=midpoint,*=ralston"),
                                  list(theta), 0.01, None, 0.01), None
    else:
        tableau = get_tableau(method)
        h = (0.3 if kind == "conv" else 0.01) / tableau.c[1]
    got = meta_gradient(model, theta, batch, tableau, h, inner_steps=inner_steps,
                        first_order=first_order)
    expected = _old_meta_gradient(old, theta, batch, tableau, h, inner_steps, first_order)
    for k in theta:
        assert torch.equal(got[k], expected[k]), k
