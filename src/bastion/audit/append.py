"""Link every new audit row into the hash chain at flush time, one writer at a time.

A `before_flush` listener on every SQLAlchemy session finds the pending AuditEvent rows,
takes the chain lock, reads the head, gives each row the next `seq`, the previous row's
hash and its own hash, and moves the head — all in the flushing transaction. So `record()`
(the request's transaction) and `record_failure()` (its own) chain the same way, and a
rolled-back transaction takes its rows and its head move with it: no gaps, no forks.

The lock lasts until that transaction ends:
- PostgreSQL: `pg_advisory_xact_lock(CHAIN_LOCK_KEY)`. It works before the head row
  exists, and under READ COMMITTED the head read after it sees the last writer's commit.
- SQLite: an UPDATE of the head row before reading it. pysqlite opens the transaction at
  the first write, and a write statement takes the database write lock even when it
  matches no row, so the reader of the head is already the only writer (others wait for
  the busy timeout) — the effect of `BEGIN IMMEDIATE`.
Whatever slips past (e.g. a REPEATABLE READ snapshot taken before the lock) collides on
the unique `seq` instead of forking the chain.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, insert, inspect, select, text, update
from sqlalchemy.orm import Session, SessionTransaction, UOWTransaction

from bastion.audit.hashing import GENESIS, row_hash
from bastion.audit.models import HEAD_ID, AuditChainHead, AuditEvent
from bastion.core.clock import utcnow

# Advisory lock key for the chain ("bastion" + 0x01); any constant works if nothing else uses it.
CHAIN_LOCK_KEY = 0x62617374696F6E01
# session.info key: this session's open transaction holds the chain lock.
LOCKED = "bastion.audit.chain_locked"


class AuditChainError(RuntimeError):
    """The application tried to change or delete an audit row; the log is insert-only."""


def lock_chain(session: Session) -> tuple[int, str, bool]:
    """Take the chain lock for the session's transaction; return (head seq, head hash, exists)."""
    if session.connection().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CHAIN_LOCK_KEY})
    else:
        session.execute(
            update(AuditChainHead)
            .where(AuditChainHead.id == HEAD_ID)
            .values(seq=AuditChainHead.seq)
            .execution_options(synchronize_session=False)
        )
    session.info[LOCKED] = True
    head = session.execute(
        select(AuditChainHead.seq, AuditChainHead.row_hash).where(AuditChainHead.id == HEAD_ID)
    ).one_or_none()
    if head is None:
        # No event yet (or the table was emptied): the chain starts at genesis.
        return 0, GENESIS, False
    return head.seq, head.row_hash, True


def move_head(session: Session, seq: int, digest: str, *, exists: bool) -> None:
    """Point the head at the new last row; the caller holds the chain lock."""
    values = {"seq": seq, "row_hash": digest, "updated_at": utcnow()}
    if exists:
        session.execute(
            update(AuditChainHead)
            .where(AuditChainHead.id == HEAD_ID)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
    else:
        session.execute(insert(AuditChainHead).values(id=HEAD_ID, **values))


def holds_chain_lock(session: Session) -> bool:
    return bool(session.info.get(LOCKED))


def _refuse_changes(session: Session) -> None:
    for obj in session.deleted:
        if isinstance(obj, AuditEvent):
            raise AuditChainError("audit events are insert-only: refusing to delete one")
    for obj in session.dirty:
        if isinstance(obj, AuditEvent) and session.is_modified(obj):
            raise AuditChainError("audit events are insert-only: refusing to change one")


def _chain_pending(session: Session, flush_context: UOWTransaction, instances: Any) -> None:
    _refuse_changes(session)
    pending = [obj for obj in session.new if isinstance(obj, AuditEvent)]
    if not pending:
        return
    # Chain in the order the rows were added to the session.
    pending.sort(key=lambda obj: inspect(obj).insert_order or 0)
    seq, prev, exists = lock_chain(session)
    for row in pending:
        seq += 1
        if row.details is None:  # the column default, applied here so the hash covers it
            row.details = "{}"
        if row.created_at is None:
            row.created_at = utcnow()
        row.seq = seq
        row.prev_hash = prev
        row.row_hash = prev = row_hash(row)
    move_head(session, seq, prev, exists=exists)


def _transaction_ended(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        session.info.pop(LOCKED, None)


def install() -> None:
    """Listen on every Session (Flask-SQLAlchemy's and plain ones); safe to call twice."""
    if not event.contains(Session, "before_flush", _chain_pending):
        event.listen(Session, "before_flush", _chain_pending)
        event.listen(Session, "after_transaction_end", _transaction_ended)


install()
