"""What changed between two signed manifests, in words an operator acts on.

Only manifests are compared here (no policy, no I/O): files added, removed and changed by
category; host keys replaced; certificates renewed or now expiring sooner; user keys added or
removed; accounts added, removed or changed. Secrets never appear: a private key is named by its
path and public fingerprint only, a shadow entry only as "password hash changed", and the
unified diffs (made by the caller) are limited to text files of the categories in TEXT_DIFF
that hold no key.
"""

from __future__ import annotations

import dataclasses
import difflib
import posixpath
import re
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Generic, NamedTuple, TypeVar

from drkit.model import (
    AccountRecord,
    CertificateRecord,
    FileRecord,
    HostKeyRecord,
    KeyRecord,
    Manifest,
    parse_utc,
)

TEXT_DIFF_CATEGORIES = ("config", "scripts")
TEXT_DIFF_MAX_BYTES = 256 * 1024
_HASH = re.compile(r"\$(?:1|2[abxy]?|5|6|y|gy|7|sha1|md5)\$[^\s:]+")
_PRIVATE_BLOCK = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")


_Named = TypeVar("_Named", FileRecord, HostKeyRecord, CertificateRecord, AccountRecord)
_Fingerprinted = TypeVar("_Fingerprinted", HostKeyRecord, CertificateRecord)


def _name(path: str) -> str:
    return posixpath.basename(path)


def _time(text: str) -> datetime:
    return parse_utc(text)


def _file_detail(old: FileRecord, new: FileRecord, private: bool) -> str:
    """Return how one file changed: content, size, mode, owner, link, type."""
    parts = []
    if old.type != new.type:
        parts.append(f"type {old.type} → {new.type}")
    elif new.type == "symlink" and old.link != new.link:
        parts.append(f"symlink {old.link} → {new.link}")
    elif new.type == "file" and old.sha256 != new.sha256:
        if private:
            parts.append("private key content changed (not shown)")
        else:
            parts.append(f"content changed ({old.size} → {new.size} bytes)")
    if old.mode != new.mode:
        parts.append(f"mode {old.mode} → {new.mode}")
    if (old.uid, old.gid) != (new.uid, new.gid):
        parts.append(f"owner {old.user}:{old.group} → {new.user}:{new.group}")
    return "; ".join(parts)


def _entries(
    old: list[_Named], new: list[_Named]
) -> Iterator[tuple[str, _Named | None, _Named | None]]:
    """Yield (name, old entry, new entry) for each entry of a manifest section (named by path,
    accounts by name) in either manifest, by name; None on the side that lacks it."""
    before = {_key(entry): entry for entry in old}
    after = {_key(entry): entry for entry in new}
    for name in sorted(set(before) | set(after)):
        yield name, before.get(name), after.get(name)


def _key(entry: FileRecord | HostKeyRecord | CertificateRecord | AccountRecord) -> str:
    return entry.name if isinstance(entry, AccountRecord) else entry.path


def _change(category: str, path: str, change: str, detail: str = "") -> dict[str, str]:
    """Return one row of compare's changes."""
    return {"category": category, "path": path, "change": change, "detail": detail}


def compare_files(old: Manifest, new: Manifest) -> list[dict[str, str]]:
    """Return [{category, path, change, detail}] for every file added, removed or changed."""
    private = old.private_key_paths() | new.private_key_paths()
    changes = []
    for path, was, now in _entries(old.files, new.files):
        if was is None and now is not None:
            detail = now.type if now.type != "file" else f"{now.size} bytes"
            changes.append(_change(now.category, path, "added", detail))
        elif now is None and was is not None:
            changes.append(_change(was.category, path, "removed"))
        elif was and now and (detail := _file_detail(was, now, path in private)):
            changes.append(_change(now.category, path, "changed", detail))
    return changes


class _Sentences(NamedTuple, Generic[_Fingerprinted]):
    """What to say of an entry of a fingerprinted section added (path, the new entry),
    removed (path, the old entry), or replaced (path, the old entry, the new one)."""

    added: Callable[[str, _Fingerprinted], str]
    removed: Callable[[str, _Fingerprinted], str]
    replaced: Callable[[str, _Fingerprinted, _Fingerprinted], str]


