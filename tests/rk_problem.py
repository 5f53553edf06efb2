"""The small test problem shared by the rkmeta_rl.rk tests (imported as ``rk_problem``:
tests/ is on sys.path).

Stage losses L_i on a smooth non-quadratic model (params {"w": (2, 2), "v": (2,)}, 6
numbers), in the dict form ``rk.py`` takes and a flat form for explicit gradients and
Hessians; independent stage points with exact total-derivative k's (``_my_points``); and a
custom 3-stage tableau with a negative weight and a negative q entry.
"""

from __future__ import annotations

import torch

from rkmeta_rl.tableau import Tableau

DT = torch.float64
N_STAGES = 4  # enough data sets for rk4
N_DATA = 5

# a custom explicit 3-stage tableau with a negative weight and negative q entry
CUSTOM3 = Tableau.from_rows(
    "custom3", a=(0.45, -0.25, 0.8), q=((0, 0, 0), (0.7, 0, 0), (-0.4, 1.3, 0))
)


# ----------------------------------------------------------------------------------------
# A small smooth non-quadratic problem: params {"w": (2, 2), "v": (2,)}, 6 numbers
# ----------------------------------------------------------------------------------------


def _make_data(seed: int, tasks: int | None = None):
    g = torch.Generator().manual_seed(seed)
    lead = () if tasks is None else (tasks,)
    xs = [torch.randn(*lead, N_DATA, 2, generator=g, dtype=DT) for _ in range(N_STAGES)]
    ys = [torch.randn(*lead, N_DATA, generator=g, dtype=DT) for _ in range(N_STAGES)]
    return xs, ys


def _model_loss(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, v: torch.Tensor):
    """Per-task loss (shape = leading dims of w): squared error of v·tanh(xW) + regulariser."""
    pred = (torch.tanh(x @ w) * v.unsqueeze(-2)).sum(-1)
    err = ((pred - y) ** 2).mean(-1)
    return err + 0.1 * (w**4).sum((-2, -1)) + 0.3 * torch.logsumexp(v, -1)


class Problem:
    """Stage losses L_i(p) on data set i (dict form for rk.py, flat form for the tests)."""

    def __init__(self, seed: int = 0):
        self.xs, self.ys = _make_data(seed)
        g = torch.Generator().manual_seed(seed + 100)
        self.theta0 = 0.7 * torch.randn(6, generator=g, dtype=DT)

    @staticmethod
    def split(z: torch.Tensor):
        return z[:4].reshape(2, 2), z[4:]

    def flat_loss(self, i: int, z: torch.Tensor) -> torch.Tensor:
        w, v = self.split(z)
        return _model_loss(self.xs[i], self.ys[i], w, v)

    def stage_loss(self, i: int, p: dict) -> torch.Tensor:
        return _model_loss(self.xs[i], self.ys[i], p["w"], p["v"]).sum()

    def theta_dict(self, z: torch.Tensor | None = None) -> dict:
        z = self.theta0 if z is None else z
        w, v = self.split(z)
        return {"w": w.clone().requires_grad_(), "v": v.clone().requires_grad_()}

    def grad(self, i: int, z: torch.Tensor) -> torch.Tensor:
        z = z.detach().requires_grad_()
        return torch.autograd.grad(self.flat_loss(i, z), z)[0]

    def hessian(self, i: int, z: torch.Tensor) -> torch.Tensor:
        return torch.autograd.functional.hessian(lambda u: self.flat_loss(i, u), z.detach())


def _flat(params: dict) -> torch.Tensor:
    return torch.cat([params["w"].reshape(-1), params["v"].reshape(-1)])


def _my_points(prob: Problem, z: torch.Tensor, tab: Tableau, h: float):
    """Independent stage points with exact total-derivative k's (nested autograd)."""
    z = z.detach().requires_grad_()
    ks, pts = [], []
    for i in range(tab.stages):
        p = z
        for j in range(i):
            if tab.q[i][j] != 0.0:
                p = p - h * tab.q[i][j] * ks[j]
        pts.append(p)
        ks.append(torch.autograd.grad(prob.flat_loss(i, p), z, create_graph=True)[0])
    return z, pts, ks
