"""The security dashboard's numbers: failed sign-ins, their sources, admin actions, chain status."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, func, or_, select

from bastion.accounts.models import User
from bastion.admin import audit_log
from bastion.admin.service import without_2fa_clause
from bastion.audit import EventTag
from bastion.audit.chain import last_verification
from bastion.audit.models import AuditEvent
from bastion.core.db import db
from bastion.security import alerts
from bastion.security.lockout import AccountLockout

WINDOW = timedelta(days=7)
HOURS = int(WINDOW / timedelta(hours=1))
TOP_IPS = 10
RECENT_ACTIONS = 10
DISABLED_SHOWN = 10
LOCKED_SHOWN = 20
ALERTS_SHOWN = 20
# The audit events that are admin actions: the console's own, plus invitations.
ADMIN_ACTIONS = frozenset(
    {tag for tag in EventTag if tag.value.startswith("admin.")} | {EventTag.INVITE}
)


@dataclass(frozen=True)
class ChainStatus:
    """The audit chain's last verification, as far as this installation knows it."""

    state: str  # "never" (not verified yet), "ok" or "failed"
    checked_at: datetime | None = None
    events: int | None = None
    detail: str | None = None


@dataclass(frozen=True)
class Dashboard:
    since: datetime
    failures_by_hour: list[tuple[datetime, int]]
    failures_total: int
    top_ips: list[tuple[str, int]]
    recent_actions: list[AuditEvent]
    disabled_users: list[User]
    disabled_total: int
    chain: ChainStatus
    locked: list[LockedAccount]
    without_2fa: int
    alerts: list[alerts.Alert]
    alerts_total: int


@dataclass(frozen=True)
class LockedAccount:
    """An account locked now: until when, or hard-locked (password disabled) until recovery."""

    user_id: int
    email: str
    failures: int
    locked_at: datetime | None
    locked_until: datetime | None
    hard_lock: bool


def _hour_label(column: Any) -> ColumnElement[str] | None:
    """An SQL expression naming each row's UTC hour as 'YYYY-MM-DD HH', per dialect."""
    dialect = db.engine.dialect.name
    if dialect == "sqlite":  # stored as 'YYYY-MM-DD HH:MM:SS.ffffff' in UTC
        return func.strftime("%Y-%m-%d %H", column)
    if dialect == "postgresql":
        return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD HH24")
    return None


def failures_by_hour(now: datetime) -> tuple[datetime, list[tuple[datetime, int]]]:
    """Failed sign-ins per UTC hour for the last 7 days (oldest first, 168 hours)."""
    current = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    start = current - timedelta(hours=HOURS - 1)
    counts: dict[str, int] = {}
    failed = (AuditEvent.event == EventTag.LOGIN_FAILURE.value, AuditEvent.created_at >= start)
    label = _hour_label(AuditEvent.created_at)
    if label is not None:
        grouped = select(label, func.count()).where(*failed).group_by(label)
        counts = {str(hour): int(n) for hour, n in db.session.execute(grouped)}
    else:  # another database: bucket in Python
        for created in db.session.scalars(select(AuditEvent.created_at).where(*failed)):
            key = created.astimezone(UTC).strftime("%Y-%m-%d %H")
            counts[key] = counts.get(key, 0) + 1
    hours = [start + timedelta(hours=i) for i in range(HOURS)]
    return start, [(hour, counts.get(hour.strftime("%Y-%m-%d %H"), 0)) for hour in hours]


def top_failure_ips(since: datetime) -> list[tuple[str, int]]:
    """The addresses with the most failed sign-ins since `since`, most first."""
    count = func.count().label("failures")
    statement = (
        select(AuditEvent.ip, count)
        .where(
            AuditEvent.event == EventTag.LOGIN_FAILURE.value,
            AuditEvent.created_at >= since,
            AuditEvent.ip.is_not(None),
        )
        .group_by(AuditEvent.ip)
        .order_by(count.desc(), AuditEvent.ip)
        .limit(TOP_IPS)
    )
    return [(str(ip), int(n)) for ip, n in db.session.execute(statement)]


def chain_status() -> ChainStatus:
    """The last verification of the audit chain (`bastion audit verify`)."""
    result = last_verification()
    if result is None:
        return ChainStatus("never")
    return ChainStatus(
        "ok" if result.ok else "failed",
        checked_at=result.checked_at,
        events=result.events,
        detail=result.detail,
    )


def locked_accounts(now: datetime) -> list[LockedAccount]:
    """Accounts locked at `now`, the hard locks first, then the newest locks."""
    statement = (
        select(User.id, User.email, AccountLockout)
        .join(AccountLockout, AccountLockout.user_id == User.id)
        .where(or_(AccountLockout.disabled_at.is_not(None), AccountLockout.locked_until > now))
        .order_by(AccountLockout.disabled_at.is_(None), AccountLockout.locked_at.desc(), User.id)
        .limit(LOCKED_SHOWN)
    )
    return [
        LockedAccount(
            user_id=user_id,
            email=email,
            failures=row.failures,
            locked_at=row.locked_at,
            locked_until=row.locked_until,
            hard_lock=row.disabled_at is not None,
        )
        for user_id, email, row in db.session.execute(statement)
    ]


def users_without_2fa() -> int:
    """Enabled accounts with no TOTP credential."""
    statement = (
        select(func.count()).select_from(User).where(User.active.is_(True), without_2fa_clause())
    )
    return int(db.session.scalar(statement) or 0)


def build(now: datetime) -> Dashboard:
    """Everything the dashboard shows, as of `now`."""
    since, hourly = failures_by_hour(now)
    disabled = select(User).where(User.active.is_(False))
    return Dashboard(
        since=since,
        failures_by_hour=hourly,
        failures_total=sum(n for _, n in hourly),
        top_ips=top_failure_ips(since),
        recent_actions=audit_log.recent(ADMIN_ACTIONS, limit=RECENT_ACTIONS),
        disabled_users=list(
            db.session.scalars(disabled.order_by(User.updated_at.desc()).limit(DISABLED_SHOWN))
        ),
        disabled_total=int(
            db.session.scalar(select(func.count()).select_from(disabled.subquery())) or 0
        ),
        chain=chain_status(),
        locked=locked_accounts(now),
        without_2fa=users_without_2fa(),
        alerts=alerts.open_alerts(limit=ALERTS_SHOWN),
        alerts_total=alerts.count_open(),
    )
