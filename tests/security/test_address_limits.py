"""Per-address limits count what one client holds, and ip.confirm is spent.

Controls proven: an IPv6 client is counted by its /64 in every ``ip.*`` and ``ip_user.*``
limit (core/addresses.py `address_key`, applied in rate_limit.key_for), so taking a fresh
address for each attempt buys no fresh count; the mails an existing address gets when it is
registered again or signs in unconfirmed spend ``ip.confirm`` as well as ``user.confirm``
(accounts/service.py `confirmation_mail_allowed`).
"""

from __future__ import annotations

from http import HTTPStatus

import pytest
from flask import Flask
from flask.testing import FlaskClient

from bastion.core.addresses import address_key
from tests.conftest import GOOD_PASSWORD, AuthActions, Outbox
from tests.security.test_rate_limits import assert_limited, login


def at(address: str) -> dict[str, dict[str, str]]:
    return {"environ_base": {"REMOTE_ADDR": address}}


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),
        ("2001:DB8:1:2::1", "2001:db8:1:2::/64"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("unknown", "unknown"),
    ],
)
def test_an_address_counts_as_its_ipv4_address_or_its_ipv6_64(address: str, key: str) -> None:
    assert address_key(address) == key


def test_a_fresh_ipv6_address_in_the_same_64_buys_no_fresh_guesses(
    client: FlaskClient, auth: AuthActions
) -> None:
    auth.create_user()
    for n in range(5):
        wrong = login(client, **at(f"2001:db8:1:2::{n + 1:x}"))
        assert wrong.status_code == HTTPStatus.UNAUTHORIZED

    assert_limited(login(client, password=GOOD_PASSWORD, **at("2001:db8:1:2:ffff::9")))
    another_subscriber = login(client, password=GOOD_PASSWORD, **at("2001:db8:1:3::1"))
    assert another_subscriber.status_code == HTTPStatus.SEE_OTHER


@pytest.mark.settings(ratelimit_ip_register="1000 per hour", ratelimit_ip_confirm="2 per hour")
def test_registering_existing_addresses_again_mails_at_most_ip_confirm_of_them(
    client: FlaskClient, auth: AuthActions, outbox: Outbox
) -> None:
    addresses = [f"pending{n}@example.com" for n in range(3)]
    for email in addresses:
        assert auth.register(email=email).status_code == HTTPStatus.SEE_OTHER
    first_mails = len(outbox.messages())

    for email in addresses:
        assert auth.register(email=email).status_code == HTTPStatus.SEE_OTHER

    assert len(outbox.messages()) - first_mails == 2


@pytest.mark.settings(ratelimit_ip_confirm="2 per hour")
def test_unconfirmed_sign_ins_from_one_address_mail_at_most_ip_confirm_links(
    app: Flask, client: FlaskClient, auth: AuthActions, outbox: Outbox
) -> None:
    addresses = [f"pending{n}@example.com" for n in range(3)]
    for email in addresses:
        auth.register(email=email)
    first_mails = len(outbox.messages())

    for email in addresses:
        answer = login(client, email=email, password=GOOD_PASSWORD)
        assert answer.status_code == HTTPStatus.UNAUTHORIZED
        assert "Confirm your email address first" in answer.get_data(as_text=True)

    assert len(outbox.messages()) - first_mails == 2
