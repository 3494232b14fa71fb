"""profile_options.pureftpd: the command line a unit gives, and the passwd file a PureDB is
built from."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

from pydantic import BeforeValidator, Field, ValidationError

from drkit.profiles.common import profile_options
from drkit.profiles.interface import ProfileOptions

NAME = "pureftpd"


def _command_line(value: object) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError("must be a command line")
    return value


def _node_path(value: object) -> str | None:
    if value is not None and not (isinstance(value, str) and value.startswith("/")):
        raise ValueError("must be an absolute node path")
    return value


class Options(ProfileOptions):
    """profile_options.pureftpd."""

    command: Annotated[str | None, BeforeValidator(_command_line)] = Field(
        None, description="the pure-ftpd command line a unit gives (found by discover)"
    )
    passwd: Annotated[str | None, BeforeValidator(_node_path)] = Field(
        None, description="the pureftpd.passwd the PureDB is built from (default: beside it)"
    )


def settings(given: Mapping[str, object] | None) -> Options:
    """Return profile_options.pureftpd validated; raise ConfigError naming a bad setting."""
    try:
        return Options.model_validate(dict(given or {}))
    except ValidationError as exc:
        raise profile_options.refused(exc, f"profile_options.{NAME}.") from None
