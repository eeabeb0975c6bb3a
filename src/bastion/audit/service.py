"""Write audit events: with the request's transaction, or alone for failures.

A success is recorded in the same transaction as the change it describes, so both commit
or neither does. A failure or denial is written in its own short transaction, so a
rolled-back request still leaves its trace (ASVS 16.3.x). Each event also becomes a
structured log line.
"""

from __future__ import annotations

import json
from typing import Any

import structlog
from sqlalchemy.orm import Session

from bastion.audit.events import Actor, EventTag, Outcome
from bastion.audit.models import AuditEvent
from bastion.core.clock import utcnow
from bastion.core.db import db

log = structlog.get_logger("bastion.audit")

# Keys whose values must never be stored or logged, whatever a caller passes.
SECRET_KEYS = frozenset({"password", "token", "secret", "cookie", "csrf_token", "api_key"})


def _clean(details: dict[str, Any] | None) -> dict[str, Any]:
    if not details:
        return {}
    return {k: v for k, v in details.items() if not any(s in k.lower() for s in SECRET_KEYS)}


def _event(
    tag: EventTag, actor: Actor, outcome: Outcome, target: str | None, details: dict[str, Any]
) -> AuditEvent:
    log.info(
        "audit",
        audit_event=tag.value,
        outcome=outcome.value,
        actor_id=actor.user_id,
        target=target,
        **{"details": details},
    )
    return AuditEvent(
        created_at=utcnow(),
        actor_id=actor.user_id,
        actor_email=actor.email,
        ip=actor.ip,
        event=tag.value,
        target=target,
        outcome=outcome.value,
        details=json.dumps(details, sort_keys=True, default=str),
        request_id=actor.request_id,
    )


def record(
    tag: EventTag,
    actor: Actor,
    *,
    outcome: Outcome = Outcome.SUCCESS,
    target: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Add an event to the current transaction; the caller's commit writes it."""
    db.session.add(_event(tag, actor, outcome, target, _clean(details)))


def record_failure(
    tag: EventTag,
    actor: Actor,
    *,
    outcome: Outcome = Outcome.FAILURE,
    target: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Write an event at once in its own transaction, independent of the request's."""
    with Session(db.engine) as own:
        own.add(_event(tag, actor, outcome, target, _clean(details)))
        own.commit()
