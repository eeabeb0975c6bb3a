"""Account lockout without lockout-DoS.

Rules (all settings; OWASP Authentication CS "account lockout", NIST SP 800-63B-4 3.2.2):

- Failures are counted **per account**, not per IP: one row per account in
  ``account_lockouts`` holds the streak of consecutive failures since the last success. A
  wrong second factor (login 2FA step, re-authentication) is a failure too, and with 2FA on
  only the second factor makes a success (accounts/service.py). The counter is bumped with
  one atomic upsert (``INSERT ... ON CONFLICT DO UPDATE ... RETURNING``), so concurrent
  failures on several nodes never lose a count and exactly one request sees each threshold.
- Every ``BASTION_LOCKOUT_THRESHOLD`` (10) consecutive failures lock the account for the next
  of ``BASTION_LOCKOUT_DELAYS_MINUTES`` (1, 5, 15, 60, then 60 again): growing delays.
- At ``BASTION_LOCKOUT_MAX_FAILURES`` (100, NIST's upper bound) the password is *disabled*
  until recovery: the owner's unlock link (``/auth/unlock/<token>``), a password reset, or an
  admin. No device cookie gets past that.
- A success resets the streak (the row is deleted).
- While locked, a login answers exactly like a wrong password (same status and page) and
  still performs exactly one argon2 verify, so neither the answer nor its timing tells an
  attacker that the account exists or is locked. Attempts rejected because of the lock are
  not counted (they were never evaluated), so the lock isn't extended by the attacker.

Why this is no lockout-DoS lever: a browser that completed a sign-in before (every factor)
carries a signed device cookie (security/devices.py) and may keep trying while the account
is locked for everyone else (within ``device.login``/``device.failure``), and such a browser
also skips the ``user.login`` account limit. The owner gets one mail per lock period
(``notified_at`` is claimed with a conditional UPDATE, so two nodes can't both send it) with
an unlock link.

Storage: the database (the lock must outlive Redis restarts and hold across nodes). If the
database is down, the login fails with 503 like everything else: closed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ForeignKey, delete, or_, update
from sqlalchemy.orm import Mapped, mapped_column

from bastion.core.clock import utcnow
from bastion.core.db import Base, db
from bastion.settings import Settings


class AccountLockout(Base):
    """The failure streak of one account since its last successful sign-in."""

    __tablename__ = "account_lockouts"

    # A string reference: security/ never imports the accounts feature.
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    failures: Mapped[int] = mapped_column(default=0)
    locked_at: Mapped[datetime | None]
    locked_until: Mapped[datetime | None]
    disabled_at: Mapped[datetime | None]
    notified_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


@dataclass(frozen=True)
class LockoutPolicy:
    """How many failures lock, for how long, and when the password is disabled."""

    threshold: int = 10
    delays_minutes: tuple[int, ...] = (1, 5, 15, 60)
    max_failures: int = 100

    @classmethod
    def from_settings(cls, settings: Settings) -> LockoutPolicy:
        return cls(
            threshold=settings.lockout_threshold,
            delays_minutes=settings.lockout_delays,
            max_failures=settings.lockout_max_failures,
        )

    def lock_after(self, failures: int) -> timedelta | None:
        """The lock that `failures` consecutive failures start, or None."""
        if failures <= 0 or failures % self.threshold:
            return None
        index = min(failures // self.threshold, len(self.delays_minutes)) - 1
        return timedelta(minutes=self.delays_minutes[index])


@dataclass(frozen=True)
class LockState:
    """An account's lock as seen at one moment."""

    failures: int = 0
    locked_at: datetime | None = None
    locked_until: datetime | None = None
    disabled: bool = False
    newly_locked: bool = False

    def is_locked(self, now: datetime) -> bool:
        return self.disabled or (self.locked_until is not None and self.locked_until > now)

    @property
    def lock_id(self) -> str:
        """Names the current lock period (device cookies get a few tries per period)."""
        return self.locked_at.isoformat() if self.locked_at else "none"


UNLOCKED = LockState()


def state(user_id: int) -> LockState:
    """The account's current failure streak and lock."""
    row = db.session.get(AccountLockout, user_id, populate_existing=True)
    return _state_of(row) if row is not None else UNLOCKED


def _state_of(row: AccountLockout, *, newly_locked: bool = False) -> LockState:
    return LockState(
        failures=row.failures,
        locked_at=row.locked_at,
        locked_until=row.locked_until,
        disabled=row.disabled_at is not None,
        newly_locked=newly_locked,
    )


def _upsert_insert(dialect: str) -> Any:
    """The dialect's own INSERT, the one with ON CONFLICT, imported when first used.

    Importing the PostgreSQL dialect costs a worker ~2 MiB of memory; an embedded (SQLite)
    worker never needs it.
    """
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert
    from sqlalchemy.dialects import sqlite

    return sqlite.insert


def _upsert_failure(user_id: int, now: datetime) -> AccountLockout:
    """Add one failure in a single atomic statement; return the row as it now stands."""
    upsert = (
        _upsert_insert(db.session.get_bind().dialect.name)(AccountLockout)
        .values(user_id=user_id, failures=1, updated_at=now)
        .on_conflict_do_update(
            index_elements=["user_id"],
            set_={"failures": AccountLockout.failures + 1, "updated_at": now},
        )
        .returning(AccountLockout)
    )
    row: AccountLockout = db.session.scalars(
        upsert, execution_options={"populate_existing": True}
    ).one()
    return row


def register_failure(user_id: int, policy: LockoutPolicy, now: datetime | None = None) -> LockState:
    """Count one failed sign-in atomically; lock (or disable) when it completes a threshold.

    Does not commit: the caller commits it with the failure's audit event, so a failed
    login costs one transaction whether or not the account exists (timing). The returned
    state says `newly_locked` for exactly one of any concurrent failures that cross a
    threshold (the upsert serialises them on the row).
    """
    now = now or utcnow()
    row = _upsert_failure(user_id, now)
    lock = policy.lock_after(row.failures)
    # Crossing a threshold, or reaching the maximum, starts a new lock period (once: a
    # concurrent failure past the maximum doesn't start another).
    disable = row.failures == policy.max_failures
    if lock is not None or disable:
        row.locked_at = now
        row.locked_until = None if disable else now + (lock or timedelta())
        if disable:
            row.disabled_at = now
        db.session.flush()
    return _state_of(row, newly_locked=lock is not None or disable)


def claim_notification(user_id: int, now: datetime | None = None) -> bool:
    """Return True for the one caller that may mail the owner about the current lock.

    A conditional UPDATE (not yet notified for this lock period) makes it exactly once
    across processes and nodes. Commits.
    """
    now = now or utcnow()
    result = db.session.execute(
        update(AccountLockout)
        .where(
            AccountLockout.user_id == user_id,
            AccountLockout.locked_at.is_not(None),
            or_(
                AccountLockout.notified_at.is_(None),
                AccountLockout.notified_at < AccountLockout.locked_at,
            ),
        )
        .values(notified_at=now)
    )
    db.session.commit()
    return bool(getattr(result, "rowcount", 0) == 1)


def reset(user_id: int) -> None:
    """Forget the streak and any lock (a success, an unlock link, a reset, an admin).

    Does not commit: the caller commits with the change (and audit event) that justifies it.
    """
    db.session.execute(delete(AccountLockout).where(AccountLockout.user_id == user_id))
