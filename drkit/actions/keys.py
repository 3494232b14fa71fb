"""drkit keys: escrow the repository password to K-of-N holders, recover it, rotate keys.

escrow   SLIP-39 shares of the password, each encrypted to one holder's age recipient.
reveal   a holder decrypts their share to copy its words onto paper.
recover  K shares (age files with identities, or words typed or copied from paper) rebuild the
         password into a new 0600 file. Needs no drkit.yaml: made for a bare machine.
rotate   a new restic key and a new signing key; the old restic key is removed, the old signing
         key stays trusted for verification only (snapshots are immutable and keep their
         signatures), and the old private key is deleted.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from datetime import UTC, datetime
from pathlib import Path

from drkit import errors, results
from drkit.config import Config, load_config, trust_fingerprints
from drkit.engines import catalog, durable, escrow, keys
from drkit.engines.restic import Restic
from drkit.model import utc_text
from drkit.service import context

log = logging.getLogger(__name__)


def _read(path: Path) -> bytes:
    """Return a file's bytes; a missing or unreadable file is one line (exit 2)."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise errors.ConfigError(f"{path}: cannot read ({exc.strerror})") from None


def _read_password(path: Path) -> str:
    return keys.read_password(path).decode(errors="replace").strip()


def _write_new(path: Path, data: bytes) -> None:
    """Create a 0600 file that must not exist yet (never overwrite a secret)."""
    durable.make_dirs(path.parent, 0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise errors.UsageError(f"{path} exists: choose another file") from None
    except OSError as exc:
        raise errors.LocalFilesystemError(f"{path}: {exc.strerror}") from None
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except OSError as exc:
        path.unlink(missing_ok=True)  # a full disk leaves no half-written secret
        raise errors.LocalFilesystemError(f"{path}: {exc.strerror}") from None
    finally:
        os.close(fd)


def escrow_password(
    config: Config, recipients: list[Path], threshold: int, out: Path
) -> results.KeysEscrowResult:
    """Split the repository password into one age-encrypted SLIP-39 share per recipient file."""
    if not recipients:
        raise errors.UsageError("--recipients: name one age recipient file per holder")
    holders = []
    for path in recipients:
        holders.append((path.stem, escrow.recipient(_read(path).decode(errors="replace"))))
    password = _read_password(config.repository.password_file)
    shares = escrow.split(password, threshold, len(holders))
    created = datetime.now(UTC)
    files = []
    for index, ((holder, to), share) in enumerate(zip(holders, shares, strict=True), start=1):
        path = out / f"{config.node}-share-{index}-of-{len(holders)}-{holder}.age"
        _write_new(path, escrow.encrypt(share, to))
        files.append({"holder": holder, "file": str(path)})
    signer = keys.signing_fingerprint(keys.load_signing_key(config.signing_key).public_key())
    sheet = out / f"{config.node}-escrow-sheet.txt"
    sheet_text = (
        f"drkit key escrow of node {config.node}, {utc_text(created)}\n"
        f"repository: {config.repository.restic_url}\n"
        f"shares: {len(holders)}, any {threshold} recover the password\n"
        f"holders: {', '.join(holder for holder, _ in holders)}\n"
        f"signer fingerprint (for --trust-key): {signer}\n"
        "recover: drkit keys recover --share FILE... [--identity AGE-KEY-FILE] --out FILE\n"
    )
    sheet.unlink(missing_ok=True)
    _write_new(sheet, sheet_text.encode())
    return results.KeysEscrowResult(
        node=config.node,
        threshold=threshold,
        holders=len(holders),
        files=files,
        sheet=str(sheet),
        signer=signer,
        created=utc_text(created),
    )


def _share_text(path: Path | None, identities: list[Path]) -> str:
    data = _read(path) if path else b""
    if data.startswith(escrow.AGE_HEADER):
        texts = [_read(identity).decode(errors="replace") for identity in identities]
        return escrow.decrypt(data, texts)
    return data.decode(errors="replace")


def reveal(share: Path, identities: list[Path]) -> results.KeysRevealResult:
    """Return a holder's share as words, to be copied onto paper."""
    words = " ".join(_share_text(share, identities).split())
    return results.KeysRevealResult(share=str(share), words=words, count=len(words.split()))


def recover(
    shares: list[Path], identities: list[Path], out: Path, typed: list[str]
) -> results.KeysRecoverResult:
    """Rebuild the password from K shares (files or typed words) into a new 0600 file."""
    mnemonics = [_share_text(path, identities) for path in shares] + typed
    mnemonics = [" ".join(text.split()) for text in mnemonics if text.strip()]
    if not mnemonics:
        raise errors.UsageError("no shares given: --share FILE... or type one share per line")
    password = escrow.combine(mnemonics)
    _write_new(out, (password + "\n").encode())
    return results.KeysRecoverResult(shares_used=len(mnemonics), password_file=str(out))


def new_holder(identity_file: Path) -> results.KeysHolderResult:
    """Create an age identity for an escrow holder; return the recipient to give the operator."""
    identity, recipient = escrow.new_identity()
    _write_new(identity_file, (identity + "\n").encode())
    return results.KeysHolderResult(identity=str(identity_file), recipient=recipient)


def _rewrap_catalog_key(config: Config, opener: Path, passwords: list[Path]) -> None:
    """Wrap the node's catalog key (what seals its manifest objects) under each password:
    both while the restic keys change, then the new one only. Without a key object, or one the
    current password does not open, there is nothing to carry over (the next backup makes one)."""
    from drkit.engines.storage import Storage

    storage = Storage(config.repository)
    name = catalog.key_object_key(config.node)
    blob = storage.get_bytes(name)
    key = catalog.unwrap_key(blob, opener, config.node) if blob else None
    if key is not None:
        storage.put_bytes(name, catalog.wrap_key(key, passwords, config.node), "application/json")


def _finish_removal(config: Config, restic: Restic, journal: Path) -> None:
    """Remove the old restic keys a rotation killed after its new password took over left
    valid (named by its journal, written just before the password file is replaced); a key
    the password file still opens is the current one and stays."""
    if not journal.exists():
        return
    try:
        named = json.loads(keys.read_regular(journal, "key rotation journal", 64 * 1024))
        ids = [str(key_id) for key_id in named["remove"]]
    except (errors.ConfigError, ValueError, KeyError, TypeError):
        ids = []
    listed = {key.id: key for key in restic.key_list()}
    stale = [key_id for key_id in ids if key_id in listed and not listed[key_id].current]
    for key_id in stale:
        restic.key_remove(key_id)
    password_file = config.repository.password_file
    _rewrap_catalog_key(config, password_file, [password_file])
    durable.remove(journal)
    if stale:
        log.warning(
            "an interrupted key rotation was finished: old restic key %s removed",
            ",".join(key_id[:8] for key_id in stale),
        )


def rotate(config: Config, config_path: Path) -> results.KeysRotateResult:
    """Add a new restic key and signing key, then retire the old ones; return the document.

    Order matters for a crash at any point: the new password is written beside the old one
    and proven to open the repository before it replaces the password file; the old restic
    key goes only after that; a rotation killed before it did is finished by the next one
    (_finish_removal). The signing key is replaced through a journal the next command
    replays (keys.rotate_signing_key); the old fingerprint stays in trusted_keys.
    """
    from drkit.engines import restic as restic_engine

    restic = context.restic_for(config.repository, config.restic)
    context.probe_storage(config.repository)
    password_file = config.repository.password_file
    pending = password_file.with_name(password_file.name + ".new")
    journal = keys.restic_rotation_journal(config.state_dir)
    with context.node_lock(config):
        _finish_removal(config, restic, journal)
        old_keys = restic.key_list()
        old_current = [key.id for key in old_keys if key.current]
        pending.unlink(missing_ok=True)
        _write_new(pending, (secrets.token_hex(32) + "\n").encode())
        restic.key_add(pending)
        fresh = restic_engine.Restic(
            restic.binary, restic.repository_url, pending,
            region=restic.region, ca_bundle=restic.ca_bundle,
        )  # fmt: skip
        new_keys = fresh.key_list()
        new_id = next(key.id for key in new_keys if key.current)
        _rewrap_catalog_key(config, password_file, [password_file, pending])
        durable.write_atomic(journal, json.dumps({"remove": old_current}).encode())
        os.replace(pending, password_file)
        durable.sync_dir(password_file.parent)
        fresh.password_file = password_file
        for key_id in old_current:
            fresh.key_remove(key_id)
        _rewrap_catalog_key(config, password_file, [password_file])
        durable.remove(journal)
        old_signer, new_signer = keys.rotate_signing_key(
            config.state_dir,
            config.signing_key,
            lambda fingerprints: trust_fingerprints(config_path, fingerprints),
        )
        trusted = load_config(config_path)[0].trusted_keys
    log.warning(
        "keys rotated: restic key %s replaced by %s; signer %s retired (still trusted for "
        "verification), %s signs from now on",
        ",".join(k[:8] for k in old_current),
        new_id[:8],
        old_signer or "(lost)",
        new_signer,
    )
    return results.KeysRotateResult(
        node=config.node,
        restic_keys={"added": new_id, "removed": old_current},
        signer={"new": new_signer, "retired": old_signer},
        trusted_keys=trusted,
        next="escrow the new password (drkit keys escrow) and record the new signer",
    )
