"""Two-factor authentication: TOTP (RFC 6238, pyotp) and single-use recovery codes.

What pyotp leaves to us (its README's security notes), and how it is done here:
- replay: the newest accepted time step is stored per user and a code is accepted only
  for a later step, with one conditional UPDATE, so two concurrent requests carrying the
  same code cannot both win (ASVS 6.5.1);
- brute force: callers throttle attempts (a pending login allows `MAX_LOGIN_ATTEMPTS`;
  the named limits `user.mfa` / `ip.mfa` bound the rest), and a wrong code at sign-in or
  re-authentication counts on the account's lockout (accounts/service.py
  `authenticate_second_factor`). Wherever a code is entered (sign-in, re-authentication,
  turning 2FA off, the password reset form), a wrong one also counts on the credential's
  own streak, which neither the unlock link nor a password reset ends: after
  ``BASTION_LOCKOUT_MAX_FAILURES`` (100, NIST SP 800-63B-4 3.2.2) wrong codes in a row,
  no TOTP code is accepted until a recovery code (125 bits: not guessable) or an
  admin's "reset 2FA" ends the streak;
- the seed is encrypted at rest with the data key, bound to the user (security/crypto.py);
- `valid_window` is 1: the previous, current and next 30-second step, for clock drift.

Recovery codes carry 125 random bits each and are stored as SHA-256 hashes (ASVS 6.5.2
allows an approved hash for secrets of at least 112 bits); a code works once (6.5.1).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from enum import StrEnum

import pyotp
from flask import current_app
from sqlalchemy import delete, func, select, update

from bastion.accounts.models import RecoveryCode, TotpCredential, User
from bastion.accounts.notifications import Notice, notify
from bastion.audit import Actor, EventTag, record, record_failure
from bastion.core.clock import utcnow
from bastion.core.db import db
from bastion.security import crypto

ISSUER = "Bastion"
DIGITS = 6
INTERVAL = 30
VALID_WINDOW = 1  # pyotp's advice: keep it at 1 or below
RECOVERY_CODE_COUNT = 10
RECOVERY_GROUPS = 5
RECOVERY_GROUP_LENGTH = 5  # 25 base32 characters = 125 bits per code
MAX_LOGIN_ATTEMPTS = 5  # wrong codes per pending login before the password step again
_BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


class Factor(StrEnum):
    TOTP = "totp"
    RECOVERY_CODE = "recovery_code"


class MfaError(ValueError):
    """A second-factor request the rules refuse; the message is safe to show."""


@dataclass(frozen=True)
class Enrolment:
    """A TOTP seed being set up: shown to the user, not stored until a code proves it."""

    secret: str
    uri: str


def _context(user_id: int) -> str:
    return f"totp:{user_id}"


def _pending_context(user_id: int) -> str:
    return f"totp-pending:{user_id}"


def has_totp(user_id: int) -> bool:
    return db.session.get(TotpCredential, user_id) is not None


# ------------------------------------------------------------------------ enrolment
def new_enrolment(user: User) -> Enrolment:
    """Return a fresh 160-bit seed and its otpauth:// URI for `user`."""
    secret = pyotp.random_base32(length=32)
    return Enrolment(secret=secret, uri=_uri(secret, user.email))


def _uri(secret: str, email: str) -> str:
    return pyotp.TOTP(secret, digits=DIGITS, interval=INTERVAL).provisioning_uri(
        name=email, issuer_name=ISSUER
    )


def seal_pending(user: User, enrolment: Enrolment) -> str:
    """Encrypt a pending seed for keeping in the session until it is confirmed."""
    return crypto.encrypt(enrolment.secret, context=_pending_context(user.id))


def open_pending(user: User, sealed: str) -> Enrolment | None:
    """Return the pending enrolment sealed for this user, or None if it is not theirs."""
    try:
        secret = crypto.decrypt(sealed, context=_pending_context(user.id)).value
    except crypto.DecryptionFailed:
        return None
    return Enrolment(secret=secret, uri=_uri(secret, user.email))


