"""Which servers a node's root holds, and the profile options their units name."""

from __future__ import annotations

from pathlib import Path

from drkit import errors, profiles
from drkit.profiles.interface import Detection


def detect(root: Path) -> dict[str, Detection]:
    """Return {kind: what shows it} for every server whose config is on root."""
    found = {}
    for kind in profiles.KINDS:
        detection = profiles.get(kind).detect(root)
        if detection is not None:
            found[kind] = detection
    return found


def detected_options(detected: dict[str, Detection]) -> dict[str, dict[str, object]]:
    """Return the profile_options the detected servers need (configs their units name)."""
    return {kind: dict(found.options) for kind, found in detected.items() if found.options}


def detect_kinds(root: Path) -> list[str]:
    """Return the server kinds found on root, in a stable order."""
    return list(detect(root))


def resolve_servers(requested: list[str], root: Path) -> list[str]:
    """Given --server values and the node's root, return the server kinds, each once, in the
    order given; 'auto' stands for every server found on the root. Raise UsageError when
    'auto' finds none."""
    kinds: list[str] = []
    for value in requested:
        if value == "auto":
            found = detect_kinds(Path(root).resolve())
            if not found:
                raise errors.UsageError(f"--server auto: no known server under {root}")
            kinds += found
        else:
            kinds.append(value)
    return list(dict.fromkeys(kinds))
