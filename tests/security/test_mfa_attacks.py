"""Attacks on the second factor: skip it, replay it, guess it, steal its state, read its seed."""

from __future__ import annotations

import re
import threading
from datetime import timedelta
from http import HTTPStatus
from urllib.parse import urlsplit

import pyotp
import pytest
from cryptography.fernet import Fernet
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from bastion import create_app
from bastion.accounts import mfa
from bastion.accounts.models import RecoveryCode, TotpCredential, User
from bastion.app import close_app
from bastion.audit import Actor
from bastion.core.db import db
from bastion.security import crypto
from bastion.settings import TEST_DATA_KEY
from tests.conftest import (
    GOOD_PASSWORD,
    AuthActions,
    Backend,
    HttpsClient,
    Outbox,
    csrf_token_from,
)
from tests.mfa_support import Clock, NewMail, enrol, login_2fa, nonce_from, second_step

SIGNED_IN_PAGES = ("/", "/account/", "/account/sessions", "/account/2fa", "/account/email")


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return Clock.install(monkeypatch)


@pytest.fixture
def enrolled(auth: AuthActions, client: FlaskClient, clock: Clock) -> str:
    """Alice with TOTP on, signed out again; returns her TOTP secret."""
    auth.create_user()
    auth.login()
    secret = enrol(client, clock).secret
    auth.logout()
    return secret


def is_signed_in(client: FlaskClient) -> bool:
    return client.get("/").status_code == HTTPStatus.OK


# ---------------------------------------------------------------------- skipping
def test_the_password_alone_reaches_no_signed_in_page(
    auth: AuthActions, client: FlaskClient, enrolled: str
) -> None:
    first = auth.login()
    assert first.headers["Location"] == "/auth/login/2fa"
    for path in SIGNED_IN_PAGES:
        response = client.get(path)
        assert response.status_code == HTTPStatus.FOUND, path
        assert response.headers["Location"].startswith("/auth/login"), path
    # Posting to a signed-in form between the steps fails too.
    token = csrf_token_from(client.get("/auth/login/2fa").get_data(as_text=True))
    forged = client.post("/account/sessions/revoke-others", data={"csrf_token": token})
    assert forged.status_code == HTTPStatus.FOUND
    assert not is_signed_in(client)


def test_the_2fa_step_without_a_password_step_sends_you_back(
    client: FlaskClient, enrolled: str, clock: Clock
) -> None:
    response = client.get("/auth/login/2fa")
    assert response.status_code == HTTPStatus.SEE_OTHER
    assert response.headers["Location"] == "/auth/login"
    token = csrf_token_from(client.get("/auth/login").get_data(as_text=True))
    posted = client.post(
        "/auth/login/2fa", data={"code": clock.code(enrolled), "nonce": "x", "csrf_token": token}
    )
    assert posted.status_code == HTTPStatus.SEE_OTHER
    assert not is_signed_in(client)


# --------------------------------------------------------------------- replaying
def test_an_accepted_code_is_refused_the_second_time(
    app: Flask, auth: AuthActions, client: FlaskClient, enrolled: str, clock: Clock
) -> None:
    code = clock.code(enrolled)
    assert login_2fa(auth, code).status_code == HTTPStatus.SEE_OTHER
    auth.logout()
    # Same code, same 30-second window, a second sign-in (e.g. a phished code replayed).
    replay = login_2fa(auth, code)
    assert replay.status_code == HTTPStatus.UNAUTHORIZED
    assert not is_signed_in(client)


def test_an_older_code_is_refused_once_a_newer_one_was_accepted(
    auth: AuthActions, client: FlaskClient, enrolled: str, clock: Clock
) -> None:
    totp = pyotp.TOTP(enrolled)
    clock.tick(90)
    older = totp.at(clock.now - timedelta(seconds=30))  # still inside valid_window=1
    newer = totp.at(clock.now)
    assert login_2fa(auth, newer).status_code == HTTPStatus.SEE_OTHER
    auth.logout()
    assert login_2fa(auth, older).status_code == HTTPStatus.UNAUTHORIZED


def test_codes_outside_the_window_are_refused(
    auth: AuthActions, client: FlaskClient, enrolled: str, clock: Clock
) -> None:
    clock.tick(300)
    totp = pyotp.TOTP(enrolled)
    for offset in (-90, -60, 60, 90):
        auth.login()
        response = second_step(client, totp.at(clock.now + timedelta(seconds=offset)))
        assert response.status_code == HTTPStatus.UNAUTHORIZED, offset


