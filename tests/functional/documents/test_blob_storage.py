"""How the database storage backend keeps its chunks on PostgreSQL (migration 0007)."""

from __future__ import annotations

import pytest
from flask import Flask
from sqlalchemy import text

from bastion.core.db import db


def test_postgresql_stores_document_chunks_uncompressed(app: Flask) -> None:
    """pglz compression of each 1 MiB chunk held uploads to ~35 MB/s (bench/documents.py)."""
    with app.app_context(), db.engine.connect() as conn:
        if conn.dialect.name != "postgresql":
            pytest.skip("a PostgreSQL storage setting; SQLite has none")
        storage = conn.scalar(
            text(
                "SELECT attstorage FROM pg_attribute "
                "WHERE attrelid = 'document_blobs'::regclass AND attname = 'data'"
            )
        )
    assert storage == "e"  # EXTERNAL: out of line, never compressed
