"""Device cookies (OWASP "Slow Down Online Guessing Attacks with Device Cookies").

A browser that has completed a sign-in (with 2FA on: after the second factor, never after
the password alone) carries ``__Host-device``: ``<user id>.<nonce>`` signed with
HMAC-SHA-256 (itsdangerous, salt ``bastion.device-cookie``, SECRET_KEY and its fallbacks).
It is Secure, HttpOnly, SameSite=Lax, Path=/ and lives ``BASTION_DEVICE_COOKIE_DAYS``
(default 365): it proves "this browser has signed in as this user before", nothing more -
it never signs anyone in.

What it buys (see security/lockout.py): while an account is locked for everyone else, a
*trusted* device may still try, within its own small limits:

- ``device.login``: 5 attempts per lock period per device;
- ``device.failure``: 10 failed attempts per day per device - past that the device is
  distrusted (treated as having no cookie) until the window passes or it signs in again
  (a fresh nonce is issued). A stolen cookie therefore buys a guesser at most a handful of
  tries, and never past the NIST hard lock (which no cookie bypasses).

A proven password without a valid cookie for that user is a "new device": the owner is
mailed at once (before any second factor), and the browser gets a fresh cookie once the
sign-in is complete. One browser holds one device cookie (the last user who signed in
there).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta

from flask import current_app, request
from itsdangerous import BadSignature, Signer
from werkzeug.wrappers import Response

from bastion.security import rate_limit, signing
from bastion.security.rate_limit import LimitName

DEVICE_COOKIE = "__Host-device"
_SALT = "bastion.device-cookie"
_MAX_COOKIE_LENGTH = 200


@dataclass(frozen=True)
class Device:
    """A correctly signed device cookie: whose browser it is and its random nonce."""

    user_id: int
    nonce: str

    def trusted_for(self, user_id: int) -> bool:
        """Whether this cookie vouches for `user_id` and has not been distrusted."""
        return self.user_id == user_id and rate_limit.peek(LimitName.DEVICE_FAILURE, self.nonce)

    def spend_locked_attempt(self, lock_id: str) -> bool:
        """Count one attempt during lock `lock_id`; False once the device used its share."""
        return rate_limit.hit(LimitName.DEVICE_LOGIN, self.nonce, lock_id)

    def note_failure(self) -> None:
        """Count a failed attempt from this device (too many: the device is distrusted)."""
        rate_limit.hit(LimitName.DEVICE_FAILURE, self.nonce)

    def cookie_value(self) -> str:
        """This device's cookie signed with the current key: the same user and nonce (so
        its counts carry on), valid once a rotation's fallback key is dropped."""
        return _signer().sign(f"{self.user_id}.{self.nonce}").decode("ascii")


def _signer() -> Signer:
    keys = [*current_app.config.get("SECRET_KEY_FALLBACKS", []), current_app.secret_key]
    return signing.signer(keys, _SALT)


def current_device() -> Device | None:
    """The device cookie this request carries, if correctly signed; else None."""
    raw = request.cookies.get(DEVICE_COOKIE)
    if not raw or len(raw) > _MAX_COOKIE_LENGTH:
        return None
    try:
        value = _signer().unsign(raw).decode("ascii")
    except (BadSignature, UnicodeDecodeError):
        return None
    user_part, _, nonce = value.partition(".")
    if not user_part.isdigit() or not nonce:
        return None
    return Device(int(user_part), nonce)


def new_cookie_value(user_id: int) -> str:
    """A freshly signed cookie value for `user_id` with a new 128-bit nonce."""
    return _signer().sign(f"{user_id}.{secrets.token_urlsafe(16)}").decode("ascii")


def set_device_cookie(response: Response, value: str, days: int) -> None:
    response.set_cookie(
        DEVICE_COOKIE,
        value,
        max_age=int(timedelta(days=days).total_seconds()),
        path="/",
        secure=current_app.config["SESSION_COOKIE_SECURE"],
        httponly=True,
        samesite="Lax",
    )
