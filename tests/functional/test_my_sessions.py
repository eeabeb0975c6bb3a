"""My sessions: see where I'm signed in, end one of them, or all the others."""

from __future__ import annotations

import re
from datetime import timedelta
from http import HTTPStatus

import pytest
from flask import Flask
from flask.testing import FlaskClient

from bastion.accounts.user_agents import describe
from bastion.core.clock import utcnow
from bastion.security.sessions import remember_tokens_for
from tests.conftest import GOOD_PASSWORD, AuthActions, HttpsClient, Outbox, csrf_token_from
from tests.mfa_support import NewMail

FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
)
KEY_RE = re.compile(r"/account/sessions/([0-9a-f]{64})/revoke")


class Browser:
    """A test client that always sends one User-Agent, like a real browser."""

    def __init__(self, app: Flask, user_agent: str) -> None:
        self.client: FlaskClient = app.test_client()
        self.client.environ_base["HTTP_USER_AGENT"] = user_agent
        self.auth = AuthActions(app, self.client)


@pytest.fixture
def https(app: Flask) -> Flask:
    app.test_client_class = HttpsClient
    return app


def laptop_and_phone_signed_in(app: Flask, auth: AuthActions) -> tuple[Browser, Browser]:
    """Alice, signed in on a Linux Firefox and on an iPhone."""
    auth.create_user()
    laptop = Browser(app, FIREFOX)
    phone = Browser(app, IPHONE)
    laptop.auth.login()
    phone.auth.login()
    return laptop, phone


def keys_on(page: str) -> list[str]:
    return KEY_RE.findall(page)


def key_of_device(client: FlaskClient, device: str) -> str:
    """The session key on the first row of `client`'s session list that names `device`."""
    page = client.get("/account/sessions").get_data(as_text=True)
    found = KEY_RE.search(page, page.index(device))
    assert found is not None
    return found.group(1)


def revoke(client: FlaskClient, key: str) -> int:
    token = csrf_token_from(client.get("/account/sessions").get_data(as_text=True))
    return client.post(f"/account/sessions/{key}/revoke", data={"csrf_token": token}).status_code


def test_lists_my_sessions_with_device_ip_and_the_current_one(
    https: Flask, auth: AuthActions
) -> None:
    laptop, _phone = laptop_and_phone_signed_in(https, auth)

    page = laptop.client.get("/account/sessions").get_data(as_text=True)

    assert "Firefox 128 on Linux" in page
    assert "Mobile Safari 17 on iOS 17 (iPhone)" in page
    assert "127.0.0.1" in page
    assert len(keys_on(page)) == 2
    assert page.count("(this session)") == 1
    row = page[page.index("(this session)") - 200 : page.index("(this session)")]
    assert "Firefox" in row


def test_ending_one_of_my_other_sessions_signs_that_device_out(
    https: Flask, auth: AuthActions
) -> None:
    auth.create_user()
    laptop = Browser(https, FIREFOX)
    phone = Browser(https, IPHONE)
    laptop.auth.login()
    phone.auth.login(remember=True)  # even "keep me signed in" does not bring it back
    phone_key = key_of_device(laptop.client, "Mobile Safari")

    assert revoke(laptop.client, phone_key) == HTTPStatus.SEE_OTHER

    assert phone.client.get("/").status_code == HTTPStatus.FOUND
    assert laptop.client.get("/").status_code == HTTPStatus.OK
    assert len(keys_on(laptop.client.get("/account/sessions").get_data(as_text=True))) == 1


def test_ending_another_session_needs_a_recent_sign_in(
    https: Flask, auth: AuthActions, monkeypatch: pytest.MonkeyPatch
) -> None:
    laptop, phone = laptop_and_phone_signed_in(https, auth)
    phone_key = key_of_device(laptop.client, "Mobile Safari")
    later = utcnow() + timedelta(minutes=11)
    monkeypatch.setattr("bastion.security.freshness.utcnow", lambda: later)

    token = csrf_token_from(laptop.client.get("/account/sessions").get_data(as_text=True))
    stale = laptop.client.post(f"/account/sessions/{phone_key}/revoke", data={"csrf_token": token})

    assert stale.status_code == HTTPStatus.SEE_OTHER
    assert stale.headers["Location"] == "/auth/reauth?next=/account/sessions"
    assert phone.client.get("/").status_code == HTTPStatus.OK  # still signed in
    reauth = laptop.client.post(
        "/auth/reauth?next=/account/sessions",
        data={"password": GOOD_PASSWORD, "csrf_token": token},
    )
    assert reauth.headers["Location"] == "/account/sessions"
    monkeypatch.undo()
    assert revoke(laptop.client, phone_key) == HTTPStatus.SEE_OTHER
    assert phone.client.get("/").status_code == HTTPStatus.FOUND


def test_ending_the_current_session_signs_me_out(https: Flask, auth: AuthActions) -> None:
    auth.create_user()
    laptop = Browser(https, FIREFOX)
    laptop.auth.login()
    [key] = keys_on(laptop.client.get("/account/sessions").get_data(as_text=True))
    token = csrf_token_from(laptop.client.get("/account/sessions").get_data(as_text=True))
    out = laptop.client.post(f"/account/sessions/{key}/revoke", data={"csrf_token": token})
    assert out.status_code == HTTPStatus.SEE_OTHER
    assert out.headers["Location"] == "/auth/login"
    assert laptop.client.get("/").status_code == HTTPStatus.FOUND


