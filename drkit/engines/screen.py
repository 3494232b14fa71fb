"""Screening untrusted snapshot content against its signed manifest, before and after restic.

restic 0.18 does not reject duplicate or odd names in a tree, so the listing is screened before
anything is restored, and the staged tree again before anything is applied: every entry must be
in the signed manifest (or be one of its parent directories), of the same type and special
bits; no device nodes, FIFOs, sockets, hard links, control characters, `..`, or symlinks that
climb out of the node.
"""

from __future__ import annotations

import os
import posixpath
import re
import stat
from pathlib import Path

from drkit.engines.manifest import CONFIG_PATH, MANIFEST_PATH, SIGNATURE_PATH

GO_SETUID, GO_SETGID, GO_STICKY = 1 << 23, 1 << 22, 1 << 20
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
ALLOWED_TYPES = ("file", "dir", "symlink")
DRKIT_FILES = (MANIFEST_PATH, SIGNATURE_PATH, CONFIG_PATH)


def _ancestors(path: str) -> list[str]:
    parts = path.strip("/").split("/")
    return ["/" + "/".join(parts[:index]) for index in range(1, len(parts))]


def expected_paths(manifest: dict) -> tuple[dict[str, dict], set[str]]:
    """Return the manifest's entries by path and the parent directories they imply."""
    entries = {entry["path"]: entry for entry in manifest["files"]}
    parents = {parent for path in [*entries, *DRKIT_FILES] for parent in _ancestors(path)}
    return entries, parents


def name_problem(path: str) -> str | None:
    """Return why a path's name is unacceptable, or None."""
    if _CONTROL.search(path):
        return "control character in name"
    if not path.startswith("/"):
        return "relative path"
    if any(part in ("", ".", "..") for part in path[1:].split("/")) and path != "/":
        return "'..', '.' or empty component"
    return None


def _special_bits(mode_text: str) -> int:
    return int(mode_text, 8) & 0o7000


def symlink_escapes(node_path: str, link: str) -> bool:
    """Return True when a relative symlink climbs above the node's root."""
    if link.startswith("/"):
        return False
    depth = 0
    for part in posixpath.join(posixpath.dirname(node_path), link).split("/"):
        if part == "..":
            depth -= 1
        elif part not in ("", "."):
            depth += 1
        if depth < 0:
            return True
    return False


def screen_manifest(manifest: dict) -> list[str]:
    """Return every reason to refuse a signed manifest's own paths and globs.

    A signature proves who wrote a manifest, not that the node it describes was sound: a
    compromised node signs its attacker's files too. Paths must be absolute, without `..`,
    `.`, empty parts or control characters; the globs whose unlisted matches restore removes
    must name a directory (two literal components at least), never the whole tree.
    """
    problems: list[str] = []
    seen: set[str] = set()
    for entry in manifest.get("files", []):
        path = str(entry.get("path", ""))
        shown = path.encode("unicode_escape").decode()
        why = name_problem(path)
        if why or path == "/":
            problems.append(f"{shown}: {why or 'the root itself'} (in the signed manifest)")
        if path in seen:
            problems.append(f"{shown}: listed twice in the signed manifest")
        seen.add(path)
        if entry.get("type") not in ALLOWED_TYPES:
            problems.append(f"{shown}: {entry.get('type')} entries are never restored")
    symlinks = {str(e.get("path")) for e in manifest.get("files", []) if e.get("type") == "symlink"}
    for path in sorted(seen):
        if any(parent in symlinks for parent in _ancestors(path)):
            shown = path.encode("unicode_escape").decode()
            problems.append(f"{shown}: under a symlink (in the signed manifest)")
    for pattern in manifest.get("owned_globs", []):
        pattern = str(pattern)
        literal = []
        for part in pattern.strip("/").split("/"):
            if any(char in part for char in "*?[") or not part:
                break
            literal.append(part)
        if name_problem(pattern) or len(literal) < 2:
            shown = pattern.encode("unicode_escape").decode()
            problems.append(f"owned glob {shown}: too broad or malformed (in the signed manifest)")
    return problems


def screen_listing(nodes: list[dict], manifest: dict) -> list[str]:
    """Given `restic ls --json` nodes, return every reason to refuse the snapshot."""
    entries, parents = expected_paths(manifest)
    problems: list[str] = screen_manifest(manifest)
    seen: set[str] = set()
    inodes: dict[tuple, str] = {}
    symlinks = {path for path, entry in entries.items() if entry["type"] == "symlink"}
    for node in nodes:
        path, kind = str(node.get("path", "")), node.get("type")
        shown = path.encode("unicode_escape").decode()
        why = name_problem(path)
        if why:
            problems.append(f"{shown}: {why}")
            continue
        if path in seen:
            problems.append(f"{shown}: appears twice in the snapshot")
        seen.add(path)
        if kind not in ALLOWED_TYPES:
            problems.append(f"{shown}: {kind} entries are never restored")
            continue
        if kind == "file" and node.get("inode"):
            identity = (node.get("device_id"), node.get("inode"))
            if identity in inodes:
                problems.append(f"{shown}: hard link to {inodes[identity]}")
            inodes.setdefault(identity, shown)
        if any(parent in symlinks for parent in _ancestors(path)):
            problems.append(f"{shown}: written through a symlinked directory")
            continue
        if path in DRKIT_FILES or (path in parents and kind == "dir" and path not in entries):
            continue
        entry = entries.get(path)
        if entry is None:
            problems.append(f"{shown}: not in the signed manifest")
            continue
        if entry["type"] != kind:
            problems.append(f"{shown}: {kind} in the snapshot, {entry['type']} in the manifest")
            continue
        go_mode = int(node.get("mode", 0))
        special = (
            (0o4000 if go_mode & GO_SETUID else 0)
            | (0o2000 if go_mode & GO_SETGID else 0)
            | (0o1000 if go_mode & GO_STICKY else 0)
        )
        if kind == "file" and special != _special_bits(entry["mode"]):
            problems.append(f"{shown}: setuid/setgid bits differ from the signed manifest")
        if kind == "file" and int(node.get("size", 0)) != entry["size"]:
            problems.append(f"{shown}: size differs from the signed manifest")
    for path, entry in entries.items():
        if entry["type"] == "symlink" and symlink_escapes(path, entry["link"]):
            problems.append(f"{path}: symlink to {entry['link']} leaves the node")
    return problems


def screen_staging(staging: Path, manifest: dict) -> list[str]:
    """Walk the staged tree without following links; return every reason to refuse it."""
    entries, parents = expected_paths(manifest)
    problems = []
    prefix = len(os.path.normpath(staging))
    for directory, dirnames, filenames in os.walk(staging):
        for name in dirnames + filenames:
            host = os.path.join(directory, name)
            path = host[prefix:]
            info = os.lstat(host)
            if path in DRKIT_FILES:
                continue
            if path not in entries and not (path in parents and stat.S_ISDIR(info.st_mode)):
                problems.append(f"{path}: not in the signed manifest")
            elif stat.S_ISREG(info.st_mode) and info.st_nlink > 1:
                problems.append(f"{path}: hard link")
            elif not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)) and not (
                stat.S_ISLNK(info.st_mode)
            ):
                problems.append(f"{path}: special file")
    return problems
