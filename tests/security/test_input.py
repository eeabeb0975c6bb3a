"""Hostile input gets a clear 4xx and changes nothing: weak passwords, over-long fields,
invalid UTF-8, SQL metacharacters, unknown API paths.

Controls proven: the NIST SP 800-63B-4 password policy at registration (security/passwords.py
via accounts/service.py), WTForms length and character validators (accounts/forms.py),
bound parameters everywhere (no string-built SQL), JSON errors under /api/ (core/errors.py),
the body limit on chunked bodies (security/body_limit.py `ChunkedBodyLimit`).
"""

from __future__ import annotations

import html
import io
from http import HTTPStatus
from urllib.parse import quote_from_bytes

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.test import TestResponse

from bastion.accounts.models import User
from bastion.core.db import db
from bastion.security.passwords import password_blocklist
from tests.conftest import GOOD_PASSWORD, AuthActions
from tests.security.helpers import count_users, login_form

LOGIN_FAILED = "Invalid email or password."
FORM = "application/x-www-form-urlencoded"
MULTIPART_FORM = "multipart/form-data; boundary=bastion-test-boundary"  # see `multipart`


def page_text(response: TestResponse) -> str:
    return html.unescape(response.get_data(as_text=True))


def assert_clean_refusal(app: Flask, response: TestResponse) -> None:
    """A 4xx with a rendered page (no traceback), and no account written."""
    assert HTTPStatus.BAD_REQUEST <= response.status_code < HTTPStatus.INTERNAL_SERVER_ERROR
    body = response.get_data(as_text=True)
    assert "Traceback" not in body
    assert "<html" in body
    assert count_users(app) == 0


# ------------------------------------------------------------------- weak passwords
@pytest.mark.parametrize(
    ("password", "reason"),
    [
        pytest.param("short pass 1", "Use at least 15 characters.", id="too-short"),
        pytest.param("passwordpassword", "commonly used password", id="block-list"),
        pytest.param("PasswordPassword", "commonly used password", id="block-list-any-case"),
        pytest.param("alwaysandforever", "commonly used password", id="block-list-phrase"),
        pytest.param("zzzzzzzzzzzzzzzzzzzz", "single repeated character", id="repeated-char"),
        pytest.param("qwertyuiopasdfghjkl", "simple sequences", id="keyboard-sequence"),
        pytest.param("abcdefghijklmnop12345", "simple sequences", id="alphabet-digits"),
        pytest.param("BobOrchardBastion", "too close to your name", id="context-words"),
        pytest.param("bob.orchard!bastion", "too close to your name", id="context-email"),
    ],
)
def test_weak_password_is_refused_at_registration_with_the_reason(
    app: Flask, auth: AuthActions, password: str, reason: str
) -> None:
    if "commonly used" in reason:
        assert password.casefold() in password_blocklist()  # the attack uses a listed entry

    response = auth.register(email="bob.orchard@example.com", name="Bob Orchard", password=password)

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert reason in page_text(response)
    assert_clean_refusal(app, response)


def test_a_strong_password_is_accepted(app: Flask, auth: AuthActions) -> None:
    response = auth.register(email="bob.orchard@example.com", name="Bob Orchard")

    assert response.status_code == HTTPStatus.SEE_OTHER
    assert count_users(app) == 1


def test_password_change_applies_the_same_policy(client: FlaskClient, auth: AuthActions) -> None:
    auth.create_user()
    auth.login()

    response = client.post(
        "/account/",
        data={
            "current_password": GOOD_PASSWORD,
            "new_password": "passwordpassword",
            "new_password_confirm": "passwordpassword",
            "csrf_token": auth.csrf("/account/"),
        },
    )

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert "commonly used password" in page_text(response)
    auth.logout()
    assert auth.login(password=GOOD_PASSWORD).status_code == HTTPStatus.SEE_OTHER