def test_someone_elses_session_key_is_a_404(https: Flask, auth: AuthActions) -> None:
    auth.create_user()
    auth.create_user("bob@example.com", name="Bob Example")
    alice = Browser(https, FIREFOX)
    bob = Browser(https, IPHONE)
    alice.auth.login()
    bob.auth.login("bob@example.com")
    [bob_key] = keys_on(bob.client.get("/account/sessions").get_data(as_text=True))

    assert revoke(alice.client, bob_key) == HTTPStatus.NOT_FOUND
    assert revoke(alice.client, "0" * 64) == HTTPStatus.NOT_FOUND
    assert revoke(alice.client, "not-a-key") == HTTPStatus.NOT_FOUND
    assert bob.client.get("/").status_code == HTTPStatus.OK  # untouched


def test_revoke_needs_a_csrf_token(https: Flask, auth: AuthActions) -> None:
    laptop, phone = laptop_and_phone_signed_in(https, auth)
    keys = keys_on(laptop.client.get("/account/sessions").get_data(as_text=True))
    for key in keys:
        assert laptop.client.post(f"/account/sessions/{key}/revoke").status_code == (
            HTTPStatus.BAD_REQUEST
        )
    assert phone.client.get("/").status_code == HTTPStatus.OK


def test_signing_out_all_others_needs_a_recent_sign_in(
    https: Flask, auth: AuthActions, monkeypatch: pytest.MonkeyPatch
) -> None:
    user_id = auth.create_user()
    laptop = Browser(https, FIREFOX)
    phone = Browser(https, IPHONE)
    tablet = Browser(https, IPHONE)
    laptop.auth.login()
    phone.auth.login(remember=True)
    tablet.auth.login()
    later = utcnow() + timedelta(minutes=11)
    monkeypatch.setattr("bastion.security.freshness.utcnow", lambda: later)

    stale = laptop.client.get("/account/sessions/revoke-others")
    assert stale.status_code == HTTPStatus.SEE_OTHER
    assert stale.headers["Location"] == "/auth/reauth?next=/account/sessions/revoke-others"
    token = csrf_token_from(laptop.client.get("/account/sessions").get_data(as_text=True))
    post_stale = laptop.client.post("/account/sessions/revoke-others", data={"csrf_token": token})
    assert post_stale.status_code == HTTPStatus.SEE_OTHER
    assert phone.client.get("/").status_code == HTTPStatus.OK  # nothing happened yet

    monkeypatch.undo()
    reauth = laptop.client.post(
        "/auth/reauth?next=/account/sessions/revoke-others",
        data={"password": GOOD_PASSWORD, "csrf_token": token},
    )
    assert reauth.headers["Location"] == "/account/sessions/revoke-others"
    page = laptop.client.get("/account/sessions/revoke-others")
    done = laptop.client.post(
        "/account/sessions/revoke-others",
        data={"csrf_token": csrf_token_from(page.get_data(as_text=True))},
    )
    assert done.status_code == HTTPStatus.SEE_OTHER
    assert phone.client.get("/").status_code == HTTPStatus.FOUND
    assert tablet.client.get("/").status_code == HTTPStatus.FOUND
    assert laptop.client.get("/").status_code == HTTPStatus.OK
    with https.app_context():
        assert remember_tokens_for(user_id) == 0


def test_a_password_change_signs_out_the_others_and_tells_the_owner(
    https: Flask, auth: AuthActions, outbox: Outbox
) -> None:
    laptop, phone = laptop_and_phone_signed_in(https, auth)
    mail = NewMail(outbox)
    changed = laptop.client.post(
        "/account/",
        data={
            "current_password": GOOD_PASSWORD,
            "new_password": "a completely new passphrase",
            "new_password_confirm": "a completely new passphrase",
            "csrf_token": laptop.auth.csrf("/account/"),
        },
    )
    assert changed.status_code == HTTPStatus.SEE_OTHER
    assert phone.client.get("/").status_code == HTTPStatus.FOUND
    assert laptop.client.get("/").status_code == HTTPStatus.OK
    assert mail.subjects("alice@example.com") == ["Your Bastion password was changed"]


def test_a_stale_session_must_reauthenticate_to_change_the_password(
    auth: AuthActions, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth.create_user()
    auth.login()
    token = auth.csrf("/account/")
    later = utcnow() + timedelta(minutes=11)
    monkeypatch.setattr("bastion.security.freshness.utcnow", lambda: later)
    response = client.post(
        "/account/",
        data={
            "current_password": GOOD_PASSWORD,
            "new_password": "a completely new passphrase",
            "new_password_confirm": "a completely new passphrase",
            "csrf_token": token,
        },
    )
    assert response.status_code == HTTPStatus.SEE_OTHER
    assert response.headers["Location"] == "/auth/reauth?next=/account/"
    assert client.get("/account/").status_code == HTTPStatus.OK  # viewing stays open


@pytest.mark.parametrize(
    ("agent", "expected"),
    [
        (None, "Unknown device"),
        ("", "Unknown device"),
        ("curl/8.5.0", "curl 8"),
        ("x" * 5000, "Unknown device"),
        ("<script>alert(1)</script>", "Unknown device"),
    ],
)
def test_device_names_are_best_effort(agent: str | None, expected: str) -> None:
    assert describe(agent) == expected
