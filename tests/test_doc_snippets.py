"""Every fenced code block of README.md and docs/**/*.md is checked, or says why it is not.

* ``python`` blocks run as written, in a fresh folder. A block that opens a run directory
  (``runs/nav2d-ralston-s0``, ``runs/sinusoid-ralston-s0``) finds a tiny trained one there.
  A block that is only a ``--8<--`` include shows a file of the repository, which its own tests run.
* ``bash`` blocks: every ``rkmeta-rl`` command and every ``python scripts/NAME.py`` command
  is parsed by the real argparse parser (its flags and choices must be valid); the quick
  ones (``QUICK``) also run.
* A block preceded by ``<!-- needs: KIND ... -->`` (KIND one of ``NEEDS``: data, a GPU,
  hours, an install, a cluster) is not run, and may hold other commands (pip, ray, mkdocs);
  its ``rkmeta-rl`` and script commands are still parsed.
* Any other block (the method's formulas) must hold no command.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import runpy
import shlex
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
NEEDS = ("data", "gpu", "hours", "install", "cluster")
QUICK = {"rkmeta-rl methods"}
COMMANDS = ("rkmeta-rl", "python", "pip", "ray", "tensorboard", "mkdocs", "pytest")


@dataclass(frozen=True)
class Block:
    page: str  # relative to the repository root
    line: int  # the opening fence's line (1-based)
    lang: str
    code: str
    needs: str  # the marker's text, '' when unmarked

    def __str__(self) -> str:
        return f"{self.page}:{self.line}"


def blocks(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").split("\n")
    found, i = [], 0
    while i < len(lines):
        m = re.match(r"^\s*```(\w*)\s*$", lines[i])  # also inside a list item
        if m:
            j = i + 1
            while not lines[j].lstrip().startswith("```"):
                j += 1
            before = next((t.strip() for t in reversed(lines[:i]) if t.strip()), "")
            mark = re.fullmatch(r"<!-- needs: (.*) -->", before)
            found.append(Block(path.relative_to(ROOT).as_posix(), i + 1, m.group(1),
                               textwrap.dedent("\n".join(lines[i + 1:j])) + "\n",
                               mark.group(1) if mark else ""))
            i = j
        i += 1
    return found


ALL = [b for page in PAGES for b in blocks(page)]
PYTHON = [b for b in ALL if b.lang == "python"]
SHELL = [b for b in ALL if b.lang in ("bash", "sh", "console")]


def commands(code: str) -> list[list[str]]:
    """A shell block's commands as argument lists: continuations joined, comments and
    leading VAR=value assignments dropped, ``&&`` splitting."""
    out = []
    for line in code.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        while words:
            cut = words.index("&&") if "&&" in words else len(words)
            cmd, words = words[:cut], words[cut + 1:]
            while cmd and re.fullmatch(r"[A-Z_]+=.*", cmd[0]):
                cmd = cmd[1:]
            if cmd:
                out.append(cmd)
    return out


class Parsed(Exception):
    """Raised by the patched ``parse_args`` once a command line parsed."""


def parse_only(monkeypatch, call) -> argparse.Namespace:
    """Run ``call`` until its argparse parser has parsed the command line, and no further;
    a bad flag or choice fails (argparse's SystemExit). Returns the parsed arguments."""
    original = argparse.ArgumentParser.parse_args
    parsed = []

    def parse_args(self, *args, **kwargs):
        parsed.append(original(self, *args, **kwargs))
        raise Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_args)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            call()
    except Parsed:
        return parsed[0]
    except SystemExit as e:
        pytest.fail(f"the parser refused it ({e.code}): {err.getvalue().strip()}")
    finally:
        monkeypatch.undo()
    pytest.fail("the command ended without parsing its arguments")


def resolve_config(args: argparse.Namespace) -> None:
    """A training command's settings resolved as the command resolves them (the method,
    the choices, the step sizes), for the built-in families and where no data folder is
    named (resolving looks for it); nothing is written."""
    from rkmeta_rl.rl import cli as rl_cli
    from rkmeta_rl.supervised import cli as supervised_cli

    if args.command == "supervised" and not (getattr(args, "resume", None)
                                          or getattr(args, "data", None)):
        supervised_cli.config_from_args(args)
    elif (args.command in ("train", "train-oracle") and not args.resume
          and not getattr(args, "tableau", None) and not re.search(r"[:/]", args.env or "")):
        rl_cli.config_from_args(args)


