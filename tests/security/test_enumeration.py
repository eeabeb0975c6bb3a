"""Account enumeration: login and registration answer the same whether an account exists.

Controls proven (accounts/service.py `authenticate`, `register`; accounts/views.py): one
message for every login failure, exactly one argon2 verify on every path (a dummy hash for
unknown users, so timing matches), and registration that neither reveals nor rewrites an
existing account.
"""

from __future__ import annotations

import re
from http import HTTPStatus

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from bastion.security import passwords
from bastion.security.passwords import verify_count
from tests.conftest import GOOD_PASSWORD, AuthActions
from tests.security.helpers import count_users, login_form, set_user

WRONG_PASSWORD = "definitely not the right one"
VOLATILE = [
    re.compile(r'name="csrf_token" type="hidden" value="[^"]+"'),
    re.compile(r'name="csrf_token" value="[^"]+"'),
    re.compile(r"nonce-[A-Za-z0-9_-]+"),
    re.compile(r'nonce="[^"]+"'),
]


def comparable(response: TestResponse, typed_email: str) -> str:
    """The body with the per-request parts and the echoed address replaced by placeholders."""
    body = response.get_data(as_text=True)
    for pattern in VOLATILE:
        body = pattern.sub("<volatile>", body)
    return body.replace(typed_email, "<typed email>")


def attempt(client: FlaskClient, auth: AuthActions, email: str, password: str) -> TestResponse:
    return client.post("/auth/login", data=login_form(auth.csrf(), email, password))


def setup_accounts(app: Flask, auth: AuthActions) -> None:
    auth.create_user("alice@example.com")
    auth.create_user("dave@example.com", name="Dave Disabled")
    set_user(app, "dave@example.com", active=False)


def test_login_failures_are_indistinguishable(
    app: Flask, client: FlaskClient, auth: AuthActions
) -> None:
    setup_accounts(app, auth)
    cases = {
        "unknown": ("nobody@example.com", GOOD_PASSWORD),
        "wrong password": ("alice@example.com", WRONG_PASSWORD),
        "disabled, right password": ("dave@example.com", GOOD_PASSWORD),
        "disabled, wrong password": ("dave@example.com", WRONG_PASSWORD),
        "malformed address": ("not-an-address", GOOD_PASSWORD),
    }

    answers = {name: attempt(client, auth, *creds) for name, creds in cases.items()}

    statuses = {name: response.status_code for name, response in answers.items()}
    assert set(statuses.values()) == {HTTPStatus.UNAUTHORIZED}, statuses
    bodies = {name: comparable(answers[name], cases[name][0]) for name in cases}
    reference = bodies["unknown"]
    assert "Invalid email or password." in reference
    for name, body in bodies.items():
        assert body == reference, f"{name!r} answers differently from an unknown address"
    header_sets = {
        name: sorted(k for k, _ in response.headers if k != "Set-Cookie")
        for name, response in answers.items()
    }
    assert len({tuple(keys) for keys in header_sets.values()}) == 1
    assert client.get("/").status_code == HTTPStatus.FOUND


def test_every_login_path_costs_exactly_one_password_verify(
    app: Flask, client: FlaskClient, auth: AuthActions
) -> None:
    # Same work either way: no timing oracle for "this address has an account".
    setup_accounts(app, auth)
    cases = {
        "unknown": ("nobody@example.com", GOOD_PASSWORD),
        "wrong password": ("alice@example.com", WRONG_PASSWORD),
        "disabled": ("dave@example.com", GOOD_PASSWORD),
        "malformed address": ("not-an-address", GOOD_PASSWORD),
        "success": ("alice@example.com", GOOD_PASSWORD),
    }

    for name, (email, password) in cases.items():
        token = auth.csrf()
        before = verify_count()
        client.post("/auth/login", data=login_form(token, email, password))
        assert verify_count() - before == 1, name


def test_registration_answers_the_same_for_an_existing_address(
    app: Flask, auth: AuthActions
) -> None:
    auth.create_user("alice@example.com")
    before = count_users(app)

    new = auth.register(email="carol@example.com", name="Carol Example")
    existing = auth.register(email="alice@example.com", name="Carol Example")
    existing_other_case = auth.register(email="Alice@Example.COM", name="Carol Example")

    assert new.status_code == existing.status_code == existing_other_case.status_code
    assert new.status_code == HTTPStatus.SEE_OTHER
    assert new.headers["Location"] == existing.headers["Location"]
    assert new.headers["Location"] == existing_other_case.headers["Location"]
    assert new.get_data() == existing.get_data() == existing_other_case.get_data()
    assert count_users(app) == before + 1  # only carol: nothing extra for alice


def test_registration_with_an_existing_address_changes_nothing(
    app: Flask, client: FlaskClient, auth: AuthActions
) -> None:
    # An attacker re-registering someone's address must not reset their password or name.
    auth.create_user("alice@example.com")

    auth.register(email="alice@example.com", name="Mallory", password="mallory chose this one")

    assert auth.login("alice@example.com", GOOD_PASSWORD).status_code == HTTPStatus.SEE_OTHER
    assert "Mallory" not in client.get("/").get_data(as_text=True)
    auth.logout()
    assert auth.login("alice@example.com", "mallory chose this one").status_code == (
        HTTPStatus.UNAUTHORIZED
    )


def test_registration_costs_one_hash_either_way(
    app: Flask, auth: AuthActions, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth.create_user("alice@example.com")
    calls: list[str] = []
    original = passwords.hash_password

    def counting(password: str) -> str:
        calls.append(password)
        return original(password)

    monkeypatch.setattr(passwords, "hash_password", counting)

    auth.register(email="carol@example.com", name="Carol Example")
    new_cost = len(calls)
    auth.register(email="alice@example.com", name="Carol Example")
    existing_cost = len(calls) - new_cost

    assert new_cost == existing_cost == 1
