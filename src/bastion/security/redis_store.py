"""The scale-out profile's session store: Redis, one key per session and a set per user.

Kept apart from session_store.py so the embedded profile never imports redis-py (a few MiB
per worker it would not use).

The owner's row rides along. A signed-in page needs the session and its owner's `users`
row; reading the row from PostgreSQL on every page took about half the node's throughput
(bench/run.py: 0.20x bare Flask with it, 0.36x without). So a session record keeps a copy
of the row (the password hash left out), and the page reads the record and the **users
generation** in one MGET. Every write to `users` through the app's engine bumps that
generation (`watch_users`): when the statement runs, where a failure to bump fails the
write (a 503, nothing committed), and again once its transaction is over. A copy is used
only if it was read under the current generation, so a role change, a disabled account
or any other change to any user is seen by every node on its next request. A copy read
while a change was committing carries the generation before the second bump, so it is
never used. A copy is also never older than OWNER_MAX_AGE: the bound on what only a Redis
failure in the instant between a commit and its second bump, or a write made outside the
app (psql), could leave behind.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import redis
import structlog
from sqlalchemy import Column, DateTime, MetaData
from sqlalchemy.engine import Engine

from bastion.core.clock import utcnow
from bastion.security.session_cache import watch_writes
from bastion.security.session_store import SessionRecord, SessionStoreUnavailable, readable

log = structlog.get_logger("bastion.sessions")

OWNER_MAX_AGE = timedelta(seconds=30)
OWNER_LEFT_OUT = frozenset({"password_hash"})  # loaded from the database if ever needed


class RedisSessionStore:
    """Sessions in Redis: one key per session (TTL = idle timeout) and a set per user."""

    def __init__(
        self, client: redis.Redis[bytes], prefix: str, metadata: MetaData | None = None
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.generation_key = f"{prefix}users-generation"
        self._metadata = metadata
        self._times: frozenset[str] | None = None

    @property
    def _owner_times(self) -> frozenset[str] | None:
        """The `users` columns that hold times (JSON keeps them as ISO text), found on first
        use, once the accounts models are mapped; None: no owner rows are copied."""
        if self._times is None and self._metadata is not None:
            users = self._metadata.tables.get("users")
            if users is not None:
                self._times = frozenset(c.name for c in users.c if _holds_times(c))
        return self._times

    def _key(self, key: str) -> str:
        return f"{self.prefix}session:{key}"

    def _user_index(self, user_id: int) -> str:
        return f"{self.prefix}user-sessions:{user_id}"

    @staticmethod
    def _ttl(record: SessionRecord, idle_seconds: int) -> int:
        absolute = int((record.expires_at - record.last_seen_at).total_seconds())
        return max(1, min(idle_seconds, absolute))

    def get(self, key: str) -> SessionRecord | None:
        try:
            raw, generation = self.client.mget(self._key(key), self.generation_key)
        except redis.RedisError as exc:
            raise SessionStoreUnavailable from exc
        if raw is None:
            return None
        record = SessionRecord.from_json(raw)
        record.generation = int(generation or 0)
        record.owner = self._current_owner(record)
        return record

    def _current_owner(self, record: SessionRecord) -> dict[str, Any] | None:
        """The copied owner row if it is current (its generation, its user, its age)."""
        copy = record.owner_copy
        if copy is None or self._owner_times is None or record.user_id is None:
            return None
        try:
            row = dict(copy["row"])
            read_at = datetime.fromisoformat(copy["read_at"])
            if copy["generation"] != record.generation or row["id"] != record.user_id:
                return None
            for name in self._owner_times.intersection(row):
                if row[name] is not None:
                    row[name] = datetime.fromisoformat(row[name])
        except (KeyError, TypeError, ValueError):
            return None  # not a copy we wrote: read the row from the database
        if not timedelta(0) <= utcnow() - read_at < OWNER_MAX_AGE:
            return None
        return row

    def keep_owner(self, record: SessionRecord, row: Mapping[str, Any]) -> bool:
        """Copy `row` into `record`, under the generation `record` was read with."""
        if self._owner_times is None or record.user_id is None or row.get("id") != record.user_id:
            return False
        kept = {
            name: value.isoformat() if isinstance(value, datetime) else value
            for name, value in row.items()
            if name not in OWNER_LEFT_OUT
        }
        record.owner_copy = {
            "generation": record.generation,
            "read_at": utcnow().isoformat(),
            "row": kept,
        }
        return True

    def users_changed(self) -> None:
        """A `users` row is being or was written: every copied owner row is out of date."""
        try:
            self.client.incr(self.generation_key)
        except redis.RedisError as exc:
            raise SessionStoreUnavailable from exc

    def watch_users(self, engine: Engine) -> None:
        """Bump the users generation on every write to `users` through `engine`."""
        watch_writes(engine, self.users_changed, frozenset({"users"}), self._users_committed)

    def _users_committed(self) -> None:
        try:
            self.users_changed()
        except SessionStoreUnavailable:
            # Committed already: the bump when the write ran stands, and OWNER_MAX_AGE
            # bounds a copy read in between.
            log.error("users generation not bumped after a commit")

    def save(self, record: SessionRecord, idle_seconds: int, *, new: bool = False) -> None:
        try:
            pipe = self.client.pipeline(transaction=True)
            pipe.set(self._key(record.key), record.to_json(), ex=self._ttl(record, idle_seconds))
            if record.user_id is not None:
                index = self._user_index(record.user_id)
                pipe.sadd(index, record.key)
                # The index lives as long as the user's longest session: set an expiry if
                # it has none, otherwise only ever extend it (touching an older session
                # must not let the index expire under a newer one and escape revocation).
                pipe.expireat(index, record.expires_at, nx=True)
                pipe.expireat(index, record.expires_at, gt=True)
            pipe.execute()
        except redis.RedisError as exc:
            raise SessionStoreUnavailable from exc

    def touch(self, record: SessionRecord, idle_seconds: int) -> None:
        self.save(record, idle_seconds)

    def delete(self, key: str) -> None:
        try:
            self.client.delete(self._key(key))
        except redis.RedisError as exc:
            raise SessionStoreUnavailable from exc

    def delete_for_user(self, user_id: int, *, keep: str | None = None) -> int:
        index = self._user_index(user_id)
        try:
            members = [
                m.decode() if isinstance(m, bytes) else str(m) for m in self.client.smembers(index)
            ]
            doomed = [m for m in members if m != keep]
            if not doomed:
                return 0
            pipe = self.client.pipeline(transaction=True)
            pipe.delete(*(self._key(m) for m in doomed))
            pipe.srem(index, *doomed)
            deleted, _ = pipe.execute()
            return int(deleted)
        except redis.RedisError as exc:
            raise SessionStoreUnavailable from exc

    def list_for_user(self, user_id: int) -> list[SessionRecord]:
        index = self._user_index(user_id)
        try:
            members = [
                m.decode() if isinstance(m, bytes) else str(m) for m in self.client.smembers(index)
            ]
            if not members:
                return []
            raws = self.client.mget([self._key(m) for m in members])
            gone = [m for m, raw in zip(members, raws, strict=True) if raw is None]
            if gone:
                self.client.srem(index, *gone)
        except redis.RedisError as exc:
            raise SessionStoreUnavailable from exc
        return readable(SessionRecord.from_json, (raw for raw in raws if raw is not None))

    def list_all(
        self, *, user_id: int | None, now: datetime, idle_seconds: int, limit: int, offset: int
    ) -> tuple[list[SessionRecord], int]:
        """Signed-in sessions alive at `now` (one user's, or everyone's), newest first.

        Everyone's sessions take a SCAN over this prefix's session keys: O(sessions), which
        is fine for an admin page; one user's come from that user's index set.
        """
        if user_id is not None:
            records = self.list_for_user(user_id)
        else:
            records = []
            try:
                keys = list(
                    self.client.scan_iter(match=_glob_escape(self._key("")) + "*", count=500)
                )
                for start in range(0, len(keys), 500):
                    raws = self.client.mget(keys[start : start + 500])
                    present = (raw for raw in raws if raw is not None)
                    records.extend(readable(SessionRecord.from_json, present))
            except redis.RedisError as exc:
                raise SessionStoreUnavailable from exc
        idle = timedelta(seconds=idle_seconds)
        alive = [
            r
            for r in records
            if r.user_id is not None and r.expires_at > now and now - r.last_seen_at < idle
        ]
        alive.sort(key=lambda r: (r.last_seen_at, r.key), reverse=True)
        return alive[offset : offset + limit], len(alive)

    def purge_expired(self, now: datetime, idle_seconds: int) -> int:
        return 0  # Redis expires keys itself (TTL); user indexes are pruned on read.

    def ping(self) -> None:
        try:
            self.client.ping()
        except redis.RedisError as exc:
            raise SessionStoreUnavailable from exc


def _holds_times(column: Column[Any]) -> bool:
    """Whether `column` holds datetimes (our UTCDateTime decorates DateTime)."""
    kind = column.type
    return isinstance(getattr(kind, "impl_instance", kind), DateTime)


def _glob_escape(text: str) -> str:
    """`text` as a literal in a Redis MATCH pattern (a prefix may hold glob characters)."""
    return "".join("\\" + ch if ch in "\\*?[]" else ch for ch in text)


def redis_client(url: str, timeout: float) -> redis.Redis[bytes]:
    """A Redis client with explicit timeouts: redis-py's default is to wait forever."""
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry_on_timeout=False,
        health_check_interval=30,
    )
