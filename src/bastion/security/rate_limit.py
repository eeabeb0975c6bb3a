"""Rate limits: a per-IP default before any session work, plus named limits.

Two layers, one store (Flask-Limiter's storage and moving-window strategy):

1. The per-IP default ``ip.default`` (``BASTION_RATELIMIT_DEFAULT``, generous) is spent by
   every request but static files and views marked ``@unlimited`` (health probes), in a
   ``before_request`` hook keyed by the client IP ProxyFix trusts, before the session, the
   user or the database are touched. It is one more named limit rather than Flask-Limiter's
   application limit: Flask-Limiter resolves its limits, exemptions and blueprint scopes
   anew on every request, which measured ~150 us per request here, more than the rest of
   the hooks before the view together; the count itself is the same `limits` call. On
   Redis a process reserves a few of an address's hits at a time (rate_leases.py): one
   round trip per few pages instead of one per page, at a bounded cost to exactness.
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
   ``user.download``   600/hour per account           scraping the vault, bandwidth exhaustion
   ``user.search``     60/minute per account          full-text search as a CPU lever
   ``user.share``      60/hour per account            probing addresses through share
   ==================  =============================  =========================================

   Every value is a setting (``BASTION_RATELIMIT_<NAME>``, dots and underscores as ``_``).
   Per-IP limits of a form are declared on the view, ``@ip_limited(LimitName.IP_RESET)``:
   its unsafe requests spend them in the same before_request hook as ``ip.default``,
   still before CSRF, the session or the database. Account limits are spent where the
   address is known: ``check(LimitName.USER_RESET, normalised_email)``. Login spends
   ip.login (hook), then ip_user.login and user.login in accounts/service.py authenticate();
   a trusted device cookie skips user.login, so a botnet can't use the account's budget to
   lock its owner out (see security/lockout.py).

Every key part, IP or address, is counted whether or not an account exists, so a 429
tells nothing about accounts.

"Per IP" means per IPv4 address, or per IPv6 /64 (`core/addresses.py` `address_key`, applied
in `key_for` to every ``ip.*`` and ``ip_user.*`` limit): one subscriber usually holds a whole
/64 and could otherwise take a fresh address, and a fresh count, for every attempt.

Keys: ``LIMITS:<prefix>rl/<name>/<hmac>/...`` where the HMAC is over the key parts with a key
derived from SECRET_KEY, so an email address never appears in Redis (nor can it be
recovered from a key by hashing guesses). The moving-window strategy makes every limit
exact: with Redis the window is one sorted list updated atomically by a Lua script, so
every process on every node shares one count.

Storage down: counters live in Redis in the scale-out profile and in-process otherwise (the
production guard refuses in-process counters with more than one worker process). Storage
errors are not swallowed and there is no in-memory fallback: if Redis is down, limits'
``StorageError`` (``wrap_exceptions``) reaches the handler registered here and the request
answers 503 with Retry-After, before any hashing - authentication limits fail closed,
never open.

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
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from http import HTTPStatus
from typing import Any, TypeVar

import structlog
from flask import Flask, current_app, g, request
from limits import RateLimitItem, RateLimitItemPerMinute, parse
from limits.errors import StorageError
from limits.strategies import RateLimiter
from werkzeug.exceptions import TooManyRequests
from werkzeug.wrappers import Response

from bastion.audit import Actor, EventTag, Outcome, record_failure
from bastion.core import lanes
from bastion.core.addresses import address_key
from bastion.core.errors import error_response, handle_unavailable
from bastion.core.request_log import loggable_path
from bastion.extensions import limiter
from bastion.security import hash_guard
from bastion.security import memory_limits as _registers_bastion_memory  # noqa: F401
from bastion.security.client import client_ip
from bastion.security.rate_leases import Leases, lease_size
from bastion.settings import Settings

log = structlog.get_logger("bastion.rate_limit")
F = TypeVar("F", bound=Callable[..., Any])
_EXTENSION = "bastion.rate_limits"


class LimitName(StrEnum):
    """The named limits: `<dimension>.<action>`; the table in the module docstring says why."""

    IP_DEFAULT = "ip.default"
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
    USER_DOWNLOAD = "user.download"
    USER_SEARCH = "user.search"
    USER_SHARE = "user.share"

    @property
    def setting(self) -> str:
        """The Settings field holding this limit, e.g. ``ratelimit_ip_user_login``."""
        if self is LimitName.IP_DEFAULT:
            return "ratelimit_default"
        return "ratelimit_" + self.value.replace(".", "_")


class RateLimited(TooManyRequests):
    """A named limit refused the request; answered 429 with Retry-After (seconds)."""

    def __init__(self, name: str, retry_after: int, key: str = "") -> None:
        super().__init__(description="Too many requests. Wait a little and try again.")
        self.limit_name = name
        self.seconds = max(1, retry_after)
        self.key = key


def _settings() -> Settings:
    found: Settings = current_app.extensions["bastion.settings"]
    return found


def build_limit(name: LimitName, settings: Settings) -> RateLimitItem:
    """Return the configured RateLimitItem for `name`, namespaced under the key prefix.

    The namespace puts every key under ``LIMITS:<redis_prefix>rl/...`` so one installation's
    (or one test run's) counters can be found and flushed by prefix.
    """
    parsed = parse(getattr(settings, name.setting))
    return type(parsed)(parsed.amount, parsed.multiples, namespace=settings.redis_prefix + "rl")


@dataclass(frozen=True)
class _Limits:
    """This app's parsed limits and key secret, built once by `init_app`."""

    items: dict[LimitName, RateLimitItem]
    key_secret: bytes
    leases: Leases | None  # ip.default's reservations (security/rate_leases.py); Redis only


def _limits() -> _Limits:
    found: _Limits = current_app.extensions[_EXTENSION]
    return found


def limit_for(name: LimitName) -> RateLimitItem:
    return _limits().items[name]


def _strategy() -> RateLimiter:
    return limiter.limiter


def key_for(name: LimitName, *key_parts: str) -> str:
    """Return the opaque identifier for these key parts (an HMAC, never the raw value).

    The first part of an `ip.*` or `ip_user.*` limit is the client's address; it counts by
    `address_key` (an IPv6 client by its /64), whoever the caller is.
    """
    if name.value.startswith(("ip.", "ip_user.")) and key_parts:
        key_parts = (address_key(key_parts[0]), *key_parts[1:])
    message = "\x1f".join((name.value, *key_parts)).encode("utf-8", "surrogatepass")
    return hmac.new(_limits().key_secret, message, hashlib.sha256).hexdigest()[:32]


def check(name: LimitName, *key_parts: str) -> None:
    """Count one hit of `name` for `key_parts`; raise RateLimited when the limit is spent.

    Raises a redis error (-> 503) when the store is down: fail closed.
    """
    item = limit_for(name)
    key = key_for(name, *key_parts)
    if not _strategy().hit(item, name.value, key):
        reset_at, _remaining = _strategy().get_window_stats(item, name.value, key)
        raise RateLimited(name.value, math.ceil(reset_at - time.time()), key)


def peek(name: LimitName, *key_parts: str) -> bool:
    """Return whether one more hit of `name` for `key_parts` would be admitted (no count)."""
    return bool(_strategy().test(limit_for(name), name.value, key_for(name, *key_parts)))


def hit(name: LimitName, *key_parts: str) -> bool:
    """Count one hit and return whether it was within the limit (never raises RateLimited)."""
    return bool(_strategy().hit(limit_for(name), name.value, key_for(name, *key_parts)))


def clear(name: LimitName, *key_parts: str) -> None:
    """Forget the count of `name` for `key_parts`."""
    _strategy().clear(limit_for(name), name.value, key_for(name, *key_parts))


# ------------------------------------------------------------ IP limits before the session
def ip_limited(*names: LimitName) -> Callable[[F], F]:
    """Declare per-IP limits a view's unsafe requests (POST, ...) spend before any work.

    They are checked in a before_request hook, right after ``ip.default`` and before CSRF,
    the session or the database are touched; GET pages are not counted.
    """

    def decorate(view: F) -> F:
        setattr(view, IP_LIMITS_ATTR, (*getattr(view, IP_LIMITS_ATTR, ()), *names))
        return view

    return decorate


def unlimited(view: F) -> F:
    """Exempt a view from ``ip.default``: health probes that touch no account or data."""
    setattr(view, UNLIMITED_ATTR, True)
    return view


IP_LIMITS_ATTR = "__bastion_ip_limits__"
UNLIMITED_ATTR = "__bastion_unlimited__"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def enforce_ip_limits() -> None:
    """Spend ``ip.default``, then the view's declared IP limits; raise RateLimited when spent.

    Requests that match no route count too (a scan is a flood of 404s); static files don't.
    """
    endpoint = request.endpoint
    if endpoint == "static":
        return
    view = current_app.view_functions.get(endpoint) if endpoint else None
    if getattr(view, UNLIMITED_ATTR, False):
        return
    ip = client_ip()
    _spend_default(ip)
    if request.method in _SAFE_METHODS:
        return
    for name in getattr(view, IP_LIMITS_ATTR, ()):
        check(name, ip)


def _spend_default(ip: str) -> None:
    """Spend one hit of ``ip.default``: from this process's reservation for the address
    when it holds one, else by reserving a few more, else exactly (see rate_leases.py)."""
    leases = _limits().leases
    if leases is not None:
        key = key_for(LimitName.IP_DEFAULT, ip)
        now = time.monotonic()
        if leases.take(key, now):
            return
        item = limit_for(LimitName.IP_DEFAULT)
        if _strategy().hit(item, LimitName.IP_DEFAULT.value, key, cost=leases.size):
            leases.grant(key, leases.size - 1, now)
            return
    check(LimitName.IP_DEFAULT, ip)  # near the limit (or no leases): one exact hit


# ------------------------------------------------------------------------------ refusals
def _audit_refusal(limit: str, key: str, retry_after: int) -> None:
    """Audit the first refusal per (limit, key) and minute; log every one.

    A flood of 429s must not become a flood of database writes, so repeats within the
    minute are only logged. Audit or store trouble never turns a 429 into a 500.
    """
    log.warning("rate limited", limit=limit, retry_after=retry_after)
    settings = _settings()
    once = RateLimitItemPerMinute(1, namespace=settings.redis_prefix + "rl")
    try:
        if not _strategy().hit(once, "audit", limit, key):
            return
        record_failure(
            EventTag.RATE_LIMITED,
            Actor(ip=client_ip(), request_id=g.get("request_id")),
            outcome=Outcome.DENIED,
            target=limit,
            details={"limit": limit, "retry_after": retry_after, "path": loggable_path()},
        )
    except Exception as exc:  # the store or the database: the 429 stands, the trail logs it
        log.error("rate-limit audit failed", error_type=type(exc).__name__)


def _wait_text(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} seconds"
    return f"{math.ceil(seconds / 60)} minutes"


def _handle_rate_limited(error: RateLimited) -> Response:
    lanes.send_to_back()  # its next request waits behind everyone else's (core/lanes.py)
    _audit_refusal(error.limit_name, error.key, error.seconds)
    message = (
        "Too many requests. For your protection this action is paused; "
        f"please wait {_wait_text(error.seconds)} and try again."
    )
    response = error_response(HTTPStatus.TOO_MANY_REQUESTS, message)
    response.headers["Retry-After"] = str(error.seconds)
    return response


def _init_limiter_without_hooks(app: Flask) -> None:
    """Let Flask-Limiter build the storage and strategy, then take back its request hooks.

    Every limit here is a named one, spent by `check`; Flask-Limiter's own hooks would only
    resolve an empty set of limits (~100 us a request) and inject headers we keep off.
    """
    hooks: tuple[dict[Any, list[Any]], ...] = (
        app.before_request_funcs,
        app.after_request_funcs,
        app.teardown_request_funcs,
    )
    counts = [len(registry.get(None, [])) for registry in hooks]
    limiter.init_app(app)
    for registry, count in zip(hooks, counts, strict=True):
        added = registry[None][count:]
        if len(added) != 1:  # a new Flask-Limiter release wires itself differently
            raise RuntimeError(f"Flask-Limiter registered {len(added)} hooks, expected 1")
        del registry[None][count:]


def init_app(app: Flask, settings: Settings) -> None:
    app.config.update(
        RATELIMIT_STORAGE_URI=settings.ratelimit_storage_uri,
        # Store errors arrive as limits' StorageError (whatever the backend), answered 503.
        RATELIMIT_STORAGE_OPTIONS={
            "wrap_exceptions": True,
            "socket_timeout": settings.redis_timeout_seconds,
            "socket_connect_timeout": settings.redis_timeout_seconds,
        }
        if settings.redis_url
        else {"wrap_exceptions": True},
        RATELIMIT_STRATEGY="moving-window",
        RATELIMIT_KEY_PREFIX=settings.redis_prefix + "rl",
        # Headers on every response cost a storage round trip each; 429s still say Retry-After.
        RATELIMIT_HEADERS_ENABLED=False,
        RATELIMIT_SWALLOW_ERRORS=False,
        RATELIMIT_IN_MEMORY_FALLBACK_ENABLED=False,
    )
    _init_limiter_without_hooks(app)
    secret = hashlib.sha256(b"bastion.rate-limit-key:" + settings.secret_key.encode()).digest()
    items = {name: build_limit(name, settings) for name in LimitName}
    size = lease_size(items[LimitName.IP_DEFAULT].amount)
    leases = Leases(size) if settings.redis_url and size > 1 else None
    app.extensions[_EXTENSION] = _Limits(items=items, key_secret=secret, leases=leases)
    # The per-IP limits, before the session: ip.default, then the view's own.
    app.before_request(enforce_ip_limits)
    app.register_error_handler(RateLimited, _handle_rate_limited)
    # Fail closed: a dead store is a 503 for every limited request, never a pass.
    app.register_error_handler(StorageError, handle_unavailable)
    # The hashing guard is part of the same defence (a flood must not eat the CPU).
    hash_guard.configure(settings.hash_slots, settings.hash_wait_seconds)
    app.register_error_handler(hash_guard.HashBusy, hash_guard.handle_busy)


__all__ = [
    "LimitName",
    "RateLimited",
    "check",
    "clear",
    "enforce_ip_limits",
    "hit",
    "init_app",
    "ip_limited",
    "key_for",
    "limit_for",
    "peek",
    "unlimited",
]
