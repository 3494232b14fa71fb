"""What changed between two signed manifests, in words an operator acts on.

Only manifests are compared here (no policy, no I/O): files added, removed and changed by
category; host keys replaced; certificates renewed or now expiring sooner; user keys added or
removed; accounts added, removed or changed. Secrets never appear: a private key is named by its
path and public fingerprint only, a shadow entry only as "password hash changed", and the
unified diffs (made by the caller) are limited to text files of the categories in TEXT_DIFF
that hold no key.
"""

from __future__ import annotations

import difflib
import posixpath
import re
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import NamedTuple

from drkit.model import parse_utc

TEXT_DIFF_CATEGORIES = ("config", "scripts")
TEXT_DIFF_MAX_BYTES = 256 * 1024
_HASH = re.compile(r"\$(?:1|2[abxy]?|5|6|y|gy|7|sha1|md5)\$[^\s:]+")
_PRIVATE_BLOCK = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")


def _name(path: str) -> str:
    return posixpath.basename(path)


def _time(text: str) -> datetime:
    return parse_utc(text)


def _file_detail(old: dict, new: dict, private: bool) -> str:
    """Return how one file changed: content, size, mode, owner, link, type."""
    parts = []
    if old.get("type") != new.get("type"):
        parts.append(f"type {old.get('type')} → {new.get('type')}")
    elif new.get("type") == "symlink" and old.get("link") != new.get("link"):
        parts.append(f"symlink {old.get('link')} → {new.get('link')}")
    elif new.get("type") == "file" and old.get("sha256") != new.get("sha256"):
        if private:
            parts.append("private key content changed (not shown)")
        else:
            parts.append(f"content changed ({old.get('size')} → {new.get('size')} bytes)")
    if old.get("mode") != new.get("mode"):
        parts.append(f"mode {old.get('mode')} → {new.get('mode')}")
    old_owner = f"{old.get('user')}:{old.get('group')}"
    new_owner = f"{new.get('user')}:{new.get('group')}"
    if (old.get("uid"), old.get("gid")) != (new.get("uid"), new.get("gid")):
        parts.append(f"owner {old_owner} → {new_owner}")
    return "; ".join(parts)


def _entries(
    old: dict, new: dict, section: str, key: str = "path"
) -> Iterator[tuple[str, dict | None, dict | None]]:
    """Yield (key, old entry, new entry) for each entry of a manifest section (its `key`
    naming it) in either manifest, by key; None on the side that lacks it."""
    before = {entry[key]: entry for entry in old.get(section, [])}
    after = {entry[key]: entry for entry in new.get(section, [])}
    for name in sorted(set(before) | set(after)):
        yield name, before.get(name), after.get(name)


def _change(category: str, path: str, change: str, detail: str = "") -> dict:
    """Return one row of compare's changes."""
    return {"category": category, "path": path, "change": change, "detail": detail}


def _private_paths(manifest: dict) -> set[str]:
    return {key["path"] for key in manifest.get("keys", []) if key.get("private")}


def compare_files(old: dict, new: dict) -> list[dict]:
    """Return [{category, path, change, detail}] for every file added, removed or changed."""
    private = _private_paths(old) | _private_paths(new)
    changes = []
    for path, was, now in _entries(old, new, "files"):
        if was is None:
            detail = now["type"] if now["type"] != "file" else f"{now.get('size')} bytes"
            changes.append(_change(now["category"], path, "added", detail))
        elif now is None:
            changes.append(_change(was["category"], path, "removed"))
        elif detail := _file_detail(was, now, path in private):
            changes.append(_change(now["category"], path, "changed", detail))
    return changes


class _Sentences(NamedTuple):
    """What to say of an entry of a fingerprinted section: added and removed are templates
    (fields: name, path, now or was, the entries), replaced(path, was, now) a function."""

    added: str
    removed: str
    replaced: Callable[[str, dict, dict], str]


def _fingerprint_notes(old: dict, new: dict, section: str, say: _Sentences) -> list[str]:
    """Return one sentence per entry of a manifest section (entries named by path, told apart
    by fingerprint) that was added, removed, or replaced by one with another fingerprint."""
    notes = []
    for path, was, now in _entries(old, new, section):
        if was is None:
            notes.append(say.added.format(name=_name(path), path=path, now=now))
        elif now is None:
            notes.append(say.removed.format(name=_name(path), path=path, was=was))
        elif was["fingerprint"] != now["fingerprint"]:
            notes.append(say.replaced(path, was, now))
    return notes


def host_key_notes(old: dict, new: dict) -> list[str]:
    """Return sentences about host keys replaced, added or removed."""
    return _fingerprint_notes(old, new, "host_keys", _HOST_KEYS)


def certificate_notes(old: dict, new: dict) -> list[str]:
    """Return sentences about certificates renewed, replaced, added or removed."""
    return _fingerprint_notes(old, new, "certificates", _CERTIFICATES)


def host_key_replaced(path: str, was: dict, now: dict) -> str:
    return (
        f"host key {_name(path)} replaced: {was['fingerprint']} → {now['fingerprint']}; "
        "clients that pinned the old key will refuse to connect"
    )


