"""A tableau per parameter group: the paper's "Extension to ANIL".

The same sine-wave model as ``own_model.py``, meta-trained three ways with one rule string
each (patterns on parameter names; ``4`` is the last nn.Linear of the Sequential):

* ``*=ralston``: one tableau for every parameter;
* ``4=midpoint,*=ralston``: midpoint for the head, Ralston for the body (the paper's split);
* ``4=midpoint,*=frozen:midpoint``: ANIL, the body is not adapted in the inner loop.

    python examples/layer_methods.py        # 16 s on a 2-core AMD EPYC
"""

from __future__ import annotations

import argparse

import torch
from own_model import evaluate, query_loss, sine_tasks, support_loss
from torch import nn

from rkmeta_rl import RKMetaLearner

RULES = ("*=ralston", "4=midpoint,*=ralston", "4=midpoint,*=frozen:midpoint")


def train(rules: str, iters: int) -> RKMetaLearner:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1, 40), nn.ReLU(), nn.Linear(40, 40), nn.ReLU(),
                          nn.Linear(40, 1))
    learner = RKMetaLearner(model, layer_methods=rules, inner_lr=0.01)
    opt = torch.optim.Adam(learner.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(iters):
        loss = learner(sine_tasks(10, g), support_loss, query_loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return learner


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iters", type=int, default=800)
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # so small a problem gains nothing from more (docs/guides/threads.md)
    held_out = sine_tasks(50, torch.Generator().manual_seed(1))
    results = {}
    for rules in RULES:
        learner = train(rules, args.iters)
        alphas = sorted({f"{a:g}" for a in learner.alphas.values()})
        results[rules] = evaluate(learner, held_out, steps=10)
        print(f"{rules:32s} step sizes α {', '.join(alphas):10s} held-out MSE after 10 steps "
              f"{results[rules]:.3f}")
    return results


if __name__ == "__main__":
    main()
