"""Appending to the chain: every session links new rows at flush time, under the lock."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from bastion.audit import Actor, EventTag, Outcome, record, record_failure
from bastion.audit.append import AuditChainError, holds_chain_lock
from bastion.audit.chain import verify_chain
from bastion.audit.hashing import GENESIS, row_hash
from bastion.audit.models import HEAD_ID, AuditChainHead, AuditEvent
from bastion.core.db import db

ACTOR = Actor(user_id=1, email="alice@example.com", ip="192.0.2.1", request_id="r1")


@pytest.fixture
def ctx(app: Flask) -> Iterator[Flask]:
    with app.app_context():
        yield app


def events() -> list[AuditEvent]:
    with Session(db.engine) as fresh:
        return list(fresh.scalars(select(AuditEvent).order_by(AuditEvent.seq)))


def head() -> tuple[int, str] | None:
    with Session(db.engine) as fresh:
        found = fresh.get(AuditChainHead, HEAD_ID)
        return None if found is None else (found.seq, found.row_hash)


def assert_linked(rows: list[AuditEvent]) -> None:
    assert [r.seq for r in rows] == list(range(1, len(rows) + 1))
    prev = GENESIS
    for row in rows:
        assert row.prev_hash == prev
        assert row.row_hash == row_hash(row)
        prev = row.row_hash
    assert head() == (len(rows), prev)


@pytest.mark.usefixtures("ctx")
def test_recorded_events_are_linked_in_order_and_move_the_head() -> None:
    for n in range(3):
        record(EventTag.LOGIN_SUCCESS, ACTOR, target=f"t{n}", details={"n": n})
        db.session.commit()
    rows = events()
    assert_linked(rows)
    assert [r.target for r in rows] == ["t0", "t1", "t2"]


@pytest.mark.usefixtures("ctx")
def test_events_flushed_together_keep_the_order_they_were_added() -> None:
    for n in range(5):
        record(EventTag.LOGIN_SUCCESS, ACTOR, target=f"t{n}")
    db.session.commit()
    rows = events()
    assert_linked(rows)
    assert [r.target for r in rows] == [f"t{n}" for n in range(5)]


@pytest.mark.usefixtures("ctx")
def test_failures_written_in_their_own_transaction_join_the_same_chain() -> None:
    record(EventTag.LOGIN_SUCCESS, ACTOR)
    db.session.commit()
    record_failure(EventTag.LOGIN_FAILURE, ACTOR, details={"known_account": True})
    record(EventTag.LOGOUT, ACTOR)
    db.session.commit()
    rows = events()
    assert_linked(rows)
    assert [r.event for r in rows] == ["auth.login.success", "auth.login.failure", "auth.logout"]


@pytest.mark.usefixtures("ctx")
def test_a_failure_survives_the_rollback_of_the_request_and_leaves_no_gap() -> None:
    record(EventTag.LOGIN_SUCCESS, ACTOR, target="rolled back")
    record_failure(EventTag.AUTHZ_DENIED, ACTOR, outcome=Outcome.DENIED, target="kept")
    db.session.rollback()
    record(EventTag.LOGOUT, ACTOR, target="after")
    db.session.commit()
    rows = events()
    assert_linked(rows)
    assert [r.target for r in rows] == ["kept", "after"]


@pytest.mark.usefixtures("ctx")
def test_a_flushed_then_rolled_back_event_gives_its_seq_back() -> None:
    record(EventTag.LOGIN_SUCCESS, ACTOR, target="gone")
    db.session.flush()
    assert holds_chain_lock(db.session())
    db.session.rollback()
    assert not holds_chain_lock(db.session())
    record(EventTag.LOGIN_SUCCESS, ACTOR, target="kept")
    db.session.commit()
    rows = events()
    assert_linked(rows)
    assert [r.target for r in rows] == ["kept"]


@pytest.mark.usefixtures("ctx")
def test_a_rolled_back_savepoint_takes_its_events_and_head_move_with_it() -> None:
    record(EventTag.LOGIN_SUCCESS, ACTOR, target="outer")
    nested = db.session.begin_nested()
    record(EventTag.LOGIN_SUCCESS, ACTOR, target="inner")
    db.session.flush()
    nested.rollback()
    record(EventTag.LOGOUT, ACTOR, target="later")
    db.session.commit()
    rows = events()
    assert_linked(rows)
    assert [r.target for r in rows] == ["outer", "later"]


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("ctx")
def test_record_failure_while_the_request_holds_the_chain_lock_does_not_deadlock() -> None:
    # A second connection would wait for this transaction's lock forever (PostgreSQL)
    # or until the busy timeout (SQLite); the failure joins the request's transaction.
    record(EventTag.LOGIN_SUCCESS, ACTOR, target="first")
    db.session.flush()
    record_failure(EventTag.AUTHZ_DENIED, ACTOR, outcome=Outcome.DENIED, target="second")
    db.session.commit()
    rows = events()
    assert_linked(rows)
    assert [r.target for r in rows] == ["first", "second"]


@pytest.mark.usefixtures("ctx")
def test_the_application_cannot_change_an_audit_row() -> None:
    record(EventTag.LOGIN_SUCCESS, ACTOR)
    db.session.commit()
    row = db.session.scalars(select(AuditEvent)).one()
    row.details = '{"forged": true}'
    with pytest.raises(AuditChainError, match="insert-only"):
        db.session.commit()
    db.session.rollback()
    assert verify_chain(store=False).ok


@pytest.mark.usefixtures("ctx")
def test_the_application_cannot_delete_an_audit_row() -> None:
    record(EventTag.LOGIN_SUCCESS, ACTOR)
    db.session.commit()
    db.session.delete(db.session.scalars(select(AuditEvent)).one())
    with pytest.raises(AuditChainError, match="insert-only"):
        db.session.commit()
    db.session.rollback()
    assert len(events()) == 1


@pytest.mark.usefixtures("ctx")
def test_a_new_chain_starts_when_the_tables_are_emptied() -> None:
    # What the test fixture does between tests, and what a fresh install looks like.
    record(EventTag.LOGIN_SUCCESS, ACTOR)
    db.session.commit()
    with db.engine.begin() as conn:
        conn.execute(delete(AuditEvent))
        conn.execute(delete(AuditChainHead))
    assert head() is None
    record(EventTag.LOGOUT, ACTOR)
    db.session.commit()
    rows = events()
    assert_linked(rows)
    assert rows[0].prev_hash == GENESIS
