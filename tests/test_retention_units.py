"""Exact retention, fast: the config model, init's written section, and the engine's forget on a
local restic repository (no S3)."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
import yaml
from nodes import MINIMAL_CONFIG, prepare_local_repository

from drkit.config import DEFAULT_RETENTION, dump_config, parse_config
from drkit.engines import restic as restic_engine


def test_no_retention_section_applies_the_defaults():
    config = parse_config(MINIMAL_CONFIG, "drkit.yaml")
    assert config.retention.rules() == DEFAULT_RETENTION
    assert DEFAULT_RETENTION == {
        "last": 4, "hourly": 24, "daily": 14, "weekly": 8, "monthly": 12, "yearly": 3,
    }  # fmt: skip


def test_a_section_applies_exactly_the_rules_it_names():
    config = parse_config(MINIMAL_CONFIG + "retention: {last: 3}\n", "drkit.yaml")
    assert config.retention.rules() == {"last": 3}
    config = parse_config(MINIMAL_CONFIG + "retention: {daily: 7, weekly: 0}\n", "drkit.yaml")
    assert config.retention.rules() == {"daily": 7}
    assert parse_config(MINIMAL_CONFIG + "retention: {}\n", "drkit.yaml").retention.rules() == {}


def test_written_config_keeps_the_section_as_named():
    # what init writes: the full default section when none was given ...
    written = yaml.safe_load(dump_config(parse_config(MINIMAL_CONFIG, "drkit.yaml")))
    assert written["retention"] == DEFAULT_RETENTION
    # ... and a named section exactly as it is, so it reads back the same
    named = parse_config(MINIMAL_CONFIG + "retention: {last: 3}\n", "drkit.yaml")
    assert yaml.safe_load(dump_config(named))["retention"] == {"last": 3}
    assert parse_config(dump_config(named), "again") == named


@pytest.fixture
def local_restic(tmp_path: Path) -> restic_engine.Restic:
    password = tmp_path / "password"
    password.write_text(secrets.token_hex(16) + "\n")
    password.chmod(0o600)
    prepare_local_repository(tmp_path / "repo", password)
    restic = restic_engine.Restic(restic_engine.find_restic(None), str(tmp_path / "repo"), password)
    data = tmp_path / "data"
    data.mkdir()
    for day in range(1, 6):
        (data / "file").write_text(str(day))
        restic._run(
            "backing up", "backup", "--host", "n1", "--tag", "drkit",
            "--time", f"2025-03-0{day} 10:00:00", str(data),
        )  # fmt: skip
    return restic


def test_forget_passes_only_the_named_rules_and_returns_restics_reasons(local_restic):
    keep = {"last": 3, "hourly": None, "daily": 0}
    (group,) = local_restic.forget(host="n1", tags=["drkit"], keep=keep, dry_run=True)
    assert len(group.keep) == 3 and len(group.remove) == 2
    assert [reason.matches for reason in group.reasons] == [["last snapshot"]] * 3


def test_forget_without_any_rule_removes_nothing(local_restic):
    # restic refuses a forget without a policy; drkit keeps every snapshot instead
    (group,) = local_restic.forget(host="n1", tags=["drkit"], keep={"last": 0}, dry_run=True)
    assert len(group.keep) == 5 and group.remove == [] and group.reasons == []
