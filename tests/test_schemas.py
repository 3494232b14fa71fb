"""The published JSON Schema files (docs/schemas) are what the result models generate, and real
command documents fit them (issue 24 part 7). tests/nodes.drkit checks every document the suite
produces through it; this file runs one of each kind of document on purpose."""

from __future__ import annotations

import json

import jsonschema
import pytest
import typer
from typer.testing import CliRunner

from devtools import schemas
from drkit.cli import app


def test_published_schemas_are_what_the_models_generate():
    generated = schemas.generate()
    published = {path.name: path.read_text() for path in schemas.SCHEMAS.glob("*.schema.json")}
    assert set(published) == set(generated), "run: python -m devtools.schemas"
    for name, schema in generated.items():
        assert published[name] == schemas.text(schema), f"{name}: run python -m devtools.schemas"
        jsonschema.Draft202012Validator.check_schema(schema)


def test_every_command_has_a_schema():
    root = typer.main.get_command(app)
    commands = set()
    for name, command in root.commands.items():
        inner = getattr(command, "commands", None)
        commands |= {f"{name} {word}" for word in inner} if inner else {name}
    assert commands - set(schemas.COMMANDS) == set()
    assert set(schemas.COMMANDS) - commands == {"version"}


def test_every_schema_wants_an_object_with_ok():
    for name, schema in schemas.generate().items():
        shapes = [schema["$defs"][choice["$ref"].split("/")[-1]] for choice in schema["anyOf"]] \
            if "anyOf" in schema else [schema]  # fmt: skip
        for shape in shapes:
            assert shape["type"] == "object" and "ok" in shape["required"], name


def test_a_document_that_does_not_fit_is_refused():
    with pytest.raises(jsonschema.ValidationError):
        schemas.validate(["snapshots"], [{"id": "a"}])  # the old bare list
    with pytest.raises(jsonschema.ValidationError):
        schemas.validate(["backup"], {"ok": True, "files": 3})


def test_version_json_is_a_document():
    for argv in (["--version", "--json"], ["--json", "--version"]):
        run = CliRunner().invoke(app, argv)
        assert run.exit_code == 0, run.output
        document = json.loads(run.stdout)
        assert document["ok"] is True and document["version"]
        schemas.validate(argv, document)
    assert CliRunner().invoke(app, ["--version"]).stdout.startswith("drkit ")


@pytest.mark.integration
def test_real_documents_fit_their_schemas(local_s3, tmp_path):
    from nodes import Node, drkit, fresh_repository, make_workspace

    node = Node(make_workspace(), fresh_repository(local_s3, tmp_path, prefix="schemas"))
    try:
        first = node.backup()
        (node.root / "etc" / "ssh" / "sshd_config").open("a").write("\n# edited\n")
        made = node.run("backup")[1]
        assert made["file_count"] > 3 and "files" not in made
        code, listed = node.run("snapshots")
        assert code == 0 and listed["ok"] is True
        assert [s["id"] for s in listed["snapshots"]] == [first, made["snapshot_id"]]
        assert listed["snapshots"][-1]["file_count"] == made["file_count"]
        code, shown = node.run("show", "latest")
        assert code == 0 and isinstance(shown["files"], list)
        assert shown["file_count"] == made["file_count"]
        assert node.run("diff", "latest~1", "latest")[0] == 0
        code, planned = node.run("restore", "latest", "--dry-run", "--target", str(tmp_path / "t"))
        assert code == 0 and planned["dry_run"] is True, planned
        code, pruned = node.run("prune", "--dry-run")
        assert code == 0 and {"kept", "removed"} <= set(pruned) and "keep" not in pruned
        both = {s["id"] for s in pruned["kept"] + pruned["removed"]}
        assert both == {first, made["snapshot_id"]}
        assert set(pruned["kept"][0]) == {"id", "short_id", "time", "tags", "reasons", "rules"}
        assert pruned["snapshot_count"] == len(pruned["kept"])
        for command in (["verify"], ["status"], ["storage", "verify"], ["standby", "status"]):
            node.run(*command)  # nodes.drkit checks the document against its schema
        code, found = drkit("discover", "--root", str(node.root))
        assert code == 0 and all("file_count" in server for server in found["servers"])
        code, failed = node.run("show", "no-such-snapshot")
        assert code != 0 and failed["ok"] is False and failed["error"]["kind"]
    finally:
        node.remove()
