"""Profile options: each profile's own pydantic model, reached through the registry, validated
once and naming the first bad setting; the interface takes the validated model."""

from __future__ import annotations

from pathlib import Path

import pytest

from drkit import errors, profiles
from drkit.profiles.interface import ModuleProfile


@pytest.mark.parametrize("kind", profiles.KINDS)
def test_every_kind_validates_its_options_into_its_own_model(kind: str):
    profile = profiles.get(kind)
    assert isinstance(profile, ModuleProfile)
    assert isinstance(profiles.options(kind, None), profile.options_model)
    with pytest.raises(errors.ConfigError, match=rf"^profile_options\.{kind}\.bogus: unknown"):
        profiles.options(kind, {"bogus": 1})


def test_a_malformed_setting_is_named_with_the_validators_reason():
    with pytest.raises(errors.ConfigError, match=r"sftpplus\.install_dir: must be an absolute"):
        profiles.options("sftpplus", {"install_dir": "opt/sftpplus"})
    with pytest.raises(errors.ConfigError, match=r"pureftpd\.passwd: must be an absolute node"):
        profiles.options("pureftpd", {"passwd": "pureftpd.passwd"})
    chosen = profiles.options("sftpplus", {"install_dir": "/opt//sftpplus/"})
    assert chosen.model_dump(by_alias=True)["install_dir"] == "/opt/sftpplus"


def test_another_profiles_options_are_refused_as_a_bug(tmp_path: Path):
    foreign = profiles.options("pureftpd", None)
    with pytest.raises(TypeError, match=r"must be drkit.profiles.sftpplus.policy.Options, not dr"):
        profiles.get("sftpplus").inventory(tmp_path, None, foreign)
    with pytest.raises(TypeError):
        profiles.get("sftpplus").main_config(tmp_path, foreign)


def test_an_unknown_kind_is_a_key_error():
    with pytest.raises(KeyError):
        profiles.options("ftpd", None)
