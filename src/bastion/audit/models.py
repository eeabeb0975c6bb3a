"""The audit tables: insert-only events, the chain head, and verification results."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from bastion.core.db import Base

HEAD_ID = 1


class AuditEvent(Base):
    """One security-relevant event, linked to the previous one by `prev_hash`."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(index=True)
    # No foreign key: the trail must outlive the accounts it mentions.
    actor_id: Mapped[int | None] = mapped_column(index=True)
    actor_email: Mapped[str | None] = mapped_column(String(320))
    ip: Mapped[str | None] = mapped_column(String(64), index=True)
    # What the alert rules group by: the address, or an IPv6 client's /64
    # (core/addresses.py). Derived from `ip`, which the hash covers, so it is not hashed.
    ip_key: Mapped[str | None] = mapped_column(String(64), index=True)
    event: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str | None] = mapped_column(String(320))
    outcome: Mapped[str] = mapped_column(String(16))
    details: Mapped[str] = mapped_column(Text, default="{}")
    request_id: Mapped[str | None] = mapped_column(String(32))
    # Filled in at flush time under the chain lock (bastion.audit.append), never by callers.
    # The unique seq is the last line of defence against a forked chain.
    seq: Mapped[int] = mapped_column(unique=True)
    prev_hash: Mapped[str] = mapped_column(String(64))
    row_hash: Mapped[str] = mapped_column(String(64))


class AuditChainHead(Base):
    """The single row naming the chain's last event; it is also what writers lock."""

    __tablename__ = "audit_chain_head"
    __table_args__ = (CheckConstraint(f"id = {HEAD_ID}", name="single_row"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    seq: Mapped[int]
    row_hash: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime]


class AuditVerification(Base):
    """The outcome of one run of `bastion audit verify`, for the dashboard and as an anchor."""

    __tablename__ = "audit_verifications"

    id: Mapped[int] = mapped_column(primary_key=True)
    checked_at: Mapped[datetime] = mapped_column(index=True)
    ok: Mapped[bool]
    events: Mapped[int]
    detail: Mapped[str] = mapped_column(Text)
    head_seq: Mapped[int | None]
    head_hash: Mapped[str | None] = mapped_column(String(64))
