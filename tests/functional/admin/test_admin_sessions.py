"""All signed-in sessions: list, filter by user, end one."""

from __future__ import annotations

import re
import secrets
from datetime import timedelta
from http import HTTPStatus
from typing import Any

import pytest
from flask import Flask

from bastion.audit import EventTag
from bastion.core.clock import utcnow
from bastion.security.session_store import SessionRecord, SessionStore
from bastion.security.sessions import remember_tokens_for
from tests.functional.admin.conftest import ADMIN_EMAIL, Console, events, user_row

REVOKE = re.compile(r'action="/admin/sessions/([0-9a-f]{64})/revoke"')


def store_of(app: Flask) -> SessionStore:
    found: SessionStore = app.extensions["bastion.sessions"].store
    return found


def revoke_keys(html: str) -> list[str]:
    return REVOKE.findall(html)


def test_sessions_are_listed_and_filtered(admin: Console, browser: Any) -> None:
    browser("bob@example.com")
    browser("carol@example.com")

    html = admin.get("/admin/sessions").get_data(as_text=True)

    assert "bob@example.com" in html
    assert "carol@example.com" in html
    assert "This session" in html  # the admin's own, without a revoke button
    assert len(revoke_keys(html)) == 2
    assert "127.0.0.1" in html
    assert "<caption>" in html
    only_bob = admin.get("/admin/sessions?email=BOB@example.com").get_data(as_text=True)
    assert "bob@example.com" in only_bob
    assert "carol@example.com" not in only_bob
    assert len(revoke_keys(only_bob)) == 1
    nobody = admin.get("/admin/sessions?email=nobody@example.com").get_data(as_text=True)
    assert "No account has that email address." in nobody
    assert admin.get("/admin/sessions?email=%07").status_code == HTTPStatus.BAD_REQUEST


def test_end_one_session(app: Flask, admin: Console, browser: Any) -> None:
    bob = browser("bob@example.com")
    bob_phone = browser("bob@example.com", create=False)
    carol = browser("carol@example.com")
    html = admin.get("/admin/sessions?email=bob@example.com").get_data(as_text=True)
    first, second = revoke_keys(html)

    response = admin.post(f"/admin/sessions/{first}/revoke")

    assert response.status_code == HTTPStatus.SEE_OTHER
    assert response.headers["Location"] == "/admin/sessions"
    assert [bob.is_signed_in(), bob_phone.is_signed_in()].count(True) == 1
    assert carol.is_signed_in()
    [event] = events(app, EventTag.ADMIN_SESSION_REVOKE)
    assert event["actor"] == ADMIN_EMAIL
    assert event["target"] == "bob@example.com"
    assert event["details"]["session"] == first[:12]
    assert event["details"]["before"] == {"active": True}
    assert event["details"]["after"] == {"active": False}
    # Gone is gone: the same key again is a 404, and the other session still works.
    assert admin.post(f"/admin/sessions/{first}/revoke").status_code == HTTPStatus.NOT_FOUND
    assert second in admin.get("/admin/sessions").get_data(as_text=True)


@pytest.mark.parametrize(
    "key",
    [secrets.token_hex(32), "g" * 64, "A" * 64],
    ids=["unknown", "not-hex", "upper-case"],
)
def test_unknown_or_malformed_session_is_404(admin: Console, key: str) -> None:
    assert admin.post(f"/admin/sessions/{key}/revoke").status_code == HTTPStatus.NOT_FOUND


def test_wrong_length_key_does_not_route(admin: Console) -> None:
    short = secrets.token_hex(16)
    assert admin.post(f"/admin/sessions/{short}/revoke").status_code == HTTPStatus.NOT_FOUND


def test_own_current_session_is_not_ended_here(app: Flask, admin: Console) -> None:
    me = user_row(app, ADMIN_EMAIL)
    with app.app_context():
        [own] = store_of(app).list_for_user(me.id)
    response = admin.post(f"/admin/sessions/{own.key}/revoke")
    assert response.status_code == HTTPStatus.SEE_OTHER
    assert "use Sign out" in admin.get("/admin/sessions").get_data(as_text=True)
    assert admin.is_signed_in()
    assert events(app, EventTag.ADMIN_SESSION_REVOKE) == []


