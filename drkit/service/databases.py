"""Database servers a node's profiles name: dumped at backup, left or loaded at restore, and
served by a throwaway PostgreSQL in a drill.

Backup dumps every local server database (localhost, 127.x or a Unix socket) with the
server's own tool into DUMPS_DIR on the node; the dumps are files of the snapshot (category
`databases`, verified like every file) and the manifest's `databases` records name the database
each came from. A remote database is an external authority: not dumped, its reachability
reported. Restore leaves the dumps under RESTORED_DIR with the command that loads each, or with
`--restore-databases` loads them into the target's database server as the configured user.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from drkit import errors, profiles
from drkit import model as checks
from drkit.engines import dumps, durable, manifest
from drkit.model import Check, Database, DumpRecord, Entry, Inventory, Manifest
from drkit.paths import on_root
from drkit.results.restore import DatabaseRestore

log = logging.getLogger(__name__)


def _server_databases(inventory: Inventory) -> list[Database]:
    return [db for db in inventory.databases if db.engine != "sqlite" and db.name]


def take_dumps(root: Path, inventory: Inventory) -> list[DumpRecord]:
    """Dump every local server database of inventory into DUMPS_DIR on root and add the dumps
    to inventory's files; report remote ones' reachability. A dump that fails is a warning
    (the backup still takes every file there is) and leaves no stale dump behind."""
    directory = on_root(root, dumps.DUMPS_DIR)
    records: list[DumpRecord] = []
    wanted: set[str] = set()
    for database in _server_databases(inventory):
        if not database.local:
            why = dumps.reachable(database)
            if why:
                inventory.warnings.append(
                    f"database {database.label} ({database.named_by}), an external authority: "
                    f"unreachable ({why})"
                )
            else:
                log.info("database %s (external authority) is reachable", database.label)
            continue
        name = dumps.dump_name(database)
        if name in wanted:
            continue
        wanted.add(name)
        durable.make_dirs(directory, 0o700)
        try:
            dumps.dump(database, directory / name)
        except dumps.DumpFailed as exc:
            inventory.warnings.append(f"database dump not taken: {exc.message}")
            (directory / name).unlink(missing_ok=True)
            wanted.discard(name)
            continue
        node_path = f"{dumps.DUMPS_DIR}/{name}"
        inventory.files.append(Entry(node_path, dumps.CATEGORY))
        records.append(
            DumpRecord(
                path=node_path,
                sha256=manifest.sha256_file(directory / name),
                size=(directory / name).stat().st_size,
                engine=database.engine,
                database=database.label,
                name=database.name,
                host=database.host,
                port=database.port,
                socket=database.socket,
                user=database.user,
                named_by=database.named_by,
            )
        )
    if directory.is_dir():  # a database no longer named leaves no dump to be restored
        for stale in directory.iterdir():
            if stale.name not in wanted and stale.is_file() and not stale.is_symlink():
                stale.unlink()
    return records


def as_database(record: DumpRecord, password: Database | None = None) -> Database:
    """Return the database a dump record names, with the password of `password` (the same
    database as the restored configuration names it) when given."""
    return Database(
        engine=record.engine,
        named_by=record.named_by,
        name=record.name,
        host=record.host,
        port=record.port,
        socket=record.socket,
        user=record.user,
        password=password.password if password else None,
    )


def _configured(target: Path, node_manifest: Manifest) -> dict[str, Database]:
    """Return {label: database} as the restored configuration on target names them (with
    their passwords, read from the restored files)."""
    found: dict[str, Database] = {}
    for kind in node_manifest.profiles:
        # A config that does not read is the checks' to report.
        with contextlib.suppress(errors.DrkitError, OSError, ValueError):
            profile = profiles.get(kind)
            options = profile.options(node_manifest.options_of(kind))
            for database in profile.inventory(target, None, options).databases:
                found.setdefault(database.label, database)
    return found


def finish_restore(
    target: Path, node_manifest: Manifest, load: bool
) -> tuple[list[Check], list[DatabaseRestore]]:
    """After a restore onto target: load each dump into the target's database server (load),
    or leave it under RESTORED_DIR with the command that loads it; return the checks and the
    result entries."""
    if not node_manifest.databases:
        return [], []
    configured = _configured(target, node_manifest) if load else {}
    left = on_root(target, dumps.RESTORED_DIR)
    found: list[Check] = []
    entries: list[DatabaseRestore] = []
    for record in node_manifest.databases:
        name = f"database: {record.database}"
        dump_file = on_root(target, record.path)
        database = as_database(record, configured.get(record.database))
        kept = f"{dumps.RESTORED_DIR}/{Path(record.path).name}"
        command = dumps.load_command(database, kept)
        if not dump_file.is_file():
            found.append(checks.failed(name, f"{record.path} is missing from the target"))
            continue
        if not load:
            durable.make_dirs(left, 0o700)
            shutil.copyfile(dump_file, on_root(target, kept))
            os.chmod(on_root(target, kept), 0o600)
            found.append(checks.warned(name, f"not loaded: {kept}; load it with: {command}"))
            entries.append(DatabaseRestore.of(record, kept, command, loaded=False))
            continue
        try:
            detail = dumps.load(database, dump_file)
        except dumps.DumpFailed as exc:
            found.append(checks.failed(name, f"{exc.message}; by hand: {command}"))
            entries.append(DatabaseRestore.of(record, record.path, command, loaded=False))
            continue
        found.append(checks.passed(name, detail))
        entries.append(DatabaseRestore.of(record, record.path, command, loaded=True))
    return found, entries


@dataclass
class Served:
    """The dumps a drill loaded into its throwaway server: the checks, and where each
    database is served now ({label: "127.0.0.1:port"})."""

    checks: list[Check]
    stand_ins: dict[str, str]


@contextlib.contextmanager
def throwaway(root: Path, node_manifest: Manifest, parent: Path) -> Iterator[Served]:
    """Serve the restored PostgreSQL dumps on root from a throwaway cluster under parent for
    the block: each database's role (with its configured password) and the database, loaded
    from its dump; stand_ins (also written to RESTORED_DIR/served.json on root, where a smoke
    reads them: dumps.read_stand_ins) say where each is served. Nothing runs afterwards."""
    records = [record for record in node_manifest.databases if record.engine == "postgresql"]
    others = [
        checks.warned(f"database: {record.database}", "not judged: drills serve PostgreSQL only")
        for record in node_manifest.databases
        if record.engine != "postgresql"
    ]
    if not records:
        yield Served(others, {})
        return
    missing = dumps.throwaway_missing()
    if missing:  # not judged, as a smoke on a host without the server program
        name = "databases: throwaway server"
        yield Served([*others, checks.warned(name, f"not judged: {missing}")], {})
        return
    configured = _configured(root, node_manifest)
    with contextlib.ExitStack() as stack:
        try:
            cluster = stack.enter_context(dumps.throwaway_postgres(parent))
        except dumps.DumpFailed as exc:
            yield Served([checks.failed("databases: throwaway server", exc.message)], {})
            return
        where = f"PostgreSQL on 127.0.0.1:{cluster.port}"
        served = Served([*others, checks.passed("databases: throwaway server", where)], {})
        for record in records:
            database = as_database(record, configured.get(record.database))
            name = f"database: {record.database}"
            try:
                cluster.add_login(database)
                stand_in = cluster.stand_in(database)
                detail = dumps.load(stand_in, on_root(root, record.path), create=False)
            except dumps.DumpFailed as exc:
                served.checks.append(checks.failed(name, exc.message))
                continue
            served.checks.append(checks.passed(name, f"{detail} (throwaway server)"))
            served.stand_ins[record.database] = f"127.0.0.1:{cluster.port}"
        dumps.write_stand_ins(root, served.stand_ins)
        yield served
