"""The first administrator comes from a one-time setup link, never a default password."""

from __future__ import annotations

from http import HTTPStatus

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from bastion.accounts import service
from bastion.accounts.models import User
from bastion.core.db import db
from tests.conftest import GOOD_PASSWORD, AuthActions, csrf_token_from

SITE = service.Site("https://localhost", 15)


def setup_path(app: Flask) -> str:
    with app.app_context():
        link = service.issue_setup_link(SITE)
    assert link is not None
    return link.removeprefix("https://localhost")


def submit(client: FlaskClient, path: str, email: str = "root@example.com") -> object:
    page = client.get(path)
    return client.post(
        path,
        data={
            "email": email,
            "name": "First Admin",
            "password": GOOD_PASSWORD,
            "password_confirm": GOOD_PASSWORD,
            "csrf_token": csrf_token_from(page.get_data(as_text=True)),
        },
    )


def test_setup_link_creates_the_first_admin_once(
    app: Flask, client: FlaskClient, auth: AuthActions
) -> None:
    path = setup_path(app)
    assert submit(client, path).status_code == HTTPStatus.SEE_OTHER  # type: ignore[attr-defined]
    with app.app_context():
        admin = db.session.scalar(select(User).where(User.email == "root@example.com"))
        assert admin is not None
        assert admin.role == "admin"
        assert admin.confirmed_at is not None
        # Once an admin exists there is no setup link to print, and the old one is dead.
        assert service.issue_setup_link(SITE) is None
    assert client.get(path).status_code == HTTPStatus.NOT_FOUND
    again = client.post(
        path,
        data={
            "email": "second@example.com",
            "name": "Second Admin",
            "password": GOOD_PASSWORD,
            "password_confirm": GOOD_PASSWORD,
            "csrf_token": auth.csrf(),
        },
    )
    assert again.status_code == HTTPStatus.NOT_FOUND
    assert auth.login("root@example.com").status_code == HTTPStatus.SEE_OTHER


def test_forged_or_other_purpose_tokens_do_not_open_setup(app: Flask, client: FlaskClient) -> None:
    with app.app_context():
        from bastion.security.tokens import TokenPurpose, issue

        invite = issue(TokenPurpose.INVITE, "x@example.com")
    assert client.get(f"/setup/{invite}").status_code == HTTPStatus.NOT_FOUND
    assert client.get("/setup/not-a-token").status_code == HTTPStatus.NOT_FOUND


def test_setup_keeps_the_password_policy_and_the_link_survives_a_bad_try(
    app: Flask, client: FlaskClient
) -> None:
    path = setup_path(app)
    page = client.get(path)
    weak = client.post(
        path,
        data={
            "email": "root@example.com",
            "name": "First Admin",
            "password": "short",
            "password_confirm": "short",
            "csrf_token": csrf_token_from(page.get_data(as_text=True)),
        },
    )
    assert weak.status_code == HTTPStatus.BAD_REQUEST
    assert submit(client, path).status_code == HTTPStatus.SEE_OTHER  # type: ignore[attr-defined]