# ------------------------------------------------------------------- over-long input
@pytest.mark.parametrize(
    "field",
    [
        pytest.param({"email": "a" * 9988 + "@example.com"}, id="email-10k"),
        pytest.param({"name": "N" * 10_000}, id="name-10k"),
        pytest.param({"password": "p" * 5000}, id="password-5000"),
    ],
)
def test_over_long_registration_input_is_refused_cleanly(
    app: Flask, client: FlaskClient, auth: AuthActions, field: dict[str, str]
) -> None:
    values = {"email": "eve@example.com", "name": "Eve Example", "password": GOOD_PASSWORD}
    values.update(field)

    response = auth.register(**values)

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert_clean_refusal(app, response)


@pytest.mark.parametrize(
    ("email", "password"),
    [
        pytest.param("a" * 9988 + "@example.com", GOOD_PASSWORD, id="email-10k"),
        pytest.param("alice@example.com", "p" * 5000, id="password-5000"),
    ],
)
def test_over_long_login_input_is_a_normal_failure(
    client: FlaskClient, auth: AuthActions, email: str, password: str
) -> None:
    auth.create_user()

    response = client.post("/auth/login", data=login_form(auth.csrf(), email, password))

    assert response.status_code == HTTPStatus.UNAUTHORIZED
    assert "Traceback" not in response.get_data(as_text=True)


# --------------------------------------------------------------------- invalid UTF-8
def register_fields(token: str, **raw: bytes) -> dict[str, bytes]:
    fields = {
        "csrf_token": token.encode(),
        "email": b"eve@example.com",
        "name": b"Eve Example",
        "password": GOOD_PASSWORD.encode(),
        "password_confirm": GOOD_PASSWORD.encode(),
    }
    fields.update(raw)
    return fields


def urlencoded(fields: dict[str, bytes], raw: frozenset[str] = frozenset()) -> bytes:
    """Form-encode, leaving the fields named in `raw` as the bytes given (undecodable)."""
    return b"&".join(
        name.encode() + b"=" + (value if name in raw else quote_from_bytes(value).encode())
        for name, value in fields.items()
    )


def multipart(fields: dict[str, bytes], boundary: str = "bastion-test-boundary") -> bytes:
    lines = []
    for name, value in fields.items():
        lines += [
            f"--{boundary}".encode(),
            f'Content-Disposition: form-data; name="{name}"'.encode(),
        ]
        lines += [b"", value]
    lines += [f"--{boundary}--".encode(), b""]
    return b"\r\n".join(lines)


@pytest.mark.parametrize(
    "raw_name",
    [
        pytest.param(b"\xff\xfe", id="ff-fe"),
        pytest.param(b"Eve \xc3\x28 Example", id="broken-sequence"),
        pytest.param(b"\xed\xa0\x80", id="encoded-surrogate"),
    ],
)
def test_invalid_utf8_in_an_urlencoded_body_is_refused_cleanly(
    app: Flask, client: FlaskClient, auth: AuthActions, raw_name: bytes
) -> None:
    # Werkzeug cannot decode the body at all, so the form arrives empty: a 4xx, nothing kept.
    fields = register_fields(auth.csrf("/auth/register"), name=raw_name)

    response = client.post(
        "/auth/register", data=urlencoded(fields, frozenset({"name"})), content_type=FORM
    )

    assert_clean_refusal(app, response)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param({"name": b"\xff\xfe"}, id="ff-fe-in-name"),
        pytest.param({"name": b"Eve \xc3\x28 Example"}, id="broken-sequence-in-name"),
        pytest.param({"email": b"eve\xff@example.com"}, id="ff-in-email"),
        pytest.param({"name": b"Eve\x00Example"}, id="nul-in-name"),
        pytest.param({"name": b"Eve\x1b[31mExample"}, id="escape-in-name"),
    ],
)
def test_invalid_utf8_in_a_multipart_body_is_refused_with_a_message(
    app: Flask, client: FlaskClient, auth: AuthActions, raw: dict[str, bytes]
) -> None:
    # Multipart fields decode with replacement characters: the validators must catch them.
    fields = register_fields(auth.csrf("/auth/register"), **raw)

    response = client.post(
        "/auth/register",
        data=multipart(fields),
        content_type=MULTIPART_FORM,
    )

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert "characters that are not allowed" in page_text(response)
    assert_clean_refusal(app, response)


