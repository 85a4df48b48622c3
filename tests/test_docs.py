"""The documentation: a short README that is the entry, and a site that builds strictly.

The commands printed in both are checked by tests/test_readme_commands.py."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

INCLUDE = re.compile(r'^--8<-- "([^"]+)"$', re.M)


def test_the_readme_is_the_entry_not_the_manual():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines: move the manual into docs/"


def test_every_generated_table_is_shown_on_the_results_page_and_every_include_exists():
    """A regenerated file under docs/results/ shows up without editing a page: the results page
    includes every one of them, and every include names a file that exists."""
    includes = {
        page.relative_to(ROOT).as_posix(): INCLUDE.findall(page.read_text())
        for page in (ROOT / "docs").rglob("*.md")
    }
    generated = {p.relative_to(ROOT).as_posix() for p in (ROOT / "docs/results").glob("*.md")}
    assert generated and generated <= set(includes["docs/results.md"])
    assert "conf/README.md" in includes["docs/configuration.md"]  # one config reference
    for page, paths in includes.items():
        for path in paths:
            assert (ROOT / path).is_file(), f"{page} includes {path}, which does not exist"


def test_the_site_builds_strictly(tmp_path):
    pytest.importorskip("mkdocs", reason="the docs extra: pip install -e '.[docs]'")
    pytest.importorskip("material", reason="the docs extra: pip install -e '.[docs]'")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    site = tmp_path / "site"
    results = (site / "results" / "index.html").read_text()
    included = (ROOT / "docs/results.md").read_text().count('--8<-- "docs/results/')
    assert included >= 4 and results.count("<table>") >= included  # the tables were included
    assert "--8&lt;--" not in results and "--8<--" not in results
    config = (site / "configuration" / "index.html").read_text()
    assert "train.yaml" in config and "hydra/launcher" in config  # conf/README.md was included
    assert not (site / "results" / "paper_efficacy").exists()  # generated fragments: no pages
    shutil.rmtree(site)
