"""drkit identity check and failover rehearse: prove what clients see, not what files hold.

After a failover, clients meet the standby: if it serves another host key or certificate,
pinned partners stop ("REMOTE HOST IDENTIFICATION HAS CHANGED"). `identity check` asks every
address clients use (each node's own, the shared address of a pair or pool) what it serves and
compares it with the newest signed snapshot of the node; `--via` also logs in through the
shared address pinned to that snapshot's keys. `failover rehearse` stops the active through the
operator's command, measures how long a pinned client waits for a login and a file round trip
through the shared address, and starts the active again.
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path

from drkit import errors, runner
from drkit.config import Config
from drkit.engines import keys, manifest, served
from drkit.model import Manifest
from drkit.results import (
    IdentityEndpoint,
    IdentityLogin,
    IdentityResult,
    RehearsalLogin,
    RehearsalResult,
    ServedFingerprint,
)
from drkit.service import context
from drkit.service.opening import Catalog, Origin

POLL_SECONDS = 0.2


def _signed_identity(config: Config, node: str | None) -> tuple[str, Manifest]:
    """Return (snapshot id, manifest) of the node's newest snapshot, signed by a trusted key."""
    origin = Origin.from_config(config)
    origin.node = node or config.node
    restic = context.restic_for(origin.repository, origin.restic)
    context.probe_storage(origin.repository)
    with Catalog(origin, restic) as found_in:
        found = found_in.find_or_ask(origin.node, "latest")
        raw, signature, _, _ = found_in.signed(origin.node, found)
    node_manifest, signer = manifest.open_signed(raw, signature)
    own = keys.signing_fingerprint(keys.load_signing_key(config.signing_key).public_key())
    if signer not in {own, *config.trusted_keys}:
        raise errors.Refused(f"snapshot {found.snapshot.id[:8]} is signed by untrusted {signer}")
    return found.snapshot.id, node_manifest


def _endpoint(address: served.Address, node_manifest: Manifest) -> IdentityEndpoint:
    """Compare what one address serves with the signed snapshot."""
    expected_keys = {key.type: key.fingerprint for key in node_manifest.host_keys}
    certificates = {c.fingerprint for c in node_manifest.certificates}
    problems: list[str] = []
    host_keys: list[ServedFingerprint] = []
    served_certificates: list[ServedFingerprint] = []
    if not served.port_open(address):
        return IdentityEndpoint(
            address=str(address), protocol=address.protocol, ok=False,
            host_keys=[], certificates=[], detail="nothing answers there",
        )  # fmt: skip
    try:
        if address.protocol == "sftp":
            for key_type, fingerprint in sorted(served.host_keys(address).items()):
                expected = expected_keys.get(key_type)
                host_keys.append(ServedFingerprint(fingerprint=fingerprint, expected=expected))
                if fingerprint != expected:
                    problems.append(
                        f"{address} {key_type} host key {fingerprint}, the snapshot has "
                        f"{expected or 'none of that type'}"
                    )
            if not host_keys:
                problems.append(f"{address} offered no host key")
        elif address.protocol == "ftps":
            presented = served.certificate(address)
            if presented is None:
                problems.append(f"{address} offers no TLS")
            else:
                expected_cert = presented if presented in certificates else None
                served_certificates.append(
                    ServedFingerprint(
                        fingerprint=presented,
                        expected=expected_cert or next(iter(sorted(certificates)), None),
                    )
                )
                if expected_cert is None:
                    problems.append(
                        f"{address} certificate {presented}, the snapshot has "
                        f"{', '.join(sorted(certificates)) or 'none'}"
                    )
    except (OSError, runner.CommandTimeout) as exc:
        problems.append(f"{address}: {getattr(exc, 'message', None) or exc}")
    return IdentityEndpoint(
        address=str(address),
        protocol=address.protocol,
        ok=not problems,
        host_keys=host_keys,
        certificates=served_certificates,
        detail="; ".join(problems) or "serves the snapshot's identity",
    )


def _secret_file(path: Path | None, setting: str) -> Path:
    if path is None:
        raise errors.UsageError(f"a live login needs the setting {setting} in drkit.yaml")
    keys.require_private(path, setting)
    return path


