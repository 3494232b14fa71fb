"""The corpus of real configurations: load every `case.yaml` and build a case into a node root.

Each directory beside this file is one configuration written by others (see README.md): its
`root/` holds the files as they sit on a node, `case.yaml` says where they came from, every change
made to them, the accounts the node needs, the key material to generate (none is committed) and
`expect_files`, the node paths the configuration names that a backup must contain.

    from tests.corpus.cases import load_cases, materialise
    for case in load_cases():
        built = materialise(case, root)      # copies root/, fills {{port}}, makes users and keys

Placeholders `{{name}}` in text files are ports: each distinct name gets a free loopback port
(or the one passed in `ports`). Key generation uses ssh-keygen (host and user keys) and the
`cryptography` library (TLS certificates, CA, host-certificate CA is ssh-keygen).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import socket
import sqlite3
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import yaml

CORPUS = Path(__file__).resolve().parent
PLACEHOLDER = re.compile(r"\{\{([a-z][a-z0-9_]*)\}\}")
SERVERS = ("openssh", "proftpd", "vsftpd", "pureftpd", "sftpplus")


@dataclass(frozen=True)
class Source:
    """Where the original came from: a repository file at a commit, or a package version."""

    repository: str | None = None
    path: str | None = None
    commit: str | None = None
    package: str | None = None
    version: str | None = None
    url: str | None = None
    files: tuple[str, ...] = ()  # further files of the same source (paths in it)

    @property
    def key(self) -> str:
        """One name per distinct source (repository or package), for counting sources."""
        return self.repository or self.package or self.url or "?"

    def describe(self) -> str:
        if self.repository:
            return f"{self.repository}:{self.path}@{(self.commit or '')[:12]}"
        return f"{self.package or self.url} {self.version}"


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    home: str
    shell: str = "/usr/sbin/nologin"
    gid: int | None = None  # default: a group of the same name and id
    group: str | None = None  # primary group name (default: the user's name)
    groups: tuple[str, ...] = ()  # supplementary groups
    login: str = "none"  # password | key | none (system or guest account)
    password: str | None = None  # the source's example password, for password logins
    home_owner: str = "user"  # user | root (chroot homes must be root-owned)
    home_mode: str = "0755"
    virtual: bool = False  # an account of the server's own store, not of /etc/passwd


@dataclass(frozen=True)
class HostKey:
    type: str  # ed25519 | ecdsa | rsa | dsa
    path: str
    bits: int | None = None
    format: str = "openssh"  # openssh | pem (ProFTPD, SFTPPlus read PEM rsa/ecdsa/dsa)
    pub: bool = True  # also write PATH.pub
    mode: str = "0600"


@dataclass(frozen=True)
class Tls:
    cert: str
    key: str | None = None  # None: the key is in the cert file (key first, then certificate)
    cn: str = "ftp.example.test"
    key_type: str = "rsa"  # rsa | ec
    ca: str | None = None  # write the signing CA's certificate here (else self-signed)
    key_mode: str = "0600"
    key_group: str | None = None  # e.g. ssl-cert (Debian snakeoil is 0640 root:ssl-cert)
    days: int = 365
    mismatched_key: bool = False  # a broken twin: the key file holds another pair's key


@dataclass(frozen=True)
class AuthorizedKey:
    user: str
    path: str
    format: str = "openssh"  # openssh | rfc4716 (ProFTPD SFTPAuthorizedUserKeys)
    type: str = "ed25519"
    mode: str = "0600"
    owner: str = "user"  # user | root


@dataclass(frozen=True)
class Dir:
    path: str
    mode: str = "0755"
    owner: str = "root"  # root or a user name of the case


@dataclass(frozen=True)
class File:
    path: str
    content: str = ""
    mode: str = "0644"
    owner: str = "root"
    sqlite: str = ""  # SQL statements: the file is the SQLite database they build
    truncate: int | None = None  # then cut to this many bytes (a torn copy)


@dataclass(frozen=True)
class Generate:
    host_keys: tuple[HostKey, ...] = ()
    tls: tuple[Tls, ...] = ()
    authorized_keys: tuple[AuthorizedKey, ...] = ()
    dirs: tuple[Dir, ...] = ()
    files: tuple[File, ...] = ()


@dataclass(frozen=True)
class ExpectFail:
    """What a broken twin's defect must make drkit report: a failing check (of restore --smoke
    or check) whose name contains CHECK and whose detail contains DETAIL."""

    check: str
    detail: str


@dataclass(frozen=True)
class Case:
    name: str
    directory: Path
    server: str
    source: Source
    changes: tuple[str, ...]
    expect_files: tuple[str, ...]
    license: str | None = None
    exercises: tuple[str, ...] = ()
    profile_options: dict = field(default_factory=dict)
    users: tuple[User, ...] = ()
    generate: Generate = Generate()
    expect_missing_ok: tuple[str, ...] = ()
    host_programs: tuple[str, ...] = ()  # programs the config runs: checked on the host
    config: str = ""  # the main config's node path
    drkit_may_miss: tuple[str, ...] = ()
    # The account the cycle's restore --smoke logs in as; None: the profile's static proof only
    # (`no_smoke` then says why).
    smoke_user: str | None = None
    no_smoke: str | None = None
    # `drkit init --include` values the operator of such a node gives (files named by nothing
    # the server reads); each says why in the case's notes.
    includes: tuple[str, ...] = ()
    # A broken twin: a copy of the case TWIN_OF with one defect (`defect`) that the real server
    # refuses (`server_said`: its own words, from one run before the twin entered the corpus);
    # drkit must fail as `expect_fail` says.
    twin_of: str | None = None
    defect: str | None = None
    server_said: str | None = None
    expect_fail: ExpectFail | None = None

    @property
    def files_root(self) -> Path:
        return self.directory / "root"

    def placeholders(self) -> list[str]:
        names: set[str] = set()
        for path in _text_files(self.files_root):
            names.update(PLACEHOLDER.findall(path.read_text()))
        return sorted(names)


@dataclass
class Built:
    """A case materialised: where, the ports its placeholders got, and the client keys."""

    case: Case
    root: Path
    ports: dict[str, int]
    client_keys: dict[str, Path]  # user -> private key file (outside the node root)
    passwords: dict[str, str]

    def node(self, path: str) -> Path:
        return self.root / path.lstrip("/")


# --- loading ---------------------------------------------------------------------------------


def _tuple(items, cls):
    return tuple(cls(**item) for item in (items or ()))


def load_case(directory: Path) -> Case:
    data = yaml.safe_load((directory / "case.yaml").read_text())
    gen = data.get("generate") or {}
    source = dict(data["source"])
    source["files"] = tuple(source.get("files") or ())
    users = []
    for user in data.get("users") or ():
        user = dict(user)
        user["groups"] = tuple(user.get("groups") or ())
        users.append(User(**user))
    case = Case(
        name=directory.name,
        directory=directory,
        server=data["server"],
        source=Source(**source),
        license=data.get("license"),
        changes=tuple(data.get("changes") or ()),
        exercises=tuple(data.get("exercises") or ()),
        profile_options=data.get("profile_options") or {},
        users=tuple(users),
        generate=Generate(
            host_keys=_tuple(gen.get("host_keys"), HostKey),
            tls=_tuple(gen.get("tls"), Tls),
            authorized_keys=_tuple(gen.get("authorized_keys"), AuthorizedKey),
            dirs=_tuple(gen.get("dirs"), Dir),
            files=_tuple(gen.get("files"), File),
        ),
        expect_files=tuple(data.get("expect_files") or ()),
        expect_missing_ok=tuple(data.get("expect_missing_ok") or ()),
        host_programs=tuple(data.get("host_programs") or ()),
        config=data["config"],
        drkit_may_miss=tuple(data.get("drkit_may_miss") or ()),
        smoke_user=data.get("smoke_user"),
        no_smoke=data.get("no_smoke"),
        includes=tuple(data.get("includes") or ()),
        twin_of=data.get("twin_of"),
        defect=data.get("defect"),
        server_said=data.get("server_said"),
        expect_fail=ExpectFail(**data["expect_fail"]) if data.get("expect_fail") else None,
    )
    if case.server not in SERVERS:
        raise ValueError(f"{directory.name}: server {case.server!r} is not one of {SERVERS}")
    return case


def load_cases() -> list[Case]:
    return [load_case(d) for d in sorted(CORPUS.iterdir()) if (d / "case.yaml").is_file()]


# --- materialising ---------------------------------------------------------------------------


def _text_files(top: Path):
    for path in sorted(top.rglob("*")):
        if path.is_file() and not path.is_symlink():
            try:
                path.read_text()
            except UnicodeDecodeError:
                continue
            yield path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ids(case: Case) -> tuple[dict[str, int], dict[str, int]]:
    """uid and gid by name: root, the case's users and their groups (a group's gid is its
    user's gid when named after one, else 2000+)."""
    uids = {"root": 0}
    gids = {"root": 0, "nogroup": 65534}
    for user in case.users:
        uids[user.name] = user.uid
        gids.setdefault(user.group or user.name, user.gid if user.gid is not None else user.uid)
    extra = 2000
    for user in case.users:
        for group in user.groups:
            if group not in gids:
                while extra in gids.values():
                    extra += 1
                gids[group] = extra
    for tls in case.generate.tls:
        if tls.key_group and tls.key_group not in gids:
            gids[tls.key_group] = 2100
    return uids, gids


