"""Checks of key material on a node: private-key modes and owners, SSH host keys against the
manifest, X.509 certificates (pair, expiry, issuer chain, names)."""

from __future__ import annotations

import contextlib
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

from drkit.engines import accounts, keys
from drkit.model import (
    CertificateRecord,
    Check,
    KeyInfo,
    Manifest,
    failed,
    passed,
    utc_text,
    warned,
)
from drkit.paths import on_root
from drkit.profiles.common import configrefs

CERT_WARN_DAYS = 30


def describe_file(root: Path, node_path: str) -> KeyInfo | None:
    try:
        return keys.describe_key(on_root(root, node_path).read_bytes())
    except OSError:
        return None


# Groups whose only purpose is to let services read TLS private keys: Debian's ssl-cert package
# ships its snakeoil key 0640 root:ssl-cert and adds the daemons that need keys to that group.
TLS_KEY_GROUPS = ("ssl-cert",)


def _group_name(root: Path, gid: int, node_path: str, manifest: Manifest | None) -> str | None:
    """Return the name of gid from the node's groups, else as the manifest recorded it."""
    for group in accounts.group_entries(root):
        if group.gid == str(gid):
            return group.name
    for entry in manifest.files if manifest else []:
        if entry.path == node_path and entry.gid == gid:
            return entry.group
    return None


def private_key_mode_check(
    root: Path,
    node_path: str,
    label: str,
    forbid: int = 0o077,
    owners: tuple[int, ...] = (0,),
    *,
    group_readers: tuple[str, ...] = (),
    manifest: Manifest | None = None,
) -> Check:
    """Return pass when a private key has none of the forbidden bits and is owned by one of
    owners (uids; root alone unless the server runs as its own user, e.g. SFTPPlus).

    group_readers names groups allowed to read the key (0640): a dedicated key group such as
    TLS_KEY_GROUPS, for servers that read the key as root (never SSH host keys: sshd and
    mod_sftp refuse them). The group's name comes from the node, else from the manifest.
    """
    name = f"{label} mode: {node_path}"
    try:
        info = os.stat(on_root(root, node_path))
    except OSError:
        return failed(name, "missing")
    mode, problems = stat.S_IMODE(info.st_mode), []
    loose = mode & forbid
    group = _group_name(root, info.st_gid, node_path, manifest) if loose else None
    reader = loose == (forbid & 0o040) and group in group_readers
    if loose and not reader:
        problems.append(f"mode {mode:04o}: readable by others, must be 0600 or 0400")
    if info.st_uid not in owners:
        allowed = "root" if owners == (0,) else "root or the service user"
        problems.append(f"owned by uid {info.st_uid}, not {allowed}")
    owner = "root" if info.st_uid == 0 else f"uid {info.st_uid}"
    if problems:
        return failed(name, "; ".join(problems))
    if reader:
        return passed(
            name,
            f"{mode:04o} {owner}: group {group} may read it (a dedicated key group), no one else",
        )
    return passed(name, f"{mode:04o} {owner}")


def tls_key_mode_check(
    root: Path, node_path: str, forbid: int = 0o077, manifest: Manifest | None = None
) -> Check:
    """private_key_mode_check of a TLS key a server reads as root: TLS_KEY_GROUPS may read it."""
    return private_key_mode_check(
        root, node_path, "tls key", forbid, group_readers=TLS_KEY_GROUPS, manifest=manifest
    )


def host_key_checks(
    root: Path, paths: list[str], manifest: Manifest, owners: tuple[int, ...] = (0,)
) -> list[Check]:
    """Each host key: safe mode, parses, and has the fingerprint the manifest recorded."""
    recorded = {entry.path: entry for entry in manifest.host_keys}
    results = []
    for path in dict.fromkeys(paths):
        if not configrefs.is_file(root, path):
            continue
        results.append(private_key_mode_check(root, path, "host key", owners=owners))
        info = describe_file(root, path)
        name = f"host key: {path}"
        entry = recorded.get(path)
        if info is None:
            results.append(failed(name, "not a readable private key"))
        elif entry is None:
            results.append(warned(name, f"{info.type} {info.fingerprint}: not in the backup"))
        elif info.fingerprint != entry.fingerprint:
            detail = f"is {info.fingerprint}, the backup had {entry.fingerprint}"
            results.append(failed(name, detail))
        else:
            results.append(passed(name, f"{info.type} {info.fingerprint} as in the backup"))
    return results


