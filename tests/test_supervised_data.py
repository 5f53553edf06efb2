"""Few-shot sampling, Omniglot and MiniImagenet loaders, on tiny generated fixtures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from supervised_fixtures import png, write_dir, write_zip

from rkmeta_rl.supervised.fewshot import ClassDataset, sample_tasks, seeded_split
from rkmeta_rl.supervised.miniimagenet import check_disjoint, load_miniimagenet
from rkmeta_rl.supervised.omniglot import load_omniglot, load_one_shot_runs, omniglot_split

# --------------------------------------------------------------------------- fixtures


def _drawing(char: int, draw: int) -> Image.Image:
    """A 105x105 1-bit drawing, black strokes on white, unique per (char, draw)."""
    im = Image.new("1", (105, 105), 1)
    x, y = 8 + 12 * (char % 7), 8 + 14 * draw
    ImageDraw.Draw(im).rectangle([x, y, x + 14, y + 14 + 3 * (char // 7)], fill=0)
    return im




def _alphabets(alphabets: dict[str, int], chars: int = 3, draws: int = 4) -> dict[str, bytes]:
    """{relative path: png bytes} for Alphabet/characterNN/XXXX_DD.png; values = char offset."""
    return {
        f"{alpha}/character{c + 1:02d}/{offset + c:04d}_{d + 1:02d}.png": png(
            _drawing(offset + c, d)
        )
        for alpha, offset in alphabets.items()
        for c in range(chars)
        for d in range(draws)
    }






def _check_omniglot(data: ClassDataset, names: list[str], draws: int = 4) -> None:
    assert data.names == names == sorted(names)
    assert not data.rotations
    for imgs in data.images:
        assert imgs.shape == (draws, 1, 28, 28) and imgs.dtype == torch.uint8
        assert (imgs[:, 0, 0, 0] == 0).all() and imgs.max() > 200  # strokes bright
    assert len({bytes(im.numpy()) for imgs in data.images for im in imgs}) == draws * len(names)


TWO = {"Greek": 0, "Latin": 3}
KEYS = [f"{a}/character{c:02d}" for a in ("Greek", "Latin") for c in (1, 2, 3)]


# --------------------------------------------------------------------------- omniglot


def test_omniglot_plain_folder_and_exact_pixels(tmp_path):
    root = write_dir(tmp_path / "alpha", _alphabets(TWO))
    _check_omniglot(load_omniglot(root), KEYS)
    full = load_omniglot(str(root), image_size=105)
    expected = 255 - np.asarray(_drawing(0, 1).convert("L"))
    assert np.array_equal(full.images[0][1, 0].numpy(), expected)


def test_omniglot_background_evaluation_folders_and_zips(tmp_path):
    write_dir(tmp_path / "a", _alphabets({"Greek": 0}), "images_background")
    write_dir(tmp_path / "a", _alphabets({"Latin": 3}), "images_evaluation")
    _check_omniglot(load_omniglot(tmp_path / "a"), KEYS)
    write_zip(tmp_path / "b" / "images_background.zip", _alphabets(TWO), "images_background/")
    write_zip(tmp_path / "b" / "all_runs.zip", {"run01/training/class01.png": b"x"})
    _check_omniglot(load_omniglot(tmp_path / "b"), KEYS)
    flat = write_zip(tmp_path / "flat.zip", _alphabets(TWO))
    _check_omniglot(load_omniglot(flat), KEYS)


def test_omniglot_small_subsets_are_deduplicated(tmp_path):
    z1 = write_zip(tmp_path / "s1.zip", _alphabets(TWO), "images_background_small1/")
    other = {"Latin": 10, "Tagalog": 13}
    z2 = write_zip(tmp_path / "s2.zip", _alphabets(other), "images_background_small2/")
    data = load_omniglot([z1, z2])
    tagalog = [f"Tagalog/character{c:02d}" for c in (1, 2, 3)]
    _check_omniglot(data, KEYS + tagalog)
    first = load_omniglot(z1)  # the first path wins for the shared Latin characters
    assert torch.equal(data.images[3], first.images[3])


def test_omniglot_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist.*nowhere"):
        load_omniglot(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="expected alphabet folders.*empty"):
        load_omniglot(tmp_path / "empty")
    files = _alphabets({"Greek": 0}, chars=1, draws=2)
    files["Greek/character01/0000_03.png"] = b"not a png"  # named like a drawing
    with pytest.raises(ValueError, match="cannot read image.*0000_03.png"):
        load_omniglot(write_dir(tmp_path / "bad", files))


def _runs(perms: list[list[int]]) -> dict[str, bytes]:
    """all_runs-style files: test item i is a copy of training class perms[r][i]."""
    files = {}
    for r, perm in enumerate(perms, 1):
        run, lines = f"run{r:02d}", []
        for k in range(len(perm)):
            files[f"{run}/training/class{k + 1:02d}.png"] = png(_drawing(k + 3 * r, 0))
        for i, k in enumerate(perm):
            files[f"{run}/test/item{i + 1:02d}.png"] = png(_drawing(k + 3 * r, 0))
            lines.append(f"{run}/test/item{i + 1:02d}.png {run}/training/class{k + 1:02d}.png")
        files[f"{run}/class_labels.txt"] = ("\n".join(lines) + "\n").encode()
    return files


@pytest.mark.parametrize("as_zip", [False, True], ids=["folder", "zip"])
def test_one_shot_runs(tmp_path, as_zip):
    perms = [[2, 0, 1], [1, 2, 0]]
    files = _runs(perms)
    path = write_zip(tmp_path / "all_runs.zip", files) if as_zip else write_dir(tmp_path, files)
    runs = load_one_shot_runs(path)
    assert len(runs) == 2
    for run, perm in zip(runs, perms, strict=True):
        assert run.train.shape == run.test.shape == (3, 1, 28, 28)
        assert run.train.dtype == torch.float32 and 0 <= run.train.min() < run.train.max() <= 1
        assert run.labels.tolist() == perm and run.labels.dtype == torch.int64
        for i, k in enumerate(perm):
            assert torch.equal(run.test[i], run.train[k])
    assert runs[1].train_names[0] == "run02/training/class01.png"


def test_one_shot_runs_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist.*all_runs"):
        load_one_shot_runs(tmp_path / "all_runs")
    files = {k: v for k, v in _runs([[0, 1]]).items() if not k.endswith(".txt")}
    with pytest.raises(ValueError, match="run01/class_labels.txt"):
        load_one_shot_runs(write_dir(tmp_path / "r", files))


def test_omniglot_skips_folders_that_are_not_characters(tmp_path, capsys):
    """The one-shot runs extracted inside a data folder must not become 40 fake classes."""
    files = {**_alphabets({"Greek": 0}, chars=2, draws=2), **_runs([[1, 0], [0, 1]])}
    files["Greek/character03/0002_01.png"] = png(_drawing(2, 0))
    files["Greek/character03/0005_02.png"] = png(_drawing(2, 1))  # another character's id
    files["Greek/character04/0003_01.png"] = png(_drawing(3, 0))
    files["Greek/character04/0003_02.png"] = png(_drawing(3, 1).resize((50, 50)))
    with pytest.warns(UserWarning) as warned:
        data = load_omniglot(write_dir(tmp_path / "data", files))
    assert data.names == ["Greek/character01", "Greek/character02"]
    (message,) = [str(w.message) for w in warned]
    assert "skipped 6 folder(s)" in message and "\n" not in message
    assert "character03 (drawings of several characters)" in message
    only_runs = write_dir(tmp_path / "runs", _runs([[1, 0]]))
    with pytest.raises(ValueError, match="expected alphabet folders"):
        load_omniglot(only_runs)


# --------------------------------------------------------------------------- miniimagenet

COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]


def _mini(root: Path, sizes: dict[str, int] | None = None) -> Path:
    """3 splits x 3 classes x 4 solid-colour JPEGs; the test split is 40x40 unless told."""
    sizes = sizes or {"train": 84, "val": 84, "test": 40}
    (root / "images").mkdir(parents=True)
    for s, split in enumerate(("train", "val", "test")):
        rows = ["filename,label"]
        for c in (2, 0, 1):  # csv not sorted by label
            wnid = f"n{s}{c:07d}"
            for i in range(4):
                name = f"{wnid}{i:08d}.jpg"
                Image.new("RGB", (sizes[split],) * 2, COLOURS[c]).save(root / "images" / name)
                rows.append(f"{name},{wnid}")
        (root / f"{split}.csv").write_text("\n".join(rows) + "\n")
    return root


def test_miniimagenet_loads_and_resizes(tmp_path):
    root = _mini(tmp_path / "mini")
    for s, split in enumerate(("train", "val", "test")):
        data = load_miniimagenet(root, split)
        assert data.names == [f"n{s}{c:07d}" for c in range(3)]
        assert data.image_shape() == (3, 84, 84)
        for c, imgs in enumerate(data.images):
            assert imgs.shape == (4, 3, 84, 84) and imgs.dtype == torch.uint8
            mean = imgs.float().mean(dim=(0, 2, 3))
            assert torch.allclose(mean, torch.tensor(COLOURS[c], dtype=torch.float32), atol=4)
    small = load_miniimagenet(str(root), "val", image_size=32, max_per_class=2)
    assert [x.shape for x in small.images] == [(2, 3, 32, 32)] * 3


def test_miniimagenet_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist.*nope"):
        load_miniimagenet(tmp_path / "nope", "train")
    root = _mini(tmp_path / "mini")
    with pytest.raises(ValueError, match="unknown split 'dev'.*train, val, test"):
        load_miniimagenet(root, "dev")
    (root / "val.csv").write_text("file,class\na.jpg,n1\n")
    with pytest.raises(ValueError, match="val.csv: expected header filename,label"):
        load_miniimagenet(root, "val")
    (root / "test.csv").unlink()
    with pytest.raises(ValueError, match="test.csv with header filename,label"):
        load_miniimagenet(root, "test")
    (root / "images" / "n0000000100000003.jpg").unlink()
    with pytest.raises(ValueError, match="1 images.*n0000000100000003.jpg"):
        load_miniimagenet(root, "train")
    for f in (root / "images").iterdir():
        f.unlink()
    (root / "images").rmdir()
    with pytest.raises(ValueError, match="expected image folder .*images"):
        load_miniimagenet(root, "train")


# --------------------------------------------------------------------------- few-shot


def _tagged(classes: int = 6, per_class: int = 5) -> ClassDataset:
    """Class c image i is constant 1 + 8c + i, so every image is identifiable."""
    ids = 1 + 8 * torch.arange(classes).view(-1, 1) + torch.arange(per_class)  # (classes, n)
    images = list(ids.view(classes, per_class, 1, 1, 1).expand(-1, -1, 1, 4, 4).to(torch.uint8))
    return ClassDataset(images=images, names=[f"A/character{c:02d}" for c in range(classes)])


def test_sample_tasks_shapes_labels_and_disjoint_images():
    data = _tagged()
    batch = sample_tasks(data, 3, ways=4, shots=2, queries=3, generator=torch.Generator())
    assert batch.xs.shape == (3, 8, 1, 4, 4) and batch.xq.shape == (3, 12, 1, 4, 4)
    assert batch.ys.shape == (3, 8) and batch.yq.shape == (3, 12)
    assert batch.xs.dtype == torch.float32 and batch.ys.dtype == torch.int64
    for t in range(3):
        assert sorted(batch.ys[t].tolist()) == sorted(list(range(4)) * 2)
        assert sorted(batch.yq[t].tolist()) == sorted(list(range(4)) * 3)
        x = torch.cat([batch.xs[t], batch.xq[t]])  # (20, 1, 4, 4)
        y = torch.cat([batch.ys[t], batch.yq[t]])
        ids = (x[:, 0, 0, 0] * 255).round().long() - 1
        assert (x == x[:, :, :1, :1]).all()  # constant images came through unchanged
        assert len(set(ids.tolist())) == 20  # no image repeats within a task
        label_class = {}
        for label, cls in zip(y.tolist(), (ids // 8).tolist(), strict=True):
            assert label_class.setdefault(label, cls) == cls  # one class per label
        assert len(set(label_class.values())) == 4


def test_sample_tasks_is_seeded():
    data = _tagged()

    def batch(seed: int):
        return sample_tasks(data, 4, 3, 1, 2, torch.Generator().manual_seed(seed))

    a, b, c = batch(1), batch(1), batch(2)
    assert torch.equal(a.xs, b.xs) and torch.equal(a.xq, b.xq) and torch.equal(a.ys, b.ys)
    assert not (torch.equal(a.xs, c.xs) and torch.equal(a.xq, c.xq))


def _rotated(chars: int, draws: int = 3) -> tuple[ClassDataset, dict[bytes, tuple[int, int]]]:
    """Random 5x5 drawings with rotations, and {bytes of a rotated drawing: (character,
    quarter turns)}: every drawing and every rotation of it is distinct."""
    base = torch.randint(0, 256, (chars, draws, 1, 5, 5), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(0))
    lookup = {torch.rot90(base[c, i], k, dims=(-2, -1)).numpy().tobytes(): (c, k)
              for c in range(chars) for i in range(draws) for k in range(4)}
    assert len(lookup) == chars * draws * 4
    data = ClassDataset(images=list(base), names=[f"A/c{c:02d}" for c in range(chars)],
                        rotations=True)
    return data, lookup


def _classes(batch, lookup: dict[bytes, tuple[int, int]]) -> list[dict[int, set]]:
    """Per task: label -> the set of (character, quarter turns) of its support and query."""
    x = (torch.cat([batch.xs, batch.xq], 1) * 255).round().to(torch.uint8)  # (T, n, 1, 5, 5)
    y = torch.cat([batch.ys, batch.yq], 1)
    tasks = []
    for xt, yt in zip(x, y.tolist(), strict=True):
        seen: dict[int, set] = {}
        for img, label in zip(xt, yt, strict=True):
            seen.setdefault(label, set()).add(lookup[img.numpy().tobytes()])
        tasks.append(seen)
    return tasks


def test_a_task_never_holds_two_rotations_of_one_character():
    """25 characters, 200 tasks of 20 ways: the old sampler (expanded classes drawn by
    randperm) put two rotations of one character in nearly every such task."""
    data, lookup = _rotated(25, draws=5)
    batch = sample_tasks(data, 200, ways=20, shots=2, queries=3,
                         generator=torch.Generator().manual_seed(0))
    turns = []
    for task in _classes(batch, lookup):
        assert all(len(pairs) == 1 for pairs in task.values())  # one rotation per class
        chars = [c for (c, _k), in task.values()]
        assert len(chars) == 20 and len(set(chars)) == 20  # 20 distinct characters
        turns += [k for (_c, k), in task.values()]
    counts = np.bincount(turns, minlength=4)
    assert counts.sum() == 4000 and (np.abs(counts / 4000 - 0.25) < 0.03).all(), counts
    assert data.num_classes == 25  # rotations add no classes


def test_rotated_tasks_are_seeded():
    data, lookup = _rotated(6)

    def tasks(seed: int) -> list[dict[int, set]]:
        return _classes(sample_tasks(data, 5, 4, 1, 2, torch.Generator().manual_seed(seed)),
                        lookup)

    assert tasks(1) == tasks(1)
    assert tasks(1) != tasks(2)


def test_classes_without_rotations_are_drawn_as_before():
    """No rotation is drawn for a dataset without rotations (MiniImagenet): the generator's
    draws are one permutation of the classes, then one of each class's images."""
    data = _tagged()
    batch = sample_tasks(data, 2, 3, 1, 1, torch.Generator().manual_seed(4))
    g, expected = torch.Generator().manual_seed(4), []
    for _ in range(2):
        for c in torch.randperm(6, generator=g)[:3].tolist():
            expected.append(1 + 8 * c + torch.randperm(5, generator=g)[:2])
    ids = (torch.stack([batch.xs, batch.xq], 2)[..., 0, 0, 0] * 255).round().long()
    assert torch.equal(ids.reshape(-1, 2), torch.stack(expected))


