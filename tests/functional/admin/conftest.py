"""Fixtures for the admin console's flows: a signed-in admin and other people's browsers."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.test import TestResponse

from bastion.accounts.models import User
from bastion.audit.models import AuditEvent
from bastion.core.db import db
from tests.conftest import AuthActions

ADMIN_EMAIL = "admin@example.com"


class Console:
    """A signed-in browser on the admin console (or any other role's browser)."""

    def __init__(self, app: Flask, client: FlaskClient, auth: AuthActions, email: str) -> None:
        self.app = app
        self.client = client
        self.auth = auth
        self.email = email

    def csrf(self) -> str:
        # Every signed-in page carries the sign-out form, and with it the session's token.
        return self.auth.csrf("/")

    def get(self, path: str, **kwargs: Any) -> TestResponse:
        return self.client.get(path, **kwargs)

    def post(self, path: str, data: dict[str, str] | None = None) -> TestResponse:
        return self.client.post(path, data={"csrf_token": self.csrf(), **(data or {})})

    def is_signed_in(self) -> bool:
        return self.client.get("/").status_code == 200


@pytest.fixture
def browser(app: Flask) -> Any:
    """Open a new browser signed in as `email` (a user created with `role`)."""

    def open_as(
        email: str, *, role: str = "user", name: str = "Some One", create: bool = True, **kw: Any
    ) -> Console:
        client = app.test_client()
        auth = AuthActions(app, client)
        if create:
            auth.create_user(email, role=role, name=name)
        response = auth.login(email, **kw)
        assert response.status_code == 303, response.status_code
        return Console(app, client, auth, email)

    return open_as


@pytest.fixture
def admin(app: Flask, client: FlaskClient, auth: AuthActions) -> Console:
    auth.create_user(ADMIN_EMAIL, role="admin", name="Ada Admin")
    assert auth.login(ADMIN_EMAIL).status_code == 303
    return Console(app, client, auth, ADMIN_EMAIL)


def user_row(app: Flask, email: str) -> User:
    with app.app_context():
        user = db.session.scalar(select(User).where(User.email == email))
        assert user is not None
        db.session.expunge(user)
        return user


def events(app: Flask, event: str) -> list[dict[str, Any]]:
    """The audit events of one type, oldest first, with their details parsed."""
    with app.app_context():
        rows = db.session.scalars(
            select(AuditEvent).where(AuditEvent.event == event).order_by(AuditEvent.id)
        )
        return [
            {
                "actor": row.actor_email,
                "target": row.target,
                "outcome": row.outcome,
                "ip": row.ip,
                "details": json.loads(row.details),
            }
            for row in rows
        ]
