"""ProFTPD's mod_sql: the databases SQLConnectInfo names, the users a SQLite one holds, and the
smoke's copy of it.

`SQLConnectInfo` is read as mod_sql reads it, by the backend the server context uses
(`SQLBackend`, else the one mod_sql_* module loaded): a file path for mod_sql_sqlite,
`database[@host[:port]]` (or `database@/socket/dir`) for mod_sql_postgres and mod_sql_mysql,
then user, password and policy (`SQLNamedConnectInfo` names its backend before them);
`ssl-cert:`/`ssl-key:`/`ssl-ca:` arguments name TLS files. The password goes into
Database.password (a SecretStr) and nowhere else. `SQLUserInfo table name passwd uid gid home
shell` names the columns that make a SQLite database's users virtual users: their homes are
backed up and a smoke user may be one of them. The smoke never writes the restored database:
it runs on an online-backup copy in its work directory, homes mapped onto the restored root
(as an AuthUserFile's copy is).
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import sqlite3
import stat
from pathlib import Path
from urllib.parse import quote

from pydantic import SecretStr

from drkit.engines import sqlite_copies
from drkit.model import Database, DatabaseEngine
from drkit.paths import on_root, resolve
from drkit.profiles.common.configrefs import Ref
from drkit.profiles.proftpd.config import Config, Line
from drkit.profiles.proftpd.sandbox import Run, mapped_path

BACKENDS: dict[str, DatabaseEngine] = {
    "sqlite3": "sqlite",
    "sqlite": "sqlite",
    "postgres": "postgresql",
    "postgresql": "postgresql",
    "mysql": "mysql",
}
MODULES: dict[str, DatabaseEngine] = {
    "mod_sql_sqlite": "sqlite",
    "mod_sql_postgres": "postgresql",
    "mod_sql_mysql": "mysql",
}
TLS_ARGS = ("ssl-cert:", "ssl-key:", "ssl-ca:")
USER_COLUMNS = 6  # SQLUserInfo: table, then name, passwd, uid, gid, home, shell


def engine_of(config: Config, server: int) -> DatabaseEngine | None:
    """Return the SQL backend of a server context: SQLBackend's, else the loaded module's."""
    line = config.first("sqlbackend", server)
    if line and line.args:
        return BACKENDS.get(line.args[0].lower())
    loaded = [engine for module, engine in MODULES.items() if module in config.modules]
    return loaded[0] if len(loaded) == 1 else None


def connect_info(engine: DatabaseEngine, args: tuple[str, ...], named_by: str) -> Database:
    """Return the Database an SQLConnectInfo line names (its password held as a secret)."""
    info = args[0]
    if engine == "sqlite":
        return Database("sqlite", named_by, path=posixpath.normpath(posixpath.join("/", info)))
    name, _, authority = info.partition("@")
    host, socket, port = "", "", None
    where, _, port_text = authority.rpartition(":") if ":" in authority else (authority, "", "")
    port = int(port_text) if port_text.isdigit() else None
    if where.startswith("/"):
        socket = where
    else:
        host = where
    local = bool(socket) or host in ("", "localhost", "::1") or host.startswith("127.")
    return Database(
        engine,
        named_by,
        name=name,
        host=host,
        port=port,
        socket=socket,
        user=args[1] if len(args) > 1 else "",
        local=local,
        password=SecretStr(args[2]) if len(args) > 2 else None,
    )


def _connections(config: Config) -> list[tuple[Line, DatabaseEngine, tuple[str, ...]]]:
    """Return (line, backend, connection args) of every active SQLConnectInfo and
    SQLNamedConnectInfo (name backend info ...) where SQLEngine is not off."""
    found = []
    for line in config.of("sqlconnectinfo") + config.of("sqlnamedconnectinfo"):
        server = max(line.server, 0)
        if config.is_off("sqlengine", server):
            continue
        if line.keyword == "sqlconnectinfo":
            engine, args = engine_of(config, server), line.args
        elif len(line.args) >= 3:
            engine, args = BACKENDS.get(line.args[1].lower()), line.args[2:]
        else:
            continue
        if engine is not None and args:
            found.append((line, engine, args))
    return found


def databases(config: Config) -> list[Database]:
    """Return every database SQLConnectInfo and SQLNamedConnectInfo name (mod_sql on)."""
    found: list[Database] = []
    for line, engine, args in _connections(config):
        keyword = "SQLConnectInfo" if line.keyword == "sqlconnectinfo" else "SQLNamedConnectInfo"
        database = connect_info(engine, args, f"{line.source}:{keyword}")
        if database not in found:
            found.append(database)
    return found


def references(config: Config) -> list[Ref]:
    """Return the SQLite files (category databases) and TLS files mod_sql's connections name."""
    refs = []
    for line, engine, args in _connections(config):
        if engine == "sqlite":
            path = posixpath.normpath(posixpath.join("/", args[0]))
            refs.append(Ref(path, sqlite_copies.CATEGORY, "SQLConnectInfo", line.where, False))
        for arg in args[1:]:
            key = next((key for key in TLS_ARGS if arg.startswith(key)), None)
            if key and arg[len(key) :].startswith("/"):
                refs.append(Ref(arg[len(key) :], "tls", f"SQLConnectInfo {key}", line.where))
    return refs


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _user_columns(config: Config, server: int) -> list[str] | None:
    """Return SQLUserInfo's table and six columns (None for a custom: query)."""
    line = config.first("sqluserinfo", server)
    if line is None or len(line.args) != USER_COLUMNS + 1:
        return None
    return list(line.args)


