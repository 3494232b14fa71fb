"""ProFTPD's mod_sql on a database server: accounts the server holds, and the server a drill
stands in for it.

A smoke of a node whose accounts live in PostgreSQL or MySQL (SQLAuthenticate users with a
server backend) logs in like one on LDAP: the account is the database's, so the login is SFTP
with the one-run key. A drill loads the node's dumps into a throwaway server of its own
(drkit.service.databases) and records where each database is served now on the restored root;
the smoke's copy of SQLConnectInfo then names that server: an address and port changed, and
said so.
"""

from __future__ import annotations

from pathlib import Path

from drkit.engines import dumps
from drkit.model import Check, passed, warned
from drkit.profiles.proftpd import sql
from drkit.profiles.proftpd.config import Config
from drkit.profiles.proftpd.sandbox import Run


def server_accounts(config: Config) -> bool:
    """Return True when mod_sql takes accounts from a database server (not SQLite) in some
    server context."""
    for line in config.of("sqlconnectinfo"):
        server = max(line.server, 0)
        auth = config.first("sqlauthenticate", server)
        if auth and auth.args and auth.args[0].lower() in ("off", "no", "false"):
            continue
        if line.args and sql.engine_of(config, server) in ("postgresql", "mysql"):
            return True
    return False


def authority_checks(config: Config) -> list[Check]:
    """Return one check per remote database server SQLConnectInfo names (an external
    authority, like an LDAP server): reachable with one TCP connection, no login; unreachable
    is a warning (the node's accounts are not drkit's to restore)."""
    found: list[Check] = []
    for line in config.of("sqlconnectinfo"):
        engine = sql.engine_of(config, max(line.server, 0))
        if not line.args or engine is None or engine == "sqlite":
            continue
        database = sql.connect_info(engine, line.args, line.where)
        if database.local:
            continue
        name = f"database: {database.label} (external authority, {line.where})"
        why = dumps.reachable(database)
        found.append(warned(name, f"unreachable: {why}") if why else passed(name, "reachable"))
    return found


def point_at_stand_ins(root: Path, config: Config, run: Run) -> None:
    """Point the run's SQLConnectInfo lines at the servers a drill serves the restored
    databases from (nothing when root records none), each change named."""
    served = dumps.read_stand_ins(root)
    if not served:
        return
    for line in config.of("sqlconnectinfo"):
        engine = sql.engine_of(config, max(line.server, 0))
        if not line.args or engine is None or engine == "sqlite":
            continue
        database = sql.connect_info(engine, line.args, line.where)
        where = served.get(database.label)
        if where is None:
            continue
        run.stand_ins[line.args[0]] = f"{database.name}@{where}"
        run.differ(
            f"SQLConnectInfo ({line.where}): {database.label} served by the drill's throwaway "
            f"server at {where}"
        )
