"""Real-browser fixtures: the app on a live HTTPS server, driven by Debian's Chromium.

Every page a test opens is watched: console errors and warnings, uncaught page errors and
CSP violations are recorded, and `watch.assert_clean()` fails on any of them. CSP
violations are caught twice, on purpose:

- an init script listens for `securitypolicyviolation` events and reports each one to
  Python through an exposed binding (the binding survives navigations). Playwright
  injects init scripts over the DevTools protocol, not as <script> elements, so the
  page's CSP does not apply to them; `bypass_csp` stays off, so the app's own policy is
  the one in force;
- Chromium also logs every violation as a console error ("... Content Security Policy
  ...").

`test_detector.py` proves both channels see a violation, so a clean page means clean.
No browser is ever downloaded: Chromium comes from Debian (`make browser`).
"""

from __future__ import annotations

import datetime
import ipaddress
import re
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from flask import Flask
from playwright.sync_api import Browser, ConsoleMessage, Page, Response, sync_playwright
from sqlalchemy import delete
from werkzeug.serving import BaseWSGIServer, make_server

from bastion import create_app
from bastion.core.db import db
from tests.conftest import GOOD_PASSWORD, Backend, Outbox, _flush_redis

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 10_000  # a step that takes longer is broken, not slow

# Runs before any of the page's own scripts, in every frame of every document.
CSP_LISTENER = """
document.addEventListener('securitypolicyviolation', (event) => {
  const violation = {
    directive: event.effectiveDirective,
    blocked: event.blockedURI,
    source: event.sourceFile,
    line: event.lineNumber,
    document: event.documentURI,
  };
  (window.__bastionCsp = window.__bastionCsp || []).push(violation);
  window.__bastionReportCsp(violation);
}, true);
"""


# ------------------------------------------------------------------- TLS and servers
@dataclass(frozen=True)
class Certificate:
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def make_certificate(directory: Path) -> Certificate:
    """A throwaway self-signed certificate for 127.0.0.1 (the browser ignores its issuer)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bastion-e2e")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    found = Certificate(directory / "cert.pem", directory / "key.pem")
    found.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    found.key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    found.key_file.chmod(0o600)
    return found


class _Deferred:
    """A WSGI app filled in after the server is bound: the app needs the server's URL."""

    def __init__(self) -> None:
        self.app: Callable[..., Any] | None = None

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        assert self.app is not None, "the server answered before its app was set"
        return self.app(environ, start_response)


@contextmanager
def serve_https(
    app: Callable[..., Any] | None, certificate: Certificate
) -> Iterator[tuple[BaseWSGIServer, _Deferred]]:
    """Serve `app` (or, when None, whatever is set on the yielded holder) on a free port."""
    holder = _Deferred()
    holder.app = app
    server = make_server(
        "127.0.0.1",
        0,
        holder,
        threaded=True,
        ssl_context=certificate.server_context(),
    )
    # A short poll interval: shutdown() waits up to one interval for the loop to notice.
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="e2e-https", daemon=True
    )
    thread.start()
    try:
        yield server, holder
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def url_of(server: BaseWSGIServer) -> str:
    return f"https://127.0.0.1:{server.port}"


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    return make_certificate(tmp_path_factory.mktemp("e2e-tls"))


@dataclass
class LiveServer:
    """The app answering on `url`; its mails link back to `url`."""

    url: str
    app: Flask

    def mail_link(self, to: str) -> str:
        link = Outbox(self.app).last_link(to)
        assert link.startswith(self.url + "/"), f"mail links elsewhere: {link}"
        return link

    def create_user(
        self, email: str, name: str = "Erin Example", password: str = GOOD_PASSWORD
    ) -> None:
        """A confirmed account, made the way the CLI makes one."""
        from bastion.accounts import service
        from bastion.audit import Actor

        settings = self.app.extensions["bastion.settings"]
        with self.app.app_context():
            service.create_user(
                email=email,
                name=name,
                password=password,
                role="user",
                actor=Actor.system(),
                site=service.Site(settings.public_url, settings.password_min_length),
            )


