"""Key escrow, recovery and rotation: a repository whose password nobody remembers is opened
again from K paper shares; rotation keeps every snapshot readable and verifiable."""

from __future__ import annotations

import itertools
import json
import secrets
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nodes import drkit, fresh_node

from drkit import errors
from drkit.engines import escrow


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=1, max_size=80).filter(lambda text: text == text.strip() and text))
def test_any_operator_password_survives_the_escrow_padding(password):
    if len(password.encode()) > 255:
        return
    secret = escrow.master_secret(password)
    assert len(secret) >= 16 and len(secret) % 2 == 0 and len(secret) != 32
    assert escrow.password_of(secret) == password


def test_generated_password_is_split_as_its_32_bytes():
    password = secrets.token_hex(32)
    assert escrow.master_secret(password) == bytes.fromhex(password)
    shares = escrow.split(password, 2, 3)
    for pair in itertools.combinations(shares, 2):
        assert escrow.combine(list(pair)) == password
    with pytest.raises(errors.Refused):
        escrow.combine(shares[:1])
    with pytest.raises(errors.UsageError):
        escrow.split(password, 1, 3)


@pytest.fixture
def escrow_node(local_s3, tmp_path):
    with fresh_node(local_s3, tmp_path, "sftp-1") as node:
        yield node


@pytest.mark.integration
def test_lost_password_is_recovered_from_k_paper_shares(escrow_node, tmp_path):
    node = escrow_node
    first = node.backup()
    holders = tmp_path / "holders"
    recipients = []
    for name in ("alice", "bob", "carol"):
        code, made = drkit("keys", "holder", "--identity", str(holders / f"{name}.key"))
        assert code == 0, made
        recipient = holders / f"{name}.recipient"
        recipient.write_text(made["recipient"] + "\n")
        recipients += ["--recipients", str(recipient)]
    shares_dir = tmp_path / "shares"
    code, escrowed = node.run("keys", "escrow", *recipients, "--threshold", "2",
                              "--out", str(shares_dir))  # fmt: skip
    assert code == 0, escrowed
    assert escrowed["holders"] == 3 and escrowed["threshold"] == 2
    password = node.repository.password_file.read_text().strip()
    for item in escrowed["files"]:
        data = Path(item["file"]).read_bytes()
        assert password.encode() not in data and data.startswith(b"age-encryption.org/")
    # two holders copy their words onto paper
    paper = []
    for item in escrowed["files"][1:]:
        code, revealed = drkit("keys", "reveal", "--share", item["file"],
                               "--identity", str(holders / f"{item['holder']}.key"))  # fmt: skip
        assert code == 0 and revealed["count"] == 33  # 256 bits in SLIP-39 words
        sheet = tmp_path / f"paper-{item['holder']}.txt"
        sheet.write_text(revealed["words"] + "\n")
        paper.append(sheet)
    # the password is gone; nobody remembers it
    node.repository.password_file.unlink()
    recovered = tmp_path / "recovered.password"
    code, document = drkit("keys", "recover", "--share", str(paper[0]), "--out", str(recovered))
    assert code == 6, document  # one share is not enough
    assert not recovered.exists()
    code, document = drkit("keys", "recover", "--share", str(paper[0]), "--share",
                           str(paper[1]), "--out", str(recovered))  # fmt: skip
    assert code == 0, document
    assert recovered.stat().st_mode & 0o777 == 0o600
    assert recovered.read_text().strip() == password
    assert password not in json.dumps(document)
    recovered.rename(node.repository.password_file)
    code, listed = node.run("snapshots")
    assert code == 0 and [s["id"] for s in listed["snapshots"]] == [first]
    # one age file plus the holder's identity works as well
    again = tmp_path / "again.password"
    code, document = drkit("keys", "recover", "--share", escrowed["files"][0]["file"],
                           "--identity", str(holders / "alice.key"), "--share", str(paper[1]),
                           "--out", str(again))  # fmt: skip
    assert code == 0 and again.read_text().strip() == password


@pytest.mark.integration
def test_rotation_keeps_every_snapshot_and_retires_the_old_keys(escrow_node):
    node = escrow_node
    first = node.backup()
    old_password = node.repository.password_file.read_text()
    code, rotated = node.run("keys", "rotate")
    assert code == 0, rotated
    assert rotated["signer"]["retired"] == node.signer
    assert node.repository.password_file.read_text() != old_password
    assert node.repository.password_file.stat().st_mode & 0o777 == 0o600
    keys_now = json.loads(node.restic("key", "list", "--json").stdout)
    assert [key["id"] for key in keys_now] == [rotated["restic_keys"]["added"]]
    old = node.workspace / "old.password"
    old.write_text(old_password)
    old.chmod(0o600)
    opened = node.restic("--password-file", str(old), "snapshots")
    assert opened.returncode == 12, "the old password no longer opens the repository"
    second = node.backup()
    code, shown = node.run("show", second)
    assert code == 0 and shown["signer"] == rotated["signer"]["new"] and shown["trusted"]
    code, verified = node.run("verify", "--spot", "3")
    assert code == 0, verified
    assert verified["snapshots"]["verified"] == 2
    code, restored = node.run("restore", first, "--target", str(node.workspace / "t"))
    assert code == 0 and restored["signer"] == node.signer
