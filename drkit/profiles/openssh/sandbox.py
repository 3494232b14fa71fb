"""A runnable copy of the node's config, and sshd's own view of it (`sshd -T`)."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path

from drkit import runner
from drkit.paths import on_root
from drkit.profiles.common.configrefs import is_file
from drkit.profiles.common.configtext import rewritten_lines, write_config_copy
from drkit.profiles.openssh.config import Config, node_realpath, parse_line, read_config
from drkit.profiles.openssh.passwd import Accounts
from drkit.profiles.openssh.policy import policy
from drkit.profiles.openssh.users import expand

# sshd's own view of a config (`sshd -T`): {keyword: [value per line]}
SshdView = dict[str, list[str]]
# {copy path: (the node path it copies, lines put before the node's own)}
CopyNames = dict[str, tuple[str, int]]


@dataclass
class SmokePlan:
    """What a smoke run changes in its copy: lines put first (its port, listen address, pid
    file), the key file it adds beside the node's, and whose connection it is; write_copy
    fills in the Subsystem programs it replaced and the lines it commented out."""

    prepend: list[str]
    authorized_keys: str
    user: str
    db: Accounts
    replaced: list[tuple[str, str]] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)


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


def _map_line(
    root: Path, keyword: str, args: list[str], smoke: SmokePlan | None
) -> list[str] | None:
    """Return the arguments with node paths mapped onto root, or None when nothing changes."""
    rule = policy().directives.get(keyword)
    if rule is None or not args:
        return None
    kind, new = rule.kind, list(args)
    if kind in ("path", "paths") and args[0].lower() != "none":
        count = len(args) if kind == "paths" else 1
        new[:count] = [str(on_root(root, arg)) for arg in args[:count]]
    elif kind == "user_path":
        new = [a if a.lower() == "none" else _onto(root, a) for a in args]
    elif kind == "chroot" and args[0].lower() != "none":
        expanded = smoke and expand("chroot", args[0], smoke.user, smoke.db)
        new[0] = str(on_root(root, expanded)) if expanded else _onto(root, args[0])
    elif kind in ("command", "subsystem"):
        position = 0 if kind == "command" else 1
        program = args[position] if len(args) > position else ""
        if program.startswith("/") and on_root(root, program).exists():
            new[position] = str(on_root(root, program))
        elif (
            smoke and kind == "subsystem" and program.startswith("/") and not Path(program).exists()
        ):
            new[position] = policy().smoke.missing_subsystem
            smoke.replaced.append((args[0], program))
    return new if new != args else None


def write_copy(
    root: Path, config: Config, out_dir: Path, smoke: SmokePlan | None = None
) -> tuple[Path, CopyNames]:
    """Write runnable copies of the config files under out_dir, node paths mapped onto root.

    With a smoke plan, the listen and runtime keywords (policy smoke.drop) are dropped, the
    plan's key file is added beside every AuthorizedKeysFile's own, and a `PubkeyAuthentication
    no` or an AuthenticationMethods no key alone satisfies is commented out, each such change
    listed in the plan's differences (the smoke warns of them); the plan's lines come first, so
    they win.
    Return (main copy, {copy path: (node path, lines prepended)}).
    """
    root, pol = Path(root), policy()
    main = config.main
    copies = {node: out_dir / node.lstrip("/") for node in config.files}
    drop = set(pol.smoke.drop) if smoke else set[str]()
    names: CopyNames = {}
    # Without HostKey lines sshd loads its compiled-in defaults, which a copy would take from
    # this host: name the root's own.
    default_keys = [
        f"HostKey {_quote(str(on_root(root, path)))}"
        for path in ([] if config.effective("hostkey") else pol.defaults.host_keys)
        if is_file(root, path)
    ]
    if default_keys:
        default_keys.insert(0, "# drkit: sshd's default host keys, from the node")
    prepend = list(smoke.prepend) if smoke else []
    if smoke and config.first("authorizedkeysfile") is None:
        defaults = pol.defaults.authorized_keys_file
        prepend.append(
            f"AuthorizedKeysFile {' '.join(map(_quote, [smoke.authorized_keys, *defaults]))}"
        )

    def rewrite(
        node: str, number: int, raw: str, token: str, keyword: str, args: list[str]
    ) -> list[str]:
        if keyword in drop:
            return [f"# drkit smoke: {raw.strip()}"]
        if smoke and (why := _keeps_the_key_out(keyword, args)):
            smoke.differences.append(
                f"{raw.strip()} ({node} line {number}) commented out for the run: {why}"
            )
            return [f"# drkit smoke: {raw.strip()}"]
        if smoke and keyword == "authorizedkeysfile":
            own = [
                a for a in (_map_line(root, keyword, args, smoke) or args) if a.lower() != "none"
            ]
            return [f"{token} {' '.join(map(_quote, [smoke.authorized_keys, *own]))}"]
        if keyword == "include":
            hits = config.include_hits.get((node, number), [])
            for hit in (h for h in hits if h not in copies):  # a link the node cannot open:
                dangling = out_dir / hit.lstrip("/")  # the copy holds one too, sshd says so
                dangling.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                if not dangling.is_symlink():
                    dangling.symlink_to(on_root(root, node_realpath(root, hit)))
                names[str(dangling)] = (hit, 0)
            hits = [str(copies.get(hit, out_dir / hit.lstrip("/"))) for hit in hits]
            return [f"{token} {' '.join(map(_quote, hits))}" if hits else f"# {raw.strip()}"]
        if (mapped := _map_line(root, keyword, args, smoke)) is not None:
            return [f"{token} {' '.join(map(_quote, mapped))}"]
        return [raw]

    for node, copy in copies.items():
        out = rewritten_lines(config.texts[node], parse_line, functools.partial(rewrite, node))
        first = [*prepend, *default_keys] if node == main else []
        write_config_copy(copy, [*first, *out])
        names[str(copy)] = (node, len(first))
    return copies[main], names


def _keeps_the_key_out(keyword: str, args: list[str]) -> str | None:
    """Return why a line would refuse the smoke's one-run key (PubkeyAuthentication no, an
    AuthenticationMethods list in which no chain is the key alone), else None."""
    if keyword == "pubkeyauthentication" and args and args[0].lower() == "no":
        return "public key login is off on the node; the run logs in with its own key"
    chains = [a.lower() for a in args]
    if keyword == "authenticationmethods" and chains and not {"any", "publickey"} & set(chains):
        return "no method chain is a key alone; the run logs in with its own key only"
    return None


def node_text(text: str, names: CopyNames, root: Path) -> str:
    """Rewrite sshd's messages about copies into node paths and line numbers."""
    for copy, (node, offset) in names.items():

        def renumbered(hit: re.Match[str], node: str = node, offset: int = offset) -> str:
            return f"{node}{hit.group(1)}{int(hit.group(2)) - offset}"

        text = re.sub(re.escape(copy) + r"(\W+line )(\d+)", renumbered, text)
        text = text.replace(copy, node)
    return text.replace(str(root).rstrip("/") + "/", "/") if str(root) != "/" else text


