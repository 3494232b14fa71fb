"""Paths beneath a root (a restore target, a staging tree), reached one component at a time.

Every directory on the way is opened with O_NOFOLLOW|O_DIRECTORY relative to the one before
(openat-style), and every operation acts on its final name relative to that descriptor, so no
link anywhere in a path is followed, whatever a planted one says, and a name swapped for a link
between two checks is not followed either. A link where a directory is needed is refused
(errors.Refused); a link as the final name is only ever replaced or removed as the link itself.
Files are opened with O_NOFOLLOW|O_NONBLOCK and must turn out regular: drkit never opens a
FIFO, device or socket it did not create, so none can hang or trip it.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import os
import posixpath
import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

from drkit import errors
from drkit.paths import host_path, shown, to_node

DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
WALK = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC  # search permission is enough
READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
CHUNK = 1 << 20
# how a missing directory on the way is made: given its host path, do what must happen before
# it exists (a journal record) and return its (mode, uid, gid)
Maker = Callable[[Path], tuple[int, int, int]]


def _link_refused(root: Path, host: Path, dir_fd: int, name: str) -> errors.Refused:
    try:
        link = os.readlink(name, dir_fd=dir_fd)
    except OSError:
        link = "?"
    return errors.Refused(
        f"{root}: {shown(to_node(root, host))} is a symlink (to {shown(link)}) where a directory "
        "is needed; drkit never writes or reads through a link in a target: remove it first"
    )


def _not_directory(root: Path, host: Path) -> errors.Refused:
    return errors.Refused(
        f"{root}: {shown(to_node(root, host))} is not a directory; drkit needs one there"
    )


def _open_directory(root: Path, host: Path, dir_fd: int, name: str, flags: int = WALK) -> int:
    """Open dir_fd/name as a directory without following it; Refused for a link."""
    try:
        return os.open(name, flags, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if stat.S_ISLNK(info.st_mode):
            raise _link_refused(root, host, dir_fd, name) from None
        raise _not_directory(root, host) from None


@contextlib.contextmanager
def directory(
    root: Path, host: Path, make: Maker | None = None, *, listable: bool = False
) -> Iterator[int]:
    """Yield a descriptor of directory host beneath root, every component opened without
    following links (O_PATH: for *at calls; listable: a readable one, for listdir and
    fchmod). With make, a missing component is created (see Maker), its mode and owner set
    on its descriptor; without, FileNotFoundError."""
    parts = [part for part in to_node(root, host).split("/") if part]
    last = DIRECTORY if listable else WALK
    fd = os.open(root, (last if not parts else WALK) & ~os.O_NOFOLLOW)
    try:
        reached = Path(root)
        for index, part in enumerate(parts, 1):
            reached = reached / part
            flags = last if index == len(parts) else WALK
            try:
                child = _open_directory(root, reached, fd, part, flags)
            except FileNotFoundError:
                if make is None:
                    raise
                mode, uid, gid = make(reached)
                os.mkdir(part, 0o700, dir_fd=fd)
                child = _open_directory(root, reached, fd, part, DIRECTORY)
                os.fchown(child, uid, gid)
                os.fchmod(child, mode)
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


class Descent:
    """Directory descriptors beneath one root, each opened once as directory() would (every
    component without following links, a missing one made with make) and kept, so a run over
    many files in few directories opens each directory once, not each path's every component.

    A kept descriptor stays the directory it was opened as, whatever later happens to its
    name: forget() a directory the caller moves or removes. One thread uses one Descent (the
    oldest descriptors beyond `keep` are closed as new ones are opened); close() when done.
    A read-only pass (the plan) also takes a directory found missing to stay missing.
    """

    def __init__(self, root: Path, keep: int = 256, *, read_only: bool = False):
        self.root = Path(root)
        self._keep = keep
        self._open: dict[str, int] = {}  # node directory ('' for the root): descriptor
        self._missing: set[str] | None = set() if read_only else None

    def __enter__(self) -> Descent:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def parent(self, host: Path | str, make: Maker | None = None) -> tuple[int, str]:
        """Return (descriptor of host's parent directory, host's name); see directory()."""
        return self.at(to_node(self.root, host), make)

    def at(self, node_path: str, make: Maker | None = None) -> tuple[int, str]:
        """Return (descriptor of the parent directory of node_path ('/etc/passwd'), its name)."""
        node_dir, _, name = posixpath.normpath("/" + node_path.lstrip("/")).rpartition("/")
        if not name:
            raise ValueError(f"{node_path} is the root itself")
        return self._directory(node_dir, make), name

    def _directory(self, node_dir: str, make: Maker | None) -> int:
        fd = self._open.pop(node_dir, None)
        if fd is None:
            if self._missing is not None and node_dir in self._missing:
                raise FileNotFoundError(errno.ENOENT, "missing", host_path(self.root, node_dir))
            try:
                if not node_dir:
                    fd = os.open(self.root, WALK & ~os.O_NOFOLLOW)
                else:
                    above, _, part = node_dir.rpartition("/")
                    fd = self._opened(self._directory(above, make), node_dir, part, make)
            except FileNotFoundError:
                if self._missing is not None:
                    self._missing.add(node_dir)
                raise
        self._open[node_dir] = fd  # the newest last: the oldest are closed first
        while len(self._open) > self._keep:
            os.close(self._open.pop(next(iter(self._open))))
        return fd

    def _opened(self, above: int, node_dir: str, part: str, make: Maker | None) -> int:
        with contextlib.suppress(OSError):
            return os.open(part, WALK, dir_fd=above)
        reached = Path(host_path(self.root, node_dir))  # not opened: say why, or make it
        try:
            return _open_directory(self.root, reached, above, part)
        except FileNotFoundError:
            if make is None:
                raise
        mode, uid, gid = make(reached)
        os.mkdir(part, 0o700, dir_fd=above)
        child = _open_directory(self.root, reached, above, part, DIRECTORY)
        os.fchown(child, uid, gid)
        os.fchmod(child, mode)
        return child

    def forget(self, host: Path | str) -> None:
        """Close the descriptors of host and everything beneath it (moved or removed)."""
        node_dir = to_node(self.root, host).rstrip("/")
        beneath = [key for key in self._open if key == node_dir or key.startswith(node_dir + "/")]
        for kept in beneath:
            os.close(self._open.pop(kept))

    def close(self) -> None:
        """Close every kept descriptor."""
        while self._open:
            os.close(self._open.popitem()[1])


@contextlib.contextmanager
def parent(root: Path, host: Path | str, make: Maker | None = None) -> Iterator[tuple[int, str]]:
    """Yield (descriptor of host's parent directory, host's name); see directory()."""
    if os.path.normpath(host) == os.path.normpath(root):
        raise ValueError(f"{host} is the root itself")
    with directory(root, Path(host).parent, make) as fd:
        yield fd, Path(host).name


def lstat(root: Path, host: Path) -> os.stat_result | None:
    """Return host's own status (a final link not followed), None when it or a parent is
    missing; Refused when a parent is a link."""
    try:
        with parent(root, host) as (fd, name):
            return os.stat(name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def open_regular(dir_fd: int, name: str, shown_path: str) -> int:
    """Open dir_fd/name for reading, refusing anything but a regular file (a link, a FIFO, a
    device, a socket) before it can block or act: return a blocking descriptor."""
    try:
        fd = os.open(name, READ, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise errors.Refused(f"{shown_path} is a symlink; drkit never reads through one") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise errors.Refused(f"{shown_path}: {kind(info)}, not a regular file; drkit opens none")
    os.set_blocking(fd, True)
    return fd


def kind(info: os.stat_result) -> str:
    """Return the type of a file in words ('a FIFO')."""
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISLNK, "a symlink"),
        (stat.S_ISDIR, "a directory"),
    ):
        if test(info.st_mode):
            return name
    return "a regular file"


def read_bytes(root: Path, host: Path, limit: int | None = None) -> bytes | None:
    """Return the content of regular file host beneath root, None when missing; Refused when
    it or a parent is a link, or it is not a regular file (a FIFO is never opened to block)."""
    try:
        with parent(root, host) as (dir_fd, name):
            fd = open_regular(dir_fd, name, f"{root}: {shown(to_node(root, host))}")
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(limit + 1 if limit is not None else -1)
    if limit is not None and len(data) > limit:
        raise errors.Refused(f"{host}: larger than {limit} bytes")
    return data


def read_any_regular(path: Path) -> bytes | None:
    """Return the content of path (links followed, as the caller resolved it), None when it
    is not a regular file: a FIFO, device or socket is not opened (nor waited on, should one
    replace the file between the check and the open)."""
    if not stat.S_ISREG(os.stat(path).st_mode):
        return None
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        os.set_blocking(fd, True)
        return handle.read()


def make_directory(dir_fd: int, name: str, mode: int, uid: int, gid: int) -> None:
    """Create dir_fd/name with exactly mode and owner (umask-independent)."""
    os.mkdir(name, 0o700, dir_fd=dir_fd)
    child = os.open(name, DIRECTORY, dir_fd=dir_fd)
    try:
        os.fchown(child, uid, gid)
        os.fchmod(child, mode)
    finally:
        os.close(child)


def set_owner_mode(dir_fd: int, name: str, mode: int | None, uid: int, gid: int) -> None:
    """Set owner (and mode, unless None or a link) of dir_fd/name itself, never a link's
    target; the mode only of a directory or regular file (opened without blocking)."""
    info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    link, directory_ = stat.S_ISLNK(info.st_mode), stat.S_ISDIR(info.st_mode)
    if mode is not None and not (link or directory_ or stat.S_ISREG(info.st_mode)):
        raise errors.Refused(f"{shown(name)}: {kind(info)}; drkit sets the mode of none")
    os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)
    if mode is None or link:
        return
    fd = os.open(name, DIRECTORY if directory_ else READ, dir_fd=dir_fd)
    try:
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def write_new(dir_fd: int, name: str, data: bytes, mode: int, uid: int, gid: int) -> None:
    """Create dir_fd/name (which must not exist) with data, owner and exactly mode; flushed."""
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                 dir_fd=dir_fd)  # fmt: skip
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
        os.fsync(fd)
    finally:
        os.close(fd)


def copy_new(source_fd: int, dir_fd: int, name: str) -> None:
    """Copy an open regular file into dir_fd/name (which must not exist) with its owner, mode
    and times."""
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                 dir_fd=dir_fd)  # fmt: skip
    try:
        os.lseek(source_fd, 0, os.SEEK_SET)
        while block := os.read(source_fd, CHUNK):
            view = memoryview(block)
            while view:
                view = view[os.write(fd, view) :]
        info = os.fstat(source_fd)
        os.fchown(fd, info.st_uid, info.st_gid)
        os.fchmod(fd, stat.S_IMODE(info.st_mode))
        os.utime(fd, ns=(info.st_atime_ns, info.st_mtime_ns))
    finally:
        os.close(fd)


def remove(dir_fd: int, name: str) -> None:
    """Remove dir_fd/name: a directory with everything in it (links removed, never followed),
    anything else unlinked. Missing is fine."""
    try:
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(info.st_mode):
        shutil.rmtree(name, dir_fd=dir_fd)
    else:
        os.unlink(name, dir_fd=dir_fd)


def exists(dir_fd: int, name: str) -> bool:
    """Return whether dir_fd/name exists (a dangling link does)."""
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def is_empty_directory(dir_fd: int, name: str) -> bool:
    """Return whether dir_fd/name is a directory with nothing in it (never following it)."""
    try:
        fd = os.open(name, DIRECTORY, dir_fd=dir_fd)
    except OSError:
        return False
    try:
        return not os.listdir(fd)
    finally:
        os.close(fd)


def refuse_unless_regular(dir_fd: int, name: str, shown_path: str) -> None:
    """Raise Refused when dir_fd/name exists as anything but a regular file (a planted link,
    FIFO or device where drkit writes one of its own files)."""
    try:
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(info.st_mode):
        raise errors.Refused(f"{shown_path} is a symlink; drkit never writes through one")
    if not stat.S_ISREG(info.st_mode):
        raise errors.Refused(f"{shown_path}: {kind(info)}, not a regular file; drkit opens none")


def glob(root: Path, pattern: str) -> list[str]:
    """Return the node paths beneath root that pattern matches as glob.glob(recursive=True)
    would (`*` within one name, hidden names only for a pattern starting with '.', `**` any
    depth), sorted; no link is entered, so nothing outside root, and no loop, is walked."""
    parts = [part for part in pattern.strip("/").split("/") if part]
    found: list[str] = []
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return found
    try:
        _glob(fd, "", parts, found)
    finally:
        os.close(fd)
    return sorted(set(found))


def _glob(dir_fd: int, node: str, parts: list[str], found: list[str]) -> None:
    part, rest = parts[0], parts[1:]
    if part == "**":
        if rest:
            _glob(dir_fd, node, rest, found)
        for name, is_dir in _entries(dir_fd, part):
            if not rest:
                found.append(f"{node}/{name}")
            if is_dir:
                _descend(dir_fd, name, f"{node}/{name}", parts, found)
        return
    if any(char in part for char in "*?["):
        names = [(n, d) for n, d in _entries(dir_fd, part) if fnmatch.fnmatchcase(n, part)]
    else:
        try:
            info = os.stat(part, dir_fd=dir_fd, follow_symlinks=False)
        except OSError:
            return
        names = [(part, stat.S_ISDIR(info.st_mode))]
    for name, is_dir in names:
        if not rest:
            found.append(f"{node}/{name}")
        elif is_dir:
            _descend(dir_fd, name, f"{node}/{name}", rest, found)


def _entries(dir_fd: int, part: str) -> list[tuple[str, bool]]:
    """Return (name, is a real directory) of a directory's entries a pattern part may match."""
    try:
        with os.scandir(dir_fd) as listing:
            return [
                (entry.name, entry.is_dir(follow_symlinks=False))
                for entry in listing
                if part.startswith(".") or not entry.name.startswith(".")
            ]
    except OSError:
        return []


def _descend(dir_fd: int, name: str, node: str, parts: list[str], found: list[str]) -> None:
    try:
        child = os.open(name, DIRECTORY, dir_fd=dir_fd)
    except OSError:
        return  # a link, or gone: never entered
    try:
        _glob(child, node, parts, found)
    finally:
        os.close(child)
