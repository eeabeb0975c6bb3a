"""Where server-side sessions live: a database table (embedded) or Redis (scale-out).

We store JSON only. Flask-Session 0.8 falls back to ``pickle.loads`` on stored data that is
not valid msgpack/JSON, so anyone able to write to Redis could run code in the app; a
store of our own is ~150 lines and has no such path (ASVS 1.5.2).

Records are keyed by the SHA-256 of the session id, so a leaked table or Redis dump holds
no usable session ids.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Mapping
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar, cast

from sqlalchemy import (
    ForeignKey,
    Select,
    String,
    Table,
    Text,
    bindparam,
    delete,
    func,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Mapped, mapped_column

from bastion.core.db import Base
from bastion.core.errors import DependencyUnavailable
from bastion.security.session_cache import STORE_OPTION, SessionCache, watch_writes

_M = TypeVar("_M", bound=Callable[..., Any])
_T = TypeVar("_T")


class SessionStoreUnavailable(DependencyUnavailable):
    """The session store did not answer; the request must fail closed with a 503."""


class UnreadableSession(ValueError):
    """A stored record that is not one of ours: not JSON, or not a session's fields.

    Never unpickled or guessed at. The session manager deletes it and starts the browser
    on a new session (security/sessions.py); listings leave it out (`readable`).
    """


_UNREADABLE = (ValueError, TypeError, KeyError, AttributeError)  # what parsing raises


def _checked(record: SessionRecord) -> SessionRecord:
    """`record` if its fields have the types the session code relies on; else unreadable
    (valid JSON can still hold `"data": 5` or `"expires_at": null`)."""
    times = (record.created_at, record.last_seen_at, record.expires_at)
    if not (
        isinstance(record.key, str)
        and (record.user_id is None or isinstance(record.user_id, int))
        and isinstance(record.data, dict)
        and isinstance(record.extra, dict)
        and (record.owner_copy is None or isinstance(record.owner_copy, dict))
        and all(isinstance(moment, datetime) for moment in times)
        and (record.auth_at is None or isinstance(record.auth_at, datetime))
    ):
        raise UnreadableSession
    return record


def readable(parse: Callable[[_T], SessionRecord], stored: Iterable[_T]) -> list[SessionRecord]:
    """The records among `stored` that `parse` can read; an unreadable one is left out."""
    records = []
    for item in stored:
        with suppress(UnreadableSession):
            records.append(parse(item))
    return records


@dataclass
class SessionRecord:
    """One server-side session: its owner, data and the times that bound its life."""

    key: str
    user_id: int | None
    data: dict[str, Any]
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    auth_at: datetime | None = None
    ip: str | None = None
    user_agent: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # Redis store: a copy of the owner's `users` row, its hash left out, tagged with the
    # users generation it was read under (redis_store.py). Stored with the record.
    owner_copy: dict[str, Any] | None = field(default=None, repr=False, compare=False)
    # The owner's `users` row, when the store read it with the session (the SQL store's
    # join, or a current Redis copy); the user loader then needs no query of its own.
    # Never stored.
    owner: dict[str, Any] | None = field(default=None, repr=False, compare=False)
    # Redis store: the users generation current when this record was read. Never stored.
    generation: int = field(default=0, repr=False, compare=False)

    def to_json(self) -> str:
        doc = asdict(self)
        del doc["owner"], doc["generation"]
        for name in ("created_at", "last_seen_at", "expires_at", "auth_at"):
            value = doc[name]
            doc[name] = value.isoformat() if value is not None else None
        return json.dumps(doc, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> SessionRecord:
        try:
            doc = json.loads(raw)
            for name in ("created_at", "last_seen_at", "expires_at", "auth_at"):
                if doc.get(name) is not None:
                    doc[name] = datetime.fromisoformat(doc[name])
            record = cls(**doc)
        except _UNREADABLE as exc:
            raise UnreadableSession from exc
        return _checked(record)


class SessionStore(Protocol):
    def get(self, key: str) -> SessionRecord | None: ...
    def save(self, record: SessionRecord, idle_seconds: int, *, new: bool = False) -> None:
        """Store `record`; `new` promises its key was never stored (a fresh random id)."""

    def touch(self, record: SessionRecord, idle_seconds: int) -> None: ...
    def delete(self, key: str) -> None: ...
    def delete_for_user(self, user_id: int, *, keep: str | None = None) -> int: ...
    def list_for_user(self, user_id: int) -> list[SessionRecord]: ...
    def list_all(
        self, *, user_id: int | None, now: datetime, idle_seconds: int, limit: int, offset: int
    ) -> tuple[list[SessionRecord], int]: ...
    def purge_expired(self, now: datetime, idle_seconds: int) -> int: ...
    def ping(self) -> None: ...
    def keep_owner(self, record: SessionRecord, row: Mapping[str, Any]) -> bool:
        """Keep `row` (the owner's, just read) with `record`; True if the record must be
        saved for it."""


class StoredSession(Base):
    """The embedded profile's session table."""

    __tablename__ = "sessions"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    data: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    last_seen_at: Mapped[datetime] = mapped_column(index=True)
    expires_at: Mapped[datetime] = mapped_column(index=True)
    auth_at: Mapped[datetime | None]
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(512))


