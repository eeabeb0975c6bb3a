"""Settings: typed parsing of BASTION_* variables, *_FILE secrets and the production guards."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from bastion.settings import Environment, Registration, Settings, SettingsError

SECRET = "k" * 48
DATA_KEY = Fernet.generate_key().decode()


def env(tmp_path: Path, **values: str) -> dict[str, str]:
    """A complete, valid production environment, plus `values` (names without BASTION_)."""
    base = {
        "BASTION_INSTANCE_PATH": str(tmp_path),
        "BASTION_SECRET_KEY": SECRET,
        "BASTION_DATA_KEY": DATA_KEY,
    }
    base.update({f"BASTION_{name}": value for name, value in values.items()})
    return base


def refusal(environ: dict[str, str]) -> str:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env(environ).check()
    message = str(refused.value)
    assert "\n" not in message  # one line for the operator
    assert message
    assert message.strip() == message
    return message


# ------------------------------------------------------------------------- parsing
def test_defaults_are_production_and_safe(tmp_path: Path) -> None:
    settings = Settings.from_env(env(tmp_path))

    settings.check()
    assert settings.env is Environment.PRODUCTION
    assert settings.cookie_secure is True
    assert settings.debug is False
    assert settings.registration is Registration.OPEN
    assert settings.session_idle_minutes == 30
    assert settings.session_absolute_hours == 8
    assert settings.remember_days <= 14
    assert settings.password_min_length >= 15
    assert settings.trusted_proxies == 0
    assert settings.redis_timeout_seconds > 0
    assert settings.db_connect_timeout_seconds > 0


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", True),
        ("true", True),
        ("Yes", True),
        ("ON", True),
        (" on ", True),
        ("0", False),
        ("false", False),
        ("no", False),
        ("Off", False),
    ],
)
def test_booleans_are_parsed(tmp_path: Path, raw: str, expected: bool) -> None:
    settings = Settings.from_env(env(tmp_path, HSTS_PRELOAD=raw))

    assert settings.hsts_preload is expected


@pytest.mark.parametrize("raw", ["maybe", "2", "y3s", "truee"])
def test_a_bad_boolean_is_refused_naming_the_variable(tmp_path: Path, raw: str) -> None:
    with pytest.raises(SettingsError, match="BASTION_COOKIE_SECURE"):
        Settings.from_env(env(tmp_path, COOKIE_SECURE=raw))


def test_numbers_are_parsed(tmp_path: Path) -> None:
    settings = Settings.from_env(
        env(tmp_path, PORT="9443", SESSION_IDLE_MINUTES="15", REDIS_TIMEOUT_SECONDS="0.25")
    )

    assert settings.port == 9443
    assert settings.session_idle_minutes == 15
    assert settings.redis_timeout_seconds == 0.25


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("PORT", "eighty"),
        ("WORKERS", "1.5"),
        ("MAX_REQUEST_KB", "1e3"),
        ("REDIS_TIMEOUT_SECONDS", "fast"),
    ],
)
def test_a_bad_number_is_refused_naming_the_variable(tmp_path: Path, name: str, raw: str) -> None:
    with pytest.raises(SettingsError, match=f"BASTION_{name}"):
        Settings.from_env(env(tmp_path, **{name: raw}))


def test_an_empty_variable_means_the_default(tmp_path: Path) -> None:
    settings = Settings.from_env(env(tmp_path, SESSION_IDLE_MINUTES="", COOKIE_SECURE=""))

    assert settings == Settings.from_env(env(tmp_path))


@pytest.mark.parametrize(("name", "raw"), [("ENV", "staging"), ("REGISTRATION", "sometimes")])
def test_a_bad_choice_is_refused_listing_the_choices(tmp_path: Path, name: str, raw: str) -> None:
    with pytest.raises(SettingsError, match=f"BASTION_{name} must be one of"):
        Settings.from_env(env(tmp_path, **{name: raw}))


def test_choices_are_case_insensitive(tmp_path: Path) -> None:
    settings = Settings.from_env(env(tmp_path, ENV="Testing", REGISTRATION="CLOSED"))

    assert settings.env is Environment.TESTING
    assert settings.registration is Registration.CLOSED


def test_fallback_keys_are_a_comma_separated_list(tmp_path: Path) -> None:
    old, older = "o" * 40, "p" * 40
    settings = Settings.from_env(env(tmp_path, SECRET_KEY_FALLBACKS=f"{old},{older},"))

    assert settings.secret_key_fallbacks == (old, older)


# ------------------------------------------------------------------- *_FILE secrets
@pytest.mark.parametrize(
    ("name", "field", "value"),
    [
        ("SECRET_KEY", "secret_key", "f" * 40),
        ("DATABASE_URL", "database_url", "postgresql://db.internal:5432/bastion"),
        ("REDIS_URL", "redis_url", "rediss://cache.internal:6380/0"),
        ("SMTP_PASSWORD", "smtp_password", "smtp-password-from-a-file"),
        ("SECRET_KEY_FALLBACKS", "secret_key_fallbacks", ("g" * 40,)),
    ],
)
def test_secrets_can_come_from_a_file(
    tmp_path: Path, name: str, field: str, value: str | tuple[str, ...]
) -> None:
    secret_file = tmp_path / name.lower()
    text = ",".join(value) if isinstance(value, tuple) else value
    secret_file.write_text(text + "\n")  # the trailing newline editors add is ignored
    environ = env(tmp_path, **{f"{name}_FILE": str(secret_file)})
    if name == "SECRET_KEY":
        del environ["BASTION_SECRET_KEY"]

    settings = Settings.from_env(environ)

    assert getattr(settings, field) == value


def test_the_file_wins_over_the_variable(tmp_path: Path) -> None:
    secret_file = tmp_path / "key"
    secret_file.write_text("from-the-file-" + "z" * 40)

    settings = Settings.from_env(env(tmp_path, SECRET_KEY_FILE=str(secret_file)))

    assert settings.secret_key == "from-the-file-" + "z" * 40


def test_an_unreadable_secret_file_is_refused(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-file"

    with pytest.raises(SettingsError, match="BASTION_SECRET_KEY_FILE: cannot read"):
        Settings.from_env(env(tmp_path, SECRET_KEY_FILE=str(missing)))


def test_the_generated_instance_key_is_found(tmp_path: Path) -> None:
    (tmp_path / "secret_key").write_text("i" * 64 + "\n")
    environ = env(tmp_path)
    del environ["BASTION_SECRET_KEY"]

    settings = Settings.from_env(environ)

    assert settings.secret_key == "i" * 64


# ------------------------------------------------------------------ production guards
@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        pytest.param({"SECRET_KEY": ""}, "BASTION_SECRET_KEY is missing", id="no-key"),
        pytest.param({"SECRET_KEY": "s" * 31}, "shorter than 32 bytes", id="short-key"),
        pytest.param({"DEBUG": "1"}, "BASTION_DEBUG is on in production", id="debug"),
        pytest.param({"COOKIE_SECURE": "0"}, "BASTION_COOKIE_SECURE is off", id="insecure-cookie"),
        pytest.param({"WORKERS": "4"}, "BASTION_WORKERS > 1", id="workers-without-redis"),
        pytest.param({"PASSWORD_MIN_LENGTH": "7"}, "may not be below 8", id="weak-min-length"),
        pytest.param({"TRUSTED_PROXIES": "-1"}, "may not be negative", id="negative-proxies"),
        pytest.param({"SLOW_CLIENT_SECONDS": "0"}, "at least 1", id="no-slow-client-window"),
        pytest.param({"TRUSTED_HOSTS": "https://x.org"}, "TRUSTED_HOSTS", id="host-with-scheme"),
        pytest.param({"TRUSTED_HOSTS": "x.org:443"}, "TRUSTED_HOSTS", id="host-with-port"),
    ],
)
def test_production_refuses_unsafe_settings_with_one_line(
    tmp_path: Path, changes: dict[str, str], reason: str
) -> None:
    message = refusal(env(tmp_path, **changes))

    assert reason in message


def test_a_multibyte_key_is_measured_in_bytes(tmp_path: Path) -> None:
    Settings.from_env(env(tmp_path, SECRET_KEY="é" * 16)).check()  # 32 bytes: accepted


def test_several_workers_are_fine_with_shared_redis_counters(tmp_path: Path) -> None:
    Settings.from_env(env(tmp_path, WORKERS="4", REDIS_URL="redis://127.0.0.1:6379/0")).check()


def test_testing_mode_allows_what_production_refuses(tmp_path: Path) -> None:
    settings = Settings.from_env(
        env(tmp_path, ENV="testing", DEBUG="1", COOKIE_SECURE="0", WORKERS="4")
    )

    settings.check()
    assert settings.env is Environment.TESTING


def test_testing_mode_still_requires_a_real_key(tmp_path: Path) -> None:
    message = refusal(env(tmp_path, ENV="testing", SECRET_KEY="short"))

    assert "BASTION_SECRET_KEY" in message


def test_create_app_refuses_unsafe_production_settings(tmp_path: Path) -> None:
    from bastion import create_app

    unsafe = Settings.from_env(env(tmp_path, DEBUG="true"))

    with pytest.raises(SettingsError, match="BASTION_DEBUG"):
        create_app(unsafe)


def test_repr_never_shows_secrets() -> None:
    settings = Settings.for_tests(
        secret_key="s3cret-key-" + "k" * 32,
        smtp_password="smtp-pa55word",
        database_url="postgresql://app:db-pa55word@db/bastion",
        redis_url="redis://:redis-pa55word@cache:6379/0",
    )
    shown = repr(settings)
    for secret in ("s3cret-key-", "smtp-pa55word", "db-pa55word", "redis-pa55word"):
        assert secret not in shown
