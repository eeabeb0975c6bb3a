"""Suspicious-activity alerts: each rule fires at its threshold and not below, once per window.

Thresholds are lowered with settings so each rule is driven through the real pages (sign-in
form, a forbidden page, a form without its CSRF token) from chosen client addresses.
"""

from __future__ import annotations

import json
from datetime import timedelta
from http import HTTPStatus
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from bastion.audit import Actor, EventTag, Outcome
from bastion.audit.models import AuditEvent
from bastion.audit.service import build_event
from bastion.core.clock import utcnow
from bastion.core.db import db
from bastion.security.alerts import AlertPolicy, prefix_of
from bastion.settings import Settings
from tests.conftest import AuthActions, Outbox
from tests.functional.admin.state import alerts

WRONG = "not the right password at all"
ATTACKER = "203.0.113.66"


def browser(app: Flask, ip: str) -> AuthActions:
    client: FlaskClient = app.test_client()
    client.environ_base["REMOTE_ADDR"] = ip
    return AuthActions(app, client)


def fail_login(app: Flask, ip: str, email: str) -> None:
    with browser(app, ip).login(email, WRONG) as response:
        assert response.status_code == HTTPStatus.UNAUTHORIZED
        response.get_data()  # closing the answer sends any deferred mail


def sign_in(app: Flask, ip: str, email: str) -> AuthActions:
    auth = browser(app, ip)
    assert auth.login(email).status_code == HTTPStatus.SEE_OTHER
    return auth


def add_event(app: Flask, tag: EventTag, ago: timedelta, **fields: Any) -> None:
    """An older audit event (inserted, as the log allows; never updated)."""
    details = fields.pop("details", {})
    with app.app_context():
        row = build_event(tag, Actor(**fields.pop("actor", {})), details=details, **fields)
        row.created_at = utcnow() - ago
        db.session.add(row)
        db.session.commit()


def test_the_defaults_are_the_documented_thresholds() -> None:
    assert AlertPolicy.from_settings(Settings.for_tests()) == AlertPolicy()
    policy = AlertPolicy()
    assert (policy.stuffing_failures, policy.stuffing_accounts) == (20, 5)
    assert policy.stuffing_window == timedelta(minutes=10)
    assert (policy.account_ips, policy.account_window) == (10, timedelta(hours=1))
    assert policy.admin_prefix_window == timedelta(days=90)
    assert (policy.denials, policy.denials_window) == (5, timedelta(minutes=10))
    assert policy.mail is False


def test_prefixes() -> None:
    assert prefix_of("198.51.100.7") == "198.51.100.0/24"
    assert prefix_of("2001:db8:1:ffff::2") == "2001:db8:1::/48"
    assert prefix_of("::ffff:198.51.100.7") == "198.51.100.0/24"
    assert prefix_of(None) is None
    assert prefix_of("unknown") is None


# ------------------------------------------------------------- (a) credential stuffing
@pytest.mark.settings(alert_stuffing_failures=6, alert_stuffing_accounts=3)
def test_credential_stuffing_fires_at_the_threshold_and_once(app: Flask, auth: Any) -> None:
    auth.create_user("known@example.com")
    victims = ["known@example.com", "a@example.com", "b@example.com"]
    for i in range(5):  # 5 failures over 3 accounts: below the failure threshold
        fail_login(app, ATTACKER, victims[i % 3])
    assert alerts(app, "credential_stuffing") == []

    fail_login(app, ATTACKER, victims[2])  # the 6th

    [alert] = alerts(app, "credential_stuffing")
    assert alert["target"] == f"credential_stuffing:{ATTACKER}"
    assert alert["ip"] == ATTACKER
    assert alert["details"]["severity"] == "high"
    assert alert["details"]["failures"] == 6
    assert alert["details"]["accounts"] == 3
    assert alert["acknowledged"] is False

    for i in range(4):  # no flood: one alert per IP per window
        fail_login(app, ATTACKER, victims[i % 3])
    assert len(alerts(app, "credential_stuffing")) == 1
    # Another address is another subject.
    assert all(a["ip"] == ATTACKER for a in alerts(app, "credential_stuffing"))


@pytest.mark.settings(alert_stuffing_failures=6, alert_stuffing_accounts=3)
def test_many_failures_on_few_accounts_are_not_stuffing(app: Flask) -> None:
    for i in range(8):  # plenty of failures, but only 2 accounts
        fail_login(app, ATTACKER, ["a@example.com", "b@example.com"][i % 2])
    assert alerts(app, "credential_stuffing") == []


