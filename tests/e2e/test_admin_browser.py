"""The admin console in a real browser: disable and re-enable a user, then find both in the
audit log, with zero CSP violations on every page.

The issue's journey says "locks and unlocks"; locking arrives with the lockout work, so the
admin disables and re-enables the account, which is the console's lock today.
"""

from __future__ import annotations

import re
import secrets

import pytest
from playwright.sync_api import expect

from tests.conftest import GOOD_PASSWORD
from tests.e2e.conftest import LiveServer, Watch

pytestmark = pytest.mark.e2e

STRICT_CSP = re.compile(
    r"^default-src 'none'; script-src 'nonce-[A-Za-z0-9_-]{22,}' 'strict-dynamic'; "
    r"style-src 'self'; "
)


def create(live_server: LiveServer, email: str, name: str, role: str) -> None:
    from bastion.accounts import service
    from bastion.audit import Actor

    settings = live_server.app.extensions["bastion.settings"]
    with live_server.app.app_context():
        service.create_user(
            email=email,
            name=name,
            password=GOOD_PASSWORD,
            role=role,
            actor=Actor.system(),
            site=service.Site(settings.public_url, settings.password_min_length),
        )


def assert_admin_page(watch: Watch, heading: str) -> None:
    """An HTML page under the strict CSP, showing `heading`, with nothing reported."""
    document = watch.last_document()
    assert document.status == 200, document.url
    assert (document.header_value("content-type") or "").startswith("text/html")
    assert STRICT_CSP.match(document.header_value("content-security-policy") or "")
    expect(watch.page.get_by_role("heading", level=1)).to_have_text(heading)
    watch.assert_clean()


def open_section(watch: Watch, name: str) -> None:
    watch.page.get_by_role("navigation", name="Admin console").get_by_role(
        "link", name=name
    ).click()


def test_admin_disables_and_enables_a_user_and_sees_both_in_the_audit_log(
    live_server: LiveServer, watch: Watch
) -> None:
    page = watch.page
    run = secrets.token_hex(4)
    admin_email, target_email = f"root-{run}@example.com", f"dana-{run}@example.com"
    create(live_server, admin_email, "Root Admin", "admin")
    create(live_server, target_email, "Dana Target", "user")

    page.goto(live_server.url + "/auth/login?next=/admin/")
    page.get_by_label("Email address").fill(admin_email)
    page.get_by_label("Password").fill(GOOD_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(live_server.url + "/admin/")
    assert_admin_page(watch, "Security dashboard")
    chart = page.locator("svg.chart")
    expect(chart).to_be_visible()
    assert chart.bounding_box()["width"] > 200  # type: ignore[index]  # styled by app.css

    open_section(watch, "Users")
    assert_admin_page(watch, "Users")
    page.get_by_label("Email or name contains").fill(f"dana-{run}")
    page.get_by_role("button", name="Search").click()
    assert_admin_page(watch, "Users")
    page.get_by_role("link", name=target_email).click()
    assert_admin_page(watch, "Dana Target")

    page.get_by_role("button", name="Disable account").click()
    assert_admin_page(watch, "Dana Target")
    expect(page.get_by_role("status")).to_contain_text("The account is disabled")
    expect(page.get_by_role("button", name="Enable account")).to_be_visible()

    page.get_by_role("button", name="Enable account").click()
    assert_admin_page(watch, "Dana Target")
    expect(page.get_by_role("status")).to_contain_text("The account is enabled")
    expect(page.get_by_role("button", name="Disable account")).to_be_visible()

    open_section(watch, "Audit log")
    assert_admin_page(watch, "Audit log")
    page.get_by_label("Actor email contains").fill(admin_email)
    page.get_by_role("button", name="Filter").click()
    assert_admin_page(watch, "Audit log")
    table = page.get_by_role("table", name="Audit events, newest first")
    disable = table.get_by_role("row").filter(has_text="admin.user.disable")
    enable = table.get_by_role("row").filter(has_text="admin.user.enable")
    expect(disable).to_have_count(1)
    expect(enable).to_have_count(1)
    expect(disable).to_contain_text(target_email)
    expect(enable).to_contain_text(target_email)
    expect(disable).to_contain_text('"before": {"active": true}')
    expect(enable).to_contain_text('"after": {"active": true}')

    open_section(watch, "Sessions")
    assert_admin_page(watch, "Active sessions")
    expect(page.get_by_text("This session")).to_be_visible()


def test_a_locked_user_is_unlocked_by_an_admin_and_both_show_in_the_audit_log(
    live_server: LiveServer, watch: Watch
) -> None:
    from bastion.core.db import db
    from bastion.security import lockout

    page = watch.page
    run = secrets.token_hex(4)
    admin_email, target_email = f"boss-{run}@example.com", f"erin-{run}@example.com"
    create(live_server, admin_email, "Boss Admin", "admin")
    create(live_server, target_email, "Erin Target", "user")
    app = live_server.app
    with app.app_context():
        from bastion.accounts.service import find_by_email

        target = find_by_email(target_email)
        assert target is not None
        policy = lockout.LockoutPolicy.from_settings(app.extensions["bastion.settings"])
        # What ten wrong passwords from an attacker do (the lockout tests send them for real).
        for _ in range(policy.threshold):
            lockout.register_failure(target.id, policy)
        db.session.commit()

    page.goto(live_server.url + "/auth/login?next=/admin/users")
    page.get_by_label("Email address").fill(admin_email)
    page.get_by_label("Password").fill(GOOD_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    assert_admin_page(watch, "Users")
    page.get_by_label("Email or name contains").fill(f"erin-{run}")
    page.get_by_role("button", name="Search").click()
    page.get_by_role("link", name=target_email).click()
    assert_admin_page(watch, "Erin Target")
    expect(page.get_by_text("Locked", exact=False).first).to_be_visible()

    page.get_by_role("button", name="Unlock account").click()
    assert_admin_page(watch, "Erin Target")
    expect(page.get_by_role("status")).to_contain_text("The account is unlocked")
    expect(page.get_by_role("button", name="Unlock account")).to_have_count(0)

    open_section(watch, "Audit log")
    page.get_by_label("Actor email contains").fill(admin_email)
    page.get_by_role("button", name="Filter").click()
    assert_admin_page(watch, "Audit log")
    table = page.get_by_role("table", name="Audit events, newest first")
    unlock = table.get_by_role("row").filter(has_text="admin.user.unlock")
    expect(unlock).to_have_count(1)
    expect(unlock).to_contain_text(target_email)
