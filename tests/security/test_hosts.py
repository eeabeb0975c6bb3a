"""The Host header allow-list (security/hosts.py): a host we don't serve gets a 400.

The suite's public URL is https://127.0.0.1:8443, so by default every loopback name is
allowed and the test client's `localhost` is served.
"""

from __future__ import annotations

from http import HTTPStatus

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from bastion.audit.models import AuditEvent
from bastion.core.db import db
from bastion.security.sessions import SESSION_COOKIE
from tests.conftest import GOOD_PASSWORD, AuthActions
from tests.security.helpers import cookie_value

FORGED = "evil.example"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/"),
        ("GET", "/auth/login"),
        ("POST", "/auth/login"),
        ("GET", "/static/app.css"),
        ("GET", "/healthz"),
        ("GET", "/no/such/page"),
        ("GET", "/documents/"),
    ],
)
def test_a_forged_host_gets_a_400_page_with_the_security_headers(
    client: FlaskClient, method: str, path: str
) -> None:
    answer = client.open(path, method=method, headers={"Host": FORGED})

    assert answer.status_code == HTTPStatus.BAD_REQUEST
    assert "does not answer for that host name" in answer.get_data(as_text=True)
    assert answer.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert answer.headers["Cache-Control"] == "no-store"
    assert FORGED not in answer.get_data(as_text=True)


@pytest.mark.parametrize(
    "host",
    [
        "evil.example:8443",
        "127.0.0.1.evil.example",
        "localhost.evil.example",
        "evil.example\\@localhost",
        "local host",
        "[::2]:8443",
        "",
    ],
)
def test_lookalike_and_malformed_hosts_are_refused(client: FlaskClient, host: str) -> None:
    assert client.get("/auth/login", headers={"Host": host}).status_code == 400


@pytest.mark.parametrize(
    "host", ["localhost", "LOCALHOST", "127.0.0.1:8443", "[::1]:8443", "localhost:443"]
)
def test_the_loopback_names_of_a_loopback_public_url_are_served(
    client: FlaskClient, host: str
) -> None:
    assert client.get("/auth/login", headers={"Host": host}).status_code == 200


@pytest.mark.settings(trusted_hosts=".example.org, bastion.example.net")
@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("example.org", 200),
        ("app.example.org:8443", 200),
        ("a.b.example.org", 200),
        ("bastion.example.net", 200),
        ("evil-example.org", 400),
        ("example.org.evil.net", 400),
        ("www.bastion.example.net", 400),
        ("localhost", 400),
    ],
)
def test_listed_hosts_and_subdomains_of_a_dotted_entry_are_served(
    client: FlaskClient, host: str, status: int
) -> None:
    assert client.get("/auth/login", headers={"Host": host}).status_code == status


@pytest.mark.settings(public_url="https://bastion.example.org")
def test_by_default_only_the_public_urls_host_is_served(client: FlaskClient) -> None:
    assert client.get("/auth/login", headers={"Host": "bastion.example.org"}).status_code == 200
    assert client.get("/auth/login", headers={"Host": "localhost"}).status_code == 400


def test_a_forged_host_cannot_vouch_for_its_own_origin(
    app: Flask, client: FlaskClient, auth: AuthActions
) -> None:
    """The CSRF Origin check trusts the request's own origin as well as the public URL's.

    Without the allow-list, a request naming evil.example as both its Host and its Origin
    passed that check. A browser on another site could not send it with our cookies
    (they are bound to our host), so this is defence in depth: the session cookie and
    token are sent by hand here.
    """
    auth.create_user()
    token = auth.csrf()
    cookie = cookie_value(client)
    assert cookie is not None

    by_hand = app.test_client(use_cookies=False)  # the test client's jar is keyed by host

    answer = by_hand.post(
        "/auth/login",
        data={"email": "alice@example.com", "password": GOOD_PASSWORD, "csrf_token": token},
        headers={
            "Host": FORGED,
            "Origin": f"https://{FORGED}",
            "Sec-Fetch-Site": "same-origin",
            "Cookie": f"{SESSION_COOKIE}={cookie}",
        },
    )

    assert answer.status_code == HTTPStatus.BAD_REQUEST
    with app.app_context():
        events = db.session.scalars(select(AuditEvent.event)).all()
    assert "auth.login.success" not in events


@pytest.mark.parametrize(("protocol", "status"), [("HTTP/1.1", 400), ("HTTP/1.0", 200)])
def test_an_http_1_1_request_without_a_host_gets_a_400(
    app: Flask, protocol: str, status: int
) -> None:
    """RFC 9112 §3.2. Without the header werkzeug would use the listening address instead,
    a loopback name here, which is on the list."""
    from werkzeug.test import EnvironBuilder, run_wsgi_app

    environ = EnvironBuilder(path="/auth/login", base_url="https://127.0.0.1:8443").get_environ()
    del environ["HTTP_HOST"]
    environ["SERVER_PROTOCOL"] = protocol
    _, answer_status, _ = run_wsgi_app(app, environ, buffered=True)
    assert int(answer_status.split()[0]) == status