def _row_values(record: SessionRecord) -> dict[str, Any]:
    return {
        "key": record.key,
        "user_id": record.user_id,
        "data": json.dumps({"data": record.data, "extra": record.extra}),
        "created_at": record.created_at,
        "last_seen_at": record.last_seen_at,
        "expires_at": record.expires_at,
        "auth_at": record.auth_at,
        "ip": record.ip,
        "user_agent": (record.user_agent or "")[:512] or None,
    }


def _record_from_row(row: Mapping[Any, Any]) -> SessionRecord:
    try:
        payload = json.loads(row["data"])
        data, extra = payload["data"], payload.get("extra", {})
    except _UNREADABLE as exc:
        raise UnreadableSession from exc
    return _checked(
        SessionRecord(
            key=row["key"],
            user_id=row["user_id"],
            data=data,
            extra=extra,
            created_at=row["created_at"],
            last_seen_at=row["last_seen_at"],
            expires_at=row["expires_at"],
            auth_at=row["auth_at"],
            ip=row["ip"],
            user_agent=row["user_agent"],
        )
    )


def _db_unavailable(method: _M) -> _M:
    """Turn a database failure inside a store call into SessionStoreUnavailable (503)."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except SQLAlchemyError as exc:
            raise SessionStoreUnavailable from exc

    return cast(_M, wrapper)


class SqlSessionStore:
    """Sessions in the database, written on their own short connection.

    A separate connection keeps session writes out of the request's unit of work: a view
    that fails and rolls back never has its half-done changes committed by a session save.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.table: Table = StoredSession.__table__  # type: ignore[assignment]
        # The statements every request runs, built once: building and cache-keying a
        # statement costs more than running it on SQLite.
        by_key = self.table.c.key == bindparam("match_key")
        self._by_key = by_key
        self._select: Select[Any] | None = None  # built on first use: see _session_and_owner
        self._owner_columns: dict[str, str] = {}
        self._unpackers: list[tuple[str, Callable[[Any], Any] | None]] = []
        # Writes to one session, which forget its copied row themselves (`_forget`).
        own = {STORE_OPTION: True}
        self._insert = self.table.insert().execution_options(**own)
        self._update = self.table.update().where(by_key).execution_options(**own)
        self._touch = self._update.values(last_seen_at=bindparam("seen"))
        self._delete = self.table.delete().where(by_key).execution_options(**own)
        # SQLite only (see session_cache.py): a signed-in page's row from memory.
        self._cache: SessionCache | None = None
        if engine.dialect.name == "sqlite":
            self._cache = SessionCache()
            watch_writes(engine, self._cache.forget_all)

    def _session_and_owner(self) -> Select[Any]:
        """The session and its owner's row in one query, built once.

        A signed-in page then makes one database round trip instead of two (app.py's user
        loader takes the row). Built on first use, when the accounts models are mapped; a
        tool that never maps them reads the session alone.
        """
        if self._select is None:
            users = self.table.metadata.tables.get("users")
            columns: list[Any] = list(self.table.c)
            joined: Any = self.table
            if users is not None:
                self._owner_columns = {f"owner_{c.name}": c.name for c in users.c}
                columns += [c.label(f"owner_{c.name}") for c in users.c]
                joined = self.table.outerjoin(users, users.c.id == self.table.c.user_id)
            packed = self._packed(columns)
            statement = packed if packed is not None else select(*columns)
            self._select = statement.select_from(joined).where(self._by_key)
        return self._select

    def _packed(self, columns: list[Any]) -> Select[Any] | None:
        """On SQLite, the same row as one JSON array: one column instead of ~20.

        Python 3.11's sqlite3 lets the GIL go around every column it reads, and under load
        each release is a hand-off to another request thread (12 -> 10 context switches a
        page, bench/switches.py). The text is also what the in-process copy keeps
        (session_cache.py), so every hit builds fresh objects. The values come back as
        SQLAlchemy's own result processors would return them (`_unpack`).
        """
        dialect = self.engine.dialect
        if dialect.name != "sqlite":
            return None
        self._unpackers = [
            (column.key, column.type.dialect_impl(dialect).result_processor(dialect, None))
            for column in columns
        ]
        return select(func.json_array(*columns))

    def _unpack(self, packed: str) -> dict[str, Any]:
        values = json.loads(packed)
        return {
            key: value if process is None or value is None else process(value)
            for (key, process), value in zip(self._unpackers, values, strict=True)
        }

    @_db_unavailable
    def get(self, key: str) -> SessionRecord | None:
        row = self._row(key)
        if row is None:
            return None
        record = _record_from_row(row)
        if row.get("owner_id") is not None:
            record.owner = {name: row[label] for label, name in self._owner_columns.items()}
        return record

    def _row(self, key: str) -> Mapping[Any, Any] | None:
        """The session's row and its owner's: from the in-process copy, else the database."""
        statement = self._session_and_owner()
        cache = self._cache
        packed = cache.get(key) if cache is not None else None
        if packed is None:
            ticket = cache.ticket(key) if cache is not None else None
            with self.engine.connect() as conn:
                found = conn.execute(statement, {"match_key": key}).first()
            if found is None:
                return None
            if not self._unpackers:
                return found._mapping
            packed = found[0]
            if cache is not None and ticket is not None:
                cache.put(key, packed, ticket)
        return self._unpack(packed)

    def _forget(self, key: str) -> None:
        """After our own committed write to session `key`: the copy must not outlive it."""
        if self._cache is not None:
            self._cache.forget(key)

    @_db_unavailable
    def save(self, record: SessionRecord, idle_seconds: int, *, new: bool = False) -> None:
        values = _row_values(record)
        with self.engine.begin() as conn:
            if new or not conn.execute(self._update, {"match_key": record.key, **values}).rowcount:
                conn.execute(self._insert, values)
        self._forget(record.key)

    @_db_unavailable
    def touch(self, record: SessionRecord, idle_seconds: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(self._touch, {"match_key": record.key, "seen": record.last_seen_at})
        self._forget(record.key)

    @_db_unavailable
    def delete(self, key: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(self._delete, {"match_key": key})
        self._forget(key)

    @_db_unavailable
    def delete_for_user(self, user_id: int, *, keep: str | None = None) -> int:
        # Not marked as the store's own: `watch_writes` forgets every copied row for it.
        statement = delete(StoredSession).where(StoredSession.user_id == user_id)
        if keep is not None:
            statement = statement.where(StoredSession.key != keep)
        with self.engine.begin() as conn:
            return int(conn.execute(statement).rowcount)

    @_db_unavailable
    def list_for_user(self, user_id: int) -> list[SessionRecord]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(self.table).where(self.table.c.user_id == user_id))
            return readable(_record_from_row, rows.mappings())

    @_db_unavailable
    def list_all(
        self, *, user_id: int | None, now: datetime, idle_seconds: int, limit: int, offset: int
    ) -> tuple[list[SessionRecord], int]:
        """Signed-in sessions alive at `now` (one user's, or everyone's), newest first."""
        c = self.table.c
        alive = [
            c.user_id.is_not(None),
            c.expires_at > now,
            c.last_seen_at > now - timedelta(seconds=idle_seconds),
        ]
        if user_id is not None:
            alive.append(c.user_id == user_id)
        with self.engine.connect() as conn:
            total = conn.scalar(select(func.count()).select_from(self.table).where(*alive))
            rows = conn.execute(
                select(self.table)
                .where(*alive)
                .order_by(c.last_seen_at.desc(), c.key.desc())
                .limit(limit)
                .offset(offset)
            )
            return readable(_record_from_row, rows.mappings()), int(total or 0)

    @_db_unavailable
    def purge_expired(self, now: datetime, idle_seconds: int) -> int:
        idle_cutoff = now - timedelta(seconds=idle_seconds)
        with self.engine.begin() as conn:
            result = conn.execute(
                delete(StoredSession).where(
                    (StoredSession.expires_at <= now) | (StoredSession.last_seen_at <= idle_cutoff)
                )
            )
            return int(result.rowcount)

    @_db_unavailable
    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(select(1))

    def keep_owner(self, record: SessionRecord, row: Mapping[str, Any]) -> bool:
        return False  # the owner is read with the session anyway (`_session_and_owner`)
