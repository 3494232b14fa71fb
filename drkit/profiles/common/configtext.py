"""A server's configuration as text: directive lines parsed and rewritten for a runnable copy,
the copy written privately, a node's config file read, sshd-style argument splitting."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

from drkit.paths import on_root


def parsed_lines(
    text: str, parse: Callable[[str], tuple[str, str, list[str]] | None]
) -> Iterator[tuple[int, str, str, list[str]]]:
    """Yield (line number, token, keyword, args) of each directive line parse understands."""
    for number, raw in enumerate(text.splitlines(), 1):
        parsed = parse(raw)
        if parsed is not None:
            yield number, *parsed


def rewritten_lines(
    text: str,
    parse: Callable[[str], tuple[str, str, list[str]] | None],
    rewrite: Callable[[int, str, str, str, list[str]], list[str]],
) -> list[str]:
    """Return the lines of a config file's runnable copy: each directive line parse understands
    becomes the lines rewrite(line number, raw line, token, keyword, args) returns; every other
    line (blank, comment) stays as it is."""
    out: list[str] = []
    for number, raw in enumerate(text.splitlines(), 1):
        parsed = parse(raw)
        out += [raw] if parsed is None else rewrite(number, raw, *parsed)
    return out


def write_config_copy(
    copy: Path, lines: list[str], mode: int = 0o600, dir_mode: int = 0o700
) -> None:
    """Write a config file's copy: its folder made (dir_mode) if need be, the file private
    before a line is in it (it may hold a secret), then given mode."""
    copy.parent.mkdir(mode=dir_mode, parents=True, exist_ok=True)
    copy.touch(mode=0o600)
    copy.chmod(mode)
    copy.write_text("\n".join(lines) + "\n")


class ParsedConfig(Protocol):
    """What read_config_text fills in: a profile's parsed config."""

    files: list[str]
    texts: dict[str, str]
    warnings: list[str]


def read_config_text(root: Path, node_path: str, config: ParsedConfig) -> str | None:
    """Read one of a node's config files into config (a profile's parsed config: its `files`,
    `texts` and `warnings`); return the text, or None (and a warning) when it is unreadable."""
    try:
        text = on_root(root, node_path).read_text(errors="replace")
    except OSError as exc:
        config.warnings.append(f"{node_path}: cannot read ({exc.strerror or exc})")
        return None
    if node_path not in config.files:
        config.files.append(node_path)
    config.texts[node_path] = text
    return text


def split_args(text: str) -> list[str]:
    """Split a directive's arguments like sshd: quotes, backslash escapes, '#' comments."""
    args: list[str] = []
    current: list[str] = []
    quote, started, i = "", False, 0
    while i < len(text):
        char = text[i]
        if quote:
            if char == "\\" and text[i + 1 : i + 2] in (quote, "\\"):
                current.append(text[i + 1])
                i += 1
            elif char == quote:
                quote = ""
            else:
                current.append(char)
        elif char.isspace():
            if started:
                args.append("".join(current))
                current, started = [], False
        elif char == "\\" and text[i + 1 : i + 2] in ('"', "'", "\\", " "):
            current.append(text[i + 1])
            started = True
            i += 1
        elif char in "\"'":
            quote, started = char, True
        elif char == "#" and not started:
            break
        else:
            current.append(char)
            started = True
        i += 1
    if started:
        args.append("".join(current))
    return args
