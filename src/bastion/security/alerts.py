"""Suspicious-activity detection: alerts recorded as audit events, acknowledged by admins.

Four rules, each checked right after the event it watches has been recorded, with one or
two indexed COUNT queries over ``audit_events`` in the rule's window:

- ``credential_stuffing``: one IP fails to sign in at least BASTION_ALERT_STUFFING_FAILURES
  times across at least BASTION_ALERT_STUFFING_ACCOUNTS distinct accounts within
  BASTION_ALERT_STUFFING_MINUTES (subject: the IP);
- ``account_many_ips``: one account fails from at least BASTION_ALERT_ACCOUNT_IPS distinct
  IPs within BASTION_ALERT_ACCOUNT_MINUTES (subject: the account as typed at sign-in);
- ``admin_new_prefix``: an administrator (a role granting ADMIN_USERS) signs in from an IPv4
  /24 or IPv6 /48 none of their successful sign-ins came from in the last
  BASTION_ALERT_ADMIN_PREFIX_DAYS. An admin with no sign-in at all in that window sets the
  baseline instead (every first sign-in would otherwise alert);
- ``repeated_denials``: at least BASTION_ALERT_DENIALS CSRF failures or authorization
  denials within BASTION_ALERT_DENIALS_MINUTES from one signed-in user (subject: the user),
  or from one IP for anonymous callers.

In rules (a), (b) and (d), "an IP" is an IPv4 address or an IPv6 /64, as for the rate
limits (core/addresses.py, stored as ``audit_events.ip_key``): a client that takes a fresh
address in its /64 for every attempt is still one source.

An alert is an audit event ``security.alert`` whose target is ``<kind>:<subject>`` and
whose details carry the kind, the ``severity`` and the counts. At most one alert per
(kind, subject) per window: the check for an earlier one and the insert happen under the
audit chain's lock (bastion.audit.append), so concurrent requests on several nodes cannot
both raise it. An alert is open until an admin acknowledges it (``alert_acknowledgements``;
audit rows are insert-only). With BASTION_ALERT_MAIL the active administrators get a mail,
sent after the response.

Layering: the CSRF and policy hooks live in security/, so this module does too; it knows
the users table only by name (security never imports the accounts feature).
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import structlog
from flask import after_this_request, current_app, has_request_context
from sqlalchemy import Index, String, column, distinct, func, select, table, true
from sqlalchemy.orm import Mapped, Session, mapped_column
from werkzeug.wrappers import Response

from bastion.audit import Actor, EventTag, Outcome
from bastion.audit.append import holds_chain_lock, lock_chain
from bastion.audit.models import AuditEvent
from bastion.audit.service import build_event
from bastion.core.addresses import address_key
from bastion.core.clock import utcnow
from bastion.core.db import Base, db
from bastion.core.mail import Mailer, MailMessage
from bastion.security.permissions import ROLE_PERMISSIONS, Permission, permissions_for
from bastion.settings import Settings

log = structlog.get_logger("bastion.alerts")

# Serves the per-account count, and the "already alerted" look-up (event, target, time).
# Declared here, beside the only queries that need it; migration 0006 creates it.
TARGET_INDEX = Index(
    "ix_audit_events_event_target_created_at",
    AuditEvent.event,
    AuditEvent.target,
    AuditEvent.created_at,
)
DENIALS = (EventTag.CSRF_FAILURE.value, EventTag.AUTHZ_DENIED.value)
TARGET_MAX = 320  # audit_events.target
# The admin-prefix rule: one alert per admin and prefix per day at most (later sign-ins
# from that prefix find the first one in the history anyway).
PREFIX_ALERT_WINDOW = timedelta(days=1)
_users = table("users", column("email"), column("role"), column("active"))


class AlertKind(StrEnum):
    CREDENTIAL_STUFFING = "credential_stuffing"
    ACCOUNT_MANY_IPS = "account_many_ips"
    ADMIN_NEW_PREFIX = "admin_new_prefix"
    REPEATED_DENIALS = "repeated_denials"


class Severity(StrEnum):
    MEDIUM = "medium"
    HIGH = "high"


SEVERITY = {
    AlertKind.CREDENTIAL_STUFFING: Severity.HIGH,
    AlertKind.ACCOUNT_MANY_IPS: Severity.HIGH,
    AlertKind.ADMIN_NEW_PREFIX: Severity.MEDIUM,
    AlertKind.REPEATED_DENIALS: Severity.MEDIUM,
}


class AlertAck(Base):
    """An admin's acknowledgement of one alert event (no foreign key: audit rows get pruned)."""

    __tablename__ = "alert_acknowledgements"

    event_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    acknowledged_at: Mapped[datetime]
    actor_id: Mapped[int | None]
    actor_email: Mapped[str | None] = mapped_column(String(320))


