"""Node paths (as the node's own config names them) mapped onto a root on this host."""

from __future__ import annotations

import errno
import os
import posixpath
import re
import stat
from pathlib import Path, PurePosixPath

UNRESOLVABLE = "/.drkit-unresolvable"  # never created: where a looping path maps to
MAX_LINKS = 40  # as the kernel's own limit on links followed in one lookup (ELOOP)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def shown(node_path: str) -> str:
    """Return a name as it may be printed: bytes that are not UTF-8 as \\xNN, control
    characters escaped (a newline as \\n), everything else as it is."""
    text = os.fsencode(node_path).decode("utf-8", "backslashreplace")
    return _CONTROL.sub(lambda match: match.group().encode("unicode_escape").decode(), text)


def on_root(root: Path, node_path: str | PurePosixPath) -> Path:
    """Given a root and an absolute node path, return the host path of what the node would
    open there: every symlink on the way is followed as the node sees it (an absolute target
    starts again at root, `..` stops at root), so a link never leads out of the root. A
    path the node could not open either (a loop of links) maps to a path that does not
    exist, so every reader sees it missing."""
    try:
        return Path(host_path(root, resolve(root, str(node_path))))
    except OSError:
        return Path(host_path(root, UNRESOLVABLE + "/" + str(node_path).lstrip("/")))


def joined(root: Path, node_path: str | PurePosixPath) -> Path:
    """Return root and node_path joined as text, nothing resolved: for a restore target,
    whose every component the apply itself checks before it writes (engines/apply.py)."""
    return Path(host_path(root, node_path))


def entry_on_root(root: Path, node_path: str | PurePosixPath) -> Path:
    """Return the host path of the entry node_path itself: its parents resolved inside root
    as on_root does, a final symlink kept (what lstat, readlink and replacing it need)."""
    try:
        return Path(host_path(root, resolve(root, str(node_path), follow_last=False)))
    except OSError:
        return Path(host_path(root, UNRESOLVABLE + "/" + str(node_path).lstrip("/")))


def resolve(root: Path | str, node_path: str, *, follow_last: bool = True) -> str:
    """Return node_path with its symlinks resolved inside root, as the node's own kernel
    would (chroot semantics); follow_last=False keeps a final link itself (lstat)."""
    return resolve_links(root, node_path, follow_last=follow_last)[0]


def resolve_links(
    root: Path | str, node_path: str, *, follow_last: bool = True
) -> tuple[str, list[str]]:
    """Return (node_path resolved inside root, the node paths of the links followed on the
    way, in order). A component that does not exist ends the resolution: the rest is kept
    as written. More than MAX_LINKS links raise OSError(ELOOP)."""
    pending = [part for part in str(node_path).split("/") if part][::-1]
    resolved: list[str] = []
    links: list[str] = []
    base = str(root)
    while pending:
        name = pending.pop()
        if name == ".":
            continue
        if name == "..":
            if resolved:
                resolved.pop()
            continue
        if not pending and not follow_last:
            resolved.append(name)
            break
        candidate = posixpath.join(base, *resolved, name)
        try:
            info = os.lstat(candidate)
        except OSError:
            resolved.append(name)
            resolved.extend(part for part in reversed(pending) if part)
            break
        if not stat.S_ISLNK(info.st_mode):
            resolved.append(name)
            continue
        links.append("/" + "/".join([*resolved, name]))
        if len(links) > MAX_LINKS:
            raise OSError(errno.ELOOP, "too many levels of symbolic links", node_path)
        target = os.readlink(candidate)
        if target.startswith("/"):
            resolved = []
        pending.extend(part for part in target.split("/")[::-1] if part)
    return "/" + "/".join(resolved), links


class LinkResolver:
    """resolve_links for many paths beneath one root, each parent directory resolved once
    (a 100,000-file tree is not a million lstats): the same answers, as a path's resolution
    is its parent's followed by its last name."""

    def __init__(self, root: Path | str):
        self.root = root
        self._parents: dict[str, tuple[str, list[str]]] = {}

    def links(self, node_path: str) -> tuple[str, list[str]]:
        """Return resolve_links(root, node_path); OSError(ELOOP) as it raises it."""
        parent, _, name = node_path.rstrip("/").rpartition("/")
        if name in ("", ".", ".."):
            return resolve_links(self.root, node_path)
        if parent not in self._parents:
            self._parents[parent] = resolve_links(self.root, parent or "/")
        base, links = self._parents[parent]
        candidate = posixpath.join(base, name)
        try:
            last_is_link = stat.S_ISLNK(os.lstat(host_path(self.root, candidate)).st_mode)
        except OSError:
            last_is_link = False  # missing: kept as written, as resolve_links keeps it
        if last_is_link:
            return resolve_links(self.root, node_path)  # a link last: the whole rule
        return candidate, list(links)


def host_path(root: Path | str, node_path: str | PurePosixPath) -> str:
    """on_root as a string, for loops over many files (no pathlib objects)."""
    normal = posixpath.normpath("/" + str(node_path).lstrip("/")).lstrip("/")
    return posixpath.join(str(root), normal) if normal else str(root)


def to_node(root: Path, host_path: Path | str) -> str:
    """Given a host path under root, return the absolute node path ('/etc/ssh/sshd_config')."""
    base, path = os.path.normpath(str(root)), os.path.normpath(str(host_path))
    if base == "/":
        return path
    if path == base:
        return "/"
    if not path.startswith(base + "/"):
        raise ValueError(f"{path} is not under {base}")
    return path[len(base) :]