@pytest.mark.parametrize("encoded_name", [b"Eve%00Example", b"Eve%0D%0AExample", b"%7F%7F%7F"])
def test_percent_encoded_control_characters_are_refused_with_a_message(
    app: Flask, client: FlaskClient, auth: AuthActions, encoded_name: bytes
) -> None:
    fields = register_fields(auth.csrf("/auth/register"), name=encoded_name)

    response = client.post(
        "/auth/register", data=urlencoded(fields, frozenset({"name"})), content_type=FORM
    )

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert "characters that are not allowed" in page_text(response)
    assert_clean_refusal(app, response)


def test_invalid_utf8_in_the_login_form_signs_nobody_in(
    client: FlaskClient, auth: AuthActions
) -> None:
    auth.create_user()
    fields = {
        "csrf_token": auth.csrf().encode(),
        "email": b"alice@example.com\xff",
        "password": GOOD_PASSWORD.encode() + b"\xfe",
    }

    response = client.post(
        "/auth/login", data=urlencoded(fields, frozenset({"email", "password"})), content_type=FORM
    )

    assert HTTPStatus.BAD_REQUEST <= response.status_code < HTTPStatus.INTERNAL_SERVER_ERROR
    assert "Traceback" not in response.get_data(as_text=True)
    assert client.get("/").status_code == HTTPStatus.FOUND


