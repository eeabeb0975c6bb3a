"""TOTP two-factor authentication through the pages: enrol, sign in, recover, turn off."""

from __future__ import annotations

import json
import re
from http import HTTPStatus

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.test import TestResponse

from bastion import create_app
from bastion.accounts.models import RecoveryCode, TotpCredential
from bastion.audit.models import AuditEvent
from bastion.core.db import db
from tests.conftest import GOOD_PASSWORD, AuthActions, Backend, Outbox, csrf_token_from
from tests.mfa_support import Clock, enrol, login_2fa, second_step


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return Clock.install(monkeypatch)


def subjects(outbox: Outbox, to: str = "alice@example.com") -> list[str]:
    return [m["Subject"] for m in outbox.messages() if m["To"] == to]


def test_setup_page_shows_an_inline_svg_qr_code_and_the_secret(
    auth: AuthActions, client: FlaskClient
) -> None:
    auth.create_user()
    auth.login()
    page = client.get("/account/2fa/setup")
    html = page.get_data(as_text=True)
    assert page.status_code == HTTPStatus.OK
    svg = re.search(r"<svg.*?</svg>", html, re.S)
    assert svg, "no inline SVG on the page"
    markup = svg.group(0).lower()
    # The CSP holds: presentation attributes only - no inline style, data: URI or script.
    assert "style" not in markup
    assert "data:" not in markup
    assert "<script" not in markup
    assert "href" not in markup
    assert not re.search(r"\son\w+=", markup)
    secret = re.search(r'id="totp-secret">([A-Z2-7]{32})<', html)
    assert secret, "the secret is not shown as text"
    # A reload shows the same secret: it is kept (sealed) in this session until confirmed.
    assert secret.group(1) in client.get("/account/2fa/setup").get_data(as_text=True)


def test_enrolment_needs_a_correct_code(
    app: Flask, auth: AuthActions, client: FlaskClient, clock: Clock
) -> None:
    user_id = auth.create_user()
    auth.login()
    html = client.get("/account/2fa/setup").get_data(as_text=True)
    wrong = client.post(
        "/account/2fa/setup", data={"code": "000000", "csrf_token": csrf_token_from(html)}
    )
    assert wrong.status_code == HTTPStatus.BAD_REQUEST
    with app.app_context():
        assert db.session.get(TotpCredential, user_id) is None


def test_enrol_then_sign_in_with_a_code(
    app: Flask, auth: AuthActions, client: FlaskClient, outbox: Outbox, clock: Clock
) -> None:
    user_id = auth.create_user()
    auth.login()
    enrolled = enrol(client, clock)
    assert "Two-factor authentication is on" in subjects(outbox)
    with app.app_context():
        credential = db.session.get(TotpCredential, user_id)
        assert credential is not None
        assert enrolled.secret not in credential.secret  # encrypted at rest
        hashes = db.session.scalars(select(RecoveryCode.code_hash)).all()
        assert len(hashes) == 10
        assert not set(enrolled.recovery_codes) & set(hashes)  # only hashes are stored
    auth.logout()

    first = auth.login()
    assert first.headers["Location"] == "/auth/login/2fa"
    assert client.get("/").status_code == HTTPStatus.FOUND  # not signed in yet
    done = second_step(client, clock.code(enrolled.secret))
    assert done.status_code == HTTPStatus.SEE_OTHER
    assert done.headers["Location"] == "/"
    assert client.get("/").status_code == HTTPStatus.OK


def test_the_login_step_keeps_the_next_target(
    auth: AuthActions, client: FlaskClient, clock: Clock
) -> None:
    auth.create_user()
    auth.login()
    enrolled = enrol(client, clock)
    auth.logout()
    auth.login(next_url="/account/sessions")
    done = second_step(client, clock.code(enrolled.secret))
    assert done.headers["Location"] == "/account/sessions"


def test_a_recovery_code_signs_in_once(
    auth: AuthActions, client: FlaskClient, clock: Clock
) -> None:
    auth.create_user()
    auth.login()
    enrolled = enrol(client, clock)
    auth.logout()
    code = enrolled.recovery_codes[3]
    assert login_2fa(auth, code.lower().replace("-", " ")).status_code == HTTPStatus.SEE_OTHER
    auth.logout()
    again = login_2fa(auth, code)
    assert again.status_code == HTTPStatus.UNAUTHORIZED
    assert client.get("/").status_code == HTTPStatus.FOUND


