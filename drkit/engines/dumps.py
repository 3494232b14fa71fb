"""Database servers on the node: dumps taken with each server's own tool, loaded back with it,
and a throwaway PostgreSQL on loopback for drills.

A dump is plain SQL (`pg_dump --format=plain --clean --if-exists`, `mysqldump
--single-transaction`): unchanged data keeps its dump byte for byte (pg_dump's per-run
restrict key aside), so an unchanged node stays unchanged for freshness and diff.
Credentials reach the tools through a 0600 file in a 0700 directory (PGPASSFILE, mysql's
--defaults-extra-file), never argv, a log line or an exception. A remote database is not
dumped: its reachability is reported (one TCP connection), as for an LDAP server.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import pwd
import re
import shlex
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

from drkit import errors, runner
from drkit.model import Database

DUMPS_DIR = "/var/lib/drkit/databases"  # node path: the dumps a backup stores, listed as files
RESTORED_DIR = "/var/lib/drkit/restored/databases"  # node path: where a restore leaves them
CATEGORY = "databases"
STAND_INS = f"{RESTORED_DIR}/served.json"  # node path: where a drill serves each database now
CONNECT_SECONDS = 10
DUMP_SECONDS = 3600
POSTGRES_BINARIES = Path("/usr/lib/postgresql")
# peer authentication on the cluster's private socket, passwords over TCP
INITDB = (
    "-U",
    "postgres",
    "-E",
    "UTF8",
    "--locale=C",
    "--auth-local=peer",
    "--auth-host=scram-sha-256",
    "-N",
)
START = ("-w", "-t", "60", "start")
STOP = ("-m", "immediate", "-w", "-t", "20", "stop")
ORPHAN_PREFIX = "drkit-pg-"
OWNER = "drkit.pid"  # in a throwaway cluster's directory: the drkit process that runs it
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


class DumpFailed(errors.DrkitError, exit_code=1, kind="database"):
    """A database server's own tool could not dump or load a database (the message names the
    database and the tool's last stderr line; never a password)."""


def dump_name(database: Database) -> str:
    """Return the file name of a database's dump: engine, authority and name, one word."""
    authority = Path(database.socket).name if database.socket else database.host or "localhost"
    port = f"-{database.port}" if database.port else ""
    return _UNSAFE.sub("_", f"{database.engine}-{authority}{port}-{database.name}") + ".sql"


def postgres_program(name: str) -> str | None:
    """Return the newest Debian PostgreSQL's `name` (pg_dump, psql, initdb, pg_ctl), else
    the one on PATH, else None."""
    found = POSTGRES_BINARIES.glob(f"*/bin/{name}")
    versions = sorted(
        (path for path in found if path.parent.parent.name.isdigit()),
        key=lambda path: int(path.parent.parent.name),
    )
    return str(versions[-1]) if versions else shutil.which(name)


def tool_for(database: Database) -> str | None:
    """Return the program that dumps database, or None when this host has none."""
    if database.engine == "postgresql":
        return postgres_program("pg_dump")
    if database.engine == "mysql":
        return shutil.which("mysqldump")
    return None


@contextlib.contextmanager
def _secret_dir() -> Iterator[Path]:
    """A 0700 directory for one command's credential file, removed afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="drkit-db-"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _pgpass_field(text: str) -> str:
    return text.replace("\\", "\\\\").replace(":", "\\:")


def _write_private(path: Path, text: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)


def _postgres_connection(database: Database, directory: Path) -> tuple[list[str], dict[str, str]]:
    """Return (argv connection options, environment) for a PostgreSQL tool: the password, when
    known, in a PGPASSFILE; no prompt ever waits for one."""
    host = database.socket or database.host or "localhost"
    if database.socket and not os.path.isdir(database.socket):
        host = os.path.dirname(database.socket)  # the socket file .s.PGSQL.<port>: its directory
    argv = ["--host", host, "--no-password"]
    if database.port:
        argv += ["--port", str(database.port)]
    if database.user:
        argv += ["--username", database.user]
    env = {"PGCONNECT_TIMEOUT": str(CONNECT_SECONDS), "PGPASSFILE": str(directory / "pgpass")}
    if database.password is not None:
        secret = database.password.get_secret_value()
        _write_private(directory / "pgpass", f"*:*:*:*:{_pgpass_field(secret)}\n")
    return argv, env


def _mysql_defaults(database: Database, directory: Path) -> list[str]:
    """Return mysql's --defaults-extra-file option: connection and password in a 0600 file."""
    lines = ["[client]"]
    if database.socket:
        lines.append(f"socket={database.socket}")
    else:
        lines.append(f"host={database.host or 'localhost'}")
    if database.port:
        lines.append(f"port={database.port}")
    if database.user:
        lines.append(f"user={database.user}")
    if database.password is not None:
        lines.append(f"password={database.password.get_secret_value()}")
    lines.append(f"connect-timeout={CONNECT_SECONDS}")
    _write_private(directory / "my.cnf", "\n".join(lines) + "\n")
    return [f"--defaults-extra-file={directory / 'my.cnf'}"]


