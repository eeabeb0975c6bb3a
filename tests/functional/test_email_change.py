"""Email change: password + recent sign-in, a link to the NEW address, the OLD one told."""

from __future__ import annotations

from datetime import timedelta
from http import HTTPStatus

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from bastion.accounts.models import User
from bastion.core.clock import utcnow
from bastion.core.db import db
from tests.conftest import GOOD_PASSWORD, AuthActions, Outbox, csrf_token_from
from tests.mfa_support import NewMail

PUBLIC = "https://127.0.0.1:8443"


def ask_to_change(
    client: FlaskClient, new_email: str, password: str = GOOD_PASSWORD
) -> TestResponse:
    token = csrf_token_from(client.get("/account/email").get_data(as_text=True))
    data = {"password": password, "new_email": new_email, "csrf_token": token}
    with client.post("/account/email", data=data) as response:
        response.get_data()
    return response


def confirm(client: FlaskClient, path: str) -> TestResponse:
    token = csrf_token_from(client.get("/account/").get_data(as_text=True))
    return client.post(path, data={"csrf_token": token})


def email_of(app: Flask, user_id: int) -> str:
    with app.app_context():
        user = db.session.get(User, user_id)
        assert user is not None
        return user.email


def test_change_email_end_to_end(
    app: Flask, auth: AuthActions, client: FlaskClient, outbox: Outbox
) -> None:
    user_id = auth.create_user()
    auth.login()
    mail = NewMail(outbox)
    asked = ask_to_change(client, "Alice.New@Example.com")
    assert asked.status_code == HTTPStatus.SEE_OTHER
    assert email_of(app, user_id) == "alice@example.com"  # nothing changes before the link
    [sent] = mail.to("alice.new@example.com")
    assert sent["Subject"] == "Confirm your new Bastion email address"
    path = outbox.last_link("alice.new@example.com").removeprefix(PUBLIC)

    page = client.get(path)
    assert page.status_code == HTTPStatus.OK
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert "alice.new@example.com" in page.get_data(as_text=True)
    done = confirm(client, path)

    assert done.status_code == HTTPStatus.SEE_OTHER
    assert email_of(app, user_id) == "alice.new@example.com"
    assert mail.subjects("alice@example.com") == ["Your Bastion email address was changed"]
    assert "alice.new@example.com" in mail.to("alice@example.com")[0].get_content()
    auth.logout()
    assert auth.login("alice@example.com").status_code == HTTPStatus.UNAUTHORIZED
    assert auth.login("alice.new@example.com").status_code == HTTPStatus.SEE_OTHER


def test_the_link_works_once(
    app: Flask, auth: AuthActions, client: FlaskClient, outbox: Outbox
) -> None:
    auth.create_user()
    auth.login()
    ask_to_change(client, "new@example.com")
    path = outbox.last_link("new@example.com").removeprefix(PUBLIC)
    assert confirm(client, path).status_code == HTTPStatus.SEE_OTHER
    assert confirm(client, path).status_code == HTTPStatus.BAD_REQUEST


def test_a_wrong_password_sends_nothing(
    auth: AuthActions, client: FlaskClient, outbox: Outbox
) -> None:
    auth.create_user()
    auth.login()
    mail = NewMail(outbox)
    response = ask_to_change(client, "new@example.com", password="not my password at all")
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert mail.messages() == []