def test_regenerating_recovery_codes_voids_the_old_ones(
    auth: AuthActions, client: FlaskClient, outbox: Outbox, clock: Clock
) -> None:
    auth.create_user()
    auth.login()
    enrolled = enrol(client, clock)
    page = client.get("/account/2fa/recovery-codes")
    made = client.post(
        "/account/2fa/recovery-codes",
        data={"csrf_token": csrf_token_from(page.get_data(as_text=True))},
    )
    assert made.status_code == HTTPStatus.OK
    new_codes = re.findall(r"<li><code>([A-Z2-7-]{29})</code></li>", made.get_data(as_text=True))
    assert len(new_codes) == 10
    assert not set(new_codes) & set(enrolled.recovery_codes)
    # ASVS 7.4.3: the new codes come with the offer to end the other sessions.
    assert 'href="/account/sessions/revoke-others"' in made.get_data(as_text=True)
    assert "New recovery codes for Bastion" in subjects(outbox)
    auth.logout()
    assert login_2fa(auth, enrolled.recovery_codes[0]).status_code == HTTPStatus.UNAUTHORIZED
    assert login_2fa(auth, new_codes[0]).status_code == HTTPStatus.SEE_OTHER


def test_turning_2fa_off_needs_password_and_code(
    app: Flask, auth: AuthActions, client: FlaskClient, outbox: Outbox, clock: Clock
) -> None:
    user_id = auth.create_user()
    auth.login()
    enrolled = enrol(client, clock)

    def post(password: str, code: str) -> TestResponse:
        page = client.get("/account/2fa/disable")
        token = csrf_token_from(page.get_data(as_text=True))
        data = {"password": password, "code": code, "csrf_token": token}
        return client.post("/account/2fa/disable", data=data)

    wrong_password = post("not the password at all", clock.code(enrolled.secret))
    assert wrong_password.status_code == HTTPStatus.BAD_REQUEST
    assert post(GOOD_PASSWORD, "123456").status_code == HTTPStatus.BAD_REQUEST
    with app.app_context():
        assert db.session.get(TotpCredential, user_id) is not None
    done = post(GOOD_PASSWORD, clock.code(enrolled.secret))
    assert done.status_code == HTTPStatus.SEE_OTHER
    # ASVS 7.4.3: a factor change offers to end the other sessions, on a page that opens.
    assert done.headers["Location"] == "/account/sessions/revoke-others"
    assert client.get("/account/sessions/revoke-others").status_code == HTTPStatus.OK
    with app.app_context():
        assert db.session.get(TotpCredential, user_id) is None
        [refused] = db.session.scalars(
            select(AuditEvent).where(
                AuditEvent.event == "account.mfa.disable", AuditEvent.outcome == "failure"
            )
        ).all()
        assert json.loads(refused.details) == {"factor": "password"}
        assert db.session.scalars(select(RecoveryCode)).all() == []
    assert "Two-factor authentication is off" in subjects(outbox)
    auth.logout()
    assert auth.login().headers["Location"] == "/"  # the password alone again


