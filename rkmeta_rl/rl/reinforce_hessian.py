"""The REINFORCE loss's Hessian-vector products in closed form (the H inside the stage
Jacobians J_i = I - β_i H; docs/method.md, "The exact curvature product"), over the
meta-batch's tasks in chunks.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rkmeta_rl.rk import Params
from rkmeta_rl.rl.chunk_threads import map_chunks
from rkmeta_rl.rl.episodes import Episodes
from rkmeta_rl.rl.mlp_products import (
    MLPLinearization,
    ThinMLPLinearization,
    add_matmul_,
    bias_sum,
    first_rows,
    has_thin_ends,
    matmul,
    outer,
    step_weights,
    task_sum,
)
from rkmeta_rl.rl.policy import GaussianMLPPolicy


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

    linearization: type[MLPLinearization] = MLPLinearization

    def __init__(self, policy: GaussianMLPPolicy, params: Params, episodes: Episodes) -> None:
        obs, act, adv, mask = episodes.flat()
        self.net = net = self.linearization(policy, params, obs)
        c = adv.unsqueeze(-1) * step_weights(mask, 1.0)  # (T, N, 1)
        inv_var = torch.exp(-2.0 * net.log_std)  # (T, 1, A) or (1, A)
        r = act - net.mean  # (T, N, A)
        self.g = -c * r * inv_var  # ∂L/∂μ
        self.c_inv_var = c * inv_var  # ∂²L/∂μ²
        self.d2_log_std = (2.0 * c * r * r * inv_var).sum(-2)  # ∂²L/∂logσ², (T, A)
        self.d_log_std = (c * (1.0 - r * r * inv_var)).sum(-2)  # ∂L/∂logσ, (T, A)
        self.deltas = net.backward_deltas(self.g)
        self.x1 = net.x1  # x̃ (T, N, d+1)
        self._moments: Tensor | None = None

    @property
    def moments(self) -> Tensor:
        """C_k[j, i] = Σ_n x̃_nk m_0,nj δ_1,ni per task: (T, d+1, width_0, width_1)."""
        if self._moments is None:
            self._moments = torch.stack([
                outer(self.x1[..., k:k + 1] * self.net.gates[0], self.deltas[1], per_task=True)
                for k in range(self.x1.shape[-1])], 1)
        return self._moments

    def gradient(self, per_task: bool = True) -> Params:
        """∇L at the point: each task's own gradient (k_1), or their sum."""
        out = self.net.weight_grads(self.deltas, per_task)
        out["log_std"] = task_sum(self.d_log_std, per_task)
        return out

    def __call__(self, v: Params, per_task: bool) -> Params:
        """∇²L v: v shared or per task; the result per task or summed over tasks."""
        net, last = self.net, self.net.n_layers - 1
        das, d_mean = net.jvp(v)
        d_log_std = v["log_std"].unsqueeze(-2)  # (T, 1, A) or (1, A)
        r_delta = self.c_inv_var * d_mean - 2.0 * self.g * d_log_std  # Rδ at the output
        out: Params = {}
        for layer in range(last, 0, -1):  # layer 0 and da_1ᵀδ_1: by the moments
            out[f"w{layer}"] = outer(net.acts[layer], r_delta, per_task)
            out[f"b{layer}"] = bias_sum(r_delta, per_task)
            if layer > 1:
                out[f"w{layer}"] += outer(das[layer], self.deltas[layer], per_task)
            back = matmul(r_delta, net.w(layer).transpose(-1, -2))
            if layer > 1:
                add_matmul_(back, self.deltas[layer], v[f"w{layer}"].transpose(-1, -2))
            r_delta = back.mul_(net.gates[layer - 1])
        self._first_layers(v, r_delta, per_task, out)
        out["log_std"] = self._r_log_std(d_mean, d_log_std, per_task)
        return out

    def _r_log_std(self, d_mean: Tensor, d_log_std: Tensor, per_task: bool) -> Tensor:
        """R ∂L/∂logσ = Σ_n (-2 g dμ) + dlogσ Σ_n 2 c (u - μ)²/σ²."""
        r = (-2.0 * self.g * d_mean).sum(-2) + d_log_std.squeeze(-2) * self.d2_log_std
        return task_sum(r, per_task)

    def _first_layers(self, v: Params, r_delta0: Tensor, per_task: bool, out: Params) -> None:
        """Layer 0's gradients and layer 1's da_1ᵀ δ_1 term, through the moments."""
        c = self.moments  # (T, K, w0, w1)
        w1 = v["w1"].unsqueeze(-3)  # (1 or T, 1, w0, w1)
        w0 = first_rows(v)
        first = outer(self.x1, r_delta0, per_task) + task_sum((c * w1).sum(-1), per_task)
        out["w0"], out["b0"] = first[..., :-1, :], first[..., -1, :]
        out["w1"] += task_sum((c * w0.unsqueeze(-1)).sum(-3), per_task)


