"""SECRET_KEY rotation: nobody is logged out, but nothing old-key stays usable that shouldn't.

Controls proven: the session signer accepts SECRET_KEY_FALLBACKS and re-signs the cookie
with the new key (security/sessions.py `_unsign`, `stale_signature`); the remember-me
cookie honours the current key only; mailed tokens verify under the fallbacks
(security/tokens.py); without a fallback, old-key session cookies are refused. The device
cookie (security/devices.py) is honoured through the fallbacks and not without them, and is
re-signed with the new key when its browser signs in;
Flask-WTF's CSRF tokens use the current key only; rate-limit counters start from zero
under a new key (security/rate_limit.py derives their key HMAC from SECRET_KEY alone).
The move from HMAC-SHA-1 to HMAC-SHA-256 (security/signing.py) is handled like a rotation:
a SHA-1 session cookie is re-signed with SHA-256, a SHA-1 remember cookie is refused.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from http import HTTPStatus

import pytest
from flask import Flask
from flask.testing import FlaskClient
from itsdangerous import Signer

from bastion.security.devices import DEVICE_COOKIE
from bastion.security.sessions import REMEMBER_COOKIE, SESSION_COOKIE
from tests.conftest import GOOD_PASSWORD, AuthActions, Outbox, csrf_token_from
from tests.security.helpers import (
    assert_csrf_refused,
    assert_refused_and_cleared,
    cookie_value,
    flip,
    is_deletion,
    is_signed_in,
    login_form,
    raw_id,
    set_cookies,
    with_device,
    with_remember,
    with_session,
)

NEW_KEY = "rotated-secret-key-" + "n" * 40
WRONG = "not the password at all"
LOCK_AFTER = 3  # below ip_user.login's 5 a minute, so one address can lock the account


def sha1_signed(key: str | bytes | None, salt: str, value: str) -> str:
    """`value` signed as Bastion signed it before the move to SHA-256: HMAC-SHA-1."""
    return Signer(key, salt=salt, digest_method=hashlib.sha1).sign(value).decode()  # type: ignore[arg-type]


def is_sha256_signed(key: str | bytes | None, salt: str, value: str) -> bool:
    return Signer(key, salt=salt, digest_method=hashlib.sha256).validate(value)  # type: ignore[arg-type]


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

    assert_refused_and_cleared(response)


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


# ------------------------------------------------------- the move from SHA-1 to SHA-256
@pytest.mark.parametrize("signed_under", ["current key", "fallback key"])
def test_a_sha1_session_cookie_survives_the_move_and_is_resigned_with_sha256(
    app: Flask,
    client: FlaskClient,
    auth: AuthActions,
    make_app: Callable[..., Flask],
    signed_under: str,
) -> None:
    auth.create_user()
    auth.login()
    genuine = cookie_value(client)
    assert genuine is not None
    sid = raw_id(genuine)
    upgraded = (
        app
        if signed_under == "current key"
        else make_app(secret_key=NEW_KEY, secret_key_fallbacks=(app.secret_key,))
    )
    browser = with_session(upgraded, sha1_signed(app.secret_key, "bastion.session", sid))

    response = browser.get("/")

    assert response.status_code == HTTPStatus.OK  # nobody is logged out by the upgrade
    resigned = set_cookies(response)[SESSION_COOKIE]["value"]
    assert raw_id(resigned) == sid  # the same session, a new signature
    assert is_sha256_signed(upgraded.secret_key, "bastion.session", resigned)
    assert SESSION_COOKIE not in set_cookies(browser.get("/"))  # re-signed once


@pytest.mark.parametrize("forgery", ["flipped signature", "dropped key"])
def test_a_forged_sha1_session_cookie_is_refused_and_cleared(
    app: Flask,
    client: FlaskClient,
    auth: AuthActions,
    make_app: Callable[..., Flask],
    forgery: str,
) -> None:
    auth.create_user()
    auth.login()
    genuine = cookie_value(client)
    assert genuine is not None
    sha1 = sha1_signed(app.secret_key, "bastion.session", raw_id(genuine))
    if forgery == "flipped signature":
        sid, signature = sha1.rsplit(".", 1)
        server, cookie = app, sid + "." + flip(signature, 3)
    else:  # the key it was signed with is no longer configured at all
        server, cookie = make_app(secret_key=NEW_KEY), sha1

    response = with_session(server, cookie).get("/")

    assert_refused_and_cleared(response)


def test_a_sha1_remember_cookie_is_refused_like_an_old_key_one(
    app: Flask, client: FlaskClient, auth: AuthActions
) -> None:
    # A 14-day cookie would keep SHA-1 alive past the 7 days security/signing.py allows
    # it; like an old-key one, it costs its owner one sign-in.
    auth.create_user()
    auth.login(remember=True)
    remember = cookie_value(client, REMEMBER_COOKIE)
    assert remember is not None
    sha1 = sha1_signed(app.secret_key, "bastion.remember", raw_id(remember))

    response = with_remember(app, sha1).get("/")

    assert response.status_code == HTTPStatus.FOUND
    assert is_deletion(set_cookies(response)[REMEMBER_COOKIE])
    # The token itself is still live: only its SHA-1 signature was refused.
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


# ---------------------------------------------------------- Flask-WTF's CSRF tokens
def test_a_form_opened_before_rotation_is_refused_after_it_and_works_once_reloaded(
    app: Flask, client: FlaskClient, auth: AuthActions, make_app: Callable[..., Flask]
) -> None:
    # Flask-WTF signs its tokens with SECRET_KEY alone: the fallbacks don't reach them.
    auth.create_user()
    old_token = auth.csrf()
    session = cookie_value(client)
    assert session is not None
    rotated = make_app(secret_key=NEW_KEY, secret_key_fallbacks=(app.secret_key,))
    browser = with_session(rotated, session)  # the session itself survives the rotation

    refused = browser.post(
        "/auth/login", data=login_form(old_token, "alice@example.com", GOOD_PASSWORD)
    )

    assert_csrf_refused(rotated, refused, "/auth/login")
    assert not is_signed_in(browser)
    assert AuthActions(rotated, browser).login().status_code == HTTPStatus.SEE_OTHER
    assert is_signed_in(browser)


# ------------------------------------------------------------------ the device cookie
def locked_out_owners_device(app: Flask, client: FlaskClient, auth: AuthActions) -> str:
    """Sign the owner in once (a device cookie), then lock the account from elsewhere.

    Returns the device cookie, signed with the app's (old) key.
    """
    auth.create_user()
    assert auth.login().status_code == HTTPStatus.SEE_OTHER
    device = cookie_value(client, DEVICE_COOKIE)
    assert device is not None
    attacker = AuthActions(app, app.test_client())
    # From another address: the owner's own per-address budget stays untouched.
    attacker.client.environ_base["REMOTE_ADDR"] = "10.9.9.9"
    for _ in range(LOCK_AFTER):
        assert attacker.login(password=WRONG).status_code == HTTPStatus.UNAUTHORIZED
    return device


@pytest.mark.settings(lockout_threshold=LOCK_AFTER)
def test_an_old_key_device_cookie_still_gets_into_a_locked_account_through_the_fallback(
    app: Flask, client: FlaskClient, auth: AuthActions, make_app: Callable[..., Flask]
) -> None:
    device = locked_out_owners_device(app, client, auth)
    rotated = make_app(
        secret_key=NEW_KEY, secret_key_fallbacks=(app.secret_key,), lockout_threshold=LOCK_AFTER
    )
    stranger = rotated.test_client()
    owner = with_device(rotated, device)

    # The stranger goes first: the owner's success ends the lock for everyone.
    strangers_try = AuthActions(rotated, stranger).login()
    owners_try = AuthActions(rotated, owner).login()

    assert strangers_try.status_code == HTTPStatus.UNAUTHORIZED  # the lock outlived the restart
    assert owners_try.status_code == HTTPStatus.SEE_OTHER
    assert is_signed_in(owner)


@pytest.mark.settings(lockout_threshold=LOCK_AFTER)
def test_an_old_key_device_cookie_is_no_help_once_the_fallback_is_dropped(
    app: Flask, client: FlaskClient, auth: AuthActions, make_app: Callable[..., Flask]
) -> None:
    device = locked_out_owners_device(app, client, auth)
    rotated = make_app(secret_key=NEW_KEY, lockout_threshold=LOCK_AFTER)
    owner = with_device(rotated, device)

    response = AuthActions(rotated, owner).login()

    assert response.status_code == HTTPStatus.UNAUTHORIZED
    assert not is_signed_in(owner)


@pytest.mark.settings(lockout_threshold=LOCK_AFTER)
def test_a_device_signing_in_during_the_rotation_stays_trusted_after_it(
    app: Flask, client: FlaskClient, auth: AuthActions, make_app: Callable[..., Flask]
) -> None:
    """A sign-in through the fallback re-signs the device cookie with the new key, so the
    device is still known once the old key is dropped."""
    rotated = make_app(
        secret_key=NEW_KEY, secret_key_fallbacks=(app.secret_key,), lockout_threshold=LOCK_AFTER
    )
    settled = make_app(secret_key=NEW_KEY, lockout_threshold=LOCK_AFTER)
    auth.create_user()
    assert auth.login().status_code == HTTPStatus.SEE_OTHER
    old_key_device = cookie_value(client, DEVICE_COOKIE)
    assert old_key_device is not None
    during = with_device(rotated, old_key_device)
    assert AuthActions(rotated, during).login().status_code == HTTPStatus.SEE_OTHER
    new_key_device = cookie_value(during, DEVICE_COOKIE)
    assert new_key_device is not None
    assert new_key_device != old_key_device
    attacker = AuthActions(settled, settled.test_client())
    attacker.client.environ_base["REMOTE_ADDR"] = "10.9.9.9"
    for _ in range(LOCK_AFTER):
        assert attacker.login(password=WRONG).status_code == HTTPStatus.UNAUTHORIZED
    owner = with_device(settled, new_key_device)

    assert AuthActions(settled, owner).login().status_code == HTTPStatus.SEE_OTHER
    assert is_signed_in(owner)


# ------------------------------------------------------------------ rate-limit counters
def test_rate_limit_counters_start_from_zero_under_a_rotated_key(
    app: Flask, client: FlaskClient, auth: AuthActions, make_app: Callable[..., Flask]
) -> None:
    # The other apps are built before the guessing. In the embedded profile the in-process
    # store belongs to the process-wide limiter, which every create_app replaces: built
    # first, all three apps share one store, as scale-out nodes share Redis.
    auth.create_user()
    restarted = make_app()  # same key
    rotated = make_app(secret_key=NEW_KEY, secret_key_fallbacks=(app.secret_key,))
    for _ in range(5):  # ip_user.login: 5 a minute
        assert auth.login(password=WRONG).status_code == HTTPStatus.UNAUTHORIZED

    same_key = AuthActions(restarted, restarted.test_client()).login(password=WRONG)
    new_key = AuthActions(rotated, rotated.test_client()).login(password=WRONG)

    assert same_key.status_code == HTTPStatus.TOO_MANY_REQUESTS  # the count is shared
    assert new_key.status_code == HTTPStatus.UNAUTHORIZED  # heard: the count starts afresh
