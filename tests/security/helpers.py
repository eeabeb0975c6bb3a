"""Small helpers the security tests share: cookies, sessions, audit rows, time, the hash guard."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime, timedelta
from http import HTTPStatus
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from werkzeug.test import TestResponse

from bastion.accounts.models import User
from bastion.audit.models import AuditEvent
from bastion.core.db import db
from bastion.security import hash_guard
from bastion.security.devices import DEVICE_COOKIE
from bastion.security.session_store import SessionRecord, SessionStore
from bastion.security.sessions import (
    REMEMBER_COOKIE,
    SESSION_COOKIE,
    STATELESS_MARK,
    SessionManager,
    hash_id,
)
from tests.conftest import Outbox, csrf_token_from

EVIL_ORIGIN = "https://evil.example"
SUITE_PUBLIC_URL = "https://127.0.0.1:8443"  # Settings' default, which the suite keeps
CSRF_MESSAGE = "This form expired or was not sent from this site."
CSRF_EVENT = "security.csrf.failure"


def set_cookies(response: TestResponse) -> dict[str, dict[str, Any]]:
    """Parse every Set-Cookie header: name -> {"value": ..., attribute (lower-case): value}."""
    found: dict[str, dict[str, Any]] = {}
    for header in response.headers.getlist("Set-Cookie"):
        first, *attributes = (part.strip() for part in header.split(";"))
        name, _, value = first.partition("=")
        cookie: dict[str, Any] = {"value": value}
        for attribute in attributes:
            key, has_value, attr_value = attribute.partition("=")
            cookie[key.lower()] = attr_value if has_value else True
        found[name] = cookie
    return found


def is_deletion(cookie: dict[str, Any]) -> bool:
    return cookie["value"] == "" and cookie.get("max-age") == "0"


def assert_refused_and_cleared(response: TestResponse) -> None:
    """A session cookie the app would not honour: sent to sign in, and the cookie deleted."""
    assert response.status_code == HTTPStatus.FOUND
    assert response.headers["Location"].startswith("/auth/login")
    assert is_deletion(set_cookies(response)[SESSION_COOKIE])


def cookie_value(client: FlaskClient, name: str = SESSION_COOKIE) -> str | None:
    cookie = client.get_cookie(name)
    return cookie.value if cookie is not None else None


def with_session(app: Flask, value: str) -> FlaskClient:
    fresh = app.test_client()
    fresh.set_cookie(SESSION_COOKIE, value)
    return fresh


def with_remember(app: Flask, value: str) -> FlaskClient:
    fresh = app.test_client()
    fresh.set_cookie(REMEMBER_COOKIE, value)
    return fresh


def with_device(app: Flask, value: str) -> FlaskClient:
    fresh = app.test_client()
    fresh.set_cookie(DEVICE_COOKIE, value)
    return fresh


def raw_id(signed: str) -> str:
    """The random part of an itsdangerous-signed value (`<id>.<signature>`)."""
    return signed.rsplit(".", 1)[0]


def flip(text: str, index: int) -> str:
    """`text` with the character at `index` changed to another base64url character."""
    replacement = "A" if text[index] != "A" else "B"
    return text[:index] + replacement + text[index + 1 :]


def manager_of(app: Flask) -> SessionManager:
    found: SessionManager = app.extensions["bastion.sessions"]
    return found


def store_of(app: Flask) -> SessionStore:
    return manager_of(app).store


def stored_record(app: Flask, signed_cookie: str) -> SessionRecord | None:
    """The server-side record behind a session cookie value, or None."""
    with app.app_context():
        return store_of(app).get(hash_id(raw_id(signed_cookie)))


def stored_anonymous_session(client: FlaskClient) -> str:
    """Give `client` an anonymous session that lives in the store, and its cookie value.

    One holding only its CSRF token stays in its cookie (security/sessions.py); a flash
    moves it into the store: the 2FA step without a pending sign-in flashes "sign in".
    """
    client.get("/auth/login/2fa")
    client.get("/auth/login")  # shows (and drops) the flash; the session stays stored
    value = cookie_value(client)
    assert value is not None
    assert not raw_id(value).startswith(STATELESS_MARK)
    return value


def stored_session_count(app: Flask) -> int:
    """How many sessions the store holds (rows, or Redis keys under the run's prefix)."""
    from bastion.security.session_store import StoredSession

    store = store_of(app)
    redis_client = getattr(store, "client", None)
    with app.app_context():
        if redis_client is not None:
            pattern = store._key("") + "*"  # type: ignore[attr-defined]
            return sum(1 for _ in redis_client.scan_iter(match=pattern))
        return int(db.session.scalar(select(func.count()).select_from(StoredSession)) or 0)


def is_signed_in(client: FlaskClient) -> bool:
    """True when the home page (login required) opens instead of redirecting to sign-in."""
    response = client.get("/")
    if response.status_code == 200:
        return True
    assert response.status_code == 302, response.status_code
    assert response.headers["Location"].startswith("/auth/login")
    return False


def audit_rows(app: Flask, event: str | None = None) -> list[AuditEvent]:
    with app.app_context():
        query = select(AuditEvent).order_by(AuditEvent.id)
        if event is not None:
            query = query.where(AuditEvent.event == event)
        rows = list(db.session.scalars(query))
        db.session.expunge_all()
        return rows


def assert_csrf_refused(app: Flask, response: TestResponse, path: str) -> None:
    """The app's CSRF answer: a 400 with its message, audited under the route `path`."""
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert CSRF_MESSAGE in response.get_data(as_text=True)
    assert path in [row.target for row in audit_rows(app, CSRF_EVENT)]


def audit_row_text(row: AuditEvent) -> str:
    columns = AuditEvent.__table__.columns
    return json.dumps({c.name: getattr(row, c.name) for c in columns}, default=str)


def count_users(app: Flask) -> int:
    with app.app_context():
        return int(db.session.scalar(select(func.count()).select_from(User)) or 0)


def set_user(app: Flask, email: str, **changes: Any) -> None:
    with app.app_context():
        user = db.session.scalar(select(User).where(User.email == email))
        assert user is not None
        for name, value in changes.items():
            setattr(user, name, value)
        db.session.commit()


def user_id(app: Flask, email: str) -> int:
    with app.app_context():
        found = db.session.scalar(select(User.id).where(User.email == email))
        assert found is not None
        return int(found)


class Clock:
    """Moves the sessions module's "now"; the real clock for everything else."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, start: datetime) -> None:
        self.now = start
        monkeypatch.setattr("bastion.security.sessions.utcnow", self)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def closed_port() -> int:
    """A local TCP port nothing listens on (bound once by us, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@contextmanager
def saturated_hash_guard() -> Iterator[None]:
    """Hold every slot of the process's hashing guard for the block, as a flood would."""
    guard = hash_guard.current()
    with ExitStack() as held:
        for _ in range(guard.slots):
            held.enter_context(guard.slot())
        yield


def mailed_reset_path(client: FlaskClient, outbox: Outbox, email: str = "alice@example.com") -> str:
    """Ask for a reset link for `email` from `client`; return its path (mailed on close)."""
    token = csrf_token_from(client.get("/auth/reset").get_data(as_text=True))
    with client.post("/auth/reset", data={"email": email, "csrf_token": token}) as response:
        response.get_data()
    return outbox.last_link(email).removeprefix(SUITE_PUBLIC_URL)


def login_form(token: str, email: str, password: str, **extra: str) -> dict[str, str]:
    return {"email": email, "password": password, "csrf_token": token, **extra}


# The `make_app` fixture's type (tests/security/conftest.py).
Factory = Callable[..., Flask]