def test_two_concurrent_uses_of_one_code_cannot_both_win(
    app: Flask, enrolled: str, clock: Clock
) -> None:
    code = clock.code(enrolled)
    workers = 6
    start = threading.Barrier(workers)
    results: list[bool] = []

    def use_code() -> None:
        with app.app_context():
            user = db.session.scalars(select(User)).one()
            db.session.get(TotpCredential, user.id)  # every racer has read the old step
            start.wait(timeout=10)
            results.append(mfa.verify_totp(user, code))
            db.session.remove()

    threads = [threading.Thread(target=use_code) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(results) == [False] * (workers - 1) + [True]


def test_a_used_recovery_code_stays_used(
    auth: AuthActions, client: FlaskClient, enrolled: str, app: Flask
) -> None:
    with app.app_context():
        user = db.session.scalars(select(User)).one()
        codes = mfa.regenerate_recovery_codes(user, Actor.system())
    assert login_2fa(auth, codes[0]).status_code == HTTPStatus.SEE_OTHER
    auth.logout()
    assert login_2fa(auth, codes[0]).status_code == HTTPStatus.UNAUTHORIZED
    with app.app_context():
        user = db.session.scalars(select(User)).one()
        assert mfa.remaining_recovery_codes(user) == 9


# -------------------------------------------------------------------- the state
def test_the_pending_state_belongs_to_its_own_session(
    app: Flask, auth: AuthActions, client: FlaskClient, enrolled: str, clock: Clock
) -> None:
    auth.login()  # the victim's browser proved the password
    attacker = app.test_client()
    page = attacker.get("/auth/login/2fa")
    assert page.status_code == HTTPStatus.SEE_OTHER  # a fresh session has no pending state
    token = csrf_token_from(attacker.get("/auth/login").get_data(as_text=True))
    nonce = nonce_from(client.get("/auth/login/2fa").get_data(as_text=True))
    posted = attacker.post(
        "/auth/login/2fa",
        data={"code": clock.code(enrolled), "nonce": nonce, "csrf_token": token},
    )
    assert posted.status_code == HTTPStatus.SEE_OTHER
    assert posted.headers["Location"] == "/auth/login"
    assert not is_signed_in(attacker)


def test_the_session_id_changes_at_each_step(
    auth: AuthActions, client: FlaskClient, enrolled: str, clock: Clock
) -> None:
    auth.csrf()
    before = client.get_cookie("__Host-session")
    assert before is not None
    auth.login()
    pending = client.get_cookie("__Host-session")
    assert pending is not None
    assert pending.value != before.value
    second_step(client, clock.code(enrolled))
    signed_in = client.get_cookie("__Host-session")
    assert signed_in is not None
    assert signed_in.value not in {before.value, pending.value}


def test_a_form_from_an_earlier_attempt_is_refused(
    auth: AuthActions, client: FlaskClient, enrolled: str, clock: Clock
) -> None:
    auth.login()
    old_nonce = nonce_from(client.get("/auth/login/2fa").get_data(as_text=True))
    auth.login()  # a new attempt: a new nonce
    html = client.get("/auth/login/2fa").get_data(as_text=True)
    stale = client.post(
        "/auth/login/2fa",
        data={
            "code": clock.code(enrolled),
            "nonce": old_nonce,
            "csrf_token": csrf_token_from(html),
        },
    )
    assert stale.status_code == HTTPStatus.UNAUTHORIZED
    assert not is_signed_in(client)


def test_the_pending_state_expires_after_five_minutes(
    auth: AuthActions, client: FlaskClient, enrolled: str, clock: Clock
) -> None:
    auth.login()
    html = client.get("/auth/login/2fa").get_data(as_text=True)
    clock.tick(5 * 60 + 1)
    late = client.post(
        "/auth/login/2fa",
        data={
            "code": pyotp.TOTP(enrolled).at(clock.now),
            "nonce": nonce_from(html),
            "csrf_token": csrf_token_from(html),
        },
    )
    assert late.status_code == HTTPStatus.SEE_OTHER
    assert late.headers["Location"] == "/auth/login"
    assert not is_signed_in(client)


# --------------------------------------------------------------------- guessing
@pytest.mark.settings(ratelimit_user_mfa="100 per minute", ratelimit_ip_mfa="100 per minute")
def test_five_wrong_codes_send_you_back_to_the_password(
    auth: AuthActions, client: FlaskClient, enrolled: str, clock: Clock
) -> None:
    auth.login()
    for attempt in range(4):
        assert second_step(client, f"{attempt:06d}").status_code == HTTPStatus.UNAUTHORIZED
    fifth = second_step(client, "000009")
    assert fifth.status_code == HTTPStatus.SEE_OTHER
    assert fifth.headers["Location"] == "/auth/login"
    # The state is gone: even the right code needs the password again first.
    assert client.get("/auth/login/2fa").status_code == HTTPStatus.SEE_OTHER
    assert not is_signed_in(client)


@pytest.mark.settings(ratelimit_user_mfa="3 per minute")
def test_code_guessing_is_rate_limited_per_account(
    app: Flask, auth: AuthActions, client: FlaskClient, enrolled: str, clock: Clock
) -> None:
    auth.login()
    for attempt in range(3):
        second_step(client, f"{attempt:06d}")
    other = app.test_client()
    other_auth = AuthActions(app, other)
    other_auth.login()  # a new pending login does not reset the account's count
    limited = second_step(other, clock.code(enrolled))
    assert limited.status_code == HTTPStatus.TOO_MANY_REQUESTS
    assert "Retry-After" in limited.headers
    assert not is_signed_in(other)


def test_every_new_form_needs_a_csrf_token(
    auth: AuthActions, client: FlaskClient, enrolled: str, clock: Clock
) -> None:
    assert login_2fa(auth, clock.code(enrolled)).status_code == HTTPStatus.SEE_OTHER
    for path in (
        "/account/2fa/setup",
        "/account/2fa/recovery-codes",
        "/account/2fa/disable",
        "/account/sessions/revoke-others",
        "/account/email",
    ):
        response = client.post(path, data={"code": "123456", "password": GOOD_PASSWORD})
        assert response.status_code == HTTPStatus.BAD_REQUEST, path
    auth.logout()
    auth.login()
    no_token = client.post("/auth/login/2fa", data={"code": clock.code(enrolled)})
    assert no_token.status_code == HTTPStatus.BAD_REQUEST


# ------------------------------------------------------------------ the seed at rest
def test_the_seed_is_encrypted_with_the_data_key_and_bound_to_its_user(
    app: Flask, auth: AuthActions, enrolled: str, clock: Clock
) -> None:
    bob_id = auth.create_user("bob@example.com", name="Bob Example")
    with app.app_context():
        alice = db.session.scalars(select(User).where(User.email == "alice@example.com")).one()
        stored = db.session.get(TotpCredential, alice.id)
        assert stored is not None
        assert enrolled not in stored.secret
        # The data key opens it, and nothing derived from SECRET_KEY does.
        opened = Fernet(TEST_DATA_KEY.encode()).decrypt(stored.secret.encode()).decode()
        assert opened.endswith(enrolled)
        # Copied into Bob's row, Alice's seed is useless: it is bound to Alice.
        db.session.add(TotpCredential(user_id=bob_id, secret=stored.secret, last_step=0))
        db.session.commit()
        bob = db.session.get(User, bob_id)
        assert bob is not None
        assert mfa.verify_totp(bob, clock.code(enrolled)) is False


def test_recovery_codes_are_stored_as_hashes_only(app: Flask, enrolled: str) -> None:
    with app.app_context():
        stored = db.session.scalars(select(RecoveryCode.code_hash)).all()
    assert len(stored) == 10
    assert all(len(h) == 64 and int(h, 16) >= 0 for h in stored)


def test_data_key_rotation_keeps_old_seeds_working_and_moves_them(
    backend: Backend, auth: AuthActions, enrolled: str, clock: Clock
) -> None:
    new_key = Fernet.generate_key().decode()
    rotated = create_app(backend.settings(data_key=(new_key, TEST_DATA_KEY)))
    rotated.test_client_class = HttpsClient
    browser = rotated.test_client()
    try:
        signed_in = login_2fa(AuthActions(rotated, browser), clock.code(enrolled))
        assert signed_in.status_code == HTTPStatus.SEE_OTHER
        with rotated.app_context():
            alice = db.session.scalars(select(User)).one()
            stored = db.session.get(TotpCredential, alice.id)
            assert stored is not None
            # Re-encrypted with the newest key on use: the old key can now be retired.
            Fernet(new_key.encode()).decrypt(stored.secret.encode())
            with pytest.raises(crypto.DecryptionFailed):
                crypto.decrypt(stored.secret, context=f"totp:{alice.id + 1}")
    finally:
        close_app(rotated)


def test_reencrypt_all_moves_every_seed_to_the_newest_key(
    backend: Backend, enrolled: str, clock: Clock
) -> None:
    new_key = Fernet.generate_key().decode()
    rotated = create_app(backend.settings(data_key=(new_key, TEST_DATA_KEY)))
    try:
        with rotated.app_context():
            assert mfa.reencrypt_all() == 1
            assert mfa.reencrypt_all() == 0
            stored = db.session.scalars(select(TotpCredential)).one()
            Fernet(new_key.encode()).decrypt(stored.secret.encode())
    finally:
        close_app(rotated)


# ------------------------------------------------------ the credential's own streak
@pytest.mark.settings(lockout_threshold=3, lockout_max_failures=4)
def test_only_a_right_code_ends_the_code_streak_and_at_the_maximum_totp_is_off(
    app: Flask, enrolled: str, clock: Clock, outbox: Outbox
) -> None:
    """Wrong codes count on the TOTP credential wherever they are entered; a right code
    resets the count; at the maximum no TOTP code is accepted, right or wrong, the owner is
    told once, and a recovery code is still accepted (and turns TOTP back on)."""
    notices = NewMail(outbox)
    with app.app_context():
        alice = db.session.scalars(select(User).where(User.email == "alice@example.com")).one()
        actor = Actor.system()
        for code in clock.wrong_codes(enrolled, 3):
            assert mfa.verify_second_factor(alice, code, actor) is None
        assert mfa.verify_second_factor(alice, clock.code(enrolled), actor) is mfa.Factor.TOTP
        credential = db.session.get(TotpCredential, alice.id, populate_existing=True)
        assert credential is not None
        assert credential.failed_codes == 0

        assert mfa.verify_second_factor(alice, "NOT-A-RECOVERY-CODE-AT-ALL-X", actor) is None
        for code in clock.wrong_codes(enrolled, 3):
            assert mfa.verify_second_factor(alice, code, actor) is None
        right = clock.code(enrolled)
        assert mfa.verify_second_factor(alice, right, actor) is None  # off: even the right one
        credential = db.session.get(TotpCredential, alice.id, populate_existing=True)
        assert credential is not None
        assert credential.failed_codes == 5
        told = [m["Subject"] for m in notices.messages()]
        assert told == ["Codes from your authenticator app no longer work"]

        codes = mfa.regenerate_recovery_codes(alice, actor)
        assert mfa.verify_second_factor(alice, codes[0], actor) is mfa.Factor.RECOVERY_CODE
        assert mfa.verify_second_factor(alice, clock.code(enrolled), actor) is mfa.Factor.TOTP


@pytest.mark.settings(
    lockout_threshold=3,
    lockout_max_failures=4,
    ratelimit_ip_user_login="100 per minute",
    ratelimit_user_mfa="100 per minute",
)
def test_the_code_streak_survives_the_unlock_link(
    app: Flask, auth: AuthActions, enrolled: str, clock: Clock, outbox: Outbox
) -> None:
    """The other half of known gap 40: wrong codes at the sign-in's 2FA step lock the account,
    and the unlock link from the mailbox used to restart the whole count. It ends the lock,
    not the code streak."""
    for code in clock.wrong_codes(enrolled, 3):
        assert auth.login().status_code == HTTPStatus.SEE_OTHER
        wrong = second_step(auth.client, code)
        assert wrong.status_code == HTTPStatus.UNAUTHORIZED
        wrong.close()  # the lock notice goes out once the answer is closed
    bodies = [m.get_content() for m in outbox.messages() if m["To"] == "alice@example.com"]
    links = [urlsplit(link).path for body in bodies for link in re.findall(r"https://\S+", body)]
    unlock = next(link for link in links if link.startswith("/auth/unlock/"))
    page = auth.client.get(unlock)
    auth.client.post(unlock, data={"csrf_token": csrf_token_from(page.get_data(as_text=True))})
    assert auth.login().status_code == HTTPStatus.SEE_OTHER  # the account is unlocked
    assert second_step(auth.client, clock.wrong_codes(enrolled, 1)[0]).status_code == 401
    assert auth.login().status_code == HTTPStatus.SEE_OTHER
    assert second_step(auth.client, clock.code(enrolled)).status_code == HTTPStatus.UNAUTHORIZED
    assert not is_signed_in(auth.client)
