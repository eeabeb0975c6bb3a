"""Server-side sessions: fixation, tampering, replay, timeouts, remember-me and revocation.

Controls proven (security/sessions.py, security/login.py): a new session id at login and
logout; the signed `__Host-session` cookie and its flags; server-side destruction at logout;
idle and absolute timeouts; the server-side, revocable, never-fresh `__Host-remember` token;
no remember-me for admins; revocation on password change; the short anonymous lifetime and
its purge; Flask-Login's own (unrevocable) remember cookie switched off; stored records
read as JSON only (a pickle written into the store is deleted, never unpickled).
"""

from __future__ import annotations

import hashlib
import json
import pickle  # nosec B403: the tests write a pickle into the store, and prove nothing reads it
from datetime import timedelta
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from flask_login.utils import encode_cookie
from itsdangerous import Signer

from bastion.core.clock import utcnow
from bastion.security import sessions
from bastion.security.devices import DEVICE_COOKIE
from bastion.security.sessions import REMEMBER_COOKIE, SESSION_COOKIE, hash_id
from tests.conftest import GOOD_PASSWORD, AuthActions, csrf_token_from
from tests.security.helpers import (
    Clock,
    assert_refused_and_cleared,
    audit_rows,
    cookie_value,
    flip,
    is_deletion,
    is_signed_in,
    manager_of,
    raw_id,
    set_cookies,
    set_user,
    store_of,
    stored_anonymous_session,
    stored_record,
    stored_session_count,
    user_id,
    with_remember,
    with_session,
)

NEW_PASSWORD = "a completely new passphrase"
FOURTEEN_DAYS = 14 * 24 * 3600


# --------------------------------------------------------------- fixation / rotation
def test_login_issues_a_new_session_id_and_kills_the_old_one(
    app: Flask, client: FlaskClient, auth: AuthActions
) -> None:
    # Session fixation: the attacker plants a pre-login session id in the victim's browser.
    auth.create_user()
    client.get("/auth/login")
    planted = cookie_value(client)
    assert planted is not None

    response = auth.login()

    assert response.status_code == HTTPStatus.SEE_OTHER
    after = cookie_value(client)
    assert after is not None
    assert raw_id(after) != raw_id(planted)
    assert SESSION_COOKIE in set_cookies(response)
    assert stored_record(app, planted) is None
    assert not is_signed_in(with_session(app, planted))  # the attacker's copy is worthless
    assert is_signed_in(client)


def test_logout_destroys_the_session_server_side(
    app: Flask, client: FlaskClient, auth: AuthActions
) -> None:
    auth.create_user()
    auth.login()
    signed_in = cookie_value(client)
    assert signed_in is not None

    response = auth.logout()

    assert is_deletion(set_cookies(response)[SESSION_COOKIE])
    assert response.headers["Clear-Site-Data"] == '"cache", "cookies", "storage"'
    assert stored_record(app, signed_in) is None
    # Replaying the cookie captured before logout (a stolen copy) gets nowhere.
    assert not is_signed_in(with_session(app, signed_in))
    # The next visit starts a different session.
    client.get("/auth/login")
    fresh = cookie_value(client)
    assert fresh is not None
    assert raw_id(fresh) != raw_id(signed_in)


def test_password_change_rotates_the_current_session_id(
    app: Flask, client: FlaskClient, auth: AuthActions
) -> None:
    auth.create_user()
    auth.login()
    before = cookie_value(client)
    assert before is not None

    response = client.post(
        "/account/",
        data={
            "current_password": GOOD_PASSWORD,
            "new_password": NEW_PASSWORD,
            "new_password_confirm": NEW_PASSWORD,
            "csrf_token": auth.csrf("/account/"),
        },
    )

    assert response.status_code == HTTPStatus.SEE_OTHER
    after = cookie_value(client)
    assert after is not None
    assert raw_id(after) != raw_id(before)
    assert not is_signed_in(with_session(app, before))
    assert is_signed_in(client)


# --------------------------------------------------------------------- cookie flags
def assert_host_cookie(cookie: dict[str, object]) -> None:
    assert cookie.get("secure") is True
    assert cookie.get("httponly") is True
    assert str(cookie.get("samesite")).lower() == "lax"
    assert cookie.get("path") == "/"
    assert "domain" not in cookie  # `__Host-` cookies must not name a domain


