"""The documentation outside the site build: the README's links, and the API table's coverage.

`make docs` (run by `make test` before the suite) builds docs/ with --strict, which checks
every link and anchor inside the site; these tests cover what that build cannot see.
"""

from __future__ import annotations

import re
from pathlib import Path

from lampstand.server.app import create_app
from lampstand.server.config import Settings

REPO = Path(__file__).resolve().parent.parent
LINK = re.compile(r"\]\(([^)#\s]+)(#[^)\s]*)?\)")


def test_readme_stays_an_overview_whose_links_resolve() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 250, "the README is an overview; details go to a page under docs/"
    local = [target for target, _ in LINK.findall(readme) if "://" not in target]
    assert local, "the README links into docs/"
    assert [target for target in local if not (REPO / target).exists()] == []


def test_api_table_names_every_route_of_the_openapi_document() -> None:
    page = (REPO / "docs" / "api.md").read_text(encoding="utf-8")
    table = page.split("## In short", 1)[1].split("\n## ", 1)[0]
    paths = create_app(Settings(models=[])).openapi()["paths"]
    assert [path for path in paths if f" {path}`" not in table] == []
