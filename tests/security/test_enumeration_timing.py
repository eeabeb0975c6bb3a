"""Anti-enumeration: an unknown address, a wrong password and a locked account look alike.

Controls proven: the login answer (status, page, headers apart from per-request nonces and
tokens) is identical on the three paths; each path performs exactly one argon2 verify
(accounts/service.py authenticate(), security/passwords.py dummy hash); registration
answers the same whether the address has an account; and one coarse timing test with the
real OWASP argon2 parameters (the fine distribution belongs in bench/).
"""

from __future__ import annotations

import random
import re
import statistics
import time
from http import HTTPStatus
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from bastion.accounts.models import User
from bastion.core.db import db
from bastion.security import lockout, passwords
from tests.conftest import GOOD_PASSWORD, AuthActions, csrf_token_from

KNOWN = "alice@example.com"
LOCKED = "carol@example.com"
UNKNOWN = "nobody@example.com"
WRONG = "not the password at all"
ROOMY = {
    "ratelimit_ip_login": "100000 per minute",
    "ratelimit_ip_user_login": "100000 per minute",
    "ratelimit_user_login": "100000 per hour",
}
pytestmark = pytest.mark.settings(**ROOMY)

_VOLATILE = [
    (re.compile(r'name="csrf_token" type="hidden" value="[^"]+"'), 'name="csrf_token" value=""'),
    (re.compile(r'nonce="[^"]+"'), 'nonce=""'),
    (re.compile(r"'nonce-[^']+'"), "'nonce-'"),
]


def _normalised(text: str) -> str:
    for pattern, replacement in _VOLATILE:
        text = pattern.sub(replacement, text)
    return text


class Poster:
    """One browser posting the login form with its own (reused) CSRF token."""

    def __init__(self, app: Flask) -> None:
        self.client: FlaskClient = app.test_client()
        self.token = csrf_token_from(self.client.get("/auth/login").get_data(as_text=True))

    def post(self, email: str, password: str) -> Any:
        data = {"email": email, "password": password, "csrf_token": self.token}
        response = self.client.post("/auth/login", data=data)
        response.close()
        return response


def _lock(app: Flask, email: str) -> None:
    poster = Poster(app)
    for _ in range(10):
        assert poster.post(email, WRONG).status_code == HTTPStatus.UNAUTHORIZED


def _unlock(app: Flask, email: str) -> None:
    with app.app_context():
        user_id = db.session.scalar(select(User.id).where(User.email == email))
        assert user_id is not None
        lockout.reset(user_id)
        db.session.commit()


@pytest.fixture
def accounts(app: Flask, auth: AuthActions) -> None:
    auth.create_user(KNOWN)
    auth.create_user(LOCKED, name="Carol Example")
    _lock(app, LOCKED)


def _answer(response: Any, email: str) -> tuple[int, str, dict[str, str], list[str]]:
    """The answer minus nonces, CSRF token and the address the form echoes back."""
    headers = {
        name: _normalised(value)
        for name, value in response.headers
        # Content-Length follows the echoed address; the body itself is compared.
        if name.lower() not in {"set-cookie", "x-request-id", "content-length"}
    }
    cookies = sorted(
        header.split("=", 1)[0] + ";" + header.split(";", 1)[-1]
        for header in response.headers.getlist("Set-Cookie")
    )
    body = _normalised(response.get_data(as_text=True)).replace(email, "EMAIL")
    return response.status_code, body, headers, cookies


def test_login_answers_identically_on_every_failure_path(app: Flask, accounts: None) -> None:
    unknown = _answer(Poster(app).post(UNKNOWN, GOOD_PASSWORD), UNKNOWN)
    wrong = _answer(Poster(app).post(KNOWN, WRONG), KNOWN)
    locked = _answer(Poster(app).post(LOCKED, GOOD_PASSWORD), LOCKED)  # even the right password

    assert unknown[0] == HTTPStatus.UNAUTHORIZED
    assert unknown == wrong == locked


@pytest.mark.parametrize(
    ("email", "password"),
    [(UNKNOWN, GOOD_PASSWORD), (KNOWN, WRONG), (LOCKED, GOOD_PASSWORD), (LOCKED, WRONG)],
    ids=["unknown", "wrong-password", "locked-right-password", "locked-wrong-password"],
)
def test_every_failure_path_verifies_exactly_once(
    app: Flask, accounts: None, email: str, password: str
) -> None:
    poster = Poster(app)
    before = passwords.verify_count()

    assert poster.post(email, password).status_code == HTTPStatus.UNAUTHORIZED

    assert passwords.verify_count() == before + 1


def test_a_success_verifies_exactly_once_too(app: Flask, accounts: None) -> None:
    poster = Poster(app)
    before = passwords.verify_count()
    assert poster.post(KNOWN, GOOD_PASSWORD).status_code == HTTPStatus.SEE_OTHER
    assert passwords.verify_count() == before + 1


def test_registration_answers_the_same_whether_the_address_exists(
    app: Flask, auth: AuthActions
) -> None:
    auth.create_user(KNOWN)
    auth.register(email="pending@example.com")  # registered, not yet confirmed

    answers = []
    for email in (KNOWN, "pending@example.com", "fresh@example.com"):
        response = auth.register(email=email)
        answers.append((response.status_code, response.headers["Location"]))

    assert answers == [(HTTPStatus.SEE_OTHER, "/auth/check-email")] * 3


# ------------------------------------------------------------------------- the timing
ROUNDS = 67  # each round times the three paths once, in random order: 201 samples


@pytest.mark.slow
def test_failure_paths_take_the_same_time_with_real_argon2(app: Flask, accounts: None) -> None:
    """Coarse: the median of per-round time ratios within 0.8-1.25, >= 200 samples.

    Ratios are taken within a round (the three paths back to back), so the load of a
    shared machine drifting over the run cancels out instead of skewing one path.
    """
    passwords.configure(passwords.OWASP_PARAMETERS)
    try:
        with app.app_context():  # stored hashes at the real cost, like the dummy's
            for user in db.session.scalars(select(User)):
                user.password_hash = passwords.hash_password(GOOD_PASSWORD)
            db.session.commit()
        paths = {
            "unknown": (Poster(app), UNKNOWN, GOOD_PASSWORD),
            "wrong": (Poster(app), KNOWN, WRONG),
            "locked": (Poster(app), LOCKED, GOOD_PASSWORD),
        }
        for poster, email, password in paths.values():  # warm up each path once
            poster.post(email, password)
        _unlock(app, KNOWN)
        shuffle = random.Random(4242).shuffle
        rounds: list[dict[str, float]] = []
        for _ in range(ROUNDS):
            order = list(paths)
            shuffle(order)
            timed: dict[str, float] = {}
            for name in order:
                poster, email, password = paths[name]
                started = time.perf_counter()
                response = poster.post(email, password)
                timed[name] = time.perf_counter() - started
                assert response.status_code == HTTPStatus.UNAUTHORIZED
            rounds.append(timed)
            _unlock(app, KNOWN)  # untimed: keep the known account from locking
    finally:
        passwords.configure(passwords.HashParameters(time_cost=1, memory_cost=8, parallelism=1))

    medians = {name: statistics.median(r[name] for r in rounds) for name in paths}
    for name in ("wrong", "locked"):
        ratio = statistics.median(r[name] / r["unknown"] for r in rounds)
        assert 0.8 <= ratio <= 1.25, f"{name}/unknown median ratio {ratio:.3f}: {medians}"
