"""vsftpd, Pure-FTPd, SFTPPlus and the rest: every corpus configuration of these servers
through drkit, end to end (the cycle is tests/corpus/cycle.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from corpus.cases import Case, load_cases
from corpus.cycle import run_cycle

pytestmark = pytest.mark.integration

CASES = [case for case in load_cases() if case.server not in ("openssh", "proftpd")]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_corpus_case_backs_up_restores_and_proves(case: Case, node_root: Path, s3_repository):
    run_cycle(case, node_root, s3_repository)
