"""The declarative base, UTC timestamps and the database engine options per backend."""

from __future__ import annotations

import functools
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import DateTime, MetaData, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, registry
from sqlalchemy.types import TypeDecorator
from werkzeug.wrappers import Response

# Stable constraint names, so Alembic migrations are identical on SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always returned timezone-aware.

    SQLite has no time zones and returns naive values; normalising here means the rest of
    the code only ever compares aware datetimes.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    registry = registry(
        metadata=MetaData(naming_convention=NAMING_CONVENTION),
        type_annotation_map={datetime: UTCDateTime()},
    )


def engine_options(url: str, connect_timeout: int) -> dict[str, Any]:
    """Engine options for every engine Bastion builds (the app's and the lookup pool).

    Explicit timeouts, so a dead database gives a fast 503, not a hang; and no SQL
    parameters in error messages (``hide_parameters``): a DBAPI error's text otherwise ends
    in ``[parameters: (...)]``, and the unexpected-error handler logs it with its traceback.
    A registration race would log the new account's password hash (ASVS 16.2.5).
    """
    # Enough pooled connections for every request thread and the app's own threads: past
    # pool_size, each checkout opens a connection and each return closes it again.
    pool = {"pool_size": 10, "max_overflow": 5, "pool_timeout": connect_timeout}
    if url.startswith("sqlite"):
        options: dict[str, Any] = {
            "connect_args": {"timeout": 5, "check_same_thread": False},
            "hide_parameters": True,
        }
        if make_url(url).database not in (None, "", ":memory:"):  # a file: QueuePool
            options.update(pool)
        return options
    return {
        "connect_args": {"connect_timeout": connect_timeout},
        "hide_parameters": True,
        # No pre-ping: it costs a round trip on every checkout (three per page). A connection
        # the server dropped fails once, answered 503, and the pool replaces it.
        "pool_recycle": 300,
        **pool,
    }


# SQLite checkpoints (copies the write-ahead log into the database file and syncs both)
# once the log passes ~1,000 pages by default, inside whichever commit crossed the line:
# a 16 MB upload to database storage spent two thirds of its time there. Bastion runs them
# after the response instead (DeferredCheckpoint) and keeps SQLite's own as a far backstop.
CHECKPOINT_AFTER_BYTES = 4 * 1024 * 1024
BACKSTOP_CHECKPOINT_PAGES = 16_384  # 64 MiB of 4 KiB pages

log = structlog.get_logger("bastion.db")


def _sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers run beside the one writer; foreign keys are off by default in SQLite.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_CHECKPOINT_PAGES}")
    # Once a checkpoint has copied everything, the next writer truncates the log to this.
    cursor.execute(f"PRAGMA journal_size_limit={CHECKPOINT_AFTER_BYTES}")
    cursor.close()


def install_sqlite_pragmas(engine: Engine) -> None:
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)


# In the log file's header (SQLite file format, "WAL File Format"): the checkpoint
# sequence number and salts at bytes 12-24 change each time the log restarts from its
# start, so together they name the log's current generation.
_WAL_GENERATION = slice(12, 24)
# How often a process looks at the log at all. A look is three system calls, each of which
# hands the GIL to another request thread: looking after every request cost the login page
# (one small write each) ~10 % of its throughput under wrk; ten looks a second cost nothing
# measurable and leave a checkpoint due at most that much later.
LOOK_EVERY_SECONDS = 0.1


class DeferredCheckpoint:
    """Checkpoint the SQLite log after a response has gone, once it has grown.

    SQLite's documentation suggests moving checkpoints off the writers' path ("run
    checkpoints in a separate thread"); gunicorn closes a response (``call_on_close``)
    after sending it, on the request's own thread, so no thread of our own is needed.
    PASSIVE never waits for readers or blocks writers.

    The cadence is SQLite's own: a checkpoint per ~4 MiB written to the log. A restarted
    log is truncated to 4 MiB (journal_size_limit), so a file larger than that holds more
    than 4 MiB of this generation's frames; after a checkpoint has copied all of a
    generation, the next one waits for 4 MiB more of it or for a new generation. A
    process runs one at a time and looks at most every LOOK_EVERY_SECONDS.
    """

    def __init__(self, engine: Engine, database: str) -> None:
        self.engine = engine
        self.wal = Path(f"{database}-wal")
        self._running = threading.Lock()
        self._copied: tuple[bytes, int] | None = None  # (generation, log size) copied
        self._next_look = 0.0

    def after_request(self, response: Response) -> Response:
        now = time.monotonic()
        if now < self._next_look:
            return response
        self._next_look = now + LOOK_EVERY_SECONDS
        try:
            size = self.wal.stat().st_size
            if size <= CHECKPOINT_AFTER_BYTES:
                return response
            with self.wal.open("rb") as wal:
                generation = wal.read(_WAL_GENERATION.stop)[_WAL_GENERATION]
        except OSError:
            return response
        if self._copied is not None:
            copied_generation, copied_size = self._copied
            if generation == copied_generation and size < copied_size + CHECKPOINT_AFTER_BYTES:
                return response
        response.call_on_close(functools.partial(self.checkpoint, (generation, size)))
        return response

    def checkpoint(self, seen: tuple[bytes, int]) -> None:
        if not self._running.acquire(blocking=False):
            return
        try:
            with self.engine.connect() as conn:
                _busy, frames, copied = conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
            if frames == copied:
                self._copied = seen
        except SQLAlchemyError as exc:
            # The response has gone; the backstop checkpoint still bounds the log.
            log.warning("deferred sqlite checkpoint failed", error=type(exc).__name__)
        finally:
            self._running.release()


def defer_sqlite_checkpoints(app: Flask, engine: Engine) -> None:
    """On a file-backed SQLite database, checkpoint after responses (DeferredCheckpoint)."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        return
    app.after_request(DeferredCheckpoint(engine, database).after_request)


db = SQLAlchemy(model_class=Base)
