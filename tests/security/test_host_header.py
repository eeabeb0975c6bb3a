"""A forged `Host` or `X-Forwarded-Host` never reaches a mailed link.

Control proven: every link the app mails is built from `BASTION_PUBLIC_URL`
(accounts/service.py `Site`, `_link`; accounts/lifecycle.py `_link`), never from the
request's host, whether a client names it in `Host` or in a forwarded header, and even
behind a trusted proxy (app.py `ProxyFix`). Each flow that mails a link runs with the
forged headers on every one of its requests, then every mail in the outbox is read.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from email.message import EmailMessage
from http import HTTPStatus
from typing import Any

import pytest
from flask import Flask

from bastion.settings import Settings
from tests.conftest import GOOD_PASSWORD, AuthActions, HttpsClient, Outbox
from tests.security.helpers import user_id

EVIL = "evil.example"
BOB = "bob@example.com"
ADMIN = "admin@example.com"
# Absolute URLs of any scheme, as a mail client would make them clickable.
LINK_RE = re.compile(r"[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)
# One wrong password locks the account, so the lock mail costs one request.
LOCK_AT_ONCE = {"lockout_threshold": 1}
pytestmark = pytest.mark.settings(**LOCK_AT_ONCE)

FORGERIES = [
    # The Host allow-list refuses evil.example (security/test_hosts.py); here an operator
    # has listed it, as for an alias name, and the links must still name the public URL.
    pytest.param(
        {"Host": EVIL},
        id="listed-host",
        marks=pytest.mark.settings(**LOCK_AT_ONCE, trusted_hosts=f"localhost,{EVIL}"),
    ),
    pytest.param({"X-Forwarded-Host": EVIL, "Forwarded": f"host={EVIL}"}, id="forwarded-host"),
    pytest.param(
        {"X-Forwarded-Host": EVIL, "X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"},
        id="forwarded-host-behind-a-trusted-proxy",
        # The parameter's settings marker replaces the module's: repeat the lockout setting.
        marks=pytest.mark.settings(**LOCK_AT_ONCE, trusted_proxies=1),
    ),
]


class ForgingClient(HttpsClient):
    """A browser whose every request carries the attacker's host headers."""

    def __init__(self, *args: Any, forged: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.forged = forged

    def open(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["headers"] = {**self.forged, **dict(kwargs.get("headers") or {})}
        return super().open(*args, **kwargs)


def sign_in(auth: AuthActions, email: str, role: str = "user") -> None:
    auth.create_user(email, role=role)
    with auth.login(email) as response:  # closing it sends the new-browser notice
        assert response.status_code == HTTPStatus.SEE_OTHER


# Each flow returns the address its link went to.
def register_a_new_address(auth: AuthActions) -> str:
    assert auth.register(BOB).status_code == HTTPStatus.SEE_OTHER
    return BOB


def register_a_taken_address(auth: AuthActions) -> str:
    auth.create_user(BOB)
    assert auth.register(BOB).status_code == HTTPStatus.SEE_OTHER
    return BOB


def request_a_password_reset(auth: AuthActions) -> str:
    auth.create_user(BOB)
    data = {"email": BOB, "csrf_token": auth.csrf("/auth/reset")}
    with auth.client.post("/auth/reset", data=data) as response:  # mailed once closed
        assert response.status_code == HTTPStatus.OK
    return BOB


def change_the_email_address(auth: AuthActions) -> str:
    sign_in(auth, BOB)
    new_email = "bob.new@example.com"
    data = {
        "password": GOOD_PASSWORD,
        "new_email": new_email,
        "csrf_token": auth.csrf("/account/email"),
    }
    with auth.client.post("/account/email", data=data) as response:  # mailed once closed
        assert response.status_code == HTTPStatus.SEE_OTHER
    return new_email


def lock_the_account(auth: AuthActions) -> str:
    auth.create_user(BOB)
    with auth.login(BOB, "not the password at all") as response:  # mailed once closed
        assert response.status_code == HTTPStatus.UNAUTHORIZED
    return BOB


def invite_someone(auth: AuthActions) -> str:
    sign_in(auth, ADMIN, role="admin")
    invited = "carol@example.com"
    data = {"email": invited, "csrf_token": auth.csrf("/admin/users/invite")}
    assert auth.client.post("/admin/users/invite", data=data).status_code == HTTPStatus.SEE_OTHER
    return invited


def force_a_password_reset(auth: AuthActions) -> str:
    auth.create_user(BOB)
    sign_in(auth, ADMIN, role="admin")
    path = f"/admin/users/{user_id(auth.app, BOB)}/password/reset"
    assert auth.client.post(path, data={"csrf_token": auth.csrf("/")}).status_code == (
        HTTPStatus.SEE_OTHER
    )
    return BOB


FLOWS: dict[str, Callable[[AuthActions], str]] = {
    flow.__name__: flow
    for flow in (
        register_a_new_address,
        register_a_taken_address,
        request_a_password_reset,
        change_the_email_address,
        lock_the_account,
        invite_someone,
        force_a_password_reset,
    )
}


def full_text(mail: EmailMessage) -> str:
    headers = "".join(f"{name}: {value}\n" for name, value in mail.items())
    body: str = mail.get_content()
    return headers + "\n" + body


@pytest.mark.parametrize("forged", FORGERIES)
@pytest.mark.parametrize("flow", list(FLOWS))
def test_mailed_links_use_the_public_url_whatever_host_the_request_names(
    app: Flask, outbox: Outbox, forged: dict[str, str], flow: str
) -> None:
    app.test_client_class = ForgingClient
    auth = AuthActions(app, app.test_client(forged=forged))
    settings: Settings = app.extensions["bastion.settings"]
    public = settings.public_url.rstrip("/") + "/"

    recipient = FLOWS[flow](auth)

    assert outbox.last_link(recipient).startswith(public)
    for mail in outbox.messages():
        text = full_text(mail)
        assert EVIL not in text, text
        for link in LINK_RE.findall(text):
            assert link.startswith(public), link
