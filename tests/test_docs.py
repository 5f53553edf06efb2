"""The documentation site builds with ``mkdocs build --strict`` (mkdocs.yml, docs/, the
results folders brought in by docs/hooks.py): a broken link or anchor, a missing page, a
snippet that cannot be included or a docstring mkdocstrings cannot read fails the build.
The built HTML is then read back: every relative image and link points at a file."""

from __future__ import annotations

import pytest
from docs_site import broken_refs, missing_tools

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(bool(missing_tools()), reason=missing_tools() or "-")]


def test_the_site_builds_strictly_with_every_section(site):
    for page in ("index.html", "getting-started/index.html", "method/index.html",
                 "guides/own-environment/index.html", "findings/index.html",
                 "results/index.html", "results/nav2d/index.html", "speed/index.html",
                 "api/index.html", "changelog/index.html"):
        assert (site / page).is_file(), page
    api = (site / "api" / "index.html").read_text()
    for name in ("RKMetaLearner", "Tableau", "get_tableau", "MetaRL", "load_run",
                 "check_protocol"):
        assert 'id="rkmeta_rl.' in api and name in api, name


def test_no_relative_image_or_link_of_the_built_site_is_broken(site):
    assert broken_refs(site) == []


def test_the_results_figures_come_from_the_results_folders(site):
    # docs/hooks.py brings results/*/README.md and their figures in; none is copied
    assert (site / "results" / "omniglot" / "figure3.png").is_file()
    assert (site / "results" / "nav2d-h" / "ordering" / "index.html").is_file()
