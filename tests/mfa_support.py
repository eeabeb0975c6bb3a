"""Helpers for the 2FA, reset and session tests: a TOTP clock, enrolment, two-step login."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from html import unescape

import pyotp
import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from tests.conftest import GOOD_PASSWORD, AuthActions, Outbox, csrf_token_from

SECRET_RE = re.compile(r'id="totp-secret">([A-Z2-7]+)<')
RECOVERY_RE = re.compile(r"<li><code>([A-Z2-7]{5}(?:-[A-Z2-7]{5}){4})</code></li>")
NONCE_RE = re.compile(r'name="nonce" type="hidden" value="([^"]+)"|name="nonce" value="([^"]+)"')


@dataclass
class Clock:
    """The time the 2FA code checks see; each test moves it on by whole TOTP steps."""

    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    @classmethod
    def install(cls, monkeypatch: pytest.MonkeyPatch) -> Clock:
        clock = cls()
        for module in ("bastion.accounts.mfa", "bastion.accounts.pending_login"):
            monkeypatch.setattr(f"{module}.utcnow", lambda: clock.now)
        return clock

    def tick(self, seconds: float = 30) -> None:
        self.now += timedelta(seconds=seconds)

    def code(self, secret: str) -> str:
        """The code an authenticator app shows now; moves on a step first (no replay)."""
        self.tick()
        return pyotp.TOTP(secret).at(self.now)

    def wrong_codes(self, secret: str, count: int) -> list[str]:
        """`count` six-digit codes that no step in the accepted window shows right now."""
        totp = pyotp.TOTP(secret)
        valid = {totp.at(self.now + timedelta(seconds=30 * k)) for k in (-1, 0, 1)}
        return [code for code in (f"{n:06d}" for n in range(count + 3)) if code not in valid][
            :count
        ]


@dataclass(frozen=True)
class Enrolled:
    secret: str
    recovery_codes: list[str]


def enrol(client: FlaskClient, clock: Clock) -> Enrolled:
    """Turn TOTP on for the signed-in user through the pages, as a person would."""
    page = client.get("/account/2fa/setup")
    assert page.status_code == 200, page.status_code
    html = page.get_data(as_text=True)
    match = SECRET_RE.search(html)
    assert match, "the setup page shows no secret"
    secret = match.group(1)
    done = client.post(
        "/account/2fa/setup",
        data={"code": clock.code(secret), "csrf_token": csrf_token_from(html)},
    )
    assert done.status_code == 200, done.get_data(as_text=True)
    codes = RECOVERY_RE.findall(done.get_data(as_text=True))
    assert len(codes) == 10
    return Enrolled(secret=secret, recovery_codes=codes)


def nonce_from(html: str) -> str:
    match = NONCE_RE.search(html)
    assert match, "page has no nonce"
    return unescape(match.group(1) or match.group(2))


def second_step(client: FlaskClient, code: str) -> TestResponse:
    """Post `code` to the 2FA step with the page's own CSRF token and nonce."""
    page = client.get("/auth/login/2fa")
    html = page.get_data(as_text=True)
    return client.post(
        "/auth/login/2fa",
        data={"code": code, "nonce": nonce_from(html), "csrf_token": csrf_token_from(html)},
    )


def login_2fa(
    auth: AuthActions,
    code: str,
    email: str = "alice@example.com",
    password: str = GOOD_PASSWORD,
) -> TestResponse:
    first = auth.login(email, password)
    assert first.status_code == 303, first.status_code
    assert first.headers["Location"] == "/auth/login/2fa"
    return second_step(auth.client, code)


class NewMail:
    """The mails sent since this object was made (the outbox outlives a single test)."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.before = len(outbox.messages())

    def messages(self) -> list[EmailMessage]:
        return self.outbox.messages()[self.before :]

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.messages() if m["To"] == address]

    def subjects(self, address: str) -> list[str]:
        return [m["Subject"] for m in self.to(address)]
