"""The published JSON Schema of every command's `--json` document, generated from drkit.results.

`python -m devtools.schemas` writes docs/schemas/<command>.schema.json (and error.schema.json,
the failure document every command prints instead of its own); tests check that the files equal
what the models generate now and that the suite's real documents validate against them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import MISSING, BaseModel, ConfigDict

from drkit import model as drkit_model
from drkit import results as r

SCHEMAS = Path(__file__).resolve().parent.parent / "docs" / "schemas"
DIALECT = "https://json-schema.org/draft/2020-12/schema"

# A command (its words on the command line) and the result models its document can be.
COMMANDS: dict[str, tuple[type[BaseModel], ...]] = {
    "version": (r.VersionResult,),
    "init": (r.InitResult,),
    "storage init": (r.StorageInitResult,),
    "storage verify": (r.StorageVerifyResult,),
    "backup": (r.BackupResult,),
    "snapshots": (r.SnapshotsResult,),
    "show": (r.ShowResult,),
    "restore": (r.RestoreResult, r.RestorePlanResult),
    "check": (r.CheckResult,),
    "drill": (r.DrillResult,),
    "report": (r.ReportResult, r.FleetReportResult),
    "diff": (r.DiffResult,),
    "prune": (r.PruneResult,),
    "verify": (r.VerifyResult,),
    "status": (r.StatusResult,),
    "daemon": (r.DaemonResult,),
    "discover": (r.DiscoverResult,),
    "standby sync": (r.StandbySyncResult,),
    "standby status": (r.StandbyStatusResult,),
    "standby promote": (r.PromoteResult,),
    "fleet drift": (r.FleetDriftResult,),
    "history": (r.HistoryResult,),
    "copy": (r.CopyResult,),
    "identity check": (r.IdentityResult,),
    "failover rehearse": (r.RehearsalResult,),
    "keys escrow": (r.KeysEscrowResult,),
    "keys holder": (r.KeysHolderResult,),
    "keys reveal": (r.KeysRevealResult,),
    "keys recover": (r.KeysRecoverResult,),
    "keys rotate": (r.KeysRotateResult,),
}


class ErrorPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: int
    kind: str
    message: str


class ErrorDocument(BaseModel):
    """What every command prints with --json when it could not do the job (drkit.output)."""

    model_config = ConfigDict(extra="forbid")

    ok: Literal[False]
    error: ErrorPart


def file_name(command: str) -> str:
    """Return the schema file's name of a command ("storage init" -> storage-init.schema.json)."""
    return f"{command.replace(' ', '-')}.schema.json"


def _models() -> dict[str, type[BaseModel]]:
    """Return the models a result can hold, by name (the title pydantic gives their schema)."""
    found = {}
    for module in (r, drkit_model, sys.modules[__name__]):
        for name, value in vars(module).items():
            if isinstance(value, type) and issubclass(value, BaseModel):
                found[name] = value
    return found


def _model_schema(model: type[BaseModel]) -> dict[str, Any]:
    """Return a model's serialization schema: every field required (a default is still
    written) except those absent when MISSING."""
    schema = model.model_json_schema(mode="serialization")
    known = _models()
    for part in [schema, *schema.get("$defs", {}).values()]:
        fields = known[part["title"]].model_fields if part.get("title") in known else {}
        absent = {name for name, field in fields.items() if field.default is MISSING}
        if "required" in part:
            part["required"] = [name for name in part["required"] if name not in absent]
    return schema


def _schema(models: tuple[type[BaseModel], ...], title: str) -> dict[str, Any]:
    """Return one schema: the model's, or anyOf the models' with their $defs merged."""
    if len(models) == 1:
        schema = _model_schema(models[0])
    else:
        defs: dict[str, Any] = {}
        choices = []
        for model in models:
            one = _model_schema(model)
            defs.update(one.pop("$defs", {}))
            defs[model.__name__] = one
            choices.append({"$ref": f"#/$defs/{model.__name__}"})
        schema = {"anyOf": choices, "$defs": dict(sorted(defs.items()))}
    return {"$schema": DIALECT, "title": title, **schema}


def generate() -> dict[str, dict[str, Any]]:
    """Return every published schema by file name."""
    schemas = {
        file_name(command): _schema(models, f"drkit {command} --json")
        for command, models in COMMANDS.items()
    }
    schemas["error.schema.json"] = _schema((ErrorDocument,), "drkit error document")
    return schemas


def text(schema: dict[str, Any]) -> str:
    """Return a schema file's text."""
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def command_of(argv: list[str]) -> str | None:
    """Return the command a drkit argument list runs (its one or two words), None if unknown."""
    if "--version" in argv:
        return "version"
    words = [arg for arg in argv if not arg.startswith("-")]
    for length in (2, 1):
        if " ".join(words[:length]) in COMMANDS:
            return " ".join(words[:length])
    return None


def validate(argv: list[str], document: Any) -> None:
    """Check a command's document against its published schema (the error schema for a failure
    to do the job); raise jsonschema.ValidationError when it does not fit."""
    import jsonschema

    command = command_of(argv)
    if isinstance(document, dict) and "error" in document and document.get("ok") is False:
        name = "error.schema.json"
    elif command is None:
        return
    else:
        name = file_name(command)
    schema = json.loads((SCHEMAS / name).read_text())
    jsonschema.validate(document, schema, cls=jsonschema.Draft202012Validator)


def main() -> int:
    """Write every schema under docs/schemas and remove files no command publishes any more."""
    SCHEMAS.mkdir(mode=0o755, parents=True, exist_ok=True)
    schemas = generate()
    for stale in SCHEMAS.glob("*.schema.json"):
        if stale.name not in schemas:
            stale.unlink()
    for name, schema in schemas.items():
        path = SCHEMAS / name
        path.write_text(text(schema))
        path.chmod(0o644)
    print(f"{len(schemas)} schemas in {SCHEMAS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
