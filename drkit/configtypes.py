"""drkit.yaml's value types (durations, schedules, fingerprints, URLs), the strict base of
its sections, and how a validation error is said: one line naming the file and the field."""

from __future__ import annotations

import difflib
import functools
import re
import typing
from collections.abc import Callable
from datetime import timedelta
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from drkit import errors

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
MAX_DURATION_SECONDS = 100 * 365 * 86400  # beyond it, date arithmetic overflows
_FINGERPRINT = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")


@functools.cache
def parse_duration(text: str) -> timedelta:
    """Given '30s', '15m', '2h', '1d' or '1w', return the timedelta; raise ValueError otherwise.
    Each text is parsed once (the config's durations are checked at load and read often)."""
    match = _DURATION.match(str(text))
    if not match:
        raise ValueError(f"{text!r} is not a duration like 30s, 15m, 2h, 1d")
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds > MAX_DURATION_SECONDS:
        raise ValueError(f"{text!r} is longer than 100 years")
    return timedelta(seconds=seconds)


def check_fingerprint(text: str) -> str:
    """Given a signer fingerprint, return it when it is written as `ssh-keygen -l` writes one
    (SHA256:<43 base64 characters>); raise ValueError otherwise. The one fingerprint rule:
    trusted_keys and --trust-key are both held to it."""
    if not _FINGERPRINT.fullmatch(str(text)):
        raise ValueError(f"{text!r} is not a SHA256:... fingerprint")
    return text


def _check_duration(text: str) -> str:
    parse_duration(text)
    return text


def _check_schedule(text: str) -> str:
    # The line is valid exactly when the daemon can schedule it: the same parser decides.
    from drkit import schedule

    schedule.trigger_for(text)
    return text


AFTER_BACKUP = "after-backup"


def _check_prove(text: str) -> str:
    # schedule.prove: right after each backup the daemon makes, or a schedule line of its own
    if text == AFTER_BACKUP:
        return text
    try:
        return _check_schedule(text)
    except ValueError as exc:
        raise ValueError(f"{exc}, nor {AFTER_BACKUP!r}") from None


def _check_http_url(value: str) -> str:
    if not re.match(r"^https?://[^/\s]+(/\S*)?$", value):
        raise ValueError(f"{value!r} is not an http(s):// URL")
    return value


Duration = Annotated[str, AfterValidator(_check_duration)]
Schedule = Annotated[str, AfterValidator(_check_schedule)]
ProveSchedule = Annotated[str, AfterValidator(_check_prove)]
HttpUrl = Annotated[str, AfterValidator(_check_http_url)]
# a URL that paths are appended to: kept without its trailing slash
BaseUrl = Annotated[str, AfterValidator(_check_http_url), AfterValidator(lambda v: v.rstrip("/"))]


class Strict(BaseModel):
    """A config section that refuses unknown keys."""

    model_config = ConfigDict(extra="forbid")


def config_error(
    exc: ValidationError, source: str, field_name: Callable[[str], str] | None = None
) -> errors.ConfigError:
    """Given pydantic's ValidationError for settings from source, return one ConfigError that
    names every field that failed, one line each (`drkit.yaml: node: Field required`); an
    unknown key suggests the nearest valid one, and a required field it stands for is not
    reported again. field_name turns a dotted field into what the user typed (a command-line
    flag). Every loader of drkit's models maps its errors through here."""
    model = {section.__name__: section for section in Strict.__subclasses__()}.get(exc.title)
    problems = exc.errors()
    # loc of an unknown key -> the valid key nearest to it
    meant: dict[tuple[str | int, ...], str | None] = {}
    for problem in problems:
        if problem["type"] == "extra_forbidden":
            *parent, key = problem["loc"]
            meant[tuple(problem["loc"])] = _nearest(str(key), _keys_at(model, parent))
    explained = {(*loc[:-1], nearest) for loc, nearest in meant.items() if nearest}
    lines = []
    for problem in problems:
        loc = tuple(problem["loc"])
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "missing" and loc in explained:
            continue  # said once, on the misspelt key
        if loc in meant:
            nearest = meant[loc]
            valid = _keys_at(model, list(loc[:-1]))
            message = "unknown setting" + (
                f", did you mean '{nearest}'?" if nearest else f"; valid: {', '.join(valid)}"
            ) * bool(valid)
        field = ".".join(str(part) for part in loc) or "(top level)"
        lines.append(f"{field_name(field) if field_name else field}: {message}")
    return errors.ConfigError(
        f"{source}: {'; '.join(lines)}", lines=[f"{source}: {line}" for line in lines]
    )


def _keys_at(model: type[BaseModel] | None, loc: list[str | int]) -> list[str]:
    """Return the setting names valid at loc inside model: walk its fields, through optional
    sections, lists and dict values, to the model found there."""
    for part in loc:
        if model is None:
            return []
        if isinstance(part, int) or part not in model.model_fields:
            continue  # a list index or a dict key: the same model holds on
        model = _section(model.model_fields[part].annotation)
    return list(model.model_fields) if model else []


def _section(annotation: object) -> type[BaseModel] | None:
    """Return the BaseModel an annotation holds (X, X | None, list[X], dict[str, X])."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in typing.get_args(annotation):
        found = _section(argument)
        if found:
            return found
    return None


def _nearest(word: str, candidates: list[str]) -> str | None:
    """Return the candidate nearest to word (difflib), or None when none is close."""
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return close[0] if close else None
