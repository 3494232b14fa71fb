"""The demo's closing report: what was backed up, destroyed, rebuilt and proven, in Markdown.

Usage: python -m devtools.demo_report DEMO_OUT_DIR > report.md (reads the demo's JSON documents).

The text is a Jinja2 template (devtools/templates/); HTML templates there are autoescaped.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jinja2

TEMPLATES = Path(__file__).resolve().parent / "templates"
DOCUMENTS = ("backup", "show", "restore", "drill")


MISSING = "n/a"  # what a value the demo's documents do not hold renders as


def _missing(value: object) -> bool:
    return value is None or isinstance(value, jinja2.Undefined)


def _finalize(value: object) -> object:
    return MISSING if _missing(value) else value


def _cell(value: object) -> str:
    """A value inside a Markdown table cell: one line, its pipes escaped."""
    if _missing(value):
        return MISSING
    return " ".join(str(value).split()).replace("|", "\\|")


def _short(value: object) -> str:
    """A snapshot id as the demo shows it: its first 8 characters."""
    return MISSING if _missing(value) or not value else str(value)[:8]


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(["html", "htm", "xml"], default_for_string=False),
        undefined=jinja2.ChainableUndefined,  # a document the demo did not write: n/a
        finalize=_finalize,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["cell"] = _cell
    env.filters["short"] = _short
    return env


def _load(directory: Path, name: str) -> dict:
    path = directory / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def render(directory: Path) -> str:
    """Return the Markdown report for a demo run's output directory."""
    documents = {name: _load(directory, name) for name in DOCUMENTS}
    return environment().get_template("demo_report.md.j2").render(**documents)


if __name__ == "__main__":
    sys.stdout.write(render(Path(sys.argv[1])))
