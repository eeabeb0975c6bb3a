"""Admin actions on an account's lock, second factor and password, and the list filters."""

from __future__ import annotations

import re
from datetime import timedelta
from http import HTTPStatus
from typing import Any

import pytest
from flask import Flask

from bastion.admin import service
from bastion.audit import Actor, EventTag
from bastion.core.clock import utcnow
from tests.conftest import GOOD_PASSWORD, Outbox
from tests.functional.admin.conftest import ADMIN_EMAIL, Console, events, user_row
from tests.functional.admin.state import (
    give_totp,
    lock_account,
    lock_state,
    password_hash,
    second_factor,
)

BOB = "bob@example.com"
NEW_PASSWORD = "an entirely new passphrase 42"


# ------------------------------------------------------------------------------ unlock
def test_user_page_shows_lock_and_2fa_state(app: Flask, admin: Console, auth: Any) -> None:
    bob = auth.create_user(BOB)
    page = admin.get(f"/admin/users/{bob}").get_data(as_text=True)
    assert re.search(r'id="lock-state">Not locked<', page)
    assert re.search(r'id="mfa-state">Off<', page)
    assert "Unlock account" not in page
    assert "Reset 2FA" not in page

    lock_account(app, bob)
    give_totp(app, bob, codes=4)
    page = admin.get(f"/admin/users/{bob}").get_data(as_text=True)
    assert "Locked until" in page
    assert "On (4 unused recovery codes)" in page
    assert "Unlock account" in page
    assert "Reset 2FA" in page

    lock_account(app, bob, hard=True)
    page = admin.get(f"/admin/users/{bob}").get_data(as_text=True)
    assert "Hard lock: password disabled after 100 failures" in page


@pytest.mark.parametrize("hard", [False, True], ids=["timed", "hard"])
def test_unlock_lifts_the_lock_and_is_audited(
    app: Flask, admin: Console, auth: Any, hard: bool
) -> None:
    bob = auth.create_user(BOB)
    lock_account(app, bob, hard=hard)
    # Locked: even the right password is refused.
    assert auth.login(BOB).status_code == HTTPStatus.UNAUTHORIZED
    assert admin.client.get("/").status_code == HTTPStatus.OK

    response = admin.post(f"/admin/users/{bob}/unlock")

    assert response.status_code == HTTPStatus.SEE_OTHER
    assert response.headers["Location"] == f"/admin/users/{bob}"
    assert lock_state(app, bob).failures == 0
    [event] = events(app, EventTag.ADMIN_USER_UNLOCK)
    assert event["actor"] == ADMIN_EMAIL
    assert event["target"] == BOB
    assert event["details"]["before"]["locked"] is True
    assert event["details"]["before"]["hard_lock"] is hard
    assert event["details"]["before"]["failures"] == (100 if hard else 10)
    assert event["details"]["after"] == {
        "locked": False,
        "hard_lock": False,
        "failures": 0,
        "until": None,
    }
    # The owner (who still knows the password) gets in again.
    other = app.test_client()
    from tests.conftest import AuthActions

    assert AuthActions(app, other).login(BOB).status_code == HTTPStatus.SEE_OTHER


def test_unlocking_an_unlocked_account_changes_nothing(
    app: Flask, admin: Console, auth: Any
) -> None:
    bob = auth.create_user(BOB)
    response = admin.post(f"/admin/users/{bob}/unlock")
    assert response.status_code == HTTPStatus.SEE_OTHER
    assert "Nothing changed" in admin.get(f"/admin/users/{bob}").get_data(as_text=True)
    assert events(app, EventTag.ADMIN_USER_UNLOCK) == []


# ---------------------------------------------------------------------------- reset 2FA
def test_reset_2fa_removes_the_factor_ends_sessions_and_is_audited(
    app: Flask, admin: Console, browser: Any
) -> None:
    bob_browser = browser(BOB)
    bob = user_row(app, BOB).id
    give_totp(app, bob, codes=3)

    response = admin.post(f"/admin/users/{bob}/2fa/reset")

    assert response.status_code == HTTPStatus.SEE_OTHER
    assert second_factor(app, bob) == (False, 0)
    assert not bob_browser.is_signed_in()
    [event] = events(app, EventTag.ADMIN_MFA_RESET)
    assert event["actor"] == ADMIN_EMAIL
    assert event["target"] == BOB
    assert event["details"]["before"] == {"totp": True, "recovery_codes": 3, "sessions": 1}
    assert event["details"]["after"] == {"totp": False, "recovery_codes": 0, "sessions": 0}
    assert event["details"]["must_enrol"] is False  # the tests' default: BASTION_REQUIRE_2FA=off
    assert [e["target"] for e in events(app, EventTag.MFA_DISABLE)] == [BOB]
    # Without 2FA the password alone signs in again (nothing required it here).
    assert browser(BOB, create=False).is_signed_in()


