"""drkit's policy files (policies/<name>.yaml): where they are, and one read and cached."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import yaml


def policy_dir() -> Path:
    """Return the directory of drkit's policy files.

    $DRKIT_POLICY_DIR, else the source tree's policies/, else <prefix>/share/drkit/policies
    where a wheel install puts them.
    """
    if os.environ.get("DRKIT_POLICY_DIR"):
        return Path(os.environ["DRKIT_POLICY_DIR"])
    source_tree = Path(__file__).resolve().parents[3] / "policies"
    return source_tree if source_tree.is_dir() else Path(sys.prefix) / "share/drkit/policies"


@functools.cache
def policy(name: str) -> object:
    """Return policies/<name>.yaml as YAML data, for the profile's own policy model."""
    # libyaml's safe loader where PyYAML has it: the same data in ~4 ms, not ~60 (openssh's)
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    data: object = yaml.load((policy_dir() / f"{name}.yaml").read_text(), Loader=loader)
    return data