@pytest.mark.settings(alert_stuffing_failures=4, alert_stuffing_accounts=2)
def test_stuffing_counts_only_the_window_and_alerts_again_after_it(app: Flask) -> None:
    for name in ("a", "b", "c"):  # old failures, outside the 10 minutes
        add_event(
            app,
            EventTag.LOGIN_FAILURE,
            timedelta(minutes=11),
            outcome=Outcome.FAILURE,
            target=f"{name}@example.com",
            actor={"ip": ATTACKER},
        )
    add_event(  # an alert for this IP, but from the previous window
        app,
        EventTag.ALERT,
        timedelta(minutes=11),
        target=f"credential_stuffing:{ATTACKER}",
        details={"kind": "credential_stuffing", "severity": "high", "subject": ATTACKER},
    )
    for name in ("a", "b", "c"):
        fail_login(app, ATTACKER, f"{name}@example.com")
    assert len(alerts(app, "credential_stuffing")) == 1  # only the old one

    fail_login(app, ATTACKER, "d@example.com")

    assert len(alerts(app, "credential_stuffing")) == 2


# --------------------------------------------------------- (b) many IPs on one account
@pytest.mark.settings(alert_account_ips=3)
def test_many_ips_failing_on_one_account(app: Flask, auth: Any) -> None:
    auth.create_user("target@example.com")
    fail_login(app, "198.51.100.1", "target@example.com")
    fail_login(app, "198.51.100.2", "target@example.com")
    fail_login(app, "198.51.100.2", "target@example.com")  # same IP again: still 2
    assert alerts(app, "account_many_ips") == []

    fail_login(app, "192.0.2.3", "target@example.com")

    [alert] = alerts(app, "account_many_ips")
    assert alert["target"] == "account_many_ips:target@example.com"
    assert alert["details"]["ips"] == 3
    assert alert["details"]["severity"] == "high"

    fail_login(app, "192.0.2.4", "target@example.com")
    assert len(alerts(app, "account_many_ips")) == 1
    # The failure count of another account is its own.
    fail_login(app, "192.0.2.5", "other@example.com")
    assert len(alerts(app, "account_many_ips")) == 1


# --------------------------------------------------------------- (c) admin new prefix
ADMIN = "root@example.com"


def test_admin_signing_in_from_a_new_prefix(app: Flask, auth: Any) -> None:
    auth.create_user(ADMIN, role="admin")
    sign_in(app, "198.51.100.10", ADMIN)  # the first sign-in sets the baseline
    sign_in(app, "198.51.100.77", ADMIN)  # same /24
    assert alerts(app, "admin_new_prefix") == []

    sign_in(app, "203.0.113.20", ADMIN)

    [alert] = alerts(app, "admin_new_prefix")
    assert alert["details"]["prefix"] == "203.0.113.0/24"
    assert alert["details"]["severity"] == "medium"
    assert alert["ip"] == "203.0.113.20"
    assert ADMIN in alert["target"]

    sign_in(app, "203.0.113.21", ADMIN)  # seen now
    sign_in(app, "198.51.100.10", ADMIN)
    assert len(alerts(app, "admin_new_prefix")) == 1


def test_admin_new_ipv6_prefix_is_a_48(app: Flask, auth: Any) -> None:
    auth.create_user(ADMIN, role="admin")
    sign_in(app, "2001:db8:1::1", ADMIN)
    sign_in(app, "2001:db8:1:ffff::2", ADMIN)  # same /48
    assert alerts(app, "admin_new_prefix") == []
    sign_in(app, "2001:db8:2::1", ADMIN)
    [alert] = alerts(app, "admin_new_prefix")
    assert alert["details"]["prefix"] == "2001:db8:2::/48"


def test_sign_ins_older_than_90_days_are_forgotten(app: Flask, auth: Any) -> None:
    admin_id = auth.create_user(ADMIN, role="admin")
    add_event(
        app,
        EventTag.LOGIN_SUCCESS,
        timedelta(days=91),
        target=ADMIN,
        actor={"user_id": admin_id, "email": ADMIN, "ip": "203.0.113.20"},
    )
    sign_in(app, "198.51.100.10", ADMIN)
    assert alerts(app, "admin_new_prefix") == []  # the old sign-in is no baseline

    sign_in(app, "203.0.113.20", ADMIN)  # seen, but 91 days ago

    assert len(alerts(app, "admin_new_prefix")) == 1


def test_non_admins_are_not_watched_for_new_prefixes(app: Flask, auth: Any) -> None:
    auth.create_user("user@example.com")
    auth.create_user("auditor@example.com", role="auditor")
    for email in ("user@example.com", "auditor@example.com"):
        sign_in(app, "198.51.100.10", email)
        sign_in(app, "203.0.113.20", email)
    assert alerts(app, "admin_new_prefix") == []


