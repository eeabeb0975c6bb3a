"""Typed settings read once from ``BASTION_*`` environment variables.

Every secret may also come from ``BASTION_<NAME>_FILE`` (a path whose content is the
secret), so container secrets never need to sit in the environment. ``Settings.check()``
holds the production guards: the app refuses to start a configuration that would be unsafe.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

_E = TypeVar("_E", bound=StrEnum)


class Environment(StrEnum):
    PRODUCTION = "production"
    TESTING = "testing"
    DEVELOPMENT = "development"


class Registration(StrEnum):
    OPEN = "open"
    INVITE = "invite"
    CLOSED = "closed"


class Require2FA(StrEnum):
    """Whose accounts must have a second factor before they may do anything else."""

    ALL = "all"
    ADMINS = "admins"
    OFF = "off"


class SettingsError(ValueError):
    """A setting is missing, malformed or unsafe; the message is one line for the operator."""


MIN_SECRET_KEY_BYTES = 32
FERNET_KEY_BYTES = 32
DATA_KEY_FILE = "data_key"
# A fixed, public Fernet key for the test suite only; production refuses to start without one
# of its own.
TEST_DATA_KEY = "dGVzdC1kYXRhLWtleS1ub3QtZm9yLXByb2R1Y3Rpb24="
# NIST SP 800-63B-4 3.2.2: at most 100 consecutive failures before the password is disabled.
NIST_MAX_FAILURES = 100
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
# A DNS name or IPv4 address (optionally `.`-prefixed for its subdomains), or an IPv6 literal.
_HOST_NAME = re.compile(r"\.?[a-z0-9-]+(\.[a-z0-9-]+)*|[0-9a-f]*:[0-9a-f:.]+", re.ASCII)


@dataclass(frozen=True)
class Settings:
    """Everything configurable about one Bastion installation."""

    env: Environment = Environment.PRODUCTION
    instance_path: Path = field(default_factory=lambda: Path("instance").resolve())
    secret_key: str = field(default="", repr=False)
    secret_key_fallbacks: tuple[str, ...] = field(default=(), repr=False)
    database_url: str = field(default="", repr=False)
    redis_url: str | None = field(default=None, repr=False)
    redis_prefix: str = "bastion:"
    # The URL users reach us at: links in mails and the HTTP->HTTPS redirect are built
    # from it, never from the Host header (host-header injection, OWASP Forgot Password CS).
    public_url: str = "https://127.0.0.1:8443"
    # Host names the app answers for (comma-separated; `.example.org` allows its
    # subdomains too). Empty: the public URL's host, and every loopback name when that is
    # one (security/hosts.py). Any other Host header gets a 400.
    trusted_hosts: str = ""
    host: str = "127.0.0.1"
    port: int = 8443
    http_port: int = 8080
    workers: int = 1
    threads: int = 8
    # A request's client must move 500 bytes a second, measured over each this many seconds,
    # while its body is read or its answer sent (serving/slow_clients.py `ClientPace`).
    slow_client_seconds: int = 20
    trusted_proxies: int = 0
    registration: Registration = Registration.OPEN
    # Two-factor authentication: whose accounts must enrol, and the data keys (Fernet, newest
    # first; BASTION_DATA_KEY is comma-separated) that encrypt TOTP secrets at rest. They are
    # not derived from secret_key, so rotating one never breaks the other.
    require_2fa: Require2FA = Require2FA.ADMINS
    data_key: tuple[str, ...] = field(default=(), repr=False)
    password_min_length: int = 15
    session_idle_minutes: int = 30
    session_absolute_hours: int = 8
    anonymous_session_minutes: int = 60
    remember_days: int = 14
    cookie_secure: bool = True
    debug: bool = False
    hsts_preload: bool = False
    max_request_kb: int = 1024
    ratelimit_default: str = "300 per minute"
    # Named limits (security/rate_limit.py has the table and what each one stops). Each is a
    # `limits` string, e.g. BASTION_RATELIMIT_IP_LOGIN="20 per minute".
    ratelimit_ip_login: str = "20 per minute"
    ratelimit_user_login: str = "100 per hour"
    ratelimit_ip_user_login: str = "5 per minute"
    ratelimit_ip_register: str = "5 per hour"
    ratelimit_user_reset: str = "3 per hour"
    ratelimit_ip_reset: str = "10 per hour"
    ratelimit_user_confirm: str = "3 per hour"
    ratelimit_ip_confirm: str = "10 per hour"
    ratelimit_user_email: str = "3 per hour"
    ratelimit_user_mfa: str = "5 per minute"
    ratelimit_ip_mfa: str = "20 per minute"
    ratelimit_user_reauth: str = "5 per minute"
    ratelimit_user_upload: str = "60 per hour"
    ratelimit_device_login: str = "5 per day"
    ratelimit_device_failure: str = "10 per day"
    # Lockout (security/lockout.py): every `lockout_threshold` consecutive failures lock the
    # account for the next delay in BASTION_LOCKOUT_DELAYS_MINUTES (the last one repeats);
    # at `lockout_max_failures` the password is disabled until the unlock link, a reset or an
    # admin (NIST SP 800-63B-4 3.2.2: at most 100). The same number of wrong codes in a row
    # stops TOTP codes until a recovery code or an admin (accounts/mfa.py).
    lockout_threshold: int = 10
    lockout_delays_minutes: str = "1,5,15,60"
    lockout_max_failures: int = 100
    # The long-lived signed device cookie (OWASP device cookies) that lets its owner try
    # while the account is locked for everyone else.
    device_cookie_days: int = 365
    # Suspicious-activity alerts (security/alerts.py): credential stuffing (failures across
    # accounts from one IP), many IPs failing on one account, an admin signing in from a new
    # /24 (IPv6 /48), repeated CSRF/authorization denials; optional mail to the admins.
    alert_stuffing_failures: int = 20
    alert_stuffing_accounts: int = 5
    alert_stuffing_minutes: int = 10
    alert_account_ips: int = 10
    alert_account_minutes: int = 60
    alert_admin_prefix_days: int = 90
    alert_denials: int = 5
    alert_denials_minutes: int = 10
    alert_mail: bool = False
    # Concurrent argon2 computations per process (0: the CPU count) and how long a request
    # may wait for a free slot before it is refused with 503 (security/hash_guard.py).
    hash_concurrency: int = 0
    hash_wait_seconds: float = 0.1
    # The document vault (bastion/documents). BASTION_STORAGE is `filesystem` (files under
    # BASTION_UPLOAD_DIR, default <instance>/uploads) or `database` (chunked blobs in the SQL
    # database, shared by every node); documents/storage.py refuses any other value at start.
    max_upload_mb: int = 16
    upload_quota_mb: int = 1024
    storage: str = "filesystem"
    upload_dir: str = ""
    # PDF text for search is extracted in a child process with these limits (RLIMIT_AS).
    pdf_text_seconds: float = 10.0
    pdf_text_memory_mb: int = 512
    ratelimit_user_download: str = "600 per hour"
    ratelimit_user_search: str = "60 per minute"
    ratelimit_user_share: str = "60 per hour"
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_username: str | None = None
    smtp_password: str | None = field(default=None, repr=False)
    smtp_security: str = "starttls"
    smtp_timeout_seconds: float = 10.0
    mail_from: str = "Bastion <no-reply@localhost>"
    db_connect_timeout_seconds: int = 3
    redis_timeout_seconds: float = 1.0
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        # Accept plain strings for the enum fields (tests and callers pass "closed", "testing").
        object.__setattr__(self, "env", Environment(self.env))
        object.__setattr__(self, "registration", Registration(self.registration))
        object.__setattr__(self, "require_2fa", Require2FA(self.require_2fa))
        object.__setattr__(self, "data_key", tuple(self.data_key))
        object.__setattr__(self, "instance_path", Path(self.instance_path))

    # ----------------------------------------------------------------- derived values
    @property
    def sqlalchemy_url(self) -> str:
        """The database URL, defaulting to SQLite in the instance folder."""
        if self.database_url:
            url = self.database_url
            # psycopg 3 is the only PostgreSQL driver we ship.
            if url.startswith("postgresql://"):
                url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
            return url
        return f"sqlite:///{self.instance_path / 'bastion.db'}"

    @property
    def is_sqlite(self) -> bool:
        return self.sqlalchemy_url.startswith("sqlite")

    @property
    def lockout_delays(self) -> tuple[int, ...]:
        """The lock durations in minutes, one per lock of a failure streak (last repeats)."""
        return tuple(int(part) for part in self.lockout_delays_minutes.split(",") if part.strip())

    @property
    def allowed_hosts(self) -> tuple[str, ...]:
        """The host names of BASTION_TRUSTED_HOSTS, or those the public URL implies."""
        listed = tuple(_ascii_host(part) for part in self.trusted_hosts.split(",") if part.strip())
        if listed:
            return listed
        public = (urlsplit(self.public_url).hostname or "").lower()
        return LOOPBACK_NAMES if public in LOOPBACK_NAMES else (public,)

    @property
    def hash_slots(self) -> int:
        return self.hash_concurrency or os.cpu_count() or 1

    @property
    def ratelimit_storage_uri(self) -> str:
        # In-process: limits' memory store minus its timer thread (security/memory_limits.py).
        return self.redis_url or "bastion-memory://"

    # ------------------------------------------------------------------- constructors
    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and validate settings from ``BASTION_*`` variables (and ``*_FILE`` secrets)."""
        env = os.environ if environ is None else environ
        reader = _EnvReader(env)
        instance_path = Path(reader.text("INSTANCE_PATH") or "instance").resolve()
        secret_key = reader.secret("SECRET_KEY") or _read_instance_secret(instance_path)
        values: dict[str, Any] = {
            "env": reader.choice("ENV", Environment, Environment.PRODUCTION),
            "instance_path": instance_path,
            "secret_key": secret_key,
            "secret_key_fallbacks": tuple(
                key for key in (reader.secret("SECRET_KEY_FALLBACKS") or "").split(",") if key
            ),
            "database_url": reader.secret("DATABASE_URL") or "",
            "redis_url": reader.secret("REDIS_URL"),
            "registration": reader.choice("REGISTRATION", Registration, Registration.OPEN),
            "require_2fa": reader.choice("REQUIRE_2FA", Require2FA, Require2FA.ADMINS),
            "data_key": _split_keys(reader.secret("DATA_KEY"))
            or _split_keys(_read_instance_secret(instance_path, DATA_KEY_FILE)),
            "smtp_password": reader.secret("SMTP_PASSWORD"),
        }
        for spec in dataclasses.fields(cls):
            if spec.name in values:
                continue
            raw = reader.text(spec.name.upper())
            if raw is not None:
                values[spec.name] = _coerce(spec.name, raw, spec.type)
        return cls(**values)

    @classmethod
    def for_tests(cls, **overrides: Any) -> Settings:
        """Settings for the test suite: testing mode, a throwaway key, explicit overrides."""
        base: dict[str, Any] = {
            "env": Environment.TESTING,
            "secret_key": "test-secret-key-" + "x" * 32,
            "ratelimit_default": "100000 per minute",
            "require_2fa": Require2FA.OFF,
            "data_key": (TEST_DATA_KEY,),
        }
        base.update(overrides)
        return cls(**base)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def _check_data_key(self) -> None:
        """Refuse malformed data keys, a data key equal to the secret key, or none in production."""
        for key in self.data_key:
            try:
                raw = base64.urlsafe_b64decode(key.encode("ascii"))
            except (ValueError, binascii.Error):
                raw = b""
            if len(raw) != FERNET_KEY_BYTES:
                raise SettingsError(
                    "BASTION_DATA_KEY: each key must be a Fernet key (32 bytes, urlsafe base64)"
                )
            if key == self.secret_key:
                raise SettingsError("BASTION_DATA_KEY must differ from BASTION_SECRET_KEY")
        if self.env is Environment.PRODUCTION and not self.data_key:
            # Fail closed: TOTP secrets are never stored unencrypted (ASVS 11.1.x / 14.2.x).
            raise SettingsError(
                "BASTION_DATA_KEY is missing: set it (or BASTION_DATA_KEY_FILE) to a Fernet key, "
                "or let `bastion serve` create instance/data_key"
            )

    # ------------------------------------------------------------------------ guards
    def check(self) -> None:
        """Raise SettingsError with a one-line reason when this configuration is unsafe."""
        if len(self.secret_key.encode()) < MIN_SECRET_KEY_BYTES:
            raise SettingsError(
                f"BASTION_SECRET_KEY is missing or shorter than {MIN_SECRET_KEY_BYTES} bytes"
            )
        if self.password_min_length < 8:  # NIST SP 800-63B-4 floor, even with MFA
            raise SettingsError("BASTION_PASSWORD_MIN_LENGTH may not be below 8")
        if self.trusted_proxies < 0:
            raise SettingsError("BASTION_TRUSTED_PROXIES may not be negative")
        if self.slow_client_seconds < 1:
            raise SettingsError("BASTION_SLOW_CLIENT_SECONDS must be at least 1")
        self._check_hosts()
        self._check_lockout()
        self._check_data_key()
        if self.env is not Environment.PRODUCTION:
            return
        if self.debug:
            raise SettingsError("BASTION_DEBUG is on in production")
        if not self.cookie_secure:
            raise SettingsError("BASTION_COOKIE_SECURE is off in production")
        if self.workers > 1 and self.redis_url is None:
            raise SettingsError(
                "rate limits are in-process (no BASTION_REDIS_URL) but BASTION_WORKERS > 1: "
                "each process would count separately"
            )

    def _check_hosts(self) -> None:
        try:
            names = self.allowed_hosts
        except UnicodeError:
            names = ()
        if not names or not all(_HOST_NAME.fullmatch(name) for name in names):
            raise SettingsError(
                "BASTION_TRUSTED_HOSTS must list host names like bastion.example.org or "
                ".example.org, with no scheme or port (or set BASTION_PUBLIC_URL to an https URL)"
            )

    def _check_lockout(self) -> None:
        try:
            delays = self.lockout_delays
        except ValueError:
            delays = ()
        if not delays or min(delays) < 1:
            raise SettingsError("BASTION_LOCKOUT_DELAYS_MINUTES must be a list like 1,5,15,60")
        if not 1 <= self.lockout_threshold <= self.lockout_max_failures <= NIST_MAX_FAILURES:
            raise SettingsError(
                "need 1 <= BASTION_LOCKOUT_THRESHOLD <= BASTION_LOCKOUT_MAX_FAILURES <= 100 "
                "(NIST SP 800-63B-4 3.2.2)"
            )
        if self.hash_concurrency < 0 or self.hash_wait_seconds < 0:
            raise SettingsError(
                "BASTION_HASH_CONCURRENCY and BASTION_HASH_WAIT_SECONDS must be >= 0"
            )


