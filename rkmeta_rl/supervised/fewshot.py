"""N-way K-shot task sampling over a dataset of image classes.

A :class:`ClassDataset` keeps every class's images in memory as uint8; :func:`sample_tasks`
draws a batch of few-shot classification tasks from it, using only the given torch generator
so that equal generator states give identical batches.

A task draws N distinct base classes. With rotations (Omniglot) each drawn class is then
turned by its own random multiple of 90°, shared by all its support and query images, as in
MAML's reference data generator: a rotation is augmentation, so one task never holds two
rotations of one character.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

NUM_ROTATIONS = 4  # 0, 90, 180, 270 degrees


@dataclass
class ClassDataset:
    """Images grouped by class, kept in memory as uint8.

    With ``rotations`` every class drawn into a task is rotated by a random multiple of 90°
    (see :func:`sample_tasks`); the classes stay the base classes.
    """

    images: list[torch.Tensor]  # one uint8 tensor per class, shape (n_i, C, H, W)
    names: list[str]  # class names, same order (e.g. "Greek/character01")
    rotations: bool = False

    def __post_init__(self) -> None:
        if len(self.images) != len(self.names):
            raise ValueError(
                f"ClassDataset: {len(self.images)} image tensors but {len(self.names)} names"
            )

    @property
    def num_classes(self) -> int:
        """Number of distinct classes a task can draw from (rotations add none)."""
        return len(self.images)

    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        if not self.images:
            raise ValueError("ClassDataset has no classes")
        c, h, w = self.images[0].shape[1:]
        return (int(c), int(h), int(w))

    def select(self, indices: Sequence[int]) -> ClassDataset:
        """The base classes at ``indices`` (same rotations flag); tensors are shared."""
        return ClassDataset(
            images=[self.images[i] for i in indices],
            names=[self.names[i] for i in indices],
            rotations=self.rotations,
        )


@dataclass
class FewShotBatch:
    """A batch of T tasks with N ways, K support and Q query images per class."""

    xs: torch.Tensor  # (T, N*K, C, H, W) float32 in [0, 1]
    ys: torch.Tensor  # (T, N*K) int64 labels 0..N-1
    xq: torch.Tensor  # (T, N*Q, C, H, W) float32 in [0, 1]
    yq: torch.Tensor  # (T, N*Q) int64 labels 0..N-1


def check_task_shape(data: ClassDataset, ways: int, shots: int, queries: int) -> None:
    """ValueError naming the bad value and its limit."""
    for name, value in (("ways", ways), ("shots", shots), ("queries", queries)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if ways > data.num_classes:
        raise ValueError(f"ways={ways} exceeds the {data.num_classes} classes in the dataset"
                         + (" (a task draws distinct characters; rotations are not new classes)"
                            if data.rotations else ""))
    needed = shots + queries
    for name, imgs in zip(data.names, data.images, strict=True):
        if imgs.shape[0] < needed:
            raise ValueError(
                f"class {name!r} has {imgs.shape[0]} images but shots + queries = {needed} "
                "are needed"
            )


def draw_classes(data: ClassDataset, ways: int, generator: torch.Generator
                 ) -> tuple[list[int], list[int]]:
    """One task's ``ways`` distinct base classes in random order, and each one's number of
    quarter turns (all 0 without rotations, and then no rotation is drawn)."""
    classes = torch.randperm(data.num_classes, generator=generator)[:ways]  # (N,)
    if not data.rotations:
        return classes.tolist(), [0] * ways
    turns = torch.randint(NUM_ROTATIONS, (ways,), generator=generator)  # (N,)
    return classes.tolist(), turns.tolist()


def sample_tasks(
    data: ClassDataset,
    num_tasks: int,
    ways: int,
    shots: int,
    queries: int,
    generator: torch.Generator,
) -> FewShotBatch:
    """Sample ``num_tasks`` N-way K-shot tasks with Q queries per class.

    Each task draws ``ways`` distinct base classes in random order (:func:`draw_classes`);
    the i-th drawn class gets label i, so the class-to-label assignment is shuffled. Per
    class, ``shots + queries`` distinct images are drawn without replacement and rotated by
    that class's quarter turns: the first ``shots`` go to the support set, the rest to the
    query set. Examples are grouped by label: ys = [0]*K + [1]*K + ...
    """
    check_task_shape(data, ways, shots, queries)
    if num_tasks < 1:
        raise ValueError(f"num_tasks must be >= 1, got {num_tasks}")
    support, query = [], []
    for _ in range(num_tasks):
        task_s, task_q = [], []
        for base, rot in zip(*draw_classes(data, ways, generator), strict=True):
            imgs = data.images[base]  # (n_i, C, H, W) uint8
            pick = torch.randperm(imgs.shape[0], generator=generator)[: shots + queries]
            chosen = imgs[pick]  # (K+Q, C, H, W)
            if rot:
                chosen = torch.rot90(chosen, k=rot, dims=(-2, -1))
            task_s.append(chosen[:shots])
            task_q.append(chosen[shots:])
        support.append(torch.cat(task_s))  # (N*K, C, H, W)
        query.append(torch.cat(task_q))  # (N*Q, C, H, W)
    labels = torch.arange(ways, dtype=torch.int64)
    return FewShotBatch(
        xs=torch.stack(support).float().div_(255.0),
        ys=labels.repeat_interleave(shots).expand(num_tasks, -1).clone(),
        xq=torch.stack(query).float().div_(255.0),
        yq=labels.repeat_interleave(queries).expand(num_tasks, -1).clone(),
    )


def seeded_split(items: Sequence[str], counts: Sequence[int], seed: int) -> list[list[str]]:
    """Cut a seeded permutation of the sorted ``items`` into consecutive pieces of ``counts``.

    Pieces are disjoint by construction and the same seed gives the same split; items beyond
    ``sum(counts)`` are left out.
    """
    if any(c < 0 for c in counts):
        raise ValueError(f"split counts must be >= 0, got {list(counts)}")
    if sum(counts) > len(items):
        raise ValueError(f"split counts {list(counts)} sum to more than the {len(items)} items")
    ordered = sorted(items)
    perm = np.random.default_rng(seed).permutation(len(ordered))
    pieces, start = [], 0
    for c in counts:
        pieces.append([ordered[i] for i in perm[start : start + c]])
        start += c
    return pieces
