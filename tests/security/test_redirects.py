"""Open redirects through `next` after sign-in are refused (security/redirects.py safe_next)."""

from __future__ import annotations

from http import HTTPStatus

import pytest
from flask.testing import FlaskClient

from tests.conftest import GOOD_PASSWORD, AuthActions
from tests.security.helpers import login_form

HOSTILE_TARGETS = [
    "https://evil.example",
    "https://evil.example/account/",
    "http://evil.example",
    "//evil.example",
    "///evil.example",
    "////evil.example/",
    "/\\evil.example",
    "\\/evil.example",
    "\\\\evil.example",
    "/\\/evil.example",
    "javascript:alert(1)",
    "JavaScript:alert(1)",
    " javascript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "http:evil.example",
    "https:evil.example",
    "http:/evil.example",
    "/\t/evil.example",
    "/\n/evil.example",
    "/\r\n/evil.example",
    "/\x00/evil.example",
    "/\x7f/evil.example",
    " //evil.example",
    "evil.example",
    "@evil.example",
    "/account/\r\nSet-Cookie: pwned=1",
]


@pytest.mark.parametrize("target", HOSTILE_TARGETS)
def test_login_refuses_to_redirect_off_site(
    client: FlaskClient, auth: AuthActions, target: str
) -> None:
    auth.create_user()
    token = auth.csrf()

    response = client.post(
        "/auth/login",
        query_string={"next": target},
        data=login_form(token, "alice@example.com", GOOD_PASSWORD),
    )

    assert response.status_code == HTTPStatus.SEE_OTHER
    assert response.headers["Location"] == "/"


@pytest.mark.parametrize(
    "raw_query",
    [
        "next=%2F%09%2Fevil.example",  # tab, percent-encoded
        "next=%2F%5Cevil.example",  # /\evil.example
        "next=%5C%5Cevil.example",
        "next=%2F%2Fevil.example",
        "next=https%3A%2F%2Fevil.example",
        "next=%0d%0a//evil.example",
    ],
)
def test_login_refuses_encoded_off_site_targets(
    client: FlaskClient, auth: AuthActions, raw_query: str
) -> None:
    auth.create_user()
    token = auth.csrf()

    response = client.post(
        "/auth/login?" + raw_query, data=login_form(token, "alice@example.com", GOOD_PASSWORD)
    )

    assert response.status_code == HTTPStatus.SEE_OTHER
    assert response.headers["Location"] == "/"


@pytest.mark.parametrize("target", ["/account/", "/account/?tab=security", "/"])
def test_login_honours_a_same_site_target(
    client: FlaskClient, auth: AuthActions, target: str
) -> None:
    auth.create_user()
    token = auth.csrf()

    response = client.post(
        "/auth/login",
        query_string={"next": target},
        data=login_form(token, "alice@example.com", GOOD_PASSWORD),
    )

    assert response.status_code == HTTPStatus.SEE_OTHER
    assert response.headers["Location"] == target


def test_the_login_redirect_round_trip_keeps_the_page_asked_for(
    client: FlaskClient, auth: AuthActions
) -> None:
    auth.create_user()
    bounced = client.get("/account/")
    assert bounced.status_code == HTTPStatus.FOUND
    login_url = bounced.headers["Location"]
    assert login_url == "/auth/login?next=/account/"
    token = auth.csrf()

    response = client.post(login_url, data=login_form(token, "alice@example.com", GOOD_PASSWORD))

    assert response.headers["Location"] == "/account/"
