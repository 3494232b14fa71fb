"""drkit fleet drift: what differs between the nodes of an active-active pool.

The newest snapshot of each node of the group is compared, by category: configuration equal
except declared node-local paths and settings (with a unified diff), host keys, TLS
certificates and keys, scripts, user keys and accounts identical; certificates not near
expiry; each node's audit logs extending (or rotating) what its previous snapshot held; and
every node's newest snapshot within the RPO.
"""

from __future__ import annotations

import difflib
import hashlib
import shutil
import tempfile
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from drkit import errors, units
from drkit.config import Config, parse_config
from drkit.engines import durable, localsettings, manifest
from drkit.engines.restic import Snapshot
from drkit.model import FileRecord, Manifest, parse_utc, utc_text
from drkit.paths import on_root
from drkit.results import Finding, FleetDriftResult, FleetNode
from drkit.service import context
from drkit.service.opening import Catalog, Found, Origin, snapshot_of
from drkit.service.reporting import publish_drift

COMPARED = ("config", "host_keys", "tls", "scripts", "user_keys", "accounts")
TEXT_DIFF = ("config", "scripts", "accounts")
DIFF_LINES = 40
CERT_WARN_DAYS = 30


def _finding(node: str, category: str, path: str, detail: str) -> Finding:
    return Finding(node=node, category=category, path=path, detail=detail)


_Previous = tuple[Snapshot, Manifest, str]  # a node's snapshot before its newest: manifest, signer


def drift(
    config: Config, *, group: str | None = None, trust_keys: list[str] | None = None
) -> FleetDriftResult:
    """Compare the newest snapshots of the group's nodes; return the drift document."""
    group = group or config.group
    if not group:
        raise errors.UsageError("no group: pass --group or set `group` in drkit.yaml")
    restic = context.restic_for(config.repository, config.restic)
    context.probe_storage(config.repository)
    origin = Origin.from_config(config, trust_keys)
    with Catalog(origin, restic) as found_in:
        return _drift(config, group, found_in, set(origin.trusted_keys) | set(origin.trust_keys))


def _group_snapshots(found_in: Catalog, group: str) -> dict[str, list[Found]]:
    """Return each node's snapshots tagged group:<group>, oldest first: from the signed
    catalog when every node's head is trusted and lists all the repository holds, else from
    one `restic snapshots`."""
    tag = f"group:{group}"
    by_node: dict[str, list[Found]] = {}
    indexes = found_in.every_index()
    if indexes is not None:
        for node, index in sorted(indexes.items()):
            mine = [Found(snapshot_of(node, e), e) for e in index if tag in e.tags]
            if mine:
                by_node[node] = mine
        return by_node
    for snapshot in found_in.ask_restic().snapshots(tags=["drkit", tag]):
        entry = found_in.entry(snapshot.hostname, snapshot.id)
        by_node.setdefault(snapshot.hostname, []).append(Found(snapshot, entry))
    return by_node