@pytest.mark.settings(require_2fa="all")
def test_after_a_2fa_reset_the_user_must_enrol_again(app: Flask, admin: Console, auth: Any) -> None:
    bob = auth.create_user(BOB)
    give_totp(app, bob)
    # The admin needs 2FA too under this rule; their session predates it, so give it now.
    give_totp(app, user_row(app, ADMIN_EMAIL).id)

    assert admin.post(f"/admin/users/{bob}/2fa/reset").status_code == HTTPStatus.SEE_OTHER

    [event] = events(app, EventTag.ADMIN_MFA_RESET)
    assert event["details"]["must_enrol"] is True
    from tests.conftest import AuthActions

    client = app.test_client()
    assert AuthActions(app, client).login(BOB).status_code == HTTPStatus.SEE_OTHER
    home = client.get("/")
    assert home.status_code in (HTTPStatus.FOUND, HTTPStatus.SEE_OTHER)
    assert home.headers["Location"].startswith("/account/2fa/setup")


def test_reset_2fa_when_off_changes_nothing(app: Flask, admin: Console, auth: Any) -> None:
    bob = auth.create_user(BOB)
    assert admin.post(f"/admin/users/{bob}/2fa/reset").status_code == HTTPStatus.SEE_OTHER
    assert events(app, EventTag.ADMIN_MFA_RESET) == []
    assert events(app, EventTag.MFA_DISABLE) == []


def test_admin_cannot_reset_their_own_2fa(app: Flask, admin: Console) -> None:
    me = user_row(app, ADMIN_EMAIL).id
    give_totp(app, me)
    response = admin.post(f"/admin/users/{me}/2fa/reset")
    assert response.status_code == HTTPStatus.CONFLICT
    assert "your account page" in response.get_data(as_text=True)
    assert second_factor(app, me) == (True, 3)
    [refused] = events(app, EventTag.ADMIN_MFA_RESET)
    assert refused["outcome"] == "failure"
    assert refused["details"]["reason"] == "self"


# ---------------------------------------------------------------- force password reset
def reset_link(outbox: Outbox, to: str) -> str:
    mail = [m for m in outbox.messages() if m["To"] == to][-1]
    body = mail.get_content()
    match = re.search(r"https://\S+/auth/reset/\S+", body)
    assert match, body
    return match.group(0)


def test_force_password_reset(app: Flask, admin: Console, browser: Any, outbox: Outbox) -> None:
    bob_browser = browser(BOB)
    bob = user_row(app, BOB).id
    old_hash = password_hash(app, bob)
    sent = len(outbox.messages())

    response = admin.post(f"/admin/users/{bob}/password/reset")

    assert response.status_code == HTTPStatus.SEE_OTHER
    # The old password is unusable, and nothing password-like was stored or shown.
    new_hash = password_hash(app, bob)
    assert new_hash != old_hash
    assert new_hash.startswith(service.UNUSABLE_HASH_PREFIX)
    assert not bob_browser.is_signed_in()
    from tests.conftest import AuthActions

    late = AuthActions(app, app.test_client())
    assert late.login(BOB).status_code == HTTPStatus.UNAUTHORIZED
    # The audit trail: before/after, and the reset request the mail stands for.
    [event] = events(app, EventTag.ADMIN_PASSWORD_RESET)
    assert event["actor"] == ADMIN_EMAIL
    assert event["target"] == BOB
    assert event["details"]["before"] == {"usable_credential": True, "sessions": 1}
    assert event["details"]["after"] == {
        "usable_credential": False,
        "sessions": 0,
        "reset_link_mailed": True,
    }
    [request] = [e for e in events(app, EventTag.PASSWORD_RESET_REQUEST) if e["target"] == BOB]
    assert request["actor"] == ADMIN_EMAIL
    # One mail, to the user; the admin's page never carries the link.
    assert len(outbox.messages()) == sent + 1
    link = reset_link(outbox, BOB)
    assert "An administrator" in outbox.messages()[-1]["Subject"]
    page = admin.get(f"/admin/users/{bob}").get_data(as_text=True)
    assert link.rsplit("/", 1)[1] not in page
    assert "/auth/reset/" not in page

    # The user chooses the new password through the link, then signs in with it.
    path = link.split("localhost", 1)[1] if "localhost" in link else "/" + link.split("/", 3)[3]
    form = late.client.get(path)
    assert form.status_code == HTTPStatus.OK
    from tests.conftest import csrf_token_from

    done = late.client.post(
        path,
        data={
            "password": NEW_PASSWORD,
            "password_confirm": NEW_PASSWORD,
            "csrf_token": csrf_token_from(form.get_data(as_text=True)),
        },
    )
    assert done.status_code == HTTPStatus.SEE_OTHER, done.get_data(as_text=True)
    assert late.login(BOB, NEW_PASSWORD).status_code == HTTPStatus.SEE_OTHER
    assert AuthActions(app, app.test_client()).login(BOB, GOOD_PASSWORD).status_code == 401


