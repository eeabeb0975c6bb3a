"""Two-factor authentication in a real browser, under the strict CSP: enrol, sign out, sign in."""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import expect

from tests.conftest import GOOD_PASSWORD
from tests.e2e.conftest import LiveServer, Watch
from tests.e2e.test_accounts import assert_page, new_email, sign_in
from tests.mfa_support import Clock

pytestmark = pytest.mark.e2e

NEW_PASSWORD = "harbour juniper cobalt 9041"


def wait_for_link(live_server: LiveServer, to: str, timeout: float = 5.0) -> str:
    """The link in the newest mail to `to`; these mails go out just after the response."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return live_server.mail_link(to)
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    # The live server runs in this process: its code checks read this clock, so the test
    # can use a fresh 30-second step for each code instead of waiting for one.
    return Clock.install(monkeypatch)


def test_enrol_totp_sign_out_and_sign_in_with_a_code(
    live_server: LiveServer, watch: Watch, clock: Clock
) -> None:
    page = watch.page
    email = new_email("tess")
    live_server.create_user(email, name="Tess Example")
    page.goto(live_server.url + "/auth/login")
    sign_in(watch, email)
    assert_page(watch, "/", "Welcome, Tess Example")

    page.goto(live_server.url + "/account/")
    page.get_by_role("link", name="Two-factor authentication").click()
    assert_page(watch, "/account/2fa", "Two-factor authentication")
    page.get_by_role("link", name="Set up an authenticator app").click()
    assert_page(watch, "/account/2fa/setup", "Set up two-factor authentication")

    qr = page.get_by_role("img", name="QR code for your authenticator app")
    expect(qr).to_be_visible()
    box = qr.bounding_box()
    assert box is not None
    assert box["width"] > 100
    assert box["height"] > 100
    secret = page.locator("#totp-secret").inner_text().strip()
    assert re.fullmatch(r"[A-Z2-7]{32}", secret)

    page.get_by_label("Code from your authenticator app").fill(clock.code(secret))
    page.get_by_role("button", name="Turn on two-factor authentication").click()
    assert_page(watch, "/account/2fa/setup", "Your recovery codes")
    expect(page.locator("#recovery-codes li")).to_have_count(10)
    page.get_by_role("link", name="I have saved them").click()
    assert_page(watch, "/account/2fa", "Two-factor authentication")
    expect(page.locator("main")).to_contain_text("On.")

    page.get_by_role("button", name="Sign out").click()
    assert_page(watch, "/auth/login", "Sign in")

    sign_in(watch, email)
    assert_page(watch, "/auth/login/2fa", "Two-factor authentication")
    page.goto(live_server.url + "/")  # between the steps nothing signed-in is reachable
    assert_page(watch, re.compile(r"/auth/login\?next=(/|%2F)$"), "Sign in")
    sign_in(watch, email)
    page.get_by_label("Authentication code").fill(clock.code(secret))
    page.get_by_role("button", name="Verify").click()
    assert_page(watch, "/", "Welcome, Tess Example")

    # The other new pages render clean too.
    page.goto(live_server.url + "/account/sessions")
    assert_page(watch, "/account/sessions", "Your sessions")
    expect(page.locator("main")).to_contain_text("(this session)")
    page.goto(live_server.url + "/account/email")
    assert_page(watch, "/account/email", "Change your email address")
    page.get_by_role("button", name="Sign out").click()
    page.goto(live_server.url + "/auth/reset")
    assert_page(watch, "/auth/reset", "Reset your password")


def test_reset_by_mail_link_in_the_browser(live_server: LiveServer, watch: Watch) -> None:
    page = watch.page
    email = new_email("rita")
    live_server.create_user(email, name="Rita Example")
    page.goto(live_server.url + "/auth/login")
    page.get_by_role("link", name="Forgot your password?").click()
    assert_page(watch, "/auth/reset", "Reset your password")
    page.get_by_label("Email address").fill(email)
    page.get_by_role("button", name="Send the reset link").click()
    assert_page(watch, "/auth/reset", "Check your email")

    link = wait_for_link(live_server, email)
    page.goto(link)
    assert_page(watch, link.removeprefix(live_server.url), "Choose a new password")
    assert watch.last_document().header_value("referrer-policy") == "no-referrer"
    # The form posts from a no-referrer page: Chromium sends Origin: null, still accepted.
    page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
    page.get_by_label("Repeat new password").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Set the new password").click()
    assert_page(watch, "/auth/login", "Sign in")
    expect(page.get_by_role("status")).to_contain_text("Your password has been reset")
    sign_in(watch, email, NEW_PASSWORD)
    assert_page(watch, "/", "Welcome, Rita Example")


def test_email_change_by_mail_link_in_the_browser(live_server: LiveServer, watch: Watch) -> None:
    page = watch.page
    email = new_email("eve")
    new = new_email("eve-new")
    live_server.create_user(email, name="Eve Example")
    page.goto(live_server.url + "/auth/login")
    sign_in(watch, email)
    page.goto(live_server.url + "/account/")
    page.get_by_role("link", name="Change your email address").click()
    assert_page(watch, "/account/email", "Change your email address")
    page.get_by_label("Current password").fill(GOOD_PASSWORD)
    page.get_by_label("New email address").fill(new)
    page.get_by_role("button", name="Send the confirmation link").click()
    assert_page(watch, "/account/", "Your account")

    link = wait_for_link(live_server, new)
    page.goto(link)
    assert_page(watch, link.removeprefix(live_server.url), "Confirm your new email address")
    page.get_by_role("button", name="Use this address").click()
    assert_page(watch, "/account/", "Your account")
    expect(page.locator("main")).to_contain_text(new)
