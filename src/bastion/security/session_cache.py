"""The embedded profile's in-process copy of signed-in session rows, for one second at most.

Why: on SQLite, reading the session (and its owner's row) was most of a signed-in page's
cost under load. Python 3.11's sqlite3 lets the GIL go around every call into SQLite, and
with several request threads each release hands the GIL to another thread and back:
bench/switches.py counted 12 of a page's 47 context switches in that one query, and
dropping it took the page from ~5 ms to ~3 ms of worker CPU under wrk (bench/run.py).

What a cached row may miss, and for how long:

- Nothing this process wrote. The session store forgets a session's row once its own write
  to it has committed (`forget`). Every other statement that writes to ``sessions`` or
  ``users`` on the app's engine (the ORM disabling a user, changing a role or a password)
  empties the whole copy when it runs and again when its connection goes back to the pool,
  that is after its transaction ended (`watch_writes`).
- A write that committed between a database read and the copy being stored. A reader takes
  a `ticket` before it reads, and `put` drops the row if any forgetting happened since.
- Writes from another process (the `bastion` CLI on the same database file): seen within
  `TTL_SECONDS`, when the copy runs out. ``bastion sessions revoke-all`` says so.

Only the SQLite store uses it: SQLite is one machine's file, served by one process (the
embedded profile refuses a second worker). Several nodes sharing PostgreSQL or Redis read
the store on every request, so a revocation on one node holds on all at once.

Hand-written: the copy must be forgotten on exactly these writes, which a generic cache
library can't know of; what it holds is the row's text, so every hit builds fresh objects.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

TTL_SECONDS = 1.0
MAX_ENTRIES = 10_000  # beyond this the copy starts again empty (bounded memory)
WATCHED_TABLES = frozenset({"sessions", "users"})
# Statements the session store runs itself: it forgets their rows precisely (`forget`).
STORE_OPTION = "bastion_session_store"
_DIRTY = "bastion_session_cache_dirty"  # on a pooled connection that wrote a watched table


@dataclass(frozen=True)
class Ticket:
    """Where the copy stood when a database read began."""

    generation: int
    version: int
    taken_at: float


class SessionCache:
    """Session key -> (row text, when it was read), valid for `ttl` seconds."""

    def __init__(
        self, ttl: float = TTL_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[str, float]] = {}
        self._generation = 0  # moves on every `forget_all`
        self._versions: dict[str, int] = {}  # moves on every `forget` of that key

    def get(self, key: str) -> str | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        row, read_at = entry
        if self._clock() - read_at >= self.ttl:
            return None
        return row

    def ticket(self, key: str) -> Ticket:
        """Taken before reading `key` from the database; `put` needs it still current."""
        with self._lock:
            return Ticket(self._generation, self._versions.get(key, 0), self._clock())

    def put(self, key: str, row: str, ticket: Ticket) -> None:
        """Keep `row` unless `key` was forgotten since `ticket`; it ages from the ticket."""
        with self._lock:
            if (ticket.generation, ticket.version) != (
                self._generation,
                self._versions.get(key, 0),
            ):
                return
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            self._entries[key] = (row, ticket.taken_at)

    def forget(self, key: str) -> None:
        """After a write to session `key` has committed."""
        with self._lock:
            self._entries.pop(key, None)
            self._versions[key] = self._versions.get(key, 0) + 1
            if len(self._versions) >= MAX_ENTRIES:
                self._forget_all()

    def forget_all(self) -> None:
        with self._lock:
            self._forget_all()

    def _forget_all(self) -> None:
        self._generation += 1
        self._entries.clear()
        self._versions.clear()


def _writes_watched_table(
    statement: str, context: Any, tables: frozenset[str] = WATCHED_TABLES
) -> bool:
    """Whether a statement may change a row of `tables` (unknown: yes)."""
    if statement.lstrip()[:6].upper() == "SELECT":
        return False
    if context is None:
        return True
    if context.execution_options.get(STORE_OPTION):
        return False  # the store forgets its own rows precisely
    if context.isinsert or context.isupdate or context.isdelete:
        table = getattr(context.compiled.statement, "table", None)
        return table is None or getattr(table, "name", None) in tables
    return True  # text SQL, DDL, pragmas: can't tell, so assume so


def watch_writes(
    engine: Engine,
    on_write: Callable[[], None],
    tables: frozenset[str] = WATCHED_TABLES,
    after_commit: Callable[[], None] | None = None,
) -> None:
    """Call `on_write` on any write to `tables` made through `engine`: when it runs (an
    error it raises fails the statement, so its transaction can't commit), and again once
    its connection is back in the pool (its transaction over: committed or rolled back),
    so no reader can keep a row it read before the commit. `after_commit`, if given, is
    called that second time instead (it can no longer fail the write)."""
    dirty = f"{_DIRTY}:{id(on_write)}"  # one flag per watcher on the pooled connection

    def after_execute(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        if _writes_watched_table(statement, context, tables):
            conn.info[dirty] = True  # the pooled connection's own info, kept to checkin
            on_write()

    def on_checkin(dbapi_connection: Any, record: Any) -> None:
        if record is not None and record.info.pop(dirty, False):
            (after_commit or on_write)()

    event.listen(engine, "after_cursor_execute", after_execute)
    event.listen(engine, "checkin", on_checkin)
