"""Fixtures shared by every test: a fresh app per test on the profile under test.

BASTION_TEST_PROFILE picks the profile: `embedded` (SQLite + in-process stores, default) or
`scaleout` (PostgreSQL + Redis). Each run gets its own PostgreSQL schema and Redis key
prefix, so parallel runs never collide; the schema is migrated once per run and each test
leaves empty tables behind. Tests never stop the shared services.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import delete

from bastion import create_app
from bastion.app import close_app, enable_migrations
from bastion.core.db import db
from bastion.core.mail import OutboxMailer
from bastion.security import passwords
from bastion.settings import Settings

PROFILE = os.environ.get("BASTION_TEST_PROFILE", "embedded")
PG_URL = os.environ.get("BASTION_TEST_DATABASE_URL", "postgresql://127.0.0.1:5432/test")
REDIS_URL = os.environ.get("BASTION_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
GOOD_PASSWORD = "orchard lantern velvet 2718"
CSRF_RE = re.compile(
    r'name="csrf_token" type="hidden" value="([^"]+)"|name="csrf_token" value="([^"]+)"'
)


@dataclass(frozen=True)
class Backend:
    """Where this run's data lives: its database URL, Redis URL and key prefix."""

    database_url: str
    redis_url: str | None
    redis_prefix: str
    instance_path: Path

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": self.database_url,
            "redis_url": self.redis_url,
            "redis_prefix": self.redis_prefix,
            "instance_path": self.instance_path,
        }
        values.update(overrides)
        return Settings.for_tests(**values)


@pytest.fixture(scope="session")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    run = secrets.token_hex(4)
    instance = tmp_path_factory.mktemp("instance")
    if PROFILE == "scaleout":
        schema = f"bastion_t_{run}"
        with psycopg.connect(PG_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        url = f"{PG_URL}?options=-csearch_path%3D{schema}"
        found = Backend(url, REDIS_URL, f"bastion-test-{run}:", instance)
    else:
        schema = ""
        found = Backend("", None, f"bastion-test-{run}:", instance)
    _migrate(found)
    yield found
    if PROFILE == "scaleout":
        with psycopg.connect(PG_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        _flush_redis(found)


def _migrate(found: Backend) -> None:
    from flask_migrate import upgrade

    app = create_app(found.settings())
    enable_migrations(app)
    with app.app_context():
        upgrade()
        db.engine.dispose()


def _flush_redis(found: Backend) -> None:
    if found.redis_url is None:
        return
    client = redis.Redis.from_url(found.redis_url, socket_timeout=5)
    keys = list(client.scan_iter(match=found.redis_prefix + "*", count=1000))
    keys += list(client.scan_iter(match="LIMITS:" + found.redis_prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(scope="session", autouse=True)
def cheap_hashing() -> Iterator[None]:
    """Tests hash with tiny argon2 parameters; tests of the real ones set them back."""
    passwords.configure(passwords.HashParameters(time_cost=1, memory_cost=8, parallelism=1))
    yield
    passwords.configure(passwords.OWASP_PARAMETERS)


@pytest.fixture
def settings_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    marker = request.node.get_closest_marker("settings")
    return dict(marker.kwargs) if marker else {}


@pytest.fixture
def app(backend: Backend, settings_overrides: dict[str, Any]) -> Iterator[Flask]:
    app = create_app(backend.settings(**settings_overrides))
    # Each test reads only its own mail: the instance folder is shared by the whole run.
    for old_mail in (app.extensions["bastion.settings"].instance_path / "outbox").glob("*.eml"):
        old_mail.unlink()
    yield app
    with app.app_context():
        db.session.remove()
        with db.engine.begin() as conn:
            for table in reversed(db.metadata.sorted_tables):
                conn.execute(delete(table))
    close_app(app)
    _flush_redis(backend)


class HttpsClient(FlaskClient):
    """A test client that speaks https://localhost, so Secure `__Host-` cookies flow."""

    def open(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("base_url", "https://localhost")
        return super().open(*args, **kwargs)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    app.test_client_class = HttpsClient
    return app.test_client()


def csrf_token_from(html: str) -> str:
    match = CSRF_RE.search(html)
    assert match, "page has no CSRF token"
    return match.group(1) or match.group(2)


class Outbox:
    """The mails the app wrote to its outbox."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def messages(self) -> list[EmailMessage]:
        mailer = self.app.extensions["bastion.mailer"]
        assert isinstance(mailer, OutboxMailer)
        return mailer.messages()

    def last_link(self, to: str | None = None) -> str:
        found = [m for m in self.messages() if to is None or m["To"] == to]
        assert found, "no mail was sent"
        body = found[-1].get_content()
        match = re.search(r"https://\S+", body)
        assert match, "mail has no link"
        return match.group(0)


@pytest.fixture
def outbox(app: Flask) -> Outbox:
    return Outbox(app)


class AuthActions:
    """Drive the account pages like a browser would (after flaskr's AuthActions)."""

    def __init__(self, app: Flask, client: FlaskClient) -> None:
        self.app = app
        self.client = client

    def csrf(self, path: str = "/auth/login") -> str:
        return csrf_token_from(self.client.get(path).get_data(as_text=True))

    def create_user(
        self,
        email: str = "alice@example.com",
        password: str = GOOD_PASSWORD,
        role: str = "user",
        name: str = "Alice Example",
    ) -> int:
        from bastion.accounts import service
        from bastion.audit import Actor

        with self.app.app_context():
            user = service.create_user(
                email=email,
                name=name,
                password=password,
                role=role,
                actor=Actor.system(),
                site=service.Site("https://localhost", 15),
            )
            return user.id

    def login(
        self,
        email: str = "alice@example.com",
        password: str = GOOD_PASSWORD,
        remember: bool = False,
        next_url: str | None = None,
    ) -> Any:
        data = {"email": email, "password": password, "csrf_token": self.csrf()}
        if remember:
            data["remember"] = "y"
        path = "/auth/login" + (f"?next={next_url}" if next_url else "")
        return self.client.post(path, data=data)

    def logout(self) -> Any:
        return self.client.post("/auth/logout", data={"csrf_token": self.csrf("/")})

    def register(
        self,
        email: str = "bob@example.com",
        name: str = "Bob Example",
        password: str = GOOD_PASSWORD,
        confirm: str | None = None,
    ) -> Any:
        token = self.csrf("/auth/register")
        return self.client.post(
            "/auth/register",
            data={
                "email": email,
                "name": name,
                "password": password,
                "password_confirm": password if confirm is None else confirm,
                "csrf_token": token,
            },
        )


@pytest.fixture
def auth(app: Flask, client: FlaskClient) -> AuthActions:
    return AuthActions(app, client)