def test_reauth_asks_for_a_code_when_2fa_is_on(
    auth: AuthActions, client: FlaskClient, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth.create_user()
    auth.login()
    enrolled = enrol(client, clock)
    page = client.get("/auth/reauth?next=/account/2fa")
    html = page.get_data(as_text=True)
    assert 'name="code"' in html
    password_only = client.post(
        "/auth/reauth?next=/account/2fa",
        data={"password": GOOD_PASSWORD, "csrf_token": csrf_token_from(html)},
    )
    assert password_only.status_code == HTTPStatus.UNAUTHORIZED
    wrong = client.post(
        "/auth/reauth?next=/account/2fa",
        data={"password": GOOD_PASSWORD, "code": "999999", "csrf_token": csrf_token_from(html)},
    )
    assert wrong.status_code == HTTPStatus.UNAUTHORIZED
    right = client.post(
        "/auth/reauth?next=/account/2fa",
        data={
            "password": GOOD_PASSWORD,
            "code": clock.code(enrolled.secret),
            "csrf_token": csrf_token_from(html),
        },
    )
    assert right.status_code == HTTPStatus.SEE_OTHER
    assert right.headers["Location"] == "/account/2fa"


def test_changing_2fa_needs_a_recent_sign_in(
    auth: AuthActions, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import timedelta

    from bastion.core.clock import utcnow

    auth.create_user()
    auth.login()
    later = utcnow() + timedelta(minutes=11)
    monkeypatch.setattr("bastion.security.freshness.utcnow", lambda: later)
    for path in ("/account/2fa/setup", "/account/2fa/recovery-codes", "/account/2fa/disable"):
        response = client.get(path)
        assert response.status_code == HTTPStatus.SEE_OTHER, path
        assert response.headers["Location"].startswith("/auth/reauth?next="), path


# ------------------------------------------------------------- BASTION_REQUIRE_2FA
@pytest.mark.settings(require_2fa="all")
def test_require_all_sends_a_user_without_2fa_to_enrolment_first(
    auth: AuthActions, client: FlaskClient, clock: Clock
) -> None:
    auth.create_user()
    assert auth.login().status_code == HTTPStatus.SEE_OTHER
    for path in ("/", "/account/", "/account/sessions", "/account/email"):
        response = client.get(path)
        assert response.status_code == HTTPStatus.SEE_OTHER, path
        assert response.headers["Location"] == "/account/2fa/setup", path
    assert client.get("/healthz").status_code == HTTPStatus.OK
    with client.get("/static/app.css") as static:
        assert static.status_code == HTTPStatus.OK
    enrol(client, clock)
    assert client.get("/").status_code == HTTPStatus.OK
    # Required 2FA cannot be switched off.
    off = client.get("/account/2fa/disable")
    assert off.headers["Location"] == "/account/2fa"


@pytest.mark.settings(require_2fa="all")
def test_require_all_still_lets_the_user_sign_out(auth: AuthActions, client: FlaskClient) -> None:
    auth.create_user()
    auth.login()
    token = csrf_token_from(client.get("/account/2fa/setup").get_data(as_text=True))
    out = client.post("/auth/logout", data={"csrf_token": token})
    assert out.status_code == HTTPStatus.SEE_OTHER
    assert out.headers["Location"] == "/auth/login"


@pytest.mark.settings(require_2fa="admins")
def test_require_admins_leaves_users_alone_and_stops_admins(
    auth: AuthActions, client: FlaskClient
) -> None:
    auth.create_user()
    auth.create_user("root@example.com", role="admin", name="Root Admin")
    auth.login()
    assert client.get("/").status_code == HTTPStatus.OK
    auth.logout()
    auth.login("root@example.com")
    response = client.get("/")
    assert response.status_code == HTTPStatus.SEE_OTHER
    assert response.headers["Location"] == "/account/2fa/setup"


def test_require_off_is_the_test_default(auth: AuthActions, client: FlaskClient) -> None:
    auth.create_user("root@example.com", role="admin", name="Root Admin")
    auth.login("root@example.com")
    assert client.get("/").status_code == HTTPStatus.OK


def test_turning_2fa_on_signs_out_the_other_sessions(
    app: Flask, auth: AuthActions, client: FlaskClient, clock: Clock
) -> None:
    auth.create_user()
    elsewhere = app.test_client()
    AuthActions(app, elsewhere).login()  # e.g. a session opened with a stolen password
    auth.login()
    enrol(client, clock)
    assert elsewhere.get("/").status_code == HTTPStatus.FOUND
    assert client.get("/").status_code == HTTPStatus.OK


def test_keys_reencrypt_moves_secrets_to_the_newest_data_key(
    app: Flask, auth: AuthActions, backend: Backend
) -> None:
    import pyotp
    from cryptography.fernet import Fernet

    from bastion.accounts import mfa
    from bastion.accounts.models import User
    from bastion.app import close_app
    from bastion.audit import Actor
    from bastion.cli import main
    from bastion.security import crypto

    old_keys = app.extensions["bastion.settings"].data_key
    user_id = auth.create_user()
    with app.app_context():
        user = db.session.get(User, user_id)
        assert user is not None
        enrolment = mfa.new_enrolment(user)
        mfa.enable(user, enrolment, pyotp.TOTP(enrolment.secret).now(), Actor.system())
    new_key = Fernet.generate_key().decode()
    rotated = create_app(backend.settings(data_key=(new_key, *old_keys)))
    only_new = create_app(backend.settings(data_key=(new_key,)))
    try:
        result = rotated.test_cli_runner().invoke(main, ["keys", "reencrypt"])

        assert result.exit_code == 0, result.output
        assert "re-encrypted 1 TOTP secrets" in result.output
        with only_new.app_context():  # the old key is gone and the seed still opens
            credential = db.session.get(TotpCredential, user_id)
            assert credential is not None
            opened = crypto.decrypt(credential.secret, context=f"totp:{user_id}")
            assert opened.value == enrolment.secret
            assert not opened.stale
    finally:
        close_app(rotated)
        close_app(only_new)
