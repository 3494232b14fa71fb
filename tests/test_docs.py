"""The README stays a ten-minute read, the reference documents are what the code generates, and
every link in the documentation leads somewhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from devtools import reference

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\((?!https?://|#)(?P<target>[^)#\s]+)")


@pytest.mark.parametrize("name", sorted(reference.DOCUMENTS))
def test_generated_reference_is_what_the_code_says(name: str) -> None:
    written = (reference.DOCS / name).read_text()
    assert written == reference.DOCUMENTS[name](), (
        f"docs/{name} is stale: run `python -m devtools.reference` and commit it"
    )


def test_every_configuration_key_is_described() -> None:
    undescribed = [line for line in reference.configuration().splitlines() if line.endswith("|  |")]
    assert not undescribed, "add a Field(description=...) in drkit/config.py for:\n" + "\n".join(
        undescribed
    )


def test_readme_is_a_ten_minute_read() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 300, f"README.md has {len(lines)} lines; move detail into docs/"


def test_the_exit_code_table_exists_once() -> None:
    tables = [
        path.relative_to(ROOT)
        for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
        if re.search(r"^\| code \| meaning \|", path.read_text(), re.M)
    ]
    assert tables == [Path("docs/exit-codes.md")]


def test_every_relative_link_in_the_documentation_resolves() -> None:
    documents = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    documents += sorted((ROOT / "runbooks").glob("*.md"))
    broken = [
        f"{document.relative_to(ROOT)}: {match['target']}"
        for document in documents
        for match in LINK.finditer(document.read_text())
        if not (document.parent / match["target"]).exists()
    ]
    assert not broken, "broken links:\n" + "\n".join(broken)
