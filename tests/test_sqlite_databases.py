"""A ProFTPD node whose accounts live in SQLite (mod_sql_sqlite), backed up while the server
writes the database: a client loop logs in continuously and every login updates users.db
(SQLLog), while drkit backs up three times. Every snapshot holds a copy made with SQLite's
online backup API that passes `PRAGMA integrity_check`; the node destroyed, `restore --smoke`
brings it back, the smoke logs in as an SQL user and the users log in with their own passwords
to a real proftpd on the restored database; the drill passes; `discover` proposes proftpd. A
broken twin: a users.db that fails integrity_check fails restore's check, naming the file.

Nothing is mocked: Debian's proftpd with mod_sql_sqlite, SQLite, restic and SeaweedFS.
"""

from __future__ import annotations

import ftplib
import os
import secrets
import shutil
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from nodes import RESTIC, drkit, free_port, init_node

from drkit import errors
from drkit.engines import sqlite_copies
from drkit.model import FileRecord
from drkit.profiles.proftpd import read_config, sql

pytestmark = pytest.mark.integration

WORKER = int(os.environ.get("DRKIT_SAMPLE_WORKER", "0") or 0)
UID = 29800 + WORKER
SMOKE, USER = f"sqlsmoke{WORKER}", f"sqlalice{WORKER}"
DB = "/etc/proftpd/users.db"
SQL = (
    "AuthOrder mod_sql.c\nSQLBackend sqlite3\nSQLEngine on\nSQLAuthenticate users\n"
    "SQLAuthTypes Crypt\nSQLConnectInfo {db}\nSQLUserInfo {users}\n"
    "SQLNamedQuery login_count UPDATE \"count=count+1 WHERE userid='%u'\" users\n"
    "SQLLog PASS login_count\n"
)
COMMON = (
    "ModulePath /usr/lib/proftpd\nLoadModule mod_sql.c\nLoadModule mod_sql_sqlite.c\n"
    "ServerType standalone\nDefaultAddress 127.0.0.1\nSocketBindTight on\nUseIPv6 off\n"
    "User nobody\nGroup nogroup\nRequireValidShell off\nWtmpLog off\n"
    "<IfModule mod_delay.c>\n  DelayEngine off\n</IfModule>\n"
)


