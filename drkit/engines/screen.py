"""Screening untrusted snapshot content against its signed manifest, before and after restic.

restic 0.18 does not reject duplicate or odd names in a tree, so the listing is screened before
anything is restored, and the staged tree again before anything is applied: every entry must be
in the signed manifest (or be one of its parent directories), of the same type and special
bits; no device nodes, FIFOs, sockets or `..`. A symlink is data, restored with its target
as signed, whatever it points at: nothing drkit does follows one in a target. Names
are whatever POSIX allows (newlines and bytes that are not UTF-8 included) and are escaped when
shown; restic's JSON gives bytes that are not UTF-8 as U+FFFD, so the listing is matched on
that lossy form and the staged tree, walked as bytes, on the exact one.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from drkit.engines import beneath, sqlite_copies
from drkit.engines.manifest import CONFIG_PATH, MANIFEST_PATH, SIGNATURE_PATH
from drkit.engines.resticjson import TreeNode
from drkit.model import FileRecord, Manifest
from drkit.paths import shown as show

GO_SETUID, GO_SETGID, GO_STICKY = 1 << 23, 1 << 22, 1 << 20
ALLOWED_TYPES = ("file", "dir", "symlink")
DRKIT_FILES = (MANIFEST_PATH, SIGNATURE_PATH, CONFIG_PATH)
_ESCAPED = re.compile("[\udc80-\udcff]")  # surrogateescape's stand-ins for bytes


def _ancestors(path: str) -> list[str]:
    parts = path.strip("/").split("/")
    return ["/" + "/".join(parts[:index]) for index in range(1, len(parts))]


def expected_paths(manifest: Manifest) -> tuple[dict[str, FileRecord], set[str]]:
    """Return the manifest's entries by path and the parent directories they imply."""
    entries = {entry.path: entry for entry in manifest.files}
    entries |= {  # a database's consistent copy, stored under drkit's own directory
        sqlite_copies.stored_path(entry.path): entry
        for entry in manifest.files
        if entry.category == sqlite_copies.CATEGORY
    }
    parents: set[str] = set()
    for path in [*entries, *DRKIT_FILES]:
        parent = path.rpartition("/")[0]
        if parent and parent not in parents:  # else all of them are in already
            parents.update(_ancestors(path))
    return entries, parents


def name_problem(path: str) -> str | None:
    """Return why a path's name is unacceptable, or None."""
    if "\0" in path:
        return "NUL in name"
    if not path.startswith("/"):
        return "relative path"
    if any(part in ("", ".", "..") for part in path[1:].split("/")) and path != "/":
        return "'..', '.' or empty component"
    return None


def _special_bits(mode_text: str) -> int:
    return int(mode_text, 8) & 0o7000


def screen_manifest(manifest: Manifest) -> list[str]:
    """Return every reason to refuse a signed manifest's own paths and globs.

    A signature proves who wrote a manifest, not that the node it describes was sound: a
    compromised node signs its attacker's files too. Paths must be absolute, without `..`,
    `.`, empty parts or control characters; the globs whose unlisted matches restore removes
    must name a directory (two literal components at least), never the whole tree.
    """
    problems: list[str] = []
    seen: set[str] = set()
    for entry in manifest.files:
        path = entry.path
        shown = show(path)
        why = name_problem(path)
        if why or path == "/":
            problems.append(f"{shown}: {why or 'the root itself'} (in the signed manifest)")
        if path in seen:
            problems.append(f"{shown}: listed twice in the signed manifest")
        seen.add(path)
    symlinks = {e.path for e in manifest.files if e.type == "symlink"}
    for path in sorted(seen):
        if any(parent in symlinks for parent in _ancestors(path)):
            shown = show(path)
            problems.append(f"{shown}: under a symlink (in the signed manifest)")
    for pattern in manifest.owned_globs:
        literal = []
        for part in pattern.strip("/").split("/"):
            if any(char in part for char in "*?[") or not part:
                break
            literal.append(part)
        if name_problem(pattern) or len(literal) < 2:
            shown = show(pattern)
            problems.append(f"owned glob {shown}: too broad or malformed (in the signed manifest)")
    return problems


def lossy(path: str) -> str:
    """Return a name as restic's JSON gives it: each byte that is not part of valid UTF-8
    becomes one U+FFFD (Go's rule: one per byte, not one per ill-formed sequence)."""
    if path.isascii():  # most names: nothing to replace
        return path
    return _ESCAPED.sub("\ufffd", os.fsencode(path).decode("utf-8", "surrogateescape"))


def unexpected(stored: list[str], manifest: Manifest) -> list[str]:
    """Return what restic reports storing (`backup -vv` items, lossy names) that the manifest
    does not list: a file created in a backed-up directory after the walk, which would make
    the snapshot refuse to restore."""
    exact, parents = expected_paths(manifest)
    known = {lossy(path) for path in [*exact, *parents, *DRKIT_FILES]}
    return [path for path in stored if path not in known and path != "/"]


