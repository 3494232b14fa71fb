"""The one interface every server profile implements, and what discovery reports.

A profile knows one kind of transfer server: how to recognise it on a root, which files make a
node of that kind (inventory), how to judge restored files (checks), how to start the real
server from them and log in (smoke), how to rewrite its configuration so it runs from a sandbox
(sandbox_config), and which settings differ per node on purpose (node_local). Actions reach
profiles only through `drkit.profiles.get(kind)`; nothing below this interface is shared
between profiles except `drkit.profiles.common`.

Each profile declares its options (`profile_options.<name>`) as a pydantic model: `options()`
validates them once, naming the first bad setting, and the interface takes the model.
"""

from __future__ import annotations

import contextlib
import posixpath
import shlex
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from drkit.model import Check, Inventory, Manifest, SmokeResult
from drkit.paths import on_root

UNIT_DIRS = ("/etc/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system")


@dataclass(frozen=True)
class Signs:
    """Where a server kind shows itself on a node: default config files, programs, service
    units, and how its command line names another config (`config_flag`, e.g. sshd's "-f";
    "" for the first plain argument, as vsftpd takes it; None when it cannot)."""

    configs: tuple[str, ...]
    binaries: tuple[str, ...] = ()
    units: tuple[str, ...] = ()
    config_flag: str | None = None


@dataclass(frozen=True)
class Detection:
    """What discovery found of one server kind on a root (node paths); `options` holds the
    profile options the node needs (a config named by its unit's ExecStart)."""

    configs: list[str]
    binaries: list[str]
    units: list[str]
    options: dict[str, str] = field(default_factory=dict)


class ProfileOptions(BaseModel):
    """The base of a profile's options model: an unknown setting is refused, and the
    settings, once validated, do not change."""

    model_config = ConfigDict(extra="forbid", frozen=True)


OptionsT = TypeVar("OptionsT", bound=BaseModel)


def unit_config(root: Path, unit: str, flag: str) -> str | None:
    """Return the config path a systemd unit's effective ExecStart passes (after `flag`, or as
    its first plain argument when flag is ""), reading the unit's drop-ins like systemd: a
    later ExecStart wins and an empty one resets."""
    texts = []
    with contextlib.suppress(OSError):
        texts.append(on_root(root, unit).read_text(errors="replace"))
    for drop_in in sorted(on_root(root, unit + ".d").glob("*.conf")):
        with contextlib.suppress(OSError):
            texts.append(drop_in.read_text(errors="replace"))
    command: list[str] = []
    for text in texts:
        for line in text.splitlines():
            key, _, value = line.strip().partition("=")
            if key.strip() != "ExecStart":
                continue
            try:
                command = shlex.split(value.strip().lstrip("@-:+!"))
            except ValueError:
                command = []
    arguments = command[1:]
    if flag:
        for index, argument in enumerate(arguments):
            if argument == flag and index + 1 < len(arguments):
                return arguments[index + 1]
            if argument.startswith(flag) and len(argument) > len(flag):
                return argument[len(flag) :]
        return None
    plain = [argument for argument in arguments if not argument.startswith("-")]
    return plain[0] if plain and plain[0].startswith("/") else None


