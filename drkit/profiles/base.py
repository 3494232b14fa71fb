"""What every server profile returns: the files that make the node, and what to check."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Entry:
    """One path of the node (absolute, as the node's own config names it) and its category."""

    path: str
    category: str


@dataclass
class Inventory:
    """What a profile found on a node: files to back up and what restore must recreate."""

    files: list[Entry] = field(default_factory=list)
    dirs: list[Entry] = field(default_factory=list)
    users: list[str] = field(default_factory=list)
    owned_globs: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def merge(self, other: Inventory) -> None:
        """Add other's findings to this inventory, keeping the first category of a path."""
        seen = {entry.path for entry in self.files}
        self.files += [entry for entry in other.files if entry.path not in seen]
        seen_dirs = {entry.path for entry in self.dirs}
        self.dirs += [entry for entry in other.dirs if entry.path not in seen_dirs]
        self.users += [user for user in other.users if user not in self.users]
        self.owned_globs += [glob for glob in other.owned_globs if glob not in self.owned_globs]
        self.warnings += other.warnings
