"""MkDocs hooks: the study folders ``results/*/`` become the site's Results pages.

At build time every Markdown note and figure under ``results/`` (the run directories in
``runs/`` and ``nav2d-runs/`` excepted) is added to the site at its repository path, so
``results/nav2d/README.md`` is the page ``results/nav2d/`` and its figures load from beside
it; nothing is copied into ``docs/``. Snippets (``--8<--``) are included from the
repository root, whichever folder mkdocs runs in.

Links are written for GitHub, relative to the file in the repository. Two rewrites make
them hold in the site as well:

* a page in ``docs/`` reaches the results with one ``../`` more than the site needs
  (``../results/nav2d/README.md`` from ``docs/findings.md``): that ``../`` is dropped;
* a link to a repository file that is not in the site (a run directory, a script) becomes
  the file's path in code, so the site shows where it is. A link to a file that does not
  exist is left alone, and ``mkdocs build --strict`` fails on it.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
KINDS = {".md", ".png", ".gif", ".jpg", ".svg"}
SKIP = {"runs", "nav2d-runs"}  # run directories: data, not pages
LINK = re.compile(r"(!?\[[^\]]*\])\(([^)\s]+)\)")


def study_files() -> list[str]:
    """The repository paths (POSIX) of the results' notes and figures."""
    found = []
    for path in sorted(RESULTS.rglob("*")):
        rel = path.relative_to(ROOT)
        if path.is_file() and path.suffix in KINDS and not SKIP & set(rel.parts):
            found.append(rel.as_posix())
    return found


def on_config(config):
    # snippets (--8<-- "CHANGELOG.md") are read from the repository root, wherever mkdocs runs
    config["mdx_configs"].setdefault("pymdownx.snippets", {})["base_path"] = [str(ROOT)]
    return config


def on_files(files: Files, config) -> Files:
    for rel in study_files():
        files.append(File.generated(config, rel, abs_src_path=str(ROOT / rel)))
    return files


def repo_dir(src_uri: str) -> str:
    """The folder, relative to the repository root, that holds the page's source."""
    where = src_uri if src_uri.startswith("results/") else f"docs/{src_uri}"
    return posixpath.dirname(where)


def site_target(target: str, src_uri: str, files: Files) -> str | None:
    """``target`` as the site needs it, or None to show it as a path instead."""
    path, _, anchor = target.partition("#")
    if not path or "://" in path or path.startswith(("/", "mailto:")):
        return target
    repo = posixpath.normpath(posixpath.join(repo_dir(src_uri), path))
    site = repo[len("docs/"):] if repo.startswith("docs/") else repo
    if files.get_file_from_path(site) is None:
        return None if (ROOT / repo).exists() else target
    rel = posixpath.relpath(site, posixpath.dirname(src_uri) or ".")
    return rel + (f"#{anchor}" if anchor else "")


def on_page_markdown(markdown: str, page, config, files: Files) -> str:
    src = page.file.src_uri

    def fix(match: re.Match) -> str:
        text, target = match.groups()
        new = site_target(target, src, files)
        if new is not None:
            return f"{text}({new})"
        path = posixpath.normpath(posixpath.join(repo_dir(src), target.partition("#")[0]))
        label = text[1:-1]
        return f"{label} (`{path}`)" if label.strip("`") != path else f"`{path}`"

    return LINK.sub(fix, markdown)
