"""CSRF: forged, foreign and cross-site unsafe requests are refused, and each refusal is audited.

Controls proven: Flask-WTF's synchronizer token on every unsafe method (security/csrf.py
`csrf.protect()`), our Origin / Sec-Fetch-Site check in front of it (`Origin: null` only
with `Sec-Fetch-Site: same-origin`), the 400 page and the `security.csrf.failure` audit
event, and logout being POST-only.
"""

from __future__ import annotations

from http import HTTPStatus

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from tests.conftest import GOOD_PASSWORD, AuthActions, Outbox, csrf_token_from
from tests.security.helpers import (
    CSRF_EVENT,
    EVIL_ORIGIN,
    assert_csrf_refused,
    audit_rows,
    count_users,
    is_signed_in,
    login_form,
    mailed_reset_path,
)

NEW_PASSWORD = "a completely new passphrase"


# ------------------------------------------------------------------ no token at all
def test_login_without_token_is_refused_and_audited(
    app: Flask, client: FlaskClient, auth: AuthActions
) -> None:
    auth.create_user()
    client.get("/auth/login")  # the victim's browser has a session, as in a real attack

    response = client.post(
        "/auth/login", data={"email": "alice@example.com", "password": GOOD_PASSWORD}
    )

    assert_csrf_refused(app, response, "/auth/login")
    assert not is_signed_in(client)


def test_logout_without_token_is_refused_and_keeps_the_session(
    app: Flask, client: FlaskClient, auth: AuthActions
) -> None:
    auth.create_user()
    auth.login()

    response = client.post("/auth/logout")

    assert_csrf_refused(app, response, "/auth/logout")
    assert is_signed_in(client)


def test_password_change_without_token_is_refused(
    app: Flask, client: FlaskClient, auth: AuthActions
) -> None:
    auth.create_user()
    auth.login()

    response = client.post(
        "/account/",
        data={
            "current_password": GOOD_PASSWORD,
            "new_password": NEW_PASSWORD,
            "new_password_confirm": NEW_PASSWORD,
        },
    )

    assert_csrf_refused(app, response, "/account/")
    auth.logout()
    assert auth.login(password=GOOD_PASSWORD).status_code == HTTPStatus.SEE_OTHER


def test_register_without_token_is_refused_and_writes_nothing(
    app: Flask, client: FlaskClient
) -> None:
    client.get("/auth/register")

    response = client.post(
        "/auth/register",
        data={
            "email": "mallory@example.com",
            "name": "Mallory",
            "password": GOOD_PASSWORD,
            "password_confirm": GOOD_PASSWORD,
        },
    )

    assert_csrf_refused(app, response, "/auth/register")
    assert count_users(app) == 0


# ------------------------------------------------------------------- bad tokens
def test_wrong_token_is_refused(app: Flask, client: FlaskClient, auth: AuthActions) -> None:
    auth.create_user()
    good = auth.csrf()
    forged = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")

    response = client.post(
        "/auth/login", data=login_form(forged, "alice@example.com", GOOD_PASSWORD)
    )

    assert_csrf_refused(app, response, "/auth/login")
    assert not is_signed_in(client)


def test_token_from_another_session_is_refused(
    app: Flask, client: FlaskClient, auth: AuthActions
) -> None:
    # The attacker's own, perfectly valid token, planted into the victim's form post.
    auth.create_user()
    attacker = app.test_client()
    attackers_token = csrf_token_from(attacker.get("/auth/login").get_data(as_text=True))
    client.get("/auth/login")  # the victim has a session (and a token) of their own

    response = client.post(
        "/auth/login", data=login_form(attackers_token, "alice@example.com", GOOD_PASSWORD)
    )

    assert_csrf_refused(app, response, "/auth/login")
    assert not is_signed_in(client)


