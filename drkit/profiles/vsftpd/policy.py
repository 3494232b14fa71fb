"""The vsftpd profile's policy (policies/vsftpd.yaml), read once into a typed model, and its
profile options (profile_options.vsftpd)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from drkit.profiles.common import profile_options
from drkit.profiles.common.policies import policy as read_policy
from drkit.profiles.interface import ProfileOptions

NAME = "vsftpd"


class _Rules(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConfigRules(_Rules):
    """Where vsftpd.conf may be, the PAM directory, and vsftpd's compiled-in defaults
    (tunables.c) for what a config leaves unset."""

    candidates: list[str]
    pam_dir: str
    defaults: dict[str, str]


class Setting(_Rules):
    """A setting that names a file: how it names it, its category, and the YES settings
    without which vsftpd never reads it."""

    kind: Literal["path", "dir", "log"]
    category: str
    needs: list[str] = []


class Modes(_Rules):
    private_key_forbid: str

    @property
    def forbidden(self) -> int:
        """The permission bits a private key must not have."""
        return int(self.private_key_forbid, 8)


class SmokeRules(_Rules):
    vsftpd: list[str]
    start_timeout_seconds: float
    anonymous_names: list[str]
    anonymous_password: str
    override: dict[str, str]
    drop: list[str]


class Policy(_Rules):
    """policies/vsftpd.yaml (its comments say what each part means)."""

    profile: Literal["vsftpd"]
    options: dict[str, str | None]
    config: ConfigRules
    categories: dict[str, str]
    owned_globs: list[str]
    settings: dict[str, Setting]
    never_paths: list[str]
    shared_dirs: list[str]
    pam_module_dirs: list[str]
    local_uid_min: int
    local_uid_max: int
    modes: Modes
    smoke: SmokeRules
    compiled: dict[str, str]


@functools.cache
def policy() -> Policy:
    """Return policies/vsftpd.yaml."""
    return Policy.model_validate(read_policy(NAME))


class Options(ProfileOptions):
    """profile_options.vsftpd: the vsftpd.conf the node's vsftpd reads (None: the first of
    the policy's candidates that exists)."""

    config: str | None = Field(
        None,
        description="the vsftpd.conf vsftpd reads; unset: the first of /etc/vsftpd.conf, "
        "/etc/vsftpd/vsftpd.conf that exists",
    )

    @field_validator("config", mode="before")
    @classmethod
    def _absolute(cls, value: object) -> str | None:
        if value is not None and not (isinstance(value, str) and value.startswith("/")):
            raise ValueError("must be an absolute node path")
        return value


def settings(options: Mapping[str, object] | None) -> Options:
    """Return profile_options.vsftpd over the policy's defaults; raise ConfigError naming the
    setting when one is unknown or malformed."""
    try:
        return Options.model_validate({**policy().options, **(options or {})})
    except ValidationError as exc:
        raise profile_options.refused(exc, f"profile_options.{NAME}.") from None
