"""The KL curvature product v -> (F + λI) v that RK-TRPO's conjugate gradient solves with
(docs/method.md, "The exact curvature product").

At θ_old every KL_i vanishes with its gradient, so its Hessian is a Gauss-Newton product,
summed over tasks:

    F = Σ_i w_i J_iᵀ G_i J_i,   J_i = dθ_i/dθ = I - h Σ_j q_ij ∇²φ_j,   G_i = J_netᵀ M J_net

with φ_j(θ) = L_j(θ_j(θ)) (k_j = ∇φ_j), J_net the policy's Jacobian at θ_i on stage i's
states and M the Gaussian's Fisher matrix (1/σ² per mean coordinate, 2 per log σ). Three
ways to apply it, from fastest to most general:

* :func:`curvature_fvp` for the Gaussian MLP policy and any tableau whose points move by
  k_1 alone (every two-stage tableau, and Euler): then J_i = I - h q_i1 H with H the
  Hessian of the REINFORCE loss at θ, applied in closed form (:class:`ReinforceHessian`,
  Pearlmutter's R-operator written out for the MLP) through activations cached once per
  meta-iteration, like G_i (:class:`MLPLinearization`). No autograd graph is replayed.
* :func:`stagewise_fvp` for any tableau (rk3, rk4: their J_i hold third derivatives):
  J_i v by one backward pass through the stage construction (J_i is symmetric).
* :func:`double_backward_fvp` for a tableau per parameter group, whose stage Jacobians are
  not symmetric: double backward through the weighted KL.

All three give the same matrix (tests/test_trpo_curvature.py). Shapes: T tasks, N steps
per task (episodes × horizon), d inputs, A actions; parameters are shared (θ) or per task
(a leading T).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from rkmeta_rl.rk import Params, Scheme, repeat_params, stage_points
from rkmeta_rl.rl.config import MetaStepConfig
from rkmeta_rl.rl.episodes import Episodes
from rkmeta_rl.rl.losses import StageObjective, kl_weights, reinforce_loss
from rkmeta_rl.rl.policy import GaussianMLPPolicy
from rkmeta_rl.rl.trpo import dot, flat_grad, unflatten
from rkmeta_rl.tableau import Tableau

FVP = Callable[[Tensor], Tensor]


def _step_weights(mask: Tensor, scale: float) -> Tensor:
    """scale / (valid steps of the task) on every valid step: (T, N) -> (T, N, 1)."""
    return (scale * mask / mask.sum(-1, keepdim=True).clamp_min(1.0)).unsqueeze(-1)


# BLAS runs thin products (a side of at most THIN, e.g. 2 actions or 2 nav2d inputs) far
# below its rate for square ones; measured here, one thread, 10k rows × 100: (·, 2) @ (2,
# 100) 3.4× faster as 2 broadcast multiply-adds, (·, 100) @ (100, 2) 2× and aᵀd into
# (100, 2) 8× faster with the thin side as the rows of the product (transposed).
THIN = 4


def _matmul(a: Tensor, b: Tensor) -> Tensor:
    """a @ b for a (T, N, i) and b (i, o) or (T, i, o), thin shapes done the fast way."""
    if a.shape[-1] <= THIN:
        rows = [b[k] if b.dim() == 2 else b[:, k:k + 1] for k in range(a.shape[-1])]
        out = a[..., :1] * rows[0]
        for k in range(1, a.shape[-1]):
            out.addcmul_(a[..., k:k + 1], rows[k])
        return out
    if b.shape[-1] <= THIN:
        return torch.matmul(b.transpose(-1, -2), a.transpose(-1, -2)).transpose(-1, -2)
    return torch.matmul(a, b)


def _add_matmul_(acc: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """acc += a @ b in place: a (T, N, i), b (i, o) or (T, i, o)."""
    if min(a.shape[-1], b.shape[-1]) <= THIN or not acc.is_contiguous():
        return acc.add_(_matmul(a, b))
    if b.dim() == 2:
        acc.view(-1, acc.shape[-1]).addmm_(a.reshape(-1, a.shape[-1]), b)
    else:
        acc.baddbmm_(a, b)
    return acc


def _outer(a: Tensor, d: Tensor, per_task: bool) -> Tensor:
    """Σ_n a_n d_nᵀ per task (T, i, o), or over every task's steps at once (i, o); the
    thinner side is the product's rows (see :data:`THIN`)."""
    if d.shape[-1] < a.shape[-1]:
        return _outer(d, a, per_task).transpose(-1, -2)
    if per_task:
        return torch.matmul(a.transpose(-1, -2), d)
    return a.reshape(-1, a.shape[-1]).T @ d.reshape(-1, d.shape[-1])


