"""Whole account flows through the test client: register, confirm, sign in and out."""

from __future__ import annotations

from http import HTTPStatus

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from bastion.accounts.models import User
from bastion.core.db import db
from tests.conftest import GOOD_PASSWORD, AuthActions, Outbox, csrf_token_from


def count_users(app: Flask) -> int:
    with app.app_context():
        return int(db.session.scalar(select(func.count()).select_from(User)) or 0)


def test_register_confirm_login_logout(
    app: Flask, client: FlaskClient, auth: AuthActions, outbox: Outbox
) -> None:
    response = auth.register()
    assert response.status_code == HTTPStatus.SEE_OTHER
    assert response.headers["Location"] == "/auth/check-email"

    # Not confirmed yet: sign-in is refused.
    assert auth.login("bob@example.com").status_code == HTTPStatus.UNAUTHORIZED

    link = outbox.last_link("bob@example.com")
    path = link.removeprefix("https://127.0.0.1:8443")
    page = client.get(path)
    assert page.status_code == HTTPStatus.OK
    assert page.headers["Referrer-Policy"] == "no-referrer"
    confirmed = client.post(path, data={"csrf_token": csrf_token_from(page.get_data(as_text=True))})
    assert confirmed.status_code == HTTPStatus.SEE_OTHER

    signed_in = auth.login("bob@example.com")
    assert signed_in.status_code == HTTPStatus.SEE_OTHER
    assert signed_in.headers["Location"] == "/"
    home = client.get("/")
    assert home.status_code == HTTPStatus.OK
    assert "Welcome, Bob Example" in home.get_data(as_text=True)

    out = auth.logout()
    assert out.status_code == HTTPStatus.SEE_OTHER
    assert client.get("/").status_code == HTTPStatus.FOUND


def test_confirmation_link_works_once(
    client: FlaskClient, auth: AuthActions, outbox: Outbox
) -> None:
    auth.register()
    path = outbox.last_link().removeprefix("https://127.0.0.1:8443")
    token = csrf_token_from(client.get(path).get_data(as_text=True))
    assert client.post(path, data={"csrf_token": token}).status_code == HTTPStatus.SEE_OTHER
    again = client.post(path, data={"csrf_token": auth.csrf()})
    assert again.status_code == HTTPStatus.BAD_REQUEST
    assert client.get(path).status_code == HTTPStatus.BAD_REQUEST


def test_duplicate_registration_answers_the_same_and_writes_nothing(
    app: Flask, auth: AuthActions, outbox: Outbox
) -> None:
    auth.create_user("alice@example.com")
    before = count_users(app)

    new = auth.register(email="carol@example.com", name="Carol Example")
    duplicate = auth.register(email="ALICE@example.com", name="Someone Else")

    assert new.status_code == duplicate.status_code == HTTPStatus.SEE_OTHER
    assert new.headers["Location"] == duplicate.headers["Location"]
    assert count_users(app) == before + 1  # only carol's row
    subjects = {m["To"]: m["Subject"] for m in outbox.messages()}
    assert subjects["alice@example.com"] == "Someone tried to register with your address"
    assert subjects["carol@example.com"] == "Confirm your Bastion account"


def test_password_change_needs_the_current_password(auth: AuthActions, client: FlaskClient) -> None:
    auth.create_user()
    auth.login()
    token = auth.csrf("/account/")
    wrong = client.post(
        "/account/",
        data={
            "current_password": "not my password at all",
            "new_password": "a completely new passphrase",
            "new_password_confirm": "a completely new passphrase",
            "csrf_token": token,
        },
    )
    assert wrong.status_code == HTTPStatus.BAD_REQUEST
    right = client.post(
        "/account/",
        data={
            "current_password": GOOD_PASSWORD,
            "new_password": "a completely new passphrase",
            "new_password_confirm": "a completely new passphrase",
            "csrf_token": auth.csrf("/account/"),
        },
    )
    assert right.status_code == HTTPStatus.SEE_OTHER
    auth.logout()
    assert auth.login(password=GOOD_PASSWORD).status_code == HTTPStatus.UNAUTHORIZED
    assert auth.login(password="a completely new passphrase").status_code == HTTPStatus.SEE_OTHER


def test_navigation_shows_admin_only_to_those_with_the_console_permission(
    auth: AuthActions, client: FlaskClient
) -> None:
    auth.create_user("user@example.com")
    auth.create_user("boss@example.com", role="admin", name="Boss Example")
    auth.login("user@example.com")
    page = client.get("/").get_data(as_text=True)
    assert 'href="/documents/"' in page
    assert 'href="/admin/"' not in page
    auth.logout()
    auth.login("boss@example.com")
    assert 'href="/admin/"' in client.get("/").get_data(as_text=True)


@pytest.mark.settings(ratelimit_user_confirm="2 per hour")
def test_registering_an_existing_address_again_and_again_is_no_mail_bomb(
    app: Flask, auth: AuthActions, outbox: Outbox
) -> None:
    auth.create_user("alice@example.com")

    answers = [auth.register(email="alice@example.com").status_code for _ in range(5)]

    assert answers == [HTTPStatus.SEE_OTHER] * 5  # the same answer every time
    assert len([m for m in outbox.messages() if m["To"] == "alice@example.com"]) == 2


@pytest.mark.parametrize("role", ["user", "admin"])
def test_every_signed_in_page_offers_sign_out(
    app: Flask, client: FlaskClient, auth: AuthActions, role: str
) -> None:
    """ASVS 7.4.4: sign-out is visible on every page a signed-in person can open."""
    auth.create_user(role=role)
    auth.login()
    paths = sorted(
        rule.rule
        for rule in app.url_map.iter_rules()
        if "GET" in (rule.methods or set())
        and not rule.arguments
        and rule.endpoint not in {"static", "accounts.logout"}
    )
    pages = 0
    for path in paths:
        answer = client.get(path)
        if answer.status_code != HTTPStatus.OK or answer.mimetype != "text/html":
            continue
        pages += 1
        html = answer.get_data(as_text=True)
        assert 'action="/auth/logout"' in html, path
    assert pages >= (20 if role == "admin" else 15), pages  # the walk really happened
