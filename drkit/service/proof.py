"""Proving a restored tree: the profiles' checks, and the real servers started from it."""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Callable
from pathlib import Path

from drkit import model as checks
from drkit import profiles
from drkit.engines import sqlite_copies
from drkit.model import Check, Manifest, SmokeResult
from drkit.results import SmokeProof
from drkit.service.opening import Origin


def profile_checks(
    target: Path, node_manifest: Manifest, step: Callable[[str], None] | None = None
) -> list[Check]:
    """Return every profile's checks of the restored files on target, and PRAGMA
    integrity_check's on each SQLite database among them."""
    found = []
    for kind in node_manifest.profiles:
        if step:
            step(f"checking the restored {kind} files")
        found += profiles.get(kind).checks(target, node_manifest)
    return found + sqlite_copies.checks(target, node_manifest.files)


def server_checks(
    origin: Origin, target: Path, node_manifest: Manifest, smoke: bool, step: Callable[[str], None]
) -> tuple[list[Check], dict[str, list[SmokeProof]]]:
    """Return the profiles' checks of target (and with smoke, the smoke runs' checks) and the
    result fields they add: `smoke`, what each server started from target proved."""
    found = profile_checks(target, node_manifest, step)
    if not smoke:
        return found, {}
    work_dir = origin.state_dir / "smoke" / secrets.token_hex(4)
    try:
        smokes = smoke_servers(origin, target, node_manifest, work_dir, step)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    found += [check for result in smokes for check in result.checks]
    return found, {"smoke": [SmokeProof.of(result) for result in smokes]}


def smoke_servers(
    origin: Origin,
    root: Path,
    node_manifest: Manifest,
    work_dir: Path,
    step: Callable[[str], None],
) -> list[SmokeResult]:
    """Start each profile's real server from root on 127.0.0.1, log in and move a file;
    return what each proved. Without a smoke user nothing is tried: each is "not judged"."""
    results = []
    for kind in node_manifest.profiles:
        if not origin.smoke_user:
            reason = "no smoke_user configured: nothing logs in"
            results.append(SmokeResult.not_judged(kind, reason))
            continue
        step(f"smoke: starting {kind} from the restored files on 127.0.0.1 and logging in")
        result = profiles.get(kind).smoke(root, node_manifest, origin.smoke_user, work_dir)
        if result.judged and not result.protocols and checks.all_ok(result.checks):
            result.add(checks.failed(f"smoke: {kind}", "no login was attempted"))
        results.append(result)
    return results
