"""Set up account state directly (a lock, 2FA, an alert) for the admin console's tests."""

from __future__ import annotations

import hashlib
import json
import secrets
from datetime import timedelta
from typing import Any

import pyotp
from flask import Flask
from sqlalchemy import func, select

from bastion.accounts.models import RecoveryCode, TotpCredential, User
from bastion.audit import Actor, EventTag, Outcome
from bastion.audit.models import AuditEvent
from bastion.audit.service import build_event
from bastion.core.clock import utcnow
from bastion.core.db import db
from bastion.security import crypto, lockout
from bastion.security.alerts import AlertAck


def lock_account(app: Flask, user_id: int, *, hard: bool = False, failures: int = 10) -> None:
    """Give the account a current lock (five more minutes), or the hard lock."""
    now = utcnow()
    with app.app_context():
        db.session.merge(
            lockout.AccountLockout(
                user_id=user_id,
                failures=100 if hard else failures,
                locked_at=now,
                locked_until=None if hard else now + timedelta(minutes=5),
                disabled_at=now if hard else None,
                updated_at=now,
            )
        )
        db.session.commit()


def lock_state(app: Flask, user_id: int) -> lockout.LockState:
    with app.app_context():
        return lockout.state(user_id)


def give_totp(app: Flask, user_id: int, codes: int = 3) -> str:
    """Turn TOTP on for the user (with `codes` unused recovery codes); return the seed."""
    seed = pyotp.random_base32(length=32)
    with app.app_context():
        db.session.add(
            TotpCredential(
                user_id=user_id,
                secret=crypto.encrypt(seed, context=f"totp:{user_id}"),
                last_step=0,
                enabled_at=utcnow(),
            )
        )
        for _ in range(codes):
            digest = hashlib.sha256(secrets.token_bytes(16)).hexdigest()
            db.session.add(RecoveryCode(user_id=user_id, code_hash=digest))
        db.session.commit()
    return seed


def second_factor(app: Flask, user_id: int) -> tuple[bool, int]:
    """Whether the user has TOTP, and how many recovery codes are stored."""
    with app.app_context():
        totp = db.session.get(TotpCredential, user_id) is not None
        codes = db.session.scalar(
            select(func.count()).select_from(RecoveryCode).where(RecoveryCode.user_id == user_id)
        )
        return totp, int(codes or 0)


def password_hash(app: Flask, user_id: int) -> str:
    with app.app_context():
        user = db.session.get(User, user_id)
        assert user is not None
        return user.password_hash


def raise_alert(
    app: Flask, kind: str = "credential_stuffing", subject: str = "203.0.113.9", **facts: Any
) -> int:
    """Record an alert event as the detector would; return its id."""
    details = {"kind": kind, "severity": "high", "subject": subject, **facts}
    with app.app_context():
        row = build_event(
            EventTag.ALERT,
            Actor(ip=subject if kind == "credential_stuffing" else None),
            outcome=Outcome.FAILURE,
            target=f"{kind}:{subject}",
            details=details,
        )
        db.session.add(row)
        db.session.commit()
        return row.id


def alerts(app: Flask, kind: str | None = None) -> list[dict[str, Any]]:
    """The alert events (oldest first) with details parsed, and whether each is acknowledged."""
    with app.app_context():
        rows = db.session.scalars(
            select(AuditEvent)
            .where(AuditEvent.event == EventTag.ALERT.value)
            .order_by(AuditEvent.id)
        )
        found = []
        for row in rows:
            details = json.loads(row.details)
            if kind is None or details.get("kind") == kind:
                found.append(
                    {
                        "id": row.id,
                        "target": row.target,
                        "ip": row.ip,
                        "details": details,
                        "acknowledged": db.session.get(AlertAck, row.id) is not None,
                    }
                )
        return found
