"""ProFTPD's own semantics, directive by directive, on small node roots: Include of a directory
and IncludeOptions, <IfModule>, %u and ~ for system users, /etc/ftpusers, DefaultRoot group
expressions, <Anonymous> roots, and profile_options.proftpd.config."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from drkit import errors
from drkit.profiles import proftpd
from tests.manifests import partial


def _write(root: Path, node_path: str, text: str, mode: int = 0o644) -> Path:
    path = root / node_path.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def _accounts(root: Path) -> None:
    _write(
        root,
        "/etc/passwd",
        "root:x:0:0:root:/root:/bin/bash\n"
        "ftp:x:108:65534::/srv/ftp:/usr/sbin/nologin\n"
        "dave:x:2021:2021::/home/dave:/bin/bash\n"
        "mark:x:2022:2022::/home/mark:/bin/bash\n"
        "banned:x:2023:2023::/home/banned:/bin/bash\n"
        "nologin:x:2024:2024::/home/nologin:/usr/sbin/nologin\n",
    )
    _write(root, "/etc/group", "dave:x:2021:\nmark:x:2022:\nstaff:x:50:mark\nnogroup:x:65534:\n")
    _write(root, "/etc/shells", "/bin/sh\n/bin/bash\n")
    _write(root, "/etc/ftpusers", "root\nbanned\n")
    for home in ("/home/dave", "/home/mark", "/home/banned", "/home/nologin", "/srv/ftp"):
        (root / home.lstrip("/")).mkdir(parents=True)


def _paths(found) -> set[str]:
    return {entry.path for entry in found.files} | {entry.path for entry in found.dirs}


def test_include_directory_reads_temp_files_unless_ignore_temp_files(tmp_path: Path):
    _write(tmp_path, "/etc/proftpd/proftpd.conf", "Include /etc/proftpd/conf.d/\n")
    _write(tmp_path, "/etc/proftpd/conf.d/local.conf~", "TransferLog /srv/logs/xfer.log\n")
    _write(tmp_path, "/etc/proftpd/conf.d/.hidden", "ServerName x\n")
    config = proftpd.read_config(tmp_path)
    assert "/etc/proftpd/conf.d/local.conf~" in config.files  # proftpd reads it
    assert "/etc/proftpd/conf.d/.hidden" in config.files  # only . and .. are skipped
    assert config.of("transferlog")

    _write(
        tmp_path,
        "/etc/proftpd/proftpd.conf",
        "IncludeOptions IgnoreTempFiles\nInclude /etc/proftpd/conf.d/\n",
    )
    config = proftpd.read_config(tmp_path)
    assert "/etc/proftpd/conf.d/local.conf~" not in config.files
    assert not config.of("transferlog")
    # Not read, but backed up all the same: a forced restore must not remove it.
    found = proftpd.inventory(tmp_path, None, proftpd.settings({}))
    assert "/etc/proftpd/conf.d/local.conf~" in _paths(found)
    assert "/etc/proftpd/conf.d" in _paths(found)


def test_ifmodule_of_a_module_not_loaded_names_nothing_required(tmp_path: Path):
    _write(
        tmp_path,
        "/etc/proftpd/proftpd.conf",
        "<IfModule mod_dnsbl.c>\n  AuthUserFile /etc/proftpd/dnsbl.passwd\n</IfModule>\n"
        "<IfModule !mod_dnsbl.c>\n  AuthGroupFile /etc/proftpd/ftpd.group\n</IfModule>\n",
    )
    config = proftpd.read_config(tmp_path)
    refs = {ref.path: ref for ref in proftpd.references(tmp_path, config)}
    assert not refs["/etc/proftpd/dnsbl.passwd"].required
    assert refs["/etc/proftpd/ftpd.group"].required
    _write(tmp_path, "/etc/proftpd/modules.conf", "LoadModule mod_dnsbl.c\n")
    text = (tmp_path / "etc/proftpd/proftpd.conf").read_text()
    _write(tmp_path, "/etc/proftpd/proftpd.conf", "Include /etc/proftpd/modules.conf\n" + text)
    refs = {r.path: r for r in proftpd.references(tmp_path, proftpd.read_config(tmp_path))}
    assert refs["/etc/proftpd/dnsbl.passwd"].required
    assert not refs["/etc/proftpd/ftpd.group"].required


def test_percent_u_and_tilde_expand_for_system_users(tmp_path: Path):
    _accounts(tmp_path)
    _write(
        tmp_path,
        "/etc/proftpd/proftpd.conf",
        "DefaultRoot ~ !staff\n"
        "SFTPAuthorizedUserKeys file:/etc/proftpd/authorized_keys/%u file:~/.sftp/keys\n"
        "<Anonymous ~ftp>\n  User ftp\n</Anonymous>\n",
    )
    _write(tmp_path, "/etc/proftpd/authorized_keys/dave", "key\n")
    _write(tmp_path, "/home/dave/.sftp/keys", "key\n")
    found = proftpd.inventory(tmp_path, None, proftpd.settings({}))
    paths = _paths(found)
    assert {"/etc/proftpd/authorized_keys/dave", "/home/dave/.sftp/keys"} <= paths
    assert {"/home/dave", "/home/mark", "/srv/ftp"} <= paths
    # /etc/ftpusers refuses banned; nologin has no valid shell; ftp is a system uid.
    assert "/home/banned" not in paths and "/home/nologin" not in paths
    assert set(found.users) == {"ftp", "dave", "mark"}
    refs = proftpd.references(tmp_path, proftpd.read_config(tmp_path))
    roots = {r.where.rsplit("user ", 1)[-1]: r for r in refs if r.directive == "DefaultRoot"}
    assert roots["dave"].required and not roots["mark"].required  # mark is in staff


def test_config_option_is_honoured_and_unknown_keys_are_config_errors(tmp_path: Path):
    _write(tmp_path, "/srv/ftp.conf", "TransferLog /srv/logs/xfer.log\n")
    (tmp_path / "srv/logs").mkdir()
    found = proftpd.inventory(tmp_path, None, proftpd.settings({"config": "/srv/ftp.conf"}))
    assert {"/srv/ftp.conf", "/srv/logs"} <= _paths(found)
    missing = proftpd.inventory(tmp_path, None, proftpd.settings({}))
    assert not missing.files and "no config /etc/proftpd/proftpd.conf" in missing.warnings[-1]
    manifest = partial(profile_options={"proftpd": {"config": "/srv/ftp.conf"}})
    names = {check.name for check in proftpd.checks(tmp_path, manifest)}
    assert "config: proftpd -t" in names and "proftpd: config" not in names
    with pytest.raises(errors.ConfigError, match=r"profile_options\.proftpd\.conf\b"):
        proftpd.settings({"conf": "/srv/ftp.conf"})


def test_writable_directory_and_landing_follow_defaultroot_and_limit_write(tmp_path: Path):
    """Where a login lands (DefaultRoot ~ chroots into the home, shown as /) and where it may
    upload: the home and its subdirectories the account may write by owner and mode, minus
    those a <Directory> <Limit WRITE> DenyAll covers (the most specific block decides)."""
    _accounts(tmp_path)
    _write(
        tmp_path,
        "/etc/proftpd/proftpd.conf",
        "DefaultRoot ~\n"
        "<Directory /home/dave/archive>\n  <Limit WRITE>\n    DenyAll\n  </Limit>\n</Directory>\n"
        "<Anonymous ~ftp>\n  <Limit WRITE>\n    DenyAll\n  </Limit>\n</Anonymous>\n",
    )
    for name in ("archive", "incoming", "readonly"):
        (tmp_path / "home/dave" / name).mkdir()
    (tmp_path / "home/dave/readonly").chmod(0o555)
    for folder in ("home/dave", "home/dave/archive", "home/dave/incoming", "home/dave/readonly"):
        os.chown(tmp_path / folder, 2021, 2021)
    config = proftpd.read_config(tmp_path)
    fields = ["dave", "x", "2021", "2021", "", "/home/dave", "/bin/bash"]
    landed, seen, why = proftpd.users.landing(tmp_path, config, 0, "dave", fields)
    assert (landed, seen) == (tmp_path / "home/dave", "/") and "DefaultRoot ~" in why
    found = proftpd.writable_dirs(tmp_path, config, 0, "dave", fields, landed)
    assert found == [".", "incoming"]  # archive: <Limit WRITE> DenyAll; readonly: 0555
    _write(tmp_path, "/etc/proftpd/proftpd.conf", "<Limit WRITE>\n  DenyAll\n</Limit>\n")
    config = proftpd.read_config(tmp_path)
    assert proftpd.writable_dirs(tmp_path, config, 0, "dave", fields, landed) == []
    landed, seen, why = proftpd.users.landing(tmp_path, config, 0, "dave", fields)
    assert seen == str(tmp_path / "home/dave") and "not chrooted" in why


def test_require_valid_shell_reads_the_nodes_etc_shells(tmp_path: Path):
    """RequireValidShell (default on) judges a login's shell by /etc/shells: the node's is
    backed up, and a smoke whose host's /etc/shells lacks a shell the node's lists runs with
    RequireValidShell off, naming it (librasoft-fr/proftpd-sftp appends /sbin/nologin)."""
    _write(
        tmp_path,
        "/etc/proftpd/proftpd.conf",
        "AuthUserFile /etc/proftpd/ftppasswd\nAuthOrder mod_auth_file.c\n",
    )
    _write(tmp_path, "/etc/proftpd/ftppasswd", "user1:x:1000:1000::/data/user1:/sbin/nologin\n")
    _write(tmp_path, "/etc/shells", "/bin/sh\n/sbin/nologin\n")
    config = proftpd.read_config(tmp_path)
    shells = [r for r in proftpd.references(tmp_path, config) if r.path == "/etc/shells"]
    assert shells and not shells[0].required
    fields = proftpd.virtual_users(tmp_path, config)["user1"]
    run = proftpd.Run(tmp_path / "work")
    proftpd.loopback.valid_shell(tmp_path, config, run, "user1", fields, [0])
    host_lists_it = "/sbin/nologin" in proftpd.users.list_file(Path("/"), "/etc/shells")
    assert run.shells_off != host_lists_it
    assert bool(run.differences) != host_lists_it
    _write(
        tmp_path,
        "/etc/proftpd/proftpd.conf",
        "AuthUserFile /etc/proftpd/ftppasswd\nAuthOrder mod_auth_file.c\nRequireValidShell off\n",
    )
    config = proftpd.read_config(tmp_path)
    assert "/etc/shells" not in {r.path for r in proftpd.references(tmp_path, config)}


def test_loadmodule_of_a_module_compiled_into_this_proftpd_is_present(tmp_path: Path):
    """PLD's conf.d/mod_auth_file.conf says LoadModule mod_auth_file.c; Debian's proftpd has it
    built in (proftpd -l), says "already loaded" and starts: not a missing module."""
    built_in = proftpd.static_modules(proftpd.proftpd_program())
    assert built_in and "mod_auth_file" in built_in
    _write(
        tmp_path,
        "/etc/proftpd/proftpd.conf",
        "LoadModule mod_auth_file.c\nLoadModule mod_ident.c\n",
    )
    (check,) = proftpd.static.module_checks(proftpd.read_config(tmp_path))
    assert check.status == "pass", check.detail
    _write(tmp_path, "/etc/proftpd/proftpd.conf", "LoadModule mod_nowhere.c\n")
    (check,) = proftpd.static.module_checks(proftpd.read_config(tmp_path))
    assert check.status == "fail" and "mod_nowhere.c" in check.detail