def _last_line(completed: runner.Completed) -> str:
    """Return the tool's line that names the cause (its first error), else its last line."""
    lines = completed.stderr.strip().splitlines()
    named = [line for line in lines if "error:" in line or "FATAL:" in line or "ERROR:" in line]
    return (named or lines or [f"exit {completed.returncode}"])[0 if named else -1].strip()


def dump(database: Database, out: Path) -> None:
    """Write a plain-SQL dump of database to the host path out (0600), with the server's own
    tool; raise DumpFailed naming the database when the tool is missing or fails."""
    program = tool_for(database)
    if program is None:
        raise DumpFailed(f"{database.label}: no dump tool for {database.engine} on this host")
    partial = out.with_name(out.name + ".partial")
    partial.unlink(missing_ok=True)
    with _secret_dir() as directory:
        if database.engine == "postgresql":
            connection, env = _postgres_connection(database, directory)
            argv = [program, *connection, "--dbname", database.name, "--format=plain"]
            argv += ["--clean", "--if-exists", "--file", str(partial)]
        else:
            env = {}
            argv = [program, *_mysql_defaults(database, directory), "--single-transaction"]
            argv += ["--skip-dump-date", "--result-file", str(partial), database.name]
        _write_private(partial, "")  # the tool truncates it: the dump is never readable by others
        completed = runner.run(argv, env=env, timeout=DUMP_SECONDS)
    if completed.returncode != 0:
        partial.unlink(missing_ok=True)
        raise DumpFailed(f"{database.label}: {Path(program).name} failed: {_last_line(completed)}")
    if out.is_file() and _same_dump(out, partial):
        partial.unlink()  # unchanged data: the snapshot's file stays byte for byte the same
    else:
        os.replace(partial, out)


def _same_dump(old: Path, new: Path) -> bool:
    """Return True when two dumps differ at most in pg_dump's per-run random \\restrict key
    (which guards psql against meta-commands smuggled in the data), read line by line."""
    with old.open("rb") as first, new.open("rb") as second:
        for left, right in itertools.zip_longest(first, second):
            if left != right and not (_restrict_line(left) and _restrict_line(right)):
                return False
    return True


def _restrict_line(line: bytes | None) -> bool:
    return line is not None and line.startswith((b"\\restrict ", b"\\unrestrict "))


def load_command(database: Database, dump_path: str) -> str:
    """Return the shell command that loads a dump into database (as its user; the password is
    asked for or read from ~/.pgpass / ~/.my.cnf, never written here)."""
    if database.engine == "postgresql":
        argv = ["psql", "-X", "-v", "ON_ERROR_STOP=1", "--single-transaction"]
        argv += ["-h", database.socket or database.host or "localhost"]
        argv += ["-p", str(database.port)] if database.port else []
        argv += ["-U", database.user] if database.user else []
        return shlex.join([*argv, "-d", database.name, "-f", dump_path])
    argv = [
        "mysql",
        *(["-S", database.socket] if database.socket else ["-h", database.host or "localhost"]),
    ]
    argv += ["-P", str(database.port)] if database.port else []
    argv += ["-u", database.user, "-p", database.name]
    return f"{shlex.join(argv)} < {shlex.quote(dump_path)}"


def load(database: Database, dump_file: Path, *, create: bool = True) -> str:
    """Load a dump into database's server as its user (the database created first when it is
    missing and create is set); return a one-line account; raise DumpFailed."""
    with _secret_dir() as directory:
        if database.engine == "postgresql":
            return _load_postgres(database, dump_file, directory, create)
        if database.engine == "mysql":
            program = shutil.which("mysql")
            if program is None:
                raise DumpFailed(f"{database.label}: mysql is not installed on this host")
            defaults = _mysql_defaults(database, directory)
            if create:
                statement = f"CREATE DATABASE IF NOT EXISTS `{database.name.replace('`', '``')}`"
                _checked(database, runner.run([program, *defaults, "-e", statement]))
            _checked(
                database,
                runner.run(
                    [program, *defaults, database.name, "-e", f"source {dump_file}"],
                    timeout=DUMP_SECONDS,
                ),
            )
            return f"loaded {dump_file.name} into {database.label}"
    raise DumpFailed(f"{database.label}: {database.engine} databases are not loaded by drkit")


