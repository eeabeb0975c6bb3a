"""Every error answers with our page (JSON under /api/): no traceback, no framework banner."""

from __future__ import annotations

from http import HTTPStatus

import pytest
from flask import Flask
from flask.testing import FlaskClient

from bastion.core.errors import DependencyUnavailable
from bastion.security.policy import public

SECRET_DETAIL = "db password is hunter2-do-not-leak"


def add_failing_routes(app: Flask) -> None:
    def boom() -> str:
        raise RuntimeError(SECRET_DETAIL)

    def api_boom() -> str:
        raise RuntimeError(SECRET_DETAIL)

    def down() -> str:
        raise DependencyUnavailable(SECRET_DETAIL)

    app.add_url_rule("/test-boom", "test_boom", public(boom))
    app.add_url_rule("/api/test-boom", "api_test_boom", public(api_boom))
    app.add_url_rule("/test-down", "test_down", public(down))


def assert_clean(body: str) -> None:
    for leak in ("Traceback", SECRET_DETAIL, "Werkzeug", "werkzeug", "RuntimeError"):
        assert leak not in body


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/no-such-page", HTTPStatus.NOT_FOUND),
        ("GET", "/auth/logout", HTTPStatus.METHOD_NOT_ALLOWED),
        ("POST", "/auth/login", HTTPStatus.BAD_REQUEST),  # no CSRF token
        ("GET", "/test-boom", HTTPStatus.INTERNAL_SERVER_ERROR),
        ("GET", "/test-down", HTTPStatus.SERVICE_UNAVAILABLE),
    ],
)
def test_html_error_pages(
    app: Flask, client: FlaskClient, method: str, path: str, status: HTTPStatus
) -> None:
    add_failing_routes(app)
    response = client.open(path, method=method)
    assert response.status_code == status
    assert response.mimetype == "text/html"
    body = response.get_data(as_text=True)
    assert f"{int(status)} — " in body
    assert_clean(body)
    assert "Content-Security-Policy" in response.headers


def test_503_says_when_to_retry(app: Flask, client: FlaskClient) -> None:
    add_failing_routes(app)
    response = client.get("/test-down")
    assert response.headers["Retry-After"] == "5"


def test_json_errors_under_api(app: Flask, client: FlaskClient) -> None:
    add_failing_routes(app)
    missing = client.get("/api/v1/nothing")
    assert missing.status_code == HTTPStatus.NOT_FOUND
    assert missing.json == {
        "error": "Not Found",
        "message": missing.json["message"],  # type: ignore[index]
        "status": 404,
    }
    crashed = client.get("/api/test-boom")
    assert crashed.status_code == HTTPStatus.INTERNAL_SERVER_ERROR
    assert crashed.mimetype == "application/json"
    assert_clean(crashed.get_data(as_text=True))


def test_oversized_body_gets_413_page(client: FlaskClient) -> None:
    response = client.post(
        "/auth/login",
        data=b"x" * (1024 * 1024 + 1),
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    assert response.headers["Connection"] == "close"
    assert "413 — " in response.get_data(as_text=True)


@pytest.mark.settings(ratelimit_default="3 per minute")
def test_rate_limited_page_says_retry_after(client: FlaskClient) -> None:
    statuses = [client.get("/auth/login").status_code for _ in range(4)]
    assert statuses[:3] == [HTTPStatus.OK] * 3
    assert statuses[3] == HTTPStatus.TOO_MANY_REQUESTS
    limited = client.get("/auth/login")
    assert int(limited.headers["Retry-After"]) > 0
    assert "429 — " in limited.get_data(as_text=True)