def test_sample_tasks_errors():
    data, gen = _tagged(), torch.Generator()
    with pytest.raises(ValueError, match="ways=7 exceeds the 6 classes"):
        sample_tasks(data, 1, 7, 1, 1, gen)
    with pytest.raises(ValueError, match="'A/character00' has 5 images.*6 are needed"):
        sample_tasks(data, 1, 2, 3, 3, gen)
    with pytest.raises(ValueError, match="shots must be >= 1, got 0"):
        sample_tasks(data, 1, 2, 0, 1, gen)
    with pytest.raises(ValueError, match="ways=8 exceeds the 2 classes.*rotations are not new"):
        sample_tasks(_rotated(2)[0], 1, 8, 1, 1, gen)


# --------------------------------------------------------------------------- splits


def test_seeded_split():
    items = [f"x{i:02d}" for i in range(50)]
    a, b = seeded_split(items[::-1], [30, 15], seed=0)
    assert len(a) == 30 and len(b) == 15 and not set(a) & set(b)
    assert seeded_split(items, [30, 15], seed=0) == [a, b]  # input order does not matter
    assert seeded_split(items, [30, 15], seed=1) != [a, b]
    with pytest.raises(ValueError, match="sum to more than the 50 items"):
        seeded_split(items, [30, 21], seed=0)


