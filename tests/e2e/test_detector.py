"""The CSP detector is not blind: pages that break the app's policy are caught.

A tiny probe app, not Bastion, serves pages under Bastion's own CSP string, so a clean
Bastion page in the other tests means the browser enforced that policy and saw nothing.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser
from werkzeug.wrappers import Request, Response

from bastion.security.headers import content_security_policy
from tests.e2e.conftest import Certificate, serve_https, url_of, watched_page

pytestmark = pytest.mark.e2e

NONCE = "e2e-probe-nonce-0123456789"
PAGES = {
    "/inline-script": '<script>document.title = "inline ran";</script>',
    "/inline-style": '<p style="color: red">styled</p>',
    "/nonce-script": f'<script nonce="{NONCE}">document.title = "nonce ran";</script>',
    "/script-errors": f'<script nonce="{NONCE}">console.warn("probe warning");'
    ' console.error("probe error"); throw new Error("probe exception");</script>',
}


@Request.application
def probe(request: Request) -> Response:
    if request.path == "/favicon.ico":  # browsers ask for one; a 404 would log an error
        return Response(status=204)
    body = PAGES.get(request.path)
    if body is None:
        return Response("not found", 404)
    html = f"<!doctype html><html lang=en><title>probe</title><p>probe</p>{body}</html>"
    return Response(
        html,
        content_type="text/html; charset=utf-8",
        headers={"Content-Security-Policy": content_security_policy(NONCE)},
    )


@pytest.fixture(scope="module")
def probe_url(certificate: Certificate) -> Iterator[str]:
    with serve_https(probe, certificate) as (server, _):
        yield url_of(server)


def test_inline_script_is_caught_by_both_channels(browser: Browser, probe_url: str) -> None:
    with watched_page(browser) as watch:
        watch.page.goto(probe_url + "/inline-script")
        watch.settle()

        assert watch.page.title() == "probe"  # the policy held: the script never ran
        assert len(watch.csp_violations) == 1, watch.csp_violations
        violation = watch.csp_violations[0]
        assert violation["directive"] == "script-src-elem"
        assert violation["blocked"] == "inline"
        assert violation["document"].endswith("/inline-script")
        assert watch.in_page_violations() == 1
        assert len(watch.csp_console_errors) == 1, watch.console
        assert watch.console == watch.csp_console_errors
        with pytest.raises(AssertionError, match="CSP violations"):
            watch.assert_clean()


def test_inline_style_is_caught(browser: Browser, probe_url: str) -> None:
    with watched_page(browser) as watch:
        watch.page.goto(probe_url + "/inline-style")
        watch.settle()

        assert [v["directive"] for v in watch.csp_violations] == ["style-src-attr"]
        assert len(watch.csp_console_errors) == 1, watch.console


def test_violation_on_an_earlier_page_is_kept_after_navigating(
    browser: Browser, probe_url: str
) -> None:
    with watched_page(browser) as watch:
        watch.page.goto(probe_url + "/inline-script")
        watch.page.goto(probe_url + "/nonce-script")
        watch.settle()

        assert len(watch.csp_violations) == 1
        assert watch.in_page_violations() == 0  # the new document starts empty


def test_nonced_script_runs_and_reports_nothing(browser: Browser, probe_url: str) -> None:
    with watched_page(browser) as watch:
        watch.page.goto(probe_url + "/nonce-script")

        assert watch.page.title() == "nonce ran"
        watch.assert_clean()


def test_console_errors_warnings_and_page_errors_are_caught(
    browser: Browser, probe_url: str
) -> None:
    with watched_page(browser) as watch:
        watch.page.goto(probe_url + "/script-errors")
        watch.settle()

        assert [text.split(" (")[0] for text in watch.console] == [
            "warning: probe warning",
            "error: probe error",
        ]
        assert watch.page_errors == ["probe exception"]
        assert watch.csp_violations == []
        with pytest.raises(AssertionError, match="console errors"):
            watch.assert_clean()
