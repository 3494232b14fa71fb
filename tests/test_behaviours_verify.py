"""Documented verify behaviour: a damaged pack in the bucket is found (exit 1, named)."""

from __future__ import annotations

import boto3
import pytest
from nodes import Node

pytestmark = pytest.mark.integration


def damage_a_pack(node: Node) -> str:
    """Flip one byte in the middle of the largest pack (a new version of its object, as bit
    rot or a faulty S3 gateway would serve it); return the pack's id."""
    repository = node.repository
    client = boto3.client("s3", endpoint_url=repository.s3_endpoint, region_name=repository.region)
    listed = client.list_objects_v2(Bucket=repository.bucket, Prefix=f"{repository.prefix}/data/")
    largest = max(listed["Contents"], key=lambda entry: entry["Size"])
    body = bytearray(client.get_object(Bucket=repository.bucket, Key=largest["Key"])["Body"].read())
    body[len(body) // 2] ^= 0xFF
    client.put_object(Bucket=repository.bucket, Key=largest["Key"], Body=bytes(body))
    return largest["Key"].rsplit("/", 1)[-1]


def test_verify_finds_a_damaged_pack_and_names_it(node: Node):
    node.backup()
    code, clean = node.run("verify", "--read-data-subset", "100%", "--spot", "0")
    assert code == 0 and clean["check"]["ok"] is True, clean
    pack = damage_a_pack(node)

    code, verified = node.run("verify", "--read-data-subset", "100%", "--spot", "0")
    assert code == 1, verified
    assert verified["ok"] is False and verified["check"]["ok"] is False, verified
    assert any(f"damaged pack {pack}" in line for line in verified["problems"]), verified
    assert pack[:8] in " ".join(verified["check"]["problems"]), verified["check"]
    code, state = node.run("status")
    assert state["nodes"][0]["last_verify"]["ok"] is False