def _login(
    config: Config, address: served.Address, node_manifest: Manifest, *, round_trip: bool
) -> served.Login:
    """Log in as smoke_user through address, pinned to the snapshot's keys or certificate."""
    if not config.smoke_user:
        raise errors.UsageError("a live login needs the setting smoke_user in drkit.yaml")
    if address.protocol == "sftp":
        key_file = _secret_file(config.smoke_key, "smoke_key")
        lines = [key.public_line for key in node_manifest.host_keys]
        return served.sftp_login(address, config.smoke_user, key_file, lines, round_trip=round_trip)
    password_file = _secret_file(config.smoke_password_file, "smoke_password_file")
    password = password_file.read_text().strip()
    expected = {c.fingerprint for c in node_manifest.certificates}
    return served.ftps_login(address, config.smoke_user, password, expected, round_trip=round_trip)


def check(
    config: Config,
    addresses: list[str],
    *,
    protocol: str | None = None,
    via: str | None = None,
    node: str | None = None,
) -> IdentityResult:
    """Compare what every address serves with the node's newest signed snapshot."""
    try:
        parsed = [served.parse_address(text, protocol) for text in addresses]
        shared = served.parse_address(via, protocol) if via else None
    except ValueError as exc:
        raise errors.UsageError(str(exc)) from None
    if not parsed and shared is None:
        raise errors.UsageError("name at least one --address or --via")
    snapshot_id, node_manifest = _signed_identity(config, node)
    endpoints = [_endpoint(address, node_manifest) for address in parsed]
    if shared is not None and str(shared) not in {endpoint.address for endpoint in endpoints}:
        endpoints.append(_endpoint(shared, node_manifest))
    login = None
    if shared is not None:
        outcome = _login(config, shared, node_manifest, round_trip=False)
        login = IdentityLogin(
            address=str(shared), protocol=shared.protocol, ok=outcome.ok, detail=outcome.detail
        )
    ok = all(endpoint.ok for endpoint in endpoints) and (login is None or login.ok)
    return IdentityResult(
        ok=ok,
        node=node or config.node,
        snapshot_id=snapshot_id,
        endpoints=endpoints,
        **({"login": login} if login is not None else {}),
    )


def rehearse(
    config: Config,
    via: str,
    *,
    stop_command: str,
    start_command: str,
    protocol: str | None = None,
    yes: bool = False,
    timeout: float = 120.0,
) -> RehearsalResult:
    """Stop the active through stop_command, poll the shared address until a pinned login and
    a file round trip succeed (on the standby), report the time, start the active again."""
    if not yes:
        raise errors.UsageError("failover rehearse stops the active node: pass --yes to consent")
    try:
        shared = served.parse_address(via, protocol)
    except ValueError as exc:
        raise errors.UsageError(str(exc)) from None
    snapshot_id, node_manifest = _signed_identity(config, None)
    before = _endpoint(shared, node_manifest)
    first = _login(config, shared, node_manifest, round_trip=True)
    if not first.ok:
        raise errors.ChecksFailed(
            f"no pinned login through {shared} before the rehearsal: {first.detail}"
        )
    _operator_command(stop_command, "--stop-command")
    started = time.monotonic()
    outcome = served.Login(False, None, "not tried")
    try:
        while time.monotonic() - started < timeout:
            outcome = _login(config, shared, node_manifest, round_trip=True)
            if outcome.ok:
                break
            time.sleep(POLL_SECONDS)
        after = _endpoint(shared, node_manifest)
    finally:
        _operator_command(start_command, "--start-command")
    rto = round(outcome.at - started, 3) if outcome.ok and outcome.at else None
    return RehearsalResult(
        ok=outcome.ok and after.ok,
        node=config.node,
        snapshot_id=snapshot_id,
        via=str(shared),
        rto_seconds=rto,
        served_before=[item.fingerprint for item in before.host_keys + before.certificates],
        served_after=[item.fingerprint for item in after.host_keys + after.certificates],
        login_after=RehearsalLogin(ok=outcome.ok, detail=outcome.detail, at=rto),
        detail=after.detail,
    )


def _operator_command(command: str, option: str) -> None:
    """Run the operator's stop or start command; raise when it fails."""
    done = runner.run(shlex.split(command), timeout=120)
    if done.returncode != 0:
        line = (done.stderr or done.stdout).strip().splitlines()
        raise errors.ChecksFailed(
            f"{option} exited {done.returncode}" + (f": {line[-1]}" if line else "")
        )
