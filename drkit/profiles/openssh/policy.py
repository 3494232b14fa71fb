"""The OpenSSH profile's policy (policies/openssh.yaml) and its options."""

from __future__ import annotations

import functools
import posixpath
import re

import yaml

from drkit import errors
from drkit.profiles.common.policies import policy_dir

NAME = "openssh"


POLICY_FILE = "openssh.yaml"


@functools.cache
def policy() -> dict:
    """Return policies/openssh.yaml."""
    return yaml.safe_load((policy_dir() / POLICY_FILE).read_text())


def settings(options: dict | None) -> dict:
    """Return profile_options.openssh over the policy's defaults; raise ConfigError naming the
    first unknown or malformed setting."""
    pol, options = policy(), dict(options or {})
    unknown = sorted(set(options) - set(pol["options"]))
    if unknown:
        raise errors.ConfigError(f"profile_options.openssh.{unknown[0]}: unknown setting")
    config = options.get("config", pol["config"]["main"])
    if not isinstance(config, str) or not config.startswith("/"):
        raise errors.ConfigError("profile_options.openssh.config: must be an absolute node path")
    service = options.get("pam_service", pol["config"]["pam_service"])
    if not isinstance(service, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", service):
        raise errors.ConfigError("profile_options.openssh.pam_service: must be a PAM service name")
    return {"config": posixpath.normpath(config), "pam_service": service}