def _record(user_id: int | None, *, seen: timedelta, lifetime: timedelta) -> SessionRecord:
    now = utcnow()
    return SessionRecord(
        key=secrets.token_hex(32),
        user_id=user_id,
        data={},
        created_at=now - seen,
        last_seen_at=now - seen,
        expires_at=now - seen + lifetime,
        ip="192.0.2.1",
        user_agent="pytest",
    )


def test_list_all_keeps_only_live_signed_in_sessions_newest_first(app: Flask, auth: Any) -> None:
    bob_id = auth.create_user("bob@example.com")
    carol_id = auth.create_user("carol@example.com")
    hour = timedelta(hours=8)
    live = [_record(bob_id, seen=timedelta(minutes=m), lifetime=hour) for m in (1, 5, 9)] + [
        _record(carol_id, seen=timedelta(minutes=3), lifetime=hour)
    ]
    dead = [
        _record(None, seen=timedelta(minutes=1), lifetime=hour),  # anonymous
        _record(bob_id, seen=timedelta(minutes=40), lifetime=hour),  # idle too long
        _record(bob_id, seen=timedelta(minutes=2), lifetime=timedelta(minutes=1)),  # expired
    ]
    with app.app_context():
        store = store_of(app)
        # Dead ones first: RedisSessionStore.save sets the user index's expiry from the
        # record it saves, and an already-expired record would expire the whole index.
        for record in dead + live:
            store.save(record, 1800)
        now = utcnow()

        everyone, total = store.list_all(
            user_id=None, now=now, idle_seconds=1800, limit=10, offset=0
        )
        page_two, _ = store.list_all(user_id=None, now=now, idle_seconds=1800, limit=2, offset=2)
        bobs, bob_total = store.list_all(
            user_id=bob_id, now=now, idle_seconds=1800, limit=10, offset=0
        )

    by_age = sorted(live, key=lambda r: r.last_seen_at, reverse=True)
    assert total == 4
    assert [r.key for r in everyone] == [r.key for r in by_age]
    assert [r.key for r in page_two] == [r.key for r in by_age[2:]]
    assert bob_total == 3
    assert {r.user_id for r in bobs} == {bob_id}


def test_sessions_are_paginated(app: Flask, admin: Console, auth: Any) -> None:
    bob_id = auth.create_user("bob@example.com")
    with app.app_context():
        for minutes in range(30):
            store_of(app).save(
                _record(bob_id, seen=timedelta(minutes=minutes), lifetime=timedelta(hours=8)),
                1800,
            )
    first = admin.get("/admin/sessions").get_data(as_text=True)
    assert "Showing 1 to 25 of 31." in first
    assert 'href="/admin/sessions?page=2"' in first
    second = admin.get("/admin/sessions?page=2").get_data(as_text=True)
    assert "Showing 26 to 31 of 31." in second
    filtered = admin.get("/admin/sessions?email=bob@example.com&page=2").get_data(as_text=True)
    assert "Showing 26 to 30 of 30." in filtered
    assert "email=bob@example.com&amp;page=1" in filtered
    assert admin.get("/admin/sessions?page=x").status_code == HTTPStatus.BAD_REQUEST


def test_the_cli_ends_every_users_sessions_and_remember_tokens(app: Flask, browser: Any) -> None:
    from bastion.cli import main

    bob = browser("bob@example.com", remember=True)
    carol = browser("carol@example.com")
    runner = app.test_cli_runner()

    refused = runner.invoke(main, ["sessions", "revoke-all"], input="n\n")
    assert refused.exit_code != 0
    assert bob.client.get("/").status_code == HTTPStatus.OK  # nothing without a yes

    done = runner.invoke(main, ["sessions", "revoke-all", "--yes"])

    assert done.exit_code == 0, done.output
    assert "ended 2 sessions" in done.output
    for person in (bob, carol):
        assert person.client.get("/").status_code == HTTPStatus.FOUND  # to the sign-in page
    with app.app_context():
        assert remember_tokens_for(user_row(app, "bob@example.com").id) == 0
    [event] = events(app, EventTag.SESSIONS_REVOKE_ALL.value)
    assert event["details"] == {"sessions": 2}