def _task_sum(x: Tensor, per_task: bool) -> Tensor:
    return x if per_task else x.sum(0)


class MLPLinearization:
    """The policy's activations at one point on one batch of states, kept for repeated
    forward-mode (:meth:`jvp`) and reverse-mode (:meth:`vjp`) products.

    With z_l = a_l W_l + b_l, a_{l+1} = relu(z_l) = z_l ⊙ m_l and the mean μ = z_{L-1}:
    forward  dz_l = da_l W_l + a_l dW_l + db_l,  da_{l+1} = dz_l ⊙ m_l;
    reverse  gW_l = a_lᵀ δ_l,  gb_l = Σ δ_l,  δ_{l-1} = (δ_l W_lᵀ) ⊙ m_{l-1}.
    """

    def __init__(self, policy: GaussianMLPPolicy, params: Params, obs: Tensor) -> None:
        self.params = {n: v.detach() for n, v in params.items()}
        self.n_layers = policy.n_layers
        with torch.no_grad():
            self.acts, self.gates, h = [obs], [], obs  # acts[l]: input of layer l, (T, N, ·)
            for layer in range(self.n_layers):
                h = torch.matmul(h, self.w(layer)) + self.params[f"b{layer}"].unsqueeze(-2)
                if layer < self.n_layers - 1:
                    self.gates.append((h > 0).to(h.dtype))
                    h = h * self.gates[-1]
                    self.acts.append(h)
        self.mean = h  # (T, N, A)
        self.log_std = self.params["log_std"].unsqueeze(-2)  # (T, 1, A) or (1, A)

    def w(self, layer: int) -> Tensor:
        return self.params[f"w{layer}"]

    def jvp(self, v: Params) -> tuple[list[Tensor | None], Tensor]:
        """(da_l for every layer input, None for the states; dμ (T, N, A)) along v."""
        das: list[Tensor | None] = [None]
        for layer in range(self.n_layers):
            dz = _matmul(self.acts[layer], v[f"w{layer}"]).add_(
                v[f"b{layer}"].unsqueeze(-2))
            if layer > 0:
                _add_matmul_(dz, das[-1], self.w(layer))
            if layer < self.n_layers - 1:
                das.append(dz.mul_(self.gates[layer]))
        return das, dz

    def backward_deltas(self, d_mean: Tensor) -> list[Tensor]:
        """δ_l = ∂/∂z_l for every layer, from the cotangent d_mean (T, N, A) of μ."""
        deltas = [d_mean]
        for layer in range(self.n_layers - 1, 0, -1):
            deltas.append(_matmul(deltas[-1], self.w(layer).transpose(-1, -2))
                          .mul_(self.gates[layer - 1]))
        return deltas[::-1]

    def weight_grads(self, deltas: list[Tensor], per_task: bool) -> Params:
        """gW_l = a_lᵀ δ_l and gb_l = Σ_n δ_l, per task or summed over tasks."""
        out: Params = {}
        for layer, delta in enumerate(deltas):
            out[f"w{layer}"] = _outer(self.acts[layer], delta, per_task)
            out[f"b{layer}"] = delta.sum(-2) if per_task else delta.sum((0, 1))
        return out

    def vjp(self, d_mean: Tensor, d_log_std: Tensor, per_task: bool) -> Params:
        """J_netᵀ (d_mean (T, N, A), d_log_std (T, A)): per task, or summed over tasks."""
        out = self.weight_grads(self.backward_deltas(d_mean), per_task)
        out["log_std"] = _task_sum(d_log_std, per_task)
        return out


