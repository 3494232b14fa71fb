"""The result of every command, as a typed model: actions return these, drkit.render prints them
for people, and `--json` prints `result.model_dump(mode="json")`.

The JSON shapes are a documented interface (../shared/CONVENTIONS.md and the README): field
names, nesting, and null versus absent are exactly as documented. Every document is an object
with `ok`; lists travel under a named key; one name per concept (`files` is always a list of
entries, `file_count` their number, `kept`/`removed` the retention pair). The published JSON
Schema files (docs/schemas, devtools/schemas.py) are generated from these models. A field that
some runs of a command carry and others leave out is typed `... | MISSING` and defaults to
MISSING, so the dump omits it instead of writing null. Parts that are documents of their own
(a manifest's records, restic's lock descriptions, the engines' status entries) stay free-form
dicts.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, PlainSerializer

from drkit.model import (
    Check,
)


def _check_documents(checks: list[Check]) -> list[dict[str, str]]:
    return [check.as_dict() for check in checks]


# Checks are model.Check values; their JSON is [{name, status, detail}] (no timing).
Checks = Annotated[list[Check], PlainSerializer(_check_documents, return_type=list[dict[str, str]])]
Document = dict[str, Any]


class Result(BaseModel):
    """Base of every command result: `ok` false makes the command exit 1. A field the model does
    not declare is an error, never silently left out of the JSON."""

    model_config = ConfigDict(
        extra="forbid", json_schema_serialization_defaults_required=True, defer_build=True
    )

    ok: bool = True


class Part(BaseModel):
    """Base of a nested part of a result."""

    model_config = ConfigDict(
        extra="forbid", json_schema_serialization_defaults_required=True, defer_build=True
    )


def document(result: object) -> object:
    """Return the JSON document of a result: a model's dump; a dict (or None) as it is."""
    return result.model_dump(mode="json") if isinstance(result, BaseModel) else result
