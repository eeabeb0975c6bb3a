"""Security headers on every response: pages, errors, redirects, static files, 405 and 413.

Controls proven (security/headers.py): the strict nonce CSP with a fresh >= 128-bit nonce per
response, HSTS (preload configurable), nosniff, frame denial, referrer and permissions
policies, COOP/CORP, the disabled XSS auditor, no-store on dynamic pages, no Server banner,
and the request id (core/request_log.py).
"""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Callable
from http import HTTPStatus

import pytest
from flask import Flask, Response
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from bastion.security.policy import public
from tests.conftest import AuthActions

NONCE_RE = re.compile(r"script-src 'nonce-([A-Za-z0-9_-]+)' 'strict-dynamic';")
STRICT_CSP = (
    "default-src 'none'; script-src 'nonce-{nonce}' 'strict-dynamic'; style-src 'self'; "
    "img-src 'self'; connect-src 'self'; font-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'; "
    "report-uri /csp-report; report-to csp"
)
HSTS = "max-age=63072000; includeSubDomains"

# name -> (request, expected status); all sent anonymously.
REQUESTS: dict[str, tuple[Callable[[FlaskClient], TestResponse], int]] = {
    "page": (lambda c: c.get("/auth/login"), HTTPStatus.OK),
    "not-found": (lambda c: c.get("/no/such/page"), HTTPStatus.NOT_FOUND),
    "redirect": (lambda c: c.get("/"), HTTPStatus.FOUND),
    "static": (lambda c: c.get("/static/app.css"), HTTPStatus.OK),
    "method-not-allowed": (lambda c: c.get("/auth/logout"), HTTPStatus.METHOD_NOT_ALLOWED),
    "too-large": (
        lambda c: c.post(
            "/auth/login",
            data=b"x" * (1024 * 1024 + 1),
            content_type="application/x-www-form-urlencoded",
        ),
        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    ),
    "csrf-failure": (lambda c: c.post("/auth/login", data={}), HTTPStatus.BAD_REQUEST),
    "api-not-found": (lambda c: c.get("/api/x"), HTTPStatus.NOT_FOUND),
}


def fetch(name: str, client: FlaskClient) -> TestResponse:
    """Send one of REQUESTS and read the body fully (static files stream from disk)."""
    response = REQUESTS[name][0](client)
    response.get_data()
    response.close()
    return response


def nonce_of(response: TestResponse) -> str:
    match = NONCE_RE.search(response.headers["Content-Security-Policy"])
    assert match, response.headers["Content-Security-Policy"]
    return match.group(1)


def assert_common_headers(response: TestResponse, hsts: str = HSTS) -> None:
    headers = response.headers
    nonce = nonce_of(response)
    assert headers["Content-Security-Policy"] == STRICT_CSP.format(nonce=nonce)
    assert len(base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))) >= 16  # >= 128 bits
    assert headers["Strict-Transport-Security"] == hsts
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] in {"strict-origin-when-cross-origin", "no-referrer"}
    permissions = headers["Permissions-Policy"]
    for feature in ("camera", "microphone", "geolocation", "payment", "usb"):
        assert f"{feature}=()" in permissions
    assert headers["Cross-Origin-Opener-Policy"] == "same-origin"
    assert headers["Cross-Origin-Resource-Policy"] == "same-origin"
    assert headers["Cross-Origin-Embedder-Policy"] == "require-corp"
    assert headers["X-XSS-Protection"] == "0"
    assert headers["Reporting-Endpoints"] == 'csp="/csp-report"'
    assert "Server" not in headers
    assert re.fullmatch(r"[0-9a-f]{16}", headers["X-Request-ID"])


@pytest.mark.parametrize("name", list(REQUESTS))
def test_every_kind_of_response_carries_the_security_headers(
    client: FlaskClient, name: str
) -> None:
    response = fetch(name, client)

    assert response.status_code == REQUESTS[name][1]
    assert_common_headers(response)
    if name == "static":
        assert "no-store" not in response.headers["Cache-Control"]
    else:
        assert response.headers["Cache-Control"] == "no-store"


