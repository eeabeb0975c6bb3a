"""Signed single-use tokens: purpose separation, expiry, tampering, single use, key rotation."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from flask import Flask
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

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


def tampered(token: str, where: str) -> str:
    """`token` with one character changed in its payload, timestamp or signature."""
    payload, stamp, signature = token.split(".")
    part = {"payload": payload, "timestamp": stamp, "signature": signature}[where]
    middle = len(part) // 2
    changed = part[:middle] + ("A" if part[middle] != "A" else "B") + part[middle + 1 :]
    return token.replace(part, changed, 1)


@pytest.mark.parametrize("where", ["payload", "timestamp", "signature"])
def test_a_tampered_token_is_refused(ctx: Flask, where: str) -> None:
    forged = tampered(issue(TokenPurpose.RESET_PASSWORD, "7"), where)

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


# ------------------------------------------------------- the move from SHA-1 to SHA-256
def sha1_token(key: str, purpose: TokenPurpose, subject: str = "5") -> str:
    """A token as Bastion issued it before the move to SHA-256: HMAC-SHA-1."""
    serializer = URLSafeTimedSerializer(
        key, salt=f"bastion.token.{purpose.value}", signer_kwargs={"digest_method": hashlib.sha1}
    )
    return str(serializer.dumps({"sub": subject, "jti": secrets.token_hex(16)}))


def test_new_tokens_are_signed_with_hmac_sha256(ctx: Flask) -> None:
    token = issue(TokenPurpose.RESET_PASSWORD, "7")
    sha256 = URLSafeTimedSerializer(
        ctx.config["SECRET_KEY"],
        salt="bastion.token.reset-password",
        signer_kwargs={"digest_method": hashlib.sha256},
    )

    assert sha256.loads(token)["sub"] == "7"


@pytest.mark.parametrize("signed_under", ["current key", "fallback key"])
def test_a_sha1_token_mailed_before_the_move_still_works_once(
    ctx: Flask, signed_under: str
) -> None:
    old_key = ctx.config["SECRET_KEY"]
    token = sha1_token(old_key, TokenPurpose.CONFIRM_EMAIL)
    if signed_under == "fallback key":
        ctx.config["SECRET_KEY"] = OTHER_KEY
        ctx.config["SECRET_KEY_FALLBACKS"] = [old_key]

    assert consume(TokenPurpose.CONFIRM_EMAIL, token)["sub"] == "5"
    db.session.commit()
    with pytest.raises(InvalidToken):
        verify(TokenPurpose.CONFIRM_EMAIL, token)


def test_a_sha1_token_is_read_only_while_it_can_be_alive(
    ctx: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    # security/signing.py: nothing new is signed with SHA-1, so its tokens die with their
    # maximum age, at most 7 days after the upgrade; after that SHA-1 verifies nothing.
    assert max(MAX_AGE.values()) <= timedelta(days=7)
    key, longest = ctx.config["SECRET_KEY"], TokenPurpose.INVITE
    limit = MAX_AGE[longest].total_seconds()
    issued_at(monkeypatch, limit - 60)
    young = sha1_token(key, longest)
    issued_at(monkeypatch, limit + 5)
    old = sha1_token(key, longest)
    monkeypatch.undo()

    assert verify(longest, young)["sub"] == "5"
    with pytest.raises(InvalidToken):
        verify(longest, old)


@pytest.mark.parametrize("where", ["payload", "timestamp", "signature"])
def test_a_tampered_sha1_token_is_refused(ctx: Flask, where: str) -> None:
    forged = tampered(sha1_token(ctx.config["SECRET_KEY"], TokenPurpose.RESET_PASSWORD), where)

    with pytest.raises(InvalidToken):
        verify(TokenPurpose.RESET_PASSWORD, forged)


def test_a_sha1_token_signed_with_another_key_is_refused(ctx: Flask) -> None:
    with pytest.raises(InvalidToken):
        verify(TokenPurpose.ADMIN_SETUP, sha1_token(OTHER_KEY, TokenPurpose.ADMIN_SETUP))
