"""The OpenSSH profile's policy (policies/openssh.yaml), read once into a typed model, and its
profile options (profile_options.openssh)."""

from __future__ import annotations

import functools
import posixpath
import re
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from drkit.profiles.common import profile_options
from drkit.profiles.common.policies import policy as read_policy

NAME = "openssh"

DirectiveKind = Literal["include", "path", "paths", "user_path", "chroot", "command", "subsystem"]


class _Rules(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConfigRules(_Rules):
    """Where sshd_config is and how its Includes and PAM service are found."""

    main: str
    include_base: str
    max_include_depth: int
    pam_dir: str
    pam_service: str


class Defaults(_Rules):
    """sshd's compiled-in values for what a config leaves unset."""

    host_keys: list[str]
    authorized_keys_file: list[str]
    moduli: str
    use_pam: str
    strict_modes: str
    permit_root_login: str
    pubkey_authentication: str
    password_authentication: str
    kbd_interactive_authentication: str
    permit_empty_passwords: str
    working_directory: str
    shell: str
    no_home: list[str]


class Directive(_Rules):
    """A directive that names files: how messages spell it, how sshd expands it, its
    category, and whether a missing file fails the checks."""

    name: str
    kind: DirectiveKind
    category: str
    required: bool


class IntegrationRule(_Rules):
    """An integration file's rule: the exact mode its daemon requires, a setting that holds a
    password."""

    mode: str | None = None
    secret: str | None = None


class Integration(_Rules):
    files: dict[str, IntegrationRule]
    globs: dict[str, IntegrationRule]
    tls_settings: list[str]


class ModeRule(_Rules):
    """Permission bits that must be clear (octal text) and who may own the path."""

    forbid: str
    owner: list[Literal["root", "user"]]

    @property
    def forbidden(self) -> int:
        return int(self.forbid, 8)

    def uids(self, user_uid: int | None) -> set[int]:
        """Return the uids that may own the path ("user": user_uid, when known)."""
        found = {0 if owner == "root" else user_uid for owner in self.owner}
        return {uid for uid in found if uid is not None}


class Modes(_Rules):
    host_private_key: ModeRule
    command_program: ModeRule
    authorized_keys_file: ModeRule
    authorized_keys_path: ModeRule
    chroot_path: ModeRule


class Validate(_Rules):
    argv: list[str]
    fail_patterns: list[str]


class Certificates(_Rules):
    warn_days: int


class SmokeRules(_Rules):
    sshd: str
    privsep_dir: str
    start_timeout_seconds: float
    missing_subsystem: str
    drop: list[str]


class Policy(_Rules):
    """policies/openssh.yaml (its comments say what each part means)."""

    profile: Literal["openssh"]
    config: ConfigRules
    options: list[str]
    categories: dict[str, str]
    owned_globs: list[str]
    defaults: Defaults
    multi_valued: list[str]
    aliases: dict[str, str]
    directives: dict[str, Directive]
    packaged_programs: list[str]
    node_programs: list[str]
    integration: Integration
    runtime: list[str]
    modes: Modes
    validation: Validate = Field(alias="validate")  # BaseModel has a validate()
    certificates: Certificates
    smoke: SmokeRules


@functools.cache
def policy() -> Policy:
    """Return policies/openssh.yaml."""
    return Policy.model_validate(read_policy(NAME))


class Options(BaseModel):
    """profile_options.openssh: the main sshd_config (sshd -f) and the PAM service sshd runs
    under."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    config: str = Field(
        description="the sshd_config sshd reads (sshd -f); /etc/ssh/sshd_config when unset"
    )
    pam_service: str = Field(description="the PAM service sshd runs under; sshd when unset")

    @field_validator("config", mode="before")
    @classmethod
    def _absolute(cls, value: object) -> str:
        if not isinstance(value, str) or not value.startswith("/"):
            raise ValueError("must be an absolute node path")
        return posixpath.normpath(value)

    @field_validator("pam_service", mode="before")
    @classmethod
    def _service(cls, value: object) -> str:
        if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", value):
            raise ValueError("must be a PAM service name")
        return value


def settings(options: Options | Mapping[str, object] | None) -> Options:
    """Return profile_options.openssh over the policy's defaults (options already validated
    as they are); raise ConfigError naming the first unknown or malformed setting."""
    if isinstance(options, Options):
        return options
    rules = policy().config
    given = {"config": rules.main, "pam_service": rules.pam_service, **(options or {})}
    try:
        return Options.model_validate(given)
    except ValidationError as exc:
        raise profile_options.refused(exc, f"profile_options.{NAME}.") from None
