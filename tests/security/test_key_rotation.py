"""SECRET_KEY rotation: nobody is logged out, but nothing old-key stays usable that shouldn't.

Controls proven: the session signer accepts SECRET_KEY_FALLBACKS and re-signs the cookie
with the new key (security/sessions.py `_unsign`, `stale_signature`); the remember-me
cookie honours the current key only; mailed tokens verify under the fallbacks
(security/tokens.py); without a fallback, old-key session cookies are refused.
"""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus

from flask import Flask
from flask.testing import FlaskClient

from bastion.security.sessions import REMEMBER_COOKIE, SESSION_COOKIE
from tests.conftest import AuthActions, Outbox, csrf_token_from
from tests.security.helpers import (
    cookie_value,
    is_deletion,
    is_signed_in,
    raw_id,
    set_cookies,
    with_remember,
    with_session,
)

NEW_KEY = "rotated-secret-key-" + "n" * 40


def test_session_survives_rotation_and_is_resigned_with_the_new_key(
    app: Flask, client: FlaskClient, auth: AuthActions, make_app: Callable[..., Flask]
) -> None:
    auth.create_user()
    auth.login()
    old_cookie = cookie_value(client)
    assert old_cookie is not None
    rotated = make_app(secret_key=NEW_KEY, secret_key_fallbacks=(app.secret_key,))
    browser = with_session(rotated, old_cookie)

    response = browser.get("/")

    assert response.status_code == HTTPStatus.OK  # still signed in after the rotation
    resigned = set_cookies(response)[SESSION_COOKIE]["value"]
    assert resigned != old_cookie
    assert raw_id(resigned) == raw_id(old_cookie)  # same session, new signature
    # The new value is signed with the new key alone: it works without the fallback.
    new_only = make_app(secret_key=NEW_KEY)
    assert is_signed_in(with_session(new_only, resigned))
    # Once re-signed, later responses don't keep re-setting the cookie.
    assert SESSION_COOKIE not in set_cookies(browser.get("/"))


def test_old_key_session_cookie_is_refused_without_a_fallback(
    client: FlaskClient, auth: AuthActions, make_app: Callable[..., Flask]
) -> None:
    auth.create_user()
    auth.login()
    old_cookie = cookie_value(client)
    assert old_cookie is not None
    rotated = make_app(secret_key=NEW_KEY)

    response = with_session(rotated, old_cookie).get("/")

    assert response.status_code == HTTPStatus.FOUND
    assert is_deletion(set_cookies(response)[SESSION_COOKIE])


def test_old_key_remember_cookie_is_refused_after_rotation(
    app: Flask, client: FlaskClient, auth: AuthActions, make_app: Callable[..., Flask]
) -> None:
    # A rotation's reason may be a leaked key: an old-key remember cookie must not keep a
    # device signed in for two more weeks.
    auth.create_user()
    auth.login(remember=True)
    remember = cookie_value(client, REMEMBER_COOKIE)
    assert remember is not None
    rotated = make_app(secret_key=NEW_KEY, secret_key_fallbacks=(app.secret_key,))

    response = with_remember(rotated, remember).get("/")

    assert response.status_code == HTTPStatus.FOUND
    assert is_deletion(set_cookies(response)[REMEMBER_COOKIE])
    # The token itself is still live: only its old-key signature was refused.
    assert is_signed_in(with_remember(app, remember))


def test_confirmation_link_mailed_before_rotation_still_works(
    app: Flask, auth: AuthActions, outbox: Outbox, make_app: Callable[..., Flask]
) -> None:
    auth.register()
    path = outbox.last_link("bob@example.com").removeprefix("https://127.0.0.1:8443")
    rotated = make_app(secret_key=NEW_KEY, secret_key_fallbacks=(app.secret_key,))
    browser = rotated.test_client()

    page = browser.get(path)
    confirmed = browser.post(
        path, data={"csrf_token": csrf_token_from(page.get_data(as_text=True))}
    )

    assert page.status_code == HTTPStatus.OK
    assert confirmed.status_code == HTTPStatus.SEE_OTHER
    assert (
        AuthActions(rotated, browser).login("bob@example.com").status_code == HTTPStatus.SEE_OTHER
    )


def test_confirmation_link_is_refused_once_the_old_key_is_dropped(
    auth: AuthActions, outbox: Outbox, make_app: Callable[..., Flask]
) -> None:
    auth.register()
    path = outbox.last_link("bob@example.com").removeprefix("https://127.0.0.1:8443")
    rotated = make_app(secret_key=NEW_KEY)

    assert rotated.test_client().get(path).status_code == HTTPStatus.BAD_REQUEST