def _certificate_replaced(path: str, was: dict, now: dict) -> str:
    """Return the sentence for a certificate another one replaced: renewed, or expiring sooner
    or the same day; a new subject or key is named."""
    old_end, new_end = _time(was["not_after"]), _time(now["not_after"])
    if new_end > old_end:
        sentence = (
            f"certificate {path} renewed: expires {now['not_after']} (was {was['not_after']})"
        )
    elif new_end < old_end:
        sentence = (
            f"certificate {path} replaced and now expires sooner: {now['not_after']} "
            f"(was {was['not_after']})"
        )
    else:
        sentence = f"certificate {path} replaced, same expiry {now['not_after']}"
    if was["subject"] != now["subject"]:
        sentence += f"; subject {was['subject']} → {now['subject']}"
    if was["key_fingerprint"] != now["key_fingerprint"]:
        sentence += "; it certifies a new key"
    return sentence


_HOST_KEYS = _Sentences(
    added="host key {name} added ({now[type]} {now[fingerprint]})",
    removed="host key {name} removed (was {was[fingerprint]})",
    replaced=host_key_replaced,
)
_CERTIFICATES = _Sentences(
    added="certificate {path} added ({now[subject]}, expires {now[not_after]})",
    removed="certificate {path} removed ({was[subject]})",
    replaced=_certificate_replaced,
)


def key_user(manifest: dict, path: str) -> str:
    """Return the account whose logins an authorized-keys file serves: the account the file
    is named after (AuthorizedKeysFile /etc/ssh/authorized_keys/%u), else the one whose home
    holds it, else the file's owner when that is not root; "?" when none is known."""
    homes: dict[str, str] = {}
    for account in manifest.get("accounts", []):
        fields = str(account.get("passwd") or "").split(":")
        if len(fields) > 5 and fields[5] not in ("", "/"):
            homes[str(account.get("name"))] = fields[5].rstrip("/")
    if posixpath.basename(path) in homes:
        return posixpath.basename(path)
    inside = [name for name, home in homes.items() if path.startswith(home + "/")]
    if inside:
        return max(inside, key=lambda name: len(homes[name]))
    for entry in manifest.get("files", []):
        if entry["path"] == path and entry.get("uid") not in (0, None):
            return str(entry.get("user") or "?")
    match = re.match(r"^/home/([^/]+)/", path)
    return match.group(1) if match else "?"


def user_key_notes(old: dict, new: dict) -> list[str]:
    """Return sentences about authorized keys added or removed, per user."""
    notes = []

    def listed(manifest: dict) -> dict[tuple[str, str], dict]:
        return {
            (key["path"], key["fingerprint"]): key
            for key in manifest.get("keys", [])
            if key.get("category") == "user_keys" and not key.get("private")
        }

    before, after = listed(old), listed(new)
    for path, fingerprint in sorted(set(after) - set(before)):
        user = key_user(new, path)
        key_type = after[(path, fingerprint)]["type"]
        notes.append(f"user {user}: key {fingerprint} ({key_type}) added to {path}")
    for path, fingerprint in sorted(set(before) - set(after)):
        user = key_user(old, path)
        key_type = before[(path, fingerprint)]["type"]
        notes.append(f"user {user}: key {fingerprint} ({key_type}) removed from {path}")
    return notes


_PASSWD_FIELDS = ("name", "password", "uid", "gid", "comment", "home", "shell")


def account_changes(old: dict, new: dict) -> tuple[list[dict], list[str]]:
    """Return (changes, notes) for the accounts the server needs. Shadow entries are compared
    but never shown: a changed one is reported as "password hash changed"."""
    changes, notes = [], []
    for name, was, now in _entries(old, new, "accounts", key="name"):
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
        old_fields = (was["passwd"].split(":") + [""] * 7)[:7]
        new_fields = (now["passwd"].split(":") + [""] * 7)[:7]
        for label, a, b in zip(_PASSWD_FIELDS, old_fields, new_fields, strict=True):
            if a != b and label != "password":
                parts.append(f"{label} {a} → {b}")
        if (was.get("shadow") or "") != (now.get("shadow") or ""):
            parts.append("password hash changed (not shown)")
        old_groups = {line.split(":")[0] for line in was.get("groups", [])}
        new_groups = {line.split(":")[0] for line in now.get("groups", [])}
        parts += [f"added to group {group}" for group in sorted(new_groups - old_groups)]
        parts += [f"removed from group {group}" for group in sorted(old_groups - new_groups)]
        if parts:
            detail = "; ".join(parts)
            changes.append(_change("accounts", path, "changed", detail))
            notes.append(f"account {name} changed: {detail}")
    return changes, notes


def compare(old: dict, new: dict) -> tuple[list[dict], list[str]]:
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


def wants_text_diff(change: dict, old: dict, new: dict) -> bool:
    """Return True when a change deserves a unified diff: a text-category file that holds no
    key, small enough to read."""
    if change["category"] not in TEXT_DIFF_CATEGORIES:
        return False
    if change["path"] in _private_paths(old) | _private_paths(new):
        return False
    key_paths = {key["path"] for manifest in (old, new) for key in manifest.get("keys", [])}
    if change["path"] in key_paths:
        return False
    for manifest in (old, new):
        for entry in manifest.get("files", []):
            if entry["path"] == change["path"] and (
                entry.get("type") != "file" or (entry.get("size") or 0) > TEXT_DIFF_MAX_BYTES
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
