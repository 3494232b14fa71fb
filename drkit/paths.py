"""Node paths (as the node's own config names them) mapped onto a root on this host."""

from __future__ import annotations

import os
import posixpath
from pathlib import Path, PurePosixPath


def on_root(root: Path, node_path: str | PurePosixPath) -> Path:
    """Given a root and an absolute node path, return the host path; never leave the root."""
    return Path(host_path(root, node_path))


def host_path(root: Path | str, node_path: str | PurePosixPath) -> str:
    """on_root as a string, for loops over many files (no pathlib objects)."""
    normal = posixpath.normpath("/" + str(node_path).lstrip("/")).lstrip("/")
    return posixpath.join(str(root), normal) if normal else str(root)


def to_node(root: Path, host_path: Path) -> str:
    """Given a host path under root, return the absolute node path ('/etc/ssh/sshd_config')."""
    base, path = os.path.normpath(str(root)), os.path.normpath(str(host_path))
    if base == "/":
        return path
    if path == base:
        return "/"
    if not path.startswith(base + "/"):
        raise ValueError(f"{path} is not under {base}")
    return path[len(base) :]
