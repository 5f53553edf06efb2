"""RKMetaLearner: the RK meta-gradient of any nn.Module, and a tableau per parameter group.

Checked against (1) the built-in supervised path on its MLP and conv net, (2) an
independent computation written here from the equations (stage points by hand, one task
at a time, each k_i the total derivative of L_i(θ_i(θ)), ḡ = Σ a_i k_i per parameter), for
every named tableau, exact and first order, per-group tableaus including ANIL, several
inner steps and batch norm in training mode; each in the three ways the learner runs the
tasks: one at a time, all at once from a list, all at once from stacked tensors."""

from __future__ import annotations

import dataclasses
import warnings

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


def by_hand(net: nn.Module, tasks, tableaus: dict, steps: dict, first_order: bool,
            inner_steps: int = 1, sl=support, ql=query) -> dict:
    """ḡ[n] = mean over tasks of Σ_i a_n,i k_i[n], with θ_i[n] = θ[n] - h_n Σ_j q_n,ij k_j[n]
    followed (i > 1) by inner_steps - 1 steps of h_n c_n,i on the support loss, and
    k_i = d/dθ L_i(θ_i(θ)) (or its value at θ_i when first order)."""
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
            return sl(model, task) if i == 0 else ql(model, task)

        ks = []
        for i in range(s):
            point = {n: theta[n] - sum(steps[n] * coef(n, "q", i, j) * ks[j][n]
                                       for j in range(i)) if i else theta[n] for n in names}
            node = {n: steps[n] * sum(coef(n, "q", i, j) for j in range(i)) for n in names}
            for _ in range(inner_steps - 1 if i and any(node.values()) else 0):
                at = ({n: v.detach().requires_grad_() for n, v in point.items()} if first_order
                      else point)
                g = torch.autograd.grad(loss(0, at), list(at.values()),
                                        create_graph=not first_order)
                point = {n: point[n] - node[n] * gn for n, gn in zip(names, g, strict=True)}
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


FORMS = ["loop", "list", "stacked"]  # one task at a time; all at once from a list / stacked


def form_grads(form: str, net: nn.Module, tasks, sl=support, ql=query, **kwargs) -> dict:
    """The learner's meta-gradient with the tasks run as ``form`` says (all at once must
    not fall back to the loop: vectorize=True raises instead)."""
    learner = RKMetaLearner(net, vectorize=form != "loop", **kwargs)
    if form == "stacked":
        tasks = tuple(torch.stack(leaf) for leaf in zip(*tasks, strict=True))
    learner.module.zero_grad()
    learner(tasks, sl, ql, stacked=form == "stacked").backward()
    return {n: p.grad.clone() for n, p in learner.module.named_parameters()}