def _matching_step(secret: str, code: str) -> int | None:
    """Return the time step within the window whose code equals `code`, else None."""
    code = code.strip().replace(" ", "")
    if len(code) != DIGITS or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret, digits=DIGITS, interval=INTERVAL)
    now_step = int(utcnow().timestamp()) // INTERVAL
    found = None
    # Compare against every step in the window (constant time each, no early exit).
    for step in range(now_step - VALID_WINDOW, now_step + VALID_WINDOW + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            found = step
    return found


def enable(user: User, enrolment: Enrolment, code: str, actor: Actor) -> list[str]:
    """Switch TOTP on after `code` proves the app holds the seed; return new recovery codes.

    Raises MfaError when the code is wrong or 2FA is already on.
    """
    if has_totp(user.id):
        raise MfaError("Two-factor authentication is already on.")
    step = _matching_step(enrolment.secret, code)
    if step is None:
        record_failure(EventTag.MFA_ENABLE, actor, target=user.email)
        raise MfaError("That code is not correct. Check the time on your device and try again.")
    db.session.add(
        TotpCredential(
            user_id=user.id,
            secret=crypto.encrypt(enrolment.secret, context=_context(user.id)),
            last_step=step,
            enabled_at=utcnow(),
        )
    )
    codes = _replace_recovery_codes(user)
    record(EventTag.MFA_ENABLE, actor, target=user.email)
    db.session.commit()
    return codes


def disable(user: User, actor: Actor) -> None:
    """Remove the TOTP credential and every recovery code (the caller proved password + code)."""
    db.session.execute(delete(TotpCredential).where(TotpCredential.user_id == user.id))
    db.session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    record(EventTag.MFA_DISABLE, actor, target=user.email)
    db.session.commit()


# ------------------------------------------------------------------- verification
def verify_totp(user: User, code: str) -> bool:
    """Accept `code` once: it must match a step newer than the last accepted one."""
    credential = db.session.get(TotpCredential, user.id)
    if credential is None:
        return False
    try:
        opened = crypto.decrypt(credential.secret, context=_context(user.id))
    except crypto.DecryptionFailed:
        return False
    step = _matching_step(opened.value, code)
    if step is None:
        return False
    values: dict[str, object] = {"last_step": step}
    if opened.stale:  # encrypted with a retired data key: move it to the newest one
        values["secret"] = crypto.encrypt(opened.value, context=_context(user.id))
    # One conditional UPDATE: of two requests carrying the same code, one matches a row.
    claimed = db.session.execute(
        update(TotpCredential)
        .where(
            TotpCredential.user_id == user.id,
            TotpCredential.last_step < step,
            TotpCredential.failed_codes < _max_code_failures(),
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    db.session.expire(credential)
    return bool(claimed.rowcount == 1)  # type: ignore[attr-defined]


def verify_second_factor(user: User, code: str, actor: Actor) -> Factor | None:
    """Check a TOTP code or a recovery code; audit the outcome; None when neither is good.

    Every wrong code adds one to the credential's streak and a right one ends it. Once the
    streak reaches the maximum, no TOTP code is accepted, right or wrong (verify_totp's
    UPDATE matches no row): 6 digits can be guessed, so NIST's cap holds however the codes
    arrive and whatever unlocked the account meanwhile. Recovery codes are still accepted,
    so the owner can end the streak themselves.
    """
    cleaned = (code or "").strip()
    compact = cleaned.replace(" ", "")
    if len(compact) == DIGITS and compact.isdigit():
        factor: Factor | None = Factor.TOTP if verify_totp(user, compact) else None
    else:
        factor = Factor.RECOVERY_CODE if use_recovery_code(user, cleaned, actor) else None
    if factor is None:
        streak, maximum = _count_wrong_code(user.id), _max_code_failures()
        details = {"streak": streak, "totp_off": streak >= maximum}
        record_failure(EventTag.MFA_VERIFY, actor, target=user.email, details=details)
        if streak == maximum:  # exactly one request sees the count reach it
            notify(
                current_app.extensions["bastion.mailer"],
                to=user.email,
                notice=Notice.TOTP_CODES_OFF,
                public_url=current_app.extensions["bastion.settings"].public_url,
            )
        return None
    db.session.execute(
        update(TotpCredential)
        .where(TotpCredential.user_id == user.id, TotpCredential.failed_codes != 0)
        .values(failed_codes=0)
        .execution_options(synchronize_session=False)
    )
    record(EventTag.MFA_VERIFY, actor, target=user.email, details={"factor": factor.value})
    db.session.commit()
    return factor


def _max_code_failures() -> int:
    return int(current_app.extensions["bastion.settings"].lockout_max_failures)


def _count_wrong_code(user_id: int) -> int:
    """Add one to the credential's streak in one atomic UPDATE; return the new streak (0
    without 2FA). Commits, so a failed request still leaves its count."""
    streak = db.session.scalar(
        update(TotpCredential)
        .where(TotpCredential.user_id == user_id)
        .values(failed_codes=TotpCredential.failed_codes + 1)
        .returning(TotpCredential.failed_codes)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    return int(streak or 0)


def reencrypt_all() -> int:
    """Re-encrypt every TOTP seed still sealed with an older data key; return how many.

    After a data-key rotation (BASTION_DATA_KEY=new,old) seeds move to the new key as their
    owners sign in; this moves the rest, after which the old key can be dropped.
    """
    moved = 0
    for credential in db.session.scalars(select(TotpCredential)):
        opened = crypto.decrypt(credential.secret, context=_context(credential.user_id))
        if opened.stale:
            credential.secret = crypto.encrypt(opened.value, context=_context(credential.user_id))
            moved += 1
    db.session.commit()
    return moved


# ------------------------------------------------------------------ recovery codes
def _normalise_code(code: str) -> str:
    return "".join(ch for ch in code.upper() if ch not in " -")


def _hash_code(code: str) -> str:
    return hashlib.sha256(_normalise_code(code).encode()).hexdigest()


def _new_code() -> str:
    raw = "".join(secrets.choice(_BASE32) for _ in range(RECOVERY_GROUPS * RECOVERY_GROUP_LENGTH))
    size = RECOVERY_GROUP_LENGTH
    return "-".join(raw[i : i + size] for i in range(0, len(raw), size))


def _replace_recovery_codes(user: User) -> list[str]:
    db.session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    codes = [_new_code() for _ in range(RECOVERY_CODE_COUNT)]
    now = utcnow()
    db.session.add_all(
        RecoveryCode(user_id=user.id, code_hash=_hash_code(code), created_at=now) for code in codes
    )
    return codes


def regenerate_recovery_codes(user: User, actor: Actor) -> list[str]:
    """Replace every recovery code of a user with 2FA on; the old ones stop working."""
    if not has_totp(user.id):
        raise MfaError("Turn on two-factor authentication first.")
    codes = _replace_recovery_codes(user)
    record(EventTag.MFA_RECOVERY_CODES, actor, target=user.email)
    db.session.commit()
    return codes


def use_recovery_code(user: User, code: str, actor: Actor) -> bool:
    """Spend one unused recovery code; a code works once, even under concurrent use."""
    normalised = _normalise_code(code)
    if len(normalised) != RECOVERY_GROUPS * RECOVERY_GROUP_LENGTH or not has_totp(user.id):
        return False
    spent = db.session.execute(
        update(RecoveryCode)
        .where(
            RecoveryCode.user_id == user.id,
            RecoveryCode.code_hash == _hash_code(normalised),
            RecoveryCode.used_at.is_(None),
        )
        .values(used_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if spent.rowcount != 1:  # type: ignore[attr-defined]
        db.session.rollback()
        return False
    record(
        EventTag.MFA_RECOVERY_USED,
        actor,
        target=user.email,
        details={"remaining": remaining_recovery_codes(user)},
    )
    db.session.commit()
    return True


def remaining_recovery_codes(user: User) -> int:
    count = db.session.scalar(
        select(func.count())
        .select_from(RecoveryCode)
        .where(RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None))
    )
    return int(count or 0)
