"""Products with a ReLU MLP policy's Jacobian through activations cached at one point
(docs/method.md, "The exact curvature product"): the building blocks of the closed-form
curvature in ``rkmeta_rl/rl/curvature.py``. Shapes: T tasks, N steps per task, d inputs,
A actions; parameters shared (θ) or per task (a leading T).
"""

from __future__ import annotations

import torch
from torch import Tensor

from rkmeta_rl.rk import Params
from rkmeta_rl.rl.policy import GaussianMLPPolicy, affine


def step_weights(mask: Tensor, scale: float) -> Tensor:
    """scale / (valid steps of the task) on every valid step: (T, N) -> (T, N, 1)."""
    return (scale * mask / mask.sum(-1, keepdim=True).clamp_min(1.0)).unsqueeze(-1)


# BLAS runs products with a thin side far below its rate for square ones. Measured here
# (MKL, one thread, AMD EPYC), 8k-10k rows × 100: (·, 2) @ (2, 100) 3.4× faster as 2
# broadcast multiply-adds (a side of at most THIN); (·, 100) @ (100, o) 2-3.5× faster for
# o ≤ NARROW with the (100, o) side stored column-major (1.0× from o = 12 on); aᵀd into
# (100, 2) 6-8× faster with the thin side as the rows of the product (transposed). A
# broadcast multiply with a strided row runs several times slower than with a contiguous one.
THIN = 4
NARROW = 8


def matmul(a: Tensor, b: Tensor) -> Tensor:
    """a @ b for a (T, N, i) and b (i, o) or (T, i, o), thin shapes done the fast way."""
    if a.shape[-1] <= THIN:
        rows = [(b[k] if b.dim() == 2 else b[:, k:k + 1]).contiguous()
                for k in range(a.shape[-1])]
        out = a[..., :1] * rows[0]
        for k in range(1, a.shape[-1]):
            out.addcmul_(a[..., k:k + 1], rows[k])
        return out
    if b.shape[-1] <= NARROW:
        return torch.matmul(a, b.transpose(-1, -2).contiguous().transpose(-1, -2))
    return torch.matmul(a, b)


