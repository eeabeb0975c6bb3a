"""Mails carry no text a stranger chose: no display name, no User-Agent words.

Controls proven: a display name is chosen by whoever registers, and the address it is
registered with need not be theirs; a mail that greeted by name (confirmation, reset, lock
notice, email change, admin reset) let anyone put a line of text, a link included, into a
Bastion mail to someone else's inbox. Mails greet without it (accounts/service.py,
accounts/lifecycle.py, admin/service.py). The new-device notice goes out after the
password step, before any second factor: it named the browser with the User-Agent header
as sent, so someone holding a stolen password could write to the owner, in a genuine
Bastion mail, asking for the one thing they lack. It now names only listed browsers
(accounts/user_agents.py `describe_for_mail`).
"""

from __future__ import annotations

from http import HTTPStatus

import pytest
from flask import Flask
from flask.testing import FlaskClient

from bastion.accounts.user_agents import UNLISTED, describe_for_mail
from tests.conftest import GOOD_PASSWORD, AuthActions, Outbox
from tests.mfa_support import Clock, enrol

VICTIM = "victim@example.com"
NEW_DEVICE = "New sign-in to your Bastion account"
LURE = "Urgent - verify your account at https://evil.example/login now"


def mail_texts(outbox: Outbox, to: str) -> list[str]:
    return [m.get_content() for m in outbox.messages() if m["To"] == to]


@pytest.mark.settings(lockout_threshold=1)
def test_a_name_given_with_someone_elses_address_never_reaches_their_inbox(
    client: FlaskClient, auth: AuthActions, outbox: Outbox
) -> None:
    assert auth.register(email=VICTIM, name=LURE).status_code == HTTPStatus.SEE_OTHER
    assert auth.register(email=VICTIM, name=LURE).status_code == HTTPStatus.SEE_OTHER
    reset = {"email": VICTIM, "csrf_token": auth.csrf("/auth/reset")}
    with client.post("/auth/reset", data=reset) as answer:  # mailed once closed
        assert answer.status_code == HTTPStatus.OK
    with auth.login(VICTIM, "not the password at all") as answer:  # locks: a notice
        assert answer.status_code == HTTPStatus.UNAUTHORIZED

    texts = mail_texts(outbox, VICTIM)
    assert len(texts) >= 3  # confirmation (twice) and reset at least
    for text in texts:
        assert LURE not in text
        assert "evil.example" not in text


def test_an_email_change_sends_no_name_to_the_address_it_names(
    client: FlaskClient, auth: AuthActions, outbox: Outbox
) -> None:
    auth.create_user(name=LURE)
    auth.login()
    form = {
        "password": GOOD_PASSWORD,
        "new_email": VICTIM,
        "csrf_token": auth.csrf("/account/email"),
    }
    with client.post("/account/email", data=form) as answer:
        assert answer.status_code == HTTPStatus.SEE_OTHER

    texts = mail_texts(outbox, VICTIM)
    assert len(texts) == 1
    assert LURE not in texts[0]


UA_LURE = "Mozilla/5.0 Bastion security: reply with your 6-digit code at evil.example Bot/1.0"
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)


def test_a_password_thief_cannot_write_to_the_owner_through_the_user_agent(
    app: Flask,
    client: FlaskClient,
    auth: AuthActions,
    outbox: Outbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    auth.create_user(VICTIM)
    auth.login(VICTIM)
    enrol(
        client, Clock.install(monkeypatch)
    )  # the owner has a second factor; the thief only the password
    thief = AuthActions(app, app.test_client())
    thief.client.environ_base["HTTP_USER_AGENT"] = UA_LURE
    with thief.login(VICTIM) as answer:  # the password step: the notice goes out now
        assert answer.status_code == HTTPStatus.SEE_OTHER
        assert answer.headers["Location"].startswith("/auth/login/2fa")

    [notice] = [m for m in outbox.messages() if m["Subject"] == NEW_DEVICE][-1:]
    text = notice.get_content()
    assert f"browser: {UNLISTED}" in text
    for word in ("evil.example", "6-digit", "reply"):
        assert word not in text


def test_a_listed_browser_is_still_named_in_the_notice() -> None:
    assert describe_for_mail(CHROME) == "Chrome 120 on Windows 10"
    assert describe_for_mail(UA_LURE) == UNLISTED
    assert describe_for_mail("") == UNLISTED
