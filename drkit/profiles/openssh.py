"""OpenSSH sftp nodes: read sshd_config as sshd does, back up what it names, prove a restore.

The raw config is parsed here (not `sshd -T`): Include lines only show in the raw files, and a
config with an unknown keyword must still be backed up. What the profile backs up, which
directives name files and the mode rules come from policies/openssh.yaml.
"""

from __future__ import annotations

import fnmatch
import functools
import glob
import os
import posixpath
import re
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from drkit import runner
from drkit.engines import accounts
from drkit.model import Check, Entry, Inventory, SmokeResult, failed, passed, warned
from drkit.paths import on_root, to_node
from drkit.profiles import common
from drkit.profiles.common import Ref
from drkit.profiles.interface import Profile, Signs

NAME = "openssh"
POLICY_FILE = "openssh.yaml"
_TOKEN = re.compile(r"%(.)")
_KEYWORD = re.compile(r"^\s*([^\s=]+)\s*(?:=\s*|\s+|$)(.*)$")


@functools.cache
def policy() -> dict:
    """Return policies/openssh.yaml."""
    return yaml.safe_load((common.policy_dir() / POLICY_FILE).read_text())


# --- reading sshd_config ----------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    """One directive: lower-case keyword, arguments, where it is, and its Match criteria."""

    keyword: str
    args: tuple[str, ...]
    source: str
    number: int
    match: tuple[str, ...] | None

    @property
    def where(self) -> str:
        return f"{self.source} line {self.number}"