def test_session_and_remember_cookies_carry_every_flag(
    client: FlaskClient, auth: AuthActions
) -> None:
    auth.create_user()

    anonymous = set_cookies(client.get("/auth/login"))
    response = auth.login(remember=True)

    cookies = set_cookies(response)
    assert_host_cookie(anonymous[SESSION_COOKIE])
    assert_host_cookie(cookies[SESSION_COOKIE])
    assert "max-age" not in cookies[SESSION_COOKIE]  # a browser-session cookie
    assert_host_cookie(cookies[REMEMBER_COOKIE])
    assert 0 < int(cookies[REMEMBER_COOKIE]["max-age"]) <= FOURTEEN_DAYS
    assert SESSION_COOKIE.startswith("__Host-")
    assert REMEMBER_COOKIE.startswith("__Host-")


def test_session_id_is_long_and_random(client: FlaskClient) -> None:
    ids = set()
    for _ in range(3):
        client.delete_cookie(SESSION_COOKIE)
        client.get("/auth/login")
        value = cookie_value(client)
        assert value is not None
        ids.add(raw_id(value))

    assert len(ids) == 3
    assert all(len(sid) >= 22 for sid in ids)  # >= 128 bits of base64url


def test_session_remember_and_device_cookies_are_signed_with_hmac_sha256(
    app: Flask, auth: AuthActions
) -> None:
    # ASVS 11.4.1: not itsdangerous' default HMAC-SHA-1 (security/signing.py).
    auth.create_user()

    cookies = set_cookies(auth.login(remember=True))

    for name, salt in (
        (SESSION_COOKIE, "bastion.session"),
        (REMEMBER_COOKIE, "bastion.remember"),
        (DEVICE_COOKIE, "bastion.device-cookie"),
    ):
        sha256 = Signer(app.secret_key, salt=salt, digest_method=hashlib.sha256)  # type: ignore[arg-type]
        assert sha256.validate(cookies[name]["value"]), f"{name} is not HMAC-SHA-256"


# ------------------------------------------------------------------------ tampering
def test_a_session_cookie_with_a_flipped_signature_is_refused_and_cleared(
    app: Flask, client: FlaskClient, auth: AuthActions
) -> None:
    auth.create_user()
    auth.login()
    genuine = cookie_value(client)
    assert genuine is not None
    sid, signature = genuine.rsplit(".", 1)
    tampered = sid + "." + flip(signature, 3)  # a middle character: never only padding bits

    forger = with_session(app, tampered)
    response = forger.get("/")

    assert_refused_and_cleared(response)
    assert stored_record(app, genuine) is not None  # the owner's session is untouched
    assert is_signed_in(client)


@pytest.mark.parametrize("digest", [hashlib.sha256, hashlib.sha1], ids=["sha256", "sha1"])
def test_a_real_session_id_signed_with_another_key_is_refused_and_cleared(
    app: Flask, client: FlaskClient, auth: AuthActions, digest: Any
) -> None:
    # Under SHA-1 too: the signatures read during the move to SHA-256 need our keys.
    auth.create_user()
    auth.login()
    genuine = cookie_value(client)
    assert genuine is not None
    foreign = Signer("another-secret-key-" + "y" * 32, salt="bastion.session", digest_method=digest)
    forged = foreign.sign(raw_id(genuine)).decode()

    response = with_session(app, forged).get("/")

    assert_refused_and_cleared(response)


def test_an_unsigned_session_id_is_refused(
    app: Flask, client: FlaskClient, auth: AuthActions
) -> None:
    auth.create_user()
    auth.login()
    genuine = cookie_value(client)
    assert genuine is not None

    assert not is_signed_in(with_session(app, raw_id(genuine)))
    assert not is_signed_in(with_session(app, hash_id(raw_id(genuine))))


@pytest.mark.parametrize("name", ["session", "__host-session", "__Secure-session"])
def test_a_session_id_under_a_name_a_sibling_site_could_set_signs_nobody_in(
    app: Flask, client: FlaskClient, auth: AuthActions, name: str
) -> None:
    """Only `__Host-` cookies are safe from a sibling subdomain or a plain-HTTP page: the
    browser lets those set a cookie under any other name (Domain= the parent, or no
    Secure). An attacker's own signed-in id planted under such a name must not sign the
    victim into the attacker's account (session fixation, login CSRF)."""
    auth.create_user()
    auth.login()
    attackers = cookie_value(client)
    assert attackers is not None

    planted = app.test_client()
    planted.set_cookie(name, attackers)

    assert not is_signed_in(planted)


