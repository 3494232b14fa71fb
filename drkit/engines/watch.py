"""Security-change watch: what changed between two snapshots of a node that an intruder would do.

When a transfer node is breached, the traces are the files drkit backs up: a key added to a
partner account, a host key replaced, an account given uid 0, password or root logins allowed,
a post-upload script changed, files gone. Every backup classifies its changes against the
node's previous snapshot into events with the words `drkit diff` uses; an event alerts until
an operator acknowledges it as planned with a signed acknowledgement (an attacker holding only
the bucket cannot sign one).

The comparison needs little of each snapshot (a Baseline): the file count, host and user key
fingerprints, accounts, script hashes, and the text of the watched configuration directives.
"""

from __future__ import annotations

import hashlib
import re

from pydantic import BaseModel, ConfigDict

from drkit.engines import diff
from drkit.model import AccountRecord, EventKind, Manifest, PasswdEntry, SecurityEvent

FILES_DROPPED_SHARE = 0.2  # a fifth of the node's files gone between two backups

# Directives whose value, changed, weakens authentication: name (lower case) -> the values
# that are the weak side. A directive whose every value is weak (None) counts when it changes.
_SSHD_WEAK = {
    "passwordauthentication": {"yes"},
    "permitrootlogin": {"yes", "without-password", "prohibit-password"},
    "permitemptypasswords": {"yes"},
    "kbdinteractiveauthentication": {"yes"},
    "challengeresponseauthentication": {"yes"},
    "authorizedkeysfile": None,
    "authorizedkeyscommand": None,
    "authorizedkeyscommanduser": None,
}
_FTP_WEAK = {
    "anonymous_enable": {"yes"},  # vsftpd
    "anon_upload_enable": {"yes"},
    "ssl_tlsv1": {"yes"},
    "ssl_sslv3": {"yes"},
    "ssl_sslv2": {"yes"},
    "force_local_logins_ssl": {"no"},
    "tlsprotocol": None,  # proftpd
    "tlsrequired": {"off"},
    "authorder": None,
}
_WATCHED = {**_SSHD_WEAK, **_FTP_WEAK}
_DIRECTIVE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:=\s*|\s+)(.*?)\s*$")
_CHROOT = ("chrootdirectory", "defaultroot", "chroot_local_user")


class Baseline(BaseModel):
    """What the watch keeps of one snapshot to compare the next one with."""

    model_config = ConfigDict(extra="ignore")

    snapshot_id: str
    file_count: int
    host_keys: dict[str, str]  # path -> fingerprint
    user_keys: list[tuple[str, str]]  # (path, fingerprint)
    accounts: dict[str, str]  # name -> passwd line
    scripts: dict[str, str]  # path -> sha256
    directives: dict[str, list[str]]  # watched directive (lower case) -> values, config order


def baseline(snapshot_id: str, node_manifest: Manifest, texts: dict[str, str]) -> Baseline:
    """Return the watch's view of a snapshot: its manifest and the config texts it carries."""
    files = node_manifest.files
    configs = {entry.path for entry in files if entry.category == "config"}
    user_keys = [
        (key.path, key.fingerprint)
        for key in node_manifest.keys
        if key.category == "user_keys" and not key.private
    ]
    return Baseline(
        snapshot_id=snapshot_id,
        file_count=sum(entry.type == "file" for entry in files),
        host_keys={key.path: key.fingerprint for key in node_manifest.host_keys},
        user_keys=sorted(user_keys),
        accounts={account.name: account.passwd for account in node_manifest.accounts},
        scripts={
            entry.path: entry.sha256 or entry.link or entry.type
            for entry in files
            if entry.category == "scripts"
        },
        directives=directives(
            {path: text for path, text in sorted(texts.items()) if path in configs}
        ),
    )


