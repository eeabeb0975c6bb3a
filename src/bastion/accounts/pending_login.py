"""The half-way state between a proven password and a proven second factor.

It lives only in the server-side session (never in a cookie or a URL), so it is bound to
the browser that proved the password: another session's cookie finds nothing. It holds no
signed-in identity (Flask-Login's user id is not set), so every page but the 2FA step still
treats the visitor as anonymous. It expires after `LIFETIME`, allows `MAX_ATTEMPTS` wrong
codes, and carries a random nonce that the 2FA form must echo, so a form from an earlier
attempt cannot complete a later one.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import session

from bastion.core.clock import utcnow
from bastion.core.db import db
from bastion.security import sessions, tokens

KEY = "_mfa_pending"
LIFETIME = timedelta(minutes=5)
MAX_ATTEMPTS = 5
CLAIM_PURPOSE = "mfa-login"  # `used_tokens.purpose` of a completed pending login


@dataclass(frozen=True)
class PendingLogin:
    user_id: int
    remember: bool
    expires: float  # Unix time
    nonce: str
    attempts: int
    target: str

    def nonce_matches(self, candidate: str | None) -> bool:
        return hmac.compare_digest(self.nonce.encode(), (candidate or "").encode())


def begin(user_id: int, *, remember: bool, target: str) -> PendingLogin:
    """Store a fresh pending login in this session and give the session a new id."""
    pending = PendingLogin(
        user_id=user_id,
        remember=remember,
        expires=(utcnow() + LIFETIME).timestamp(),
        nonce=secrets.token_urlsafe(24),
        attempts=0,
        target=target,
    )
    session[KEY] = asdict(pending)
    # The password step is a privilege change: no pre-login id carries over (ASVS 7.2.4).
    sessions.rotate_session_id()
    return pending


def _parse(raw: Any) -> PendingLogin | None:
    if not isinstance(raw, dict):
        return None
    try:
        pending = PendingLogin(
            user_id=int(raw["user_id"]),
            remember=bool(raw["remember"]),
            expires=float(raw["expires"]),
            nonce=str(raw["nonce"]),
            attempts=int(raw["attempts"]),
            target=str(raw["target"]),
        )
    except (KeyError, TypeError, ValueError):
        return None
    return pending


def current() -> PendingLogin | None:
    """Return this session's pending login if it is still good; drop it otherwise."""
    if KEY not in session:
        return None
    pending = _parse(session.get(KEY))
    expired = pending is None or pending.expires <= utcnow().timestamp()
    if pending is None or expired or pending.attempts >= MAX_ATTEMPTS:
        clear()
        return None
    return pending


def claim(pending: PendingLogin) -> bool:
    """Spend this pending login for good; False if a concurrent request already did.

    One password step must give at most one signed-in session. Its tabs (or a thief holding
    a copy of the cookie) can send several good codes at once, each request reading the
    same pending state before any of them signs in; the session store can't arbitrate that
    across nodes. The nonce's digest goes into `used_tokens`, whose primary key lets one
    request through; committed here, before the session is signed in.
    """
    digest = hashlib.sha256(pending.nonce.encode()).hexdigest()
    expires_at = datetime.fromtimestamp(pending.expires, UTC)
    if not tokens.mark_used(digest, CLAIM_PURPOSE, expires_at):
        return False
    db.session.commit()
    return True


def record_wrong_code(pending: PendingLogin) -> PendingLogin | None:
    """Count a wrong code; return the updated state, or None once attempts are spent."""
    updated = replace(pending, attempts=pending.attempts + 1)
    if updated.attempts >= MAX_ATTEMPTS:
        clear()
        return None
    session[KEY] = asdict(updated)
    return updated


def clear() -> None:
    session.pop(KEY, None)