def _chown(path: Path, owner: str, case: Case, group: str | None = None) -> None:
    if os.geteuid() != 0:
        return
    uids, gids = _ids(case)
    user = next((u for u in case.users if u.name == owner), None)
    uid = uids.get(owner, 0)
    gid = gids.get(group) if group else (gids.get(user.group or user.name) if user else 0)
    os.chown(path, uid, gid if gid is not None else 0, follow_symlinks=False)


def _mkparent(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)


def _ssh_keygen(path: Path, key_type: str, bits: int | None, pem: bool, comment: str) -> None:
    _mkparent(path)
    for old in (path, path.with_name(path.name + ".pub")):
        old.unlink(missing_ok=True)
    cmd = ["ssh-keygen", "-q", "-t", key_type, "-N", "", "-C", comment, "-f", str(path)]
    if bits:
        cmd += ["-b", str(bits)]
    if pem:
        cmd += ["-m", "PEM"]
    subprocess.run(cmd, check=True, capture_output=True)


def _write_accounts(case: Case, root: Path, passwords: dict[str, str]) -> None:
    _, gids = _ids(case)
    etc = root / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    passwd = ["root:x:0:0:root:/root:/bin/bash"]
    shadow = ["root:*:19000:0:99999:7:::"]
    members: dict[str, list[str]] = {}
    for user in case.users:
        if user.virtual:
            continue
        gid = gids[user.group or user.name]
        passwd.append(f"{user.name}:x:{user.uid}:{gid}::{user.home}:{user.shell}")
        secret = "*"
        if user.login == "password" and user.name in passwords:
            secret = subprocess.run(
                ["openssl", "passwd", "-6", passwords[user.name]],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
        shadow.append(f"{user.name}:{secret}:19000:0:99999:7:::")
        for group in user.groups:
            members.setdefault(group, []).append(user.name)
    passwd.append("nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin")
    shadow.append("nobody:*:19000:0:99999:7:::")
    group_lines = [
        f"{name}:x:{gid}:{','.join(members.get(name, []))}"
        for name, gid in sorted(gids.items(), key=lambda item: item[1])
    ]
    (etc / "passwd").write_text("\n".join(passwd) + "\n")
    (etc / "group").write_text("\n".join(group_lines) + "\n")
    (etc / "shadow").write_text("\n".join(shadow) + "\n")
    (etc / "shadow").chmod(0o640)


def _tls(case: Case, root: Path, tls: Tls) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID

    def new_key():
        if tls.key_type == "ec":
            return ec.generate_private_key(ec.SECP256R1())
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    now = dt.datetime.now(dt.UTC)
    key = new_key()
    stored_key = new_key() if tls.mismatched_key else key
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, tls.cn)])
    issuer_key, issuer = key, subject

    def signed(name, public_key) -> x509.CertificateBuilder:
        """Return a builder for name's certificate from issuer, valid tls.days from now."""
        return (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=tls.days))
        )

    if tls.ca:
        issuer_key = ec.generate_private_key(ec.SECP256R1())
        issuer = x509.Name(
            [x509.NameAttribute(NameOID.COMMON_NAME, f"drkit corpus CA {case.name}")]
        )
        ca_cert = (
            signed(issuer, issuer_key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(issuer_key, hashes.SHA256())
        )
        ca_path = root / tls.ca.lstrip("/")
        _mkparent(ca_path)
        ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        ca_path.chmod(0o644)
    cert = (
        signed(subject, key.public_key())
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(tls.cn)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(issuer_key, hashes.SHA256())
    )
    key_pem = stored_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL
        if tls.key_type == "rsa"
        else serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    cert_path = root / tls.cert.lstrip("/")
    _mkparent(cert_path)
    if tls.key is None:  # one file holding key and certificate (SFTPPlus private-certificate)
        cert_path.write_bytes(key_pem + cert_pem)
        cert_path.chmod(int(tls.key_mode, 8))
        _chown(cert_path, "root", case, tls.key_group)
        return
    cert_path.write_bytes(cert_pem)
    cert_path.chmod(0o644)
    key_path = root / tls.key.lstrip("/")
    _mkparent(key_path)
    key_path.write_bytes(key_pem)
    key_path.chmod(int(tls.key_mode, 8))
    _chown(key_path, "root", case, tls.key_group)


def materialise(
    case: Case,
    root: Path,
    *,
    ports: dict[str, int] | None = None,
    accounts: bool = True,
    client_dir: Path | None = None,
) -> Built:
    """Build CASE into the node root ROOT (created; files already there are overwritten).

    Copies `root/` with every `{{name}}` replaced by its port, writes etc/passwd, group and
    shadow for the case's users when ACCOUNTS (so drkit reads the node's accounts from the
    root), creates homes with their owner and mode (owners only when run as root), and
    generates host keys, TLS pairs and authorized keys. Client private keys go to CLIENT_DIR
    (default: ROOT's sibling `<root name>.clients`), never into the node root.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    wanted = dict(ports or {})
    for name in case.placeholders():
        wanted.setdefault(name, free_port())
    for src in sorted(case.files_root.rglob("*")):
        rel = src.relative_to(case.files_root)
        dst = root / rel
        if src.is_symlink():  # a node's link (a drop-in shipped from a checkout): kept a link
            _mkparent(dst)
            dst.unlink(missing_ok=True)
            dst.symlink_to(os.readlink(src))
            continue
        if src.is_dir():
            dst.mkdir(parents=True, exist_ok=True)
            continue
        _mkparent(dst)
        try:
            text = src.read_text()
        except UnicodeDecodeError:
            shutil.copyfile(src, dst)
        else:
            dst.write_text(PLACEHOLDER.sub(lambda m: str(wanted[m.group(1)]), text))
        dst.chmod(0o644)
        _chown(dst, "root", case)

    passwords = {u.name: u.password for u in case.users if u.password}
    if accounts:
        _write_accounts(case, root, passwords)

    for user in case.users:
        home = root / user.home.lstrip("/")
        home.mkdir(parents=True, exist_ok=True)
        home.chmod(int(user.home_mode, 8))
        owner = {"root": "root", "user": user.name}.get(user.home_owner, user.home_owner)
        _chown(home, owner, case)

    for d in case.generate.dirs:
        path = root / d.path.lstrip("/")
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(int(d.mode, 8))
        _chown(path, d.owner, case)

    for f in case.generate.files:
        path = root / f.path.lstrip("/")
        _mkparent(path)
        if f.sqlite:
            database = sqlite3.connect(path)
            database.executescript(f.sqlite)
            database.close()
            if f.truncate is not None:
                os.truncate(path, f.truncate)
        else:
            path.write_text(f.content)
        path.chmod(int(f.mode, 8))
        _chown(path, f.owner, case)

    for hk in case.generate.host_keys:
        path = root / hk.path.lstrip("/")
        _ssh_keygen(path, hk.type, hk.bits, hk.format == "pem", f"{case.name} host key")
        path.chmod(int(hk.mode, 8))
        _chown(path, "root", case)
        pub = path.with_name(path.name + ".pub")
        if hk.pub:
            pub.chmod(0o644)
        else:
            pub.unlink(missing_ok=True)

    for tls in case.generate.tls:
        _tls(case, root, tls)

    clients = Path(client_dir) if client_dir else root.parent / f"{root.name}.clients"
    client_keys: dict[str, Path] = {}
    for ak in case.generate.authorized_keys:
        private = client_keys.get(ak.user)
        if private is None:
            clients.mkdir(parents=True, exist_ok=True)
            private = clients / f"{ak.user}_{ak.type}"
            _ssh_keygen(private, ak.type, None, False, f"{ak.user}@{case.name}")
            client_keys[ak.user] = private
        public = private.with_name(private.name + ".pub")
        if ak.format == "rfc4716":
            line = subprocess.run(
                ["ssh-keygen", "-e", "-f", str(public)], check=True, capture_output=True, text=True
            ).stdout
        else:
            line = public.read_text()
        path = root / ak.path.lstrip("/")
        _mkparent(path)
        with path.open("a") as out:
            out.write(line)
        path.chmod(int(ak.mode, 8))
        _chown(path, "root" if ak.owner == "root" else ak.user, case)
        if ak.owner != "root" and path.parent.name == ".ssh":
            path.parent.chmod(0o700)
            _chown(path.parent, ak.user, case)

    return Built(case=case, root=root, ports=wanted, client_keys=client_keys, passwords=passwords)