class ReinforceHessian:
    """v -> ∇²L v for the REINFORCE loss L = Σ_t Σ_n c_tn (½ (u - μ)ᵀ Σ⁻¹ (u - μ) + Σ log σ)
    + const, c_tn = A_tn / (valid steps of t) (``rkmeta_rl.rl.losses.reinforce_loss``), at
    the point of ``net``; per-task parameters see their own task's Hessian.

    Pearlmutter's R-operator on the backward pass: with g = ∂L/∂μ = -c (u - μ)/σ²,
      R g = c/σ² dμ - 2 g dlogσ,    R ∂L/∂logσ = Σ_n (-2 g dμ) + dlogσ Σ_n 2 c (u - μ)²/σ²,
      R gW_l = da_lᵀ δ_l + a_lᵀ Rδ_l,   Rδ_{l-1} = (Rδ_l W_lᵀ + δ_l dW_lᵀ) ⊙ m_{l-1}.

    Two of these products involve only cached quantities and the first two layers'
    tangents, contracted against the few columns x̃ = (states, 1) of the first layer:
    da_1ᵀ δ_1 = Σ_k dW̃_0[k] C_k and x̃ᵀ((δ_1 dW_1ᵀ) ⊙ m_0) = Σ_i dW_1[:, i] C_k[:, i], with
    the moments C_k[j, i] = Σ_n x̃_nk m_0,nj δ_1,ni computed once per task (k = 1..d+1).
    They replace two of the six big (steps × width × width) products of every call.
    """

    def __init__(self, policy: GaussianMLPPolicy, params: Params, episodes: Episodes) -> None:
        obs, act, adv, mask = episodes.flat()
        self.net = net = MLPLinearization(policy, params, obs)
        c = adv.unsqueeze(-1) * _step_weights(mask, 1.0)  # (T, N, 1)
        inv_var = torch.exp(-2.0 * net.log_std)  # (T, 1, A) or (1, A)
        r = act - net.mean  # (T, N, A)
        self.g = -c * r * inv_var  # ∂L/∂μ
        self.c_inv_var = c * inv_var  # ∂²L/∂μ²
        self.d2_log_std = (2.0 * c * r * r * inv_var).sum(-2)  # ∂²L/∂logσ², (T, A)
        self.d_log_std = (c * (1.0 - r * r * inv_var)).sum(-2)  # ∂L/∂logσ, (T, A)
        self.deltas = net.backward_deltas(self.g)
        self.x1 = torch.cat([obs, torch.ones_like(obs[..., :1])], -1)  # x̃ (T, N, d+1)
        self._moments: Tensor | None = None

    @property
    def moments(self) -> Tensor:
        """C_k[j, i] = Σ_n x̃_nk m_0,nj δ_1,ni per task: (T, d+1, width_0, width_1)."""
        if self._moments is None:
            self._moments = torch.stack([
                _outer(self.x1[..., k:k + 1] * self.net.gates[0], self.deltas[1], per_task=True)
                for k in range(self.x1.shape[-1])], 1)
        return self._moments

    def gradient(self, per_task: bool = True) -> Params:
        """∇L at the point: each task's own gradient (k_1), or their sum."""
        out = self.net.weight_grads(self.deltas, per_task)
        out["log_std"] = _task_sum(self.d_log_std, per_task)
        return out

    def __call__(self, v: Params, per_task: bool) -> Params:
        """∇²L v: v shared or per task; the result per task or summed over tasks."""
        net, last = self.net, self.net.n_layers - 1
        das, d_mean = net.jvp(v)
        d_log_std = v["log_std"].unsqueeze(-2)  # (T, 1, A) or (1, A)
        r_delta = self.c_inv_var * d_mean - 2.0 * self.g * d_log_std  # Rδ at the output
        out: Params = {}
        for layer in range(last, 0, -1):  # layer 0 and da_1ᵀδ_1: by the moments
            out[f"w{layer}"] = _outer(net.acts[layer], r_delta, per_task)
            out[f"b{layer}"] = r_delta.sum(-2) if per_task else r_delta.sum((0, 1))
            if layer > 1:
                out[f"w{layer}"] += _outer(das[layer], self.deltas[layer], per_task)
            back = _matmul(r_delta, net.w(layer).transpose(-1, -2))
            if layer > 1:
                _add_matmul_(back, self.deltas[layer], v[f"w{layer}"].transpose(-1, -2))
            r_delta = back.mul_(net.gates[layer - 1])
        self._first_layers(v, r_delta, per_task, out)
        r_log_std = (-2.0 * self.g * d_mean).sum(-2) + d_log_std.squeeze(-2) * self.d2_log_std
        out["log_std"] = _task_sum(r_log_std, per_task)
        return out

    def _first_layers(self, v: Params, r_delta0: Tensor, per_task: bool, out: Params) -> None:
        """Layer 0's gradients and layer 1's da_1ᵀ δ_1 term, through the moments."""
        c = self.moments  # (T, K, w0, w1)
        w1 = v["w1"].unsqueeze(-3)  # (1 or T, 1, w0, w1)
        w0 = torch.cat([v["w0"], v["b0"].unsqueeze(-2)], -2)  # dW̃_0: (K, w0) or (T, K, w0)
        first = _outer(self.x1, r_delta0, per_task) + _task_sum((c * w1).sum(-1), per_task)
        out["w0"], out["b0"] = first[..., :-1, :], first[..., -1, :]
        out["w1"] += _task_sum((c * w0.unsqueeze(-1)).sum(-3), per_task)