@pytest.fixture(scope="module")
def live_server(backend: Backend, certificate: Certificate) -> Iterator[LiveServer]:
    with serve_https(None, certificate) as (server, holder):
        url = url_of(server)
        app = create_app(backend.settings(public_url=url))
        holder.app = app
        try:
            yield LiveServer(url, app)
        finally:
            _empty_tables(app)
            _flush_redis(backend)


def _empty_tables(app: Flask) -> None:
    with app.app_context():
        db.session.remove()
        with db.engine.begin() as conn:
            for table in reversed(db.metadata.sorted_tables):
                conn.execute(delete(table))
        db.engine.dispose()


# ---------------------------------------------------------------------------- browser
@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """One Chromium per run; Playwright gives each launch a fresh temporary profile.

    Each test then gets its own incognito-like context: no cookie or storage crosses tests.
    """
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: run `make browser` (never `playwright install`)")
    with sync_playwright() as playwright:
        found = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield found
        finally:
            found.close()


@dataclass
class Watch:
    """What the browser reported while a test ran. Every list must stay empty."""

    page: Page
    console: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    csp_violations: list[dict[str, Any]] = field(default_factory=list)
    documents: list[Response] = field(default_factory=list)

    # The browser logs a document's own 4xx status as a console error; tests assert
    # document statuses explicitly, so only these (and nothing else) are set aside.
    _DOCUMENT_STATUS = re.compile(r"^Failed to load resource: the server responded with a status")

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type not in ("error", "warning"):
            return
        url = message.location.get("url", "")
        if self._DOCUMENT_STATUS.match(message.text) and any(
            doc.url == url and doc.status >= 400 for doc in self.documents
        ):
            return
        self.console.append(f"{message.type}: {message.text} ({url})")

    def on_response(self, response: Response) -> None:
        request = response.request
        if request.is_navigation_request() and request.frame == self.page.main_frame:
            self.documents.append(response)

    @property
    def csp_console_errors(self) -> list[str]:
        return [text for text in self.console if "Content Security Policy" in text]

    def settle(self) -> None:
        """Round-trip to the page so every event it sent so far has been handled here."""
        self.page.evaluate("() => document.readyState")

    def in_page_violations(self) -> int:
        count: int = self.page.evaluate("() => (window.__bastionCsp || []).length")
        return count

    def assert_clean(self) -> None:
        """No CSP violation, console error/warning or page error so far, on any page."""
        self.settle()
        where = self.page.url
        assert self.csp_violations == [], f"CSP violations up to {where}"
        assert self.in_page_violations() == 0, f"CSP violations on {where}"
        assert self.console == [], f"console errors/warnings up to {where}"
        assert self.page_errors == [], f"page errors up to {where}"

    def last_document(self) -> Response:
        assert self.documents, "no page was loaded"
        return self.documents[-1]


@contextmanager
def watched_page(browser: Browser) -> Iterator[Watch]:
    """A page in a fresh context with every console/page error and CSP violation recorded."""
    context = browser.new_context(ignore_https_errors=True)
    try:
        context.set_default_timeout(TIMEOUT_MS)
        violations: list[dict[str, Any]] = []
        context.expose_binding(
            "__bastionReportCsp", lambda _source, found: violations.append(found)
        )
        context.add_init_script(CSP_LISTENER)
        page = context.new_page()
        watch = Watch(page, csp_violations=violations)
        page.on("response", watch.on_response)
        page.on("console", watch.on_console)
        page.on("pageerror", lambda error: watch.page_errors.append(str(error)))
        yield watch
    finally:
        context.close()


CALL_PASSED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[CALL_PASSED] = report.passed
    return report


@pytest.fixture
def watch(
    browser: Browser, live_server: LiveServer, request: pytest.FixtureRequest
) -> Iterator[Watch]:
    """A watched page; a passing test still fails if the browser reported anything."""
    with watched_page(browser) as found:
        yield found
        if request.node.stash.get(CALL_PASSED, False):  # a failed test has said enough
            found.assert_clean()


@pytest.fixture
def page(watch: Watch) -> Page:
    return watch.page