def virtual_users(root: Path, config: Config, server: int | None = None) -> dict[str, list[str]]:
    """Return {name: passwd-style fields} of the users SQLite databases hold for mod_sql
    (SQLAuthenticate users), read-only; a NULL column (SQLUserInfo's "NULL") reads as ""."""
    users: dict[str, list[str]] = {}
    for line in config.of("sqlconnectinfo", server):
        context = max(line.server, 0)
        columns = _user_columns(config, context)
        if not line.args or engine_of(config, context) != "sqlite" or columns is None:
            continue
        auth = config.first("sqlauthenticate", context)
        if auth and auth.args and auth.args[0].lower() in ("off", "no", "false"):
            continue
        table, *names = columns
        picked = ", ".join("NULL" if n.upper() == "NULL" else _identifier(n) for n in names)
        try:
            host = on_root(root, resolve(root, line.args[0]))
            connection = sqlite3.connect(f"file:{quote(str(host))}?mode=ro", uri=True, timeout=5)
        except (OSError, sqlite3.Error):
            continue
        try:
            rows = connection.execute(f"SELECT {picked} FROM {_identifier(table)}").fetchall()
        except sqlite3.Error:
            rows = []
        finally:
            connection.close()
        for name, passwd, uid, gid, home, shell in rows:
            fields = ["" if v is None else str(v) for v in (name, passwd, uid, gid, "", home)]
            users.setdefault(fields[0], [*fields, "" if shell is None else str(shell)])
    return users


def smoke_copies(root: Path, config: Config, run: Run) -> None:
    """Give the run an online-backup copy of each SQLite database the config names (owner,
    mode and folder mode as the node's), the users' homes mapped onto a prefix root; the copy
    line replaces SQLConnectInfo's path (run.auth_files), so the smoke never writes the
    restored database."""
    for index, line in enumerate(config.of("sqlconnectinfo")):
        server = max(line.server, 0)
        if not line.args or engine_of(config, server) != "sqlite":
            continue
        node_file = line.args[0]
        if node_file in run.auth_files:
            continue
        node_path = resolve(root, posixpath.normpath(posixpath.join("/", node_file)))
        place = run.work / "sql" / str(index)
        copy = place / posixpath.basename(node_path)
        try:
            sqlite_copies.copy_to(root, node_path, copy)
        except (OSError, sqlite3.Error):
            continue
        columns = _user_columns(config, server)
        if columns and str(root) != "/":
            _map_homes(root, copy, columns[0], columns[1], columns[5])
        parent = on_root(root, posixpath.dirname(node_path)).stat()
        os.chown(place, parent.st_uid, parent.st_gid)
        place.chmod(stat.S_IMODE(parent.st_mode))
        (run.work / "sql").chmod(0o755)
        run.auth_files[node_file] = copy
        run.differ(f"SQLConnectInfo ({line.where}): a copy of the database in the work dir")


def _map_homes(root: Path, copy: Path, table: str, name: str, home: str) -> None:
    """Point each user's home in the copy at its place under root (as the node sees it)."""
    if home.upper() == "NULL":
        return
    connection = sqlite3.connect(copy)
    try:
        query = f"SELECT {_identifier(name)}, {_identifier(home)} FROM {_identifier(table)}"
        update = (
            f"UPDATE {_identifier(table)} SET {_identifier(home)} = ? WHERE {_identifier(name)} = ?"
        )
        with connection:
            for user, folder in connection.execute(query).fetchall():
                if isinstance(folder, str):
                    connection.execute(update, (mapped_path(root, folder), user))
    finally:
        connection.close()
    with contextlib.suppress(OSError):
        os.unlink(f"{copy}-journal")
