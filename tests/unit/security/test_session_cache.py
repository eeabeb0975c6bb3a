"""The embedded profile's in-process copy of session rows (security/session_cache.py).

What it may keep and for how long: a row ages out after its TTL; a row read before a write
committed is never kept (the ticket); `forget` and `forget_all` drop rows at once; which
statements count as writes to the watched tables.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import column, delete, insert, table, update

from bastion.security import session_cache
from bastion.security.session_cache import STORE_OPTION, SessionCache


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cache(clock: FakeClock) -> SessionCache:
    return SessionCache(ttl=1.0, clock=clock)


def test_a_row_is_served_until_its_ttl_from_the_moment_its_read_began(
    cache: SessionCache, clock: FakeClock
) -> None:
    ticket = cache.ticket("k")
    clock.now += 0.4  # the database read took this long
    cache.put("k", "row", ticket)

    clock.now += 0.5
    assert cache.get("k") == "row"
    clock.now += 0.1  # 1.0 s after the read began
    assert cache.get("k") is None


def test_a_row_read_before_its_session_was_written_is_not_kept(cache: SessionCache) -> None:
    # A reader started, the store's write to that session committed and forgot it, then the
    # reader's (older) row arrived: keeping it would serve a revoked or changed session.
    ticket = cache.ticket("k")
    cache.forget("k")
    cache.put("k", "row from before the write", ticket)

    assert cache.get("k") is None
    fresh = cache.ticket("k")
    cache.put("k", "row from after", fresh)
    assert cache.get("k") == "row from after"


def test_a_row_read_before_any_watched_write_is_not_kept(cache: SessionCache) -> None:
    ticket = cache.ticket("k")
    cache.forget_all()  # e.g. the ORM disabled the owner
    cache.put("k", "row", ticket)

    assert cache.get("k") is None


def test_forget_drops_one_session_and_forget_all_drops_every_one(cache: SessionCache) -> None:
    for key in ("a", "b", "c"):
        cache.put(key, f"row {key}", cache.ticket(key))

    cache.forget("a")
    assert [cache.get(key) for key in ("a", "b", "c")] == [None, "row b", "row c"]
    cache.forget_all()
    assert [cache.get(key) for key in ("b", "c")] == [None, None]


def test_the_copy_is_bounded(cache: SessionCache, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session_cache, "MAX_ENTRIES", 3)
    for number in range(3):
        cache.put(f"k{number}", "row", cache.ticket(f"k{number}"))
    cache.put("k3", "row", cache.ticket("k3"))  # full: starts again empty

    assert [cache.get(f"k{n}") for n in range(4)] == [None, None, None, "row"]
    for number in range(4):
        cache.forget(f"other{number}")  # forgotten keys are bounded too
    assert cache.get("k3") is None


# ------------------------------------------------------------ which statements are writes
sessions = table("sessions", column("key"), column("user_id"))
users = table("users", column("id"), column("active"))
audit = table("audit_events", column("id"))


def _context(statement: Any, **options: Any) -> SimpleNamespace:
    return SimpleNamespace(
        execution_options=options,
        isinsert=statement.is_insert,
        isupdate=statement.is_update,
        isdelete=statement.is_delete,
        compiled=SimpleNamespace(statement=statement),
    )


@pytest.mark.parametrize(
    ("sql", "statement", "options", "expected"),
    [
        ("UPDATE users SET active=?", update(users), {}, True),
        ("DELETE FROM users", delete(users), {}, True),
        ("DELETE FROM sessions WHERE user_id=?", delete(sessions), {}, True),
        ("INSERT INTO sessions ...", insert(sessions), {STORE_OPTION: True}, False),
        ("INSERT INTO audit_events ...", insert(audit), {}, False),
        ("  select * from sessions", None, {}, False),
    ],
)
def test_writes_to_sessions_or_users_are_told_apart(
    sql: str, statement: Any, options: dict[str, Any], expected: bool
) -> None:
    context = None if statement is None else _context(statement, **options)
    assert session_cache._writes_watched_table(sql, context) is expected


def test_a_statement_it_cannot_read_counts_as_a_write() -> None:
    text_sql = SimpleNamespace(
        execution_options={}, isinsert=False, isupdate=False, isdelete=False, compiled=None
    )
    assert session_cache._writes_watched_table("UPDATE users SET role='admin'", text_sql)
    assert session_cache._writes_watched_table("PRAGMA wal_checkpoint(PASSIVE)", None)


def test_a_row_copied_while_a_write_was_uncommitted_is_dropped_when_it_commits(
    tmp_path: Any, cache: SessionCache
) -> None:
    # The write forgets everything when it runs, but a reader can still copy the old,
    # committed row before the write commits; the commit (the connection's return to the
    # pool) must drop that copy too.
    from sqlalchemy import create_engine, text

    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE users (id INTEGER PRIMARY KEY, active INTEGER)"))
        conn.execute(text("INSERT INTO users VALUES (1, 1)"))
    session_cache.watch_writes(engine, cache.forget_all)
    with engine.connect() as writer:
        writer.execute(update(users).values(active=0))
        cache.put("k", "row read before the commit", cache.ticket("k"))
        assert cache.get("k") is not None
        writer.commit()
    assert cache.get("k") is None
    engine.dispose()
