"""No secret reaches a log line or an audit row, whatever path it travels.

Controls proven: the access log writes the route pattern for token-bearing URLs
(core/request_log.py); the structlog redaction of secret-named keys (core/logging.py); the
audit service dropping secret-named details (audit/service.py); and every audited account
path (register, confirm, login failure and success, remember-me, password change, CSRF
failure, logout) keeping passwords, tokens and cookies to itself; a database error's log
line without its SQL parameters (core/db.py `hide_parameters`). Every line of a signed-in
request names its user, and no anonymous request inherits an earlier one's
(core/request_log.py `bind_user`, `begin_request`). A request refused for a
missing permission is audited once, with its caller, address and endpoint, and without
its cookie, CSRF token or query string (security/denials.py).
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus

import pytest
import structlog
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse
from werkzeug.wrappers import Response

from bastion.accounts.models import User
from bastion.app import LOOKUP_ENGINE
from bastion.audit import Actor, EventTag, record_failure
from bastion.core.db import db
from bastion.security.policy import login_required, public
from bastion.security.sessions import REMEMBER_COOKIE
from tests.conftest import GOOD_PASSWORD, AuthActions, Outbox, csrf_token_from
from tests.security.conftest import Captured
from tests.security.helpers import (
    audit_row_text,
    audit_rows,
    cookie_value,
    raw_id,
    with_remember,
)

PASSWORD = "quixotic-marmalade-telescope-48151"
WRONG_PASSWORD = "zeppelin-harmonica-wrong-62342"
NEW_PASSWORD = "obsidian-lighthouse-new-91827"
FORGED_CSRF = "forged-csrf-token-value-ZX81-from-evil-example"
QUERY_SECRET = "query-secret-7c41e0-in-a-denied-url"
CALLER_IP = "198.51.100.23"
# What create_user would insert: an argon2id PHC string, salt and hash included.
STORED_HASH = (
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdC1vZi10aGUtcmFjZQ$aGFzaC10aGF0LW11c3Qtbm90LWxlYWs"
)


def secret_parts(value: str) -> list[str]:
    """A signed value and its pieces: the whole, the random id and the signature."""
    parts = [value]
    if "." in value:
        parts += [raw_id(value), value.rsplit(".", 1)[1]]
    return parts


def assert_nowhere(app: Flask, logs: Captured, secrets: set[str]) -> None:
    text = logs.text
    rows = [audit_row_text(row) for row in audit_rows(app)]
    assert text, "nothing was logged: the capture is broken"
    assert rows, "nothing was audited: the flow is broken"
    for secret in secrets:
        assert secret not in text, f"a secret reached the log: {secret[:6]}…"
        for row in rows:
            assert secret not in row, f"a secret reached audit_events: {secret[:6]}…"


def test_secrets_fed_through_every_audited_path_are_never_logged(
    app: Flask, client: FlaskClient, auth: AuthActions, outbox: Outbox, logs: Captured
) -> None:
    secrets: set[str] = {PASSWORD, WRONG_PASSWORD, NEW_PASSWORD, FORGED_CSRF}

    # Register (its CSRF token and password).
    register_token = auth.csrf("/auth/register")
    secrets.add(register_token)
    registered = client.post(
        "/auth/register",
        data={
            "email": "zoe@example.com",
            "name": "Zoe Example",
            "password": PASSWORD,
            "password_confirm": PASSWORD,
            "csrf_token": register_token,
        },
    )
    assert registered.status_code == HTTPStatus.SEE_OTHER

    # Confirm (the one-time token in the URL).
    link = outbox.last_link("zoe@example.com")
    confirm_token = link.rsplit("/", 1)[1]
    secrets.add(confirm_token)
    path = "/auth/confirm/" + confirm_token
    page = client.get(path)
    confirm_csrf = csrf_token_from(page.get_data(as_text=True))
    secrets.add(confirm_csrf)
    assert client.post(path, data={"csrf_token": confirm_csrf}).status_code == HTTPStatus.SEE_OTHER
    assert client.get(path).status_code == HTTPStatus.BAD_REQUEST  # replayed: logged as failure

    # A failed and a successful login, with "remember me".
    assert auth.login("zoe@example.com", WRONG_PASSWORD).status_code == HTTPStatus.UNAUTHORIZED
    assert auth.login("zoe@example.com", PASSWORD, remember=True).status_code == (
        HTTPStatus.SEE_OTHER
    )
    session_cookie = cookie_value(client)
    remember_cookie = cookie_value(client, REMEMBER_COOKIE)
    assert session_cookie is not None
    assert remember_cookie is not None
    secrets.update(secret_parts(session_cookie))
    secrets.update(secret_parts(remember_cookie))

    # The remember cookie restoring a session on another browser.
    other = with_remember(app, remember_cookie)
    assert other.get("/").status_code == HTTPStatus.OK
    for name in ("__Host-session", REMEMBER_COOKIE):
        value = cookie_value(other, name)
        assert value is not None
        secrets.update(secret_parts(value))

    # A password change, a forged CSRF token, then logout.
    change_csrf = auth.csrf("/account/")
    secrets.add(change_csrf)
    changed = client.post(
        "/account/",
        data={
            "current_password": PASSWORD,
            "new_password": NEW_PASSWORD,
            "new_password_confirm": NEW_PASSWORD,
            "csrf_token": change_csrf,
        },
    )
    assert changed.status_code == HTTPStatus.SEE_OTHER
    new_cookie = cookie_value(client)
    assert new_cookie is not None
    secrets.update(secret_parts(new_cookie))
    forged = client.post("/auth/logout", data={"csrf_token": FORGED_CSRF})
    assert forged.status_code == HTTPStatus.BAD_REQUEST
    logout_csrf = auth.csrf("/")
    secrets.add(logout_csrf)
    assert client.post("/auth/logout", data={"csrf_token": logout_csrf}).status_code == (
        HTTPStatus.SEE_OTHER
    )

    events = {row.event for row in audit_rows(app)}
    for expected in (
        EventTag.REGISTER,
        EventTag.CONFIRM,
        EventTag.LOGIN_FAILURE,
        EventTag.LOGIN_SUCCESS,
        EventTag.PASSWORD_CHANGE,
        EventTag.CSRF_FAILURE,
        EventTag.LOGOUT,
    ):
        assert expected.value in events
    assert_nowhere(app, logs, secrets)


def test_token_urls_are_logged_as_their_route_pattern(
    client: FlaskClient, auth: AuthActions, outbox: Outbox, logs: Captured
) -> None:
    auth.register()
    token = outbox.last_link().rsplit("/", 1)[1]
    path = "/auth/confirm/" + token

    page = client.get(path)
    client.post(path, data={"csrf_token": csrf_token_from(page.get_data(as_text=True))})
    client.post(path, data={})  # a CSRF failure on the same URL: audited and logged
    client.put(path)  # 405: routing failed, yet the token stays out of the log
    client.get("/auth/confirm/not-a-real-token")
    client.get("/setup/" + token)

    access = [r for r in logs.records() if r.get("logger") == "bastion.access"]
    confirm_lines = [r for r in access if str(r["path"]).startswith("/auth/confirm")]
    assert len(confirm_lines) == 5
    assert {r["path"] for r in confirm_lines} == {"/auth/confirm/<token>"}
    assert "not-a-real-token" not in logs.text
    assert token not in logs.text


def test_query_strings_are_not_logged(client: FlaskClient, logs: Captured) -> None:
    client.get("/auth/login?next=/account/&secret_marker=q-1f9e8d7c6b5a")

    access = [r for r in logs.records() if r.get("logger") == "bastion.access"]
    assert access
    assert "q-1f9e8d7c6b5a" not in logs.text


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_denied_request_is_audited_once_with_who_what_and_where_but_no_secret(
    app: Flask, client: FlaskClient, auth: AuthActions, logs: Captured, method: str
) -> None:
    client.environ_base["REMOTE_ADDR"] = CALLER_IP
    alice = auth.create_user()
    auth.login()
    csrf_token = auth.csrf("/")
    session_cookie = cookie_value(client)
    assert session_cookie is not None
    url = f"/admin/users/invite?token={QUERY_SECRET}"
    form = {"csrf_token": csrf_token} if method == "POST" else None

    response = client.open(url, method=method, data=form)

    assert response.status_code == HTTPStatus.FORBIDDEN
    [denial] = audit_rows(app, EventTag.AUTHZ_DENIED.value)
    assert denial.actor_id == alice
    assert denial.actor_email == "alice@example.com"
    assert denial.ip == CALLER_IP
    assert denial.target == "admin.invite"  # the endpoint, never the URL and its query
    assert denial.outcome == "denied"
    assert json.loads(denial.details) == {"missing": ["admin:users:manage"]}
    assert denial.request_id == response.headers["X-Request-ID"]
    secrets = {QUERY_SECRET, csrf_token, *secret_parts(session_cookie)}
    row = audit_row_text(denial)
    for secret in secrets:
        assert secret not in row, f"a secret reached the denial: {secret[:6]}…"
    assert_nowhere(app, logs, secrets)  # nor its log line, nor any other row


def test_a_database_error_is_logged_without_its_sql_parameters(
    app: Flask, client: FlaskClient, auth: AuthActions, logs: Captured
) -> None:
    # A registration race: the address was taken between create_user's check and its
    # insert. SQLAlchemy's message ends in `[parameters: (...)]`, the password hash included,
    # unless the engine hides them; the unexpected-error handler logs it with its traceback.
    auth.create_user()

    def racing_insert() -> Response:
        db.session.add(
            User(email="alice@example.com", name="Racer", password_hash=STORED_HASH, role="user")
        )
        db.session.flush()
        return Response("the insert was expected to fail")

    app.add_url_rule("/__racing-insert", "racing_insert", public(racing_insert))

    response = client.get("/__racing-insert")

    assert response.status_code == HTTPStatus.INTERNAL_SERVER_ERROR
    assert STORED_HASH not in response.get_data(as_text=True)
    [error] = [r for r in logs.records() if r.get("event") == "unhandled exception"]
    assert "IntegrityError" in json.dumps(error)  # the failure itself is still on record
    for part in STORED_HASH.split("$")[-2:]:  # neither its salt nor its hash
        assert part not in logs.text


def test_every_engine_hides_sql_parameters(app: Flask) -> None:
    # The request engine (Alembic migrates through it too) and, on PostgreSQL, the
    # user-lookup pool: an error on any of them must not carry its parameters into a log.
    with app.app_context():
        engines = [db.engine, app.extensions[LOOKUP_ENGINE]]

    assert all(engine.hide_parameters for engine in engines if engine is not None)


def lines_of(logs: Captured, response: TestResponse) -> list[dict[str, object]]:
    """The log lines written while answering `response` (by its request id)."""
    request_id = response.headers["X-Request-ID"]
    return [r for r in logs.records() if r.get("request_id") == request_id]


def access_line(logs: Captured, response: TestResponse) -> dict[str, object]:
    [line] = [r for r in lines_of(logs, response) if r.get("logger") == "bastion.access"]
    return line


def test_every_line_of_a_signed_in_request_names_the_user(
    app: Flask, client: FlaskClient, auth: AuthActions, logs: Captured
) -> None:
    # ASVS 16.2.1: who. The view's own lines (structlog and stdlib) and the access line.
    alice = auth.create_user()

    def noisy() -> str:
        structlog.get_logger("bastion.test").info("structlog line from the view")
        logging.getLogger("bastion.stdlib").warning("stdlib line from the view")
        return "ok"

    app.add_url_rule("/__noisy", "noisy", login_required(noisy))

    signing_in = auth.login()
    page = client.get("/__noisy")

    assert page.status_code == HTTPStatus.OK
    assert access_line(logs, signing_in)["user_id"] == alice  # named from the sign-in on
    lines = lines_of(logs, page)
    assert {str(r["event"]) for r in lines} >= {
        "structlog line from the view",
        "stdlib line from the view",
        "request",
    }
    assert all(r.get("user_id") == alice for r in lines)


def test_an_anonymous_request_never_carries_an_earlier_requests_user(
    app: Flask, client: FlaskClient, auth: AuthActions, logs: Captured
) -> None:
    # The test client runs every request on this thread, as a server thread serves one
    # request after another: the user bound for the first must not leak into the next.
    alice = auth.create_user()
    auth.login()
    signed_in = client.get("/")
    stranger = app.test_client().get("/auth/login")
    auth.logout()
    signed_out = client.get("/")

    assert access_line(logs, signed_in)["user_id"] == alice
    assert "user_id" not in access_line(logs, stranger)
    assert signed_out.status_code == HTTPStatus.FOUND  # to the sign-in page
    assert "user_id" not in access_line(logs, signed_out)


def test_secret_named_log_fields_are_redacted(app: Flask, logs: Captured) -> None:
    log = structlog.get_logger("bastion.test")
    values = {
        "password": "redact-me-password-1",
        "new_password": "redact-me-password-2",
        "csrf_token": "redact-me-csrf-3",
        "session_cookie": "redact-me-cookie-4",
        "api_key": "redact-me-key-5",
        "authorization": "Bearer redact-me-6",
        "client_secret": "redact-me-secret-7",
    }

    log.info("login attempt", **values)
    logging.getLogger("bastion.stdlib").info("stdlib", extra={"password": "redact-me-8"})

    line = logs.text
    assert "login attempt" in line
    for value in [*values.values(), "redact-me-8"]:
        assert value not in line


def test_log_lines_cannot_be_forged_with_newlines(app: Flask, logs: Captured) -> None:
    # CR/LF in user input (here a login email) must not start a fake log line.
    client = app.test_client()
    token = csrf_token_from(client.get("/auth/login").get_data(as_text=True))
    forged_line = '{"event": "auth.login.success", "target": "admin@example.com"}'

    client.post(
        "/auth/login",
        data={"email": "x\r\n" + forged_line, "password": "whatever", "csrf_token": token},
    )

    for line in logs.text.splitlines():
        assert line.startswith("{")
        json.loads(line)
        assert not line.startswith(forged_line)


def test_audit_rows_drop_secret_named_details(app: Flask) -> None:
    with app.test_request_context():
        record_failure(
            EventTag.LOGIN_FAILURE,
            Actor(ip="127.0.0.1"),
            target="someone@example.com",
            details={
                "password": "audit-secret-1",
                "csrf_token": "audit-secret-2",
                "remember_cookie": "audit-secret-3",
                "reset_token": "audit-secret-4",
                "known_account": False,
            },
        )

    rows = [audit_row_text(row) for row in audit_rows(app, EventTag.LOGIN_FAILURE.value)]
    assert len(rows) == 1
    assert "known_account" in rows[0]
    for n in range(1, 5):
        assert f"audit-secret-{n}" not in rows[0]


def test_a_password_typed_into_the_email_field_is_not_logged(
    app: Flask, client: FlaskClient, auth: AuthActions, logs: Captured
) -> None:
    # The classic slip: the password goes into the email box (OWASP Logging CS).
    auth.create_user()

    response = client.post(
        "/auth/login",
        data={"email": GOOD_PASSWORD, "password": GOOD_PASSWORD, "csrf_token": auth.csrf()},
    )

    assert response.status_code == HTTPStatus.UNAUTHORIZED
    assert_nowhere(app, logs, {GOOD_PASSWORD})


def test_a_mistyped_one_time_link_does_not_log_its_token(
    app: Flask, client: FlaskClient, logs: Captured
) -> None:
    with app.app_context():
        from bastion.security.tokens import TokenPurpose, issue

        token = issue(TokenPurpose.CONFIRM_EMAIL, "1", email="x@example.com")

    response = client.get(f"/auth/confirm/{token}/extra")  # no such route: a 404

    assert response.status_code == HTTPStatus.NOT_FOUND
    assert token not in logs.text
    assert token.split(".")[0] not in logs.text
