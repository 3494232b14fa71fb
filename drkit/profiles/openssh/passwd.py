"""The node's accounts as sshd reads them, and its `~` expansion."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from drkit.engines import accounts
from drkit.model import GroupEntry, PasswdEntry, ShadowEntry


@dataclass
class Accounts:
    """The node's passwd, group and shadow entries."""

    users: dict[str, PasswdEntry]
    groups: list[GroupEntry]
    shadow: dict[str, ShadowEntry] = field(default_factory=dict)

    @classmethod
    def of(cls, root: Path) -> Accounts:
        users = accounts.passwd_entries(root)
        shadow = {
            record.name: record.shadow_entry
            for record in accounts.read_entries(root, list(users))
            if record.shadow_entry
        }
        return cls(users, accounts.group_entries(root), shadow)

    def groups_of(self, user: str) -> list[str]:
        """Return the names of user's primary and supplementary groups."""
        gid = self.users[user].gid if user in self.users else None
        return [g.name for g in self.groups if g.gid == gid or user in g.members]

    def members(self, group: str) -> list[str]:
        """Return the users in group: its listed members and the users whose primary gid it is."""
        found: list[str] = []
        for entry in self.groups:
            if entry.name == group:
                found += entry.members
                found += [name for name, user in self.users.items() if user.gid == entry.gid]
        return list(dict.fromkeys(found))

    def home(self, user: str) -> str | None:
        entry = self.users.get(user)
        return (entry.home or "/") if entry else None

    def password(self, user: str) -> str:
        """Return user's password field: shadow's, else passwd's."""
        shadow = self.shadow.get(user)
        return shadow.password if shadow else self.users[user].password


def tilde(path: str, db: Accounts, as_user: str) -> str | None:
    """tilde_expand_filename: ~/ is as_user's home, ~name/ name's; None for an unknown name."""
    if not path.startswith("~"):
        return path
    head, _, rest = path[1:].partition("/")
    home = db.home(head or as_user)
    if home is None:
        return "/root/" + rest if not head and as_user == "root" else None
    return home.rstrip("/") + "/" + rest