def test_the_page_needs_a_recent_sign_in(
    auth: AuthActions, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth.create_user()
    auth.login()
    later = utcnow() + timedelta(minutes=11)
    monkeypatch.setattr("bastion.security.freshness.utcnow", lambda: later)
    response = client.get("/account/email")
    assert response.status_code == HTTPStatus.SEE_OTHER
    assert response.headers["Location"] == "/auth/reauth?next=/account/email"


def test_another_users_link_does_nothing(
    app: Flask, auth: AuthActions, client: FlaskClient, outbox: Outbox
) -> None:
    alice = auth.create_user()
    bob = auth.create_user("bob@example.com", name="Bob Example")
    auth.login()
    ask_to_change(client, "alice2@example.com")
    path = outbox.last_link("alice2@example.com").removeprefix(PUBLIC)
    auth.logout()

    auth.login("bob@example.com")
    assert client.get(path).status_code == HTTPStatus.BAD_REQUEST
    assert confirm(client, path).status_code == HTTPStatus.BAD_REQUEST
    assert email_of(app, bob) == "bob@example.com"
    assert email_of(app, alice) == "alice@example.com"
    auth.logout()
    # ... and the link still works for its owner: Bob's attempt didn't spend it.
    auth.login()
    assert confirm(client, path).status_code == HTTPStatus.SEE_OTHER
    assert email_of(app, alice) == "alice2@example.com"


def test_the_link_needs_a_signed_in_owner(
    auth: AuthActions, client: FlaskClient, outbox: Outbox
) -> None:
    auth.create_user()
    auth.login()
    ask_to_change(client, "new@example.com")
    path = outbox.last_link("new@example.com").removeprefix(PUBLIC)
    auth.logout()
    response = client.get(path)
    assert response.status_code == HTTPStatus.FOUND
    assert response.headers["Location"].startswith("/auth/login?next=")


def test_an_address_in_use_gets_a_notice_not_a_link(
    app: Flask, auth: AuthActions, client: FlaskClient, outbox: Outbox
) -> None:
    alice = auth.create_user()
    auth.create_user("bob@example.com", name="Bob Example")
    auth.login()
    mail = NewMail(outbox)
    free = ask_to_change(client, "free@example.com")
    taken = ask_to_change(client, "BOB@example.com")
    assert free.status_code == taken.status_code == HTTPStatus.SEE_OTHER
    assert free.headers["Location"] == taken.headers["Location"]
    [notice] = mail.to("bob@example.com")
    assert "https://" not in notice.get_content()
    assert email_of(app, alice) == "alice@example.com"


def test_uniqueness_is_checked_again_when_the_link_is_used(
    app: Flask, auth: AuthActions, client: FlaskClient, outbox: Outbox
) -> None:
    alice = auth.create_user()
    auth.login()
    ask_to_change(client, "contested@example.com")
    path = outbox.last_link("contested@example.com").removeprefix(PUBLIC)
    auth.create_user("contested@example.com", name="Early Bird")
    assert confirm(client, path).status_code == HTTPStatus.BAD_REQUEST
    assert email_of(app, alice) == "alice@example.com"


def test_a_link_for_an_address_since_changed_is_void(
    app: Flask, auth: AuthActions, client: FlaskClient, outbox: Outbox
) -> None:
    alice = auth.create_user()
    auth.login()
    ask_to_change(client, "first@example.com")
    first = outbox.last_link("first@example.com").removeprefix(PUBLIC)
    ask_to_change(client, "second@example.com")
    second = outbox.last_link("second@example.com").removeprefix(PUBLIC)
    assert confirm(client, second).status_code == HTTPStatus.SEE_OTHER
    assert confirm(client, first).status_code == HTTPStatus.BAD_REQUEST
    assert email_of(app, alice) == "second@example.com"


def test_the_email_forms_need_a_csrf_token(
    app: Flask, auth: AuthActions, client: FlaskClient, outbox: Outbox
) -> None:
    alice = auth.create_user()
    auth.login()
    mail = NewMail(outbox)
    forged = client.post(
        "/account/email", data={"password": GOOD_PASSWORD, "new_email": "evil@example.com"}
    )
    assert forged.status_code == HTTPStatus.BAD_REQUEST
    assert mail.messages() == []
    ask_to_change(client, "new@example.com")
    path = outbox.last_link("new@example.com").removeprefix(PUBLIC)
    assert client.post(path).status_code == HTTPStatus.BAD_REQUEST
    assert email_of(app, alice) == "alice@example.com"


@pytest.mark.settings(ratelimit_user_email="2 per hour")
def test_change_requests_are_limited(
    auth: AuthActions, client: FlaskClient, outbox: Outbox
) -> None:
    auth.create_user()
    auth.login()
    assert ask_to_change(client, "a1@example.com").status_code == HTTPStatus.SEE_OTHER
    assert ask_to_change(client, "a2@example.com").status_code == HTTPStatus.SEE_OTHER
    assert ask_to_change(client, "a3@example.com").status_code == HTTPStatus.TOO_MANY_REQUESTS
