"""MiniImagenet loader for the Ravi & Larochelle on-disk layout.

``ROOT/{train,val,test}.csv`` list ``filename,label`` rows (e.g.
``n0153282900000005.jpg,n01532829``) of 84x84 RGB JPEGs kept in ``ROOT/images/``.

Read strictly: a file name must be a plain name inside ``images/`` (no folders, no ``..``),
listed once across the csv, and every image must exist; a class may belong to one split
only (see ``check_disjoint``).

Memory: the full train split is about 64 classes x 600 images x 3 x 84 x 84 bytes ~ 813 MB
as uint8; use ``max_per_class`` or a smaller ``image_size`` to cut it down.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from rkmeta_rl.supervised.fewshot import ClassDataset

SPLITS = ("train", "val", "test")
_HEADER = ["filename", "label"]


def _read_csv(csv_path: Path) -> dict[str, list[str]]:
    """Label -> file names in csv order."""
    if not csv_path.is_file():
        raise ValueError(f"expected {csv_path} with header filename,label")
    with csv_path.open(newline="") as fh:
        rows = [[cell.strip() for cell in row] for row in csv.reader(fh)]
    rows = [row for row in rows if any(row)]
    if not rows or rows[0] != _HEADER:
        got = rows[0] if rows else "an empty file"
        raise ValueError(f"{csv_path}: expected header filename,label, got {got}")
    by_label: dict[str, list[str]] = {}
    seen: dict[str, int] = {}
    for lineno, row in enumerate(rows[1:], 2):
        if len(row) != 2 or not all(row):
            raise ValueError(f"{csv_path} row {lineno}: expected 'filename,label', got {row}")
        name = row[0]
        if Path(name).name != name or name in (".", ".."):
            raise ValueError(f"{csv_path} row {lineno}: {name!r} is not a plain file name in "
                             "images/ (no folders or '..')")
        if name in seen:
            raise ValueError(f"{csv_path} row {lineno}: {name} is listed twice (first in row "
                             f"{seen[name]})")
        seen[name] = lineno
        by_label.setdefault(row[1], []).append(name)
    return by_label


def _read_image(path: Path, size: int) -> np.ndarray:
    """One image as uint8 (3, size, size)."""
    try:
        with Image.open(path) as im:
            rgb = im.convert("RGB")
            if rgb.size != (size, size):
                rgb = rgb.resize((size, size), Image.BILINEAR)
            return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)  # (S,S,3) -> (3,S,S)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read image {path}: {err}") from err


def load_miniimagenet(
    root: str | Path, split: str, image_size: int = 84, max_per_class: int | None = None
) -> ClassDataset:
    """Load one split as a ClassDataset: uint8 (n, 3, S, S) per class.

    Classes are sorted by label (the wnid, e.g. "n01532829"); images keep csv order, cut to
    the first ``max_per_class`` when given.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"MiniImagenet root does not exist: {root} (expected a folder)")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if max_per_class is not None and max_per_class < 1:
        raise ValueError(f"max_per_class must be >= 1, got {max_per_class}")
    by_label = _read_csv(root / f"{split}.csv")
    image_dir = root / "images"
    if not image_dir.is_dir():
        raise ValueError(f"expected image folder {image_dir} holding the files of {split}.csv")
    names = sorted(by_label)
    files = [[image_dir / f for f in by_label[n][:max_per_class]] for n in names]
    missing = [p for class_files in files for p in class_files if not p.is_file()]
    if missing:
        first = ", ".join(str(p) for p in missing[:3])
        raise ValueError(f"{len(missing)} images listed in {split}.csv are missing: {first}")
    images = [torch.from_numpy(np.stack([_read_image(p, image_size) for p in f])) for f in files]
    return ClassDataset(images=images, names=names, rotations=False)


def check_disjoint(splits: dict[str, ClassDataset]) -> None:
    """No class may be in two splits (held-out classes must be unseen in training)."""
    names = list(splits)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            shared = sorted(set(splits[a].names) & set(splits[b].names))
            if shared:
                raise ValueError(f"MiniImagenet classes {', '.join(shared[:3])} are in both "
                                 f"the {a} and the {b} split; each class belongs to one split")
