"""What a signed-in page costs the database: one query embedded, none on scale-out.

Embedded, the session store reads the session and its owner's row in one query and the
user loader takes that row (app.py `_attached`); scale-out, the session comes from Redis
with a current copy of the owner's row (security/redis_store.py), and only a page whose
copy is missing or out of date reads the row, on an autocommit connection (no BEGIN and
ROLLBACK around it). The loaded user is a full ORM object: a change to it is written back
like any other, and so is a change to a user built from the copy.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from http import HTTPStatus
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event, select

from bastion.accounts.models import User
from bastion.app import LOOKUP_ENGINE
from bastion.core.db import db
from tests.conftest import GOOD_PASSWORD, AuthActions

ALICE = "alice@example.com"
NEW_PASSWORD = "meadow compass harbour 3141"


@contextmanager
def statements(app: Flask) -> Iterator[list[str]]:
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    with app.app_context():
        engines = [db.engine]
    lookups = app.extensions.get(LOOKUP_ENGINE)
    if lookups is not None:
        engines.append(lookups)
    for engine in engines:
        event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", count)


def test_a_signed_in_page_makes_one_database_query_and_none_on_scale_out(
    app: Flask, client: FlaskClient, auth: AuthActions
) -> None:
    auth.create_user()
    auth.login()
    client.get("/")  # any first-visit work (a session touch, the owner's copy) is done

    with statements(app) as seen:
        page = client.get("/")

    assert page.status_code == HTTPStatus.OK
    assert "Alice Example" in page.get_data(as_text=True)
    expected = [] if app.extensions["bastion.settings"].redis_url else ["SELECT"]
    assert [s.split()[0].upper() for s in seen] == expected, seen


def test_the_user_from_the_session_query_saves_changes_like_a_loaded_one(
    app: Flask, client: FlaskClient, auth: AuthActions
) -> None:
    auth.create_user()
    auth.login()
    with app.app_context():
        before = db.session.scalar(select(User.password_hash).where(User.email == ALICE))

    changed = client.post(
        "/account/",
        data={
            "csrf_token": auth.csrf("/account/"),
            "current_password": GOOD_PASSWORD,
            "new_password": NEW_PASSWORD,
            "new_password_confirm": NEW_PASSWORD,
        },
    )

    assert changed.status_code == HTTPStatus.SEE_OTHER, changed.get_data(as_text=True)[:500]
    with app.app_context():
        after = db.session.scalar(select(User.password_hash).where(User.email == ALICE))
    assert after != before
    auth.logout()
    assert auth.login(password=NEW_PASSWORD).status_code == HTTPStatus.SEE_OTHER