# ----------------------------------------------------- Origin and Fetch Metadata
@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"Origin": EVIL_ORIGIN}, id="foreign-origin"),
        pytest.param({"Origin": "null"}, id="opaque-origin"),
        pytest.param({"Origin": "http://localhost"}, id="plain-http-origin"),
        pytest.param({"Sec-Fetch-Site": "cross-site"}, id="sec-fetch-cross-site"),
        pytest.param({"Sec-Fetch-Site": "same-site"}, id="sec-fetch-same-site"),
        pytest.param(
            {"Sec-Fetch-Site": "cross-site", "Origin": "https://localhost"},
            id="cross-site-despite-origin",
        ),
    ],
)
def test_cross_site_post_with_a_valid_token_is_refused(
    app: Flask, client: FlaskClient, auth: AuthActions, headers: dict[str, str]
) -> None:
    auth.create_user()
    token = auth.csrf()  # a valid token: only the cross-site markers are wrong

    response = client.post(
        "/auth/login",
        data=login_form(token, "alice@example.com", GOOD_PASSWORD),
        headers=headers,
    )

    assert_csrf_refused(app, response, "/auth/login")
    assert not is_signed_in(client)


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"Sec-Fetch-Site": "same-origin"}, id="sec-fetch-same-origin"),
        pytest.param({"Sec-Fetch-Site": "none"}, id="sec-fetch-user-initiated"),
        pytest.param({"Origin": "https://localhost"}, id="own-origin"),
        pytest.param(
            {"Origin": "https://localhost", "Sec-Fetch-Site": "same-origin"}, id="both-same"
        ),
        pytest.param({}, id="non-browser-client"),
    ],
)
def test_same_origin_post_with_a_valid_token_is_accepted(
    app: Flask, client: FlaskClient, auth: AuthActions, headers: dict[str, str]
) -> None:
    auth.create_user()
    token = auth.csrf()

    response = client.post(
        "/auth/login",
        data=login_form(token, "alice@example.com", GOOD_PASSWORD),
        headers=headers,
    )

    assert response.status_code == HTTPStatus.SEE_OTHER
    assert is_signed_in(client)
    assert audit_rows(app, CSRF_EVENT) == []


def test_token_in_x_csrftoken_header_is_accepted_for_fetch(
    client: FlaskClient, auth: AuthActions
) -> None:
    auth.create_user()
    token = auth.csrf()

    response = client.post(
        "/auth/login",
        data={"email": "alice@example.com", "password": GOOD_PASSWORD},
        headers={"X-CSRFToken": token, "Sec-Fetch-Site": "same-origin"},
    )

    assert response.status_code == HTTPStatus.SEE_OTHER


def test_cross_site_logout_with_a_valid_token_is_refused(
    app: Flask, client: FlaskClient, auth: AuthActions
) -> None:
    auth.create_user()
    auth.login()
    token = auth.csrf("/")

    response = client.post(
        "/auth/logout", data={"csrf_token": token}, headers={"Sec-Fetch-Site": "cross-site"}
    )

    assert_csrf_refused(app, response, "/auth/logout")
    assert is_signed_in(client)


# ------------------------------------------------ Origin: null from a no-referrer page
def post_new_password(client: FlaskClient, path: str, headers: dict[str, str]) -> TestResponse:
    """Open the mailed reset page and post its form with a valid token and `headers`."""
    page = client.get(path)
    assert page.headers["Referrer-Policy"] == "no-referrer"
    data = {
        "password": NEW_PASSWORD,
        "password_confirm": NEW_PASSWORD,
        "csrf_token": csrf_token_from(page.get_data(as_text=True)),
    }
    return client.post(path, data=data, headers=headers)


def test_origin_null_with_sec_fetch_same_origin_is_accepted_on_the_reset_page(
    app: Flask, client: FlaskClient, auth: AuthActions, outbox: Outbox
) -> None:
    # Chromium posts a form of a `Referrer-Policy: no-referrer` page (here the mailed reset
    # link) with `Origin: null`; Fetch Metadata vouches that it is our own page.
    auth.create_user()
    path = mailed_reset_path(auth.client, outbox)

    response = post_new_password(
        client, path, headers={"Origin": "null", "Sec-Fetch-Site": "same-origin"}
    )

    assert response.status_code == HTTPStatus.SEE_OTHER
    assert response.headers["Location"] == "/auth/login"
    assert audit_rows(app, CSRF_EVENT) == []
    assert auth.login(password=NEW_PASSWORD).status_code == HTTPStatus.SEE_OTHER


