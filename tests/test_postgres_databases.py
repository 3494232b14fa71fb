"""A ProFTPD node whose accounts live in Debian's PostgreSQL (mod_sql_postgres) on 127.0.0.1:
backup dumps the database with pg_dump into the snapshot; the node and its database destroyed,
`restore --restore-databases --smoke` loads the dump back and an SQL user logs in; a restore
without the flag leaves the dump with the command that loads it; the drill serves the dump from
a throwaway PostgreSQL of its own while the node's database is gone; `discover` proposes
proftpd. The database password never shows in any output.

Nothing is mocked: Debian's PostgreSQL 15, proftpd with mod_sql_postgres, restic and SeaweedFS.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from nodes import drkit, free_port, init_node, refusing_port
from pydantic import SecretStr

from drkit.engines import dumps
from drkit.model import Database, Inventory
from drkit.profiles.proftpd import standins
from drkit.profiles.proftpd.config import read_config
from drkit.service import databases

pytestmark = pytest.mark.integration

PARENT = Path("/var/lib/drkit-tests")  # root-owned 0755: the postgres user reaches its cluster
AS_POSTGRES = ["runuser", "-u", "postgres", "--"]
UID = 29700 + int(os.environ.get("DRKIT_SAMPLE_WORKER", "0") or 0)


def _bin(name: str) -> str:
    found = dumps.postgres_program(name)
    if found is None:
        pytest.fail(f"PostgreSQL's {name} is missing: run ./scripts/bootstrap")
    return found


class Cluster:
    """A throwaway PostgreSQL cluster of the test's own on 127.0.0.1."""

    def __init__(self, top: Path, port: int):
        self.top, self.port = top, port

    def sql(self, statements: str, database: str = "postgres") -> str:
        """Run SQL as the superuser over the private socket; return psql's unaligned output."""
        done = subprocess.run(
            [*AS_POSTGRES, _bin("psql"), "-X", "-qAt", "-v", "ON_ERROR_STOP=1", "-h",
             str(self.top / "sock"), "-p", str(self.port), "-U", "postgres", "-d", database],
            input=statements, capture_output=True, text=True, cwd="/", check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def postmaster_running(self, pid: int) -> bool:
        """Judge by state: a stopped postmaster may linger here as a zombie."""
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        return state not in ("Z", "X")


@pytest.fixture
def postgres(node_root: Path) -> Iterator[dict]:
    """Debian's PostgreSQL on 127.0.0.1 (a cluster of the test's own at a port of this worker),
    with role ftpuser (a password), database ftpdb owned by it and a users table of one
    ProFTPD account (crypt password, uid, gid, home, shell, login count); stopped and removed
    afterwards."""
    PARENT.mkdir(mode=0o755, parents=True, exist_ok=True)
    top = PARENT / f"pg-{secrets.token_hex(5)}"
    top.mkdir(mode=0o700)
    shutil.chown(top, "postgres", "postgres")
    data, port = top / "data", free_port()
    subprocess.run(
        [*AS_POSTGRES, _bin("initdb"), "-D", str(data), *dumps.INITDB],
        check=True, capture_output=True, cwd="/",
    )  # fmt: skip
    subprocess.run([*AS_POSTGRES, "mkdir", "-m", "0700", str(top / "sock")], check=True)
    with (data / "postgresql.auto.conf").open("a") as conf:
        conf.write(
            f"listen_addresses = '127.0.0.1'\nport = {port}\n"
            f"unix_socket_directories = '{top / 'sock'}'\nfsync = off\n"
        )
    pg_ctl = [*AS_POSTGRES, _bin("pg_ctl"), "-D", str(data)]
    subprocess.run(
        [*pg_ctl, "-l", str(top / "server.log"), "-w", "-t", "60", "start"],
        check=True, capture_output=True, cwd="/",
    )  # fmt: skip
    cluster = Cluster(top, port)
    pid = int((data / "postmaster.pid").read_text().split()[0])
    try:
        password = secrets.token_urlsafe(18)
        cluster.sql(
            f"CREATE ROLE ftpuser LOGIN CREATEDB PASSWORD '{password}';\n"
            "CREATE DATABASE ftpdb OWNER ftpuser;\n"
        )
        user, user_password = f"sqluser{UID}", secrets.token_urlsafe(12)
        hashed = subprocess.run(
            ["openssl", "passwd", "-6", "-stdin"],
            input=user_password, capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        home = node_root / "sqlhome"  # beside the node: the account reaches it
        home.mkdir(mode=0o755)
        os.chown(home, UID, UID)
        cluster.sql(
            "SET ROLE ftpuser;\n"
            "CREATE TABLE users (userid text PRIMARY KEY, passwd text, uid int, gid int,"
            " homedir text, shell text, count int DEFAULT 0);\n"
            f"INSERT INTO users VALUES ('{user}', '{hashed}', {UID}, {UID}, '{home}',"
            " '/bin/false', 0);\n",
            "ftpdb",
        )
        yield {"cluster": cluster, "port": port, "password": password, "user": user,
               "home": home}  # fmt: skip
    finally:
        subprocess.run(
            [*pg_ctl, "-m", "immediate", "-w", "-t", "20", "stop"],
            capture_output=True, cwd="/", check=False,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while cluster.postmaster_running(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not cluster.postmaster_running(pid), "the test's postmaster is still running"
        shutil.rmtree(top, ignore_errors=True)


def _sql_node(root: Path, database: dict) -> None:
    """A ProFTPD node on root: SFTP in a VirtualHost (publickey), accounts from mod_sql with
    mod_sql_postgres in <Global>, every login counted in the database (SQLLog)."""
    for directory in ("etc/proftpd/authorized_keys", "var/log/proftpd"):
        (root / directory).mkdir(parents=True)
    key = root / "etc/proftpd/ssh_host_ed25519_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    (root / "etc/proftpd/modules.conf").write_text(
        "ModulePath /usr/lib/proftpd\nLoadModule mod_sftp.c\nLoadModule mod_sql.c\n"
        "LoadModule mod_sql_postgres.c\n"
    )
    sql = root / "etc/proftpd/sql.conf"
    sql.write_text(
        "<IfModule mod_sql.c>\n"
        "  SQLBackend postgres\n"
        "  SQLEngine on\n"
        "  SQLAuthenticate users\n"
        "  SQLAuthTypes Crypt\n"
        f"  SQLConnectInfo ftpdb@127.0.0.1:{database['port']} ftpuser {database['password']}\n"
        "  SQLUserInfo users userid passwd uid gid homedir shell\n"
        "  SQLNamedQuery login_count UPDATE \"count=count+1 WHERE userid='%u'\" users\n"
        "  SQLLog PASS login_count\n"
        "  AuthOrder mod_sql.c\n"
        "</IfModule>\n"
    )
    sql.chmod(0o600)
    (root / "etc/proftpd/proftpd.conf").write_text(
        "Include /etc/proftpd/modules.conf\n"
        "ServerType standalone\nDefaultAddress 127.0.0.1\nSocketBindTight on\nUseIPv6 off\n"
        f"Port {free_port()}\nUser nobody\nGroup nogroup\n"
        "<Global>\n"
        "  Include /etc/proftpd/sql.conf\n"
        "  RequireValidShell off\n"
        "  DefaultRoot ~\n"
        "</Global>\n"
        "<VirtualHost 127.0.0.1>\n"
        f"  Port {free_port()}\n"
        "  SFTPEngine on\n"
        "  SFTPHostKey /etc/proftpd/ssh_host_ed25519_key\n"
        "  SFTPAuthMethods publickey\n"
        "  SFTPAuthorizedUserKeys file:/etc/proftpd/authorized_keys/%u\n"
        "  SFTPLog /var/log/proftpd/sftp.log\n"
        "</VirtualHost>\n"
    )


def statuses(document: dict) -> dict[str, dict]:
    assert "checks" in document, document  # an error document names what stopped the command
    return {check["name"]: check for check in document["checks"]}


def test_a_postgres_backed_proftpd_node_is_dumped_restored_loaded_and_drilled(
    node_root, work_dir, s3_repository, postgres
):
    root, cluster = node_root / "root", postgres["cluster"]
    _sql_node(root, postgres)
    label = f"postgresql://127.0.0.1:{postgres['port']}/ftpdb"
    dump = f"{dumps.DUMPS_DIR}/postgresql-127.0.0.1-{postgres['port']}-ftpdb.sql"

    config, _ = init_node(root, s3_repository, work_dir, "proftpd", postgres["user"], "pg-1")
    code, backup = drkit("backup", "--config", str(config))
    assert code == 0, backup
    code, shown = drkit("show", "latest", "--config", str(config))
    held = {entry["path"]: entry for entry in shown["files"]}
    assert held[dump]["category"] == "databases", held.get(dump)
    assert held[dump]["mode"] == "0600"
    text = (root / dump.lstrip("/")).read_text()
    assert "CREATE TABLE public.users" in text and postgres["user"] in text

    # The node destroyed, its database dropped: restore loads the dump, an SQL user logs in.
    shutil.rmtree(root)
    cluster.sql("DROP DATABASE ftpdb;")
    code, restored = drkit(
        "restore", "latest", "--restore-databases", "--smoke", "--config", str(config)
    )
    checks = statuses(restored)
    assert code == 0, [c for c in restored["checks"] if c["status"] != "pass"]
    assert checks[f"database: {label}"]["status"] == "pass", checks
    assert checks["smoke: sftp login"]["status"] == "pass", checks
    assert postgres["user"] in checks["smoke: sftp login"]["detail"]
    assert [entry["loaded"] for entry in restored["databases"]] == [True]
    rows = cluster.sql("SELECT userid, count FROM users;", "ftpdb")
    assert rows.startswith(f"{postgres['user']}|"), rows

    # Without --restore-databases the dump is left with the command that loads it.
    other = node_root / "other"
    code, left = drkit("restore", "latest", "--target", str(other), "--config", str(config))
    assert code == 0, left
    [entry] = left["databases"]
    kept = other / entry["dump"].lstrip("/")
    assert entry["loaded"] is False and entry["dump"].startswith(dumps.RESTORED_DIR + "/")
    assert kept.read_text() == text and oct(kept.stat().st_mode & 0o777) == "0o600"
    assert entry["command"].startswith("psql ") and entry["dump"] in entry["command"]
    assert statuses(left)[f"database: {label}"]["status"] == "warn"

    # The drill serves the dump from its own throwaway server: the node's database is gone.
    cluster.sql("DROP DATABASE ftpdb;")
    code, drill = drkit("drill", "--config", str(config))
    checks = statuses(drill)
    assert code == 0, [c for c in drill["checks"] if c["status"] != "pass"]
    assert checks["databases: throwaway server"]["status"] == "pass", checks
    assert checks[f"database: {label}"]["status"] == "pass", checks
    assert checks["smoke: sftp login"]["status"] == "pass", checks
    assert drill["rto_seconds"] is not None

    code, found = drkit("discover", "--root", str(root))
    assert code == 0, found
    assert [server["server"] for server in found["servers"]] == ["proftpd"]

    documents = json.dumps([backup, shown, restored, left, drill, found])
    assert postgres["password"] not in documents  # the database password is never shown


def test_a_failed_dump_and_an_unreachable_remote_database_are_warnings(node_root):
    """A local database whose server refuses leaves a warning and no dump (nor a stale one);
    a remote one is never dumped, its unreachability reported; the password never shows."""
    secret = secrets.token_urlsafe(18)
    local = Database("postgresql", "/etc/proftpd/sql.conf:SQLConnectInfo", name="ftpdb",
                     host="127.0.0.1", port=refusing_port(), user="ftpuser",
                     password=SecretStr(secret))  # fmt: skip
    remote = Database("postgresql", "/etc/proftpd/sql.conf:SQLConnectInfo", name="ftpdb",
                      host="127.0.0.1", port=refusing_port(), user="ftpuser", local=False,
                      password=SecretStr(secret))  # fmt: skip
    stale = node_root / dumps.DUMPS_DIR.lstrip("/") / dumps.dump_name(local)
    stale.parent.mkdir(parents=True)
    stale.write_text("-- an old dump\n")
    inventory = Inventory(databases=[local, remote])
    assert databases.take_dumps(node_root, inventory) == []
    assert inventory.files == [] and not stale.exists()
    dumped, unreachable = inventory.warnings
    assert dumped.startswith(f"database dump not taken: {local.label}: pg_dump failed: ")
    assert "Connection refused" in dumped, dumped
    assert unreachable.startswith(f"database {remote.label} (/etc/proftpd/sql.conf:SQLConn")
    assert "an external authority: unreachable" in unreachable
    assert secret not in repr(inventory) and secret not in str(local.password)


def test_a_remote_database_server_is_an_external_authority_whose_reachability_is_checked(
    node_root,
):
    """ProFTPD's checks report each remote SQLConnectInfo server: reachable or not (a
    warning), by one connection, its password never shown."""
    secret = secrets.token_urlsafe(18)
    port = refusing_port()
    conf = node_root / "etc/proftpd/proftpd.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text(
        "SQLBackend postgres\nSQLEngine on\nSQLAuthenticate users\n"
        f"SQLConnectInfo ftpdb@0.0.0.0:{port} ftpuser {secret}\n"
    )
    [check] = standins.authority_checks(read_config(node_root, "/etc/proftpd/proftpd.conf"))
    assert check.name.startswith(f"database: postgresql://0.0.0.0:{port}/ftpdb (external")
    assert check.status == "warn" and "unreachable" in check.detail
    assert secret not in check.name + check.detail


def test_a_throwaway_server_left_by_a_killed_drkit_is_stopped_by_the_next_one(node_root):
    """A drkit killed outright leaves its throwaway postmaster running; the next throwaway
    under the same parent stops it (judged by state) and removes its files."""
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from drkit.engines import dumps\n"
        "with dumps.throwaway_postgres(Path(sys.argv[1])) as cluster:\n"
        "    print(cluster.top, flush=True)\n"
        "    time.sleep(600)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(node_root)], stdout=subprocess.PIPE, text=True
    )
    try:
        top = Path(child.stdout.readline().strip())
        pid = int((top / "data" / "postmaster.pid").read_text().split()[0])
        sockets = Path((top / dumps.OWNER).read_text().split("\n")[1])
    finally:
        child.kill()
        child.wait(10)
    cluster = Cluster(top, 0)
    assert cluster.postmaster_running(pid)  # orphaned: nothing stopped it
    with dumps.throwaway_postgres(node_root) as fresh:
        assert fresh.top != top
        assert not top.exists() and not cluster.postmaster_running(pid)
        assert not sockets.exists()
