"""Account pages in a real browser: the whole journey, with no CSP violation on any page."""

from __future__ import annotations

import re
import secrets

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import GOOD_PASSWORD
from tests.e2e.conftest import LiveServer, Watch

pytestmark = pytest.mark.e2e

STRICT_CSP = re.compile(
    r"^default-src 'none'; script-src 'nonce-[A-Za-z0-9_-]{22,}' 'strict-dynamic'; "
)


def new_email(who: str) -> str:
    return f"{who}-{secrets.token_hex(4)}@example.com"


def assert_page(watch: Watch, path: str | re.Pattern[str], heading: str, status: int = 200) -> None:
    """The browser shows `path` as an HTML page under the strict CSP, and reported nothing."""
    if isinstance(path, str):
        path = re.compile(re.escape(path) + "$")
    expect(watch.page).to_have_url(path)
    document = watch.last_document()
    assert document.status == status, document.url
    content_type = document.header_value("content-type") or ""
    assert content_type.startswith("text/html"), f"{path} is served as {content_type!r}"
    assert STRICT_CSP.match(document.header_value("content-security-policy") or "")
    expect(watch.page.get_by_role("heading", level=1)).to_have_text(heading)
    watch.assert_clean()


def sign_in(watch: Watch, email: str, password: str = GOOD_PASSWORD) -> None:
    watch.page.get_by_label("Email address").fill(email)
    watch.page.get_by_label("Password").fill(password)
    watch.page.get_by_role("button", name="Sign in").click()


def sign_out_and_check(live_server: LiveServer, watch: Watch) -> None:
    watch.page.get_by_role("button", name="Sign out").click()
    assert_page(watch, "/auth/login", "Sign in")
    expect(watch.page.get_by_role("button", name="Sign out")).to_have_count(0)
    watch.page.goto(live_server.url + "/")  # signed out for real: home sends us to sign in
    assert_page(watch, re.compile(r"/auth/login\?next=(/|%2F)$"), "Sign in")


def test_register_confirm_by_mail_sign_in_and_out(live_server: LiveServer, watch: Watch) -> None:
    page = watch.page
    email = new_email("bob")

    page.goto(live_server.url + "/auth/register")
    assert_page(watch, "/auth/register", "Create an account")
    # The stylesheet loaded under style-src 'self' (a blocked one would be a violation too).
    expect(page.locator("body")).to_have_css("background-color", "rgb(247, 248, 250)")

    page.get_by_label("Email address").fill(email)
    page.get_by_label("Display name").fill("Bob Example")
    page.get_by_label("Password", exact=True).fill(GOOD_PASSWORD)
    page.get_by_label("Repeat password").fill(GOOD_PASSWORD)
    page.get_by_role("button", name="Create account").click()
    assert_page(watch, "/auth/check-email", "Check your email")

    link = live_server.mail_link(email)
    page.goto(link)
    assert_page(watch, link.removeprefix(live_server.url), "Confirm your account")
    assert watch.last_document().header_value("referrer-policy") == "no-referrer"
    page.get_by_role("button", name="Confirm my account").click()
    assert_page(watch, "/auth/login", "Sign in")
    expect(page.get_by_role("status")).to_contain_text("Your account is confirmed")

    sign_in(watch, email)
    assert_page(watch, "/", "Welcome, Bob Example")
    sign_out_and_check(live_server, watch)


def test_sign_in_visit_account_and_sign_out(live_server: LiveServer, watch: Watch) -> None:
    page = watch.page
    email = new_email("dana")
    live_server.create_user(email, name="Dana Example")

    page.goto(live_server.url + "/auth/login")
    assert_page(watch, "/auth/login", "Sign in")
    expect(page.locator("body")).to_have_css("background-color", "rgb(247, 248, 250)")
    sign_in(watch, email)
    assert_page(watch, "/", "Welcome, Dana Example")
    # COOP same-origin + COEP require-corp: the browser isolates the page from other sites.
    assert page.evaluate("self.crossOriginIsolated") is True

    page.get_by_role("link", name="Account").click()
    assert_page(watch, "/account/", "Your account")
    sign_out_and_check(live_server, watch)


def test_wrong_password_shows_the_generic_error(live_server: LiveServer, watch: Watch) -> None:
    page = watch.page
    email = new_email("erin")
    live_server.create_user(email)

    for who in (email, new_email("nobody")):  # wrong password and unknown account alike
        page.goto(live_server.url + "/auth/login")
        page.get_by_label("Email address").fill(who)
        page.get_by_label("Password").fill("not the password at all")
        page.get_by_role("button", name="Sign in").click()

        assert_page(watch, "/auth/login", "Sign in", status=401)
        summary = page.get_by_role("alert")
        expect(summary).to_be_visible()
        expect(summary.get_by_role("heading")).to_have_text("There is a problem")
        expect(summary.get_by_role("listitem")).to_have_text(["Invalid email or password."])
        expect(page.get_by_label("Email address")).to_have_value(who)
        expect(page.get_by_label("Password")).to_have_value("")  # never echoed back


def test_login_fields_are_labelled_for_password_managers(
    live_server: LiveServer, page: Page
) -> None:
    page.goto(live_server.url + "/auth/login")

    email = page.get_by_label("Email address")
    expect(email).to_have_attribute("type", "email")
    expect(email).to_have_attribute("autocomplete", "username")
    password = page.get_by_label("Password")
    expect(password).to_have_attribute("type", "password")
    expect(password).to_have_attribute("autocomplete", "current-password")
    expect(page.get_by_label("Keep me signed in on this device")).not_to_be_checked()


def test_keyboard_focus_is_always_visible(live_server: LiveServer, page: Page) -> None:
    page.goto(live_server.url + "/auth/login")

    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to content")
    expect(skip).to_be_focused()
    box = skip.bounding_box()
    assert box is not None
    assert box["x"] >= 0  # on screen once focused
    assert box["y"] >= 0

    reached = []
    for _ in range(8):
        focused = page.locator(":focus")
        outline = focused.evaluate(
            "el => { const s = getComputedStyle(el);"
            " return [s.outlineStyle, parseFloat(s.outlineWidth)]; }"
        )
        reached.append(focused.evaluate("el => el.id || el.textContent.trim()"))
        assert outline[0] != "none", (reached[-1], outline)
        assert outline[1] >= 2, (reached[-1], outline)
        page.keyboard.press("Tab")
    assert {"email", "password", "remember"} <= set(reached), reached


def test_anonymous_pages_render_clean(live_server: LiveServer, watch: Watch) -> None:
    for path, heading, status in [
        ("/auth/login", "Sign in", 200),
        ("/auth/register", "Create an account", 200),
        ("/auth/check-email", "Check your email", 200),
        ("/no-such-page", "404 — Not Found", 404),
    ]:
        watch.page.goto(live_server.url + path)
        assert_page(watch, path, heading, status=status)