def moved_by_k1(tableau: Tableau | Scheme) -> bool:
    """Whether every stage point is θ - h q_i1 k_1 (q_ij = 0 for j > 1): every two-stage
    tableau and Euler; not rk3, rk4 or a tableau per parameter group."""
    return isinstance(tableau, Tableau) and all(q == 0.0 for row in tableau.q for q in row[1:])


def moved_by_first_stage_only(tableau: Tableau | Scheme, cfg: MetaStepConfig) -> bool:
    """Whether :func:`curvature_fvp` and :func:`closed_form_gradient` apply: one tableau
    whose points move by k_1 alone, or any tableau in first-order mode (every J_i = I)."""
    return moved_by_k1(tableau) or (cfg.first_order and isinstance(tableau, Tableau))


def points_by_k1(theta: Params, k1: Params, tableau: Tableau, h: float) -> list[Params]:
    """θ_i = θ - h q_i1 k_1 per task (values): the stage points of a tableau that moves by
    k_1 alone, from θ (shared) and the per-task k_1 (T, ...)."""
    rep = repeat_params({n: v.detach() for n, v in theta.items()}, next(iter(k1.values())).shape[0])
    return [rep if i == 0 else {n: rep[n] - h * tableau.q[i][0] * k1[n] for n in rep}
            for i in range(tableau.stages)]


def stage_moves(tableau: Tableau, h: float, cfg: MetaStepConfig) -> list[float]:
    """β_i = h q_i1 with J_i = I - β_i H (0 in first-order mode)."""
    return [0.0 if cfg.first_order else h * tableau.q[i][0] for i in range(tableau.stages)]


# Rows (steps) per chunk of tasks in the closed-form products: a chunk's activations
# (rows × width floats) stay in cache and are reused without fresh allocations; measured
# 1.3× faster per curvature product than all 80k rows at once at the paper's size
# (docs/method.md, "The exact curvature product").
CHUNK_ROWS = 10_000