def test_omniglot_split_keeps_characters_apart_under_rotation():
    data = _tagged(classes=30, per_class=2)
    data.rotations = True
    train, test = omniglot_split(data, num_train=20, seed=3)
    assert len(train.names) == 20 and len(test.names) == 10
    assert sorted(train.names + test.names) == data.names
    assert train.rotations and test.rotations and train.num_classes == 20
    assert train.names == sorted(train.names)
    assert omniglot_split(data, 20, seed=3)[0].names == train.names
    assert omniglot_split(data, 20, seed=4)[0].names != train.names
    assert len(omniglot_split(data, None, seed=0)[0].names) == round(30 * 1200 / 1623)
    batch = sample_tasks(train, 5, 20, 1, 1, torch.Generator())
    ids = ((torch.cat([batch.xs, batch.xq], 1) * 255).round().long() - 1) // 8
    test_ids = {int(n[-2:]) for n in test.names}
    assert not set(ids.flatten().tolist()) & test_ids  # rotated or not, no test character


def test_miniimagenet_is_read_strictly(tmp_path):
    root = _mini(tmp_path / "mini")
    rows = (root / "val.csv").read_text().splitlines()
    (root / "val.csv").write_text("\n".join([*rows, rows[1]]) + "\n")
    with pytest.raises(ValueError, match=r"val.csv row 14: .* listed twice \(first in row 2\)"):
        load_miniimagenet(root, "val")
    (root / "val.csv").write_text("filename,label\n../secret.jpg,n1\n")
    with pytest.raises(ValueError, match=r"'../secret.jpg' is not a plain file name"):
        load_miniimagenet(root, "val")
    train = load_miniimagenet(_mini(tmp_path / "m2"), "train")
    with pytest.raises(ValueError, match="n00000001 are in both the train and the validation"):
        check_disjoint({"train": train, "validation": train.select([1]), "test": train})
    check_disjoint({"train": train.select([0]), "validation": train.select([1]),
                    "test": train.select([2])})  # disjoint: accepted
