"""Where stored objects live: one interface, two backends, and a private staging area.

- ``FilesystemStorage`` keeps each object as ``<root>/objects/<k[:2]>/<key>`` (mode 0600)
  in a folder no route serves; an object appears by an atomic rename of a complete,
  fsync'ed staged file, so a reader never sees half a file.
- ``DatabaseStorage`` keeps objects as 1 MiB chunks in ``document_blobs``, written in the
  same transaction as the document row: several nodes on PostgreSQL share files with no
  extra service, and a rolled-back upload leaves no chunk behind.

Keys are ``secrets.token_hex(16)`` and checked against that shape before they touch a path.
Uploads are first written to ``<root>/tmp/*.part`` (``Staging``); a crash can leave only
such a file, which ``bastion storage gc`` removes.
"""

from __future__ import annotations

import functools
import os
import re
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO, Protocol

from sqlalchemy import bindparam, delete, insert, select
from sqlalchemy.engine import Connection, Dialect, Engine

from bastion.core.db import db
from bastion.documents.models import DocumentBlob

READ_CHUNK = 256 * 1024
BLOB_CHUNK = 1024 * 1024
_KEY = re.compile(r"[0-9a-f]{32}")


class StorageKind(StrEnum):
    FILESYSTEM = "filesystem"
    DATABASE = "database"


class StorageError(RuntimeError):
    """A stored object is missing or a key is malformed (never a client's fault)."""


def new_key() -> str:
    return secrets.token_hex(16)


def _checked(key: str) -> str:
    if not _KEY.fullmatch(key):
        raise StorageError("malformed storage key")
    return key


class Storage(Protocol):
    """A place for stored objects; the document row says which key belongs to whom."""

    def put(self, key: str, staged: Path) -> None:
        """Store the complete file at `staged` under `key` (the file may be consumed)."""

    def chunks(self, key: str) -> Iterator[bytes]:
        """Yield the object's bytes in chunks (flat memory, whatever its size)."""

    def delete(self, key: str) -> None:
        """Remove the object; removing a missing object is not an error."""

    def sweep(self, is_live: Callable[[str], bool], older_than: datetime) -> int:
        """Remove objects no document refers to, older than `older_than`; return how many."""


class FilesystemStorage:
    def __init__(self, root: Path) -> None:
        self.objects = root / "objects"

    def _path(self, key: str) -> Path:
        return self.objects / key[:2] / _checked(key)

    def put(self, key: str, staged: Path) -> None:
        target = self._path(key)
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _fsync(staged)  # the bytes reach the disk before the name does
        os.replace(staged, target)  # same file system as the staging area: atomic
        _fsync(target.parent)

    def chunks(self, key: str) -> Iterator[bytes]:
        # Checked now, so a missing object fails before any header is sent; opened on the
        # first read, so a response that is never read holds no file open.
        path = self._path(key)
        if not path.is_file():
            raise StorageError("stored object is missing")
        return _read(path)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def sweep(self, is_live: Callable[[str], bool], older_than: datetime) -> int:
        cutoff = older_than.timestamp()
        removed = 0
        if not self.objects.is_dir():
            return 0
        for path in self.objects.glob("*/*"):
            if not _KEY.fullmatch(path.name) or path.stat().st_mtime >= cutoff:
                continue
            if not is_live(path.name):
                path.unlink(missing_ok=True)
                removed += 1
        return removed


class DatabaseStorage:
    """Chunks in the SQL database, inside the caller's transaction (the caller commits)."""

    def put(self, key: str, staged: Path) -> None:
        _checked(key)
        with staged.open("rb") as stream:
            seq = 0
            while chunk := stream.read(BLOB_CHUNK):
                # Core inserts, one chunk at a time: the ORM would hold every chunk in memory.
                db.session.execute(insert(DocumentBlob), [{"key": key, "seq": seq, "data": chunk}])
                seq += 1

    def chunks(self, key: str) -> Iterator[bytes]:
        # The generator outlives the request context, so it reads through the engine (one
        # short pool checkout per chunk), never through the request's scoped session.
        engine = db.engine
        first = _chunk(engine, _checked(key), 0)
        if first is None:
            raise StorageError("stored object is missing")
        return _rest(engine, key, first)

    def delete(self, key: str) -> None:
        db.session.execute(delete(DocumentBlob).where(DocumentBlob.key == _checked(key)))

    def sweep(self, is_live: Callable[[str], bool], older_than: datetime) -> int:
        keys = db.session.scalars(
            select(DocumentBlob.key)
            .where(DocumentBlob.seq == 0, DocumentBlob.created_at < older_than)
            .distinct()
        ).all()
        dead = [key for key in keys if not is_live(key)]
        for key in dead:
            self.delete(key)
        db.session.commit()
        return len(dead)


