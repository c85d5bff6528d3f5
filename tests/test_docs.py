"""The docs site and the front door hold together: every page is reachable, every README link resolves.

`mkdocs build --strict` (in .ci/run) checks links between pages and generates the command reference from
the CLI; these checks are the ones it cannot make.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def nav_pages(entries) -> set[str]:
    """The page paths a mkdocs nav names, at any depth."""
    pages = set()
    for entry in entries:
        values = entry.values() if isinstance(entry, dict) else [entry]
        for value in values:
            pages |= nav_pages(value) if isinstance(value, list) else {value}
    return pages


def test_every_docs_page_is_in_the_nav_or_deliberately_left_out():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    in_nav = nav_pages(config["nav"])
    left_out = set((config.get("not_in_nav") or "").split())
    pages = {path.relative_to(DOCS).as_posix() for path in DOCS.rglob("*.md")}
    assert pages - in_nav - left_out == set(), "add these pages to mkdocs.yml's nav (or to not_in_nav, on purpose)"
    assert in_nav - pages == set(), "mkdocs.yml's nav names pages that do not exist"


def test_readme_links_resolve():
    """README is read on GitHub and PyPI, outside the site: its relative links must point at real files."""
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", (ROOT / "README.md").read_text())
    local = [link for link in links if not re.match(r"[a-z]+://", link)]
    assert "docs/usage.md" in local and "mlruns.example/" in local
    missing = [link for link in local if not (ROOT / link).exists()]
    assert missing == [], missing