def _drift(config: Config, group: str, found_in: Catalog, trusted: set[str]) -> FleetDriftResult:
    by_node = _group_snapshots(found_in, group)
    if not by_node:
        raise errors.UsageError(f"no snapshot in the repository is tagged group:{group}")
    now = datetime.now(UTC)
    rpo = timedelta(seconds=config.objectives.rpo_seconds)
    findings: list[Finding] = []
    nodes: list[FleetNode] = []
    latest: dict[str, Manifest] = {}
    previous: dict[str, _Previous] = {}
    work = Path(tempfile.mkdtemp(prefix="drift-", dir=_work_parent(config)))
    try:
        fetched = _Fetcher(found_in, work)
        for node in sorted(by_node):
            snapshot = by_node[node][-1].snapshot
            opened, signer = fetched.open(node, by_node[node][-1])
            age = now - snapshot.time
            nodes.append(
                FleetNode(
                    node=node,
                    snapshot_id=snapshot.id,
                    time=utc_text(snapshot.time),
                    age_seconds=int(age.total_seconds()),
                    signer=signer,
                )
            )
            if signer not in trusted:
                detail = (
                    f"snapshot {snapshot.short_id} signed by untrusted key {signer}: not compared"
                )
                findings.append(_finding(node, "trust", "", detail))
                continue
            if opened.node != node:
                findings.append(_finding(node, "trust", "", "manifest names another node"))
                continue
            if age > rpo:
                age_text = units.duration(age.total_seconds())
                rpo_text = units.duration(rpo.total_seconds())
                detail = (
                    f"stale: newest snapshot {snapshot.short_id} is {age_text} old (RPO {rpo_text})"
                )
                findings.append(_finding(node, "staleness", "", detail))
            latest[node] = opened
            fetched.chosen[node] = snapshot.id
            if len(by_node[node]) >= 2:
                older = by_node[node][-2]
                previous[node] = (older.snapshot, *fetched.open(node, older))
        _prefetch(fetched, latest, previous)
        local = localsettings.parse(_local_entries(config, fetched, latest))
        findings += _compare(latest, fetched, local)
        findings += _certificates(latest, now)
        for node, (before, old_manifest, signer) in previous.items():
            if signer not in trusted:
                detail = f"previous snapshot {before.short_id} signed by untrusted {signer}"
                findings.append(_finding(node, "audit_logs", "", detail))
                continue
            findings += _audit_continuity(node, before, old_manifest, latest[node], fetched)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = FleetDriftResult(ok=not findings, group=group, nodes=nodes, findings=findings)
    publish_drift(config, result)  # the fleet page shows each group's latest
    return result


def _prefetch(
    fetched: _Fetcher, latest: dict[str, Manifest], previous: dict[str, _Previous]
) -> None:
    """Restore, in one restic call per node, every file drift will read: files that differ
    across nodes, and audit logs (and rotated copies) that changed since the previous
    snapshot."""
    needs: dict[str, set[str]] = {node: set() for node in latest}
    shas: dict[str, dict[str, str]] = {}
    for node, node_manifest in latest.items():
        for entry in node_manifest.files:
            if entry.category in COMPARED and entry.type == "file":
                shas.setdefault(entry.path, {})[node] = entry.sha256 or ""
    for path, by_node in shas.items():
        if len(set(by_node.values())) > 1:
            for node in by_node:
                needs[node].add(path)
    for node, (_, old_manifest, _) in previous.items():
        if node not in latest:
            continue
        now_files = {e.path: e for e in latest[node].files if e.type == "file"}
        for old in old_manifest.files:
            if old.category != "audit_logs" or old.type != "file":
                continue
            new = now_files.get(old.path)
            if new is None or new.sha256 != old.sha256:
                needs[node].update(
                    path
                    for path in now_files
                    if path == old.path or path.startswith((old.path + ".", old.path + "-"))
                )
    for node, paths in needs.items():
        if paths:
            fetched.want(node, sorted(paths))


def _work_parent(config: Config) -> Path:
    parent = config.state_dir / "drift"
    durable.make_dirs(config.state_dir, 0o755)
    durable.make_dirs(parent, 0o700)
    return parent