# ------------------------------------------------------ (d) repeated CSRF / authz denials
def test_repeated_authorization_denials_of_one_user(app: Flask, auth: Any) -> None:
    auth.create_user("curious@example.com")
    user = sign_in(app, "198.51.100.10", "curious@example.com")
    for _ in range(4):
        assert user.client.get("/admin/").status_code == HTTPStatus.FORBIDDEN
    assert alerts(app, "repeated_denials") == []

    assert user.client.get("/admin/users").status_code == HTTPStatus.FORBIDDEN

    [alert] = alerts(app, "repeated_denials")
    assert "curious@example.com" in alert["target"]
    assert alert["details"]["denials"] == 5
    assert alert["details"]["severity"] == "medium"
    for _ in range(3):
        user.client.get("/admin/")
    assert len(alerts(app, "repeated_denials")) == 1


def test_repeated_csrf_failures_from_one_ip(app: Flask) -> None:
    client = browser(app, ATTACKER).client
    for _ in range(4):
        answer = client.post("/auth/login", data={"email": "x@example.com", "password": WRONG})
        assert answer.status_code == HTTPStatus.BAD_REQUEST
    assert alerts(app, "repeated_denials") == []
    # Other addresses do not add up with this one.
    browser(app, "192.0.2.50").client.post("/auth/login", data={"email": "x@example.com"})
    assert alerts(app, "repeated_denials") == []

    client.post("/auth/login", data={"email": "x@example.com", "password": WRONG})

    [alert] = alerts(app, "repeated_denials")
    assert alert["target"] == f"repeated_denials:{ATTACKER}"


# ------------------------------------------------------- an IPv6 /64 is one source
def in_64(n: int) -> str:
    """The n-th address of one IPv6 /64: what one subscriber may send from."""
    return f"2001:db8:7:8::{n:x}"


@pytest.mark.settings(alert_stuffing_failures=6, alert_stuffing_accounts=3)
def test_stuffing_from_a_fresh_address_per_attempt_in_one_64_is_one_source(app: Flask) -> None:
    victims = ["a@example.com", "b@example.com", "c@example.com"]
    for n in range(5):
        fail_login(app, in_64(n + 1), victims[n % 3])
    assert alerts(app, "credential_stuffing") == []

    fail_login(app, in_64(6), victims[2])

    [alert] = alerts(app, "credential_stuffing")
    assert alert["target"] == "credential_stuffing:2001:db8:7:8::/64"
    assert (alert["details"]["failures"], alert["details"]["accounts"]) == (6, 3)
    assert alert["ip"] == in_64(6)  # the row still names the exact address


@pytest.mark.settings(alert_account_ips=2)
def test_addresses_of_one_64_count_as_one_ip_on_an_account(app: Flask) -> None:
    for n in range(3):
        fail_login(app, in_64(n + 1), "target@example.com")
    assert alerts(app, "account_many_ips") == []

    fail_login(app, "2001:db8:7:9::1", "target@example.com")  # the next /64

    [alert] = alerts(app, "account_many_ips")
    assert alert["details"]["ips"] == 2


def test_csrf_failures_from_a_fresh_address_each_in_one_64_add_up(app: Flask) -> None:
    for n in range(4):
        browser(app, in_64(n + 1)).client.post("/auth/login", data={"email": "x@example.com"})
    assert alerts(app, "repeated_denials") == []

    browser(app, in_64(5)).client.post("/auth/login", data={"email": "x@example.com"})

    [alert] = alerts(app, "repeated_denials")
    assert alert["target"] == "repeated_denials:2001:db8:7:8::/64"


# -------------------------------------------------------------------------------- mail
@pytest.mark.settings(alert_account_ips=2, alert_mail=True)
def test_alert_mail_goes_to_the_active_admins(app: Flask, auth: Any, outbox: Outbox) -> None:
    auth.create_user(ADMIN, role="admin")
    auth.create_user("plain@example.com")
    before = len(outbox.messages())
    fail_login(app, "198.51.100.1", "plain@example.com")
    fail_login(app, "198.51.100.2", "plain@example.com")

    sent = outbox.messages()[before:]
    assert [m["To"] for m in sent] == [ADMIN]
    assert "security alert" in sent[0]["Subject"]
    assert "account_many_ips" in sent[0]["Subject"]
    assert "/admin/" in sent[0].get_content()


@pytest.mark.settings(alert_account_ips=2, alert_mail=True)
def test_alert_mail_carries_no_word_an_attacker_typed(
    app: Flask, auth: Any, outbox: Outbox
) -> None:
    """The subject of account_many_ips is whatever address was typed at sign-in."""
    auth.create_user(ADMIN, role="admin")
    lure = "confirm.your.admin.password.at.evil.example@evil.example"
    before = len(outbox.messages())
    fail_login(app, "198.51.100.1", lure)
    fail_login(app, "198.51.100.2", lure)

    [alert] = alerts(app, "account_many_ips")
    assert alert["target"] == f"account_many_ips:{lure}"  # the dashboard still has it
    [mail] = outbox.messages()[before:]
    text = mail.get_content()
    assert "evil.example" not in text
    assert "confirm.your" not in text
    assert "ips: 2" in text
    assert "/admin/" in text


