"""Rehash on login, through the real login form (control 10, ASVS 11.2.2).

Control proven (accounts/service.py authenticate, security/passwords.py needs_rehash): a
hash made at older argon2id parameters is replaced, at the next sign-in that proves the
password, by one at the current parameters that still verifies; a refused sign-in (wrong
password, locked or disabled account) leaves the stored hash as it was; with 2FA on, the
password step upgrades it (the only step that has the password); a sign-in whose upgrade
finds no free hashing slot still succeeds and upgrades next time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from http import HTTPStatus
from operator import attrgetter

import pytest
from argon2 import PasswordHasher, Type, extract_parameters
from flask import Flask

from bastion.security import hash_guard, passwords
from bastion.security.passwords import HashParameters
from tests.conftest import GOOD_PASSWORD, AuthActions
from tests.functional.admin.state import lock_account, password_hash
from tests.mfa_support import Clock, enrol
from tests.security.helpers import is_signed_in, set_user

VICTIM = "alice@example.com"
WRONG = "not the password at all"
# Both cheap enough for the suite; what matters is that they differ.
OLD = HashParameters(time_cost=1, memory_cost=8, parallelism=1)
CURRENT = HashParameters(time_cost=2, memory_cost=64, parallelism=1)


@pytest.fixture(autouse=True)
def raised_parameters() -> Iterator[None]:
    """The site now hashes at CURRENT; its users' hashes were made at OLD."""
    previous = passwords._state.parameters
    passwords.configure(CURRENT)
    yield
    passwords.configure(previous)


def store_old_hash(app: Flask) -> str:
    """Give the victim a hash of GOOD_PASSWORD as an earlier release would have made it."""
    old = PasswordHasher(
        time_cost=OLD.time_cost,
        memory_cost=OLD.memory_cost,
        parallelism=OLD.parallelism,
        type=Type.ID,
    ).hash(GOOD_PASSWORD)
    set_user(app, VICTIM, password_hash=old)
    return old


def parameters_of(stored_hash: str) -> HashParameters:
    found = extract_parameters(stored_hash)
    assert found.type is Type.ID
    return HashParameters(found.time_cost, found.memory_cost, found.parallelism)


def test_a_sign_in_upgrades_a_hash_made_at_older_parameters(app: Flask, auth: AuthActions) -> None:
    user_id = auth.create_user()
    old = store_old_hash(app)
    assert parameters_of(old) == OLD

    response = auth.login()

    assert response.status_code == HTTPStatus.SEE_OTHER
    upgraded = password_hash(app, user_id)
    assert upgraded != old
    assert parameters_of(upgraded) == CURRENT
    assert passwords.verify_password(upgraded, GOOD_PASSWORD)
    assert not passwords.verify_password(upgraded, WRONG)
    auth.logout()
    assert auth.login().status_code == HTTPStatus.SEE_OTHER
    assert password_hash(app, user_id) == upgraded  # upgraded once, not at every sign-in


# Each refusal sets the account up for it and returns the password the attempt sends.
def wrong_password(app: Flask, user_id: int) -> str:
    return WRONG


def right_password_while_locked(app: Flask, user_id: int) -> str:
    lock_account(app, user_id)
    return GOOD_PASSWORD


def right_password_for_a_disabled_account(app: Flask, user_id: int) -> str:
    set_user(app, VICTIM, active=False)
    return GOOD_PASSWORD


@pytest.mark.parametrize(
    "refusal",
    [wrong_password, right_password_while_locked, right_password_for_a_disabled_account],
    ids=attrgetter("__name__"),
)
def test_a_refused_sign_in_leaves_the_old_hash_as_it_was(
    app: Flask,
    auth: AuthActions,
    refusal: Callable[[Flask, int], str],
) -> None:
    # Upgrading on a refused right password would also make that answer slower, telling a
    # guesser of a locked account that the guess was right.
    user_id = auth.create_user()
    old = store_old_hash(app)
    password = refusal(app, user_id)

    response = auth.login(password=password)

    assert response.status_code == HTTPStatus.UNAUTHORIZED
    assert not is_signed_in(auth.client)
    assert password_hash(app, user_id) == old


def test_the_password_step_of_a_2fa_sign_in_upgrades_the_hash(
    app: Flask, auth: AuthActions, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The upgrade needs the password, and only this step has it: the 2FA step never sees it.
    user_id = auth.create_user()
    auth.login()
    enrol(auth.client, Clock.install(monkeypatch))
    auth.logout()
    store_old_hash(app)

    response = auth.login()

    assert response.status_code == HTTPStatus.SEE_OTHER
    assert response.headers["Location"] == "/auth/login/2fa"
    assert not is_signed_in(auth.client)
    upgraded = password_hash(app, user_id)
    assert parameters_of(upgraded) == CURRENT
    assert passwords.verify_password(upgraded, GOOD_PASSWORD)


def test_a_sign_in_still_succeeds_when_the_upgrade_finds_no_free_slot(
    app: Flask, auth: AuthActions, monkeypatch: pytest.MonkeyPatch
) -> None:
    def busy(password: str) -> str:
        raise hash_guard.HashBusy

    user_id = auth.create_user()
    old = store_old_hash(app)
    monkeypatch.setattr(hash_guard, "hash_password", busy)

    assert auth.login().status_code == HTTPStatus.SEE_OTHER
    assert password_hash(app, user_id) == old
    monkeypatch.undo()
    auth.logout()
    assert auth.login().status_code == HTTPStatus.SEE_OTHER
    assert parameters_of(password_hash(app, user_id)) == CURRENT
