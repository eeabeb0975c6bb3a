"""Verify the audit hash chain, remember the result, and prune old events verifiably.

`verify_chain()` walks the events in `seq` order up to the chain head and stops at the
first break: a row whose content no longer matches its hash (altered), a row that does
not link to the one before it (inserted), a gap in `seq` (deleted), or a head that does
not match the last row. It also checks anchors: the head of the last successful
verification and any head the operator kept elsewhere (`--anchor SEQ:HASH`), which is
what catches a chain recomputed from a changed row onwards (see bastion.audit.hashing).

`prune()` removes a prefix of the chain and appends a checkpoint event naming the seq
and hash of the last removed row, from which verification then starts.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import datetime

import structlog
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from bastion.audit.append import lock_chain
from bastion.audit.events import Actor, EventTag
from bastion.audit.hashing import GENESIS, row_hash
from bastion.audit.models import HEAD_ID, AuditChainHead, AuditEvent, AuditVerification
from bastion.audit.service import build_event
from bastion.core.clock import utcnow
from bastion.core.db import db

log = structlog.get_logger("bastion.audit")


@dataclass(frozen=True)
class VerificationResult:
    """One verification: when, whether the chain held, how many events, and a one-line detail."""

    checked_at: datetime
    ok: bool
    events: int
    detail: str
    head_seq: int | None = None
    head_hash: str | None = None


@dataclass(frozen=True)
class Anchor:
    """A (seq, hash) pair recorded outside the rows it vouches for."""

    seq: int
    row_hash: str
    source: str


@dataclass(frozen=True)
class PruneResult:
    """How many events went, the last seq removed, the checkpoint's seq, and the check after."""

    pruned: int
    through_seq: int | None = None
    checkpoint_seq: int | None = None
    verification: VerificationResult | None = None


class PruneRefused(RuntimeError):
    """The chain does not verify, so pruning would destroy the evidence; nothing was deleted."""


class _Broken(Exception):
    """The first break found, and how many events verified before it."""

    def __init__(self, detail: str, events: int = 0) -> None:
        super().__init__(detail)
        self.detail = detail
        self.events = events


# ------------------------------------------------------------------------ verification
def verify_chain(*, anchor: Anchor | None = None, store: bool = True) -> VerificationResult:
    """Walk the whole chain; store the result for `last_verification()` unless `store` is off."""
    with Session(db.engine) as session:
        anchors = [a for a in (_last_good_head(session), anchor) if a is not None]
        result = _verify(session, anchors)
        if store:
            _store(session, result)
        session.commit()
    _log(result)
    return result


def last_verification() -> VerificationResult | None:
    """The newest stored verification result, or None if the chain was never verified."""
    found = db.session.scalars(
        select(AuditVerification).order_by(AuditVerification.id.desc()).limit(1)
    ).first()
    return None if found is None else _result_of(found)


def _verify(session: Session, anchors: list[Anchor]) -> VerificationResult:
    # Read the head first and judge only rows up to it: rows appended meanwhile lie
    # beyond it, and the head moves in the same transaction as the rows it names.
    head = session.get(AuditChainHead, HEAD_ID)
    head_seq, head_hash = (head.seq, head.row_hash) if head is not None else (0, GENESIS)
    now = utcnow()
    try:
        with _rows(session, head_seq) as rows:
            count = _walk(session, rows, head_seq, head_hash, anchors)
        _check_beyond_head(session, head_seq, head_hash)
    except _Broken as broken:
        return VerificationResult(now, False, broken.events, broken.detail, head_seq, head_hash)
    detail = f"ok: {count} events, head {head_hash}"
    return VerificationResult(now, True, count, detail, head_seq, head_hash)


@contextmanager
def _rows(session: Session, head_seq: int) -> Iterator[Iterable[AuditEvent]]:
    """Stream the events up to the head; closed even when the walk stops early."""
    query = select(AuditEvent).where(AuditEvent.seq <= head_seq).order_by(AuditEvent.seq)
    with closing(session.scalars(query.execution_options(yield_per=500))) as found:
        yield found


