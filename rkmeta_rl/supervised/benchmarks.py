"""What each benchmark brings: its model and its train / validation / test task streams.

Held-out tasks never come from the training stream: sinusoid draws them from separate
seeds; Omniglot holds out a seeded set of characters (every rotation of a held-out
character is held out); MiniImagenet uses its val and test class splits. Omniglot has no
separate validation classes here: the validation curve logged during training is measured
on the held-out characters and nothing is selected by it (the last checkpoint is the
result).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from rkmeta_rl.supervised.config import SupervisedConfig
from rkmeta_rl.supervised.fewshot import ClassDataset, check_task_shape, sample_tasks
from rkmeta_rl.supervised.miniimagenet import check_disjoint, load_miniimagenet
from rkmeta_rl.supervised.models import MLP, ConvNet
from rkmeta_rl.supervised.omniglot import load_omniglot, omniglot_split
from rkmeta_rl.supervised.sinusoid import sample_sinusoid_tasks

TaskBatchSampler = Callable[[int, torch.Generator], object]  # (num_tasks, generator) -> batch

OMNIGLOT_SIZE = 28
MINIIMAGENET_SIZE = 84
VALIDATION_SEED_OFFSET = 1_000_003  # validation tasks: a stream no training run draws from


@dataclass
class Benchmark:
    model: MLP | ConvNet
    train: TaskBatchSampler
    validation: TaskBatchSampler
    test: TaskBatchSampler
    classification: bool


def _few_shot(data: ClassDataset, cfg: SupervisedConfig) -> TaskBatchSampler:
    """Tasks of the configured shape; a split too small for it fails here, before a run
    directory is written."""
    check_task_shape(data, cfg.ways, cfg.shots, cfg.queries)
    return lambda n, g: sample_tasks(data, n, cfg.ways, cfg.shots, cfg.queries, g)


def load_classes(cfg: SupervisedConfig) -> dict[str, ClassDataset]:
    """The benchmark's class splits: {"train", "validation", "test"}."""
    if cfg.benchmark == "omniglot":
        data = load_omniglot(cfg.data, image_size=OMNIGLOT_SIZE)
        data.rotations = True  # each drawn character turned by a random multiple of 90°
        train, test = omniglot_split(data, cfg.num_train_classes, cfg.split_seed)
        return {"train": train, "validation": test, "test": test}
    (root,) = cfg.data
    splits = {name: load_miniimagenet(root, split, image_size=MINIIMAGENET_SIZE)
              for name, split in (("train", "train"), ("validation", "val"), ("test", "test"))}
    check_disjoint(splits)
    return splits


def make_benchmark(cfg: SupervisedConfig) -> Benchmark:
    """Model and task samplers of a resolved config (raises ValueError on bad data)."""
    if cfg.benchmark == "sinusoid":
        sample = lambda n, g: sample_sinusoid_tasks(n, cfg.shots, cfg.queries, g)  # noqa: E731
        return Benchmark(MLP(1, cfg.hidden, 1), sample, sample, sample, classification=False)
    splits = load_classes(cfg)
    channels, size = splits["train"].image_shape()[:2]
    model = ConvNet(channels, size, cfg.ways, filters=cfg.filters)
    return Benchmark(model, _few_shot(splits["train"], cfg), _few_shot(splits["validation"], cfg),
                     _few_shot(splits["test"], cfg), classification=True)
