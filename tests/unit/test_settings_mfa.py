"""Settings for 2FA: BASTION_DATA_KEY (+ _FILE, instance/data_key) and BASTION_REQUIRE_2FA."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from bastion.settings import Require2FA, Settings, SettingsError

SECRET = "s" * 48


def production(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"BASTION_INSTANCE_PATH": str(tmp_path), "BASTION_SECRET_KEY": SECRET, **extra}


def test_production_refuses_to_start_without_a_data_key(tmp_path: Path) -> None:
    settings = Settings.from_env(production(tmp_path))
    with pytest.raises(SettingsError, match="BASTION_DATA_KEY is missing"):
        settings.check()


def test_the_data_key_comes_from_the_environment_newest_first(tmp_path: Path) -> None:
    new, old = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings = Settings.from_env(production(tmp_path, BASTION_DATA_KEY=f"{new}, {old}"))
    settings.check()
    assert settings.data_key == (new, old)


def test_the_data_key_can_come_from_a_file(tmp_path: Path) -> None:
    key = Fernet.generate_key().decode()
    secret_file = tmp_path / "dk"
    secret_file.write_text(key + "\n")
    settings = Settings.from_env(production(tmp_path, BASTION_DATA_KEY_FILE=str(secret_file)))
    assert settings.data_key == (key,)


def test_serve_s_instance_data_key_is_found(tmp_path: Path) -> None:
    key = Fernet.generate_key().decode()
    (tmp_path / "data_key").write_text(key + "\n")
    assert Settings.from_env(production(tmp_path)).data_key == (key,)


@pytest.mark.parametrize("bad", ["not-a-key", "c2hvcnQ=", SECRET])
def test_malformed_data_keys_are_refused(tmp_path: Path, bad: str) -> None:
    settings = Settings.from_env(production(tmp_path, BASTION_DATA_KEY=bad))
    with pytest.raises(SettingsError, match="BASTION_DATA_KEY"):
        settings.check()


def test_the_data_key_may_not_be_the_secret_key(tmp_path: Path) -> None:
    key = Fernet.generate_key().decode()
    settings = Settings.for_tests(secret_key=key, data_key=(key,))
    with pytest.raises(SettingsError, match="must differ"):
        settings.check()


def test_require_2fa_defaults_to_admins_in_production_and_off_in_tests(tmp_path: Path) -> None:
    assert Settings.from_env(production(tmp_path)).require_2fa is Require2FA.ADMINS
    assert Settings.for_tests().require_2fa is Require2FA.OFF
    env = production(tmp_path, BASTION_REQUIRE_2FA="ALL")
    assert Settings.from_env(env).require_2fa is Require2FA.ALL
    with pytest.raises(SettingsError, match=r"all\|admins\|off"):
        Settings.from_env(production(tmp_path, BASTION_REQUIRE_2FA="sometimes"))
