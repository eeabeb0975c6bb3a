"""The embedded profile's in-process copy of session rows never outlives a revocation.

security/session_cache.py: a signed-in page reads its session row from memory for up to a
second. Every test first serves a page (so the row is copied), then revokes or changes
the session the way an attacker would hope is missed, then replays the same cookie:
- anything this process does (sign-out, sign-out everywhere, disabling the account, a
  role change, the revoke-all command) holds from the very next request;
- a write from another process (the CLI on the same database file) holds once the copy
  runs out, within TTL_SECONDS.
SQLite only: the scale-out stores are read on every request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, delete, update

from bastion.accounts.models import User
from bastion.cli import main
from bastion.security import sessions
from bastion.security.session_cache import TTL_SECONDS, SessionCache
from bastion.security.session_store import SqlSessionStore, StoredSession
from tests.conftest import PROFILE, AuthActions
from tests.security.helpers import cookie_value, is_signed_in, set_user, store_of, with_session

pytestmark = pytest.mark.skipif(PROFILE != "embedded", reason="the copy is SQLite's only")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def copy_of(app: Flask) -> SessionCache:
    store = store_of(app)
    assert isinstance(store, SqlSessionStore)
    assert store._cache is not None
    return store._cache


@pytest.fixture
def clock(app: Flask) -> FakeClock:
    fake = FakeClock()
    copy_of(app)._clock = fake
    return fake


@pytest.fixture
def signed_in(app: Flask, client: FlaskClient, auth: AuthActions, clock: FakeClock) -> str:
    """Alice's session cookie, her row already in the copy."""
    auth.create_user()
    auth.login()
    assert is_signed_in(client)
    assert is_signed_in(client)  # the second from the copy
    value = cookie_value(client)
    assert value is not None
    return value


def _sign_out(app: Flask, client: FlaskClient) -> None:
    AuthActions(app, client).logout()


def _sign_out_everywhere(app: Flask, client: FlaskClient) -> None:
    with app.test_request_context():
        sessions.revoke_user_sessions(_alice(app))


def _disable(app: Flask, client: FlaskClient) -> None:
    set_user(app, "alice@example.com", active=False)


def _revoke_all_command(app: Flask, client: FlaskClient) -> None:
    result = app.test_cli_runner().invoke(main, ["sessions", "revoke-all", "--yes"])
    assert result.exit_code == 0, result.output


def _alice(app: Flask) -> int:
    with app.app_context():
        from bastion.core.db import db

        found = db.session.scalar(db.select(User.id).where(User.email == "alice@example.com"))
        assert found is not None
        return int(found)


@pytest.mark.parametrize(
    "revoke",
    [_sign_out, _sign_out_everywhere, _disable, _revoke_all_command],
    ids=["sign-out", "sign-out-everywhere", "account-disabled", "revoke-all-command"],
)
def test_a_revocation_in_this_process_holds_from_the_next_request(
    app: Flask,
    client: FlaskClient,
    signed_in: str,
    revoke: Callable[[Flask, FlaskClient], None],
) -> None:
    revoke(app, client)

    assert not is_signed_in(with_session(app, signed_in))  # the replayed cookie: no one


def test_a_role_change_in_this_process_holds_from_the_next_request(
    app: Flask, client: FlaskClient, auth: AuthActions, clock: FakeClock
) -> None:
    auth.create_user(role="admin")
    auth.login()
    assert client.get("/admin/").status_code == 200
    assert client.get("/admin/").status_code == 200  # from the copy

    set_user(app, "alice@example.com", role="user")

    assert client.get("/admin/").status_code == 403


@pytest.fixture
def other_process(app: Flask) -> Iterator[Callable[..., None]]:
    """Writes on a connection of its own, as the `bastion` CLI in another process would:
    nothing in this process hears of them."""
    engine = create_engine(app.config["SQLALCHEMY_DATABASE_URI"])

    def run(statement: object) -> None:
        with engine.begin() as conn:
            conn.execute(statement)

    yield run
    engine.dispose()


@pytest.mark.parametrize(
    "statement",
    [
        delete(StoredSession),
        update(User).values(active=False),
    ],
    ids=["sessions-deleted", "account-disabled"],
)
def test_a_revocation_from_another_process_holds_within_the_ttl(
    app: Flask,
    signed_in: str,
    clock: FakeClock,
    other_process: Callable[..., None],
    statement: object,
) -> None:
    other_process(statement)

    clock.now += TTL_SECONDS
    assert not is_signed_in(with_session(app, signed_in))
