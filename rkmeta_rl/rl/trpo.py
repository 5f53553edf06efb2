"""TRPO machinery on flat parameter vectors: conjugate gradient and the line search.

The meta-objective and its KL constraint are closures over a flat vector x; this
module knows nothing about Runge-Kutta or policies (see ``rl.meta_step``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from rkmeta_rl.rk import Params


def flatten(params: Params) -> Tensor:
    """Concatenate a parameter dict into one vector (dict order)."""
    return torch.cat([v.reshape(-1) for v in params.values()])


def unflatten(vec: Tensor, like: Params) -> Params:
    """Split ``vec`` into tensors shaped like ``like`` (views, differentiable)."""
    out, offset = {}, 0
    for name, v in like.items():
        n = v.numel()
        out[name] = vec[offset : offset + n].view_as(v)
        offset += n
    if offset != vec.numel():
        raise ValueError(f"vector has {vec.numel()} entries, parameters need {offset}")
    return out


def flat_grad(out: Tensor | list[Tensor], wrt: Params, **kw) -> Tensor:
    """The gradient of ``out`` with respect to ``wrt``'s tensors as one vector (zeros for
    tensors it does not depend on); ``kw`` goes to ``torch.autograd.grad``."""
    grads = torch.autograd.grad(out, list(wrt.values()), allow_unused=True,
                                materialize_grads=True, **kw)
    return torch.cat([g.reshape(-1) for g in grads])


_BLOCK = 4096  # below torch's parallel grain: each block is summed by one thread, in order


def dot(a: Tensor, b: Tensor) -> Tensor:
    """aᵀb summed in an order that does not depend on the number of threads.

    ``torch.dot`` (BLAS) splits long vectors between threads, so its rounding, and through
    conjugate gradient the whole step, would change with ``--num-threads``. Here the
    products are summed in fixed blocks, then the block sums in order.
    """
    p = a * b
    pad = (-p.numel()) % _BLOCK
    if pad:
        p = torch.cat([p, p.new_zeros(pad)])
    return p.view(-1, _BLOCK).sum(1).sum()


def conjugate_gradient(
    matvec: Callable[[Tensor], Tensor], b: Tensor, iters: int = 10, residual_tol: float = 1e-10
) -> Tensor:
    """Approximately solve A x = b for symmetric positive definite A given x -> A x."""
    return conjugate_gradient_and_product(matvec, b, iters, residual_tol)[0]


def conjugate_gradient_and_product(
    matvec: Callable[[Tensor], Tensor], b: Tensor, iters: int = 10, residual_tol: float = 1e-10
) -> tuple[Tensor, Tensor]:
    """:func:`conjugate_gradient`'s x and A x. A x is accumulated from the products CG
    makes (x = Σ α_k p_k, so A x = Σ α_k A p_k): TRPO's step length needs it, and it
    costs no further product (equal to ``matvec(x)`` up to rounding)."""
    x = torch.zeros_like(b)
    ax = torch.zeros_like(b)
    r = b.clone()
    p = b.clone()
    rr = dot(r, r)
    for _ in range(iters):
        if rr <= residual_tol:
            break
        ap = matvec(p)
        alpha = rr / dot(p, ap)
        x = x + alpha * p
        ax = ax + alpha * ap
        r = r - alpha * ap
        rr_new = dot(r, r)
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x, ax


@dataclass
class LineSearchResult:
    x: Tensor  # accepted point, or the starting point when nothing was accepted
    accepted: bool
    steps: int  # number of candidate points tried
    loss: float  # loss at x
    kl: float  # KL at x (0 when nothing was accepted)
    rejected_nonfinite: int  # candidates refused for a NaN/Inf loss or KL


def backtracking_line_search(
    evaluate: Callable[[Tensor], tuple[float, float]],
    x0: Tensor,
    step: Tensor,
    loss0: float,
    max_kl: float,
    ratio: float = 0.8,
    max_steps: int = 15,
) -> LineSearchResult:
    """Try x0 + ratio^j · step, j = 0..max_steps-1; accept the first that lowers the loss
    and keeps KL ≤ max_kl. ``evaluate(x) -> (loss, kl)``. Non-finite candidates are
    refused; if none is accepted, x0 is returned unchanged."""
    nonfinite = 0
    for j in range(max_steps):
        x = x0 + (ratio**j) * step
        loss, kl = evaluate(x)
        if not (math.isfinite(loss) and math.isfinite(kl)):
            nonfinite += 1
            continue
        if loss < loss0 and kl <= max_kl:
            return LineSearchResult(x, True, j + 1, loss, kl, nonfinite)
    return LineSearchResult(x0, False, max_steps, loss0, 0.0, nonfinite)


def natural_step(
    grad: Tensor,
    fvp: Callable[[Tensor], Tensor],
    max_kl: float,
    cg_iters: int = 10,
) -> tuple[Tensor, float]:
    """Full TRPO step -sqrt(2δ / sᵀFs) · s with s ≈ F⁻¹ g, and the predicted improvement.

    Returns (step, expected_improvement) where expected_improvement = -gᵀ step > 0.
    """
    direction, f_direction = conjugate_gradient_and_product(fvp, -grad, iters=cg_iters)
    shs = 0.5 * dot(direction, f_direction)  # sᵀFs/2, F s from CG's own products
    scale = torch.sqrt(max_kl / shs)
    step = direction * scale
    return step, float(-dot(grad, step))