class ThinReinforceHessian(ReinforceHessian):
    """:class:`ReinforceHessian` for two hidden layers between thin ends
    (:class:`~rkmeta_rl.rl.mlp_products.ThinMLPLinearization`): two big products per call
    instead of four.

    Besides the rows E_l and the moments C_k, the moments D_kl[j, i] = Σ_n x̃_nk m_0,nj
    m_1,ni g_nl (once: one product K·A times as wide as a big one) carry the two W_1
    products that only ever meet the thin x̃ and g:
      ((da_1 W_1) ⊙ m_1)ᵀ g [i, l] = Σ_{k,j} dW̃_0[k, j] W_1[j, i] D_kl[j, i],
      x̃ᵀ((((g dW_2ᵀ) ⊙ m_1) W_1ᵀ) ⊙ m_0)[k, j] = Σ_{i,l} W_1[j, i] dW_2[i, l] D_kl[j, i].
    """

    linearization = ThinMLPLinearization

    def __init__(self, policy: GaussianMLPPolicy, params: Params, episodes: Episodes) -> None:
        super().__init__(policy, params, episodes)
        self._d_moments: Tensor | None = None

    @property
    def moments(self) -> Tensor:
        """C_k = Σ_l W_2[:, l] D_kl (δ_1 = (g W_2ᵀ) ⊙ m_1): no big product of its own."""
        if self._moments is None:
            w2 = self.net.w(2).transpose(-1, -2).unsqueeze(-2).unsqueeze(-4)  # (…, 1, A, 1, w1)
            self._moments = (self.d_moments * w2).sum(-3)
        return self._moments

    @property
    def d_moments(self) -> Tensor:
        """D_kl[j, i] per task: (T, K, A, width_0, width_1), all K·A of them as one product
        (Σ_n (x̃_nk g_nl m_0,n) ⊗ m_1,n: the weights on one side)."""
        if self._d_moments is None:
            (m0, m1), g = self.net.gates, self.g
            t_, n_, w0 = m0.shape
            k_, a_ = self.x1.shape[-1], g.shape[-1]
            weights = (self.x1.unsqueeze(-1) * g.unsqueeze(-2)).view(t_, n_, k_ * a_, 1)
            left = (weights * m0.unsqueeze(-2)).view(t_, n_, k_ * a_ * w0)
            self._d_moments = torch.matmul(left.transpose(-1, -2), m1).view(t_, k_, a_, w0, -1)
        return self._d_moments

    def __call__(self, v: Params, per_task: bool) -> Params:
        net = self.net
        (_, a1, a2), m1, w1, w2 = net.acts, net.gates[1], net.w(1), net.w(2)
        c, d = self.moments, self.d_moments  # (T, K, w0, w1), (T, K, A, w0, w1)
        v0 = first_rows(v)
        p, d_mean = net.thin_jvp(v)
        d_log_std = v["log_std"].unsqueeze(-2)
        r_g = self.c_inv_var * d_mean - 2.0 * self.g * d_log_std  # Rδ_2
        out: Params = {}
        # layer 2: da_2ᵀ g + a_2ᵀ Rδ_2 with da_2 = (da_1 W_1) ⊙ m_1 + p
        via_d = (d * (v0.unsqueeze(-1) * w1.unsqueeze(-3)).unsqueeze(-3)).sum((-4, -2))
        out["w2"] = (outer(p, self.g, per_task) + outer(a2, r_g, per_task)
                     + task_sum(via_d.transpose(-1, -2), per_task))
        out["b2"] = bias_sum(r_g, per_task)
        # layer 1: a_1ᵀ Rδ_1 + da_1ᵀ δ_1 (moments C), Rδ_1 = (Rδ_2 W_2ᵀ + g dW_2ᵀ) ⊙ m_1
        r_d1 = matmul(r_g, w2.transpose(-1, -2)).add_(
            matmul(self.g, v["w2"].transpose(-1, -2))).mul_(m1)
        out["w1"] = outer(a1, r_d1, per_task) + task_sum((c * v0.unsqueeze(-1)).sum(-3),
                                                         per_task)
        out["b1"] = bias_sum(r_d1, per_task)
        # layer 0: x̃ᵀ Rδ_0, Rδ_0 = (Rδ_1 W_1ᵀ + δ_1 dW_1ᵀ) ⊙ m_0: the Rδ_2 part through E,
        # the g dW_2ᵀ part through D, the δ_1 dW_1ᵀ part through C
        w1_v2 = w1.unsqueeze(-3) * v["w2"].transpose(-1, -2).unsqueeze(-2)  # (…, A, w0, w1)
        via_moments = (d * w1_v2.unsqueeze(-4)).sum((-3, -1)) + (c * v["w1"].unsqueeze(-3)).sum(-1)
        first = outer(self.x1, net.through_e(r_g), per_task) + task_sum(via_moments, per_task)
        out["w0"], out["b0"] = first[..., :-1, :], first[..., -1, :]
        out["log_std"] = self._r_log_std(d_mean, d_log_std, per_task)
        return out