def _walk(
    session: Session,
    rows: Iterable[AuditEvent],
    head_seq: int,
    head_hash: str,
    anchors: list[Anchor],
) -> int:
    count = 0
    last_seq = 0
    expected = GENESIS
    pending = {a.seq: a for a in anchors}
    for row in rows:
        if count == 0:
            expected = _start(session, row, head_seq)
            last_seq = row.seq - 1
            _check_anchor(pending.pop(last_seq, None), expected)
            for seq in [s for s in pending if s < last_seq]:
                del pending[seq]  # pruned since it was recorded
        if row.seq != last_seq + 1:
            raise _Broken(
                f"deleted: events seq {last_seq + 1}..{row.seq - 1} are missing"
                f" (gap before event seq {row.seq}, id {row.id})",
                count,
            )
        if row.prev_hash != expected:
            raise _Broken(
                f"inserted: event seq {row.seq} (id {row.id}) does not link to"
                f" event seq {last_seq} (prev_hash mismatch)",
                count,
            )
        if row_hash(row) != row.row_hash:
            raise _Broken(
                f"altered: event seq {row.seq} (id {row.id}) does not match its hash", count
            )
        _check_anchor(pending.pop(row.seq, None), row.row_hash, count)
        count += 1
        last_seq, expected = row.seq, row.row_hash
    if last_seq != head_seq:
        first = last_seq + 1 if count else 1
        raise _Broken(
            f"deleted: events seq {first}..{head_seq} are missing"
            f" (the chain head is seq {head_seq})",
            count,
        )
    if expected != head_hash:
        raise _Broken(f"altered: the chain head's hash does not match event seq {head_seq}", count)
    if pending:
        missing = min(pending.values(), key=lambda a: a.seq)
        raise _Broken(
            f"deleted: event seq {missing.seq} (recorded by {missing.source}) is gone;"
            f" the chain head is seq {head_seq}",
            count,
        )
    return count


def _start(session: Session, first: AuditEvent, head_seq: int) -> str:
    """The prev_hash the first remaining row must carry: genesis, or a checkpoint's claim."""
    if first.seq == 1:
        return GENESIS
    checkpoints = session.scalars(
        select(AuditEvent)
        .where(AuditEvent.event == EventTag.AUDIT_CHECKPOINT.value)
        .where(AuditEvent.seq.between(first.seq, head_seq))
        .order_by(AuditEvent.seq.desc())
    )
    for checkpoint in checkpoints:
        # The claim is trusted only because the walk then verifies the checkpoint's own hash.
        claim = _checkpoint_claim(checkpoint)
        if claim is not None and claim[0] == first.seq - 1:
            return claim[1]
    raise _Broken(
        f"deleted: events seq 1..{first.seq - 1} are missing and no checkpoint covers them"
    )


def _checkpoint_claim(row: AuditEvent) -> tuple[int, str] | None:
    try:
        details = json.loads(row.details)
        return int(details["through_seq"]), str(details["through_hash"])
    except (ValueError, TypeError, KeyError):
        return None


def _check_anchor(anchor: Anchor | None, found: str, verified: int = 0) -> None:
    if anchor is not None and anchor.row_hash != found:
        raise _Broken(
            f"altered: event seq {anchor.seq} no longer has the hash recorded by {anchor.source}"
            " (the chain was rewritten)",
            verified,
        )


def _check_beyond_head(session: Session, head_seq: int, head_hash: str) -> None:
    beyond = session.scalars(
        select(AuditEvent).where(AuditEvent.seq > head_seq).order_by(AuditEvent.seq).limit(1)
    ).first()
    if beyond is None:
        return
    # A writer moves the head in the transaction that adds its rows: if the head still
    # stands where it did, nobody appended legitimately and this row came from outside.
    session.expire_all()
    head = session.get(AuditChainHead, HEAD_ID)
    now_seq, now_hash = (head.seq, head.row_hash) if head is not None else (0, GENESIS)
    if head is None:
        raise _Broken(f"deleted: the chain head is missing, yet event seq {beyond.seq} exists")
    if (now_seq, now_hash) == (head_seq, head_hash):
        raise _Broken(
            f"inserted: event seq {beyond.seq} (id {beyond.id}) lies beyond the chain head"
            f" (seq {head_seq})"
        )