def _checked(database: Database, completed: runner.Completed) -> runner.Completed:
    if completed.returncode != 0:
        raise DumpFailed(f"{database.label}: {_last_line(completed)}")
    return completed


def _load_postgres(database: Database, dump_file: Path, directory: Path, create: bool) -> str:
    psql = postgres_program("psql")
    if psql is None:
        raise DumpFailed(f"{database.label}: psql is not installed on this host")
    connection, env = _postgres_connection(database, directory)
    base = [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", *connection]
    made = ""
    if create:
        # The name travels as a psql variable (:'name' quotes it), never spliced into SQL.
        query = "SELECT count(*) FROM pg_database WHERE datname = :'name';\n"
        found = _checked(
            database,
            runner.run(
                [*base, "-At", "-d", "postgres", "-v", f"name={database.name}"],
                env=env,
                input_text=query,
            ),
        )
        if found.stdout.strip() == "0":
            _checked(
                database,
                runner.run(
                    [*base, "-d", "postgres", "-v", f"name={database.name}"],
                    env=env,
                    input_text='CREATE DATABASE :"name";\n',
                ),
            )
            made = " (database created)"
    argv = [*base, "--single-transaction", "-d", database.name, "-f", str(dump_file)]
    _checked(database, runner.run(argv, env=env, timeout=DUMP_SECONDS))
    return f"loaded {dump_file.name} into {database.label}{made}"


def reachable(database: Database, timeout: float = 5.0) -> str | None:
    """Return None when database's server accepts a TCP connection (or its socket exists),
    else why not: one connection, no login."""
    if database.socket:
        return None if os.path.exists(database.socket) else f"{database.socket} does not exist"
    default = 5432 if database.engine == "postgresql" else 3306
    address = (database.host or "localhost", database.port or default)
    try:
        with socket.create_connection(address, timeout):
            return None
    except OSError as exc:
        return f"{address[0]}:{address[1]}: {exc.strerror or exc}"


@dataclass
class Throwaway:
    """A PostgreSQL cluster of a drill's own: initdb'd under a private directory, listening on
    127.0.0.1 at a free port, run as the `postgres` system user."""

    top: Path
    port: int
    socket_dir: Path  # short: a socket's path has at most 107 bytes

    def superuser(self, statements: str) -> None:
        """Run SQL as the cluster's superuser over its private socket (peer authentication)."""
        psql = postgres_program("psql") or "psql"
        argv = ["runuser", "-u", "postgres", "--", psql, "-X", "-q", "-v", "ON_ERROR_STOP=1"]
        argv += ["-h", str(self.socket_dir), "-p", str(self.port), "-U", "postgres"]
        argv += ["-d", "postgres"]
        completed = runner.run(argv, input_text=statements, cwd="/")
        if completed.returncode != 0:
            raise DumpFailed(f"throwaway PostgreSQL: {_last_line(completed)}")

    def add_login(self, database: Database) -> None:
        """Create database's role (LOGIN, its password) and the database it owns, empty."""
        password = database.password.get_secret_value() if database.password else ""
        self.superuser(
            f"\\set role {_psql_literal(database.user or 'postgres')}\n"
            f"\\set name {_psql_literal(database.name)}\n"
            f"\\set secret {_psql_literal(password)}\n"
            "SELECT format('CREATE ROLE %I', :'role')"
            " WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \\gexec\n"
            "SELECT format('ALTER ROLE %I LOGIN PASSWORD %L', :'role', :'secret') \\gexec\n"
            "SELECT format('CREATE DATABASE %I OWNER %I', :'name', :'role')"
            " WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'name') \\gexec\n"
        )

    def stand_in(self, database: Database) -> Database:
        """Return database as served by this cluster (127.0.0.1 and its port)."""
        return Database(
            engine=database.engine,
            named_by=database.named_by,
            name=database.name,
            host="127.0.0.1",
            port=self.port,
            user=database.user,
            local=True,
            password=database.password,
        )


def _psql_literal(text: str) -> str:
    """Return text as a psql \\set value: single-quoted, quotes and backslashes escaped."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def write_stand_ins(root: Path, stand_ins: dict[str, str]) -> None:
    """Record on a restored root where each database is served now ({label: "host:port"}),
    for the smoke that starts the server from root."""
    path = Path(str(root).rstrip("/") + STAND_INS)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.write_text(json.dumps(stand_ins, sort_keys=True))
    path.chmod(0o600)


def read_stand_ins(root: Path) -> dict[str, str]:
    """Return what write_stand_ins recorded on root ({} when nothing was)."""
    try:
        found = json.loads(Path(str(root).rstrip("/") + STAND_INS).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(found, dict):
        return {}
    return {str(label): str(where) for label, where in found.items()}


def free_port() -> int:
    """Return a TCP port free on 127.0.0.1 now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def throwaway_missing() -> str | None:
    """Return why this host cannot run a throwaway PostgreSQL (no initdb/pg_ctl, no `postgres`
    system user), or None when it can."""
    if postgres_program("initdb") is None or postgres_program("pg_ctl") is None:
        return "PostgreSQL's initdb and pg_ctl are not installed on this host"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "this host has no postgres system user to run PostgreSQL as"
    return None


@contextlib.contextmanager
def throwaway_postgres(parent: Path) -> Iterator[Throwaway]:
    """Run a fresh PostgreSQL cluster under parent (a root-owned directory others may
    traverse) for the block; stop it and remove its files on the way out."""
    initdb, pg_ctl = postgres_program("initdb"), postgres_program("pg_ctl")
    if initdb is None or pg_ctl is None:
        raise DumpFailed("PostgreSQL's initdb and pg_ctl are not installed on this host")
    if not _searchable(parent):  # the postgres user must reach its data directory
        parent = Path("/var/tmp")
    _remove_orphans(parent, pg_ctl)
    top = Path(tempfile.mkdtemp(prefix=ORPHAN_PREFIX, dir=parent))
    sockets = Path(tempfile.mkdtemp(prefix=ORPHAN_PREFIX))
    (top / OWNER).write_text(f"{os.getpid()}\n{sockets}\n")
    started = False
    as_postgres = ["runuser", "-u", "postgres", "--"]
    try:
        shutil.chown(top, "postgres", "postgres")
        shutil.chown(sockets, "postgres", "postgres")
        completed = runner.run(
            [*as_postgres, initdb, "-D", str(top / "data"), *INITDB],
            cwd="/",
            timeout=120,
        )
        if completed.returncode != 0:
            raise DumpFailed(f"throwaway PostgreSQL: initdb failed: {_last_line(completed)}")
        cluster = Throwaway(top, free_port(), sockets)
        with open(top / "data" / "postgresql.auto.conf", "a") as conf:
            conf.write(
                f"listen_addresses = '127.0.0.1'\nport = {cluster.port}\n"
                f"unix_socket_directories = '{sockets}'\nfsync = off\n"
            )
        completed = runner.run(
            [*as_postgres, pg_ctl, "-D", str(top / "data"), "-l", str(top / "server.log"), *START],
            cwd="/",
            timeout=90,
        )
        started = True
        if completed.returncode != 0:
            log_lines = (top / "server.log").read_text(errors="replace").strip().splitlines()
            why = log_lines[-1] if log_lines else _last_line(completed)
            raise DumpFailed(f"throwaway PostgreSQL did not start: {why}")
        yield cluster
    finally:
        if started:
            runner.run(
                [*as_postgres, pg_ctl, "-D", str(top / "data"), *STOP],
                cwd="/",
                timeout=40,
            )
        _remove_when_stopped(top)
        shutil.rmtree(sockets, ignore_errors=True)


def _remove_orphans(parent: Path, pg_ctl: str) -> None:
    """Stop and remove the throwaway clusters under parent whose drkit died (SIGKILL, power
    loss): their owner file names a process that is gone."""
    for top in parent.glob(f"{ORPHAN_PREFIX}*"):
        try:
            pid, sockets = (top / OWNER).read_text().split("\n")[:2]
            owner = int(pid)
        except (OSError, ValueError):
            continue
        if _alive(owner):
            continue
        if (top / "data" / "postmaster.pid").exists():
            runner.run(
                ["runuser", "-u", "postgres", "--", pg_ctl, "-D", str(top / "data"), *STOP],
                cwd="/",
                timeout=40,
            )
        _remove_when_stopped(top)
        if Path(sockets).name.startswith(ORPHAN_PREFIX):
            shutil.rmtree(sockets, ignore_errors=True)


def _alive(pid: int) -> bool:
    """Return True while pid runs (a zombie has exited: judged by state)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _searchable(directory: Path) -> bool:
    """Return True when every component of directory may be searched by any user."""
    for part in (directory.resolve(), *directory.resolve().parents):
        try:
            if not part.stat().st_mode & 0o001:
                return False
        except OSError:
            return False
    return True


def _remove_when_stopped(top: Path) -> None:
    """Remove a stopped cluster's files (its postmaster.pid goes when it has exited)."""
    deadline = time.monotonic() + 10
    while (top / "data" / "postmaster.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    shutil.rmtree(top, ignore_errors=True)