def screen_listing(nodes: list[TreeNode], manifest: Manifest) -> list[str]:
    """Given `restic ls --json` nodes, return every reason to refuse the snapshot.

    restic's names are lossy (see the module): two manifest names that differ only in bytes
    that are not UTF-8 match the same listed name; the staged tree is screened exactly. Hard
    links are not refused here: the staged tree gives every linked file an inode of its own.
    """
    exact, parents_exact = expected_paths(manifest)
    entries = {lossy(path): entry for path, entry in exact.items()}
    parents = {lossy(path) for path in parents_exact}
    problems: list[str] = screen_manifest(manifest)
    seen: set[str] = set()
    symlinks = {path for path, entry in entries.items() if entry.type == "symlink"}
    drkit_files = {lossy(path) for path in DRKIT_FILES}
    for node in nodes:
        path, kind = node.path, node.type
        shown = show(path)
        why = name_problem(path)
        if why:
            problems.append(f"{shown}: {why}")
            continue
        if path in seen and "\ufffd" not in path:
            problems.append(f"{shown}: appears twice in the snapshot")
        seen.add(path)
        if kind not in ALLOWED_TYPES:
            problems.append(f"{shown}: {kind} entries are never restored")
            continue
        if any(parent in symlinks for parent in _ancestors(path)):
            problems.append(f"{shown}: written through a symlinked directory")
            continue
        if path in drkit_files or (path in parents and kind == "dir" and path not in entries):
            continue
        entry = entries.get(path)
        if entry is None:
            problems.append(f"{shown}: not in the signed manifest")
            continue
        if entry.type != kind:
            problems.append(f"{shown}: {kind} in the snapshot, {entry.type} in the manifest")
            continue
        go_mode = node.mode
        special = (
            (0o4000 if go_mode & GO_SETUID else 0)
            | (0o2000 if go_mode & GO_SETGID else 0)
            | (0o1000 if go_mode & GO_STICKY else 0)
        )
        if "\ufffd" in path:  # the lossy name may stand for another entry: staging decides
            continue
        if kind == "file" and special != _special_bits(entry.mode):
            problems.append(f"{shown}: setuid/setgid bits differ from the signed manifest")
        if kind == "file" and node.size != entry.size:
            problems.append(f"{shown}: size differs from the signed manifest")
    return problems


def screen_staging(staging: Path, manifest: Manifest) -> list[str]:
    """Walk the staged tree without following links; return every reason to refuse it.

    Only regular files, directories and links are allowed (a FIFO, device or socket is refused
    whatever its name), and drkit's own files must be regular files. A hard-linked file the
    manifest lists is given an inode of its own first: the manifest signs names and contents,
    not links, so a restore never joins two paths into one file; one linked to a name outside
    the staged tree is refused.
    """
    entries, parents = expected_paths(manifest)
    problems = []
    linked: dict[tuple[int, int], list[tuple[str, str, str]]] = {}
    prefix = len(os.path.normpath(staging))
    for directory, dirnames, filenames in os.walk(staging):
        for name in dirnames + filenames:
            host = os.path.join(directory, name)
            path = host[prefix:]
            info = os.lstat(host)
            mode = info.st_mode
            special = not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode))
            if path in DRKIT_FILES:
                if not stat.S_ISREG(info.st_mode):
                    problems.append(f"{show(path)}: {beneath.kind(info)}, not a regular file")
            elif special:
                problems.append(f"{show(path)}: special file ({beneath.kind(info)})")
            elif path not in entries and not (path in parents and stat.S_ISDIR(info.st_mode)):
                problems.append(f"{show(path)}: not in the signed manifest")
            elif stat.S_ISREG(info.st_mode) and info.st_nlink > 1:
                linked.setdefault((info.st_dev, info.st_ino), []).append((directory, name, path))
    for (_, _), names in linked.items():
        if os.lstat(os.path.join(*names[0][:2])).st_nlink > len(names):
            shown_names = ", ".join(show(path) for _, _, path in names)
            problems.append(f"{shown_names}: hard link to a file outside the snapshot's tree")
        elif not problems:
            for directory, name, _ in names:
                _own_inode(directory, name)
    return problems


def _own_inode(directory: str, name: str) -> None:
    """Replace a hard-linked staged file by a copy with its own inode, owner, mode and times."""
    dir_fd = os.open(directory, beneath.DIRECTORY)
    try:
        source = beneath.open_regular(dir_fd, name, show(name))
        try:
            beneath.copy_new(source, dir_fd, f"{name}.drkit-unlink")
        finally:
            os.close(source)
        os.replace(f"{name}.drkit-unlink", name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    finally:
        os.close(dir_fd)
