"""The node's accounts as sshd reads them, and its `~` expansion."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from drkit.engines import accounts


@dataclass
class Accounts:
    """The node's passwd, group and shadow records."""

    users: dict[str, list[str]]
    groups: list[list[str]]
    shadow: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def of(cls, root: Path) -> Accounts:
        users = accounts.passwd_entries(root)
        shadow = {
            entry["name"]: (entry["shadow"].split(":") + [""] * 9)[:9]
            for entry in accounts.read_entries(root, list(users))
            if entry.get("shadow")
        }
        return cls(users, accounts.group_entries(root), shadow)

    def groups_of(self, user: str) -> list[str]:
        """Return the names of user's primary and supplementary groups."""
        gid = self.users[user][3] if user in self.users else None
        return [g[0] for g in self.groups if g[2] == gid or user in g[3].split(",")]

    def home(self, user: str) -> str | None:
        entry = self.users.get(user)
        return (entry[5] or "/") if entry else None


def tilde(path: str, db: Accounts, as_user: str) -> str | None:
    """tilde_expand_filename: ~/ is as_user's home, ~name/ name's; None for an unknown name."""
    if not path.startswith("~"):
        return path
    head, _, rest = path[1:].partition("/")
    home = db.home(head or as_user)
    if home is None:
        return "/root/" + rest if not head and as_user == "root" else None
    return home.rstrip("/") + "/" + rest
