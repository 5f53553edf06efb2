"""Omniglot loader: character classes, the paper's train/test split, and the one-shot runs.

Omniglot ships as ``images_background`` / ``images_evaluation`` (folders or zips) holding
``Alphabet/characterNN/*.png``: 105x105 1-bit drawings, strokes black on white. Images are
returned greyscale with strokes bright (255 - pixel) and background 0.

Folders are read strictly: a character folder holds drawings named ``NNNN_DD.png`` (one
character id NNNN, drawer DD; 20 drawings in the real data), all of one size. Any other
folder of PNGs, such as the one-shot runs (``runNN/training/classKK.png``) extracted inside a
data folder, is skipped with a one-line warning instead of becoming a class.
"""

from __future__ import annotations

import io
import os
import re
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image

from rkmeta_rl.supervised.fewshot import ClassDataset, seeded_split

BACKGROUND_SMALL = ("images_background_small1.zip", "images_background_small2.zip")
"""The two small background subsets of the standard distribution (50 characters shared)."""
_SET_FOLDER = re.compile(r"^images_(background|evaluation)")
_RUN_FOLDER = re.compile(r"^run\d+$")
_DRAWING = re.compile(r"^(\d+)_\d+\.png$")  # NNNN_DD.png: character id, drawer
_EXPECTED = (
    "expected alphabet folders of character folders of .png files, or "
    "images_background/images_evaluation (folders or .zip), under {}"
)


class _FileTree:
    """Read-only files of a folder or a zip archive, addressed by relative posix paths."""

    def __init__(self, path: Path):
        self.path = path
        self._zip = zipfile.ZipFile(path) if path.is_file() else None
        if self._zip is not None:
            names = [n for n in self._zip.namelist() if not n.endswith("/")]
        else:
            names = [
                (Path(d) / f).relative_to(path).as_posix()
                for d, _, files in os.walk(path)
                for f in files
            ]
        # skip hidden files and macOS metadata folders
        self.files = sorted(
            n for n in names if not any(p.startswith((".", "__MACOSX")) for p in n.split("/"))
        )

        self._known = set(self.files)

    def __contains__(self, name: str) -> bool:
        return name in self._known

    def read(self, name: str) -> bytes:
        if self._zip is not None:
            return self._zip.read(name)
        return (self.path / name).read_bytes()

    def where(self, name: str) -> str:
        """Human-readable location of ``name`` for error messages."""
        return f"{self.path}:{name}" if self._zip is not None else str(self.path / name)

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()

    def __enter__(self) -> _FileTree:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_image(tree: _FileTree, name: str, size: int, sizes: set | None = None) -> np.ndarray:
    """One drawing as uint8 (size, size), strokes bright; its original size is added to
    ``sizes`` when given."""
    try:
        with Image.open(io.BytesIO(tree.read(name))) as im:
            if sizes is not None:
                sizes.add(im.size)
            grey = im.convert("L")
            if grey.size != (size, size):
                grey = grey.resize((size, size), Image.LANCZOS)
            return 255 - np.asarray(grey, dtype=np.uint8)
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"cannot read image {tree.where(name)}: {err}") from err


def _not_a_character(files: list[str]) -> str | None:
    """Why a folder of PNGs is not an Omniglot character (None if its names fit)."""
    matches = [_DRAWING.match(PurePosixPath(f).name) for f in files]
    if not all(matches):
        return "file names are not NNNN_DD.png"
    if len({m.group(1) for m in matches}) > 1:
        return "drawings of several characters"
    return None


def _read_character(tree: _FileTree, files: list[str], size: int) -> np.ndarray | None:
    """The drawings (n, size, size) of one character folder; None if they differ in size."""
    sizes: set = set()
    images = np.stack([_read_image(tree, f, size, sizes) for f in files])
    return images if len(sizes) == 1 else None


def _warn_skipped(path: Path, skipped: list[str]) -> None:
    if skipped:
        shown = ", ".join(skipped[:3]) + (", ..." if len(skipped) > 3 else "")
        warnings.warn(f"skipped {len(skipped)} folder(s) under {path} that are not Omniglot "
                      f"characters: {shown}", stacklevel=3)


def _sources(path: Path) -> list[Path]:
    """Folders/zips to scan for ``path``: itself, plus images_* zips not extracted beside it."""
    if not path.is_dir():
        return [path]
    zips = [
        p
        for p in sorted(path.glob("*.zip"))
        if _SET_FOLDER.match(p.name) and not (path / p.stem).is_dir()
    ]
    return [path, *zips]


def _character_files(tree: _FileTree) -> dict[str, list[str]]:
    """Character folder path -> its .png files, for [top/]alphabet/character/file.png."""
    folders: dict[str, list[str]] = {}
    for name in tree.files:
        parts = PurePosixPath(name).parts
        if name.lower().endswith(".png") and len(parts) in (3, 4):
            folders.setdefault("/".join(parts[:-1]), []).append(name)
    return folders


