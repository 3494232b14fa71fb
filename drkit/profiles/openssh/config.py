"""sshd_config and its Includes, read as sshd reads them inside the node root."""

from __future__ import annotations

import fnmatch
import glob
import os
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path

from drkit.paths import on_root
from drkit.profiles.common.configtext import parsed_lines, read_config_text, split_args
from drkit.profiles.openssh.passwd import Accounts, tilde
from drkit.profiles.openssh.policy import policy

_KEYWORD = re.compile(r"^\s*([^\s=]+)\s*(?:=\s*|\s+|$)(.*)$")


@dataclass(frozen=True)
class Line:
    """One directive: lower-case keyword, arguments, where it is, and its Match criteria."""

    keyword: str
    args: tuple[str, ...]
    source: str
    number: int
    match: tuple[str, ...] | None

    @property
    def where(self) -> str:
        return f"{self.source} line {self.number}"


@dataclass
class Config:
    """Every directive of sshd_config and its Includes, in the order sshd reads them."""

    main: str = ""
    lines: list[Line] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    texts: dict[str, str] = field(default_factory=dict)
    include_hits: dict[tuple[str, int], list[str]] = field(default_factory=dict)
    include_patterns: list[str] = field(default_factory=list)
    missing_includes: list[tuple[Line, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # {file as named: (the file it resolves to inside the root, the links on the way)}
    links: dict[str, tuple[str, list[str]]] = field(default_factory=dict)

    def first(self, keyword: str) -> Line | None:
        """Return the global line that sets keyword (the first one wins), else None."""
        return next((ln for ln in self.lines if ln.keyword == keyword and ln.match is None), None)

    def value(self, keyword: str, default: str) -> str:
        line = self.first(keyword)
        return line.args[0].lower() if line and line.args else default

    def effective(self, keyword: str) -> list[Line]:
        """Return the global line(s) that take effect, then every Match-block line."""
        multi = keyword in policy().multi_valued
        top = [ln for ln in self.lines if ln.keyword == keyword and ln.match is None]
        in_match = [ln for ln in self.lines if ln.keyword == keyword and ln.match is not None]
        return (top if multi else top[:1]) + in_match


def parse_line(raw: str) -> tuple[str, str, list[str]] | None:
    """Return (keyword as written, lower-case keyword, args) of a config line, else None."""
    stripped = raw.strip()
    if not stripped or stripped.startswith("#"):
        return None
    found = _KEYWORD.match(stripped)
    if not found:
        return None
    return found.group(1), found.group(1).lower(), split_args(found.group(2))


def _alias(keyword: str) -> str:
    """Return the keyword sshd reads a (lower-case) keyword as."""
    return policy().aliases.get(keyword, keyword)


def node_glob(root: Path, pattern: str) -> list[str]:
    """Return the node paths of the files that match a node glob, sorted as glob(3) does; every
    symlink on the way is followed inside root (a node's link never leads out of it)."""
    current = ["/"]
    for part in [p for p in posixpath.normpath("/" + pattern.lstrip("/")).split("/") if p]:
        if not glob.has_magic(part):
            current = [posixpath.join(base, part) for base in current]
            continue
        found = []
        for base in current:
            try:
                names = sorted(os.listdir(on_root(root, node_links(root, base)[0])))
            except OSError:
                continue
            found += [
                posixpath.join(base, name)
                for name in names
                if fnmatch.fnmatchcase(name, part) and (part[0] == "." or name[0] != ".")
            ]
        current = found
    return sorted(p for p in current if _globbed(root, p))


def _globbed(root: Path, node_path: str) -> bool:
    """Return whether glob(3) lists node_path as sshd's Include takes it: a file, or a symlink
    whatever it points to (sshd then fails to open a dangling one), not a directory."""
    real = on_root(root, node_links(root, node_path)[0])
    if real.is_file():
        return True
    parent = on_root(root, node_links(root, posixpath.dirname(node_path))[0])
    return (parent / posixpath.basename(node_path)).is_symlink() and not real.is_dir()


def node_links(root: Path, node_path: str) -> tuple[str, list[str]]:
    """Return (node_path with its symlinks resolved inside root, the node paths of the links
    followed on the way): an absolute target starts again at root, `..` stops at root, so a
    link never leads out of it. A missing component ends the walk (the rest kept as written)."""
    parts = [p for p in node_path.split("/") if p]
    resolved, links = "/", list[str]()
    while parts:
        name = parts.pop(0)
        if name in (".", ".."):
            resolved = resolved if name == "." else posixpath.dirname(resolved)
            continue
        current = posixpath.join(resolved, name)
        host = Path(str(root).rstrip("/") + current)
        if not host.is_symlink() or len(links) >= 40:
            resolved = current
            if not host.exists() and not host.is_symlink():
                return posixpath.join(resolved, *parts), links
            continue
        links.append(current)
        target = os.readlink(host)
        parts = [p for p in target.split("/") if p] + parts
        resolved = "/" if target.startswith("/") else resolved
    return resolved, links


def node_realpath(root: Path, node_path: str) -> str:
    """Resolve symlinks of a node path within root (absolute targets are node paths)."""
    return node_links(root, node_path)[0]


def read_config(root: Path, main: str | None = None) -> Config:
    """Parse the node's sshd_config and everything it Includes (missing parts become warnings)."""
    config = Config(main=main or policy().config.main)
    _read_file(Path(root), config.main, None, config, ())
    return config


def _read_file(
    root: Path,
    node_path: str,
    match: tuple[str, ...] | None,
    config: Config,
    stack: tuple[str, ...],
) -> None:
    settings = policy().config
    real, links = node_links(root, node_path)
    known = real in config.files
    text = read_config_text(root, real, config)
    if text is None:
        return
    if real != node_path:  # read through links as sshd reads it; named as the config names it
        if not known:
            config.files.remove(real)
        config.files.append(node_path)
        config.texts[node_path] = text
        config.links[node_path] = (real, links)
    for number, _, keyword, args in parsed_lines(text, parse_line):
        keyword = _alias(keyword)
        if keyword == "match":
            match = tuple(args) or ("all",)
        line = Line(keyword, tuple(args), node_path, number, match)
        config.lines.append(line)
        if keyword != "include":
            continue
        hits: list[str] = []
        for pattern in args:
            if pattern.startswith("~"):  # glob(3) GLOB_TILDE, as root
                pattern = tilde(pattern, Accounts.of(root), "root") or pattern
            absolute = posixpath.normpath(posixpath.join(settings.include_base, pattern))
            config.include_patterns.append(absolute)
            matched = node_glob(root, absolute)
            if not matched and not glob.has_magic(absolute):
                config.missing_includes.append((line, absolute))
            hits += matched
        config.include_hits[(node_path, number)] = hits
        for hit in hits:
            if not on_root(root, node_realpath(root, hit)).is_file():
                config.missing_includes.append((line, hit))  # a dangling link: sshd cannot open it
                continue
            if hit in stack or len(stack) >= settings.max_include_depth:
                config.warnings.append(f"Include {hit} ({line.where}) nests too deep; skipped")
                continue
            _read_file(root, hit, match, config, (*stack, node_path))