def test_an_older_reset_link_dies_with_the_forced_reset(
    app: Flask, admin: Console, auth: Any, outbox: Outbox
) -> None:
    bob = auth.create_user(BOB)
    from tests.conftest import AuthActions

    other = AuthActions(app, app.test_client())
    token = other.csrf("/auth/reset")
    with other.client.post("/auth/reset", data={"email": BOB, "csrf_token": token}) as answer:
        answer.get_data()  # closing the answer sends the mail
    old_link = reset_link(outbox, BOB)

    assert admin.post(f"/admin/users/{bob}/password/reset").status_code == HTTPStatus.SEE_OTHER

    path = "/auth/reset/" + old_link.rsplit("/", 1)[1]
    assert other.client.get(path).status_code == HTTPStatus.BAD_REQUEST


def test_force_password_reset_guard_rails(
    app: Flask, admin: Console, auth: Any, outbox: Outbox
) -> None:
    me = user_row(app, ADMIN_EMAIL).id
    sent = len(outbox.messages())
    own = admin.post(f"/admin/users/{me}/password/reset")
    assert own.status_code == HTTPStatus.CONFLICT
    assert admin.is_signed_in()
    assert not password_hash(app, me).startswith("!")

    bob = auth.create_user(BOB)
    with app.app_context():
        service.set_active(bob, False, actor=Actor.system())
    disabled = admin.post(f"/admin/users/{bob}/password/reset")
    assert disabled.status_code == HTTPStatus.CONFLICT
    assert not password_hash(app, bob).startswith("!")

    refused = events(app, EventTag.ADMIN_PASSWORD_RESET)
    assert [(e["outcome"], e["details"]["reason"]) for e in refused] == [
        ("failure", "self"),
        ("failure", "disabled"),
    ]
    assert len(outbox.messages()) == sent


# ------------------------------------------------------------ freshness, CSRF, GET
ACTIONS = ["unlock", "2fa/reset", "password/reset"]


@pytest.mark.parametrize("action", ACTIONS, ids=lambda a: a.replace("/", "-"))
def test_actions_need_csrf_a_recent_login_and_post(
    app: Flask, admin: Console, auth: Any, monkeypatch: pytest.MonkeyPatch, action: str
) -> None:
    bob = auth.create_user(BOB)
    lock_account(app, bob)
    give_totp(app, bob)
    before = password_hash(app, bob)

    def untouched() -> None:
        assert lock_state(app, bob).failures == 10
        assert second_factor(app, bob) == (True, 3)
        assert password_hash(app, bob) == before
        for tag in (EventTag.ADMIN_USER_UNLOCK, EventTag.ADMIN_MFA_RESET):
            assert events(app, tag) == []
        assert events(app, EventTag.ADMIN_PASSWORD_RESET) == []

    no_token = admin.client.post(f"/admin/users/{bob}/{action}")
    assert no_token.status_code == HTTPStatus.BAD_REQUEST
    untouched()

    got = admin.get(f"/admin/users/{bob}/{action}")
    assert got.status_code == HTTPStatus.SEE_OTHER
    assert got.headers["Location"] == f"/admin/users/{bob}"
    untouched()

    later = utcnow() + timedelta(minutes=11)
    monkeypatch.setattr("bastion.security.freshness.utcnow", lambda: later)
    stale = admin.post(f"/admin/users/{bob}/{action}")
    assert stale.status_code == HTTPStatus.SEE_OTHER
    assert stale.headers["Location"].startswith("/auth/reauth?next=")
    untouched()


# ------------------------------------------------------------------------ list filters
def test_users_list_filters_locked_and_without_2fa(app: Flask, admin: Console, auth: Any) -> None:
    locked = auth.create_user("locked@example.com")
    hard = auth.create_user("hard@example.com")
    expired = auth.create_user("expired@example.com")
    secured = auth.create_user("secured@example.com")
    lock_account(app, locked)
    lock_account(app, hard, hard=True)
    lock_account(app, expired)
    from bastion.core.db import db
    from bastion.security.lockout import AccountLockout

    with app.app_context():
        row = db.session.get(AccountLockout, expired)
        assert row is not None
        row.locked_until = utcnow() - timedelta(seconds=1)
        db.session.commit()
    for user in (locked, hard, expired):
        give_totp(app, user)
    give_totp(app, secured)

    page = admin.get("/admin/users?security=locked").get_data(as_text=True)
    assert "locked@example.com" in page
    assert "hard@example.com" in page
    assert "expired@example.com" not in page
    assert "secured@example.com" not in page

    page = admin.get("/admin/users?security=no2fa").get_data(as_text=True)
    assert ADMIN_EMAIL in page
    for email in ("locked@", "hard@", "expired@", "secured@"):
        assert email not in page

    assert admin.get("/admin/users?security=bogus").status_code == HTTPStatus.BAD_REQUEST
