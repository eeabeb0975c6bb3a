"""Scale-out: the session record's copy of its owner's row never outlives a change.

security/redis_store.py: a signed-in page takes its owner's `users` row from a copy kept
in the session record, used only under the users generation it was read with. Every test
first serves pages (so the copy is kept), then changes the user the way an attacker would
hope is missed, and checks the next request sees the change:
- a change made on another node (another app on the same PostgreSQL and Redis) holds
  from the very next request on this one;
- a copy read while a change was committing is never used;
- a write that can't bump the generation fails rather than commit unseen;
- a copy older than OWNER_MAX_AGE is read again; the copy never holds the password hash.
Redis only: the embedded profile reads the owner with the session (security/session_cache.py).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from http import HTTPStatus

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update

from bastion.accounts.models import User
from bastion.core.clock import utcnow
from bastion.core.db import db
from bastion.security import redis_store
from bastion.security.redis_store import OWNER_MAX_AGE, RedisSessionStore
from bastion.security.session_store import SessionStoreUnavailable
from bastion.security.sessions import hash_id
from tests.conftest import PROFILE, AuthActions
from tests.security.helpers import cookie_value, is_signed_in, raw_id, set_user, store_of

pytestmark = pytest.mark.skipif(PROFILE != "scaleout", reason="the copy is the Redis store's")

ALICE = "alice@example.com"


def redis_of(app: Flask) -> RedisSessionStore:
    store = store_of(app)
    assert isinstance(store, RedisSessionStore)
    return store


def session_key(client: FlaskClient) -> str:
    value = cookie_value(client)
    assert value is not None
    return hash_id(raw_id(value))


def kept(app: Flask, client: FlaskClient) -> bool:
    """Whether the client's session record holds a current copy of its owner's row."""
    with app.app_context():
        record = redis_of(app).get(session_key(client))
    return record is not None and record.owner is not None


@pytest.mark.parametrize(
    ("change", "then"),
    [
        ({"role": "user"}, lambda c: c.get("/admin/").status_code == HTTPStatus.FORBIDDEN),
        ({"active": False}, lambda c: not is_signed_in(c)),
        ({"name": "Mallory"}, lambda c: "Mallory" in c.get("/").get_data(as_text=True)),
    ],
    ids=["demoted", "disabled", "renamed"],
)
def test_a_change_on_another_node_holds_on_the_next_request_here(
    app: Flask,
    client: FlaskClient,
    auth: AuthActions,
    make_app: Callable[..., Flask],
    change: dict[str, object],
    then: Callable[[FlaskClient], bool],
) -> None:
    other_node = make_app()
    auth.create_user(role="admin")
    auth.login()
    assert client.get("/admin/").status_code == HTTPStatus.OK
    assert kept(app, client)
    assert client.get("/admin/").status_code == HTTPStatus.OK  # from the copy

    set_user(other_node, ALICE, **change)

    assert then(client)


def test_a_copy_read_while_a_change_commits_is_never_used(
    app: Flask, client: FlaskClient, auth: AuthActions
) -> None:
    auth.create_user()
    auth.login()
    client.get("/")
    store = redis_of(app)
    key = session_key(client)
    with app.app_context():
        record = store.get(key)  # a page reads the record (and the generation)...
        assert record is not None
        stale = dict(db.session.execute(select(User.__table__)).mappings().one())
        # ...meanwhile another request renames the user and commits...
        db.session.execute(update(User).values(name="Renamed"))
        db.session.commit()
        # ...then the first page keeps the row it read before the commit.
        assert store.keep_owner(record, stale)
        store.save(record, 1800)

        assert store.get(key).owner is None  # type: ignore[union-attr]
    assert "Renamed" in client.get("/").get_data(as_text=True)


def test_a_users_write_that_cant_bump_the_generation_is_not_committed(
    app: Flask, auth: AuthActions, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth.create_user()
    store = redis_of(app)

    def refused(*_args: object) -> None:
        raise redis.ConnectionError("Redis is down")

    monkeypatch.setattr(store.client, "incr", refused)
    with app.app_context():
        with pytest.raises(SessionStoreUnavailable):  # the statement itself fails
            db.session.execute(update(User).values(role="admin"))
        db.session.rollback()
    monkeypatch.undo()

    with app.app_context():
        assert db.session.scalar(select(User.role)) == "user"


def test_a_copy_older_than_its_maximum_age_is_read_again(
    app: Flask, client: FlaskClient, auth: AuthActions, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth.create_user()
    auth.login()
    client.get("/")
    assert kept(app, client)
    later = utcnow() + OWNER_MAX_AGE + timedelta(seconds=1)
    monkeypatch.setattr(redis_store, "utcnow", lambda: later)

    assert not kept(app, client)


def test_the_copy_never_holds_the_password_hash(
    app: Flask, client: FlaskClient, auth: AuthActions
) -> None:
    auth.create_user()
    auth.login()
    client.get("/")
    assert kept(app, client)
    store = redis_of(app)
    with app.app_context():
        stored_hash = db.session.scalar(select(User.password_hash))
        raw = store.client.get(store._key(session_key(client)))
    assert stored_hash is not None
    assert raw is not None
    assert stored_hash.encode() not in raw
    assert b"password_hash" not in raw
