"""The Redis store finds the `users` table when it first needs it, not when it is built.

A serving app builds its session store before the accounts models are imported; a store
that looked for `users` only then would never copy an owner's row, and every signed-in
page would read it from PostgreSQL again (bench/run.py caught this: 0.20x bare Flask
instead of 0.35x).
"""

from __future__ import annotations

from datetime import UTC, datetime

import redis
from sqlalchemy import Column, Integer, MetaData, String, Table

from bastion.core.db import UTCDateTime
from bastion.security.redis_store import RedisSessionStore
from bastion.security.session_store import SessionRecord

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def _record() -> SessionRecord:
    return SessionRecord(
        key="k", user_id=7, data={}, created_at=NOW, last_seen_at=NOW, expires_at=NOW
    )


def test_users_mapped_after_the_store_is_built_are_still_copied_with_their_times() -> None:
    metadata = MetaData()
    store = RedisSessionStore(redis.Redis(), "test:", metadata)  # never connects here
    row = {"id": 7, "name": "Alice", "password_hash": "$argon2id$...", "created_at": NOW}
    assert not store.keep_owner(_record(), row)  # no `users` yet: nothing to copy

    Table(
        "users",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("name", String(100)),
        Column("password_hash", String(255)),
        Column("created_at", UTCDateTime()),
    )
    record = _record()

    assert store.keep_owner(record, row)
    assert record.owner_copy is not None
    assert "password_hash" not in record.owner_copy["row"]
    assert store._current_owner(record) == {"id": 7, "name": "Alice", "created_at": NOW}
