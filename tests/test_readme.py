"""README's self-contained Python snippets run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
IN_MEMORY = [b for b in BLOCKS if "Trainer(cfg)" in b]


@pytest.mark.parametrize("block", IN_MEMORY)
def test_training_in_memory_runs_as_written(block, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(block, str(README), "exec"), namespace)  # noqa: S102
    assert [r["iter"] for r in namespace["records"]] == [0, 1]
    printed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in printed] == ["0", "1"]
    assert list(tmp_path.iterdir()) == []  # nothing written