def _crypt(password: str) -> str:
    return subprocess.run(
        ["openssl", "passwd", "-6", "-stdin"],
        input=password, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


def _node(root: Path) -> dict[str, str]:
    """The node: proftpd.conf naming users.db (two SQL users, homes under /srv/ftp, 4 MB of
    login history so that a torn byte copy is likely); return the users' passwords."""
    (root / "etc/proftpd").mkdir(parents=True)
    (root / "etc/proftpd/proftpd.conf").write_text(
        COMMON
        + f"Port {free_port()}\nDefaultRoot ~\n"
        + SQL.format(db=DB, users="users userid passwd uid gid homedir shell")
    )
    passwords = {SMOKE: secrets.token_urlsafe(12), USER: secrets.token_urlsafe(12)}
    database = sqlite3.connect(root / DB.lstrip("/"))
    with database:
        database.execute(
            "CREATE TABLE users (userid TEXT PRIMARY KEY, passwd TEXT, uid INTEGER, "
            "gid INTEGER, homedir TEXT, shell TEXT, count INTEGER DEFAULT 0)"
        )
        database.execute("CREATE TABLE history (at TEXT, padding BLOB)")
        database.execute("CREATE INDEX history_at ON history (at)")
        database.executemany(
            "INSERT INTO history VALUES (datetime('now'), randomblob(4000))", [()] * 1000
        )
        for user, password in passwords.items():
            home = root / "srv/ftp" / user
            home.mkdir(parents=True)
            os.chown(home, UID, UID)
            database.execute(
                "INSERT INTO users VALUES (?, ?, ?, ?, ?, '/bin/false', 0)",
                (user, _crypt(password), UID, UID, f"/srv/ftp/{user}"),
            )
    database.close()
    (root / DB.lstrip("/")).chmod(0o600)
    return passwords


@pytest.fixture
def live(node_root) -> Iterator[dict]:
    """Run a real proftpd on 127.0.0.1 from the node's users.db (at its host path; every home
    one work directory, as the node's are node paths); stop it afterwards."""
    procs: list[subprocess.Popen] = []

    def start(root: Path) -> int:
        work = node_root / f"live-{len(procs)}"
        work.mkdir(mode=0o755)
        (work / "home").mkdir(mode=0o777)
        port = free_port()
        conf = work / "proftpd.conf"
        conf.write_text(
            COMMON
            + f"Port {port}\nPidFile {work}/pid\nScoreboardFile {work}/scoreboard\n"
            + f"SQLNamedQuery get-user SELECT \"userid, passwd, uid, gid, '{work}/home', shell "
            + "FROM users WHERE userid='%U'\" \n"
            + SQL.format(db=root / DB.lstrip("/"), users="custom:/get-user")
        )
        process = subprocess.Popen(
            ["proftpd", "-n", "-q", "-c", str(conf)],
            stdout=subprocess.DEVNULL, stderr=(work / "log").open("w"),
        )  # fmt: skip
        procs.append(process)
        deadline = time.monotonic() + 15
        while True:
            try:
                ftplib.FTP().connect("127.0.0.1", port, timeout=2).startswith("220")
                return port
            except OSError:
                assert process.poll() is None, (work / "log").read_text()
                assert time.monotonic() < deadline, "proftpd did not listen"
                time.sleep(0.1)

    try:
        yield {"start": start}
    finally:
        for process in procs:
            process.terminate()
            process.wait(10)


def _login(port: int, user: str, password: str) -> None:
    with ftplib.FTP() as client:
        client.connect("127.0.0.1", port, timeout=10)
        client.login(user, password)


class Writer:
    """Log in again and again (each login updates users.db) until stopped."""

    def __init__(self, port: int, user: str, password: str):
        self.args, self.logins, self.errors = (port, user, password), 0, []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stopped.is_set():
            try:
                _login(*self.args)
                self.logins += 1
            except (OSError, ftplib.Error) as exc:
                self.errors.append(str(exc))

    def __enter__(self) -> Writer:
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stopped.set()
        self.thread.join(30)


def _count(root: Path, user: str) -> int:
    database = sqlite3.connect(f"file:{root / DB.lstrip('/')}?mode=ro", uri=True, timeout=30)
    try:
        return database.execute("SELECT count FROM users WHERE userid = ?", (user,)).fetchone()[0]
    finally:
        database.close()


def _snapshot_copy(s3_repository, snapshot_id: str, into: Path) -> Path:
    """Dump the database copy a snapshot holds (restic dump) into a file; return it."""
    env = {
        **os.environ,
        "RESTIC_REPOSITORY": s3_repository.restic_url,
        "RESTIC_PASSWORD_FILE": str(s3_repository.password_file),
    }
    held = sqlite_copies.stored_path(DB)
    with into.open("wb") as out:
        done = subprocess.run([RESTIC, "dump", snapshot_id, held], env=env, stdout=out, check=False)
    assert done.returncode == 0, f"restic dump {held} failed"
    return into


def statuses(document: dict) -> dict[str, dict]:
    return {check["name"]: check for check in document["checks"]}


def test_a_sqlite_backed_proftpd_node_is_copied_consistently_while_written_and_restored(
    node_root, work_dir, s3_repository, live
):
    root = node_root / "root"
    passwords = _node(root)
    code, found = drkit("discover", "--root", str(root))
    assert code == 0, found
    assert [server["server"] for server in found["servers"]] == ["proftpd"], found
    assert DB in found["servers"][0]["categories"]["databases"], found

    config, _ = init_node(root, s3_repository, work_dir, "proftpd", SMOKE, "sqlite-1")
    port = live["start"](root)
    snapshots = []
    with Writer(port, USER, passwords[USER]) as writer:
        for _ in range(3):
            before = writer.logins
            code, backup = drkit("backup", "--config", str(config))
            assert code == 0, backup
            assert writer.logins > before, writer.errors[:3]
            snapshots.append(backup["snapshot_id"])
    assert not writer.errors, writer.errors[:3]
    assert _count(root, USER) >= writer.logins > 0
    for index, snapshot_id in enumerate(snapshots):
        copy = _snapshot_copy(s3_repository, snapshot_id, work_dir / f"copy-{index}.db")
        connection = sqlite3.connect(copy)
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)], snapshot_id
        connection.close()
    code, verified = drkit("verify", "--config", str(config))
    assert code == 0 and not verified["spot"]["failed"], verified  # the copy integrity-checked
    code, shown = drkit("show", "latest", "--config", str(config))
    held = {entry["path"]: entry for entry in shown["files"]}
    assert held[DB]["category"] == "databases" and held[DB]["mode"] == "0600", held.get(DB)
    assert not {f"{DB}-journal", f"{DB}-wal"} & set(held)

    shutil.rmtree(root)
    code, restored = drkit("restore", "latest", "--smoke", "--config", str(config))
    found = statuses(restored)
    assert code == 0, restored
    assert found[f"database {DB}"]["status"] == "pass", found
    assert found["smoke: ftp login"]["status"] == "pass", found
    assert SMOKE in found["smoke: ftp login"]["detail"], found
    counted = _count(root, SMOKE)
    port = live["start"](root)
    for user, password in passwords.items():
        _login(port, user, password)  # the SQL users log in with their own passwords
    assert _count(root, SMOKE) == counted + 1  # the smoke wrote its copy, never the restored db

    code, drilled = drkit("drill", "--config", str(config))
    assert code == 0, drilled

    # The broken twin: a users.db that fails integrity_check is backed up with a warning, and
    # restore's check of its copy fails, naming the file.
    broken = sqlite3.connect(root / DB.lstrip("/"))
    with broken:  # the userid index now points at the history index's pages
        broken.execute("PRAGMA writable_schema=ON")
        broken.execute(
            "UPDATE sqlite_schema SET rootpage = (SELECT rootpage FROM sqlite_schema WHERE "
            "name = 'history_at') WHERE name = 'sqlite_autoindex_users_1'"
        )
    broken.close()
    code, backup = drkit("backup", "--config", str(config))
    assert code == 0, backup
    warned = [warning for warning in backup["warnings"] if DB in warning]
    assert warned and "integrity_check" in warned[0], backup["warnings"]
    target = node_root / "twin"
    code, refused = drkit("restore", "latest", "--target", str(target), "--config", str(config))
    failed = {c["name"]: c["detail"] for c in refused["checks"] if c["status"] == "fail"}
    assert code != 0 and "integrity_check" in failed.get(f"database {DB}", ""), refused