def certificate_pair_check(root: Path, certificate: str, key: str | None) -> Check:
    """Return whether a certificate parses and its named private key matches it.

    Servers do not notice a mismatched pair at start-up (ProFTPD starts, then every TLS session
    dies): only this comparison, or a real login, finds it.
    """
    name = f"tls pair: {certificate}"
    try:
        info = keys.describe_certificate(on_root(root, certificate).read_bytes())
    except OSError as exc:
        return failed(name, f"certificate unreadable ({exc.strerror})")
    if info is None:
        return failed(name, "not a PEM certificate")
    if key is None:
        held = describe_file(root, certificate)
        if held is None or not held.private:
            return warned(name, "no key named for this certificate")
        if held.fingerprint != info.key_fingerprint:
            return failed(name, "the key in the same file does not match: TLS sessions would fail")
        return passed(name, "key held in the same file, matching")
    private = describe_file(root, key)
    if private is None:
        return failed(name, f"its key {key} is missing or does not parse")
    if private.fingerprint != info.key_fingerprint:
        return failed(name, f"{key} does not match the certificate: TLS sessions would fail")
    return passed(name, f"matches {key}")


def certificate_check(
    root: Path,
    entry: CertificateRecord,
    warn_days: int = CERT_WARN_DAYS,
    key_path: str | None = None,
    ok_note: str | None = "as in the backup",
) -> Check:
    """Expiry and equality with the backup of one manifest certificate; with key_path, the
    certificate must also match that private key. ok_note ends a pass's detail."""
    name = f"certificate: {entry.path}"
    try:
        info = keys.describe_certificate(on_root(root, entry.path).read_bytes())
    except OSError as exc:
        return failed(name, f"unreadable ({exc.strerror})")
    if info is None:
        return failed(name, "not a PEM certificate")
    notes = [ok_note] if ok_note else []
    if key_path:
        key = describe_file(root, key_path)
        if key is None:
            return failed(name, f"its key {key_path} is missing or unreadable")
        if key.fingerprint != info.key_fingerprint:
            return failed(name, f"does not match its key {key_path}")
        notes.append(f"matches {key_path}")
    left = info.not_after - datetime.now(UTC)
    until = utc_text(info.not_after)
    if entry.fingerprint and entry.fingerprint != info.fingerprint:
        return warned(name, f"differs from the backup; valid until {until}")
    if left <= timedelta(0):
        return failed(name, f"expired {until}")
    if left <= timedelta(days=warn_days):
        return warned(name, f"expires {until}, in {left.days} days")
    return passed(name, ", ".join([f"valid until {until}", *notes]))


def certificate_checks(root: Path, manifest: Manifest, paths: list[str]) -> list[Check]:
    """Expiry and equality with the backup of the manifest's certificates at the given paths."""
    wanted = set(paths)
    return [
        certificate_check(root, entry) for entry in manifest.certificates if entry.path in wanted
    ]


def certificate_names(root: Path, certificate: str) -> list[str]:
    """Return the DNS names a certificate was issued for (SAN, else CN)."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    cert = x509.load_pem_x509_certificate(on_root(root, certificate).read_bytes())
    with contextlib.suppress(x509.ExtensionNotFound):
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = san.value.get_values_for_type(x509.DNSName)
        if names:
            return names
    common_names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return [attr.value for attr in common_names if isinstance(attr.value, str)]


def issuer_checks(root: Path, chains: list[tuple[str, list[str]]]) -> list[Check]:
    """Each (certificate, [chain and CA files]): the certificate must be self-signed or signed
    by a certificate those files hold, so clients that trust the CA accept it."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature

    results = []
    for certificate, holders in chains:
        if not holders or not configrefs.is_file(root, certificate):
            continue
        name = f"tls chain: {certificate}"
        try:
            leaf = x509.load_pem_x509_certificate(on_root(root, certificate).read_bytes())
        except (OSError, ValueError):
            continue  # certificate_pair_check reports an unreadable certificate
        issuers = []
        for path in holders:
            with contextlib.suppress(OSError, ValueError):
                issuers += x509.load_pem_x509_certificates(on_root(root, path).read_bytes())
        signer = None
        for candidate in [leaf, *issuers]:
            with contextlib.suppress(ValueError, TypeError, InvalidSignature):
                leaf.verify_directly_issued_by(candidate)
                signer = candidate
                break
        if signer is None:
            detail = f"issuer {leaf.issuer.rfc4514_string()} is in none of {', '.join(holders)}"
            results.append(failed(name, detail))
        elif signer is leaf:
            results.append(passed(name, "self-signed"))
        else:
            results.append(passed(name, f"signed by {signer.subject.rfc4514_string()}"))
    return results