# ------------------------------------------------------- bodies without Content-Length
def post_chunked(client: FlaskClient, path: str, body: bytes) -> TestResponse:
    """POST `body` as a chunked request would arrive: no Content-Length (gunicorn)."""
    return client.post(
        path,
        input_stream=io.BytesIO(body),
        content_type=FORM,
        headers={"Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )


def test_a_chunked_form_over_the_limit_is_refused_not_cut_short(
    app: Flask, client: FlaskClient, auth: AuthActions
) -> None:
    """werkzeug stops reading a chunked body at the limit without complaint, so the form
    was parsed from its first megabyte: a valid form followed by padding signed up."""
    fields = register_fields(auth.csrf("/auth/register"))
    padding = b"&pad=" + b"x" * app.config["MAX_CONTENT_LENGTH"]

    response = post_chunked(client, "/auth/register", urlencoded(fields) + padding)

    assert response.status_code == HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    assert response.headers["Connection"] == "close"
    assert count_users(app) == 0


def test_a_chunked_form_within_the_limit_is_read_whole(
    app: Flask, client: FlaskClient, auth: AuthActions
) -> None:
    """Exactly the limit is not over it: the form is read to its last byte."""
    fields = register_fields(auth.csrf("/auth/register"))
    body = urlencoded(fields) + b"&pad="
    body += b"x" * (app.config["MAX_CONTENT_LENGTH"] - len(body))

    response = post_chunked(client, "/auth/register", body)

    assert response.status_code == HTTPStatus.SEE_OTHER
    assert count_users(app) == 1


# --------------------------------------------------------- form memory and part limits
@pytest.mark.parametrize("encoding", ["multipart", "urlencoded"])
def test_a_form_with_too_many_fields_is_refused(
    app: Flask, client: FlaskClient, auth: AuthActions, encoding: str
) -> None:
    """MAX_FORM_PARTS (200): thousands of tiny fields cost the parser far more than their
    bytes (werkzeug counts multipart parts only; Bastion counts url-encoded fields too).
    The form is refused whole, before it is parsed; nothing is registered."""
    fields = register_fields(auth.csrf("/auth/register"))
    fields.update({f"extra{n}": b"" for n in range(app.config["MAX_FORM_PARTS"])})
    if encoding == "multipart":
        body = multipart(fields)
        content_type = MULTIPART_FORM
    else:
        body, content_type = urlencoded(fields), FORM

    response = client.post("/auth/register", data=body, content_type=content_type)

    assert response.status_code == HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    assert count_users(app) == 0


def test_a_form_with_just_enough_fields_is_read(
    app: Flask, client: FlaskClient, auth: AuthActions
) -> None:
    fields = register_fields(auth.csrf("/auth/register"))
    fields.update({f"extra{n}": b"" for n in range(app.config["MAX_FORM_PARTS"] - len(fields))})

    response = client.post("/auth/register", data=urlencoded(fields), content_type=FORM)

    assert response.status_code == HTTPStatus.SEE_OTHER
    assert count_users(app) == 1


def test_a_multipart_field_over_the_memory_limit_is_refused(
    app: Flask, client: FlaskClient, auth: AuthActions
) -> None:
    """MAX_FORM_MEMORY_SIZE (256 KiB) holds below the 1 MB body limit: one text part can't
    make the parser hold more than that in memory. (A url-encoded body is read whole, so
    only the 1 MB body limit bounds it.)"""
    big = b"N" * (app.config["MAX_FORM_MEMORY_SIZE"] + 1)
    assert len(big) < app.config["MAX_CONTENT_LENGTH"]
    fields = register_fields(auth.csrf("/auth/register"), name=big)

    response = client.post(
        "/auth/register",
        data=multipart(fields),
        content_type=MULTIPART_FORM,
    )

    assert response.status_code == HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    assert count_users(app) == 0


@pytest.mark.parametrize("path", ["/auth/confirm/%FF%FE", "/auth/confirm/%C3%28", "/setup/%FF"])
def test_invalid_utf8_in_a_path_is_a_clean_4xx(client: FlaskClient, path: str) -> None:
    response = client.get(path)

    assert HTTPStatus.BAD_REQUEST <= response.status_code < HTTPStatus.INTERNAL_SERVER_ERROR
    assert "Traceback" not in response.get_data(as_text=True)


# ------------------------------------------------------------------- SQL injection
@pytest.mark.parametrize(
    ("email", "password"),
    [
        ("' OR 1=1 --", "' OR '1'='1"),
        ("alice@example.com' --", "anything at all here"),
        ("alice@example.com", "' OR '1'='1' --"),
        ('" OR ""="', '" OR ""="'),
        ("alice@example.com'; DROP TABLE users; --", "x"),
        ("' UNION SELECT password_hash FROM users --@example.com", "x"),
    ],
)
def test_sql_metacharacters_in_login_are_a_normal_failure(
    app: Flask, client: FlaskClient, auth: AuthActions, email: str, password: str
) -> None:
    auth.create_user()

    response = client.post("/auth/login", data=login_form(auth.csrf(), email, password))

    assert response.status_code == HTTPStatus.UNAUTHORIZED
    assert LOGIN_FAILED in page_text(response)
    assert count_users(app) == 1  # the table is still there, and unchanged
    assert client.get("/").status_code == HTTPStatus.FOUND


def test_sql_metacharacters_are_stored_as_plain_text(app: Flask, auth: AuthActions) -> None:
    name = "Robert'); DROP TABLE users;--"

    response = auth.register(email="bobby@example.com", name=name)

    assert response.status_code == HTTPStatus.SEE_OTHER
    with app.app_context():
        stored = db.session.scalar(select(User.name).where(User.email == "bobby@example.com"))
    assert stored == name


# ---------------------------------------------------------------------- API errors
def test_unknown_api_path_answers_json_404(client: FlaskClient) -> None:
    response = client.get("/api/x")

    assert response.status_code == HTTPStatus.NOT_FOUND
    assert response.mimetype == "application/json"
    document = response.get_json()
    assert document["status"] == HTTPStatus.NOT_FOUND
    assert "<html" not in response.get_data(as_text=True)


def test_html_404_reveals_no_framework_banner(client: FlaskClient) -> None:
    response = client.get("/no/such/page")

    body = response.get_data(as_text=True)
    assert response.status_code == HTTPStatus.NOT_FOUND
    assert response.mimetype == "text/html"
    for banner in ("Werkzeug", "Flask", "Traceback", "Python"):
        assert banner not in body