@pytest.mark.parametrize("fetch_site", ["cross-site", "same-site", "none"])
def test_origin_null_is_refused_unless_sec_fetch_says_same_origin(
    app: Flask, client: FlaskClient, auth: AuthActions, outbox: Outbox, fetch_site: str
) -> None:
    # A sandboxed frame or a data: URL elsewhere also sends `Origin: null`; only Fetch
    # Metadata's `same-origin` makes it ours (a bare `null` is refused above).
    auth.create_user()
    path = mailed_reset_path(auth.client, outbox)

    response = post_new_password(
        client, path, headers={"Origin": "null", "Sec-Fetch-Site": fetch_site}
    )

    assert_csrf_refused(app, response, "/auth/reset/<token>")
    assert auth.login(password=GOOD_PASSWORD).status_code == HTTPStatus.SEE_OTHER


# ---------------------------------------------------------------- logout by GET
def test_logout_by_get_does_not_sign_out(client: FlaskClient, auth: AuthActions) -> None:
    # An <img src="/auth/logout"> on another site must not sign anyone out.
    auth.create_user()
    auth.login()

    response = client.get("/auth/logout")

    assert response.status_code == HTTPStatus.METHOD_NOT_ALLOWED
    assert "POST" in response.headers["Allow"]
    assert is_signed_in(client)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("PUT", "/auth/login", HTTPStatus.METHOD_NOT_ALLOWED),
        ("DELETE", "/account/", HTTPStatus.METHOD_NOT_ALLOWED),
        ("POST", "/no/such/page", HTTPStatus.NOT_FOUND),
    ],
)
def test_a_request_no_view_would_take_is_answered_as_such_not_as_a_forged_form(
    app: Flask, client: FlaskClient, method: str, path: str, status: int
) -> None:
    """No view runs, so there is nothing to forge: a 405/404, and no CSRF-failure row that
    would count towards the repeated-denials alert."""
    answer = client.open(path, method=method, headers={"Origin": "https://evil.example"})

    assert answer.status_code == status
    assert audit_rows(app, CSRF_EVENT) == []


# ------------------------------------------------- the signed token, reused a minute
def test_the_signed_token_is_reused_for_a_minute_and_still_accepted(
    app: Flask, client: FlaskClient, auth: AuthActions, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every signed-in page carries the sign-out form; its token is signed once a minute
    per session (security/csrf.py SignedTokens), not once a page. The reused token still
    passes Flask-WTF's check; a new minute or another session gets its own."""
    from bastion.security import csrf as csrf_module

    signings: list[str] = []
    generate = csrf_module.generate_csrf

    def counted() -> str:
        signings.append(token := generate())
        return token

    monkeypatch.setattr(csrf_module, "generate_csrf", counted)
    now = [1_800_000_000.0]
    monkeypatch.setattr(csrf_module.time, "time", lambda: now[0])
    auth.create_user()
    auth.login()

    first = csrf_token_from(client.get("/").get_data(as_text=True))
    now[0] += 30
    again = csrf_token_from(client.get("/").get_data(as_text=True))
    assert again == first
    assert len(signings) == 1

    other = app.test_client()
    AuthActions(app, other).login()
    assert csrf_token_from(other.get("/").get_data(as_text=True)) != first

    now[0] += 30  # the next minute
    assert csrf_token_from(client.get("/").get_data(as_text=True)) != first

    response = client.post("/auth/logout", data={"csrf_token": again})
    assert response.status_code == HTTPStatus.SEE_OTHER
    assert not is_signed_in(client)
