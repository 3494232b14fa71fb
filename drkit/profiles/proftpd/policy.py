"""The ProFTPD profile's policy (policies/proftpd.yaml), read once into a typed model, and its
profile options (profile_options.proftpd)."""

from __future__ import annotations

import functools
import posixpath
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from drkit.profiles.common import profile_options
from drkit.profiles.common.policies import policy as read_policy
from drkit.profiles.interface import ProfileOptions

NAME = "proftpd"

# How a directive names files: one path, a directory, a log (and its own directory), a
# Display* file, a program among its words, file: stores (%u and ~ expanded), a chroot, or
# LDAPServer ssl-* words.
DirectiveKind = Literal[
    "include", "path", "dir", "log", "display", "exec", "keystore", "chroot", "ldapserver"
]


class _Rules(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConfigRules(_Rules):
    """Where proftpd.conf is and how its Includes are followed."""

    main: str
    include_base: str
    max_include_depth: int
    include_temp_patterns: list[str]


class PamRules(_Rules):
    default_services: list[str]


class Directive(_Rules):
    """A directive that names files: how messages spell it, how it names them, its category,
    and whether a missing file fails the checks."""

    name: str
    kind: DirectiveKind
    category: str
    required: bool


class Validate(_Rules):
    argv: list[str]
    fail_patterns: list[str]


class Modes(_Rules):
    private_key_forbid: str

    @property
    def forbidden(self) -> int:
        """The permission bits a private key must not have."""
        return int(self.private_key_forbid, 8)


class SmokeRules(_Rules):
    proftpd: str
    start_timeout_seconds: float
    listen: list[str]


class Policy(_Rules):
    """policies/proftpd.yaml (its comments say what each part means)."""

    profile: Literal["proftpd"]
    config: ConfigRules
    pam: PamRules
    shared_dirs: list[str]
    module_path: str
    categories: dict[str, str]
    owned_globs: list[str]
    directives: dict[str, Directive]
    off_words: list[str]
    runtime: list[str]
    validation: Validate = Field(alias="validate")  # BaseModel has a validate()
    modes: Modes
    smoke: SmokeRules


@functools.cache
def policy() -> Policy:
    """Return policies/proftpd.yaml."""
    return Policy.model_validate(read_policy(NAME))


class Options(ProfileOptions):
    """profile_options.proftpd: the main proftpd.conf (proftpd -c)."""

    config: str = Field(
        description="the proftpd.conf proftpd reads (proftpd -c); "
        "/etc/proftpd/proftpd.conf when unset"
    )

    @field_validator("config", mode="before")
    @classmethod
    def _absolute(cls, value: object) -> str:
        if not isinstance(value, str) or not value.startswith("/"):
            raise ValueError("must be an absolute node path")
        return posixpath.normpath(value)


def settings(options: Mapping[str, object] | None) -> Options:
    """Return profile_options.proftpd checked, with defaults.

    An unknown key or a config that is not an absolute path is a ConfigError naming the field.
    """
    try:
        return Options.model_validate({"config": policy().config.main, **(options or {})})
    except ValidationError as exc:
        raise profile_options.refused(exc, f"profile_options.{NAME}.") from None