class LeavesAMark:
    """A pickle that, if anything ever unpickled it, would create `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[Path]]:
        return Path.touch, (self.marker,)


def overwrite_record(app: Flask, signed_cookie: str, raw: bytes) -> None:
    """Put `raw` where the session's record is stored, as someone with store access could."""
    store = store_of(app)
    key = hash_id(raw_id(signed_cookie))
    if app.extensions["bastion.settings"].redis_url is not None:
        store.client.set(store._key(key), raw)  # type: ignore[attr-defined]
        return
    table = store.table  # type: ignore[attr-defined]
    with store.engine.begin() as conn:  # type: ignore[attr-defined]
        conn.execute(table.update().where(table.c.key == key).values(data=raw.decode("latin-1")))


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param("pickle", id="pickle"),
        pytest.param(b'{"data": {}}', id="json-missing-fields"),
        pytest.param(b"[1, 2]", id="json-list"),
        pytest.param(b'{"data": 5}', id="json-wrong-types"),
    ],
)
def test_a_stored_record_that_is_not_ours_is_never_unpickled_and_signs_nobody_in(
    app: Flask, auth: AuthActions, tmp_path: Path, payload: bytes | str
) -> None:
    """Flask-Session could fall back to pickle.loads on stored data; our stores read JSON
    only. A pickle (or damaged JSON) under a signed-in session's key is deleted and the
    browser starts anew: no code runs, no 500, nobody signed in."""
    marker = tmp_path / "unpickled"
    raw = pickle.dumps(LeavesAMark(marker)) if payload == "pickle" else payload
    assert isinstance(raw, bytes)
    auth.create_user()
    auth.login()
    victim = cookie_value(auth.client)
    assert victim is not None
    other_device = app.test_client()
    AuthActions(app, other_device).login()
    overwrite_record(app, victim, raw)

    assert not is_signed_in(with_session(app, victim))
    assert not marker.exists()
    assert stored_record(app, victim) is None  # deleted, not left to fail again
    # The owner's other device still lists its sessions (the unreadable one left out).
    assert other_device.get("/account/sessions").status_code == HTTPStatus.OK
    assert not marker.exists()


