"""Lockout rules without HTTP: growing delays, the NIST hard lock, one notice per lock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask

from bastion.core.db import db
from bastion.security import lockout
from bastion.security.lockout import LockoutPolicy
from tests.conftest import AuthActions

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
POLICY = LockoutPolicy()


@pytest.mark.parametrize(
    ("failures", "minutes"),
    [(9, None), (10, 1), (11, None), (20, 5), (30, 15), (40, 60), (90, 60), (100, 60)],
)
def test_every_tenth_failure_locks_for_a_growing_delay(failures: int, minutes: int | None) -> None:
    expected = None if minutes is None else timedelta(minutes=minutes)
    assert POLICY.lock_after(failures) == expected


def test_policy_comes_from_settings(app: Flask) -> None:
    settings = app.extensions["bastion.settings"].replace(
        lockout_threshold=3, lockout_delays_minutes="2, 4", lockout_max_failures=9
    )
    policy = LockoutPolicy.from_settings(settings)
    assert (policy.threshold, policy.delays_minutes, policy.max_failures) == (3, (2, 4), 9)
    assert policy.lock_after(3) == timedelta(minutes=2)
    assert policy.lock_after(9) == timedelta(minutes=4)


def _fail(user_id: int, times: int, now: datetime = T0) -> lockout.LockState:
    state = lockout.UNLOCKED
    for _ in range(times):
        state = lockout.register_failure(user_id, POLICY, now)
        db.session.commit()  # the caller commits, with its audit event
    return state


def test_ten_failures_lock_for_one_minute_and_a_success_resets(
    app: Flask, auth: AuthActions
) -> None:
    user_id = auth.create_user()
    with app.app_context():
        ninth = _fail(user_id, 9)
        assert not ninth.is_locked(T0)
        assert not ninth.newly_locked

        tenth = lockout.register_failure(user_id, POLICY, T0)
        db.session.commit()
        assert tenth.newly_locked
        assert tenth.failures == 10
        assert tenth.is_locked(T0 + timedelta(seconds=59))
        assert not tenth.is_locked(T0 + timedelta(minutes=1, seconds=1))

        lockout.reset(user_id)
        db.session.commit()
        assert lockout.state(user_id) == lockout.UNLOCKED


def test_the_delays_grow_then_repeat(app: Flask, auth: AuthActions) -> None:
    user_id = auth.create_user()
    with app.app_context():
        durations = []
        for _ in range(6):
            state = _fail(user_id, 10)
            assert state.locked_at is not None
            assert state.locked_until is not None
            durations.append(state.locked_until - state.locked_at)
        assert durations == [timedelta(minutes=m) for m in (1, 5, 15, 60, 60, 60)]


def test_hundred_failures_disable_the_password_until_recovery(
    app: Flask, auth: AuthActions
) -> None:
    """NIST SP 800-63B-4 3.2.2: never more than 100 consecutive failures."""
    user_id = auth.create_user()
    with app.app_context():
        state = _fail(user_id, 100)
        assert state.disabled
        assert state.newly_locked
        assert state.is_locked(T0 + timedelta(days=3650))  # no time limit: until recovery

        lockout.reset(user_id)  # the unlock link, a password reset or an admin
        db.session.commit()
        assert not lockout.state(user_id).is_locked(T0)


def test_one_notification_per_lock_period(app: Flask, auth: AuthActions) -> None:
    user_id = auth.create_user()
    with app.app_context():
        assert not lockout.claim_notification(user_id, T0)  # never locked: nothing to tell
        _fail(user_id, 10, T0)
        assert lockout.claim_notification(user_id, T0)
        assert not lockout.claim_notification(user_id, T0)  # same period: once

        later = T0 + timedelta(minutes=2)
        _fail(user_id, 10, later)  # the next lock is a new period
        assert lockout.claim_notification(user_id, later)
        assert not lockout.claim_notification(user_id, later)


def test_a_deleted_account_takes_its_lock_row_along(app: Flask, auth: AuthActions) -> None:
    from bastion.accounts.models import User

    user_id = auth.create_user()
    with app.app_context():
        _fail(user_id, 3)
        db.session.delete(db.session.get(User, user_id))
        db.session.commit()
        assert db.session.get(lockout.AccountLockout, user_id) is None
