"""The scale-out profile's session store: Redis, one key per session and a set per user.

Kept apart from session_store.py so the embedded profile never imports redis-py (a few MiB
per worker it would not use).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import redis

from bastion.security.session_store import SessionRecord, SessionStoreUnavailable, readable


class RedisSessionStore:
    """Sessions in Redis: one key per session (TTL = idle timeout) and a set per user."""

    def __init__(self, client: redis.Redis[bytes], prefix: str) -> None:
        self.client = client
        self.prefix = prefix

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
            raw = self.client.get(self._key(key))
        except redis.RedisError as exc:
            raise SessionStoreUnavailable from exc
        if raw is None:
            return None
        return SessionRecord.from_json(raw)

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