class Staging:
    """Private temp files for uploads in progress, on the same file system as the objects."""

    def __init__(self, root: Path) -> None:
        self.root = root / "tmp"

    def create(self) -> tuple[Path, BinaryIO]:
        """A fresh temp file (mode 0600, opened read-write); the caller removes it."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.root / f"{secrets.token_hex(16)}.part"
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        return path, os.fdopen(descriptor, "w+b")

    @contextmanager
    def file(self) -> Iterator[tuple[Path, BinaryIO]]:
        """Yield a fresh temp file (path, open stream); it is removed afterwards if left."""
        path, stream = self.create()
        try:
            with stream:
                yield path, stream
        finally:
            path.unlink(missing_ok=True)

    def sweep(self, older_than: datetime) -> int:
        cutoff = older_than.timestamp()
        removed = 0
        if not self.root.is_dir():
            return 0
        for path in self.root.glob("*.part"):
            if path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
                removed += 1
        return removed


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


_CHUNK = select(DocumentBlob.data).where(
    DocumentBlob.key == bindparam("key"), DocumentBlob.seq == bindparam("seq")
)


def _chunk(engine: Engine, key: str, seq: int) -> bytes | None:
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            data = _chunk_in_binary(connection, key, seq)
        else:
            data = connection.scalar(_CHUNK, {"key": key, "seq": seq})
    return None if data is None else bytes(data)


@functools.cache
def _compiled_chunk_query(dialect: Dialect) -> str:
    """`_CHUNK` as SQL for `dialect`, compiled once (a download fetches it per chunk)."""
    return str(_CHUNK.compile(dialect=dialect))


def _chunk_in_binary(connection: Connection, key: str, seq: int) -> bytes | None:
    """The chunk through a binary-format psycopg cursor: no hex text to encode and parse.

    SQLAlchemy asks psycopg for text results, in which PostgreSQL spells a bytea out as hex
    (2 MiB for a 1 MiB chunk, decoded in the app): downloads ran at ~65 MB/s. The SQL is
    the statement above compiled by SQLAlchemy for this dialect, parameters still bound.
    """
    sql = _compiled_chunk_query(connection.dialect)
    driver = connection.connection.driver_connection
    with driver.cursor(binary=True) as cursor:  # type: ignore[union-attr]
        cursor.execute(sql, {"key": key, "seq": seq})
        row = cursor.fetchone()
    return None if row is None else bytes(row[0])


def _rest(engine: Engine, key: str, first: bytes) -> Iterator[bytes]:
    # One chunk in memory at a time, fetched as the client reads.
    chunk: bytes | None = first
    seq = 0
    while chunk is not None:
        yield chunk
        seq += 1
        chunk = _chunk(engine, key, seq)


def _read(path: Path) -> Iterator[bytes]:
    with path.open("rb") as stream:
        while chunk := stream.read(READ_CHUNK):
            yield chunk


def upload_root(instance_path: Path, upload_dir: str) -> Path:
    return Path(upload_dir) if upload_dir else instance_path / "uploads"


def build_storage(kind: str, root: Path) -> Storage:
    """Return the configured backend; raise ValueError naming the setting otherwise."""
    try:
        chosen = StorageKind(kind)
    except ValueError:
        allowed = "|".join(member.value for member in StorageKind)
        raise ValueError(f"BASTION_STORAGE must be one of {allowed}") from None
    if chosen is StorageKind.DATABASE:
        return DatabaseStorage()
    return FilesystemStorage(root)