def check_command(cmd: list[str], monkeypatch) -> str:
    """Parse (or, for QUICK ones, run) one command; what was done, or '' for a command
    that is neither rkmeta-rl nor a script (it needs a marker)."""
    from rkmeta_rl import cli

    if cmd[0] == "rkmeta-rl":
        if " ".join(cmd) in QUICK:
            assert cli.main(cmd[1:]) == 0
            return "run"
        args = parse_only(monkeypatch, lambda: cli.main(cmd[1:]))
        resolve_config(args)
        return "parsed"
    if cmd[0] == "python" and len(cmd) > 1 and cmd[1].startswith("scripts/"):
        script = ROOT / cmd[1]
        assert script.is_file(), cmd[1]
        monkeypatch.setattr(sys, "argv", [str(script), *cmd[2:]])
        parse_only(monkeypatch, lambda: runpy.run_path(str(script), run_name="__main__"))
        return "parsed"
    return ""


@pytest.mark.parametrize("block", SHELL, ids=str)
def test_every_command_parses_or_is_marked(block, monkeypatch, capsys):
    unchecked = [" ".join(c) for c in commands(block.code)
                 if not check_command(c, monkeypatch)]
    assert not unchecked or block.needs, (
        f"{block}: {unchecked} can be neither run nor parsed: mark the block "
        f"'<!-- needs: KIND -->' (KIND one of {NEEDS})")


@pytest.mark.parametrize("block", [b for b in ALL if b.needs], ids=str)
def test_markers_name_a_known_need(block):
    kinds = re.split(r"[,\s]+", block.needs.split("(")[0].strip())
    assert kinds and set(kinds) <= set(NEEDS), f"{block}: unknown need {block.needs!r}"


def test_every_block_is_python_shell_or_holds_no_command():
    for block in ALL:
        if block in PYTHON or block in SHELL:
            continue
        first = {line.split()[0] for line in block.code.splitlines() if line.split()}
        assert not first & set(COMMANDS), f"{block}: commands in a {block.lang!r} block"


@pytest.fixture
def run_dirs(tmp_path, monkeypatch):
    """A fresh folder as the working directory, with tiny trained runs where the blocks
    expect them (made on first use)."""
    monkeypatch.chdir(tmp_path)

    def make(code: str) -> None:
        if "runs/nav2d-ralston-s0" in code:
            from rkmeta_rl.rl.config import TrainConfig, resolve
            from rkmeta_rl.rl.trainer import prepare_run_dir
            cfg = resolve(TrainConfig(env="nav2d", method="ralston", meta_iters=1,
                                      meta_batch_size=2, fast_batch_size=2, hidden=[8, 8],
                                      num_threads=1))
            prepare_run_dir(cfg, tmp_path / "runs" / "nav2d-ralston-s0").run(progress=False)
        if "runs/sinusoid-ralston-s0" in code:
            from supervised_runs import sinusoid, train
            train(sinusoid(meta_iters=2), tmp_path / "runs" / "sinusoid-ralston-s0")

    return make


@pytest.mark.parametrize("block", PYTHON, ids=str)
def test_python_blocks_run_as_written(block, run_dirs, capsys):
    code = block.code
    if code.strip().startswith("--8<--"):
        for name in re.findall(r'--8<-- "([^"]+)"', code):
            assert (ROOT / name).is_file(), f"{block}: {name} is missing"
        return  # a file of the repository, shown whole; tests/test_examples.py runs it
    assert not block.needs, f"{block}: a marked python block (run it instead)"
    run_dirs(code)
    exec(compile(code, str(block), "exec"), {"__name__": "__doc_snippet__"})  # noqa: S102


def test_the_in_memory_training_snippet_writes_nothing(tmp_path, monkeypatch, capsys):
    (block,) = [b for b in PYTHON if "Trainer(cfg)" in b.code]
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(block.code, str(block), "exec"), namespace)  # noqa: S102
    assert [r["iter"] for r in namespace["records"]] == [0, 1]
    printed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in printed] == ["0", "1"]
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_the_in_memory_metarl_snippet_learns_on_and_writes_nothing(tmp_path, monkeypatch,
                                                                  capsys):
    (block,) = [b for b in PYTHON if "MetaRL(" in b.code and "nothing is written" in b.code]
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(block.code, str(block), "exec"), namespace)  # noqa: S102
    assert [r["iter"] for r in namespace["records"]] == [0, 1]
    assert [r["iter"] for r in namespace["agent"].records] == [0, 1, 2]
    printed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in printed[:2]] == ["0", "1"]
    assert printed[2].startswith("after 0, 1 steps:")
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_the_readmes_links_point_at_files_of_the_repository():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)\s#]+)(?:#[^)]*)?\)", text)
    missing = [u for u in links if "://" not in u and not (ROOT / u).exists()]
    assert links and missing == []
