"""The demo's closing report (devtools/demo_report.py): a Jinja2 template over the demo's JSON."""

from __future__ import annotations

import json
from pathlib import Path

from devtools import demo_report


def _write(directory: Path, name: str, document: dict) -> None:
    (directory / f"{name}.json").write_text(json.dumps(document))


def test_report_renders_every_document_and_escapes_table_cells(tmp_path: Path):
    _write(
        tmp_path, "backup", {"snapshot_id": "abcdef1234567890", "file_count": 12, "bytes_added": 9}
    )
    _write(
        tmp_path,
        "show",
        {
            "signer": "SHA256:abc",
            "host_keys": [{"type": "ed25519", "fingerprint": "SHA256:k", "path": "/etc/ssh/k"}],
            "categories": {"logs": 2, "config": 1},
        },
    )
    _write(
        tmp_path,
        "restore",
        {
            "ok": True,
            "snapshot_id": "abcdef1234567890",
            "trust": "key",
            "duration_seconds": 3.5,
            "checks": [{"name": "sshd -t", "status": "pass", "detail": "a | b\nsecond line"}],
        },
    )
    text = demo_report.render(tmp_path)
    assert "**Result: REBUILT AND PROVEN**" in text
    assert "| backup | snapshot `abcdef12`, 12 files, 9 bytes added |" in text
    assert "| sshd -t | pass | a \\| b second line |" in text
    assert text.index("- config: 1") < text.index("- logs: 2")
    assert "## Drill" not in text
    assert text.endswith("- logs: 2\n")


def test_report_of_a_failed_run_names_the_errors_and_marks_what_is_missing(tmp_path: Path):
    failure = {"ok": False, "error": {"code": 4, "kind": "storage", "message": "S3 down"}}
    _write(tmp_path, "restore", failure)
    _write(tmp_path, "drill", failure)
    text = demo_report.render(tmp_path)
    assert "**Result: FAILED**" in text
    assert "Restore error: `S3 down`" in text
    assert "Drill error: `S3 down`" in text
    assert "| backup | snapshot `n/a`, n/a files, n/a bytes added |" in text
    assert "None" not in text


def test_html_templates_are_autoescaped_and_markdown_ones_are_not():
    env = demo_report.environment()
    assert env.autoescape("page.html") is True
    assert env.autoescape("demo_report.md.j2") is False