def _fingerprint_notes(
    old: list[_Fingerprinted], new: list[_Fingerprinted], say: _Sentences[_Fingerprinted]
) -> list[str]:
    """Return one sentence per entry of a manifest section (entries named by path, told apart
    by fingerprint) that was added, removed, or replaced by one with another fingerprint."""
    notes = []
    for path, was, now in _entries(old, new):
        if was is None and now is not None:
            notes.append(say.added(path, now))
        elif now is None and was is not None:
            notes.append(say.removed(path, was))
        elif was and now and was.fingerprint != now.fingerprint:
            notes.append(say.replaced(path, was, now))
    return notes


def host_key_notes(old: Manifest, new: Manifest) -> list[str]:
    """Return sentences about host keys replaced, added or removed."""
    return _fingerprint_notes(old.host_keys, new.host_keys, _HOST_KEYS)


def certificate_notes(old: Manifest, new: Manifest) -> list[str]:
    """Return sentences about certificates renewed, replaced, added or removed."""
    return _fingerprint_notes(old.certificates, new.certificates, _CERTIFICATES)


def host_key_replaced(path: str, was_fingerprint: str, now_fingerprint: str) -> str:
    return (
        f"host key {_name(path)} replaced: {was_fingerprint} → {now_fingerprint}; "
        "clients that pinned the old key will refuse to connect"
    )


def _certificate_replaced(path: str, was: CertificateRecord, now: CertificateRecord) -> str:
    """Return the sentence for a certificate another one replaced: renewed, or expiring sooner
    or the same day; a new subject or key is named."""
    old_end, new_end = _time(was.not_after), _time(now.not_after)
    if new_end > old_end:
        sentence = f"certificate {path} renewed: expires {now.not_after} (was {was.not_after})"
    elif new_end < old_end:
        sentence = (
            f"certificate {path} replaced and now expires sooner: {now.not_after} "
            f"(was {was.not_after})"
        )
    else:
        sentence = f"certificate {path} replaced, same expiry {now.not_after}"
    if was.subject != now.subject:
        sentence += f"; subject {was.subject} → {now.subject}"
    if was.key_fingerprint != now.key_fingerprint:
        sentence += "; it certifies a new key"
    return sentence


_HOST_KEYS = _Sentences[HostKeyRecord](
    added=lambda path, now: f"host key {_name(path)} added ({now.type} {now.fingerprint})",
    removed=lambda path, was: f"host key {_name(path)} removed (was {was.fingerprint})",
    replaced=lambda path, was, now: host_key_replaced(path, was.fingerprint, now.fingerprint),
)
_CERTIFICATES = _Sentences[CertificateRecord](
    added=lambda path, now: f"certificate {path} added ({now.subject}, expires {now.not_after})",
    removed=lambda path, was: f"certificate {path} removed ({was.subject})",
    replaced=_certificate_replaced,
)


def key_user(accounts: list[AccountRecord], files: list[FileRecord], path: str) -> str:
    """Return the account whose logins an authorized-keys file serves: the account the file
    is named after (AuthorizedKeysFile /etc/ssh/authorized_keys/%u), else the one whose home
    holds it, else the file's owner when that is not root; "?" when none is known."""
    homes: dict[str, str] = {}
    for account in accounts:
        home = account.entry.home
        if home not in ("", "/"):
            homes[account.name] = home.rstrip("/")
    if posixpath.basename(path) in homes:
        return posixpath.basename(path)
    inside = [name for name, home in homes.items() if path.startswith(home + "/")]
    if inside:
        return max(inside, key=lambda name: len(homes[name]))
    for entry in files:
        if entry.path == path and entry.uid != 0:
            return entry.user or "?"
    match = re.match(r"^/home/([^/]+)/", path)
    return match.group(1) if match else "?"


