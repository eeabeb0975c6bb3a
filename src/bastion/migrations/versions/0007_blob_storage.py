"""document blobs: stored uncompressed on PostgreSQL

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22 09:00:00.000000

PostgreSQL compresses a large bytea with pglz before it stores it out of line; for a 1 MiB
chunk that is where an upload's time went (inserts at ~35 MB/s, against ~210 MB/s stored
EXTERNAL: out of line, uncompressed). What the vault accepts is mostly compressed already
(PDF, PNG, JPEG, Office zips), so the space saved is small. Rows written before keep their
compression; PostgreSQL reads both. SQLite has no such setting: nothing to do there.
"""

from alembic import op

# revision identifiers, used by Alembic.
revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE document_blobs ALTER COLUMN data SET STORAGE EXTERNAL")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE document_blobs ALTER COLUMN data SET STORAGE EXTENDED")
