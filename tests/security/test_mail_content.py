"""Mails carry no text a stranger chose: no display name, whoever the mail goes to.

Control proven: a display name is chosen by whoever registers, and the address it is
registered with need not be theirs; a mail that greeted by name (confirmation, reset, lock
notice, email change, admin reset) let anyone put a line of text, a link included, into a
Bastion mail to someone else's inbox. Mails greet without it (accounts/service.py,
accounts/lifecycle.py, admin/service.py).
"""

from __future__ import annotations

from http import HTTPStatus

import pytest
from flask.testing import FlaskClient

from tests.conftest import GOOD_PASSWORD, AuthActions, Outbox

VICTIM = "victim@example.com"
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