def directives(texts: dict[str, str]) -> dict[str, list[str]]:
    """Return the watched directives' values across config texts (comments skipped), and
    whether a chroot is configured (`chroot`: ["yes"] or absent)."""
    found: dict[str, list[str]] = {}
    for text in texts.values():
        for line in text.splitlines():
            if line.lstrip().startswith(("#", ";")):
                continue
            match = _DIRECTIVE.match(line)
            if not match:
                continue
            name, value = match.group(1).lower(), match.group(2).strip().strip('"').lower()
            if name in _WATCHED:
                found.setdefault(name, []).append(value)
            elif name in _CHROOT and value not in ("no", "none", "off"):
                found["chroot"] = ["yes"]
    return found


def classify(old: Baseline, new: Baseline, time: str) -> list[SecurityEvent]:
    """Return the security events between a node's previous snapshot and its new one."""
    found: list[tuple[EventKind, str, str]] = []
    for path, fingerprint in sorted(new.host_keys.items()):
        was = old.host_keys.get(path)
        if was is not None and was != fingerprint:
            sentence = diff.host_key_replaced(path, was, fingerprint)
            found.append(("host_key_replaced", path, sentence))
    added_keys = sorted(set(new.user_keys) - set(old.user_keys))
    recorded = [AccountRecord(name=name, passwd=line) for name, line in new.accounts.items()]
    for path, fingerprint in added_keys:
        user = diff.key_user(recorded, [], path)
        found.append(("user_key_added", path, f"user {user}: key {fingerprint} added to {path}"))
    for name, line in sorted(new.accounts.items()):
        uid0 = PasswdEntry.parse(line).uid == "0" and name != "root"
        was = old.accounts.get(name)
        if was is None:
            found.append(("account_added", f"/etc/passwd:{name}", f"new allowed user {name}"))
        if uid0 and (was is None or PasswdEntry.parse(was).uid != "0"):
            found.append(
                ("uid0_account", f"/etc/passwd:{name}", f"account {name} has uid 0 (root's)")
            )
    found += _weakened(old.directives, new.directives)
    for path, digest in sorted(new.scripts.items()):
        if old.scripts.get(path) != digest:
            change = "added" if path not in old.scripts else "changed"
            found.append(("script_changed", path, f"script {path} {change}"))
    if old.file_count and new.file_count < old.file_count * (1 - FILES_DROPPED_SHARE):
        found.append(
            (
                "files_dropped",
                "/",
                f"file count down from {old.file_count} to {new.file_count} "
                f"(more than {FILES_DROPPED_SHARE:.0%})",
            )
        )
    return [
        SecurityEvent(
            id=_event_id(new.snapshot_id, kind, path),
            time=time,
            snapshot_id=new.snapshot_id,
            kind=kind,
            path=path,
            detail=detail,
        )
        for kind, path, detail in found
    ]


def _weakened(
    old: dict[str, list[str]], new: dict[str, list[str]]
) -> list[tuple[EventKind, str, str]]:
    found: list[tuple[EventKind, str, str]] = []
    for name, weak in _WATCHED.items():
        was, now = old.get(name, []), new.get(name, [])
        if was == now:
            continue
        newly_weak = weak is None or any(value in weak for value in set(now) - set(was))
        if newly_weak and now:
            shown_was = ", ".join(was) or "(unset)"
            found.append(("auth_weakened", name, f"{name} {', '.join(now)} (was {shown_was})"))
    if old.get("chroot") and not new.get("chroot"):
        found.append(("auth_weakened", "chroot", "chroot dropped: no chroot configured"))
    return found


def _event_id(snapshot_id: str, kind: str, path: str) -> str:
    """Return an event's stable id: its snapshot's short id and a hash of kind and path."""
    return f"{snapshot_id[:8]}-{hashlib.sha256(f'{kind}:{path}'.encode()).hexdigest()[:8]}"


def events_prefix(node: str) -> str:
    """Return where a node's signed event records live beside the repository."""
    return f"records/{node}/events/"


def events_key(node: str, snapshot_id: str) -> str:
    """Return the key of the events record of one snapshot."""
    return f"{events_prefix(node)}{snapshot_id}.json"


def acks_prefix(node: str) -> str:
    """Return where a node's signed acknowledgements live."""
    return f"records/{node}/acks/"


def ack_key(node: str, event_id: str) -> str:
    """Return the key of one event's acknowledgement."""
    return f"{acks_prefix(node)}{event_id}.json"
