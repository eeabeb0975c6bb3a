"""The hashing guard on every request-time hash beyond login, attacked for real.

Control proven (security/hash_guard.py, control 29): while a flood holds every hashing
slot, re-authentication, password change, password reset, email change and turning 2FA
off are refused at once (503 + Retry-After: 1 + the busy page) before any argon2 work;
the refused request changes nothing (password, session, reset link, second factor, mail),
and the same request goes through once the slots are free. Login is in test_rate_limits.py.
"""

from __future__ import annotations

import time
from http import HTTPStatus

import pytest
from flask import Flask
from flask.testing import FlaskClient

from bastion.audit import EventTag
from bastion.security import hash_guard, passwords
from tests.conftest import GOOD_PASSWORD, AuthActions, Outbox, csrf_token_from
from tests.functional.admin.state import password_hash, second_factor
from tests.mfa_support import Clock, NewMail, enrol
from tests.security.helpers import (
    audit_rows,
    cookie_value,
    mailed_reset_path,
    saturated_hash_guard,
    stored_record,
)

NEW_PASSWORD = "harbour juniper cobalt 9041"


def assert_refused_while_saturated(client: FlaskClient, path: str, data: dict[str, str]) -> None:
    """Post the form while every hashing slot is taken; it must get the guard's fast refusal."""
    before = passwords.verify_count()
    with saturated_hash_guard():
        started = time.monotonic()
        # Closed as a WSGI server would: mail sent after the answer would go out now.
        with client.post(path, data=data) as response:
            page = response.get_data(as_text=True)
        elapsed = time.monotonic() - started

    assert response.status_code == HTTPStatus.SERVICE_UNAVAILABLE
    assert response.headers["Retry-After"] == "1"
    assert hash_guard.HashBusy.description in page
    assert elapsed < 1.0  # refused after the short wait, not queued
    assert passwords.verify_count() == before


def submit(client: FlaskClient, path: str, data: dict[str, str]) -> int:
    """Post the form with the slots free; return the status once the answer is closed."""
    with client.post(path, data=data) as response:
        response.get_data()
    return response.status_code


def test_re_authentication_is_refused_and_the_session_is_not_marked_fresh(
    app: Flask, auth: AuthActions, client: FlaskClient
) -> None:
    auth.create_user()
    auth.login()
    session = cookie_value(client)
    assert session is not None
    record = stored_record(app, session)
    assert record is not None
    proved_at = record.auth_at
    form = {"password": GOOD_PASSWORD, "csrf_token": auth.csrf("/auth/reauth")}

    assert_refused_while_saturated(client, "/auth/reauth", form)

    assert cookie_value(client) == session  # a re-authentication gives the session a new id
    record = stored_record(app, session)
    assert record is not None
    assert record.auth_at == proved_at
    assert audit_rows(app, EventTag.REAUTH) == []
    assert submit(client, "/auth/reauth", form) == HTTPStatus.SEE_OTHER
    assert cookie_value(client) != session


def test_a_password_change_is_refused_and_the_old_password_stays(
    app: Flask, auth: AuthActions, client: FlaskClient, outbox: Outbox
) -> None:
    user_id = auth.create_user()
    auth.login()
    old_hash = password_hash(app, user_id)
    mail = NewMail(outbox)
    form = {
        "current_password": GOOD_PASSWORD,
        "new_password": NEW_PASSWORD,
        "new_password_confirm": NEW_PASSWORD,
        "csrf_token": auth.csrf("/account/"),
    }

    assert_refused_while_saturated(client, "/account/", form)

    assert password_hash(app, user_id) == old_hash
    assert mail.messages() == []
    assert submit(client, "/account/", form) == HTTPStatus.SEE_OTHER
    assert passwords.verify_password(password_hash(app, user_id), NEW_PASSWORD)


def test_a_reset_is_refused_and_its_link_still_works(
    app: Flask, auth: AuthActions, client: FlaskClient, outbox: Outbox
) -> None:
    user_id = auth.create_user()
    path = mailed_reset_path(client, outbox)
    old_hash = password_hash(app, user_id)
    mail = NewMail(outbox)
    form = {
        "password": NEW_PASSWORD,
        "password_confirm": NEW_PASSWORD,
        "csrf_token": csrf_token_from(client.get(path).get_data(as_text=True)),
    }

    assert_refused_while_saturated(client, path, form)

    assert password_hash(app, user_id) == old_hash
    assert mail.messages() == []
    assert audit_rows(app, EventTag.PASSWORD_RESET) == []
    # The link was not used up by the refused attempt.
    assert submit(client, path, form) == HTTPStatus.SEE_OTHER
    assert passwords.verify_password(password_hash(app, user_id), NEW_PASSWORD)


def test_a_reset_with_2fa_is_refused_and_keeps_its_recovery_code(
    app: Flask,
    auth: AuthActions,
    client: FlaskClient,
    outbox: Outbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    user_id = auth.create_user()
    auth.login()
    enrolled = enrol(client, Clock.install(monkeypatch))
    stranger = app.test_client()  # the reset runs from a browser that isn't signed in
    path = mailed_reset_path(stranger, outbox)
    form = {
        "password": NEW_PASSWORD,
        "password_confirm": NEW_PASSWORD,
        "code": enrolled.recovery_codes[0],
        "csrf_token": csrf_token_from(stranger.get(path).get_data(as_text=True)),
    }

    assert_refused_while_saturated(stranger, path, form)

    assert second_factor(app, user_id) == (True, len(enrolled.recovery_codes))
    # The recovery code was not spent: the same form resets the password once slots free up.
    assert submit(stranger, path, form) == HTTPStatus.SEE_OTHER
    assert passwords.verify_password(password_hash(app, user_id), NEW_PASSWORD)


def test_an_email_change_is_refused_and_no_link_goes_out(
    app: Flask, auth: AuthActions, client: FlaskClient, outbox: Outbox
) -> None:
    auth.create_user()
    auth.login()
    mail = NewMail(outbox)
    form = {
        "password": GOOD_PASSWORD,
        "new_email": "alice.new@example.com",
        "csrf_token": auth.csrf("/account/email"),
    }

    assert_refused_while_saturated(client, "/account/email", form)

    assert mail.messages() == []
    assert audit_rows(app, EventTag.EMAIL_CHANGE_REQUEST) == []
    assert submit(client, "/account/email", form) == HTTPStatus.SEE_OTHER
    assert mail.subjects("alice.new@example.com") == ["Confirm your new Bastion email address"]


def test_turning_2fa_off_is_refused_and_it_stays_on(
    app: Flask,
    auth: AuthActions,
    client: FlaskClient,
    outbox: Outbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    user_id = auth.create_user()
    auth.login()
    clock = Clock.install(monkeypatch)
    enrolled = enrol(client, clock)
    mail = NewMail(outbox)
    form = {
        "password": GOOD_PASSWORD,
        "code": clock.code(enrolled.secret),
        "csrf_token": auth.csrf("/account/2fa/disable"),
    }

    assert_refused_while_saturated(client, "/account/2fa/disable", form)

    assert second_factor(app, user_id) == (True, len(enrolled.recovery_codes))
    assert mail.messages() == []
    # The code was not spent either: the same form turns 2FA off once the slots are free.
    assert submit(client, "/account/2fa/disable", form) == HTTPStatus.SEE_OTHER
    assert second_factor(app, user_id) == (False, 0)