def _ascii_host(entry: str) -> str:
    """A host name as browsers send it (IDNA, lower-case), keeping a leading dot."""
    name = entry.strip().lower()
    dot = "." if name.startswith(".") else ""
    return dot + name.removeprefix(".").encode("idna").decode("ascii")


def _split_keys(raw: str | None) -> tuple[str, ...]:
    """Comma-separated keys, newest first, blanks dropped."""
    return tuple(part.strip() for part in (raw or "").split(",") if part.strip())


def _read_instance_secret(instance_path: Path, name: str = "secret_key") -> str:
    """A key `bastion serve` generated on first run, so the CLI finds the same key."""
    key_file = instance_path / name
    return key_file.read_text().strip() if key_file.is_file() else ""


class _EnvReader:
    prefix = "BASTION_"

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ

    def text(self, name: str) -> str | None:
        value = self.environ.get(self.prefix + name)
        return value if value not in (None, "") else None

    def secret(self, name: str) -> str | None:
        """A secret from ``BASTION_<NAME>`` or the file named by ``BASTION_<NAME>_FILE``."""
        path = self.text(name + "_FILE")
        if path is not None:
            try:
                return Path(path).read_text().strip()
            except OSError as exc:
                raise SettingsError(f"{self.prefix}{name}_FILE: cannot read {path}") from exc
        return self.text(name)

    def choice(self, name: str, enum: type[_E], default: _E) -> _E:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            return enum(raw.lower())
        except ValueError:
            allowed = "|".join(member.value for member in enum)
            raise SettingsError(f"{self.prefix}{name} must be one of {allowed}") from None


def _coerce(name: str, raw: str, annotation: object) -> object:
    kind = str(annotation)
    try:
        if kind == "bool":
            lowered = raw.strip().lower()
            if lowered not in {"1", "0", "true", "false", "yes", "no", "on", "off"}:
                raise ValueError(raw)
            return lowered in {"1", "true", "yes", "on"}
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError:
        raise SettingsError(f"BASTION_{name.upper()} is not a valid {kind}: {raw!r}") from None
    return raw
