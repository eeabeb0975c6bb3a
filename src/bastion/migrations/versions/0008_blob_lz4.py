"""document blobs: lz4-compressed on PostgreSQL servers that have lz4

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22 17:00:00.000000

0007 stored chunks uncompressed because pglz held uploads to ~35 MB/s. Uncompressed, the
cost moved to the write-ahead log: every byte of a 16 MB text upload is written twice
(WAL, then table), ~55 MB/s through the whole upload. lz4 compresses text ~10x faster
than pglz and gives up on incompressible data quickly (PDF, PNG: ~15% slower to insert
than uncompressed, measured on 1 MiB random chunks), and text takes a fraction of the
WAL and the disk. EXTENDED lets PostgreSQL compress, with the column's method.

Servers built without lz4 (it is optional since PostgreSQL 14; `pg_settings` lists what
`default_toast_compression` accepts) keep 0007's uncompressed storage. Rows written
before keep theirs; PostgreSQL reads every method. SQLite has no such setting.
"""

from alembic import op
from sqlalchemy import text

# revision identifiers, used by Alembic.
revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_METHODS = text("SELECT enumvals FROM pg_settings WHERE name = 'default_toast_compression'")


def _server_has_lz4() -> bool:
    bind = op.get_bind()
    return bind.dialect.name == "postgresql" and "lz4" in (bind.scalar(_METHODS) or ())


def upgrade() -> None:
    if _server_has_lz4():
        op.execute(
            "ALTER TABLE document_blobs ALTER COLUMN data SET STORAGE EXTENDED, "
            "ALTER COLUMN data SET COMPRESSION lz4"
        )


def downgrade() -> None:
    if _server_has_lz4():  # otherwise upgrade changed nothing
        op.execute(
            "ALTER TABLE document_blobs ALTER COLUMN data SET STORAGE EXTERNAL, "
            "ALTER COLUMN data SET COMPRESSION DEFAULT"
        )
