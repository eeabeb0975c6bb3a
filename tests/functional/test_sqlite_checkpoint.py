"""SQLite's log is checkpointed after the response that found it grown, not in a commit."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import Engine, create_engine
from werkzeug.wrappers import Response

from bastion import create_app
from bastion.app import close_app
from bastion.core import db as core_db
from bastion.core.db import (
    BACKSTOP_CHECKPOINT_PAGES,
    CHECKPOINT_AFTER_BYTES,
    DeferredCheckpoint,
    db,
)
from bastion.settings import Settings
from tests.conftest import HttpsClient

MiB = 1024 * 1024


@pytest.fixture(autouse=True)
def look_after_every_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests follow the log request by request; the last one restores the pace."""
    monkeypatch.setattr(core_db, "LOOK_EVERY_SECONDS", 0.0)


@pytest.fixture
def sqlite_app(tmp_path: Path) -> Iterator[Flask]:
    """An app on a SQLite file of its own, so no other test's writes touch its log."""
    app = create_app(Settings.for_tests(instance_path=tmp_path))
    app.test_client_class = HttpsClient
    yield app
    close_app(app)


def _engine(app: Flask) -> Engine:
    with app.app_context():
        return db.engine


def _write(engine: Engine, size: int) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS scratch (data BLOB)")
        for _ in range(size // MiB):
            conn.exec_driver_sql("INSERT INTO scratch VALUES (?)", (b"\x01" * MiB,))


def test_commits_leave_the_checkpoint_to_after_the_response(sqlite_app: Flask) -> None:
    engine = _engine(sqlite_app)
    database = Path(str(engine.url.database))
    _write(engine, 8 * MiB)  # over the deferred threshold, far under the backstop
    size_after_commit = database.stat().st_size
    assert Path(f"{database}-wal").stat().st_size > CHECKPOINT_AFTER_BYTES

    response = sqlite_app.test_client().get("/healthz")
    assert response.status_code == 200
    assert database.stat().st_size == size_after_commit  # nothing copied during the request

    response.close()  # what gunicorn does once the response has been sent
    assert database.stat().st_size >= size_after_commit + 8 * MiB


def test_small_logs_are_left_alone(sqlite_app: Flask) -> None:
    engine = _engine(sqlite_app)
    database = Path(str(engine.url.database))
    _write(engine, 1 * MiB)
    size_after_commit = database.stat().st_size

    sqlite_app.test_client().get("/healthz").close()

    assert database.stat().st_size == size_after_commit


def test_sqlite_keeps_its_own_checkpoint_only_as_a_far_backstop(sqlite_app: Flask) -> None:
    with _engine(sqlite_app).connect() as conn:
        pages = conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()
        limit = conn.exec_driver_sql("PRAGMA journal_size_limit").scalar()
    assert pages == BACKSTOP_CHECKPOINT_PAGES
    assert limit == CHECKPOINT_AFTER_BYTES


def test_writes_that_leave_the_log_the_same_size_are_checkpointed_too(sqlite_app: Flask) -> None:
    engine = _engine(sqlite_app)
    database = Path(str(engine.url.database))
    client = sqlite_app.test_client()
    for _ in range(4):
        # The log restarts from its start each time: by the third write its size repeats.
        _write(engine, 8 * MiB)
        size_after_commit = database.stat().st_size

        client.get("/healthz").close()

        assert database.stat().st_size >= size_after_commit + 8 * MiB


class CountedCheckpoint(DeferredCheckpoint):
    """Counts the checkpoints it would run; each copies the whole log."""

    def __init__(self, database: Path) -> None:
        super().__init__(create_engine(f"sqlite:///{database}"), str(database))
        self.runs = 0

    def checkpoint(self, seen: tuple[bytes, int]) -> None:
        self.runs += 1
        self._copied = seen

    def after_response(self) -> int:
        self.after_request(Response("ok")).close()
        return self.runs


def _log(path: Path, generation: bytes, size: int) -> None:
    """A log file of `size` bytes whose header names `generation` (bytes 12-24)."""
    header = bytes(12) + generation.ljust(12, b"\0") + bytes(8)
    path.write_bytes(header + bytes(size - len(header)))


def test_checkpoints_keep_sqlites_cadence_of_one_per_4_mib_of_log(tmp_path: Path) -> None:
    counted = CountedCheckpoint(tmp_path / "bastion.db")
    wal = tmp_path / "bastion.db-wal"
    over = CHECKPOINT_AFTER_BYTES + MiB

    _log(wal, b"first", CHECKPOINT_AFTER_BYTES)
    assert counted.after_response() == 0  # within the limit
    _log(wal, b"first", over)
    assert counted.after_response() == 1
    # Small writes appended to a log that could not restart (readers in it): no checkpoint
    # for each of them, only once 4 MiB more have been written.
    _log(wal, b"first", over + 100_000)
    assert counted.after_response() == 1
    _log(wal, b"first", over + CHECKPOINT_AFTER_BYTES)
    assert counted.after_response() == 2
    # The log restarted (a new generation) and grew back to the very same size.
    _log(wal, b"second", over + CHECKPOINT_AFTER_BYTES)
    assert counted.after_response() == 3


def test_a_process_looks_at_the_log_at_most_ten_times_a_second(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(core_db, "LOOK_EVERY_SECONDS", 0.1)
    clock = [1000.0]
    monkeypatch.setattr(core_db.time, "monotonic", lambda: clock[0])
    counted = CountedCheckpoint(tmp_path / "bastion.db")
    wal = tmp_path / "bastion.db-wal"

    _log(wal, b"first", CHECKPOINT_AFTER_BYTES + MiB)
    assert counted.after_response() == 1
    _log(wal, b"second", CHECKPOINT_AFTER_BYTES + MiB)  # due, but looked 60 ms ago
    clock[0] += 0.06
    assert counted.after_response() == 1
    clock[0] += 0.06
    assert counted.after_response() == 2
