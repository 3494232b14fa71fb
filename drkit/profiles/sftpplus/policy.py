"""policies/sftpplus.yaml as a model, and profile_options.sftpplus: where the installation is,
who the service user is, and the product's own validator."""

from __future__ import annotations

import functools
import posixpath
from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from drkit.profiles.common import policies, profile_options
from drkit.profiles.interface import ProfileOptions

NAME = "sftpplus"


def _octal(value: object) -> int:
    if not isinstance(value, str):
        raise ValueError("expected an octal mode in quotes")
    return int(value, 8)


class _Rules(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConfigFiles(_Rules):
    main: str  # relative to the installation directory
    override: str  # read after main; its values win


class Tree(_Rules):
    category: str
    required: bool


class FileOption(_Rules):
    category: str
    role: Literal["host_key", "certificate", "key", "ca", "crl", "program", "file", "dir"]


class Modes(_Rules):
    private_forbid: Annotated[int, BeforeValidator(_octal)]
    any_forbid: Annotated[int, BeforeValidator(_octal)]


class SmokeRules(_Rules):
    reason: str


class Policy(_Rules):
    """What the SFTPPlus profile backs up, how it reads server.ini, and what it checks."""

    profile: Literal["sftpplus"]
    config: ConfigFiles
    categories: dict[str, str]
    trees: dict[str, Tree]
    units: list[str]
    vault_references: dict[str, str]
    file_options: dict[str, FileOption]
    generic_suffixes: list[str]
    keywords: list[str]
    placeholder_prefix: str
    scratch_dirs: list[str]
    pam_dir: str
    log_handler_types: list[str]
    handler_program_keys: list[str]
    external_prefix: str
    modes: Modes
    smoke: SmokeRules


@functools.cache
def policy() -> Policy:
    """Return policies/sftpplus.yaml."""
    return Policy.model_validate(policies.policy(NAME))


def _install_dir(value: object) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError("must be an absolute path")
    return posixpath.normpath(value)


class Options(ProfileOptions):
    """profile_options.sftpplus."""

    install_dir: Annotated[str, BeforeValidator(_install_dir)] = Field(
        "/opt/sftpplus", description="the installation directory (the server's working directory)"
    )
    service_user: str = Field("sftpplus", description="the account the server runs as")
    validate_command: str = Field(
        "bin/admin-commands.sh validate",
        alias="validate",
        description="the product's own validator, relative to install_dir ({root} and "
        "{install} filled in); a missing default one is a warning, a missing configured one "
        "fails",
    )
    validate_timeout_seconds: float = Field(120.0, description="how long the validator may run")

    @property
    def validate_explicit(self) -> bool:
        """Whether the node's options name the validator (so its absence is a failure)."""
        return "validate_command" in self.model_fields_set


def settings(given: Mapping[str, object] | None) -> Options:
    """Return profile_options.sftpplus over the defaults; raise ConfigError naming the setting
    when one is unknown or malformed."""
    try:
        return Options.model_validate(dict(given or {}))
    except ValidationError as exc:
        raise profile_options.refused(exc, f"profile_options.{NAME}.") from None
