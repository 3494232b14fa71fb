"""The one interface every server profile implements, and what discovery reports.

A profile knows one kind of transfer server: how to recognise it on a root, which files make a
node of that kind (inventory), how to judge restored files (checks), how to start the real
server from them and log in (smoke), how to rewrite its configuration so it runs from a sandbox
(sandbox_config), and which settings differ per node on purpose (node_local). Actions reach
profiles only through `drkit.profiles.get(kind)`; nothing below this interface is shared
between profiles except `drkit.profiles.common`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from drkit.model import Check, Inventory, SmokeResult
from drkit.paths import on_root

UNIT_DIRS = ("/etc/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system")


@dataclass(frozen=True)
class Signs:
    """Where a server kind shows itself on a node: config files, programs, service units."""

    configs: tuple[str, ...]
    binaries: tuple[str, ...] = ()
    units: tuple[str, ...] = ()


@dataclass(frozen=True)
class Detection:
    """What discovery found of one server kind on a root (node paths)."""

    configs: list[str]
    binaries: list[str]
    units: list[str]


class Profile(ABC):
    """A server kind drkit backs up, restores and proves."""

    name: ClassVar[str]
    signs: ClassVar[Signs]
    # Node-local settings (standby.local syntax) a pool of this kind usually keeps per node;
    # discover proposes them.
    node_local: ClassVar[tuple[str, ...]] = ()

    def detect(self, root: Path) -> Detection | None:
        """Return what shows this server on root, or None when none of its configs is there."""
        configs = [path for path in self.signs.configs if on_root(root, path).is_file()]
        if not configs:
            return None
        return Detection(
            configs=configs,
            binaries=[path for path in self.signs.binaries if on_root(root, path).exists()],
            units=[
                f"{directory}/{unit}"
                for directory in UNIT_DIRS
                for unit in self.signs.units
                if on_root(root, f"{directory}/{unit}").exists()
            ],
        )

    @abstractmethod
    def inventory(self, root: Path, smoke_user: str | None, options: dict) -> Inventory:
        """Return the node's files, trees and accounts; options are profile_options.<name>."""

    @abstractmethod
    def checks(self, root: Path, manifest: dict) -> list[Check]:
        """Return the static checks of restored (or live) files against their manifest."""

    @abstractmethod
    def smoke(self, root: Path, manifest: dict, user: str, work_dir: Path) -> SmokeResult:
        """Start the real server from root on 127.0.0.1, log in as user and move a file.

        Return what was proven, or SmokeResult.not_judged(...) when this host cannot try.
        Everything the run starts or creates is gone when it returns.
        """

    @abstractmethod
    def sandbox_config(self, root: Path, out_dir: Path) -> Path | None:
        """Write the node's configuration with every node path mapped onto root into out_dir;
        return its main file, or None when the profile has no configuration of its own."""