def load_omniglot(paths: str | Path | Sequence[str | Path], image_size: int = 28) -> ClassDataset:
    """Load Omniglot characters from folders and/or zips as uint8 (n, 1, S, S) per class.

    Each path is an alphabet folder root, a folder holding ``images_background*`` /
    ``images_evaluation*`` folders or zips, or such a zip. Classes are keyed
    "Alphabet/characterNN"; a key seen in an earlier source wins (the small1/small2 subsets
    share alphabets). Classes are sorted by key, drawings by file name.
    """
    if isinstance(paths, str | Path):
        paths = [paths]
    if not paths:
        raise ValueError("load_omniglot: no paths given")
    classes: dict[str, np.ndarray] = {}  # key -> (n, S, S) uint8
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise ValueError(f"Omniglot path does not exist: {path}")
        found, skipped = False, []
        for source in _sources(path):
            with _FileTree(source) as tree:
                for folder, files in sorted(_character_files(tree).items()):
                    key = "/".join(folder.split("/")[-2:])
                    why = _not_a_character(files)
                    if why is None and key not in classes:
                        images = _read_character(tree, files, image_size)
                        why = None if images is not None else "drawings of different sizes"
                        if images is not None:
                            classes[key] = images
                    if why is not None:
                        skipped.append(f"{folder} ({why})")
                    else:
                        found = True
        _warn_skipped(path, skipped)
        if not found:
            raise ValueError(_EXPECTED.format(path))
    names = sorted(classes)
    images = [torch.from_numpy(classes[k]).unsqueeze(1) for k in names]  # (n, 1, S, S)
    return ClassDataset(images=images, names=names, rotations=False)


def omniglot_split(
    data: ClassDataset, num_train: int | None = None, seed: int = 0
) -> tuple[ClassDataset, ClassDataset]:
    """Seeded split of characters into (train, test); both keep ``data.rotations``.

    Default ``num_train``: 1200 of the full 1623 characters (the paper's split), or the same
    proportion of a smaller set. Rotations apply per base character, so no character appears
    on both sides in any rotation.
    """
    total = len(data.names)
    if num_train is None:
        num_train = 1200 if total >= 1623 else round(total * 1200 / 1623)
    if not 0 < num_train < total:
        raise ValueError(f"num_train must be in 1..{total - 1} for {total} characters")
    train, test = seeded_split(data.names, [num_train, total - num_train], seed)
    index = {name: i for i, name in enumerate(data.names)}
    return (
        data.select(sorted(index[n] for n in train)),
        data.select(sorted(index[n] for n in test)),
    )


@dataclass
class OneShotRun:
    """One 20-way one-shot run: classify each test drawing as one of the training drawings."""

    train: torch.Tensor  # (W, 1, S, S) float32 in [0, 1], one drawing per class
    train_names: list[str]  # e.g. "run01/training/class01.png"
    test: torch.Tensor  # (W, 1, S, S) float32 in [0, 1]
    labels: torch.Tensor  # (W,) int64 index into train


def _load_run(tree: _FileTree, labels_file: str, image_size: int) -> OneShotRun:
    """Parse one run's class_labels.txt ("runNN/test/itemMM.png runNN/training/classKK.png")."""
    run_dir = PurePosixPath(labels_file).parent  # e.g. "run01" or "all_runs/run01"
    base = run_dir.parent  # the paths in class_labels.txt are relative to this

    training = run_dir / "training"
    train_files = [
        f for f in tree.files if PurePosixPath(f).parent == training and f.endswith(".png")
    ]
    train_names = [PurePosixPath(f).relative_to(base).as_posix() for f in train_files]
    test_files, labels = [], []
    lines = tree.read(labels_file).decode().splitlines()
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or parts[1] not in train_names:
            raise ValueError(
                f"{tree.where(labels_file)} line {lineno}: expected 'TEST.png TRAINING.png' "
                f"with TRAINING one of {run_dir}/training/*.png, got {line!r}"
            )
        test_files.append((base / parts[0]).as_posix())
        labels.append(train_names.index(parts[1]))

    def stack(files: list[str]) -> torch.Tensor:
        arr = np.stack([_read_image(tree, f, image_size) for f in files])  # (W, S, S)
        return torch.from_numpy(arr).unsqueeze(1).float().div_(255.0)

    return OneShotRun(stack(train_files), train_names, stack(test_files), torch.tensor(labels))


def _run_dirs(tree: _FileTree) -> list[PurePosixPath]:
    """The outermost ``runNN`` folders of the tree, sorted."""
    dirs = set()
    for f in tree.files:
        parts = PurePosixPath(f).parts[:-1]
        for i, part in enumerate(parts):
            if _RUN_FOLDER.match(part):
                dirs.add(PurePosixPath(*parts[: i + 1]))
                break
    return sorted(dirs)


def load_one_shot_runs(path: str | Path, image_size: int = 28) -> list[OneShotRun]:
    """Load the one-shot classification runs from ``all_runs.zip`` or its extracted folder.

    Each ``runNN`` folder holds ``class_labels.txt``, ``training/classKK.png`` and
    ``test/itemMM.png``. Runs are returned sorted by folder name.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"one-shot runs path does not exist: {path} (expected all_runs.zip)")
    with _FileTree(path) as tree:
        run_dirs = _run_dirs(tree)
        if not run_dirs:
            raise ValueError(
                f"expected run01..run20 folders with class_labels.txt, training/, test/ under "
                f"{path}"
            )
        runs = []
        for run_dir in run_dirs:
            labels_file = (run_dir / "class_labels.txt").as_posix()
            if labels_file not in tree:
                raise ValueError(f"expected {tree.where(labels_file)} (missing class_labels.txt)")
            runs.append(_load_run(tree, labels_file, image_size))
    return runs