def user_key_notes(old: Manifest, new: Manifest) -> list[str]:
    """Return sentences about authorized keys added or removed, per user."""
    notes = []

    def listed(manifest: Manifest) -> dict[tuple[str, str], KeyRecord]:
        return {
            (key.path, key.fingerprint): key
            for key in manifest.keys
            if key.category == "user_keys" and not key.private
        }

    before, after = listed(old), listed(new)
    for path, fingerprint in sorted(set(after) - set(before)):
        user = key_user(new.accounts, new.files, path)
        key_type = after[(path, fingerprint)].type
        notes.append(f"user {user}: key {fingerprint} ({key_type}) added to {path}")
    for path, fingerprint in sorted(set(before) - set(after)):
        user = key_user(old.accounts, old.files, path)
        key_type = before[(path, fingerprint)].type
        notes.append(f"user {user}: key {fingerprint} ({key_type}) removed from {path}")
    return notes


_PASSWD_FIELDS = ("name", "password", "uid", "gid", "comment", "home", "shell")


def account_changes(old: Manifest, new: Manifest) -> tuple[list[dict[str, str]], list[str]]:
    """Return (changes, notes) for the accounts the server needs. Shadow entries are compared
    but never shown: a changed one is reported as "password hash changed"."""
    changes, notes = [], []
    for name, was, now in _entries(old.accounts, new.accounts):
        path = f"/etc/passwd:{name}"
        if was is None:
            changes.append(_change("accounts", path, "added", "new account"))
            notes.append(f"new allowed user {name}")
            continue
        if now is None:
            changes.append(_change("accounts", path, "removed"))
            notes.append(f"user {name} is no longer among the server's accounts")
            continue
        parts = []
        old_fields = dataclasses.astuple(was.entry)
        new_fields = dataclasses.astuple(now.entry)
        for label, a, b in zip(_PASSWD_FIELDS, old_fields, new_fields, strict=True):
            if a != b and label != "password":
                parts.append(f"{label} {a} → {b}")
        if (was.shadow or "") != (now.shadow or ""):
            parts.append("password hash changed (not shown)")
        old_groups = {group.name for group in was.group_entries}
        new_groups = {group.name for group in now.group_entries}
        parts += [f"added to group {group}" for group in sorted(new_groups - old_groups)]
        parts += [f"removed from group {group}" for group in sorted(old_groups - new_groups)]
        if parts:
            detail = "; ".join(parts)
            changes.append(_change("accounts", path, "changed", detail))
            notes.append(f"account {name} changed: {detail}")
    return changes, notes


def compare(old: Manifest, new: Manifest) -> tuple[list[dict[str, str]], list[str]]:
    """Return (changes, notes) between two manifests."""
    changes = compare_files(old, new)
    account_list, account_notes = account_changes(old, new)
    notes = (
        host_key_notes(old, new)
        + certificate_notes(old, new)
        + user_key_notes(old, new)
        + account_notes
    )
    return changes + account_list, notes


def wants_text_diff(change: dict[str, str], old: Manifest, new: Manifest) -> bool:
    """Return True when a change deserves a unified diff: a text-category file that holds no
    key, small enough to read."""
    if change["category"] not in TEXT_DIFF_CATEGORIES:
        return False
    key_paths = {key.path for manifest in (old, new) for key in manifest.keys}
    if change["path"] in key_paths:
        return False
    for manifest in (old, new):
        for entry in manifest.files:
            if entry.path == change["path"] and (
                entry.type != "file" or (entry.size or 0) > TEXT_DIFF_MAX_BYTES
            ):
                return False
    return change["change"] == "added" or "content changed" in change["detail"]


def unified(path: str, old_text: str | None, new_text: str | None) -> str | None:
    """Return a unified diff of two texts, or None when either side is not safe to show
    (binary, or holding private key material); crypt hashes are masked."""
    texts = []
    for text in (old_text, new_text):
        if text is None:
            texts.append("")
            continue
        if "\x00" in text or _PRIVATE_BLOCK.search(text):
            return None
        texts.append(_HASH.sub("[hash not shown]", text))
    lines = difflib.unified_diff(
        texts[0].splitlines(keepends=True),
        texts[1].splitlines(keepends=True),
        fromfile=f"a{path}" if old_text is not None else "/dev/null",
        tofile=f"b{path}" if new_text is not None else "/dev/null",
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)
