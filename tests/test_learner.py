"""RKMetaLearner: the RK meta-gradient of any nn.Module, and a tableau per parameter group.

Checked against (1) the built-in supervised path on its MLP and conv net, (2) an
independent computation written here from the equations (stage points by hand, each k_i
the total derivative of L_i(θ_i(θ)), ḡ = Σ a_i k_i per parameter), for every named
tableau, exact and first order, and for per-group tableaus including ANIL."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rkmeta_rl import RKMetaLearner
from rkmeta_rl.layer_methods import parse_layer_methods
from rkmeta_rl.methods import METHOD_NAMES, get_tableau
from rkmeta_rl.supervised.fewshot import FewShotBatch
from rkmeta_rl.supervised.meta import meta_gradient
from rkmeta_rl.supervised.models import MLP, ConvNet
from rkmeta_rl.tableau import Tableau

DT = torch.float64
ALPHA = 0.05


def mse_tasks(n: int = 3, seed: int = 0) -> list[tuple[torch.Tensor, ...]]:
    g = torch.Generator().manual_seed(seed)
    return [tuple(torch.randn(6, 2, generator=g, dtype=DT) for _ in range(4)) for _ in range(n)]


def support(model, task):
    return F.mse_loss(model(task[0]), task[1][:, :1])


def query(model, task):
    return F.mse_loss(model(task[2]), task[3][:, :1])


def small_net() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(2, 5), nn.Tanh(), nn.Linear(5, 1)).to(DT)


def learner_grads(learner: RKMetaLearner, tasks, sl=support, ql=query) -> dict:
    learner.module.zero_grad()
    learner(tasks, sl, ql).backward()
    return {n: p.grad.clone() for n, p in learner.module.named_parameters()}


# -- an independent implementation of the equations -------------------------------------


def by_hand(net: nn.Module, tasks, tableaus: dict, steps: dict, first_order: bool) -> dict:
    """ḡ[n] = mean over tasks of Σ_i a_n,i k_i[n], with θ_i[n] = θ[n] - h_n Σ_j q_n,ij k_j[n]
    and k_i = d/dθ L_i(θ_i(θ)) (or its value at θ_i when first order)."""
    names = [n for n, _ in net.named_parameters()]
    s = max(t.stages for t in tableaus.values())

    def coef(n, row, i, j=None):
        t = tableaus[n]
        if i >= t.stages:
            return 0.0
        return t.a[i] if row == "a" else t.q[i][j]

    total = {n: torch.zeros_like(p) for n, p in net.named_parameters()}
    for task in tasks:
        theta = {n: p.detach().clone().requires_grad_() for n, p in net.named_parameters()}

        def loss(i, params, task=task):
            model = lambda x: torch.func.functional_call(net, params, (x,))  # noqa: E731
            return support(model, task) if i == 0 else query(model, task)

        ks = []
        for i in range(s):
            point = {n: theta[n] - sum(steps[n] * coef(n, "q", i, j) * ks[j][n]
                                       for j in range(i)) if i else theta[n] for n in names}
            if first_order:
                at = {n: v.detach().requires_grad_() for n, v in point.items()}
                k = torch.autograd.grad(loss(i, at), list(at.values()))
            else:
                k = torch.autograd.grad(loss(i, point), list(theta.values()), create_graph=True)
            ks.append(dict(zip(names, k, strict=True)))
        for n in names:
            total[n] += sum(coef(n, "a", i) * ks[i][n] for i in range(s)).detach() / len(tasks)
    return total


def steps_for(tab, names):
    h = ALPHA / tab.c[1] if tab.stages > 1 else ALPHA
    return {n: h for n in names}


@pytest.mark.parametrize("first_order", [False, True], ids=["exact", "first-order"])
@pytest.mark.parametrize("method", METHOD_NAMES)
def test_every_named_tableau_matches_the_equations(method, first_order):
    net, tab = small_net(), get_tableau(method)
    learner = RKMetaLearner(net, method, inner_lr=ALPHA, first_order=first_order)
    tasks = mse_tasks()
    names = [n for n, _ in net.named_parameters()]
    expected = by_hand(net, tasks, {n: tab for n in names}, steps_for(tab, names), first_order)
    got = learner_grads(learner, tasks)
    for n in names:
        torch.testing.assert_close(got[n], expected[n], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("spec", ["2=midpoint,*=ralston", "0=rk4,*=heun",
                                  "2=midpoint,*=frozen:midpoint"])
@pytest.mark.parametrize("first_order", [False, True], ids=["exact", "first-order"])
def test_per_group_tableaus_match_the_equations(spec, first_order):
    net = small_net()
    learner = RKMetaLearner(net, layer_methods=spec, inner_lr=ALPHA, first_order=first_order)
    rules = dict(parse_layer_methods(spec))
    names = [n for n, _ in net.named_parameters()]
    tableaus = {n: rules[n.split(".")[0]] if n.split(".")[0] in rules else rules["*"]
                for n in names}
    steps = {n: 0.0 if t.name.startswith("frozen:") else steps_for(t, [n])[n]
             for n, t in tableaus.items()}
    tasks = mse_tasks(2)
    expected = by_hand(net, tasks, tableaus, steps, first_order)
    got = learner_grads(learner, tasks)
    for n in names:
        torch.testing.assert_close(got[n], expected[n], rtol=1e-9, atol=1e-12)


def test_anil_is_maml_on_the_head_and_a_plain_query_gradient_on_the_body():
    """Closed form: head' = head - α ∇_head L_s(θ); ḡ = ∇ L_q(body, head'(θ))."""
    net, task = small_net(), mse_tasks(1)[0]
    learner = RKMetaLearner(net, layer_methods="2=midpoint,*=frozen:midpoint", inner_lr=ALPHA)
    theta = {n: p.detach().clone().requires_grad_() for n, p in net.named_parameters()}
    call = lambda p: lambda x: torch.func.functional_call(net, p, (x,))  # noqa: E731
    head = ["2.weight", "2.bias"]
    g = torch.autograd.grad(support(call(theta), task), [theta[n] for n in head],
                            create_graph=True)
    adapted = {**theta, **{n: theta[n] - ALPHA * gn for n, gn in zip(head, g, strict=True)}}
    expected = torch.autograd.grad(query(call(adapted), task), list(theta.values()))
    got = learner_grads(learner, [task])
    for n, e in zip(theta, expected, strict=True):
        torch.testing.assert_close(got[n], e, rtol=1e-10, atol=1e-12)
    assert learner.alphas["0.weight"] == 0.0 and learner.alphas["2.weight"] == ALPHA


# -- the same numbers as the built-in supervised path --------------------------------------


class TorchMLP(nn.Module):
    def __init__(self, params: dict) -> None:
        super().__init__()
        n = len(params) // 2
        self.layers = nn.ModuleList(nn.Linear(params[f"layers.{i}.weight"].shape[1],
                                              params[f"layers.{i}.weight"].shape[0])
                                    for i in range(n))
        self.load_state_dict(params)

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            x = F.relu(x) if i < len(self.layers) - 1 else x
        return x


class Block(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm = nn.BatchNorm2d(c_out, track_running_stats=False)  # batch statistics

    def forward(self, x):
        return F.max_pool2d(F.relu(self.norm(self.conv(x))), 2)


class TorchConvNet(nn.Module):
    def __init__(self, params: dict, channels: int, filters: int, ways: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(channels if i == 0 else filters, filters)
                                    for i in range(4))
        self.head = nn.Linear(params["head.weight"].shape[1], ways)
        self.load_state_dict(params)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.head(x.flatten(1))


def _compare(functional, module, batch, method, classification):
    """In double precision, so that the two paths' different order of float operations
    (which in float32 differs by CPU and BLAS kernel) cannot hide a real difference."""
    tab = get_tableau(method)
    h = ALPHA / tab.c[1]
    params = {n: v.to(DT) for n, v in
              functional.init_params(torch.Generator().manual_seed(0)).items()}
    batch = FewShotBatch(*(x.to(DT) if x.is_floating_point() else x for x in
                           (batch.xs, batch.ys, batch.xq, batch.yq)))
    module = module.to(DT)
    theta = {n: v.clone().requires_grad_() for n, v in params.items()}
    builtin = meta_gradient(functional, theta, batch, tab, h, inner_steps=2)
    lossf = F.cross_entropy if classification else F.mse_loss
    learner = RKMetaLearner(module, method, inner_lr=ALPHA, inner_steps=2)
    tasks = list(zip(batch.xs, batch.ys, batch.xq, batch.yq, strict=True))
    got = learner_grads(learner, tasks, lambda m, t: lossf(m(t[0]), t[1]),
                        lambda m, t: lossf(m(t[2]), t[3]))
    assert max(g.abs().max() for g in builtin.values()) > 1e-3
    for n in params:
        torch.testing.assert_close(got[n], builtin[n], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("method", ["midpoint", "ralston", "rk3"])
def test_equal_to_the_builtin_mlp_path(method):
    g = torch.Generator().manual_seed(1)
    batch = FewShotBatch(*(torch.randn(3, 10, 1, generator=g) for _ in range(4)))
    functional = MLP(1, [16, 16], 1)
    module = TorchMLP(functional.init_params(torch.Generator().manual_seed(0)))
    _compare(functional, module, batch, method, classification=False)


def test_equal_to_the_builtin_conv_net_path():
    g = torch.Generator().manual_seed(2)
    ways, filters = 3, 4
    xs, xq = torch.rand(2, ways, 1, 28, 28, generator=g), torch.rand(2, ways, 1, 28, 28,
                                                                     generator=g)
    labels = torch.arange(ways).expand(2, ways)
    batch = FewShotBatch(xs, labels, xq, labels)
    functional = ConvNet(1, 28, ways, filters=filters)
    module = TorchConvNet(functional.init_params(torch.Generator().manual_seed(0)), 1,
                          filters, ways)
    _compare(functional, module, batch, "ralston", classification=True)


def test_the_supervised_path_takes_the_same_per_group_tableaus():
    g = torch.Generator().manual_seed(4)
    batch = FewShotBatch(*(torch.randn(2, 8, 1, generator=g, dtype=DT) for _ in range(4)))
    functional = MLP(1, [8, 8], 1)
    params = {n: v.to(DT) for n, v in
              functional.init_params(torch.Generator().manual_seed(0)).items()}
    spec = "layers.2=midpoint,*=ralston"
    learner = RKMetaLearner(TorchMLP(params).to(DT), layer_methods=spec, inner_lr=ALPHA)
    theta = {n: v.clone().requires_grad_() for n, v in params.items()}
    builtin = meta_gradient(functional, theta, batch, learner.scheme, None)
    tasks = list(zip(batch.xs, batch.ys, batch.xq, batch.yq, strict=True))
    got = learner_grads(learner, tasks, lambda m, t: F.mse_loss(m(t[0]), t[1]),
                        lambda m, t: F.mse_loss(m(t[2]), t[3]))
    for n in params:
        torch.testing.assert_close(got[n], builtin[n], rtol=1e-9, atol=1e-12)


# -- adaptation and errors ------------------------------------------------------------------


def test_adapt_takes_plain_gradient_steps_of_each_groups_alpha():
    net, task = small_net(), mse_tasks(1)[0]
    learner = RKMetaLearner(net, layer_methods="2=heun,*=frozen:heun", inner_lr=ALPHA)
    theta = {n: p.detach().clone().requires_grad_() for n, p in net.named_parameters()}
    call = lambda p: lambda x: torch.func.functional_call(net, p, (x,))  # noqa: E731
    grads = torch.autograd.grad(support(call(theta), task), list(theta.values()))
    expected = {n: (v - (ALPHA if n.startswith("2.") else 0.0) * g).detach()
                for (n, v), g in zip(theta.items(), grads, strict=True)}
    adapted = learner.adapt(task, support, steps=1)
    for n in expected:
        torch.testing.assert_close(adapted[n], expected[n])
    assert learner.adapt(task, support, steps=0)["0.weight"].equal(net[0].weight.detach())


@pytest.mark.parametrize("spec", ["*=euler", "2=euler,*=frozen:euler"])
def test_an_euler_group_adapts_by_its_alpha(spec):
    """Euler's q is all zero but it is not frozen: its group adapts by α = h at test time,
    as RKMetaLearner(net, "euler") does (a frozen:euler group does not move)."""
    net, task = small_net(), mse_tasks(1)[0]
    learner = RKMetaLearner(net, layer_methods=spec, inner_lr=ALPHA)
    whole = RKMetaLearner(net, "euler", inner_lr=ALPHA)
    moves = {n: spec == "*=euler" or n.startswith("2.") for n in learner.names}
    assert learner.alphas == {n: whole.alphas[n] if moves[n] else 0.0 for n in learner.names}
    theta = {n: p.detach().clone().requires_grad_() for n, p in net.named_parameters()}
    call = lambda p: lambda x: torch.func.functional_call(net, p, (x,))  # noqa: E731
    grads = torch.autograd.grad(support(call(theta), task), list(theta.values()))
    adapted = learner.adapt(task, support, steps=1)
    for (n, v), g in zip(theta.items(), grads, strict=True):
        torch.testing.assert_close(adapted[n], (v - (ALPHA if moves[n] else 0.0) * g).detach())


def test_an_euler_group_takes_h_under_the_step_size_reading():
    learner = RKMetaLearner(small_net(), layer_methods="2=euler,*=midpoint", step_size=0.2)
    assert learner.alphas == {"0.weight": 0.1, "0.bias": 0.1, "2.weight": 0.2, "2.bias": 0.2}


@pytest.mark.parametrize("kwargs,message", [
    ({"inner_lr": 0.1, "step_size": 0.2}, "give either inner_lr (α) or step_size (h), not both"),
    ({"inner_lr": -1.0}, "inner_lr must be a positive number, got -1.0"),
    ({"step_size": float("nan")}, "step_size must be a positive number, got nan"),
    ({"tableau": "no-c2", "inner_lr": 0.1}, "c2 = 0.0, so h = α / c2 is undefined; give "
                                           "step_size h instead"),
    ({"layer_methods": "midpoint", "inner_lr": 0.1}, "layer_methods: expected PATTERN=METHOD"),
    ({"layer_methods": "9=midpoint", "inner_lr": 0.1}, "layer_methods: no pattern matches"),
    ({"inner_lr": 0.1, "inner_steps": 0}, "inner_steps must be an integer >= 1, got 0"),
])
def test_python_users_get_errors_in_python_terms_at_construction(kwargs, message):
    """The argument names a Python user passed, never the CLI's flags; and at construction,
    not at the first call."""
    if kwargs.get("tableau") == "no-c2":
        kwargs["tableau"] = Tableau(name="no-c2", a=(0.5, 0.5), q=((0.0, 0.0), (0.0, 0.0)))
    with pytest.raises(ValueError) as err:
        RKMetaLearner(small_net(), **kwargs)
    assert message in str(err.value)
    assert "--" not in str(err.value)


def test_clear_errors():
    with pytest.raises(ValueError, match="ReLU has no parameters"):
        RKMetaLearner(nn.ReLU(), inner_lr=0.1)
    with pytest.raises(ValueError, match="inner_lr"):
        RKMetaLearner(small_net())
    learner = RKMetaLearner(small_net(), inner_lr=0.1)
    per_sample = lambda m, t: (m(t[0]) - t[1][:, :1]).pow(2)  # noqa: E731
    with pytest.raises(ValueError, match=r"support_loss must return a scalar tensor, got \(6, 1\)"):
        learner(mse_tasks(1), per_sample, query)
    with pytest.raises(ValueError, match=r"'0.weight' has shape \(2, 2\), the module's is"):
        learner.functional({"0.weight": torch.zeros(2, 2, dtype=DT)})
    with pytest.raises(ValueError, match="no pattern matches 0.weight, 0.bias"):
        RKMetaLearner(small_net(), layer_methods="2=midpoint", inner_lr=0.1)
    with pytest.raises(ValueError, match="'2.weight' is matched by '2' and '2.w\\*'"):
        RKMetaLearner(small_net(), layer_methods="2=midpoint,2.w*=heun,*=ralston",
                      inner_lr=0.1)
    with pytest.raises(ValueError, match="'head' match no parameter"):
        RKMetaLearner(small_net(), layer_methods="head=midpoint,*=ralston", inner_lr=0.1)
    with pytest.raises(ValueError, match="expected PATTERN=METHOD"):
        parse_layer_methods("head:midpoint")
    with pytest.raises(ValueError, match="unknown method 'rk9'"):
        parse_layer_methods("*=rk9")
