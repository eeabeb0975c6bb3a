"""Rate limits: Flask-Limiter's per-IP default before any session work, plus named limits.

Two layers, one store:

1. The application limit (``BASTION_RATELIMIT_DEFAULT``, generous) runs in Flask-Limiter's
   ``before_request`` hook, keyed by the client IP ProxyFix trusts, before the session, the
   user or the database are touched.
2. Named limits, checked by the views with ``check(LimitName.X, *key_parts)`` as soon as the
   key is known (the IP at once, the account once the form names it) and *before* any
   password hashing (warehouse: limiters named per action and dimension):

   ==================  =============================  =========================================
   name                default                        stops
   ==================  =============================  =========================================
   ``ip.login``        20/minute per IP               one address stuffing many accounts
   ``user.login``      100/hour per account           a botnet guessing one account from many IPs
   ``ip_user.login``   5/minute per (IP, account)     one address guessing one account
   ``ip.register``     5/hour per IP                  mass sign-ups, mail bombing via register
   ``user.reset``      3/hour per account             mail bombing one inbox with reset links
   ``ip.reset``        10/hour per IP                 one address probing/bombing many inboxes
   ``user.confirm``    3/hour per account             confirmation-mail bombing
   ``ip.confirm``      10/hour per IP                 the same from one address
   ``user.email``      3/hour per account             email-change mail bombing
   ``user.mfa``        5/minute per account           guessing a 6-digit TOTP/recovery code
   ``ip.mfa``          20/minute per IP               the same across many half-logged-in users
   ``user.reauth``     5/minute per account           password guessing through /auth/reauth
   ``user.upload``     60/hour per account            filling the disk
   ``device.login``    5/day per (device, lock)       a stolen device cookie while locked out
   ``device.failure``  10/day per device              a device that keeps failing: distrusted
   ==================  =============================  =========================================

   Every value is a setting (``BASTION_RATELIMIT_<NAME>``, dots and underscores as ``_``).
   Use: ``check(LimitName.IP_RESET, client_ip())`` then, once the address is normalised,
   ``check(LimitName.USER_RESET, email)``.

Keys: ``<prefix>rl/<name>/<hmac>/...`` where the HMAC is over the key parts with a key
derived from SECRET_KEY, so an email address never appears in Redis (nor can it be
recovered from a key by hashing guesses). The moving-window strategy makes every limit
exact: with Redis the window is one sorted list updated atomically by a Lua script, so
every process on every node shares one count.

Storage down: counters live in Redis in the scale-out profile and in-process otherwise (the
production guard refuses in-process counters with more than one worker process). Storage
errors are not swallowed and there is no in-memory fallback: if Redis is down the redis
exception reaches core/errors.py and the request answers 503 - authentication limits fail
closed, never open.

A refusal raises ``RateLimited`` (a 429 with ``Retry-After``, an HTML page or JSON under
/api/). The first refusal per (limit, key) and minute writes a standalone
``security.rate_limited`` audit event; the rest are only logged, so a flood can't turn
into a flood of database writes. Rate-limit headers on successful responses stay off.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from enum import StrEnum
from http import HTTPStatus

import structlog
from flask import Flask, current_app
from limits import RateLimitItem, parse
from limits.strategies import RateLimiter
from werkzeug.exceptions import TooManyRequests
from werkzeug.wrappers import Response

from bastion.extensions import limiter
from bastion.settings import Settings

log = structlog.get_logger("bastion.rate_limit")


class LimitName(StrEnum):
    """The named limits: `<dimension>.<action>`; the table in the module docstring says why."""

    IP_LOGIN = "ip.login"
    USER_LOGIN = "user.login"
    IP_USER_LOGIN = "ip_user.login"
    IP_REGISTER = "ip.register"
    USER_RESET = "user.reset"
    IP_RESET = "ip.reset"
    USER_CONFIRM = "user.confirm"
    IP_CONFIRM = "ip.confirm"
    USER_EMAIL = "user.email"
    USER_MFA = "user.mfa"
    IP_MFA = "ip.mfa"
    USER_REAUTH = "user.reauth"
    USER_UPLOAD = "user.upload"
    DEVICE_LOGIN = "device.login"
    DEVICE_FAILURE = "device.failure"

    @property
    def setting(self) -> str:
        """The Settings field holding this limit, e.g. ``ratelimit_ip_user_login``."""
        return "ratelimit_" + self.value.replace(".", "_")


class RateLimited(TooManyRequests):
    """A named limit refused the request; answered 429 with Retry-After (seconds)."""

    def __init__(self, name: str, retry_after: int) -> None:
        super().__init__(description="Too many requests. Wait a little and try again.")
        self.limit_name = name
        self.retry_after = max(1, retry_after)


def limit_for(name: LimitName, settings: Settings | None = None) -> RateLimitItem:
    """Return the configured RateLimitItem for `name`."""
    settings = settings or current_app.extensions["bastion.settings"]
    text: str = getattr(settings, name.setting)
    return parse(text)


def _strategy() -> RateLimiter:
    return limiter.limiter


def key_for(name: LimitName, *key_parts: str) -> str:
    """Return the opaque identifier for these key parts (an HMAC, never the raw value)."""
    settings: Settings = current_app.extensions["bastion.settings"]
    secret = hashlib.sha256(b"bastion.rate-limit-key:" + settings.secret_key.encode()).digest()
    message = "\x1f".join((name.value, *key_parts)).encode("utf-8", "surrogatepass")
    return hmac.new(secret, message, hashlib.sha256).hexdigest()[:32]


def _identifiers(name: LimitName, *key_parts: str) -> tuple[str, str, str]:
    settings: Settings = current_app.extensions["bastion.settings"]
    return (settings.redis_prefix + "rl", name.value, key_for(name, *key_parts))


def check(name: LimitName, *key_parts: str) -> None:
    """Count one hit of `name` for `key_parts`; raise RateLimited when the limit is spent.

    Raises a redis error (→ 503) when the store is down: fail closed.
    """
    item = limit_for(name)
    identifiers = _identifiers(name, *key_parts)
    if not _strategy().hit(item, *identifiers):
        raise RateLimited(name.value, _retry_after(item, identifiers))


def peek(name: LimitName, *key_parts: str) -> bool:
    """Return whether one more hit of `name` for `key_parts` would be admitted (no count)."""
    return bool(_strategy().test(limit_for(name), *_identifiers(name, *key_parts)))


def hit(name: LimitName, *key_parts: str) -> bool:
    """Count one hit and return whether it was within the limit (never raises RateLimited)."""
    return bool(_strategy().hit(limit_for(name), *_identifiers(name, *key_parts)))


def clear(name: LimitName, *key_parts: str) -> None:
    """Forget the count of `name` for `key_parts` (e.g. after a successful login)."""
    _strategy().clear(limit_for(name), *_identifiers(name, *key_parts))


def _retry_after(item: RateLimitItem, identifiers: tuple[str, ...]) -> int:
    reset_at, _remaining = _strategy().get_window_stats(item, *identifiers)
    return math.ceil(reset_at - time.time())


def init_app(app: Flask, settings: Settings) -> None:
    app.config.update(
        RATELIMIT_STORAGE_URI=settings.ratelimit_storage_uri,
        RATELIMIT_STORAGE_OPTIONS={
            "socket_timeout": settings.redis_timeout_seconds,
            "socket_connect_timeout": settings.redis_timeout_seconds,
        }
        if settings.redis_url
        else {},
        RATELIMIT_STRATEGY="moving-window",
        RATELIMIT_KEY_PREFIX=settings.redis_prefix + "rl",
        RATELIMIT_APPLICATION=settings.ratelimit_default,
        # Headers on every response cost a storage round trip each; 429s still say Retry-After.
        RATELIMIT_HEADERS_ENABLED=False,
        RATELIMIT_SWALLOW_ERRORS=False,
        RATELIMIT_IN_MEMORY_FALLBACK_ENABLED=False,
    )
    limiter.init_app(app)
    app.register_error_handler(RateLimited, _handle_rate_limited)


def _handle_rate_limited(error: RateLimited) -> Response:
    from bastion.core.errors import error_response

    response = error_response(HTTPStatus.TOO_MANY_REQUESTS)
    response.headers["Retry-After"] = str(error.retry_after)
    return response


__all__ = [
    "LimitName",
    "RateLimited",
    "check",
    "clear",
    "hit",
    "init_app",
    "key_for",
    "limit_for",
    "peek",
]