def reinforce_hessian(policy: GaussianMLPPolicy, params: Params,
                      episodes: Episodes) -> ReinforceHessian:
    """The REINFORCE Hessian at ``params`` on ``episodes``: the thin-ends one where it
    applies (``mlp_products.has_thin_ends``), else the general one."""
    cls = ThinReinforceHessian if has_thin_ends(policy) else ReinforceHessian
    return cls(policy, params, episodes)


def tasks_of(params: Params, part: slice, shared: Params) -> Params:
    """The tasks in ``part`` of per-task tensors; shared tensors (θ's shape) as they are."""
    return {n: x[part] if x.dim() > shared[n].dim() else x for n, x in params.items()}


class ChunkedHessian:
    """:class:`ReinforceHessian` over the tasks in chunks (``Episodes.task_chunks``), at θ;
    the chunks on torch's threads (``rkmeta_rl/rl/chunk_threads.py``)."""

    def __init__(self, policy: GaussianMLPPolicy, theta: Params, episodes: Episodes) -> None:
        self.theta = {n: v.detach() for n, v in theta.items()}
        self.device = episodes.obs.device
        parts = episodes.task_chunks()
        self.parts = list(zip(parts, map_chunks(
            lambda part: reinforce_hessian(policy, self.theta, episodes.tasks(part)), parts,
            self.device), strict=True))

    def __call__(self, v: Params, per_task: bool) -> Params:
        """∇²L v: v shared or per task; the result per task or summed over tasks."""
        return self._join(map_chunks(
            lambda chunk: chunk[1](tasks_of(v, chunk[0], self.theta), per_task), self.parts,
            self.device), per_task)

    def gradient(self, per_task: bool = True) -> Params:
        """∇L at θ: each task's own gradient (k_1, (T, ...)), or their sum."""
        return self._join(map_chunks(lambda chunk: chunk[1].gradient(per_task), self.parts,
                                     self.device), per_task)

    @staticmethod
    def _join(outs: list[Params], per_task: bool) -> Params:
        if per_task:
            return {n: torch.cat([o[n] for o in outs]) for n in outs[0]}
        return {n: sum(o[n] for o in outs) for n in outs[0]}