@dataclass(frozen=True)
class AlertPolicy:
    """The thresholds and windows of the four rules (BASTION_ALERT_* settings)."""

    stuffing_failures: int = 20
    stuffing_accounts: int = 5
    stuffing_window: timedelta = timedelta(minutes=10)
    account_ips: int = 10
    account_window: timedelta = timedelta(hours=1)
    admin_prefix_window: timedelta = timedelta(days=90)
    denials: int = 5
    denials_window: timedelta = timedelta(minutes=10)
    mail: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> AlertPolicy:
        return cls(
            stuffing_failures=settings.alert_stuffing_failures,
            stuffing_accounts=settings.alert_stuffing_accounts,
            stuffing_window=timedelta(minutes=settings.alert_stuffing_minutes),
            account_ips=settings.alert_account_ips,
            account_window=timedelta(minutes=settings.alert_account_minutes),
            admin_prefix_window=timedelta(days=settings.alert_admin_prefix_days),
            denials=settings.alert_denials,
            denials_window=timedelta(minutes=settings.alert_denials_minutes),
            mail=settings.alert_mail,
        )


@dataclass(frozen=True)
class Alert:
    """An alert as the dashboard shows it."""

    id: int
    created_at: datetime
    kind: str
    severity: str
    subject: str
    summary: str
    ip: str | None


def _policy() -> AlertPolicy:
    return AlertPolicy.from_settings(current_app.extensions["bastion.settings"])


def prefix_of(ip: str | None) -> str | None:
    """The /24 (IPv4) or /48 (IPv6) network of `ip`, or None for a missing or bad address."""
    try:
        address = ipaddress.ip_address(ip or "")
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    bits = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{bits}", strict=False))


# ----------------------------------------------------------------------- the hooks
def after_login_failure(actor: Actor, target: str) -> None:
    """Rules (a) and (b), after a failed sign-in by `actor` on `target` was recorded."""
    policy, now = _policy(), utcnow()
    failed = AuditEvent.event == EventTag.LOGIN_FAILURE.value
    with _session() as session:
        if session is None:
            return
        if actor.ip:
            source = address_key(actor.ip)
            since = now - policy.stuffing_window
            failures, accounts = session.execute(
                select(func.count(), func.count(distinct(AuditEvent.target))).where(
                    failed, AuditEvent.ip_key == source, AuditEvent.created_at >= since
                )
            ).one()
            if failures >= policy.stuffing_failures and accounts >= policy.stuffing_accounts:
                _raise(
                    session,
                    AlertKind.CREDENTIAL_STUFFING,
                    source,
                    actor,
                    window=policy.stuffing_window,
                    facts={"failures": failures, "accounts": accounts},
                    policy=policy,
                )
        target = target[:TARGET_MAX]
        since = now - policy.account_window
        ips = session.scalar(
            select(func.count(distinct(AuditEvent.ip_key))).where(
                failed, AuditEvent.target == target, AuditEvent.created_at >= since
            )
        )
        if (ips or 0) >= policy.account_ips:
            _raise(
                session,
                AlertKind.ACCOUNT_MANY_IPS,
                target,
                actor,
                window=policy.account_window,
                facts={"ips": ips},
                policy=policy,
            )