class _Fetcher:
    """Reads the files drift compares: from the sealed manifest objects where they hold them
    (config, scripts, drkit.yaml), else restored, batched: one restic call per snapshot and
    batch."""

    def __init__(self, found_in: Catalog, work: Path) -> None:
        self.found_in, self.work = found_in, work
        self.chosen: dict[str, str] = {}
        self.done: set[tuple[str, str]] = set()
        self.texts: dict[str, dict[str, bytes]] = {}  # snapshot id: {path: bytes}

    def open(self, node: str, found: Found) -> tuple[Manifest, str]:
        """Return (manifest, signer) of a node's snapshot, its drkit.yaml and texts kept."""
        raw, signature, config_text, bundle = self.found_in.signed(node, found)
        opened, signer = manifest.open_signed(raw, signature)
        texts = self.texts.setdefault(found.snapshot.id, {})
        if config_text is not None:
            texts[manifest.CONFIG_PATH] = config_text.encode()
        for path in bundle.texts if bundle else ():
            text = bundle.text(opened, path) if bundle else None
            if text is not None:
                texts[path] = text.encode()
        return opened, signer

    def _restore(self, snapshot_id: str, paths: list[str]) -> None:
        held = self.texts.get(snapshot_id, {})
        missing = [p for p in paths if (snapshot_id, p) not in self.done and p not in held]
        if missing:
            self.found_in.ask_restic().restore_paths(snapshot_id, self.work / snapshot_id, missing)
            self.done.update((snapshot_id, p) for p in missing)

    def want(self, node: str, paths: list[str]) -> None:
        self._restore(self.chosen[node], paths)

    def read(self, node: str, path: str) -> bytes | None:
        snapshot_id = self.chosen[node]
        held = self.texts.get(snapshot_id, {})
        if path in held:
            return held[path]
        self._restore(snapshot_id, [path])
        host = on_root(self.work / snapshot_id, path)
        return host.read_bytes() if host.is_file() else None


def _local_entries(config: Config, fetched: _Fetcher, latest: dict[str, Manifest]) -> list[str]:
    """Return the node-local entries: this config's, and each node's own from its snapshot."""
    entries = list(config.node_local) + (list(config.standby.local) if config.standby else [])
    for node in latest:
        data = fetched.read(node, manifest.CONFIG_PATH)
        if not data:
            continue
        try:
            embedded = parse_config(data.decode(errors="replace"), f"{node}'s drkit.yaml")
        except errors.ConfigError:
            continue
        entries += embedded.node_local + (embedded.standby.local if embedded.standby else [])
    return list(dict.fromkeys(entries))


def _fingerprint(node_manifest: Manifest, path: str) -> str | None:
    for key in node_manifest.keys:
        if key.path == path:
            return key.fingerprint
    for certificate in node_manifest.certificates:
        if certificate.path == path:
            return f"certificate {certificate.fingerprint[:16]}…"
    return None


def _compare(
    latest: dict[str, Manifest], fetched: _Fetcher, local: localsettings.Local
) -> list[Finding]:
    findings: list[Finding] = []
    if len(latest) < 2:
        return findings
    files: dict[str, dict[str, FileRecord]] = {}
    for node, node_manifest in latest.items():
        for entry in node_manifest.files:
            if entry.category in COMPARED and entry.type != "dir":
                files.setdefault(entry.path, {})[node] = entry
    for path, present in sorted(files.items()):
        if local.path_is_local(path):
            continue
        category = next(iter(present.values())).category
        absent = [node for node in latest if node not in present]
        for node in absent:
            detail = f"missing; present on {', '.join(sorted(present))}"
            findings.append(_finding(node, category, path, detail))
        variants = {node: entry.sha256 or entry.link or "" for node, entry in present.items()}
        if len(set(variants.values())) <= 1:
            continue
        settings = local.settings_of(path)
        texts: dict[str, str] = {}
        if category in TEXT_DIFF or settings:
            for node in present:
                data = fetched.read(node, path) or b""
                texts[node] = (
                    localsettings.strip(data.decode(errors="replace"), settings)
                    if (settings)
                    else data.decode(errors="replace")
                )
            variants = {
                node: hashlib.sha256(text.encode()).hexdigest() for node, text in texts.items()
            }
            if len(set(variants.values())) <= 1:
                continue
        counts = Counter(variants.values())
        ordered = sorted(present)
        reference = max(counts, key=lambda v: (counts[v], -ordered.index(_first(variants, v))))
        reference_nodes = sorted(n for n, v in variants.items() if v == reference)
        for node in ordered:
            if variants[node] == reference:
                continue
            where = ", ".join(reference_nodes)
            if category in ("host_keys", "tls", "user_keys") and not texts:
                mine, theirs = (
                    _fingerprint(latest[node], path),
                    _fingerprint(latest[reference_nodes[0]], path),
                )
                what = "host key" if category == "host_keys" else "key/certificate"
                detail = f"{what} differs from {where}" + (
                    f": {mine} here, {theirs} there" if mine and theirs else ""
                )
            else:
                diff = difflib.unified_diff(
                    texts[reference_nodes[0]].splitlines(),
                    texts[node].splitlines(),
                    f"{reference_nodes[0]}:{path}",
                    f"{node}:{path}",
                    lineterm="",
                )
                lines = list(diff)
                if len(lines) > DIFF_LINES:
                    lines = [*lines[:DIFF_LINES], f"... {len(lines) - DIFF_LINES} more lines"]
                detail = f"differs from {where}\n" + "\n".join(lines)
            findings.append(_finding(node, category, path, detail))
    findings += _accounts(latest)
    return findings


