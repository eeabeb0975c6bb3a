"""verify_chain: the first altered, inserted or deleted row, anchors, and the stored result."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from bastion.audit import Actor, EventTag, record
from bastion.audit.chain import Anchor, last_verification, verify_chain
from bastion.audit.hashing import GENESIS, row_hash
from bastion.audit.models import AuditEvent
from bastion.core.db import db

ACTOR = Actor(user_id=1, email="alice@example.com", ip="192.0.2.1")


@pytest.fixture
def chain(app: Flask) -> Iterator[list[AuditEvent]]:
    """Five linked events, committed."""
    with app.app_context():
        for n in range(5):
            record(EventTag.LOGIN_SUCCESS, ACTOR, target=f"t{n}", details={"n": n})
            db.session.commit()
        yield rows()


def rows() -> list[AuditEvent]:
    with Session(db.engine) as fresh:
        return list(fresh.scalars(select(AuditEvent).order_by(AuditEvent.seq)))


def sql(statement: str, **params: Any) -> None:
    with db.engine.begin() as conn:
        conn.execute(text(statement), params)


def insert_row(**values: Any) -> None:
    columns = ", ".join(values)
    marks = ", ".join(f":{name}" for name in values)
    sql(f"INSERT INTO audit_events ({columns}) VALUES ({marks})", **values)  # noqa: S608


def forged(*, seq: int, prev_hash: str) -> dict[str, Any]:
    values: dict[str, Any] = {
        "seq": seq,
        "created_at": datetime.now(UTC),
        "actor_id": None,
        "actor_email": "mallory@example.com",
        "ip": "198.51.100.7",
        "event": "auth.login.success",
        "target": "mallory@example.com",
        "outcome": "success",
        "details": "{}",
        "request_id": None,
        "prev_hash": prev_hash,
    }
    values["row_hash"] = row_hash(SimpleNamespace(**values))
    return values


def test_an_empty_chain_verifies(app: Flask) -> None:
    with app.app_context():
        result = verify_chain()
    assert result.ok
    assert result.events == 0
    assert result.detail == f"ok: 0 events, head {GENESIS}"


def test_an_intact_chain_verifies_and_names_its_head(chain: list[AuditEvent]) -> None:
    result = verify_chain()
    assert result.ok, result.detail
    assert result.events == 5
    assert (result.head_seq, result.head_hash) == (5, chain[-1].row_hash)
    assert result.detail == f"ok: 5 events, head {chain[-1].row_hash}"


def test_the_result_is_stored_for_the_dashboard(chain: list[AuditEvent]) -> None:
    assert last_verification() is None
    done = verify_chain()
    sql("UPDATE audit_events SET details = '{}' WHERE seq = 2")
    failed = verify_chain()
    db.session.remove()
    last = last_verification()
    assert last is not None
    # A failed check counts the events that verified before the break.
    assert (last.ok, last.events, last.detail) == (False, 1, failed.detail)
    assert last.checked_at.tzinfo is not None
    assert last.checked_at >= done.checked_at


def test_verify_can_leave_no_trace(chain: list[AuditEvent]) -> None:
    verify_chain(store=False)
    assert last_verification() is None


def test_an_updated_row_is_reported_as_altered(chain: list[AuditEvent]) -> None:
    sql("UPDATE audit_events SET details = :d WHERE seq = 3", d='{"n": 99}')
    result = verify_chain()
    assert not result.ok
    assert result.detail == f"altered: event seq 3 (id {chain[2].id}) does not match its hash"


@pytest.mark.parametrize(
    ("column", "value"),
    [("actor_email", "mallory@example.com"), ("outcome", "failure"), ("ip", None)],
)
def test_any_changed_column_is_reported(chain: list[AuditEvent], column: str, value: Any) -> None:
    sql(f"UPDATE audit_events SET {column} = :v WHERE seq = 4", v=value)  # noqa: S608
    assert verify_chain().detail.startswith("altered: event seq 4 ")


def test_a_rehashed_row_breaks_the_next_link(chain: list[AuditEvent]) -> None:
    changed = chain[1]
    changed.details = '{"n": 42}'
    sql(
        "UPDATE audit_events SET details = :d, row_hash = :h WHERE seq = 2",
        d=changed.details,
        h=row_hash(changed),
    )
    result = verify_chain()
    assert result.detail.startswith("inserted: event seq 3 ")
    assert "does not link to event seq 2" in result.detail


def test_a_deleted_middle_row_is_reported_as_a_gap(chain: list[AuditEvent]) -> None:
    sql("DELETE FROM audit_events WHERE seq = 3")
    result = verify_chain()
    assert not result.ok
    assert result.detail == (
        f"deleted: events seq 3..3 are missing (gap before event seq 4, id {chain[3].id})"
    )


def test_a_deleted_first_row_is_reported(chain: list[AuditEvent]) -> None:
    sql("DELETE FROM audit_events WHERE seq = 1")
    assert verify_chain().detail == (
        "deleted: events seq 1..1 are missing and no checkpoint covers them"
    )


def test_deleted_last_rows_are_reported_against_the_head(chain: list[AuditEvent]) -> None:
    sql("DELETE FROM audit_events WHERE seq >= 4")
    assert verify_chain().detail == (
        "deleted: events seq 4..5 are missing (the chain head is seq 5)"
    )


def test_deleting_every_event_is_reported(chain: list[AuditEvent]) -> None:
    sql("DELETE FROM audit_events")
    assert verify_chain().detail.startswith("deleted: events seq 1..5 are missing")


def test_a_row_inserted_with_a_forged_hash_is_reported(chain: list[AuditEvent]) -> None:
    values = forged(seq=6, prev_hash=chain[-1].row_hash)
    values["row_hash"] = "f" * 64
    insert_row(**values)
    sql("UPDATE audit_chain_head SET seq = 6, row_hash = :h", h="f" * 64)
    result = verify_chain()
    assert result.detail.startswith("altered: event seq 6 ")


def test_a_row_inserted_with_a_forged_link_is_reported(chain: list[AuditEvent]) -> None:
    values = forged(seq=6, prev_hash="e" * 64)
    insert_row(**values)
    sql("UPDATE audit_chain_head SET seq = 6, row_hash = :h", h=values["row_hash"])
    assert verify_chain().detail.startswith("inserted: event seq 6 ")


def test_a_well_formed_row_appended_behind_the_heads_back_is_reported(
    chain: list[AuditEvent],
) -> None:
    insert_row(**forged(seq=6, prev_hash=chain[-1].row_hash))
    result = verify_chain()
    assert result.detail.startswith("inserted: event seq 6 ")
    assert "lies beyond the chain head (seq 5)" in result.detail


def test_a_deleted_head_row_is_reported(chain: list[AuditEvent]) -> None:
    sql("DELETE FROM audit_chain_head")
    assert verify_chain().detail == "deleted: the chain head is missing, yet event seq 1 exists"


def test_a_moved_head_is_reported(chain: list[AuditEvent]) -> None:
    sql("UPDATE audit_chain_head SET row_hash = :h", h="0" * 64)
    assert verify_chain().detail == "altered: the chain head's hash does not match event seq 5"


def _rewrite_from(chain: list[AuditEvent], start: int) -> None:
    """What an attacker with write access can do to an unkeyed chain: recompute it."""
    prev = chain[start - 2].row_hash
    for row in chain[start - 1 :]:
        if row.seq == start:
            row.details = '{"n": "rewritten"}'
        row.prev_hash = prev
        row.row_hash = prev = row_hash(row)
        sql(
            "UPDATE audit_events SET details = :d, prev_hash = :p, row_hash = :h WHERE seq = :s",
            d=row.details,
            p=row.prev_hash,
            h=row.row_hash,
            s=row.seq,
        )
    sql("UPDATE audit_chain_head SET row_hash = :h", h=prev)


def test_a_recomputed_chain_passes_without_an_anchor(chain: list[AuditEvent]) -> None:
    # The documented limit of a plain SHA-256 chain; the anchors below are the answer.
    _rewrite_from(chain, 3)
    assert verify_chain().ok


def test_a_recomputed_chain_is_caught_by_the_last_verification(chain: list[AuditEvent]) -> None:
    assert verify_chain().ok
    _rewrite_from(chain, 3)
    result = verify_chain()
    assert result.detail.startswith("altered: event seq 5 no longer has the hash recorded by")
    assert "the verification of" in result.detail


def test_a_recomputed_chain_is_caught_by_an_operators_anchor(chain: list[AuditEvent]) -> None:
    anchor = Anchor(4, chain[3].row_hash, "--anchor")
    assert verify_chain(anchor=anchor, store=False).ok
    _rewrite_from(chain, 2)
    result = verify_chain(anchor=anchor, store=False)
    assert result.detail.startswith("altered: event seq 4 no longer has the hash recorded by")


def test_truncation_with_a_moved_head_is_caught_by_the_last_verification(
    chain: list[AuditEvent],
) -> None:
    assert verify_chain().ok
    sql("DELETE FROM audit_events WHERE seq = 5")
    sql("UPDATE audit_chain_head SET seq = 4, row_hash = :h", h=chain[3].row_hash)
    result = verify_chain()
    assert result.detail.startswith("deleted: event seq 5 (recorded by the verification of")


def test_a_failed_verification_is_not_an_anchor(chain: list[AuditEvent]) -> None:
    sql("UPDATE audit_chain_head SET row_hash = :h", h="0" * 64)
    assert not verify_chain().ok
    sql("UPDATE audit_chain_head SET row_hash = :h", h=chain[-1].row_hash)
    assert verify_chain().ok