def after_login_success(actor: Actor, *, user_id: int, email: str, role: str) -> None:
    """Rule (c), after a successful sign-in was recorded (only administrators are checked)."""
    if Permission.ADMIN_USERS not in permissions_for(role):
        return
    prefix = prefix_of(actor.ip)
    if prefix is None:
        return
    policy, now = _policy(), utcnow()
    with _session() as session:
        if session is None:
            return
        seen = session.execute(
            select(AuditEvent.ip, func.count())
            .where(
                AuditEvent.event == EventTag.LOGIN_SUCCESS.value,
                AuditEvent.actor_id == user_id,
                AuditEvent.created_at >= now - policy.admin_prefix_window,
            )
            .group_by(AuditEvent.ip)
        ).all()
        # This sign-in is already among them: look at the others.
        total = sum(int(n) for _, n in seen) - 1
        same = sum(int(n) for ip, n in seen if prefix_of(ip) == prefix) - 1
        if total > 0 and same <= 0:
            _raise(
                session,
                AlertKind.ADMIN_NEW_PREFIX,
                f"{email} {prefix}",
                actor,
                window=PREFIX_ALERT_WINDOW,
                facts={"user_id": user_id, "prefix": prefix, "earlier_sign_ins": total},
                policy=policy,
            )


def after_denial(actor: Actor) -> None:
    """Rule (d), after a CSRF failure or an authorization denial was recorded."""
    policy, now = _policy(), utcnow()
    if actor.user_id is not None:
        who, subject = AuditEvent.actor_id == actor.user_id, f"user {actor.user_id}"
        if actor.email:
            subject += f" ({actor.email})"
    elif actor.ip:
        subject = address_key(actor.ip)
        who = AuditEvent.ip_key == subject
    else:
        return
    with _session() as session:
        if session is None:
            return
        denials = session.scalar(
            select(func.count()).where(
                AuditEvent.event.in_(DENIALS),
                who,
                AuditEvent.created_at >= now - policy.denials_window,
            )
        )
        if (denials or 0) >= policy.denials:
            _raise(
                session,
                AlertKind.REPEATED_DENIALS,
                subject,
                actor,
                window=policy.denials_window,
                facts={"denials": denials},
                policy=policy,
            )


class _session:  # noqa: N801 - used as a context manager, like a function
    """A short session of its own, or None when the request's transaction holds the chain.

    Our own connection would wait forever for that lock (see audit.service.record_failure);
    such a request only skips the check, and the next event from the same source repeats it.
    """

    def __enter__(self) -> Session | None:
        if db.session.registry.has() and holds_chain_lock(db.session()):
            log.warning("alerts.skipped_inside_audit_transaction")
            self.session = None
        else:
            self.session = Session(db.engine)
        return self.session

    def __exit__(self, *exc: object) -> None:
        if self.session is not None:
            self.session.close()


def _raise(
    session: Session,
    kind: AlertKind,
    subject: str,
    actor: Actor,
    *,
    window: timedelta,
    facts: dict[str, Any],
    policy: AlertPolicy,
) -> bool:
    """Record the alert unless one for (kind, subject) exists within `window`; commit."""
    target = f"{kind.value}:{subject}"[:TARGET_MAX]
    since = utcnow() - window

    def earlier() -> bool:
        found = session.scalar(
            select(AuditEvent.id)
            .where(
                AuditEvent.event == EventTag.ALERT.value,
                AuditEvent.target == target,
                AuditEvent.created_at >= since,
            )
            .limit(1)
        )
        return found is not None

    if earlier():  # the common case during an attack: no lock taken
        session.rollback()
        return False
    lock_chain(session)  # from here on no other writer can add the same alert
    if earlier():
        session.rollback()
        return False
    details = {
        "kind": kind.value,
        "severity": SEVERITY[kind].value,
        "subject": subject,
        "window_minutes": int(window / timedelta(minutes=1)),
        **facts,
    }
    session.add(
        build_event(EventTag.ALERT, actor, outcome=Outcome.FAILURE, target=target, details=details)
    )
    session.commit()
    log.warning("security alert", kind=kind.value, subject=subject, severity=SEVERITY[kind].value)
    if policy.mail:
        _mail_admins(session, kind, details)
    return True


