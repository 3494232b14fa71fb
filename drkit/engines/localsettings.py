"""Node-local paths and settings: what a standby sync never overwrites and fleet drift ignores.

An entry is either a node path glob (`/etc/ssh/sshd_config.d/10-listen.conf`) or one setting
inside a file, `FILE:SETTING`:
- `FILE:[section]/key`  the key's line inside an INI section (SFTPPlus server.ini);
- `FILE:Keyword`        every line whose first word is Keyword (sshd_config, proftpd.conf) or
                        that starts `Keyword=` (vsftpd.conf).
FILE is a node path, or a bare name (`server.ini`) that matches any path ending in it.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Setting:
    file: str
    section: str | None
    key: str

    def matches_file(self, path: str) -> bool:
        if self.file.startswith("/"):
            return fnmatch.fnmatchcase(path, self.file)
        return path == self.file or path.endswith("/" + self.file)


@dataclass
class Local:
    """Parsed node-local entries."""

    globs: list[str]
    settings: list[Setting]

    def path_is_local(self, path: str) -> bool:
        return any(
            fnmatch.fnmatchcase(path, glob)
            if glob.startswith("/")
            else path.endswith("/" + glob.lstrip("*/"))
            for glob in self.globs
        )

    def settings_of(self, path: str) -> list[Setting]:
        return [setting for setting in self.settings if setting.matches_file(path)]


_INI = re.compile(r"^\[(?P<section>[^\]]+)\]/(?P<key>.+)$")


def parse(entries: list[str]) -> Local:
    """Split node-local entries into path globs and settings."""
    globs, settings = [], []
    for entry in entries:
        file, colon, setting = entry.partition(":")
        if not colon or not setting:
            globs.append(entry)
            continue
        found = _INI.match(setting.strip())
        if found:
            settings.append(Setting(file, found["section"].strip(), found["key"].strip()))
        else:
            settings.append(Setting(file, None, setting.strip()))
    return Local(globs, settings)


def _is_section(line: str) -> str | None:
    stripped = line.strip()
    if stripped.startswith("[") and stripped.endswith("]"):
        return stripped[1:-1].strip()
    return None


def _line_matches(line: str, setting: Setting, section: str | None) -> bool:
    stripped = line.strip()
    if not stripped or stripped.startswith(("#", ";")):
        return False
    if setting.section is not None:
        if section != setting.section:
            return False
        return re.match(rf"{re.escape(setting.key)}\s*[=:]", stripped, re.IGNORECASE) is not None
    pattern = rf"{re.escape(setting.key)}(\s|=|$)"
    return re.match(pattern, stripped, re.IGNORECASE) is not None


def _matching(lines: list[str], setting: Setting) -> list[int]:
    found, section = [], None
    for index, line in enumerate(lines):
        header = _is_section(line)
        if header is not None:
            section = header
            continue
        if _line_matches(line, setting, section):
            found.append(index)
    return found


def strip(text: str, settings: list[Setting]) -> str:
    """Return text without the lines of the given settings (for comparing across nodes)."""
    lines = text.splitlines()
    drop = {index for setting in settings for index in _matching(lines, setting)}
    return "\n".join(line for index, line in enumerate(lines) if index not in drop) + "\n"


def merge(incoming: str, live: str | None, settings: list[Setting]) -> str:
    """Return incoming with each setting's lines taken from live (this node's own values).

    A setting live lacks is removed from incoming; one incoming lacks is added (at the end of
    its INI section, or of the file).
    """
    lines = incoming.splitlines()
    live_lines = (live or "").splitlines()
    for setting in settings:
        own = [live_lines[index] for index in _matching(live_lines, setting)]
        theirs = _matching(lines, setting)
        if theirs:
            first = theirs[0]
            lines = [line for index, line in enumerate(lines) if index not in theirs[1:]]
            lines[first : first + 1] = own
        elif own:
            lines = _insert(lines, own, setting.section)
    return "\n".join(lines) + ("\n" if incoming.endswith("\n") or not incoming else "")


def _insert(lines: list[str], new: list[str], section: str | None) -> list[str]:
    if section is None:
        return [*lines, *new]
    start = next((i for i, line in enumerate(lines) if _is_section(line) == section), None)
    if start is None:
        return [*lines, f"[{section}]", *new]
    end = next(
        (i for i in range(start + 1, len(lines)) if _is_section(lines[i]) is not None), len(lines)
    )
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1
    return [*lines[:end], *new, *lines[end:]]