def test_the_nonce_differs_on_every_response(client: FlaskClient) -> None:
    responses = [fetch(name, client) for name in REQUESTS]
    responses += [client.get("/auth/login") for _ in range(3)]

    nonces = [nonce_of(response) for response in responses]

    assert len(set(nonces)) == len(nonces)


def test_request_ids_and_nonces_come_from_a_few_large_os_draws(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each os.urandom call hands the GIL to another request thread: the bytes are fetched
    4 KiB at a time (core/randomness.py), each handed out once."""
    draws: list[int | None] = []
    real = secrets.token_bytes

    def counted(size: int | None = None) -> bytes:
        draws.append(size)
        return real(size)

    monkeypatch.setattr(secrets, "token_bytes", counted)

    responses = [client.get("/healthz") for _ in range(300)]

    assert len(draws) <= 3  # 300 requests x 26 bytes, 4 KiB a draw
    nonces = [base64.urlsafe_b64decode(nonce_of(response)) for response in responses]
    request_ids = [bytes.fromhex(response.headers["X-Request-ID"]) for response in responses]
    assert all(len(nonce) * 8 >= 128 for nonce in nonces)
    assert len(set(nonces)) == len(nonces)
    assert len(set(request_ids)) == len(request_ids)
    assert not any(
        request_id in nonce for request_id, nonce in zip(request_ids, nonces, strict=True)
    )


def test_signed_in_pages_are_never_cached(client: FlaskClient, auth: AuthActions) -> None:
    auth.create_user()
    auth.login()

    for path in ("/", "/account/"):
        response = client.get(path)
        assert response.status_code == HTTPStatus.OK
        assert response.headers["Cache-Control"] == "no-store"
        assert_common_headers(response)


def test_login_redirect_carries_the_headers(client: FlaskClient, auth: AuthActions) -> None:
    auth.create_user()

    response = auth.login()

    assert response.status_code == HTTPStatus.SEE_OTHER
    assert_common_headers(response)
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.settings(hsts_preload=True)
def test_hsts_preload_is_configurable(client: FlaskClient) -> None:
    response = client.get("/auth/login")

    assert response.headers["Strict-Transport-Security"] == HSTS + "; preload"


def test_a_server_banner_set_by_a_view_is_removed(app: Flask, client: FlaskClient) -> None:
    # The test client adds no Server header of its own, so prove the stripping with a view
    # that sets one, as a framework or proxy layer might.
    def banner() -> Response:
        return Response("hello", headers={"Server": "Werkzeug/3.1 Python/3.11"})

    app.add_url_rule("/__banner", "banner", public(banner))

    response = client.get("/__banner")

    assert response.status_code == HTTPStatus.OK
    assert "Server" not in response.headers
    assert_common_headers(response)


def test_pages_put_no_inline_script_or_style(client: FlaskClient, auth: AuthActions) -> None:
    # The CSP forbids inline code; any <script> the templates emit must carry the nonce.
    auth.create_user()
    pages = [client.get("/auth/login"), client.get("/auth/register"), client.get("/nope")]
    auth.login()
    pages += [client.get("/"), client.get("/account/")]

    for response in pages:
        html = response.get_data(as_text=True)
        nonce = nonce_of(response)
        assert " style=" not in html
        for tag in re.findall(r"<script\b[^>]*>", html):
            assert f'nonce="{nonce}"' in tag


def test_an_unexpected_error_gets_a_plain_500_page_with_the_headers(
    app: Flask, client: FlaskClient
) -> None:
    def broken() -> Response:
        raise RuntimeError("secret internal detail /srv/app/db.py line 42")

    app.add_url_rule("/__broken", "broken", public(broken))

    response = client.get("/__broken")

    assert response.status_code == HTTPStatus.INTERNAL_SERVER_ERROR
    body = response.get_data(as_text=True)
    assert "secret internal detail" not in body
    assert "Traceback" not in body
    assert_common_headers(response)
    assert response.headers["Cache-Control"] == "no-store"