# ------------------------------------------------------------------------ mail
def _mail_admins(session: Session, kind: AlertKind, details: dict[str, Any]) -> None:
    roles = [
        role.value
        for role, granted in ROLE_PERMISSIONS.items()
        if Permission.ADMIN_USERS in granted
    ]
    emails = list(
        session.scalars(
            select(_users.c.email).where(_users.c.role.in_(roles), _users.c.active == true())
        )
    )
    settings: Settings = current_app.extensions["bastion.settings"]
    mailer: Mailer = current_app.extensions["bastion.mailer"]
    # Numbers only: the subject can be whatever an attacker typed as the email address at
    # sign-in (account_many_ips), and a genuine Bastion mail to every admin must not carry
    # their words. The dashboard shows the subject, escaped.
    counts = "".join(
        f"  {name}: {value}\n"
        for name, value in details.items()
        if isinstance(value, int) and not isinstance(value, bool)
    )
    body = (
        f"Bastion raised a {SEVERITY[kind].value}-severity security alert: "
        f"{describe(kind.value)}.\n\n{counts}\n"
        f"Review and acknowledge it on the dashboard: {settings.public_url.rstrip('/')}/admin/\n"
    )
    messages = [
        MailMessage(to=email, subject=f"Bastion security alert: {kind.value}", body=body)
        for email in emails
    ]

    def send_all() -> None:
        for message in messages:
            try:
                mailer.send(message)
            except Exception as exc:  # an alert is recorded either way; a lost mail is logged
                log.error("alert mail not sent", error_type=type(exc).__name__)

    if has_request_context():

        @after_this_request
        def _defer(response: Response) -> Response:
            response.call_on_close(send_all)
            return response

    else:
        send_all()


# ------------------------------------------------------------------ for the console
DESCRIPTIONS = {
    AlertKind.CREDENTIAL_STUFFING.value: "many failed sign-ins across many accounts from one IP",
    AlertKind.ACCOUNT_MANY_IPS.value: "failed sign-ins on one account from many IPs",
    AlertKind.ADMIN_NEW_PREFIX.value: "an administrator signed in from a new network",
    AlertKind.REPEATED_DENIALS.value: "repeated CSRF failures or authorization denials",
}


def describe(kind: str) -> str:
    return DESCRIPTIONS.get(kind, kind)


def _open() -> Any:
    return (
        select(AuditEvent)
        .outerjoin(AlertAck, AlertAck.event_id == AuditEvent.id)
        .where(AuditEvent.event == EventTag.ALERT.value, AlertAck.event_id.is_(None))
    )


def _as_alert(row: AuditEvent) -> Alert:
    try:
        details = json.loads(row.details)
    except ValueError:
        details = {}
    kind = str(details.get("kind", "unknown"))
    return Alert(
        id=row.id,
        created_at=row.created_at,
        kind=kind,
        severity=str(details.get("severity", "medium")),
        subject=str(details.get("subject", row.target or "")),
        summary=describe(kind),
        ip=row.ip,
    )


def open_alerts(limit: int) -> list[Alert]:
    """Alerts no admin has acknowledged, newest first."""
    rows = db.session.scalars(_open().order_by(AuditEvent.id.desc()).limit(limit))
    return [_as_alert(row) for row in rows]


def count_open() -> int:
    return int(db.session.scalar(select(func.count()).select_from(_open().subquery())) or 0)


def get_alert(event_id: int) -> AuditEvent | None:
    """The alert event with this id (acknowledged or not), or None."""
    row = db.session.get(AuditEvent, event_id)
    return row if row is not None and row.event == EventTag.ALERT.value else None


def is_acknowledged(event_id: int) -> bool:
    return db.session.get(AlertAck, event_id) is not None
