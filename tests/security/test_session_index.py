"""Revocation finds every session of a user, whatever order they were touched in."""

from __future__ import annotations

from datetime import timedelta

import pytest
from flask import Flask

from bastion.core.clock import utcnow
from bastion.security.redis_store import RedisSessionStore
from bastion.security.session_store import SessionRecord
from tests.conftest import PROFILE


def record(key: str, user_id: int, lifetime: timedelta) -> SessionRecord:
    now = utcnow()
    return SessionRecord(
        key=key,
        user_id=user_id,
        data={"_user_id": str(user_id)},
        created_at=now,
        last_seen_at=now,
        expires_at=now + lifetime,
    )


@pytest.mark.skipif(PROFILE != "scaleout", reason="the per-user index is Redis-only")
def test_touching_an_older_session_does_not_shorten_the_user_index(app: Flask) -> None:
    store = app.extensions["bastion.sessions"].store
    assert isinstance(store, RedisSessionStore)
    newer = record("n" * 64, 7, timedelta(hours=8))
    older = record("o" * 64, 7, timedelta(minutes=2))
    store.save(newer, 1800)

    store.touch(older, 1800)  # the older session, expiring soon, is seen again

    ttl = store.client.ttl(store._user_index(7))
    assert ttl > 2 * 3600  # still covers the newer session
    assert store.delete_for_user(7) == 2