def sshd_view(
    sshd: str, copy: Path, user: str | None = None, port: int = 22
) -> tuple[SshdView | None, dict[str, str]]:
    """Ask sshd itself (`sshd -d -T -C ...`) what it makes of a config for a connection of
    user from 127.0.0.1 to port (its own Match evaluation, `Match LocalPort` and `Address`
    included): ({keyword: [values]} it would apply, or None when it cannot say, and the host
    keys it loaded, {fingerprint: type}, from its debug lines "private host key #N: TYPE FP")."""
    argv = [sshd, "-d", "-T", "-f", str(copy)]
    if user:
        spec = f"user={user},host=localhost,addr=127.0.0.1,laddr=127.0.0.1,lport={port},rdomain="
        argv += ["-C", spec]
    done = runner.run(argv, timeout=30)
    loaded = {
        hit.group(2): hit.group(1)
        for hit in re.finditer(r"private host key #\d+: (\S+) (SHA256:\S+)", done.stderr)
    }
    if done.returncode != 0:
        return None, loaded
    view: SshdView = {}
    for line in done.stdout.splitlines():
        keyword, _, value = line.partition(" ")
        view.setdefault(keyword, []).append(value)
    return view, loaded


def offered(view: SshdView | None) -> set[str] | None:
    """Return the host key types sshd offers, from its view (its effective HostKeyAlgorithms,
    defaults included); None when it cannot say."""
    algorithms = (view or {}).get("hostkeyalgorithms")
    if not algorithms:
        return None
    return {_KEY_TYPE_OF.get(a, a) for a in algorithms[0].split(",") if "-cert-" not in a}


# The key type a host key signature algorithm offers (RSA keys sign with three).
_KEY_TYPE_OF = {"rsa-sha2-256": "ssh-rsa", "rsa-sha2-512": "ssh-rsa"}


def sandbox_config(root: Path, out_dir: Path) -> Path | None:
    """Write the node's sshd_config and its Includes with node paths mapped onto root into
    out_dir; return the main copy."""
    return write_copy(root, read_config(root), out_dir)[0]