def test_mod_sql_connections_are_read_by_backend_and_the_password_stays_secret(tmp_path):
    (tmp_path / "etc/proftpd").mkdir(parents=True)
    (tmp_path / "etc/proftpd/proftpd.conf").write_text(
        "SQLBackend postgres\n"
        "SQLConnectInfo ftpdb@db.example.com:5433 ftpuser s3cret PERSESSION "
        "ssl-ca:/etc/ssl/certs/db-ca.pem\n"
        "SQLNamedConnectInfo logdb sqlite3 /var/lib/proftpd/log.db\n"
        "<VirtualHost 127.0.0.1>\n  SQLBackend mysql\n"
        "  SQLConnectInfo users@/run/mysqld/mysqld.sock ftp pw2\n</VirtualHost>\n"
        "<VirtualHost 127.0.0.2>\n  SQLEngine off\n  SQLConnectInfo /off.db\n</VirtualHost>\n"
    )
    config = read_config(tmp_path, "/etc/proftpd/proftpd.conf")
    found = {database.label: database for database in sql.databases(config)}
    assert set(found) == {
        "postgresql://db.example.com:5433/ftpdb",
        "/var/lib/proftpd/log.db",
        "mysql:///run/mysqld/mysqld.sock/users",
    }, found
    remote = found["postgresql://db.example.com:5433/ftpdb"]
    assert (remote.user, remote.local) == ("ftpuser", False)
    assert remote.password is not None and remote.password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(list(found.values())) and "pw2" not in str(found)
    assert found["mysql:///run/mysqld/mysqld.sock/users"].local
    refs = {(ref.path, ref.category) for ref in sql.references(config)}
    assert refs == {("/etc/ssl/certs/db-ca.pem", "tls"), ("/var/lib/proftpd/log.db", "databases")}


def test_the_generic_profile_and_includes_mark_sqlite_files(tmp_path):
    from drkit import profiles
    from drkit.service.context import expand_includes

    (tmp_path / "var/lib/myftpd").mkdir(parents=True)
    sqlite3.connect(tmp_path / "var/lib/myftpd/users.sqlite").close()
    generic = profiles.get("generic")
    options = generic.options({"databases": ["/var/lib/myftpd/*.sqlite"]})
    found = generic.inventory(tmp_path, None, options)
    assert [db.path for db in found.databases] == ["/var/lib/myftpd/users.sqlite"]
    extras = expand_includes(tmp_path, {"databases": ["/var/lib/myftpd/users.sqlite"]})
    assert [(db.engine, db.path) for db in extras.databases] == [
        ("sqlite", "/var/lib/myftpd/users.sqlite")
    ]


def _entry(path: str, kind: str = "file", category: str = "databases") -> FileRecord:
    return FileRecord(
        path=path, category=category, type=kind, mode="0700" if kind == "dir" else "0600",
        uid=0, gid=0, user="root", group="root", mtime="2026-12-07T00:00:00Z",
        **({"size": 0, "sha256": "0" * 64} if kind == "file" else {}),
    )  # fmt: skip


def test_staged_copies_are_placed_without_following_links_and_never_twice(tmp_path):
    staging, outside = tmp_path / "staging", tmp_path / "outside"
    held = staging / sqlite_copies.stored_path(DB).lstrip("/")
    held.parent.mkdir(parents=True)
    sqlite3.connect(held).close()
    files = [_entry("/etc", "dir", "parents"), _entry("/etc/proftpd", "dir", "parents"), _entry(DB)]
    assert sqlite_copies.place(staging, files) == [DB]
    assert (staging / DB.lstrip("/")).is_file()
    assert oct((staging / "etc/proftpd").stat().st_mode & 0o777) == "0o700"  # as listed
    assert not (staging / sqlite_copies.COPIES_DIR.lstrip("/")).exists()

    held.parent.mkdir(parents=True)
    sqlite3.connect(held).close()
    with pytest.raises(errors.Refused, match="held twice"):
        sqlite_copies.place(staging, files)

    (outside / "empty").mkdir(parents=True)
    shutil.rmtree(staging / "var")
    (staging / "var/lib/drkit/snapshot").mkdir(parents=True)
    (staging / sqlite_copies.COPIES_DIR.lstrip("/")).symlink_to(outside)
    with pytest.raises(errors.Refused, match="is a symlink"):
        sqlite_copies.place(staging, [_entry("/srv/other.db")])
    assert (outside / "empty").is_dir()  # nothing outside staging is walked or removed