def _last_good_head(session: Session) -> Anchor | None:
    found = session.scalars(
        select(AuditVerification)
        .where(AuditVerification.ok.is_(True), AuditVerification.head_seq > 0)
        .order_by(AuditVerification.id.desc())
        .limit(1)
    ).first()
    if found is None or found.head_seq is None or found.head_hash is None:
        return None
    source = f"the verification of {found.checked_at.isoformat(timespec='seconds')}"
    return Anchor(found.head_seq, found.head_hash, source)


def _store(session: Session, result: VerificationResult) -> None:
    session.add(
        AuditVerification(
            checked_at=result.checked_at,
            ok=result.ok,
            events=result.events,
            detail=result.detail,
            head_seq=result.head_seq,
            head_hash=result.head_hash,
        )
    )


def _result_of(found: AuditVerification) -> VerificationResult:
    return VerificationResult(
        found.checked_at, found.ok, found.events, found.detail, found.head_seq, found.head_hash
    )


def _log(result: VerificationResult) -> None:
    # The head goes to the structured log too: a copy of it outside the database.
    emit = log.info if result.ok else log.error
    emit(
        "audit.verify",
        ok=result.ok,
        events=result.events,
        head_seq=result.head_seq,
        head_hash=result.head_hash,
        detail=result.detail,
    )


# ----------------------------------------------------------------------------- prune
def prune(before: datetime, actor: Actor) -> PruneResult:
    """Delete the events recorded before `before`; a checkpoint event vouches for them.

    Only a prefix of the chain goes: every event before the first one recorded at or after
    `before`. The chain is verified first, under the chain lock, and verified again after
    the cut (that result is the one stored). Raises PruneRefused, deleting nothing, when
    the chain does not verify: pruning would destroy the evidence.
    """
    with Session(db.engine) as session:
        # Hold the chain lock throughout, so the chain we verified is the one we cut.
        lock_chain(session)
        checked = _verify(session, [a for a in [_last_good_head(session)] if a is not None])
        if checked.ok:
            outcome = _cut(session, before, actor, checked.head_seq or 0)
            session.commit()
        else:
            session.rollback()
            _store(session, checked)
            session.commit()
    if not checked.ok:
        _log(checked)
        raise PruneRefused(checked.detail)
    return PruneResult(outcome.pruned, outcome.through_seq, outcome.checkpoint_seq, verify_chain())


def _cut(session: Session, before: datetime, actor: Actor, head_seq: int) -> PruneResult:
    first_kept = session.scalar(
        select(func.min(AuditEvent.seq)).where(AuditEvent.created_at >= before)
    )
    through = first_kept - 1 if first_kept is not None else head_seq
    doomed = session.scalar(
        select(func.count()).select_from(AuditEvent).where(AuditEvent.seq <= through)
    )
    if not doomed:
        return PruneResult(pruned=0)
    last = session.scalars(select(AuditEvent).where(AuditEvent.seq == through)).one()
    session.execute(delete(AuditEvent).where(AuditEvent.seq <= through))
    session.execute(delete(AuditVerification).where(AuditVerification.checked_at < before))
    checkpoint = build_event(
        EventTag.AUDIT_CHECKPOINT,
        actor,
        target="audit_events",
        details={
            "pruned": doomed,
            "through_seq": through,
            "through_hash": last.row_hash,
            "before": before.isoformat(),
        },
    )
    session.add(checkpoint)
    session.flush()  # links the checkpoint into the chain (bastion.audit.append)
    return PruneResult(pruned=doomed, through_seq=through, checkpoint_seq=checkpoint.seq)
