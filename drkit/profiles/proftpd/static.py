"""The static checks of a restored (or live) ProFTPD node: `proftpd -t` and a real start on
loopback ports, the modules it loads, the files it names, host keys, certificates and their
keys, mod_ldap servers and bind secrets, runtime directories and RFC 4716 user keys."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

from drkit import runner
from drkit.model import Check, Manifest, failed, passed, warned
from drkit.paths import on_root
from drkit.profiles.common import authfiles, configrefs, keychecks, profile_options, smokerun
from drkit.profiles.proftpd import standins
from drkit.profiles.proftpd.config import (
    Config,
    chains,
    ldap_pairs,
    module_name,
    proftpd_program,
    read_config,
    server_contexts,
    static_modules,
    tls_pairs,
)
from drkit.profiles.proftpd.named import references, runtime_dirs
from drkit.profiles.proftpd.policy import NAME, policy, settings
from drkit.profiles.proftpd.sandbox import Run, node_text, run_as, said, start, write_copy

RUN_DIRS = ("/run/", "/var/run/")


def _runtime_dir_checks(root: Path, config: Config) -> list[Check]:
    """The directory of each runtime file must be there when proftpd starts; one on /run is
    made at boot (the service's RuntimeDirectory or tmpfiles.d), not restored."""
    results = []
    for line, folder in runtime_dirs(config):
        name = f"proftpd: {folder} ({line.args[0].rsplit('/', 1)[-1]})"
        if on_root(root, folder).is_dir():
            results.append(passed(name, f"there for {line.where}"))
        elif folder.startswith(RUN_DIRS):
            detail = f"missing ({line.where}); on /run: the service makes it at boot, not a restore"
            results.append(warned(name, detail))
        else:
            results.append(failed(name, f"missing: proftpd cannot start ({line.where})"))
    return list({check.name: check for check in results}.values())


@profile_options.options_fail_as("proftpd: options")
def checks(root: Path, manifest: Manifest) -> list[Check]:
    """Return the static checks of a restored (or live) ProFTPD node against its manifest."""
    pol, root = policy(), Path(root)
    main = settings(profile_options.options_of(manifest, NAME)).config
    config = read_config(root, main)
    if main not in config.files:
        return [failed("proftpd: config", f"{main} is missing or unreadable")]
    refs = references(root, config)
    results = [_config_test(root, config), _start_check(root, config), *module_checks(config)]
    results += configrefs.named_files_check(root, refs, "proftpd")
    host_keys = [line.args[0] for line in config.of("sftphostkey") if line.args]
    results += keychecks.host_key_checks(root, host_keys, manifest)
    forbid = pol.modes.forbidden
    for cert, key in [(c, k) for c, k, _ in tls_pairs(config)] + ldap_pairs(config):
        results.append(keychecks.certificate_pair_check(root, cert, key))
        if key and configrefs.is_file(root, key):
            results.append(keychecks.private_key_mode_check(root, key, "tls key", forbid))
    tls_paths = [r.path for r in refs if r.category == "tls"]
    results += keychecks.certificate_checks(root, manifest, tls_paths)
    results += keychecks.issuer_checks(root, chains(config))
    results += _ldap_checks(root, config)
    results += standins.authority_checks(config)
    results += _runtime_dir_checks(root, config)
    for ref in refs:
        if ref.directive == "SFTPAuthorizedUserKeys" and configrefs.is_file(root, ref.path):
            text = on_root(root, ref.path).read_text(errors="replace")
            found = authfiles.rfc4716_keys(text)
            name = f"user keys: {ref.path}"
            if found:
                results.append(passed(name, f"{len(found)} RFC 4716 key(s)"))
            else:
                detail = "no RFC 4716 key: mod_sftp needs `ssh-keygen -e` format"
                results.append(failed(name, detail))
    return results


def module_checks(config: Config) -> list[Check]:
    """Each LoadModule'd module must exist where proftpd loads it: ModulePath on this host,
    or compiled into this host's proftpd (which then says "already loaded" and goes on)."""
    loads = config.of("loadmodule")
    if not loads:
        return []
    path_line = config.first("modulepath")
    module_dir = path_line.args[0] if path_line and path_line.args else policy().module_path
    built_in = static_modules(proftpd_program()) or frozenset()
    missing = [
        line.args[0]
        for line in loads
        if line.args
        and module_name(line.args[0]) not in built_in
        and not Path(module_dir, module_name(line.args[0]) + ".so").is_file()
    ]
    name = "proftpd: modules (host)"
    if missing:
        detail = f"not in {module_dir} on this host: {', '.join(missing)} (a package to install)"
        return [failed(name, detail)]
    return [passed(name, f"{len(loads)} LoadModule found in {module_dir} on this host")]


def _ldap_checks(root: Path, config: Config) -> list[Check]:
    """mod_ldap: every LDAPServer is an ldap(s):// URL or host[:port]; a file holding an
    LDAPBindDN password is not readable by others (the password is never shown)."""
    results = []
    for line in config.of("ldapserver"):
        servers = [a for a in line.args if not a.split(":", 1)[0].startswith("ssl-")]
        name = f"ldap: LDAPServer ({line.where})"
        bad = [s for s in servers for url in s.split() if not _ldap_url_ok(url)]
        if not servers or bad:
            results.append(failed(name, f"not an LDAP server: {' '.join(bad) or 'none named'}"))
        else:
            results.append(passed(name, " ".join(servers)))
    for line in config.of("ldapbinddn"):
        name = f"ldap: bind secret {line.source}"
        if len(line.args) < 2:
            results.append(passed(name, f"{line.where}: anonymous or SASL bind, no password"))
            continue
        try:
            info = os.stat(on_root(root, line.source))
        except OSError:
            continue
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o004 or info.st_uid != 0:
            detail = f"holds the bind password ({line.where}) but is {mode:04o} uid {info.st_uid}"
            results.append(warned(name, detail + ": keep it in an Included 0600 root file"))
        else:
            results.append(passed(name, f"{mode:04o} root, password not shown"))
    return results


def _ldap_url_ok(text: str) -> bool:
    if "://" in text:
        scheme, _, rest = text.partition("://")
        return scheme.lower() in ("ldap", "ldaps", "ldapi") and bool(
            rest.split("/")[0] or scheme == "ldapi"
        )
    host, _, port = text.partition(":")
    return bool(host) and (not port or port.isdigit())


def _config_test(root: Path, config: Config) -> Check:
    name = "config: proftpd -t"
    program = proftpd_program()
    if program is None:
        return failed(name, "proftpd is not installed on this host")
    work = Path(tempfile.mkdtemp(prefix="drkit-proftpd-t-"))
    try:
        run = Run(work, run_as=run_as(root, config))
        copy, names = write_copy(root, config, work, run)
        argv = [
            program if a == policy().validation.argv[0] else a.replace("{config}", str(copy))
            for a in policy().validation.argv
        ]
        done = runner.run(argv, timeout=60)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = node_text(done.stderr, names, root, run.origins)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    patterns = policy().validation.fail_patterns
    bad = [ln for ln in lines if any(p in ln.lower() for p in patterns)]
    if done.returncode != 0 or bad:
        useful = [said(ln) for ln in (bad or lines)]
        return failed(name, f"exit {done.returncode}: " + " | ".join(useful[:2]))
    return passed(name, "proftpd accepts the config")


def _start_check(root: Path, config: Config) -> Check:
    """Start the real proftpd on the restored config changed only in its listen addresses,
    ports, runtime files and logs (and, on a prefix root, a User/Group the host lacks): what
    `proftpd -t` accepts may still be refused at start (FTPS and SFTP on one server)."""
    name = "config: proftpd starts"
    program = proftpd_program()
    if program is None:
        return failed(name, "proftpd is not installed on this host")
    base = Path(tempfile.mkdtemp(prefix="drkit-proftpd-start-"))
    base.chmod(0o755)
    try:
        ports = {index: smokerun.free_port() for index in range(config.servers)}
        run = Run(base, ports=ports, run_as=run_as(root, config))
        server, words, waited = start(root, config, run, program)
        if server is None:
            return failed(name, f"proftpd {words}")
        server.stop()
        listening = ", ".join(f"127.0.0.1:{ports[i]}" for i in server_contexts(config))
        detail = f"listened on {listening} in {waited:.2f} s"
        if run.differences:
            detail += "; changed: " + "; ".join(run.differences)
        return passed(name, detail)
    finally:
        shutil.rmtree(base, ignore_errors=True)