@pytest.mark.settings(alert_account_ips=2)
def test_no_alert_mail_by_default(app: Flask, auth: Any, outbox: Outbox) -> None:
    auth.create_user(ADMIN, role="admin")
    before = len(outbox.messages())
    fail_login(app, "198.51.100.1", "plain@example.com")
    fail_login(app, "198.51.100.2", "plain@example.com")
    assert len(alerts(app, "account_many_ips")) == 1
    assert outbox.messages()[before:] == []


# --------------------------------------------------------- dashboard and acknowledgement
@pytest.mark.settings(alert_account_ips=2)
def test_dashboard_shows_open_alerts_and_acknowledging_closes_them(app: Flask, auth: Any) -> None:
    auth.create_user(ADMIN, role="admin")
    auth.create_user("auditor@example.com", role="auditor")
    fail_login(app, "198.51.100.1", "target@example.com")
    fail_login(app, "198.51.100.2", "target@example.com")
    [alert] = alerts(app, "account_many_ips")

    auditor = sign_in(app, "127.0.0.1", "auditor@example.com")
    page = auditor.client.get("/admin/").get_data(as_text=True)
    assert "Open alerts (1)" in page
    assert "account_many_ips" in page
    assert "Acknowledge" not in page  # read-only

    admin = sign_in(app, "127.0.0.1", ADMIN)
    page = admin.client.get("/admin/").get_data(as_text=True)
    assert "Open alerts (1)" in page
    assert "target@example.com" in page
    assert f"/admin/alerts/{alert['id']}/ack" in page

    token = admin.csrf("/")
    done = admin.client.post(f"/admin/alerts/{alert['id']}/ack", data={"csrf_token": token})
    assert done.status_code == HTTPStatus.SEE_OTHER
    assert alerts(app, "account_many_ips")[0]["acknowledged"] is True
    page = admin.client.get("/admin/").get_data(as_text=True)
    assert "Open alerts (0)" in page
    assert "No open alert." in page

    with app.app_context():
        rows = db.session.scalars(
            select(AuditEvent).where(AuditEvent.event == EventTag.ADMIN_ALERT_ACK.value)
        ).all()
        assert len(rows) == 1
        assert rows[0].actor_email == ADMIN
        assert rows[0].target == "account_many_ips:target@example.com"
        details = json.loads(rows[0].details)
        assert details["before"] == {"acknowledged": False}
        assert details["after"] == {"acknowledged": True}

    again = admin.client.post(f"/admin/alerts/{alert['id']}/ack", data={"csrf_token": token})
    assert again.status_code == HTTPStatus.SEE_OTHER
    with app.app_context():
        count = db.session.scalars(
            select(AuditEvent.id).where(AuditEvent.event == EventTag.ADMIN_ALERT_ACK.value)
        ).all()
        assert len(count) == 1


def test_acknowledging_needs_an_alert_csrf_and_a_recent_login(
    app: Flask, auth: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth.create_user(ADMIN, role="admin")
    admin = sign_in(app, "127.0.0.1", ADMIN)
    add_event(app, EventTag.ALERT, timedelta(0), target="repeated_denials:192.0.2.1")
    [alert] = alerts(app)
    with app.app_context():
        other = db.session.scalar(
            select(AuditEvent.id).where(AuditEvent.event == EventTag.LOGIN_SUCCESS.value)
        )
    token = admin.csrf("/")

    # Not an alert: an audit event of another kind is not found.
    assert (
        admin.client.post(f"/admin/alerts/{other}/ack", data={"csrf_token": token}).status_code
        == HTTPStatus.NOT_FOUND
    )
    assert admin.client.post(f"/admin/alerts/{alert['id']}/ack").status_code == 400
    got = admin.client.get(f"/admin/alerts/{alert['id']}/ack")
    assert got.status_code == HTTPStatus.SEE_OTHER
    assert got.headers["Location"] == "/admin/"
    later = utcnow() + timedelta(minutes=11)
    monkeypatch.setattr("bastion.security.freshness.utcnow", lambda: later)
    stale = admin.client.post(f"/admin/alerts/{alert['id']}/ack", data={"csrf_token": token})
    assert stale.headers["Location"].startswith("/auth/reauth?next=")
    assert alerts(app)[0]["acknowledged"] is False