@dataclass
class Config:
    """Every directive of sshd_config and its Includes, in the order sshd reads them."""

    lines: list[Line] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    texts: dict[str, str] = field(default_factory=dict)
    include_hits: dict[tuple[str, int], list[str]] = field(default_factory=dict)
    include_patterns: list[str] = field(default_factory=list)
    missing_includes: list[tuple[Line, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def first(self, keyword: str) -> Line | None:
        """Return the global line that sets keyword (the first one wins), else None."""
        return next((ln for ln in self.lines if ln.keyword == keyword and ln.match is None), None)

    def value(self, keyword: str, default: str) -> str:
        line = self.first(keyword)
        return line.args[0].lower() if line and line.args else default

    def effective(self, keyword: str) -> list[Line]:
        """Return the global line(s) that take effect, then every Match-block line."""
        multi = keyword in policy()["multi_valued"]
        top = [ln for ln in self.lines if ln.keyword == keyword and ln.match is None]
        in_match = [ln for ln in self.lines if ln.keyword == keyword and ln.match is not None]
        return (top if multi else top[:1]) + in_match


def parse_line(raw: str) -> tuple[str, str, list[str]] | None:
    """Return (keyword as written, lower-case keyword, args) of a config line, else None."""
    stripped = raw.strip()
    if not stripped or stripped.startswith("#"):
        return None
    found = _KEYWORD.match(stripped)
    if not found:
        return None
    return found.group(1), found.group(1).lower(), common.split_args(found.group(2))


def _glob(root: Path, pattern: str) -> list[str]:
    """Return the node paths of the files that match a node glob, sorted as glob(3) does."""
    normal = posixpath.normpath("/" + pattern.lstrip("/"))
    prefix = glob.escape(str(root).rstrip("/"))
    hits = sorted(glob.glob(prefix + normal)) if glob.has_magic(normal) else [prefix + normal]
    return [to_node(root, Path(hit)) for hit in hits if Path(hit).is_file()]


def read_config(root: Path, main: str | None = None) -> Config:
    """Parse the node's sshd_config and everything it Includes (missing parts become warnings)."""
    config = Config()
    _read_file(Path(root), main or policy()["config"]["main"], None, config, ())
    return config


def _read_file(root: Path, node_path: str, match, config: Config, stack: tuple[str, ...]) -> None:
    settings = policy()["config"]
    try:
        text = on_root(root, node_path).read_text(errors="replace")
    except OSError as exc:
        config.warnings.append(f"{node_path}: cannot read ({exc.strerror or exc})")
        return
    if node_path not in config.files:
        config.files.append(node_path)
    config.texts[node_path] = text
    for number, raw in enumerate(text.splitlines(), 1):
        parsed = parse_line(raw)
        if parsed is None:
            continue
        _, keyword, args = parsed
        if keyword == "match":
            match = tuple(args) or ("all",)
        line = Line(keyword, tuple(args), node_path, number, match)
        config.lines.append(line)
        if keyword != "include":
            continue
        hits: list[str] = []
        for pattern in args:
            absolute = posixpath.normpath(posixpath.join(settings["include_base"], pattern))
            config.include_patterns.append(absolute)
            matched = _glob(root, absolute)
            if not matched and not glob.has_magic(absolute):
                config.missing_includes.append((line, absolute))
            hits += matched
        config.include_hits[(node_path, number)] = hits
        for hit in hits:
            if hit in stack or len(stack) >= settings["max_include_depth"]:
                config.warnings.append(f"Include {hit} ({line.where}) nests too deep; skipped")
                continue
            _read_file(root, hit, match, config, (*stack, node_path))


# --- accounts and per-user paths --------------------------------------------------------------


@dataclass
class Accounts:
    """The node's passwd and group records."""

    users: dict[str, list[str]]
    groups: list[list[str]]
    _who: dict[tuple[str, ...], set[str] | None] = field(default_factory=dict)

    @classmethod
    def of(cls, root: Path) -> Accounts:
        return cls(accounts.passwd_entries(root), accounts.group_entries(root))

    def who(self, criteria: tuple[str, ...]) -> set[str] | None:
        """Return the users a Match line is limited to (None: anyone), computed once."""
        if criteria not in self._who:
            self._who[criteria] = _criteria_users(criteria, self)
        return self._who[criteria]

    def members(self, group_pattern: str) -> list[str]:
        names = [g[0] for g in self.groups if _match_list(g[0], group_pattern)]
        return [m for name in names for m in accounts.group_members(self.users, self.groups, name)]


def _match_list(name: str, patterns: str) -> bool:
    """sshd's match_pattern_list: some positive pattern matches and no negated one does."""
    positive = negative = False
    for pattern in patterns.split(","):
        if pattern.startswith("!"):
            negative |= fnmatch.fnmatchcase(name, pattern[1:])
        elif pattern:
            positive |= fnmatch.fnmatchcase(name, pattern)
    return positive and not negative


def _criteria_users(criteria: tuple[str, ...], db: Accounts) -> set[str] | None:
    """Return the users a Match line is limited to, or None when it may apply to anyone."""
    words = [part for word in criteria for part in word.split("=", 1) if part]
    sets: list[set[str]] = []
    index = 0
    while index < len(words):
        key = words[index].lower()
        value = words[index + 1] if index + 1 < len(words) else ""
        index += 1 if key == "all" else 2
        if key == "user":
            literal = {p for p in value.split(",") if p and not p.startswith("!")}
            named = {p for p in literal if not glob.has_magic(p)}
            sets.append({n for n in db.users if _match_list(n, value)} | named)
        elif key == "group":
            sets.append(set(db.members(value)))
    return set.intersection(*sets) if sets else None


def _expand(pattern: str, name: str, entry: list[str]) -> str | None:
    """Expand %u %h %U %% and a leading ~/ for one user; relative results are under the home."""
    home = entry[5] or "/"
    values = {"%": "%", "u": name, "h": home, "U": entry[2]}
    text = home + pattern[1:] if pattern.startswith("~/") else pattern
    try:
        text = _TOKEN.sub(lambda token: values[token.group(1)], text)
    except KeyError:
        return None
    if not text.startswith("/"):
        text = home.rstrip("/") + "/" + text
    return posixpath.normpath(text)


def _users(config: Config, db: Accounts, root: Path, smoke_user: str | None):
    """Return (users whose files and entries belong to the node, warnings)."""
    names, warnings = [], []
    explicit: list[str] = []
    for line in config.effective("allowusers"):
        for pattern in line.args:
            user = pattern.split("@", 1)[0]
            if user.startswith("!"):
                continue
            matched = [n for n in db.users if fnmatch.fnmatchcase(n, user)]
            explicit += matched or ([user] if not glob.has_magic(user) else [])
    for line in config.effective("allowgroups"):
        for pattern in line.args:
            explicit += db.members(pattern)
    for line in config.lines:
        if line.keyword == "match":
            explicit += sorted(db.who(line.args or ("all",)) or ())
    if smoke_user:
        explicit.append(smoke_user)
    for user in dict.fromkeys(explicit):
        if user in db.users:
            names.append(user)
        else:
            warnings.append(f"user {user} is named by the config but not in the node's accounts")
    no_home = set(policy()["defaults"]["no_home"])
    for user, entry in db.users.items():
        if user in names or entry[5] in no_home or not on_root(root, entry[5]).is_dir():
            continue
        if any(
            common.is_file(root, path)
            for path, _ in _user_paths(config, db, user, "authorizedkeysfile")
        ):
            names.append(user)
    return names, warnings


def _user_paths(config: Config, db: Accounts, user: str, keyword: str) -> list[tuple[str, str]]:
    """Return [(node path, where)] of a per-user directive (global value, then Match blocks)."""
    lines = config.effective(keyword)
    found: list[tuple[str, str]] = []
    if keyword == "authorizedkeysfile" and not any(ln.match is None for ln in lines):
        found += [(p, "default") for p in policy()["defaults"]["authorized_keys_file"]]
    for line in lines:
        who = db.who(line.match) if line.match else None
        if who is None or user in who:
            found += [(arg, line.where) for arg in line.args if arg.lower() != "none"]
    entry = db.users[user]
    expanded = [(_expand(pattern, user, entry), where) for pattern, where in found]
    return list(dict.fromkeys((path, where) for path, where in expanded if path))


# --- what the config names ----------------------------------------------------------------------


def references(root: Path, config: Config, db: Accounts, users: list[str]) -> list[Ref]:
    """Return every node path the config names, with category and whether it must exist."""
    pol = policy()
    refs = [
        Ref(path, "config", "include", line.where, True) for line, path in config.missing_includes
    ]
    for keyword, rule in pol["directives"].items():
        kind, category, required = rule["kind"], rule["category"], rule["required"]
        if kind in ("user_path", "chroot"):
            for user in users:
                refs += [
                    Ref(path, category, keyword, where, required, kind == "chroot", user)
                    for path, where in _user_paths(config, db, user, keyword)
                    if path != "/"
                ]
            continue
        for line in config.effective(keyword):
            args = line.args
            if kind == "path" and args and args[0].lower() != "none":
                refs.append(Ref(_absolute(args[0]), category, keyword, line.where, required))
            elif kind == "command" and args and args[0].startswith("/"):
                refs.append(Ref(args[0], category, keyword, line.where, required))
            elif kind == "subsystem" and len(args) > 1 and args[1].startswith("/"):
                refs.append(Ref(args[1], category, keyword, line.where, required))
    if not config.effective("hostkey"):
        refs += [
            Ref(p, "host_keys", "hostkey", "default", False) for p in pol["defaults"]["host_keys"]
        ]
    if not config.effective("modulifile"):
        refs.append(Ref(pol["defaults"]["moduli"], "config", "modulifile", "default", False))
    if config.value("usepam", pol["defaults"]["use_pam"]) == "yes":
        usepam = config.first("usepam")
        refs.append(Ref(pol["config"]["pam_file"], "config", "usepam", usepam.where, True))
    return list(dict.fromkeys(refs))


def _absolute(path: str) -> str:
    return posixpath.normpath(posixpath.join("/", path))


def inventory(root: Path, smoke_user: str | None) -> Inventory:
    """Return what makes this OpenSSH node: its files, chroot trees, users and warnings."""
    pol, root = policy(), Path(root)
    config = read_config(root)
    found = Inventory(owned_globs=list(pol["owned_globs"]), warnings=list(config.warnings))
    base = pol["config"]["include_base"].rstrip("/") + "/"
    for pattern in config.include_patterns:
        if pattern.startswith(base) and pattern not in found.owned_globs:
            found.owned_globs.append(pattern)
    if pol["config"]["main"] not in config.files:
        return found
    seen: set[str] = set()

    def add(path: str, category: str) -> None:
        if path not in seen:
            seen.add(path)
            found.files.append(Entry(path, category))

    for path in config.files:
        add(path, "config")
    db = Accounts.of(root)
    users, warnings = _users(config, db, root, smoke_user)
    found.users, found.warnings = users, found.warnings + warnings
    refs = references(root, config, db, users)
    for ref in refs:
        host = on_root(root, ref.path)
        if ref.directory:
            if host.is_dir():
                if ref.path not in {entry.path for entry in found.dirs}:
                    found.dirs.append(Entry(ref.path, ref.category))
                    for path in common.walk_files(root, ref.path):
                        add(path, ref.category)
            else:
                found.warnings.append(f"{_label(ref)} {ref.path} ({ref.where}) is missing")
        elif common.is_file(root, ref.path):
            if ref.path.startswith(tuple(pol["packaged_programs"])):
                continue  # the distribution's own program: the package restores it, not drkit
            add(ref.path, ref.category)
            if ref.directive == "hostkey" and common.is_file(root, ref.path + ".pub"):
                add(ref.path + ".pub", ref.category)
        elif ref.required:
            found.warnings.append(f"{_label(ref)} {ref.path} ({ref.where}) is missing")
    if not any(r.directive == "hostkey" and common.is_file(root, r.path) for r in refs):
        found.warnings.append("no host key found: clients will see a new server")
    for user in users:
        mine = [r for r in refs if r.user == user and r.directive == "authorizedkeysfile"]
        if not any(common.is_file(root, r.path) for r in mine):
            found.warnings.append(f"user {user} has no authorized keys file")
    found.warnings = list(dict.fromkeys(found.warnings))
    return found


def _label(ref: Ref) -> str:
    """Return the directive's name as sshd_config spells it."""
    if ref.directive == "usepam":
        return "UsePAM"
    return policy()["directives"].get(ref.directive, {}).get("name", ref.directive)


# --- a runnable copy of the config ---------------------------------------------------------


def _quote(arg: str) -> str:
    if arg and not re.search(r"[\s\"'#\\]", arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _onto(root: Path, path: str) -> str:
    """Map a path onto root, keeping %-tokens; a leading %h or ~ is a home, also mapped."""
    if str(root) == "/":
        return path
    if path.startswith(("%h", "~")):
        return str(root).rstrip("/") + (path if path.startswith("%h") else "%h" + path[1:])
    return str(on_root(root, path)) if path.startswith("/") else path


def _map_line(root: Path, keyword: str, args: list[str], smoke: dict | None) -> list[str] | None:
    """Return the arguments with node paths mapped onto root, or None when nothing changes."""
    rule = policy()["directives"].get(keyword)
    if rule is None or not args:
        return None
    kind, new = rule["kind"], list(args)
    if kind == "path" and args[0].lower() != "none":
        new[0] = str(on_root(root, args[0]))
    elif kind == "user_path":
        new = [a if a.lower() == "none" else _onto(root, a) for a in args]
    elif kind == "chroot" and args[0].lower() != "none":
        expanded = smoke and _expand(args[0], smoke["user"], smoke["entry"])
        new[0] = str(on_root(root, expanded)) if expanded else _onto(root, args[0])
    elif kind in ("command", "subsystem"):
        position = 0 if kind == "command" else 1
        program = args[position] if len(args) > position else ""
        if program.startswith("/") and on_root(root, program).exists():
            new[position] = str(on_root(root, program))
    return new if new != args else None


def write_copy(root: Path, config: Config, out_dir: Path, smoke: dict | None = None):
    """Write runnable copies of the config files under out_dir, node paths mapped onto root.

    smoke adds {"prepend": [lines], "authorized_keys": path, "user", "entry"}: listed keywords
    are dropped, AuthorizedKeysFile points at the sandbox file, prepended lines win.
    Return (main copy, {copy path: (node path, lines prepended)}).
    """
    root, pol = Path(root), policy()
    main = pol["config"]["main"]
    copies = {node: out_dir / node.lstrip("/") for node in config.files}
    drop = set(pol["smoke"]["drop"]) if smoke else set()
    names: dict[str, tuple[str, int]] = {}
    for node, copy in copies.items():
        out = []
        for number, raw in enumerate(config.texts[node].splitlines(), 1):
            parsed = parse_line(raw)
            if parsed is None:
                out.append(raw)
                continue
            token, keyword, args = parsed
            if keyword in drop:
                out.append(f"# drkit smoke: {raw.strip()}")
            elif smoke and keyword == "authorizedkeysfile":
                out.append(f"{token} {_quote(smoke['authorized_keys'])}")
            elif keyword == "include":
                hits = [str(copies[hit]) for hit in config.include_hits.get((node, number), [])]
                out.append(f"{token} {' '.join(map(_quote, hits))}" if hits else f"# {raw.strip()}")
            elif (mapped := _map_line(root, keyword, args, smoke)) is not None:
                out.append(f"{token} {' '.join(map(_quote, mapped))}")
            else:
                out.append(raw)
        prepend = smoke["prepend"] if smoke and node == main else []
        copy.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        copy.write_text("\n".join([*prepend, *out]) + "\n")
        copy.chmod(0o600)
        names[str(copy)] = (node, len(prepend))
    return copies[main], names


def _node_text(text: str, names: dict[str, tuple[str, int]], root: Path) -> str:
    """Rewrite sshd's messages about copies into node paths and line numbers."""
    for copy, (node, offset) in names.items():
        text = re.sub(
            re.escape(copy) + r"(\W+line )(\d+)",
            lambda m, node=node, offset=offset: f"{node}{m.group(1)}{int(m.group(2)) - offset}",
            text,
        )
        text = text.replace(copy, node)
    return text.replace(str(root).rstrip("/") + "/", "/") if str(root) != "/" else text


# --- static checks ------------------------------------------------------------------------------


def checks(root: Path, manifest: dict) -> list[Check]:
    """Return the static checks of a restored (or live) node against its manifest."""
    pol, root = policy(), Path(root)
    config = read_config(root)
    main = pol["config"]["main"]
    if main not in config.files:
        return [failed("config: sshd_config", f"{main} is missing or unreadable")]
    db = Accounts.of(root)
    users, _ = _users(config, db, root, None)
    users += [a["name"] for a in manifest.get("accounts", []) if a["name"] in db.users]
    refs = references(root, config, db, list(dict.fromkeys(users)))
    return [
        _config_test(root, config),
        *common.named_files_check(root, refs, directive_name=_label),
        *_host_key_checks(root, refs, manifest),
        *_user_key_checks(root, refs, config, db),
        *_chroot_checks(root, refs),
        *_certificate_checks(root, manifest),
    ]


def _config_test(root: Path, config: Config) -> Check:
    pol = policy()
    name = "config: sshd -t"
    work = Path(tempfile.mkdtemp(prefix="drkit-sshd-t-"))
    try:
        copy, names = write_copy(root, config, work)
        runner.run(["install", "-d", "-m755", pol["smoke"]["privsep_dir"]])
        argv = [arg.replace("{config}", str(copy)) for arg in pol["validate"]["argv"]]
        done = runner.run(argv, timeout=60)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines = [ln.strip("@ \t") for ln in _node_text(done.stderr, names, root).splitlines()]
    lines = [ln for ln in lines if ln]
    bad = [ln for ln in lines if any(p in ln for p in pol["validate"]["fail_patterns"])]
    if done.returncode != 0:
        cause = next((ln for ln in lines if " line " in ln), lines[0] if lines else "no output")
        return failed(name, f"exit {done.returncode}: {cause}")
    if bad:
        useful = [ln for ln in bad if "UNPROTECTED" not in ln] or bad
        return failed(name, "; ".join(dict.fromkeys(useful)))
    return passed(name, "sshd accepts the config and loads every host key")


def _host_key_checks(root: Path, refs: list[Ref], manifest: dict) -> list[Check]:
    rule = policy()["modes"]["host_private_key"]
    forbid = int(rule["forbid"], 8)
    results = []
    configured = [r.path for r in refs if r.directive == "hostkey" and common.is_file(root, r.path)]
    for path in configured:
        info = os.stat(on_root(root, path))
        mode, problems = stat.S_IMODE(info.st_mode), []
        if mode & forbid:
            problems.append(f"mode {mode:04o}, must be 0600 or 0400")
        if info.st_uid not in _uids(rule["owner"], None):
            problems.append(f"owned by uid {info.st_uid}, not root")
        name = f"host key mode: {path}"
        results.append(
            failed(name, "; ".join(problems)) if problems else passed(name, f"{mode:04o} root")
        )
        if common.is_file(root, path + ".pub"):
            private = common.describe_file(root, path)
            public = common.describe_file(root, path + ".pub")
            name = f"host key pair: {path}"
            if private is None or public is None:
                which = "private key" if private is None else ".pub"
                results.append(failed(name, f"the {which} does not parse"))
            elif private.fingerprint != public.fingerprint:
                detail = (
                    f".pub ({public.fingerprint}) does not match the key ({private.fingerprint})"
                )
                results.append(failed(name, detail))
            else:
                results.append(passed(name, f"{private.type} {private.fingerprint}"))
    recorded = manifest.get("host_keys", [])
    for entry in recorded:
        name, info = f"host key: {entry['path']}", common.describe_file(root, entry["path"])
        if not common.is_file(root, entry["path"]):
            results.append(failed(name, "missing"))
        elif info is None:
            results.append(failed(name, "not a readable key"))
        elif info.fingerprint != entry["fingerprint"]:
            detail = f"is {info.fingerprint}, the backup had {entry['fingerprint']}"
            results.append(failed(name, detail))
        else:
            results.append(passed(name, f"{info.type} {info.fingerprint} as in the backup"))
    known = {entry["path"] for entry in recorded}
    if "host_keys" in manifest:
        results += [
            warned(f"host key: {p}", "configured but not in the backup")
            for p in configured
            if p not in known
        ]
    return results


def _uids(owners: list[str], user_uid: int | None) -> set[int]:
    return {0 if owner == "root" else user_uid for owner in owners} - {None}


def _path_problems(
    root: Path, node_path: str, stop: str, owners: set[int], forbid: int, must_be_dir: bool = False
) -> list[str]:
    """Check node_path and its parents up to stop (or '/'): owner and forbidden mode bits."""
    problems, current = [], node_path
    while True:
        try:
            info = os.stat(on_root(root, current))
        except OSError:
            return [f"{current} is missing"]
        mode = stat.S_IMODE(info.st_mode)
        if info.st_uid not in owners:
            problems.append(f"{current} is owned by uid {info.st_uid}")
        if mode & forbid:
            problems.append(f"{current} is group/world-writable ({mode:04o})")
        if must_be_dir and not stat.S_ISDIR(info.st_mode):
            problems.append(f"{current} is not a directory")
        if current in (stop, "/"):
            return problems
        current = posixpath.dirname(current)


def _user_key_checks(root: Path, refs: list[Ref], config: Config, db: Accounts) -> list[Check]:
    pol = policy()
    strict = config.value("strictmodes", pol["defaults"]["strict_modes"]) != "no"
    file_rule, path_rule = (
        pol["modes"]["authorized_keys_file"],
        pol["modes"]["authorized_keys_path"],
    )
    results, seen = [], set()
    for ref in refs:
        if ref.directive != "authorizedkeysfile" or ref.path in seen:
            continue
        seen.add(ref.path)
        if not common.is_file(root, ref.path):
            continue
        entry = db.users[ref.user]
        uid, gid, home = int(entry[2]), int(entry[3]), entry[5]
        name = f"user keys: {ref.path}"
        try:
            info = os.stat(on_root(root, ref.path))
        except OSError as exc:
            results.append(failed(name, f"unreadable ({exc.strerror})"))
            continue
        mode, problems = stat.S_IMODE(info.st_mode), []
        readable = (
            (info.st_uid == uid and mode & 0o400)
            or mode & 0o004
            or (mode & 0o040 and (info.st_gid == gid or _in_group(db, ref.user, info.st_gid)))
        )
        if not readable:
            problems.append(f"{ref.path} ({mode:04o}) is not readable by {ref.user}")
        if strict:
            owners = _uids(file_rule["owner"], uid)
            problems += _path_problems(
                root, ref.path, ref.path, owners, int(file_rule["forbid"], 8)
            )
            parent = posixpath.dirname(ref.path)
            stop = home if (ref.path + "/").startswith(home.rstrip("/") + "/") else "/"
            owners = _uids(path_rule["owner"], uid)
            problems += _path_problems(root, parent, stop, owners, int(path_rule["forbid"], 8))
        detail = f"{mode:04o}, path safe for {ref.user}" if strict else "StrictModes no"
        results.append(failed(name, "; ".join(problems)) if problems else passed(name, detail))
    return results


def _in_group(db: Accounts, user: str, gid: int) -> bool:
    return any(user in g[3].split(",") for g in db.groups if g[2] == str(gid))


def _chroot_checks(root: Path, refs: list[Ref]) -> list[Check]:
    rule = policy()["modes"]["chroot_path"]
    results = []
    for path in dict.fromkeys(r.path for r in refs if r.directory):
        if not on_root(root, path).is_dir():
            continue
        problems = _path_problems(
            root, path, "/", _uids(rule["owner"], None), int(rule["forbid"], 8), must_be_dir=True
        )
        name = f"chroot: {path}"
        detail = "every component root-owned, not group/world-writable"
        results.append(failed(name, "; ".join(problems)) if problems else passed(name, detail))
    return results


def _certificate_checks(root: Path, manifest: dict) -> list[Check]:
    warn_days = policy()["certificates"]["warn_days"]
    return [
        common.certificate_check(root, entry, warn_days, entry.get("key_path"), ok_note=None)
        for entry in manifest.get("certificates", [])
    ]


# --- smoke: the real sshd on a sandbox port -----------------------------------------------------


def _log_hint(server: runner.Service) -> str:
    pattern = r"error|fatal|refused|not allowed|bad ownership|denied|invalid"
    return " | ".join(common.interesting_lines(server.log_tail().splitlines(), pattern))


def smoke(root: Path, manifest: dict, user: str, work_dir: Path) -> SmokeResult:
    """Start the real sshd on a copy of the restored config (127.0.0.1, free port) and prove it.

    Records: served host key per type against the manifest, an SFTP login of `user` with a
    throw-away key, and a file round trip. sshd is stopped, a user created for the run is
    removed and the work files are deleted whatever happens.
    """
    pol, root = policy(), Path(root)
    settings = pol["smoke"]
    result = SmokeResult(profile=NAME)
    work_dir = Path(work_dir).resolve()
    work_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    unsafe = _path_problems(Path("/"), str(work_dir), "/", {0}, 0o022)
    if unsafe:
        result.add(failed("smoke: sshd started", f"work dir unusable for sshd: {unsafe[0]}"))
        return result
    created: list[tuple[str, str]] = []
    server: runner.Service | None = None
    with common.smoke_workspace(work_dir, "smoke-") as work:
        try:
            config = read_config(root)
            if pol["config"]["main"] not in config.files:
                result.add(failed("smoke: sshd started", f"{pol['config']['main']} is missing"))
                return result
            account = common.ensure_user(root, manifest, user, created)
            result.add(account)
            if account.status == "fail":
                return result
            made = common.make_client_key(work)
            if made is None:
                result.add(failed("smoke: sshd started", "ssh-keygen failed"))
                return result
            key, public_line = made
            sandbox = work / "authorized_keys"
            sandbox.mkdir(mode=0o755)
            (sandbox / user).write_text(public_line + "\n")
            (sandbox / user).chmod(0o644)
            entry = common.node_fields(root, manifest, user)
            port = common.free_port()
            prepend = [
                "# drkit smoke run: these lines win over the node's own",
                f"Port {port}",
                f"ListenAddress 127.0.0.1:{port}",
                f"PidFile {work / 'sshd.pid'}",
                f"AuthorizedKeysFile {sandbox}/%u",
                "LogLevel VERBOSE",
                "PubkeyAuthentication yes",
            ]
            plan = {"prepend": prepend, "authorized_keys": f"{sandbox}/%u", "user": user}
            copy, _ = write_copy(root, config, work / "config", {**plan, "entry": entry})
            runner.run(["install", "-d", "-m755", settings["privsep_dir"]])
            server = runner.start_service(
                [settings["sshd"], "-D", "-e", "-f", str(copy)], work / "sshd.log"
            )
            started = time.monotonic()
            if not common.wait_port(port, server, settings["start_timeout_seconds"]):
                result.add(failed("smoke: sshd started", _log_hint(server) or "no output"))
                return result
            waited = time.monotonic() - started
            result.add(passed("smoke: sshd started", f"127.0.0.1:{port} in {waited:.2f} s"))
            host_keys = manifest.get("host_keys", [])
            not_served = "not served: sshd did not load that host key"
            common.keyscan(result, host_keys, port, not_served=not_served)

            def hint() -> str:
                found = _log_hint(server)
                return f"sshd: {found}" if found else ""

            common.sftp_session(
                result, host_keys, user, port, key, work, hint,
                trip_name="smoke: file round trip", upload_dirs=settings["upload_dirs"],
                show_dir=True, only_key=False,
            )  # fmt: skip
            return result
        finally:
            if server is not None:
                server.stop()
            common.remove_created(created)


class OpenSSH(Profile):
    """OpenSSH's sshd serving SFTP (internal-sftp or sftp-server)."""

    name = NAME
    signs = Signs(
        configs=("/etc/ssh/sshd_config",),
        binaries=("/usr/sbin/sshd",),
        units=("ssh.service", "sshd.service"),
        config_flag="-f",
    )
    node_local = ("sshd_config:ListenAddress",)

    def inventory(self, root: Path, smoke_user: str | None, options: dict) -> Inventory:
        return inventory(root, smoke_user)

    def checks(self, root: Path, manifest: dict) -> list[Check]:
        return checks(root, manifest)

    def smoke(self, root: Path, manifest: dict, user: str, work_dir: Path) -> SmokeResult:
        return smoke(root, manifest, user, work_dir)

    def sandbox_config(self, root: Path, out_dir: Path) -> Path | None:
        return write_copy(root, read_config(root), out_dir)[0]


PROFILE = OpenSSH()