class Profile(ABC):
    """A server kind drkit backs up, restores and proves."""

    name: str
    signs: Signs
    # Node-local settings (standby.local syntax) a pool of this kind usually keeps per node;
    # discover proposes them.
    node_local: tuple[str, ...] = ()
    # False for a profile with no configuration of its own (generic: described by options).
    reads_config: bool = True

    @abstractmethod
    def options(self, given: Mapping[str, object] | None) -> BaseModel:
        """Return profile_options.<name> validated by the profile's options model, defaults
        filled in; raise ConfigError naming the first unknown or malformed setting."""

    def detect(self, root: Path) -> Detection | None:
        """Return what shows this server on root, or None when no config of it is there: a
        default config, or the one its service unit's ExecStart names."""
        units = [
            f"{directory}/{unit}"
            for directory in UNIT_DIRS
            for unit in self.signs.units
            if on_root(root, f"{directory}/{unit}").exists()
        ]
        named = None
        if self.signs.config_flag is not None:
            named = next(
                (
                    found
                    for unit in units
                    if (found := unit_config(root, unit, self.signs.config_flag))
                    and on_root(root, found).is_file()
                ),
                None,
            )
        configs = [path for path in self.signs.configs if on_root(root, path).is_file()]
        if named and named not in configs:
            configs.insert(0, named)
        if not configs:
            return None
        return Detection(
            configs=configs,
            binaries=[path for path in self.signs.binaries if on_root(root, path).exists()],
            units=units,
            options={"config": named} if named and named not in self.signs.configs else {},
        )

    def main_config(self, root: Path, options: BaseModel) -> str | None:
        """Return the node path of the main config this profile reads on root (options'
        `config`, else the first default that exists), or None when there is none."""
        chosen = getattr(options, "config", None)
        candidates = [chosen] if isinstance(chosen, str) else list(self.signs.configs)
        return next((path for path in candidates if on_root(root, path).is_file()), None)

    def login_homes(self, root: Path, manifest: Manifest) -> dict[str, str]:
        """Return {account: node path} of the directory this server puts each of the
        manifest's accounts in at login, as the restored node on root configures it: the
        passwd home here; a server that confines logins (a chroot, a virtual root) says where
        it looks. An account the server does not place anywhere is left out."""
        homes = {}
        for account in manifest.accounts:
            home = account.entry.home
            if home.startswith("/"):
                homes[account.name] = posixpath.normpath(home)
        return homes

    @abstractmethod
    def inventory(self, root: Path, smoke_user: str | None, options: BaseModel) -> Inventory:
        """Return the node's files, trees and accounts; options are profile_options.<name>,
        as options() returned them."""

    @abstractmethod
    def checks(self, root: Path, manifest: Manifest) -> list[Check]:
        """Return the static checks of restored (or live) files against their manifest."""

    @abstractmethod
    def smoke(self, root: Path, manifest: Manifest, user: str, work_dir: Path) -> SmokeResult:
        """Start the real server from root on 127.0.0.1, log in as user and move a file.

        Return what was proven, or SmokeResult.not_judged(...) when this host cannot try.
        Everything the run starts or creates is gone when it returns.
        """

    @abstractmethod
    def sandbox_config(self, root: Path, out_dir: Path) -> Path | None:
        """Write the node's configuration with every node path mapped onto root into out_dir;
        return its main file, or None when the profile has no configuration of its own."""


@dataclass(frozen=True, eq=False)
class ModuleProfile(Profile, Generic[OptionsT]):
    """A profile whose module implements the interface as plain functions, one per method
    (same parameters, no self), and validates its options with settings_of into its
    options_model: `PROFILE = ModuleProfile(NAME, SIGNS, inventory, checks, smoke,
    sandbox_config, options_model=Options, settings_of=settings)`."""

    name: str
    signs: Signs
    inventory_of: Callable[[Path, str | None, OptionsT], Inventory]
    checks_of: Callable[[Path, Manifest], list[Check]]
    smoke_of: Callable[[Path, Manifest, str, Path], SmokeResult]
    sandbox_config_of: Callable[[Path, Path], Path | None]
    node_local: tuple[str, ...] = ()
    reads_config: bool = True
    main_config_of: Callable[[Path, OptionsT], str | None] | None = None
    login_homes_of: Callable[[Path, Manifest], dict[str, str]] | None = None
    options_model: type[OptionsT] = field(kw_only=True)
    settings_of: Callable[[Mapping[str, object] | None], OptionsT] = field(kw_only=True)

    def options(self, given: Mapping[str, object] | None) -> OptionsT:
        return self.settings_of(given)

    def own(self, options: BaseModel) -> OptionsT:
        """Return options as this profile's model; TypeError for another profile's (a bug)."""
        if not isinstance(options, self.options_model):
            wanted, given = self.options_model, type(options)
            raise TypeError(
                f"{self.name}: options must be {wanted.__module__}.{wanted.__qualname__}, "
                f"not {given.__module__}.{given.__qualname__}"
            )
        return options

    def inventory(self, root: Path, smoke_user: str | None, options: BaseModel) -> Inventory:
        return self.inventory_of(root, smoke_user, self.own(options))

    def checks(self, root: Path, manifest: Manifest) -> list[Check]:
        return self.checks_of(root, manifest)

    def smoke(self, root: Path, manifest: Manifest, user: str, work_dir: Path) -> SmokeResult:
        return self.smoke_of(root, manifest, user, work_dir)

    def sandbox_config(self, root: Path, out_dir: Path) -> Path | None:
        return self.sandbox_config_of(root, out_dir)

    def main_config(self, root: Path, options: BaseModel) -> str | None:
        if self.main_config_of is not None:
            return self.main_config_of(root, self.own(options))
        return super().main_config(root, options)

    def login_homes(self, root: Path, manifest: Manifest) -> dict[str, str]:
        if self.login_homes_of is not None:
            return self.login_homes_of(root, manifest)
        return super().login_homes(root, manifest)