# ------------------------------------------------------------------------- timeouts
def test_idle_timeout_ends_the_session(
    app: Flask, client: FlaskClient, auth: AuthActions, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth.create_user()
    clock = Clock(monkeypatch, utcnow())
    auth.login()
    signed_in = cookie_value(client)
    assert signed_in is not None

    clock.advance(minutes=29)
    assert is_signed_in(client)  # activity inside the window keeps the session (and touches it)
    clock.advance(minutes=29)
    assert is_signed_in(client)
    clock.advance(minutes=31)

    assert not is_signed_in(client)
    assert stored_record(app, signed_in) is None


def test_absolute_lifetime_ends_even_an_active_session(
    app: Flask, client: FlaskClient, auth: AuthActions, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth.create_user()
    clock = Clock(monkeypatch, utcnow())
    auth.login()

    for _ in range(19):  # busy every 25 minutes, so never idle: 7 h 55 min in all
        clock.advance(minutes=25)
        assert is_signed_in(client)
    clock.advance(minutes=6)  # 8 h 01 min after sign-in

    assert not is_signed_in(client)


@pytest.mark.settings(session_idle_minutes=5, session_absolute_hours=1)
def test_timeouts_follow_the_settings(
    client: FlaskClient, auth: AuthActions, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth.create_user()
    clock = Clock(monkeypatch, utcnow())
    auth.login()

    clock.advance(minutes=6)

    assert not is_signed_in(client)


def test_the_stored_record_is_bounded_by_the_absolute_lifetime(
    app: Flask, client: FlaskClient, auth: AuthActions
) -> None:
    auth.create_user()
    auth.login()
    value = cookie_value(client)
    assert value is not None

    record = stored_record(app, value)

    assert record is not None
    assert record.user_id == user_id(app, "alice@example.com")
    assert record.expires_at - record.created_at == timedelta(hours=8)
    assert record.auth_at is not None


# ------------------------------------------------------------------ anonymous sessions
@pytest.mark.settings(anonymous_session_minutes=10)
def test_anonymous_sessions_get_a_short_absolute_lifetime(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock(monkeypatch, utcnow())
    anonymous = stored_anonymous_session(client)
    record = stored_record(app, anonymous)
    assert record is not None
    assert record.user_id is None
    assert record.expires_at - record.created_at <= timedelta(minutes=10)

    for _ in range(2):  # active, so the idle timeout never fires: only the lifetime can
        clock.advance(minutes=4)
        client.get("/auth/login")
        assert cookie_value(client) == anonymous
    clock.advance(minutes=3)
    client.get("/auth/login")

    assert cookie_value(client) != anonymous
    assert stored_record(app, anonymous) is None


def test_the_sign_in_form_keeps_its_csrf_token_in_the_cookie_and_stores_nothing(
    app: Flask, client: FlaskClient, auth: AuthActions
) -> None:
    # Anonymous GETs must not grow the store: a flood of them would otherwise fill it.
    auth.create_user()
    before = stored_session_count(app)
    for _ in range(20):
        app.test_client().get("/auth/login")
    client.get("/auth/login")
    value = cookie_value(client)
    assert value is not None

    assert stored_session_count(app) == before
    assert raw_id(value).startswith(sessions.STATELESS_MARK)
    response = auth.login()  # the token in the cookie still guards the form

    assert response.status_code == HTTPStatus.SEE_OTHER
    assert is_signed_in(client)
    assert raw_id(cookie_value(client) or "") != raw_id(value)  # a stored id, not the value


def test_a_stateless_cookie_not_signed_by_us_yields_no_csrf_token(
    app: Flask, client: FlaskClient, auth: AuthActions
) -> None:
    # The value carries the raw CSRF token, so only our signature may vouch for one.
    auth.create_user()
    mine = app.test_client()
    form_token = csrf_token_from(mine.get("/auth/login").get_data(as_text=True))
    value = cookie_value(mine)
    assert value is not None
    unsigned = raw_id(value)
    other_key = Signer("not the app's key", salt=sessions.SESSION_SALT)

    for forged in (unsigned, other_key.sign(unsigned).decode(), flip(value, len(value) - 2)):
        attacker = with_session(app, forged)
        form = {"email": "alice@example.com", "password": GOOD_PASSWORD, "csrf_token": form_token}
        response = attacker.post("/auth/login", data=form)
        assert response.status_code == HTTPStatus.BAD_REQUEST, forged
        assert not is_signed_in(attacker)


@pytest.mark.settings(anonymous_session_minutes=10)
def test_a_stateless_session_ends_with_the_anonymous_lifetime(
    app: Flask, client: FlaskClient, auth: AuthActions, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth.create_user()
    clock = Clock(monkeypatch, utcnow())
    form_token = csrf_token_from(client.get("/auth/login").get_data(as_text=True))
    value = cookie_value(client)
    clock.advance(minutes=9)
    client.get("/auth/login")
    assert cookie_value(client) == value  # still within its lifetime: the same value

    clock.advance(minutes=2)
    response = client.post(
        "/auth/login",
        data={"email": "alice@example.com", "password": GOOD_PASSWORD, "csrf_token": form_token},
    )

    assert response.status_code == HTTPStatus.BAD_REQUEST  # Flask-WTF alone allows an hour
    assert not is_signed_in(client)
    client.get("/auth/login")
    assert cookie_value(client) not in (None, value)


def test_anonymous_lifetime_default_is_at_most_the_setting(app: Flask, client: FlaskClient) -> None:
    value = stored_anonymous_session(client)

    record = stored_record(app, value)

    limit = timedelta(minutes=app.extensions["bastion.settings"].anonymous_session_minutes)
    assert record is not None
    assert record.expires_at - record.created_at <= limit
    assert limit < timedelta(hours=app.extensions["bastion.settings"].session_absolute_hours)


def test_expired_sessions_are_purged(app: Flask, client: FlaskClient) -> None:
    # Anonymous traffic must not grow the store without bound.
    live = stored_anonymous_session(client)
    stale_browser = app.test_client()
    stale = stored_anonymous_session(stale_browser)
    with app.app_context():
        store = store_of(app)
        record = store.get(hash_id(raw_id(stale)))
        assert record is not None
        record.expires_at = utcnow() - timedelta(seconds=1)
        record.last_seen_at = utcnow() - timedelta(minutes=2)
        store.save(record, 1)

    from bastion.cli import main

    result = app.test_cli_runner().invoke(main, ["sessions", "purge"])

    assert result.exit_code == 0, result.output
    assert "expired sessions" in result.output
    assert stored_record(app, live) is not None
    if app.extensions["bastion.settings"].redis_url is None:
        assert "removed 1 " in result.output
        assert stored_record(app, stale) is None
    else:
        # Redis expires keys itself: the stale one's TTL is now at most a second, and even
        # before it fires, the server refuses the record.
        assert not is_signed_in(stale_browser)
        with app.app_context():
            client_ = store_of(app).client  # type: ignore[attr-defined]
            ttl = client_.ttl(store_of(app)._key(hash_id(raw_id(stale))))  # type: ignore[attr-defined]
        assert ttl <= 1


def test_every_nth_new_session_purges_the_expired_ones(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stored anonymous sessions (a flash, a pending sign-in) can't grow the store without
    bound, even if nobody runs the purge command: one new stored session in PURGE_ONE_IN
    purges (a counter per process)."""
    if app.extensions["bastion.settings"].redis_url is not None:
        pytest.skip("Redis expires session keys itself")
    monkeypatch.setattr(sessions, "PURGE_ONE_IN", 3)
    stale_browser = app.test_client()
    stale = stored_anonymous_session(stale_browser)
    with app.app_context():
        record = store_of(app).get(hash_id(raw_id(stale)))
        assert record is not None
        record.expires_at = utcnow() - timedelta(seconds=1)
        store_of(app).save(record, 1)

    survivors = []
    for _ in range(3):
        survivors.append(stored_anonymous_session(app.test_client()))
        if stored_record(app, stale) is None:
            break
    assert stored_record(app, stale) is None
    assert all(stored_record(app, value) is not None for value in survivors)


@pytest.mark.parametrize("how", ["command", "new-session"])
def test_spent_one_time_tokens_are_forgotten_once_their_lifetime_is_over(
    app: Flask, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """`used_tokens` would otherwise grow with every link ever used. A row may go once the
    token's own lifetime is over (it could no longer verify), never before."""
    from sqlalchemy import select

    from bastion.cli import main
    from bastion.core.db import db
    from bastion.security.tokens import UsedToken, mark_used

    with app.app_context():
        assert mark_used("spent-long-ago", "reset", utcnow() - timedelta(seconds=1))
        assert mark_used("spent-still-alive", "reset", utcnow() + timedelta(minutes=30))
        db.session.commit()

    if how == "command":
        result = app.test_cli_runner().invoke(main, ["sessions", "purge"])
        assert result.exit_code == 0, result.output
        assert "and 1 spent one-time tokens" in result.output
    else:
        monkeypatch.setattr(sessions, "PURGE_ONE_IN", 1)
        stored_anonymous_session(app.test_client())  # a new stored session: the purge

    with app.app_context():
        left = set(db.session.scalars(select(UsedToken.jti)))
    assert left == {"spent-still-alive"}


def test_redis_keys_expire_with_the_idle_timeout(app: Flask, client: FlaskClient) -> None:
    if app.extensions["bastion.settings"].redis_url is None:
        pytest.skip("the embedded profile purges with `bastion sessions purge` instead")
    value = stored_anonymous_session(client)

    with app.app_context():
        store = store_of(app)
        ttl = store.client.ttl(store._key(hash_id(raw_id(value))))  # type: ignore[attr-defined]

    assert 0 < ttl <= manager_of(app).policy.idle.total_seconds()


# ------------------------------------------------------------------------ remember-me
def test_remember_me_restores_a_session_that_is_not_fresh(
    app: Flask, client: FlaskClient, auth: AuthActions
) -> None:
    auth.create_user()
    auth.login(remember=True)
    with client:
        client.get("/")
        assert sessions.authenticated_at() is not None  # a password login is fresh
    remember = cookie_value(client, REMEMBER_COOKIE)
    assert remember is not None

    client.delete_cookie(SESSION_COOKIE)  # the browser was closed
    with client:
        response = client.get("/")
        restored_at = sessions.authenticated_at()

    assert response.status_code == HTTPStatus.OK
    assert restored_at is None  # never counts as a fresh login for sensitive actions
    cookies = set_cookies(response)
    assert SESSION_COOKIE in cookies
    assert cookies[REMEMBER_COOKIE]["value"] != remember  # rotated on use
    assert not is_signed_in(with_remember(app, remember))  # the used token is spent


def test_every_remember_me_sign_in_and_every_replayed_token_is_audited(
    app: Flask, client: FlaskClient, auth: AuthActions
) -> None:
    """ASVS 16.3.1: a restore is a sign-in without the password, so it is logged as one,
    with its factor; a validly signed token that is no longer stored (a stolen copy of a
    rotated one) is logged as a failure; a forged signature, which proves nothing, is not."""
    alice = auth.create_user()
    auth.login(remember=True)
    stolen = cookie_value(client, REMEMBER_COOKIE)
    assert stolen is not None
    client.delete_cookie(SESSION_COOKIE)  # the owner comes back: the token rotates
    assert client.get("/").status_code == HTTPStatus.OK

    assert not is_signed_in(with_remember(app, stolen))  # the thief replays the old copy
    token, signature = stolen.rsplit(".", 1)
    assert not is_signed_in(with_remember(app, token + "." + flip(signature, 3)))

    rows = audit_rows(app, "auth.login.remember")
    assert [(r.outcome, r.actor_id) for r in rows] == [("success", alice), ("failure", None)]
    assert json.loads(rows[0].details) == {"factor": "remember_token"}
    assert json.loads(rows[1].details) == {"factor": "remember_token", "reason": "unknown"}
    assert rows[0].ip == "127.0.0.1"


def test_remember_me_ends_14_days_after_the_password_login_however_often_it_is_used(
    app: Flask, client: FlaskClient, auth: AuthActions
) -> None:
    from sqlalchemy import select

    from bastion.core.db import db
    from bastion.security.sessions import RememberToken

    auth.create_user()
    auth.login(remember=True)
    with app.app_context():
        first_expiry = db.session.scalars(select(RememberToken.expires_at)).one()

    client.delete_cookie(SESSION_COOKIE)  # the browser was closed, and comes back
    response = client.get("/")

    assert response.status_code == HTTPStatus.OK
    with app.app_context():
        successor = db.session.scalars(select(RememberToken.expires_at)).one()
    assert successor == first_expiry  # rotated, but never extended
    max_age = int(set_cookies(response)[REMEMBER_COOKIE]["max-age"])
    assert max_age <= int((first_expiry - utcnow()).total_seconds()) + 1


@pytest.mark.parametrize("role", ["admin", "auditor"])
def test_privileged_roles_never_get_a_remember_cookie(
    app: Flask, client: FlaskClient, auth: AuthActions, role: str
) -> None:
    user_id = auth.create_user("staff@example.com", role=role, name="Staff Member")

    response = auth.login("staff@example.com", remember=True)

    assert response.status_code == HTTPStatus.SEE_OTHER
    assert REMEMBER_COOKIE not in set_cookies(response)
    with app.app_context():
        assert sessions.remember_tokens_for(user_id) == 0


def test_remember_cookie_dies_at_logout(app: Flask, client: FlaskClient, auth: AuthActions) -> None:
    auth.create_user()
    auth.login(remember=True)
    remember = cookie_value(client, REMEMBER_COOKIE)
    assert remember is not None

    response = auth.logout()

    assert is_deletion(set_cookies(response)[REMEMBER_COOKIE])
    thief = with_remember(app, remember)
    replay = thief.get("/")
    assert replay.status_code == HTTPStatus.FOUND
    assert is_deletion(set_cookies(replay)[REMEMBER_COOKIE])
    with app.app_context():
        assert sessions.remember_tokens_for(user_id(app, "alice@example.com")) == 0


def test_a_tampered_remember_cookie_is_refused(
    app: Flask, client: FlaskClient, auth: AuthActions
) -> None:
    auth.create_user()
    auth.login(remember=True)
    remember = cookie_value(client, REMEMBER_COOKIE)
    assert remember is not None
    token, signature = remember.rsplit(".", 1)
    foreign = Signer(
        "another-secret-key-" + "y" * 32, salt="bastion.remember", digest_method=hashlib.sha256
    )
    ours = Signer(app.secret_key, salt="bastion.remember", digest_method=hashlib.sha256)  # type: ignore[arg-type]

    for forged in (
        token + "." + flip(signature, 3),
        foreign.sign(token).decode(),
        token,
        ours.sign("guessed-token").decode(),
    ):
        response = with_remember(app, forged).get("/")
        assert response.status_code == HTTPStatus.FOUND
        assert is_deletion(set_cookies(response)[REMEMBER_COOKIE])


def test_expired_remember_token_is_refused(
    app: Flask, client: FlaskClient, auth: AuthActions, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth.create_user()
    clock = Clock(monkeypatch, utcnow())
    auth.login(remember=True)
    remember = cookie_value(client, REMEMBER_COOKIE)
    assert remember is not None

    clock.advance(days=14, minutes=1)

    assert not is_signed_in(with_remember(app, remember))


def test_admins_never_get_a_remember_cookie(
    app: Flask, client: FlaskClient, auth: AuthActions
) -> None:
    admin = auth.create_user("root@example.com", role="admin", name="Root Admin")

    response = auth.login("root@example.com", remember=True)

    assert response.status_code == HTTPStatus.SEE_OTHER
    assert REMEMBER_COOKIE not in set_cookies(response)
    with app.app_context():
        assert sessions.remember_tokens_for(admin) == 0


def test_password_change_revokes_other_sessions_and_remember_tokens(
    app: Flask, client: FlaskClient, auth: AuthActions
) -> None:
    auth.create_user()
    laptop = app.test_client()
    laptop_auth = AuthActions(app, laptop)
    laptop_auth.login(remember=True)
    laptop_session = cookie_value(laptop)
    laptop_remember = cookie_value(laptop, REMEMBER_COOKIE)
    assert laptop_session is not None
    assert laptop_remember is not None
    auth.login()  # the phone, where the password is changed

    response = client.post(
        "/account/",
        data={
            "current_password": GOOD_PASSWORD,
            "new_password": NEW_PASSWORD,
            "new_password_confirm": NEW_PASSWORD,
            "csrf_token": auth.csrf("/account/"),
        },
    )

    assert response.status_code == HTTPStatus.SEE_OTHER
    assert not is_signed_in(with_session(app, laptop_session))
    assert not is_signed_in(with_remember(app, laptop_remember))
    assert is_signed_in(client)
    with app.app_context():
        uid = user_id(app, "alice@example.com")
        assert sessions.remember_tokens_for(uid) == 0
        assert len(sessions.list_user_sessions(uid)) == 1


def test_revoke_user_sessions_signs_out_every_device(
    app: Flask, client: FlaskClient, auth: AuthActions
) -> None:
    # The one call an admin's "sign out everywhere" is built on.
    auth.create_user()
    auth.login(remember=True)
    other = app.test_client()
    AuthActions(app, other).login()
    uid = user_id(app, "alice@example.com")

    with app.test_request_context():
        removed = sessions.revoke_user_sessions(uid)

    assert removed == 2
    assert not is_signed_in(other)
    assert not is_signed_in(client)  # the remember cookie is dead too


def test_disabling_an_account_signs_it_out(
    app: Flask, client: FlaskClient, auth: AuthActions
) -> None:
    auth.create_user()
    auth.login()

    set_user(app, "alice@example.com", active=False)

    assert not is_signed_in(client)


# --------------------------------------------------- Flask-Login's own remember cookie
def test_a_forged_flask_login_remember_cookie_logs_nobody_in(app: Flask, auth: AuthActions) -> None:
    # Flask-Login's cookie is `<user id>|<hmac>` under SECRET_KEY, valid a year and not
    # revocable; even forged with the real key, it must not authenticate.
    uid = auth.create_user()
    with app.app_context():
        forged = encode_cookie(str(uid))
    attacker = app.test_client()
    attacker.set_cookie("remember_token", forged)

    response = attacker.get("/")

    assert response.status_code == HTTPStatus.FOUND
    assert response.headers["Location"].startswith("/auth/login")


def test_login_page_csrf_token_does_not_survive_the_sign_in(
    app: Flask, client: FlaskClient, auth: AuthActions
) -> None:
    # Pre-login data is discarded with the pre-login session (login CSRF, fixation).
    auth.create_user()
    before = csrf_token_from(client.get("/auth/login").get_data(as_text=True))
    auth.login()

    response = client.post("/auth/logout", data={"csrf_token": before})

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert is_signed_in(client)
