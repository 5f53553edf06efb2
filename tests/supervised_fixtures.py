"""Tiny generated Omniglot / MiniImagenet fixtures shared by the supervised training tests
(imported as ``supervised_fixtures``: tests/ is on sys.path).

Adapted from the fixture helpers of ``tests/test_supervised_data.py``; here every character
is a seeded random block pattern (clearly distinct from every other character and from its
own rotations), and its drawings are small shifts of it, so a tiny ConvNet can learn it.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 105  # Omniglot drawings are 105x105 1-bit images, strokes black on white
GRID = 7  # the pattern's blocks per side (15 pixels each)


def pattern(char: int) -> np.ndarray:
    """Character ``char``'s strokes: a seeded random GRID x GRID block pattern (bool)."""
    rng = np.random.default_rng(1000 + char)
    blocks = rng.random((GRID, GRID)) < 0.4
    return np.kron(blocks, np.ones((SIZE // GRID, SIZE // GRID), dtype=bool))


def drawing(char: int, draw: int) -> Image.Image:
    """Drawing ``draw`` of character ``char``: its pattern shifted by ``draw`` pixels,
    strokes black (0) on white (1)."""
    strokes = np.roll(pattern(char), shift=(draw, 2 * draw), axis=(0, 1))
    return Image.fromarray(~strokes).convert("1")


def png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def alphabets(names: dict[str, int], chars: int = 4, draws: int = 2) -> dict[str, bytes]:
    """{relative path: png} for Alphabet/characterNN/XXXX_DD.png; ``names`` maps each
    alphabet to the number of its first character (characters are numbered globally)."""
    return {
        f"{alpha}/character{c + 1:02d}/{offset + c:04d}_{d + 1:02d}.png": png(
            drawing(offset + c, d))
        for alpha, offset in names.items()
        for c in range(chars)
        for d in range(draws)
    }


def write_dir(root: Path, files: dict[str, bytes], prefix: str = "") -> Path:
    for name, data in files.items():
        path = root / prefix / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def write_zip(path: Path, files: dict[str, bytes], prefix: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(prefix + name, data)
    return path


def omniglot_folder(root: Path, num_alphabets: int = 2, chars: int = 5, draws: int = 2) -> Path:
    """A plain Omniglot folder of ``num_alphabets`` x ``chars`` characters."""
    names = {f"Alphabet{a}": a * chars for a in range(num_alphabets)}
    return write_dir(root, alphabets(names, chars, draws))


def one_shot_runs(num_runs: int = 2, ways: int = 20, first_char: int = 500) -> dict[str, bytes]:
    """all_runs-style files: ``num_runs`` runs of ``ways`` classes; test item i of a run is
    drawing 1 of the character of training class perm[i] (a seeded permutation)."""
    files = {}
    for r in range(1, num_runs + 1):
        run, lines = f"run{r:02d}", []
        perm = np.random.default_rng(r).permutation(ways)
        chars = first_char + ways * r + np.arange(ways)
        for k in range(ways):
            files[f"{run}/training/class{k + 1:02d}.png"] = png(drawing(int(chars[k]), 0))
        for i, k in enumerate(perm.tolist()):
            files[f"{run}/test/item{i + 1:02d}.png"] = png(drawing(int(chars[k]), 1))
            lines.append(f"{run}/test/item{i + 1:02d}.png {run}/training/class{k + 1:02d}.png")
        files[f"{run}/class_labels.txt"] = ("\n".join(lines) + "\n").encode()
    return files


def omniglot_reproduction_data(root: Path, ways: int = 20, chars: int = 4) -> Path:
    """The folder ``scripts/reproduce_omniglot.py`` reads: images_background_small1.zip
    and images_background_small2.zip (3 alphabets x ``chars`` characters each, one alphabet
    in both: 5 distinct alphabets, 5 x ``chars`` characters) and all_runs.zip (2 runs of
    ``ways``). A seeded 74% of the characters train, so ``chars=4`` holds out 5 characters
    (5-way tasks) and ``chars=16`` holds out 21 (20-way tasks)."""
    small1 = {"Alpha": 0, "Beta": chars, "Shared": 2 * chars}
    small2 = {"Shared": 2 * chars, "Gamma": 3 * chars, "Delta": 4 * chars}
    write_zip(root / "images_background_small1.zip", alphabets(small1, chars),
              "images_background_small1/")
    write_zip(root / "images_background_small2.zip", alphabets(small2, chars),
              "images_background_small2/")
    write_zip(root / "all_runs.zip", one_shot_runs(2, ways))
    return root


COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (30, 200, 200),
           (200, 30, 200)]


def miniimagenet_root(root: Path, classes: int = 5, per_class: int = 3, size: int = 84) -> Path:
    """ROOT/{train,val,test}.csv (``filename,label``) and ROOT/images/*.jpg: ``classes``
    classes per split, ``per_class`` solid-colour (plus noise) JPEGs each."""
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for s, split in enumerate(("train", "val", "test")):
        rows = ["filename,label"]
        for c in range(classes):
            wnid = f"n{s}{c:07d}"
            for i in range(per_class):
                name = f"{wnid}{i:08d}.jpg"
                base = np.array(COLOURS[c % len(COLOURS)], dtype=np.int16)
                noise = rng.integers(-20, 21, (size, size, 3))
                pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels, "RGB").save(root / "images" / name)
                rows.append(f"{name},{wnid}")
        (root / f"{split}.csv").write_text("\n".join(rows) + "\n")
    return root
