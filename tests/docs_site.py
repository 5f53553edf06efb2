"""Building the documentation site (mkdocs.yml, docs/) for the docs tests, and reading back
the links and images of the built HTML."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parents[1]
MODULES = {"mkdocs": "mkdocs", "material": "mkdocs-material", "mkdocstrings": "mkdocstrings",
           "mkdocstrings_handlers.python": "mkdocstrings[python]"}


def missing_tools() -> str:
    """Why the site cannot be built here ('' when it can)."""
    absent = []
    for module, package in MODULES.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            absent.append(package)
    if not absent:
        return ""
    return (f"{', '.join(absent)} not installed: the site needs the docs extra "
            "(pip install -e '.[docs]')")


def build(site_dir: Path) -> subprocess.CompletedProcess:
    """``mkdocs build --strict`` into ``site_dir``, from the repository root (snippets are
    included relative to it)."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict",
                           "--site-dir", str(site_dir)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = {"img": "src", "a": "href", "link": "href", "script": "src"}.get(tag)
        for name, value in attrs:
            if name == wanted and value:
                self.refs.append((tag, value))


def local_refs(page: Path) -> list[tuple[str, str]]:
    """(tag, url) of a page's images, links, stylesheets and scripts that point into the
    site: relative URLs, not only an anchor."""
    parser = _Refs()
    parser.feed(page.read_text(encoding="utf-8"))
    out = []
    for tag, url in parser.refs:
        parts = urlsplit(url)
        if parts.scheme or parts.netloc or not parts.path:
            continue
        out.append((tag, url))
    return out


def target(page: Path, url: str) -> Path:
    """The file a relative URL of ``page`` loads (a folder's index.html)."""
    path = (page.parent / unquote(urlsplit(url).path)).resolve()
    return path / "index.html" if url.split("#")[0].split("?")[0].endswith("/") \
        or path.is_dir() else path


def broken_refs(site: Path) -> list[str]:
    """Every relative image, link, stylesheet or script of the built site whose file is
    missing, as 'page: url'. (404.html is served from any folder, so MkDocs writes its
    links from the site's root: it is left out.)"""
    broken = []
    for page in sorted(site.rglob("*.html")):
        if page.name == "404.html":
            continue
        for _, url in local_refs(page):
            if not target(page, url).is_file():
                broken.append(f"{page.relative_to(site)}: {url}")
    return broken
