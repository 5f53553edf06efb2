"""The built site in a real browser: headless Chromium renders the home page (its heading
and every section of the navigation), the API page (``RKMetaLearner``'s signature), and
loads every image the site's pages show (each must decode to a picture of some width)."""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from docs_site import local_refs, missing_tools, target

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(n)), None)
SECTIONS = ("Home", "Getting started", "Concepts", "Guides", "Results", "Speed",
            "API reference", "Changelog")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(missing_tools()), reason=missing_tools() or "-"),
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (the browser "
                       "test renders the built site in headless Chromium)"),
]


def render(page: Path, *extra: str) -> str:
    """The DOM of ``page`` after Chromium loaded it and ran its scripts."""
    done = subprocess.run([CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox",
                           "--allow-file-access-from-files", "--virtual-time-budget=5000",
                           *extra, "--dump-dom", page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def text(dom: str) -> str:
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom)))


def test_the_home_page_renders_with_every_section(site, tmp_path):
    dom = render(site / "index.html")
    assert "<title>rkmeta-rl</title>" in dom
    assert re.search(r"<h1[^>]*>rkmeta-rl", dom)
    tabs = text(" ".join(re.findall(r'<nav class="md-tabs".*?</nav>', dom, flags=re.S)))
    for section in SECTIONS:
        assert section in tabs, section
    shot = tmp_path / "home.png"
    render(site / "index.html", f"--screenshot={shot}", "--window-size=1280,900")
    assert shot.stat().st_size > 10_000


def test_the_api_page_shows_the_learners_signature(site):
    shown = text(render(site / "api" / "index.html"))
    squeezed = "".join(shown.split())  # the signature's tokens are spans apart
    assert ('RKMetaLearner(module:Module,method:str="ralston",*,inner_lr:float|None=None,'
            "step_size:float|None=None" in squeezed), shown[:3000]
    for name in ("Tableau", "get_tableau", "load_run", "check_protocol"):
        assert name in shown


def test_every_image_of_the_site_loads_in_the_browser(site):
    images = sorted({target(page, url).relative_to(site).as_posix()
                     for page in site.rglob("*.html") if page.name != "404.html"
                     for tag, url in local_refs(page) if tag == "img"})
    assert len(images) > 20
    tags = "\n".join(f'<img src="{name}">' for name in images)
    check = site / "image-check.html"  # at the site's root: the images' paths hold
    check.write_text(f"""<!doctype html><body>{tags}<script>
    window.addEventListener("load", () => {{
      for (const img of document.images)
        img.setAttribute("data-width", img.complete ? img.naturalWidth : -1);
    }});</script></body>""")
    try:
        dom = render(check)
    finally:
        check.unlink()  # the site is shared with the other docs tests
    widths = dict(re.findall(r'<img src="([^"]+)" data-width="(-?\d+)"', dom))
    assert set(widths) == set(images), "the page script did not run"
    assert [n for n, w in widths.items() if int(w) <= 0] == []
