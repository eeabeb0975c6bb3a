"""Signed, expiring, single-use tokens: one table of purposes, one way to issue and consume.

Each purpose has its own salt, so a token minted for one purpose never validates for
another (ASVS 9.2.2), and its own maximum age (9.2.1). Tokens are signed with HMAC-SHA-256
and SECRET_KEY, and verified with the fallbacks too, so a key rotation doesn't void links
already mailed; a link signed with HMAC-SHA-1 before the switch verifies until its maximum
age ends it (at most 7 days, see signing.py).
Single use is enforced by recording each token's random id in `used_tokens` whose primary
key makes a concurrent second use fail.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from flask import current_app
from itsdangerous import BadData, URLSafeTimedSerializer
from sqlalchemy import String, delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from bastion.core.clock import utcnow
from bastion.core.db import Base, db
from bastion.security import signing


class TokenPurpose(StrEnum):
    CONFIRM_EMAIL = "confirm-email"
    ADMIN_SETUP = "admin-setup"
    INVITE = "invite"
    RESET_PASSWORD = "reset-password"  # noqa: S105 - a purpose name, not a password
    CHANGE_EMAIL = "change-email"
    UNLOCK = "unlock"


MAX_AGE: dict[TokenPurpose, timedelta] = {
    TokenPurpose.CONFIRM_EMAIL: timedelta(hours=48),
    TokenPurpose.ADMIN_SETUP: timedelta(hours=1),
    TokenPurpose.INVITE: timedelta(days=7),
    TokenPurpose.RESET_PASSWORD: timedelta(minutes=30),
    TokenPurpose.CHANGE_EMAIL: timedelta(hours=24),
    TokenPurpose.UNLOCK: timedelta(hours=24),
}


class InvalidToken(Exception):
    """The token is forged, expired, for another purpose, or already used."""


class UsedToken(Base):
    __tablename__ = "used_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(32))
    used_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)


def _serializer(purpose: TokenPurpose) -> URLSafeTimedSerializer:
    keys = [*current_app.config.get("SECRET_KEY_FALLBACKS", []), current_app.secret_key]
    return URLSafeTimedSerializer(
        keys, salt=f"bastion.token.{purpose.value}", **signing.SERIALIZER_OPTIONS
    )


def issue(purpose: TokenPurpose, subject: str, **claims: Any) -> str:
    """Return a signed token for `subject` carrying `claims` and a random id."""
    payload = {"sub": subject, "jti": secrets.token_hex(16), **claims}
    return str(_serializer(purpose).dumps(payload))


def verify(purpose: TokenPurpose, token: str) -> dict[str, Any]:
    """Return the token's payload, or raise InvalidToken (bad signature, age, or used)."""
    try:
        payload = _serializer(purpose).loads(token, max_age=int(MAX_AGE[purpose].total_seconds()))
    except BadData:
        raise InvalidToken from None
    if not isinstance(payload, dict) or "jti" not in payload or "sub" not in payload:
        raise InvalidToken
    if db.session.get(UsedToken, str(payload["jti"])) is not None:
        raise InvalidToken
    return payload


def consume(purpose: TokenPurpose, token: str) -> dict[str, Any]:
    """Verify the token and mark it used in the current transaction.

    The caller commits together with the change the token authorises; a concurrent second
    use hits the primary key and raises InvalidToken.
    """
    payload = verify(purpose, token)
    if not mark_used(str(payload["jti"]), purpose.value, utcnow() + MAX_AGE[purpose]):
        raise InvalidToken
    return payload


def mark_used(jti: str, purpose: str, expires_at: datetime) -> bool:
    """Record `jti` as spent in the current transaction; False if it already was.

    The primary key decides between concurrent uses, across processes and nodes: a second
    insert of the same id waits for the first transaction and fails once it commits (the
    session is then rolled back). Also for one-time things that are not signed tokens,
    such as a pending 2FA sign-in (accounts/pending_login.py).
    """
    db.session.add(UsedToken(jti=jti, purpose=purpose, used_at=utcnow(), expires_at=expires_at))
    try:
        db.session.flush()
    except IntegrityError:
        db.session.rollback()
        return False
    return True


def purge_spent(now: datetime) -> int:
    """Forget spent tokens whose own lifetime is over: they could no longer verify anyway.

    On a connection of its own, so a caller in the middle of a request never commits the
    request's unit of work with it.
    """
    with db.engine.begin() as conn:
        return int(conn.execute(delete(UsedToken).where(UsedToken.expires_at < now)).rowcount)
