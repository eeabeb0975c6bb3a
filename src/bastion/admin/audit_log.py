"""Reading the audit trail: filtered, paginated, and exported as formula-safe CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Collection
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, select

from bastion.audit import Actor, EventTag, record
from bastion.audit.models import AuditEvent
from bastion.core.db import db
from bastion.core.pagination import Page, paginate

# A spreadsheet runs a cell starting with one of these as a formula (OWASP CSV Injection).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
COLUMNS = (
    "id",
    "created_at",
    "actor_id",
    "actor_email",
    "ip",
    "event",
    "outcome",
    "target",
    "details",
    "request_id",
)
MAX_EXPORT_ROWS = 50_000  # one export stays a bounded amount of memory; filters narrow it


@dataclass(frozen=True)
class AuditFilters:
    """What the audit log is narrowed to; empty values mean "any"."""

    actor: str = ""
    event: str = ""
    outcome: str = ""
    ip: str = ""
    since: datetime | None = None
    until: datetime | None = None

    def describe(self) -> dict[str, str]:
        """The filters in use, as strings (for the export's own audit event)."""
        return {
            name: value.isoformat() if isinstance(value, datetime) else str(value)
            for name, value in asdict(self).items()
            if value
        }


def _statement(filters: AuditFilters) -> Select[AuditEvent]:
    statement = select(AuditEvent).order_by(AuditEvent.id.desc())
    if filters.actor:
        # Bound parameter; autoescape makes % and _ in the filter match themselves.
        statement = statement.where(
            AuditEvent.actor_email.icontains(filters.actor, autoescape=True)
        )
    if filters.event:
        statement = statement.where(AuditEvent.event == filters.event)
    if filters.outcome:
        statement = statement.where(AuditEvent.outcome == filters.outcome)
    if filters.ip:
        statement = statement.where(AuditEvent.ip == filters.ip)
    if filters.since is not None:
        statement = statement.where(AuditEvent.created_at >= filters.since)
    if filters.until is not None:
        statement = statement.where(AuditEvent.created_at <= filters.until)
    return statement


def search(filters: AuditFilters, *, number: int, per_page: int) -> Page[AuditEvent]:
    """One page of matching events, newest first."""
    return paginate(db.session, _statement(filters), number=number, per_page=per_page)


def about(target: str, *, limit: int) -> list[AuditEvent]:
    """The newest events whose target is `target` (a user's email address)."""
    statement = (
        select(AuditEvent)
        .where(AuditEvent.target == target)
        .order_by(AuditEvent.id.desc())
        .limit(limit)
    )
    return list(db.session.scalars(statement))


def recent(events: Collection[EventTag], *, limit: int) -> list[AuditEvent]:
    """The newest events of the given types."""
    statement = (
        select(AuditEvent)
        .where(AuditEvent.event.in_([tag.value for tag in events]))
        .order_by(AuditEvent.id.desc())
        .limit(limit)
    )
    return list(db.session.scalars(statement))


def neutralise(cell: str) -> str:
    """Make a cell inert in spreadsheets: prefix a quote when it could start a formula."""
    return "'" + cell if cell.startswith(FORMULA_PREFIXES) else cell


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def export_csv(filters: AuditFilters, *, actor: Actor) -> str:
    """The matching events (newest first, at most MAX_EXPORT_ROWS) as CSV; the export is audited.

    Every cell is quoted and neutralised, whatever its column: audit rows carry attacker
    text (an email typed at the login form, a user agent), and a spreadsheet must never run it.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    count = 0
    for row in db.session.scalars(_statement(filters).limit(MAX_EXPORT_ROWS)):
        writer.writerow([neutralise(_text(getattr(row, column))) for column in COLUMNS])
        count += 1
    record(
        EventTag.ADMIN_AUDIT_EXPORT,
        actor,
        details={"filters": filters.describe(), "rows": count},
    )
    db.session.commit()
    return buffer.getvalue()
