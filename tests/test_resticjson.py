"""restic's JSON messages read as restic writes them: omitted and null fields, unknown fields
and message types."""

from __future__ import annotations

import pytest

from drkit import errors
from drkit.engines import resticjson


def test_a_forget_group_with_null_lists_and_unknown_fields_reads_as_empty():
    text = (
        '[{"tags":null,"host":"n1","paths":["/x"],"keep":[{"time":"2025-03-01T10:00:00Z",'
        '"id":"ab12","hostname":"n1","program_version":"restic 0.18.0"}],"remove":null,'
        '"reasons":[{"snapshot":{"time":"2025-03-01T10:00:00Z","id":"ab12"},'
        '"matches":["last snapshot"],"counters":{"last":2}}]}]'
    )
    (group,) = resticjson.parsed(resticjson.FORGET_GROUPS, text, "forgetting") or []
    assert group.tags == [] and group.remove == []
    assert group.keep[0].short == "ab12" and group.keep[0].tags == []
    assert group.reasons[0].matches == ["last snapshot"]


def test_output_that_is_not_the_expected_json_is_restics_failure():
    with pytest.raises(errors.ResticFailed, match="cannot parse while listing keys"):
        resticjson.parsed(resticjson.KEYS, '{"not": "a list"}', "listing keys")
    assert resticjson.parsed(resticjson.SNAPSHOTS, "null", "listing") is None


def test_backup_lines_of_unknown_types_or_not_json_are_skipped():
    assert resticjson.backup_line('{"message_type":"new_in_0.20","x":1}') is None
    assert resticjson.backup_line("not json") is None
    status = resticjson.backup_line('{"message_type":"status","total_bytes":10,"extra":true}')
    assert isinstance(status, resticjson.BackupStatus) and status.bytes_done == 0
    summary = resticjson.backup_line('{"message_type":"summary","snapshot_id":"ab","files_new":2}')
    assert isinstance(summary, resticjson.BackupSummaryMessage) and summary.files_new == 2


def test_the_error_line_names_the_cause_from_json_or_plain_stderr():
    stderr = (
        "Fatal: repository is locked\n"
        '{"message_type":"exit_error","code":11,"message":"locked\\nmore"}'
    )
    assert resticjson.error_line(stderr) == "locked"
    assert resticjson.error_line("Fatal: wrong password\nUsage: restic") == "Fatal: wrong password"
    assert resticjson.error_line("") == "no message"