def add_matmul_(acc: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """acc += a @ b in place: a (T, N, i), b (i, o) or (T, i, o)."""
    if a.shape[-1] <= THIN or b.shape[-1] <= NARROW or not acc.is_contiguous():
        return acc.add_(matmul(a, b))
    if b.dim() == 2:
        acc.view(-1, acc.shape[-1]).addmm_(a.reshape(-1, a.shape[-1]), b)
    else:
        acc.baddbmm_(a, b)
    return acc


def outer(a: Tensor, d: Tensor, per_task: bool) -> Tensor:
    """Σ_n a_n d_nᵀ per task (T, i, o), or over every task's steps at once (i, o); the
    thinner side is the product's rows (see :data:`THIN`)."""
    if d.shape[-1] < a.shape[-1]:
        return outer(d, a, per_task).transpose(-1, -2)
    if per_task:
        return torch.matmul(a.transpose(-1, -2), d)
    return a.reshape(-1, a.shape[-1]).T @ d.reshape(-1, d.shape[-1])


def bias_sum(delta: Tensor, per_task: bool) -> Tensor:
    """Σ_n δ_n: per task (T, o), or over every task's steps (o,)."""
    return delta.sum(-2) if per_task else delta.sum((0, 1))


def task_sum(x: Tensor, per_task: bool) -> Tensor:
    return x if per_task else x.sum(0)


def with_ones(obs: Tensor) -> Tensor:
    """x̃ = (state, 1): (T, N, d) -> (T, N, d + 1)."""
    return torch.cat([obs, torch.ones_like(obs[..., :1])], -1)


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
                h = matmul(h, self.w(layer)).add_(self.params[f"b{layer}"].unsqueeze(-2))
                if layer < self.n_layers - 1:
                    self.gates.append((h > 0).to(h.dtype))
                    self.acts.append(h.mul_(self.gates[-1]))
        self.mean = h  # (T, N, A)
        self.log_std = self.params["log_std"].unsqueeze(-2)  # (T, 1, A) or (1, A)
        self._x1: Tensor | None = None

    @property
    def x1(self) -> Tensor:
        """x̃ = (state, 1) (T, N, d + 1): the first layer's input with its bias column, built
        on first use (a plain attribute, not ``functools.cached_property``: up to Python 3.11
        that holds one lock for all instances, which would serialize the chunk threads)."""
        if self._x1 is None:
            self._x1 = with_ones(self.acts[0])
        return self._x1

    def w(self, layer: int) -> Tensor:
        return self.params[f"w{layer}"]

    def jvp(self, v: Params) -> tuple[list[Tensor | None], Tensor]:
        """(da_l for every layer input, None for the states; dμ (T, N, A)) along v."""
        das: list[Tensor | None] = [None]
        for layer in range(self.n_layers):
            dz = matmul(self.acts[layer], v[f"w{layer}"]).add_(
                v[f"b{layer}"].unsqueeze(-2))
            if layer > 0:
                add_matmul_(dz, das[-1], self.w(layer))
            if layer < self.n_layers - 1:
                das.append(dz.mul_(self.gates[layer]))
        return das, dz

    def jvp_mean(self, v: Params) -> Tensor:
        """dμ (T, N, A) along v."""
        return self.jvp(v)[1]

    def backward_deltas(self, d_mean: Tensor) -> list[Tensor]:
        """δ_l = ∂/∂z_l for every layer, from the cotangent d_mean (T, N, A) of μ."""
        deltas = [d_mean]
        for layer in range(self.n_layers - 1, 0, -1):
            deltas.append(matmul(deltas[-1], self.w(layer).transpose(-1, -2))
                          .mul_(self.gates[layer - 1]))
        return deltas[::-1]

    def weight_grads(self, deltas: list[Tensor], per_task: bool) -> Params:
        """gW_l = a_lᵀ δ_l and gb_l = Σ_n δ_l, per task or summed over tasks."""
        out: Params = {}
        for layer, delta in enumerate(deltas):
            out[f"w{layer}"] = outer(self.acts[layer], delta, per_task)
            out[f"b{layer}"] = bias_sum(delta, per_task)
        return out

    def vjp(self, d_mean: Tensor, d_log_std: Tensor, per_task: bool) -> Params:
        """J_netᵀ (d_mean (T, N, A), d_log_std (T, A)): per task, or summed over tasks."""
        out = self.weight_grads(self.backward_deltas(d_mean), per_task)
        out["log_std"] = task_sum(d_log_std, per_task)
        return out


# The few inputs (d + 1 with the bias) times the few actions below which the thin-ends
# products pay (nav2d: 3 × 2): see ThinMLPLinearization and reinforce_hessian.
THIN_ENDS = 8


def has_thin_ends(policy: GaussianMLPPolicy) -> bool:
    """Two hidden layers between few inputs and few actions ((d + 1)·A ≤ THIN_ENDS)."""
    return policy.n_layers == 3 and (policy.obs_dim + 1) * policy.act_dim <= THIN_ENDS


def first_rows(v: Params) -> Tensor:
    """dW̃_0 = (dW_0; db_0), the first layer's tangent on x̃ = (state, 1): (K, w0) or
    (T, K, w0), K = d + 1."""
    return torch.cat([v["w0"], v["b0"].unsqueeze(-2)], -2)


class ThinMLPLinearization(MLPLinearization):
    """:class:`MLPLinearization` for two hidden layers between thin ends (e.g. 2D
    navigation: 2 inputs, 2 actions), where only W_1 (width_0 × width_1) makes big products.

    With the rows E_l[n] = m_0,n ⊙ (W_1 diag(m_1,n) W_2[:, l]) (width_0 each, l over the A
    actions, cached: A big products once), the W_1 products of the forward and reverse
    modes need no big product: forward, with da_1 = (x̃ dW̃_0) ⊙ m_0,
    (((da_1 W_1) ⊙ m_1) W_2)[n, l] = Σ_k x̃_nk (E_l[n] · dW̃_0[k]), a thin product of E with
    dW̃_0; reverse, ((δ_2 W_2ᵀ ⊙ m_1) W_1ᵀ ⊙ m_0)[n] = Σ_l δ_2,nl E_l[n]. One big product each
    remains (a_1 dW_1 forward, a_1ᵀ δ_1 reverse) instead of two.
    """

    def __init__(self, policy: GaussianMLPPolicy, params: Params, obs: Tensor) -> None:
        super().__init__(policy, params, obs)
        self._e: Tensor | None = None

    @property
    def e(self) -> Tensor:
        """E (T, N, A, width_0): the rows E_l side by side."""
        if self._e is None:
            w1t, w2 = self.w(1).transpose(-1, -2), self.w(2)
            self._e = torch.stack([matmul(self.gates[1] * w2[..., j].unsqueeze(-2), w1t)
                                   .mul_(self.gates[0]) for j in range(w2.shape[-1])], -2)
        return self._e

    def through_e(self, d: Tensor) -> Tensor:
        """Σ_l d_l E_l for d (T, N, A): (T, N, width_0)."""
        out = d[..., :1] * self.e[..., 0, :]
        for j in range(1, d.shape[-1]):
            out.addcmul_(d[..., j:j + 1], self.e[..., j, :])
        return out

    def thin_jvp(self, v: Params) -> tuple[Tensor, Tensor]:
        """(p = (a_1 dW_1 + db_1) ⊙ m_1, dμ) along v; da_2 = (da_1 W_1) ⊙ m_1 + p."""
        _, a1, a2 = self.acts
        p = affine(a1, v["w1"], v["b1"]).mul_(self.gates[1])
        d_mean = matmul(p, self.w(2)).add_(matmul(a2, v["w2"])).add_(v["b2"].unsqueeze(-2))
        e = self.e
        t_, n_, a_, w_ = e.shape  # E_l[n] · dW̃_0[k] for every l, k: one thin product
        dots = matmul(e.view(t_, n_ * a_, w_), first_rows(v).transpose(-1, -2))
        d_mean += (dots.view(t_, n_, a_, -1) * self.x1.unsqueeze(-2)).sum(-1)
        return p, d_mean

    def jvp_mean(self, v: Params) -> Tensor:
        return self.thin_jvp(v)[1]

    def vjp(self, d_mean: Tensor, d_log_std: Tensor, per_task: bool) -> Params:
        d1 = matmul(d_mean, self.w(2).transpose(-1, -2)).mul_(self.gates[1])
        d0 = self.through_e(d_mean)  # the W_1 product, through E
        out = self.weight_grads([d0, d1, d_mean], per_task)
        out["log_std"] = task_sum(d_log_std, per_task)
        return out


def linearize(policy: GaussianMLPPolicy, params: Params, obs: Tensor) -> MLPLinearization:
    """The policy's linearization at ``params`` on ``obs``: the thin-ends one where it
    applies (:func:`has_thin_ends`), else the general one."""
    cls = ThinMLPLinearization if has_thin_ends(policy) else MLPLinearization
    return cls(policy, params, obs)
