"""The security dashboard: failed sign-ins per hour, their sources, admin actions, chain status."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from http import HTTPStatus
from typing import Any

from flask import Flask

from bastion.admin import dashboard
from bastion.audit import EventTag
from bastion.audit.models import AuditEvent
from bastion.core.clock import utcnow
from bastion.core.db import db
from tests.functional.admin.conftest import Console, user_row


def add_failure(
    app: Flask, ago: timedelta, ip: str = "198.51.100.7", now: datetime | None = None
) -> None:
    with app.app_context():
        db.session.add(
            AuditEvent(
                created_at=(now or utcnow()) - ago,
                ip=ip,
                event=EventTag.LOGIN_FAILURE.value,
                target="someone@example.com",
                outcome="failure",
                details="{}",
            )
        )
        db.session.commit()


def svg_of(html: str) -> str:
    match = re.search(r"<svg .*?</svg>", html, re.S)
    assert match, "the page has no inline SVG"
    return match.group(0)


def test_failures_are_counted_per_hour_for_seven_days(app: Flask) -> None:
    # Half past the hour, so "1 and 2 minutes ago" fall in the current hour whatever the
    # wall clock says (a run at 10:00:28 once put them in the hour before).
    now = utcnow().replace(minute=30, second=0, microsecond=0)
    for ago in (
        timedelta(minutes=1),
        timedelta(minutes=2),
        timedelta(days=3),
        timedelta(days=6, hours=22),
        timedelta(days=8),  # outside the window
    ):
        add_failure(app, ago, now=now)

    with app.app_context():
        since, hourly = dashboard.failures_by_hour(now)

    assert len(hourly) == 7 * 24
    assert hourly[0][0] == since
    assert sum(count for _, count in hourly) == 4
    assert hourly[-1] == (now.replace(minute=0), 2)
    assert hourly[-2][1] == 0


def test_dashboard_shows_chart_ips_actions_disabled_and_chain(
    app: Flask, admin: Console, auth: Any
) -> None:
    for _ in range(3):
        add_failure(app, timedelta(hours=2), ip="203.0.113.50")
    add_failure(app, timedelta(hours=5), ip="198.51.100.7")
    auth.create_user("bob@example.com")
    bob = user_row(app, "bob@example.com")
    admin.post(f"/admin/users/{bob.id}/disable")

    response = admin.get("/admin/")

    assert response.status_code == HTTPStatus.OK
    html = response.get_data(as_text=True)
    svg = svg_of(html)
    assert 'role="img"' in svg
    assert 'aria-labelledby="failed-logins-title failed-logins-desc"' in svg
    assert "4 failed sign-ins in the last 7 days" in svg
    assert svg.count("<rect ") == 2  # two hours had failures
    for forbidden in ("style=", "<script", "javascript:", "data:", "href="):
        assert forbidden not in svg, forbidden
    assert not re.search(r"\son\w+=", svg)  # no event handler attributes
    ips = html.index("Top addresses")
    assert html.index("203.0.113.50", ips) < html.index("198.51.100.7", ips)
    assert "admin.user.disable" in html  # recent admin actions
    assert "Disabled accounts (1)" in html
    assert f'href="/admin/users/{bob.id}"' in html
    assert "Not verified yet" in html


def test_dashboard_shows_the_last_chain_verification(app: Flask, admin: Console) -> None:
    from bastion.audit.chain import verify_chain

    with app.app_context():
        verify_chain()
    assert "Intact:" in admin.get("/admin/").get_data(as_text=True)


def test_auditor_sees_the_dashboard_read_only(app: Flask, browser: Any) -> None:
    auditor = browser("audra@example.com", role="auditor")
    html = auditor.get("/admin/").get_data(as_text=True)
    assert "read-only access" in html
    assert 'href="/admin/audit"' in html
    assert 'href="/admin/users"' not in html
    assert 'href="/admin/sessions"' not in html


def test_empty_dashboard(admin: Console) -> None:
    html = admin.get("/admin/").get_data(as_text=True)
    assert "No failed sign-ins in the last 7 days." in html
    assert "No account is disabled." in html
    assert "<rect " not in svg_of(html)