def _first(variants: dict[str, str], value: str) -> str:
    return sorted(node for node, v in variants.items() if v == value)[0]


def _accounts(latest: dict[str, Manifest]) -> list[Finding]:
    findings: list[Finding] = []
    if len(latest) < 2:
        return findings
    tables = {
        node: {a.name: (a.passwd, tuple(a.groups)) for a in m.accounts}
        for node, m in latest.items()
    }
    names = sorted({name for table in tables.values() for name in table})
    for name in names:
        values = {node: table.get(name) for node, table in tables.items()}
        counts = Counter(values.values())
        reference = counts.most_common(1)[0][0]
        for node, value in sorted(values.items()):
            if value == reference:
                continue
            detail = "account missing" if value is None else "passwd/group entries differ"
            findings.append(_finding(node, "accounts", f"account {name}", detail))
    return findings


def _certificates(latest: dict[str, Manifest], now: datetime) -> list[Finding]:
    findings = []
    for node, node_manifest in latest.items():
        for entry in node_manifest.certificates:
            until = parse_utc(entry.not_after)
            left = until - now
            if left <= timedelta(0):
                findings.append(_finding(node, "tls", entry.path, f"expired {entry.not_after}"))
            elif left <= timedelta(days=CERT_WARN_DAYS):
                detail = f"expires {entry.not_after}, in {left.days} days"
                findings.append(_finding(node, "tls", entry.path, detail))
    return findings


def _audit_continuity(
    node: str,
    previous_snapshot: Snapshot,
    previous: Manifest,
    current: Manifest,
    fetched: _Fetcher,
) -> list[Finding]:
    """Each audit log must extend (or be a recognised rotation of) the previous snapshot's."""
    now_files = {e.path: e for e in current.files if e.type == "file"}
    findings = []
    for old in previous.files:
        if old.category != "audit_logs" or old.type != "file":
            continue
        path, old_size = old.path, old.size or 0
        new = now_files.get(path)
        if new is not None and new.sha256 == old.sha256:
            continue
        if new is not None and (new.size or 0) >= old_size:
            data = fetched.read(node, path) or b""
            if hashlib.sha256(data[:old_size]).hexdigest() == old.sha256:
                continue
        if _rotated(old, now_files, fetched, node):
            continue
        since = f"snapshot {previous_snapshot.short_id}"
        if new is None:
            detail = f"removed since {since}, and no rotated copy holds it"
        elif (new.size or 0) < old_size:
            detail = f"truncated: {new.size} bytes, {old_size} in {since}"
        else:
            detail = f"rewritten: its first {old_size} bytes differ from {since}"
        findings.append(_finding(node, "audit_logs", path, detail))
    return findings


def _rotated(
    old: FileRecord, now_files: dict[str, FileRecord], fetched: _Fetcher, node: str
) -> bool:
    """Return True when a rotated file (path.1, path-20240101 ...) holds the old log."""
    path, old_size = old.path, old.size or 0
    for candidate, entry in now_files.items():
        if candidate == path or not candidate.startswith((path + ".", path + "-")):
            continue
        if entry.sha256 == old.sha256:
            return True
        if (entry.size or 0) >= old_size and not candidate.endswith(".gz"):
            data = fetched.read(node, candidate) or b""
            if hashlib.sha256(data[:old_size]).hexdigest() == old.sha256:
                return True
    return False
