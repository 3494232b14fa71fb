"""The demo's closing report: what was backed up, destroyed, rebuilt and proven, in Markdown.

Usage: python -m drkit.demo_report DEMO_OUT_DIR > report.md (reads the demo's JSON documents).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _load(directory: Path, name: str) -> dict:
    path = directory / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def render(directory: Path) -> str:
    """Return the Markdown report for a demo run's output directory."""
    backup, show, restore, drill = (
        _load(directory, n) for n in ("backup", "show", "restore", "drill")
    )
    lines = ["# drkit demo: a destroyed SFTP node rebuilt from S3", ""]
    verdict = "REBUILT AND PROVEN" if restore.get("ok") else "FAILED"
    lines += [f"**Result: {verdict}**", ""]
    if "error" in restore:
        lines += [f"Restore error: `{restore['error']['message']}`", ""]
    lines += [
        "| step | outcome |",
        "|---|---|",
        f"| backup | snapshot `{str(backup.get('snapshot_id'))[:8]}`, "
        f"{backup.get('files')} files, {backup.get('bytes_added')} bytes added |",
        f"| manifest | signed by `{show.get('signer')}` |",
        "| disaster | every file under the node root deleted |",
        f"| restore | snapshot `{str(restore.get('snapshot_id'))[:8]}` onto an empty root, "
        f"bare metal (no drkit.yaml), trust: {restore.get('trust')}, "
        f"{restore.get('duration_seconds')} s |",
        "",
        "## Checks after the rebuild",
        "",
        "| check | status | detail |",
        "|---|---|---|",
    ]
    for check in restore.get("checks", []):
        detail = check["detail"].replace("|", "\\|")
        lines.append(f"| {check['name']} | {check['status']} | {detail} |")
    lines += ["", "## Host keys pinned by the SFTP client (from the signed manifest)", ""]
    for key in show.get("host_keys", []):
        lines.append(f"- `{key['type']}` `{key['fingerprint']}` ({key['path']})")
    lines += ["", "## Files by category", ""]
    for category, count in sorted(show.get("categories", {}).items()):
        lines.append(f"- {category}: {count}")
    if show.get("certificates"):
        lines += ["", "## Certificates", ""]
        for certificate in show["certificates"]:
            lines.append(
                f"- {certificate['path']}: {certificate['subject']}, expires "
                f"{certificate['not_after']} ({certificate['days_left']} days)"
            )
    if drill:
        lines += ["", "## Drill (sandbox rebuild of a random snapshot, real SFTP login)", ""]
        if "error" in drill:
            lines.append(f"Drill error: `{drill['error']['message']}`")
        else:
            lines += [
                f"- result: {'PASSED' if drill['ok'] else 'FAILED'}; snapshot "
                f"`{drill['snapshot_id'][:8]}` ({drill['snapshot']['spec']})",
                f"- RTO {drill['rto_seconds']} s (objective {drill['objectives']['rto_seconds']} s)"
                f", snapshot age {drill['rpo_seconds']} s",
                f"- HTML report: `{drill['reports']['html']}`",
            ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render(Path(sys.argv[1])))
