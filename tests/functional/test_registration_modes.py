"""Registration modes (open, invite, closed) and invitations."""

from __future__ import annotations

from http import HTTPStatus

import pytest
from flask import Flask
from flask.testing import FlaskClient

from bastion.cli import main
from tests.conftest import GOOD_PASSWORD, AuthActions, Outbox, csrf_token_from


def invite(app: Flask, email: str) -> None:
    result = app.test_cli_runner().invoke(main, ["users", "invite", "--email", email])
    assert result.exit_code == 0, result.output


def accept(client: FlaskClient, path: str, name: str = "Dana Example") -> object:
    page = client.get(path)
    assert page.status_code == HTTPStatus.OK
    return client.post(
        path,
        data={
            "email": "ignored@evil.example",
            "name": name,
            "password": GOOD_PASSWORD,
            "password_confirm": GOOD_PASSWORD,
            "csrf_token": csrf_token_from(page.get_data(as_text=True)),
        },
    )


@pytest.mark.settings(registration="closed")
def test_closed_registration_refuses(auth: AuthActions, client: FlaskClient) -> None:
    assert client.get("/auth/register").status_code == HTTPStatus.FORBIDDEN


@pytest.mark.settings(registration="invite")
def test_invite_mode_needs_an_invitation_and_it_works_once(
    app: Flask, client: FlaskClient, auth: AuthActions, outbox: Outbox
) -> None:
    assert client.get("/auth/register").status_code == HTTPStatus.FORBIDDEN
    invite(app, "dana@example.com")
    path = outbox.last_link("dana@example.com").removeprefix("https://127.0.0.1:8443")

    created = accept(client, path)

    assert created.status_code == HTTPStatus.SEE_OTHER  # type: ignore[attr-defined]
    # The invited address, not the posted one, owns the account; it can sign in at once.
    assert auth.login("dana@example.com").status_code == HTTPStatus.SEE_OTHER
    auth.logout()
    assert client.get(path).status_code == HTTPStatus.BAD_REQUEST  # used up
    assert auth.login("ignored@evil.example").status_code == HTTPStatus.UNAUTHORIZED


@pytest.mark.settings(registration="invite")
def test_forged_invitation_is_refused(client: FlaskClient) -> None:
    response = client.get("/auth/register?invite=eyJzdWIiOiJ4QHkuY29tIn0.forged.sig")
    assert response.status_code == HTTPStatus.BAD_REQUEST