def assert_grads(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys()
    for n in got:
        torch.testing.assert_close(got[n], expected[n], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("first_order", [False, True], ids=["exact", "first-order"])
@pytest.mark.parametrize("method", METHOD_NAMES)
def test_every_named_tableau_matches_the_equations(method, first_order, form):
    net, tab = small_net(), get_tableau(method)
    tasks = mse_tasks()
    names = [n for n, _ in net.named_parameters()]
    expected = by_hand(net, tasks, {n: tab for n in names}, steps_for(tab, names), first_order)
    assert_grads(form_grads(form, net, tasks, method=method, inner_lr=ALPHA,
                            first_order=first_order), expected)


def group_tableaus(net: nn.Module, spec: str) -> tuple[dict, dict]:
    """Each parameter's tableau and h under ``spec`` (patterns on the first name part)."""
    rules = dict(parse_layer_methods(spec))
    names = [n for n, _ in net.named_parameters()]
    tableaus = {n: rules[n.split(".")[0]] if n.split(".")[0] in rules else rules["*"]
                for n in names}
    steps = {n: 0.0 if t.name.startswith("frozen:") else steps_for(t, [n])[n]
             for n, t in tableaus.items()}
    return tableaus, steps


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("spec", ["2=midpoint,*=ralston", "0=rk4,*=heun",
                                  "2=midpoint,*=frozen:midpoint"])
@pytest.mark.parametrize("first_order", [False, True], ids=["exact", "first-order"])
def test_per_group_tableaus_match_the_equations(spec, first_order, form):
    net = small_net()
    tasks = mse_tasks(2)
    expected = by_hand(net, tasks, *group_tableaus(net, spec), first_order)
    assert_grads(form_grads(form, net, tasks, layer_methods=spec, inner_lr=ALPHA,
                            first_order=first_order), expected)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("case", ["midpoint", "rk3", "heun-first-order",
                                  "2=midpoint,*=ralston"])
def test_two_inner_steps_match_the_equations(case, form):
    net, tasks = small_net(), mse_tasks(2)
    first_order = case.endswith("-first-order")
    method = case.removesuffix("-first-order")
    if "=" in case:
        tableaus, steps = group_tableaus(net, case)
        kwargs = {"layer_methods": case}
    else:
        names = [n for n, _ in net.named_parameters()]
        tableaus = {n: get_tableau(method) for n in names}
        steps, kwargs = steps_for(get_tableau(method), names), {"method": method}
    expected = by_hand(net, tasks, tableaus, steps, first_order, inner_steps=2)
    assert_grads(form_grads(form, net, tasks, inner_lr=ALPHA, first_order=first_order,
                            inner_steps=2, **kwargs), expected)


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


# -- batch norm in training mode: each task's own statistics -------------------------------


def bn_net(track: bool) -> nn.Module:
    torch.manual_seed(5)
    return nn.Sequential(nn.Linear(2, 5), nn.BatchNorm1d(5, track_running_stats=track),
                         nn.Tanh(), nn.Linear(5, 1)).to(DT).train()


class ConvBN(nn.Module):
    """conv -> batch norm -> ReLU -> 2x2 max-pool -> linear: every layer the learner runs
    with its own task-batched product."""

    def __init__(self, track: bool) -> None:
        super().__init__()
        torch.manual_seed(6)
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.norm = nn.BatchNorm2d(3, track_running_stats=track)
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(3 * 3 * 3, 2)

    def forward(self, x):
        return self.head(self.pool(torch.relu(self.norm(self.conv(x)))).flatten(1))


def image_tasks(n: int = 3) -> list[tuple[torch.Tensor, ...]]:
    g = torch.Generator().manual_seed(7)
    y = torch.tensor([0, 1, 1, 0])
    return [(torch.rand(4, 1, 6, 6, generator=g, dtype=DT), y,
             torch.rand(4, 1, 6, 6, generator=g, dtype=DT), y) for _ in range(n)]


def ce_support(model, task):
    return F.cross_entropy(model(task[0]), task[1])


def ce_query(model, task):
    return F.cross_entropy(model(task[2]), task[3])


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("kind,method,track", [
    ("linear", "midpoint", False), ("linear", "midpoint", True), ("conv", "midpoint", False),
    ("conv", "midpoint", True), ("conv", "rk3", False)])
def test_batch_norm_in_training_mode_uses_each_tasks_statistics(kind, method, track, form):
    """by_hand evaluates one task at a time, so its batch statistics are that task's: the
    batched learner must give the same meta-gradient (MAML's transductive batch norm)."""
    net = bn_net(track) if kind == "linear" else ConvBN(track).to(DT)
    tasks, sl, ql = ((mse_tasks(), support, query) if kind == "linear"
                     else (image_tasks(), ce_support, ce_query))
    names = [n for n, _ in net.named_parameters()]
    tab = get_tableau(method)
    expected = by_hand(net, tasks, {n: tab for n in names}, steps_for(tab, names), False,
                       sl=sl, ql=ql)
    assert_grads(form_grads(form, net, tasks, sl, ql, method=method, inner_lr=ALPHA),
                 expected)


def test_running_statistics_move_by_the_mean_of_the_tasks_updates():
    """Euler evaluates each task's support loss once: all tasks at once, the running mean
    moves by the mean over tasks of each task's update (one at a time: task after task)."""
    tasks = mse_tasks(3)
    for vectorize in (True, False):
        net = bn_net(True)
        norm = net[1]
        start = norm.running_mean.clone()
        RKMetaLearner(net, "euler", inner_lr=ALPHA, vectorize=vectorize)(tasks, support, query)
        with torch.no_grad():
            means = [net[0](t[0]).mean(0) for t in tasks]  # each task's batch mean
        m = norm.momentum
        if vectorize:
            expected = sum((1 - m) * start + m * mu for mu in means) / len(tasks)
            assert int(norm.num_batches_tracked) == 1
        else:
            expected = start
            for mu in means:
                expected = (1 - m) * expected + m * mu
            assert int(norm.num_batches_tracked) == len(tasks)
        torch.testing.assert_close(norm.running_mean, expected, rtol=1e-12, atol=1e-14)


def test_the_task_batched_layers_do_the_work():
    """Linear, conv, batch norm and max-pool each take their hand-written task-batched
    product (not vmap's generic rules) inside the learner."""
    from rkmeta_rl.learner import vmap_primitives
    from rkmeta_rl.learner.task_layers import TaskLayers

    used: list[str] = []
    rules = {n: getattr(TaskLayers, n) for n in ("_linear", "_conv2d", "_batch_norm",
                                                      "_max_pool2d")}

    def spy(name):
        def rule(self, *args):
            out = rules[name](self, *args)
            used.append(name if out is not None else f"{name} declined")
            return out
        return rule

    if not vmap_primitives.FAST:
        pytest.skip("this torch has not the primitives the task-batched layers use")
    try:
        for name in rules:
            setattr(TaskLayers, name, spy(name))
        net = ConvBN(False).to(DT)
        RKMetaLearner(net, "midpoint", inner_lr=ALPHA, vectorize=True)(
            image_tasks(), ce_support, ce_query)
    finally:
        for name, rule in rules.items():
            setattr(TaskLayers, name, rule)
    assert set(used) == set(rules)


def test_the_public_vmap_gives_the_same_numbers(monkeypatch):
    """Without functorch's primitives (another torch), the learner takes torch.func.vmap."""
    from rkmeta_rl.learner import vmap_primitives

    monkeypatch.setattr(vmap_primitives, "FAST", False)
    net, tasks = ConvBN(False).to(DT), image_tasks()
    names = [n for n, _ in net.named_parameters()]
    tab = get_tableau("midpoint")
    expected = by_hand(net, tasks, {n: tab for n in names}, steps_for(tab, names), False,
                       sl=ce_support, ql=ce_query)
    assert_grads(form_grads("list", net, tasks, ce_support, ce_query, method="midpoint",
                            inner_lr=ALPHA), expected)


# -- the other ways to give the tasks and the losses ---------------------------------------


def test_batched_losses_stage_loss_and_meta_gradient_agree():
    net, tasks = small_net(), mse_tasks(3)
    learner = RKMetaLearner(net, "rk3", inner_lr=ALPHA)
    expected = learner_grads(learner, tasks)
    stacked = tuple(torch.stack(leaf) for leaf in zip(*tasks, strict=True))  # (T, 6, 2) each

    def batched(i, model, batch):  # the T tasks' losses (T,)
        x, y = (batch[0], batch[1]) if i == 0 else (batch[2], batch[3])
        return (model(x) - y[..., :1]).pow(2).mean(dim=(1, 2))

    def per_task(i, model, task):
        return support(model, task) if i == 0 else query(model, task)

    got = {
        "batched": learner.meta_gradient(stacked, stage_loss=batched, stacked=True,
                                         batched_losses=True),
        "batched from a list": learner.meta_gradient(tasks, stage_loss=batched,
                                                     batched_losses=True),
        "stage_loss": learner.meta_gradient(tasks, stage_loss=per_task),
        "params": learner.meta_gradient(
            tasks, support, query,
            params={n: p.detach().clone().requires_grad_() for n, p in net.named_parameters()}),
    }
    for grads in got.values():
        assert_grads(grads, expected)


def test_dataclass_batches_stack_field_by_field():
    @dataclasses.dataclass
    class Task:
        xs: torch.Tensor
        ys: torch.Tensor
        xq: torch.Tensor
        yq: torch.Tensor
        name: str = "sine"

    net, tasks = small_net(), mse_tasks(3)
    expected = learner_grads(RKMetaLearner(net, "midpoint", inner_lr=ALPHA), tasks)
    sl = lambda m, t: support(m, (t.xs, t.ys))  # noqa: E731
    ql = lambda m, t: query(m, (None, None, t.xq, t.yq))  # noqa: E731
    items = [Task(*t) for t in tasks]
    learner = RKMetaLearner(net, "midpoint", inner_lr=ALPHA, vectorize=True)
    assert_grads(learner.meta_gradient(items, sl, ql), expected)
    batch = Task(*(torch.stack(leaf) for leaf in zip(*tasks, strict=True)))
    assert_grads(learner.meta_gradient(batch, sl, ql, stacked=True), expected)


def test_adapt_all_tasks_at_once_and_evaluate_them_per_task():
    net, tasks = small_net(), mse_tasks(3)
    learner = RKMetaLearner(net, layer_methods="2=heun,*=frozen:heun", inner_lr=ALPHA)
    stacked = tuple(torch.stack(leaf) for leaf in zip(*tasks, strict=True))
    adapted = learner.adapt(stacked, support, steps=2, stacked=True)  # (T, ...) each
    outputs = learner.per_task(adapted)(stacked[2])  # (T, 6, 1)
    for t, task in enumerate(tasks):
        one = learner.adapt(task, support, steps=2)
        for n in one:
            torch.testing.assert_close(adapted[n][t], one[n], rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(outputs[t], learner.functional(one)(task[2]))


# -- when the tasks cannot all be run at once --------------------------------------------------


class Branchy(nn.Module):
    """Data-dependent control flow: vmap cannot run it."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(8)
        self.lin = nn.Linear(2, 1)

    def forward(self, x):
        return self.lin(x) if x.sum() > 0 else -self.lin(x)


def test_a_module_vmap_cannot_run_falls_back_to_one_task_at_a_time_with_one_warning():
    net, tasks = Branchy().to(DT), mse_tasks(3)
    names = [n for n, _ in net.named_parameters()]
    tab = get_tableau("midpoint")
    expected = by_hand(net, tasks, {n: tab for n in names}, steps_for(tab, names), False)
    learner = RKMetaLearner(net, "midpoint", inner_lr=ALPHA)
    with pytest.warns(UserWarning, match=r"one at a time \(slower\): torch.func.vmap cannot run "
                                         r"Branchy .*vectorize=False"):
        assert_grads(learner_grads(learner, tasks), expected)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_grads(learner_grads(learner, tasks), expected)  # said once
        quiet = RKMetaLearner(net, "midpoint", inner_lr=ALPHA, vectorize=False)
        assert_grads(learner_grads(quiet, tasks), expected)
    with pytest.raises(RuntimeError):
        learner_grads(RKMetaLearner(net, "midpoint", inner_lr=ALPHA, vectorize=True), tasks)


def test_tasks_of_different_shapes_run_one_at_a_time():
    net, tasks = small_net(), mse_tasks(3)
    tasks[1] = tuple(v[:4] for v in tasks[1])  # 4 examples instead of 6
    names = [n for n, _ in net.named_parameters()]
    tab = get_tableau("ralston")
    expected = by_hand(net, tasks, {n: tab for n in names}, steps_for(tab, names), False)
    with pytest.warns(UserWarning, match="the tasks' tensors differ in shape"):
        got = learner_grads(RKMetaLearner(net, "ralston", inner_lr=ALPHA), tasks)
    assert_grads(got, expected)
    with pytest.raises(ValueError, match="cannot be stacked .*vectorize=True"):
        RKMetaLearner(net, inner_lr=ALPHA, vectorize=True)(tasks, support, query)


def test_batched_forms_refuse_what_they_cannot_take():
    net, tasks = small_net(), mse_tasks(2)
    learner = RKMetaLearner(net, inner_lr=ALPHA)
    with pytest.raises(ValueError, match="same leading task dimension"):
        learner((torch.zeros(2, 6, 2), torch.zeros(3, 6, 2)), support, query, stacked=True)
    with pytest.raises(ValueError, match=r"the 2 tasks' losses, shape \(2,\)"):
        learner(tasks, lambda m, b: m(b[0]).sum(), query, batched_losses=True)
    with pytest.raises(ValueError, match="not both"):
        learner(tasks, support, query, stage_loss=lambda i, m, t: support(m, t))
    with pytest.raises(ValueError, match="params must name exactly"):
        learner(tasks, support, query, params={"0.weight": net[0].weight})
    with pytest.raises(ValueError, match="vectorize must be None, True or False"):
        RKMetaLearner(net, inner_lr=ALPHA, vectorize="yes")


def test_an_error_in_the_losses_is_raised_and_not_taken_for_vmaps():
    learner = RKMetaLearner(small_net(), inner_lr=ALPHA)
    bad = lambda m, t: (m(t[0]) @ torch.ones(3, 3, dtype=DT)).sum()  # noqa: E731 - (6, 1) @ (3, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "one at a time" warning either
        with pytest.raises(RuntimeError, match="cannot be multiplied"):
            learner(mse_tasks(2), bad, query)
        learner(mse_tasks(2), support, query)
    assert not learner._unbatchable  # still all at once
