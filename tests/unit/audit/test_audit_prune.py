"""prune: a prefix of the chain goes, a checkpoint vouches for it, the rest still verifies."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from bastion.audit import Actor, EventTag
from bastion.audit.chain import PruneRefused, last_verification, prune, verify_chain
from bastion.audit.models import AuditEvent
from bastion.audit.service import build_event
from bastion.core.db import db

NOW = datetime.now(UTC)
CUTOFF = NOW - timedelta(days=30)
OLD = NOW - timedelta(days=60)
ACTOR = Actor(user_id=1, email="alice@example.com")


@pytest.fixture
def ctx(app: Flask) -> Iterator[Flask]:
    with app.app_context():
        yield app


def add(*created: datetime) -> None:
    for n, when in enumerate(created):
        event = build_event(EventTag.LOGIN_SUCCESS, ACTOR, target=f"t{n}")
        event.created_at = when
        db.session.add(event)
        db.session.commit()


def rows() -> list[AuditEvent]:
    with Session(db.engine) as fresh:
        return list(fresh.scalars(select(AuditEvent).order_by(AuditEvent.seq)))


def sql(statement: str, **params: Any) -> None:
    with db.engine.begin() as conn:
        conn.execute(text(statement), params)


@pytest.mark.usefixtures("ctx")
def test_prune_removes_old_events_and_leaves_a_verifiable_checkpoint() -> None:
    add(OLD, OLD, OLD, NOW, NOW)
    pruned_head = rows()[2].row_hash
    done = prune(CUTOFF, Actor.system())
    assert (done.pruned, done.through_seq, done.checkpoint_seq) == (3, 3, 6)
    assert done.verification is not None
    assert done.verification.ok, done.verification.detail
    assert done.verification.events == 3
    left = rows()
    assert [r.seq for r in left] == [4, 5, 6]
    checkpoint = left[-1]
    assert checkpoint.event == "audit.checkpoint"
    assert checkpoint.actor_email == "system"
    details = json.loads(checkpoint.details)
    assert details["pruned"] == 3
    assert details["through_seq"] == 3
    assert details["through_hash"] == pruned_head
    assert left[0].prev_hash == pruned_head
    last = last_verification()
    assert last is not None
    assert last.ok


@pytest.mark.usefixtures("ctx")
def test_only_a_prefix_goes_even_when_timestamps_interleave() -> None:
    # seq 3 is old but recorded after a recent one (a slow transaction): it must stay.
    add(OLD, NOW, OLD)
    done = prune(CUTOFF, Actor.system())
    assert done.pruned == 1
    assert [r.seq for r in rows()] == [2, 3, 4]
    assert verify_chain().ok


@pytest.mark.usefixtures("ctx")
def test_pruning_everything_leaves_only_the_checkpoint() -> None:
    add(OLD, OLD)
    done = prune(CUTOFF, Actor.system())
    assert done.pruned == 2
    assert [r.seq for r in rows()] == [3]
    result = verify_chain()
    assert result.ok, result.detail
    assert result.events == 1


@pytest.mark.usefixtures("ctx")
def test_nothing_to_prune_changes_nothing() -> None:
    add(NOW, NOW)
    done = prune(CUTOFF, Actor.system())
    assert done.pruned == 0
    assert done.checkpoint_seq is None
    assert [r.seq for r in rows()] == [1, 2]


@pytest.mark.usefixtures("ctx")
def test_a_second_prune_can_remove_the_first_checkpoint() -> None:
    add(OLD, OLD, NOW)
    prune(CUTOFF, Actor.system())  # removes 1..2, checkpoint 4
    assert [r.seq for r in rows()] == [3, 4]
    done = prune(datetime.now(UTC) + timedelta(seconds=1), Actor.system())
    assert (done.pruned, done.through_seq, done.checkpoint_seq) == (2, 4, 5)
    result = verify_chain()
    assert result.ok, result.detail
    assert [r.seq for r in rows()] == [5]


@pytest.mark.usefixtures("ctx")
def test_tampering_after_a_prune_is_still_reported() -> None:
    add(OLD, OLD, NOW, NOW)
    prune(CUTOFF, Actor.system())
    sql("UPDATE audit_events SET target = 'mallory' WHERE seq = 4")
    assert verify_chain().detail.startswith("altered: event seq 4 ")


@pytest.mark.usefixtures("ctx")
def test_a_forged_checkpoint_claim_is_reported() -> None:
    add(OLD, OLD, NOW)
    prune(CUTOFF, Actor.system())
    checkpoint = rows()[-1]
    claim = json.loads(checkpoint.details)
    claim["through_hash"] = "f" * 64
    sql(
        "UPDATE audit_events SET details = :d WHERE seq = :s",
        d=json.dumps(claim, sort_keys=True),
        s=checkpoint.seq,
    )
    result = verify_chain()
    assert not result.ok
    assert result.detail.startswith("inserted: event seq 3 ")


@pytest.mark.usefixtures("ctx")
def test_deleting_the_checkpoint_is_reported() -> None:
    add(OLD, OLD, NOW)
    prune(CUTOFF, Actor.system())
    sql("DELETE FROM audit_events WHERE event = 'audit.checkpoint'")
    assert verify_chain().detail == (
        "deleted: events seq 1..2 are missing and no checkpoint covers them"
    )


@pytest.mark.usefixtures("ctx")
def test_deleting_more_than_was_pruned_is_reported() -> None:
    add(OLD, OLD, NOW, NOW)
    prune(CUTOFF, Actor.system())
    sql("DELETE FROM audit_events WHERE seq = 3")
    assert verify_chain().detail == (
        "deleted: events seq 1..3 are missing and no checkpoint covers them"
    )


@pytest.mark.usefixtures("ctx")
def test_a_broken_chain_is_not_pruned() -> None:
    add(OLD, OLD, NOW)
    sql("UPDATE audit_events SET target = 'mallory' WHERE seq = 1")
    with pytest.raises(PruneRefused, match="altered: event seq 1 "):
        prune(CUTOFF, Actor.system())
    assert [r.seq for r in rows()] == [1, 2, 3]
    last = last_verification()
    assert last is not None
    assert not last.ok
