"""document vault

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 12:00:00.000000

Hand-written (other model changes were in flight): documents, shares, searchable text and
chunked blobs (bastion.documents.models), plus the full-text index the ORM does not model:
an FTS5 table kept in step by triggers on SQLite, a generated tsvector column with a GIN
index on PostgreSQL (bastion.documents.search; tests/unit/test_migrations.py skips them).
"""

import sqlalchemy as sa
from alembic import op

import bastion.core.db

# revision identifiers, used by Alembic.
revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

SQLITE_SEARCH = (
    "CREATE VIRTUAL TABLE document_search USING fts5(title, body, content='document_texts', "
    "content_rowid='id', tokenize='unicode61 remove_diacritics 2')",
    """CREATE TRIGGER document_search_ai AFTER INSERT ON document_texts BEGIN
        INSERT INTO document_search(rowid, title, body) VALUES (new.id, new.title, new.body);
    END""",
    """CREATE TRIGGER document_search_ad AFTER DELETE ON document_texts BEGIN
        INSERT INTO document_search(document_search, rowid, title, body)
        VALUES ('delete', old.id, old.title, old.body);
    END""",
    """CREATE TRIGGER document_search_au AFTER UPDATE ON document_texts BEGIN
        INSERT INTO document_search(document_search, rowid, title, body)
        VALUES ('delete', old.id, old.title, old.body);
        INSERT INTO document_search(rowid, title, body) VALUES (new.id, new.title, new.body);
    END""",
)
POSTGRES_SEARCH = (
    "ALTER TABLE document_texts ADD COLUMN search_vector tsvector GENERATED ALWAYS AS "
    "(setweight(to_tsvector('simple', title), 'A') || "
    "setweight(to_tsvector('simple', body), 'B')) STORED",
    "CREATE INDEX ix_document_texts_search_vector ON document_texts USING gin (search_vector)",
)


def upgrade() -> None:
    op.create_table(
        "documents",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("content_type", sa.String(length=100), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("storage_key", sa.String(length=64), nullable=False),
        sa.Column("created_at", bastion.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", bastion.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["owner_id"],
            ["users.id"],
            name=op.f("fk_documents_owner_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_documents")),
        sa.UniqueConstraint("storage_key", name=op.f("uq_documents_storage_key")),
    )
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_documents_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_documents_deleted_at"), ["deleted_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_documents_owner_id"), ["owner_id"], unique=False)

    op.create_table(
        "document_blobs",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", bastion.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", "seq", name=op.f("pk_document_blobs")),
    )

    op.create_table(
        "document_shares",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("document_id", sa.String(length=32), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("created_at", bastion.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["document_id"],
            ["documents.id"],
            name=op.f("fk_document_shares_document_id_documents"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_document_shares")),
        sa.UniqueConstraint("document_id", "email", name=op.f("uq_document_shares_document_id")),
    )
    with op.batch_alter_table("document_shares", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_document_shares_document_id"), ["document_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_document_shares_email"), ["email"], unique=False)

    op.create_table(
        "document_texts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("document_id", sa.String(length=32), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["document_id"],
            ["documents.id"],
            name=op.f("fk_document_texts_document_id_documents"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_document_texts")),
        sa.UniqueConstraint("document_id", name=op.f("uq_document_texts_document_id")),
    )

    statements = SQLITE_SEARCH if op.get_bind().dialect.name == "sqlite" else POSTGRES_SEARCH
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for trigger in ("document_search_au", "document_search_ad", "document_search_ai"):
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        op.execute("DROP TABLE IF EXISTS document_search")
    op.drop_table("document_texts")
    with op.batch_alter_table("document_shares", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_document_shares_email"))
        batch_op.drop_index(batch_op.f("ix_document_shares_document_id"))
    op.drop_table("document_shares")
    op.drop_table("document_blobs")
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_documents_owner_id"))
        batch_op.drop_index(batch_op.f("ix_documents_deleted_at"))
        batch_op.drop_index(batch_op.f("ix_documents_created_at"))
    op.drop_table("documents")