def task_chunks(num_tasks: int, rows_per_task: int) -> list[slice]:
    """Consecutive groups of tasks of about :data:`CHUNK_ROWS` steps each."""
    size = max(1, CHUNK_ROWS // max(1, rows_per_task))
    return [slice(a, min(a + size, num_tasks)) for a in range(0, num_tasks, size)]


def _tasks_of(params: Params, part: slice, shared: Params) -> Params:
    """The tasks in ``part`` of per-task tensors; shared tensors (θ's shape) as they are."""
    return {n: x[part] if x.dim() > shared[n].dim() else x for n, x in params.items()}


class ChunkedHessian:
    """:class:`ReinforceHessian` over the tasks in chunks (:func:`task_chunks`), at θ."""

    def __init__(self, policy: GaussianMLPPolicy, theta: Params, episodes: Episodes) -> None:
        self.theta = {n: v.detach() for n, v in theta.items()}
        num_tasks, n_eps, horizon = episodes.obs.shape[:3]
        self.parts = [(part, ReinforceHessian(policy, self.theta, episodes.tasks(part)))
                      for part in task_chunks(num_tasks, n_eps * horizon)]

    def __call__(self, v: Params, per_task: bool) -> Params:
        """∇²L v: v shared or per task; the result per task or summed over tasks."""
        return self._join([hessian(_tasks_of(v, part, self.theta), per_task)
                           for part, hessian in self.parts], per_task)

    def gradient(self, per_task: bool = True) -> Params:
        """∇L at θ: each task's own gradient (k_1, (T, ...)), or their sum."""
        return self._join([hessian.gradient(per_task) for _, hessian in self.parts], per_task)

    @staticmethod
    def _join(outs: list[Params], per_task: bool) -> Params:
        if per_task:
            return {n: torch.cat([o[n] for o in outs]) for n in outs[0]}
        return {n: sum(o[n] for o in outs[1:]) + outs[0][n] for n in outs[0]}


def curvature_fvp(
    policy: GaussianMLPPolicy,
    tableau: Tableau,
    h: float,
    data: dict[int, Episodes],
    points: list[Params],
    theta: Params,
    cfg: MetaStepConfig,
    hessian: ChunkedHessian | None = None,
) -> FVP:
    """v -> (F + damping·I) v in closed form, for tableaus whose points move by k_1 alone
    (:func:`moved_by_first_stage_only`): J_i v = v - β_i H v with β_i = h q_i1 and H the
    REINFORCE loss's Hessian at θ on stage 1's episodes, so

        F v = Σ_i w_i Σ_t (I - β_i H_t) G_it (I - β_i H_t) v,

    per chunk of tasks: one H product with the shared v, one G product per stage, and one
    H product with the per-task cotangents Σ_i β_i G_it J_it v summed over the chunk's
    tasks. ``hessian``: H, when the caller already built it on the same episodes. With
    ``cfg.curvature_fraction`` < 1 only the first ⌈f·E⌉ episodes of each task enter G
    and H (an approximation; the points stay exact).
    """
    subsampled = _curvature_data(data, cfg)
    if subsampled is not data:
        data, hessian = subsampled, None
    num_tasks = data[0].num_tasks
    theta = {n: v.detach() for n, v in theta.items()}
    moves = stage_moves(tableau, h, cfg)
    if hessian is None and any(m != 0.0 for m, w in zip(moves, kl_weights(tableau),
                                                          strict=True) if w):
        hessian = ChunkedHessian(policy, theta, data[0])
    chunks = []  # per chunk: (its H or None, [(β_i, linearization, Fisher on μ, on log σ)])
    for c, part in enumerate(task_chunks(num_tasks, data[0].obs.shape[1] * data[0].obs.shape[2])):
        stages = []
        for i, w in enumerate(kl_weights(tableau)):
            if w == 0:
                continue
            obs, _, _, mask = data[i].tasks(part).flat()
            at = theta if i == 0 else _tasks_of(points[i], part, theta)
            net = MLPLinearization(policy, at, obs)
            weight = _step_weights(mask, w / num_tasks)  # (T_c, N, 1)
            stages.append((moves[i], net, weight * torch.exp(-2.0 * net.log_std),
                           2.0 * weight.sum(-2)))
        chunks.append((hessian.parts[c][1] if hessian is not None else None, stages))

    def fvp(v: Tensor) -> Tensor:
        v_theta = unflatten(v, theta)
        total = {n: cfg.cg_damping * x for n, x in v_theta.items()}
        for chunk_hessian, stages in chunks:
            part = _chunk_product(chunk_hessian, stages, v_theta)
            total = {n: total[n] + part[n] for n in total}
        return torch.cat([total[n].reshape(-1) for n in theta])

    return fvp


def _chunk_product(hessian: ReinforceHessian | None, stages: list, v: Params) -> Params:
    """Σ_i w_i Σ_t J_itᵀ G_it J_it v over one chunk's tasks (see :func:`curvature_fvp`)."""
    hv = hessian(v, per_task=True) if any(m != 0.0 for m, *_ in stages) else None
    total: Params | None = None
    cotangent: Params | None = None  # Σ_i β_i u_i per task
    for move, net, fisher_mean, fisher_log_std in stages:
        jv = v if move == 0.0 else {n: x - move * hv[n] for n, x in v.items()}
        _, d_mean = net.jvp(jv)
        d_log_std = jv["log_std"].expand(d_mean.shape[0], -1) * fisher_log_std
        u = net.vjp(d_mean.mul_(fisher_mean), d_log_std, per_task=move != 0.0)
        if move != 0.0:
            cotangent = {n: move * x + (0.0 if cotangent is None else cotangent[n])
                         for n, x in u.items()}
            u = {n: x.sum(0) for n, x in u.items()}
        total = u if total is None else {n: total[n] + u[n] for n in total}
    if cotangent is not None:
        back = hessian(cotangent, per_task=False)
        total = {n: total[n] - back[n] for n in total}
    return total


def closed_form_gradient(
    objective: Callable[[list[Params]], Tensor],
    points: list[Params],
    moves: list[float],
    hessian: ChunkedHessian | None,
) -> tuple[Tensor, Params]:
    """S and ∇_θ S for S = objective(θ_1(θ), ..., θ_s(θ)) with per-task points that move by
    k_1 alone: Σ_i J_iᵀ ∇_{θ_i} S = Σ_i Σ_t g_it - H(Σ_i β_i g_i) with g_i = ∇_{θ_i} S per
    task. ``points`` are values (no graph); ``hessian`` is needed when any β_i ≠ 0."""
    leaves = [{n: v.detach().requires_grad_() for n, v in p.items()} for p in points]
    flat = [x for leaf in leaves for x in leaf.values()]
    value = objective(leaves)
    grads = torch.autograd.grad(value, flat, allow_unused=True, materialize_grads=True)
    names = list(points[0])
    per_stage = [dict(zip(names, grads[i * len(names):(i + 1) * len(names)], strict=True))
                 for i in range(len(points))]
    total = {n: sum(g[n].sum(0) for g in per_stage) for n in names}
    cotangent = {n: sum(m * g[n] for m, g in zip(moves, per_stage, strict=True) if m != 0.0)
                 for n in names}
    if any(m != 0.0 for m in moves):
        back = hessian(cotangent, per_task=False)
        total = {n: total[n] - back[n] for n in names}
    return value.detach(), total


def stagewise_fvp(
    policy: GaussianMLPPolicy,
    tableau: Tableau,
    h: float,
    data: dict[int, Episodes],
    rep: Params,
    points: list[Params],
    theta: Params,
    cfg: MetaStepConfig,
) -> Callable[[Tensor], Tensor]:
    """v -> (F + damping·I) v with F the exact Hessian of the weighted KL at θ_old.

    At θ_old every KL_i is zero with zero gradient, so its Hessian is a Gauss-Newton
    product, summed over tasks: F = Σ_i w_i J_iᵀ G_i J_i, where
      J_i = dθ_i/dθ = I - h Σ_j q_ij ∇²φ_j with φ_j(θ) = L_j(θ_j(θ)) (k_j = ∇φ_j), a
            symmetric matrix, so J_i v is one backward pass through the stage
            construction (J_i = I for stage 1 and in first-order mode);
      G_i = J_netᵀ M J_net, the network's Jacobian at θ_i on stage i's states with the
            Gaussian's Fisher M (1/σ² for the mean, 2 for log σ); forward mode through
            cached activations, reverse mode through a graph built once.
    For any tableau; :func:`curvature_fvp` is faster where it applies.

    ``rep`` holds the per-task copies of θ that ``points`` were built from. With
    ``cfg.curvature_fraction`` < 1 only the first ⌈f·E⌉ episodes of each task enter
    G_i and the Hessians inside J_i (an approximation; the points stay exact).
    """
    num_tasks, n_eps = data[0].obs.shape[:2]
    keep = max(1, math.ceil(cfg.curvature_fraction * n_eps))
    jac_rep, jac_points = rep, points
    if keep < n_eps:
        data = {i: ep.first_episodes(keep) for i, ep in data.items()}
        jac_rep = repeat_params(theta, num_tasks)
        jac_points = stage_points(jac_rep, tableau, h,
                                  lambda i, p: reinforce_loss(policy, p, data[i]),
                                  first_order=cfg.first_order)
    names = list(theta)
    weights = kl_weights(tableau)
    stages = []
    for i, w in enumerate(weights):
        if w == 0:
            continue
        obs, _, _, mask = data[i].flat()
        at = {n: v.detach() for n, v in points[i].items()}
        (_, log_std), jvp_net = policy.linearize(at, obs)
        leaf = {n: v.clone().requires_grad_() for n, v in at.items()}
        outputs = policy(leaf, obs)
        c = w * mask / mask.sum(-1, keepdim=True).clamp_min(1.0) / num_tasks  # (T, N)
        fisher = (c.unsqueeze(-1) * torch.exp(-2.0 * log_std), 2.0 * c.sum(-1)[:, None, None])
        identity = i == 0 or cfg.first_order
        stages.append((i, identity, jvp_net, leaf, outputs, fisher))

    def fvp(v: Tensor) -> Tensor:
        v_rep = {n: x.expand(num_tasks, *x.shape) for n, x in unflatten(v, theta).items()}
        total = cfg.cg_damping * v
        outs, cots = [], []
        for i, identity, jvp_net, leaf, outputs, fisher in stages:
            if identity:
                jv = v_rep
            else:
                jv = dict(zip(names, torch.autograd.grad(
                    [jac_points[i][n] for n in names], [jac_rep[n] for n in names],
                    [v_rep[n] for n in names], retain_graph=True), strict=True))
            d_mean, d_log_std = jvp_net(jv)
            g = torch.autograd.grad(outputs, list(leaf.values()),
                                    (d_mean * fisher[0], d_log_std * fisher[1]),
                                    retain_graph=True)
            if identity:
                total = total + torch.cat([x.sum(0).reshape(-1) for x in g])
            else:
                outs += [jac_points[i][n] for n in names]
                cots += list(g)
        if outs:
            total = total + flat_grad(outs, theta, grad_outputs=cots, retain_graph=True)
        return total

    return fvp


def double_backward_fvp(
    policy: GaussianMLPPolicy,
    scheme: Scheme,
    data: dict[int, Episodes],
    theta: Params,
    cfg: MetaStepConfig,
) -> Callable[[Tensor], Tensor]:
    """v -> (F + damping·I) v with F the Hessian of the weighted KL at θ_old, by double
    backward through the stage construction: for a tableau per parameter group, whose
    stage Jacobians I - Σ_j D_ij ∇²φ_j (D_ij the groups' h_n q_n,ij) are not symmetric, so
    the Gauss-Newton shortcut of :func:`curvature_fvp` does not apply. Exact, and slower.
    ``cfg.curvature_fraction`` subsamples the episodes as there."""
    num_tasks, n_eps = data[0].obs.shape[:2]
    keep = max(1, math.ceil(cfg.curvature_fraction * n_eps))
    if keep < n_eps:
        data = {i: ep.first_episodes(keep) for i, ep in data.items()}
    points = stage_points(repeat_params(theta, num_tasks), scheme, None,
                          lambda i, p: reinforce_loss(policy, p, data[i]),
                          first_order=cfg.first_order)
    kl = StageObjective(policy, scheme, data, points).kl(points)  # 0 at θ_old, with its graph
    grad = flat_grad(kl, theta, create_graph=True)

    def fvp(v: Tensor) -> Tensor:
        return cfg.cg_damping * v + flat_grad(dot(grad, v), theta, retain_graph=True)

    return fvp


def _curvature_data(data: dict[int, Episodes], cfg: MetaStepConfig) -> dict[int, Episodes]:
    """The episodes the curvature sees: all, or the first ⌈f·E⌉ of each task."""
    n_eps = data[0].obs.shape[1]
    keep = max(1, math.ceil(cfg.curvature_fraction * n_eps))
    return data if keep >= n_eps else {i: ep.first_episodes(keep) for i, ep in data.items()}
