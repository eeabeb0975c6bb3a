"""The vault's tables: documents, their shares, their searchable text and stored blobs.

Ids are random (`secrets.token_urlsafe(16)`, 128 bits), never sequential, so they cannot
be enumerated. The full-text index itself (SQLite FTS5 table / PostgreSQL tsvector column
and GIN index) is raw SQL in migration 0005 and is not an ORM object.
"""

from __future__ import annotations

import secrets
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from bastion.core.clock import utcnow
from bastion.core.db import Base


def new_document_id() -> str:
    return secrets.token_urlsafe(16)


class Document(Base):
    __tablename__ = "documents"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_document_id)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    title: Mapped[str] = mapped_column(String(200))
    filename: Mapped[str] = mapped_column(String(255))  # the cleaned display name
    kind: Mapped[str] = mapped_column(String(16))  # a sniffing.KINDS name
    content_type: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    # The random name of the stored object; never derived from anything the client sent.
    storage_key: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    # Soft delete: the row disappears from every view at once; the object is purged after.
    deleted_at: Mapped[datetime | None] = mapped_column(index=True)


class DocumentShare(Base):
    """Read-only access for whoever holds (or later confirms) this email address."""

    __tablename__ = "document_shares"
    __table_args__ = (UniqueConstraint("document_id", "email"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    document_id: Mapped[str] = mapped_column(
        ForeignKey("documents.id", ondelete="CASCADE"), index=True
    )
    email: Mapped[str] = mapped_column(String(320), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DocumentText(Base):
    """The searchable text of one document: its title and up to MAX_INDEXED_CHARS of body.

    The integer id is the FTS5 rowid (SQLite); PostgreSQL adds a generated tsvector column.
    """

    __tablename__ = "document_texts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    document_id: Mapped[str] = mapped_column(
        ForeignKey("documents.id", ondelete="CASCADE"), unique=True
    )
    title: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)


class DocumentBlob(Base):
    """One chunk of a stored object (the `database` storage backend)."""

    __tablename__ = "document_blobs"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
