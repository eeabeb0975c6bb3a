"""How the database storage backend keeps its chunks on PostgreSQL (migrations 0007, 0008)."""

from __future__ import annotations

import pytest
from flask import Flask
from sqlalchemy import text

from bastion.core.db import db


def test_postgresql_stores_document_chunks_with_lz4(app: Flask) -> None:
    """pglz held uploads to ~35 MB/s and uncompressed chunks to ~55 (bench/documents.py).

    On a server without lz4, 0007's uncompressed storage stays: that is checked too.
    """
    with app.app_context(), db.engine.connect() as conn:
        if conn.dialect.name != "postgresql":
            pytest.skip("a PostgreSQL storage setting; SQLite has none")
        methods = conn.scalar(
            text("SELECT enumvals FROM pg_settings WHERE name = 'default_toast_compression'")
        )
        storage, compression = conn.execute(
            text(
                "SELECT attstorage, attcompression FROM pg_attribute "
                "WHERE attrelid = 'document_blobs'::regclass AND attname = 'data'"
            )
        ).one()
    if "lz4" in (methods or ()):
        assert (storage, compression) == ("x", "l")  # EXTENDED, compressed with lz4
    else:
        assert storage == "e"  # EXTERNAL: out of line, never compressed
