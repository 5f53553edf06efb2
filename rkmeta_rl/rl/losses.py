"""Per-stage RL losses on a stage's episodes, for per-task parameters (leading dim T).

Every loss averages over a task's valid steps. ``reinforce_loss`` sums over tasks so
that its gradient with respect to per-task parameters is each task's own gradient (the
inner step k_i, see ``rkmeta_rl.rk``); the surrogate and KL average over tasks (the
meta-objective). :class:`StageObjective` combines them over the stages: the RK surrogate
Σ a_i L_i and the weighted KL Σ w_i KL_i that RK-TRPO optimises.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rkmeta_rl.rk import Params, Scheme, rk_combination
from rkmeta_rl.rl.chunk_threads import map_chunks
from rkmeta_rl.rl.episodes import Episodes
from rkmeta_rl.rl.policy import GaussianMLPPolicy, gaussian_kl, gaussian_log_prob
from rkmeta_rl.tableau import Tableau


def _task_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean over valid steps for each task: x, mask (T, N) -> (T,)."""
    return (x * mask).sum(-1) / mask.sum(-1).clamp_min(1.0)


def log_probs(policy: GaussianMLPPolicy, params: Params, episodes: Episodes) -> Tensor:
    obs, act, _, _ = episodes.flat()
    mean, log_std = policy(params, obs)
    return gaussian_log_prob(mean, log_std, act)  # (T, N)


def reinforce_loss(policy: GaussianMLPPolicy, params: Params, episodes: Episodes) -> Tensor:
    """Σ_tasks L_t, L_t = -mean_valid(log π(u|s) · A): the inner (adaptation) loss."""
    _, _, adv, mask = episodes.flat()
    return -_task_mean(log_probs(policy, params, episodes) * adv, mask).sum()


def surrogate_loss(
    policy: GaussianMLPPolicy, params: Params, episodes: Episodes, old_log_probs: Tensor
) -> Tensor:
    """mean_tasks -mean_valid(π/π_old · A): TRPO's importance-weighted surrogate."""
    return _surrogate_terms(policy(params, episodes.flat()[0]), episodes, old_log_probs).mean()


def _surrogate_terms(outputs: tuple[Tensor, Tensor], episodes: Episodes,
                     old_log_probs: Tensor) -> Tensor:
    """Each task's -mean_valid(π/π_old · A): (T,)."""
    _, act, adv, mask = episodes.flat()
    ratio = torch.exp(gaussian_log_prob(*outputs, act) - old_log_probs)
    return -_task_mean(ratio * adv, mask)


def mean_kl(
    policy: GaussianMLPPolicy,
    params: Params,
    episodes: Episodes,
    old_mean: Tensor,
    old_log_std: Tensor,
) -> Tensor:
    """mean_tasks mean_valid KL(π_old(·|s) || π_params(·|s))."""
    outputs = policy(params, episodes.flat()[0])
    return _kl_terms(outputs, episodes, old_mean, old_log_std).mean()


def _kl_terms(outputs: tuple[Tensor, Tensor], episodes: Episodes, old_mean: Tensor,
              old_log_std: Tensor) -> Tensor:
    """Each task's mean_valid KL(π_old || π): (T,)."""
    return _task_mean(gaussian_kl(old_mean, old_log_std, *outputs), episodes.flat()[3])


def rk_weights(tableau: Tableau | Scheme) -> tuple[float, ...]:
    """The weights a of Σ a_i L_i: the tableau's, or those every parameter group shares.
    TRPO needs that one objective (its line search compares values of it)."""
    if isinstance(tableau, Tableau):
        return tableau.a
    shared = tableau.shared_weights
    if shared is None:
        raise ValueError("--layer-methods: TRPO needs one objective Σ a_i L_i, so every "
                         "parameter group must have the same weights a (e.g. 'w2=midpoint,"
                         "*=frozen:midpoint'); groups with their own weights are for the "
                         "supervised benchmarks and RKMetaLearner")
    return shared


def kl_weights(tableau: Tableau | Scheme) -> list[float]:
    """w_i = |a_i| / Σ|a_j|, the weights of the stages' KLs (= a_i for non-negative a)."""
    a = rk_weights(tableau)
    total = sum(abs(x) for x in a)
    return [abs(x) / total for x in a]


class StageObjective:
    """The RK surrogate Σ a_i L_i and weighted KL Σ w_i KL_i against the old stage policies."""

    def __init__(self, policy: GaussianMLPPolicy, tableau: Tableau | Scheme,
                 data: dict[int, Episodes], old_points: list[Params]) -> None:
        self.policy, self.tableau, self.data = policy, tableau, data
        self.weights = kl_weights(tableau)
        self.active = [i for i, w in enumerate(self.weights) if w > 0]
        self.old = {}
        with torch.no_grad():
            for i in self.active:
                obs, act, _, _ = data[i].flat()
                mean, log_std = policy(old_points[i], obs)
                self.old[i] = (mean, log_std, gaussian_log_prob(mean, log_std, act))

    def surrogate(self, points: list[Params]) -> Tensor:
        return rk_combination(points, self.tableau, lambda i, p: surrogate_loss(
            self.policy, p, self.data[i], self.old[i][2]))

    def kl(self, points: list[Params]) -> Tensor:
        terms = [self.weights[i] * mean_kl(self.policy, points[i], self.data[i], *self.old[i][:2])
                 for i in self.active]
        return torch.stack(terms).sum()

    def values(self, points: list[Params]) -> tuple[float, float]:
        """(surrogate, KL) at ``points`` as numbers, one policy evaluation per stage, over
        the tasks in chunks (``Episodes.task_chunks``; the same numbers as in one go)."""
        terms = {}

        def chunk_terms(i: int, part: slice) -> tuple[Tensor, Tensor]:
            ep = self.data[i].tasks(part)
            out = self.policy({n: v[part] for n, v in points[i].items()}, ep.flat()[0])
            mean, log_std, log_prob = (x[part] for x in self.old[i])
            return _surrogate_terms(out, ep, log_prob), _kl_terms(out, ep, mean, log_std)

        with torch.no_grad():
            for i in self.active:
                parts = map_chunks(lambda part, i=i: chunk_terms(i, part),
                                   self.data[i].task_chunks(), self.data[i].obs.device)
                terms[i] = (torch.cat([p[0] for p in parts]).mean(),
                            torch.cat([p[1] for p in parts]).mean())
            surrogate = rk_combination(points, self.tableau, lambda i, p: terms[i][0])
            kl = torch.stack([self.weights[i] * terms[i][1] for i in self.active]).sum()
        return surrogate.item(), kl.item()
