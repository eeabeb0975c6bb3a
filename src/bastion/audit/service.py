"""Write audit events: with the request's transaction, or alone for failures.

A success is recorded in the same transaction as the change it describes, so both commit
or neither does. A failure or denial is written in its own short transaction, so a
rolled-back request still leaves its trace (ASVS 16.3.x). Each event also becomes a
structured log line. Either way the row is linked into the hash chain when it is flushed
(bastion.audit.append).
"""

from __future__ import annotations

import json
from typing import Any

import structlog
from sqlalchemy.orm import Session

from bastion.audit.append import holds_chain_lock
from bastion.audit.events import Actor, EventTag, Outcome
from bastion.audit.models import AuditEvent
from bastion.core.addresses import address_key
from bastion.core.clock import utcnow
from bastion.core.db import db

log = structlog.get_logger("bastion.audit")

# Keys whose values must never be stored or logged, whatever a caller passes.
SECRET_KEYS = frozenset({"password", "token", "secret", "cookie", "csrf_token", "api_key"})


def _clean(details: dict[str, Any] | None) -> dict[str, Any]:
    if not details:
        return {}
    return {k: v for k, v in details.items() if not any(s in k.lower() for s in SECRET_KEYS)}


def build_event(
    tag: EventTag,
    actor: Actor,
    *,
    outcome: Outcome = Outcome.SUCCESS,
    target: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Make an event row (not yet added to any session) and log it."""
    details = _clean(details)
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
        ip_key=address_key(actor.ip) if actor.ip else None,
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
    db.session.add(build_event(tag, actor, outcome=outcome, target=target, details=details))


def record_failure(
    tag: EventTag,
    actor: Actor,
    *,
    outcome: Outcome = Outcome.FAILURE,
    target: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Write an event at once in its own transaction, independent of the request's.

    If the request's transaction already holds the chain lock (it flushed an event), a
    second connection would wait for it forever; the event then joins the request's
    transaction instead, and a warning says that it shares that transaction's fate.
    """
    row = build_event(tag, actor, outcome=outcome, target=target, details=details)
    if db.session.registry.has() and holds_chain_lock(db.session()):
        log.warning("audit.record_failure.joined_request_transaction", audit_event=tag.value)
        db.session.add(row)
        db.session.flush()
        return
    with Session(db.engine) as own:
        own.add(row)
        own.commit()
