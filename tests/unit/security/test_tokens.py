"""Signed single-use tokens: purpose separation, expiry, tampering, single use, key rotation."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from flask import Flask
from itsdangerous import TimestampSigner

from bastion.core.db import db
from bastion.security.tokens import MAX_AGE, InvalidToken, TokenPurpose, consume, issue, verify

OTHER_KEY = "another-secret-key-" + "z" * 40


@pytest.fixture
def ctx(app: Flask) -> Iterator[Flask]:
    with app.app_context():
        yield app
        db.session.rollback()


def issued_at(monkeypatch: pytest.MonkeyPatch, seconds_ago: float) -> None:
    """Make the next tokens look issued `seconds_ago` (itsdangerous stamps with time())."""
    stamp = int(time.time() - seconds_ago)
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: stamp)


def test_a_token_verifies_for_its_own_purpose(ctx: Flask) -> None:
    token = issue(TokenPurpose.CONFIRM_EMAIL, "42", email="a@example.com")

    payload = verify(TokenPurpose.CONFIRM_EMAIL, token)

    assert payload["sub"] == "42"
    assert payload["email"] == "a@example.com"
    assert len(payload["jti"]) >= 32  # a 128-bit random id


@pytest.mark.parametrize("other", [p for p in TokenPurpose if p is not TokenPurpose.CONFIRM_EMAIL])
def test_a_token_never_works_for_another_purpose(ctx: Flask, other: TokenPurpose) -> None:
    token = issue(TokenPurpose.CONFIRM_EMAIL, "42")

    with pytest.raises(InvalidToken):
        verify(other, token)
    with pytest.raises(InvalidToken):
        consume(other, token)


def test_every_purpose_has_a_maximum_age() -> None:
    assert set(MAX_AGE) == set(TokenPurpose)
    assert MAX_AGE[TokenPurpose.RESET_PASSWORD].total_seconds() <= 3600
    assert MAX_AGE[TokenPurpose.ADMIN_SETUP].total_seconds() <= 3600


@pytest.mark.parametrize("purpose", list(TokenPurpose))
def test_a_token_expires_after_its_maximum_age(
    ctx: Flask, monkeypatch: pytest.MonkeyPatch, purpose: TokenPurpose
) -> None:
    limit = MAX_AGE[purpose].total_seconds()
    issued_at(monkeypatch, limit - 60)
    fresh = issue(purpose, "1")
    issued_at(monkeypatch, limit + 5)
    stale = issue(purpose, "1")
    monkeypatch.undo()

    assert verify(purpose, fresh)["sub"] == "1"
    with pytest.raises(InvalidToken):
        verify(purpose, stale)


@pytest.mark.parametrize("where", ["payload", "timestamp", "signature"])
def test_a_tampered_token_is_refused(ctx: Flask, where: str) -> None:
    token = issue(TokenPurpose.RESET_PASSWORD, "7")
    payload, stamp, signature = token.split(".")
    part = {"payload": payload, "timestamp": stamp, "signature": signature}[where]
    middle = len(part) // 2
    changed = part[:middle] + ("A" if part[middle] != "A" else "B") + part[middle + 1 :]
    forged = token.replace(part, changed, 1)

    with pytest.raises(InvalidToken):
        verify(TokenPurpose.RESET_PASSWORD, forged)


def test_a_token_signed_with_another_key_is_refused(ctx: Flask) -> None:
    ctx.config["SECRET_KEY"], real = OTHER_KEY, ctx.config["SECRET_KEY"]
    forged = issue(TokenPurpose.ADMIN_SETUP, "first-admin")
    ctx.config["SECRET_KEY"] = real

    with pytest.raises(InvalidToken):
        verify(TokenPurpose.ADMIN_SETUP, forged)


@pytest.mark.parametrize("junk", ["", "x", "a.b.c", "not a token at all", "é" * 50])
def test_junk_is_refused(ctx: Flask, junk: str) -> None:
    with pytest.raises(InvalidToken):
        verify(TokenPurpose.CONFIRM_EMAIL, junk)


def test_a_token_works_once(ctx: Flask) -> None:
    token = issue(TokenPurpose.CONFIRM_EMAIL, "9")

    consume(TokenPurpose.CONFIRM_EMAIL, token)
    db.session.commit()

    with pytest.raises(InvalidToken):
        verify(TokenPurpose.CONFIRM_EMAIL, token)
    with pytest.raises(InvalidToken):
        consume(TokenPurpose.CONFIRM_EMAIL, token)


def test_two_tokens_for_the_same_subject_are_independent(ctx: Flask) -> None:
    first = issue(TokenPurpose.CONFIRM_EMAIL, "9")
    second = issue(TokenPurpose.CONFIRM_EMAIL, "9")

    consume(TokenPurpose.CONFIRM_EMAIL, first)
    db.session.commit()

    assert first != second
    assert verify(TokenPurpose.CONFIRM_EMAIL, second)["sub"] == "9"


def test_an_uncommitted_use_does_not_burn_the_token(ctx: Flask) -> None:
    # The use commits with the change it authorises: a failed request leaves it usable.
    token = issue(TokenPurpose.ADMIN_SETUP, "first-admin")

    consume(TokenPurpose.ADMIN_SETUP, token)
    db.session.rollback()

    assert verify(TokenPurpose.ADMIN_SETUP, token)["sub"] == "first-admin"


def test_tokens_issued_under_a_retired_key_verify_through_the_fallbacks(ctx: Flask) -> None:
    old_key = ctx.config["SECRET_KEY"]
    token = issue(TokenPurpose.CONFIRM_EMAIL, "5")

    ctx.config["SECRET_KEY"] = OTHER_KEY
    ctx.config["SECRET_KEY_FALLBACKS"] = [old_key]
    assert verify(TokenPurpose.CONFIRM_EMAIL, token)["sub"] == "5"
    assert verify(TokenPurpose.CONFIRM_EMAIL, issue(TokenPurpose.CONFIRM_EMAIL, "6"))["sub"] == "6"

    ctx.config["SECRET_KEY_FALLBACKS"] = []
    with pytest.raises(InvalidToken):
        verify(TokenPurpose.CONFIRM_EMAIL, token)


def test_new_tokens_are_signed_with_the_current_key(ctx: Flask) -> None:
    old_key = ctx.config["SECRET_KEY"]
    ctx.config["SECRET_KEY"] = OTHER_KEY
    ctx.config["SECRET_KEY_FALLBACKS"] = [old_key]
    token = issue(TokenPurpose.CONFIRM_EMAIL, "5")

    ctx.config["SECRET_KEY_FALLBACKS"] = []  # the old key retired: still valid

    assert verify(TokenPurpose.CONFIRM_EMAIL, token)["sub"] == "5"
