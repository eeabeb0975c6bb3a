"""Account recovery and changes: password reset and email change.

Rules (OWASP Forgot Password CS, ASVS 6.4.x):
- a reset request answers the same whether or not the address has an account; only an
  active account gets a mail, and its link is built from the configured public URL;
- a reset token has its own purpose, lives 30 minutes, works once, and is bound to a
  fingerprint of the password it replaces: any password change voids every link out;
- with 2FA on, a reset also needs a TOTP or recovery code (ASVS 6.4.3), so a mailbox alone
  does not take over the account;
- a reset ends every session and remember-me token, notifies the owner, and never signs in;
- an email change needs the current password, is confirmed from the NEW address by a token
  bound to the user, the old and the new address, and is re-checked for uniqueness when
  applied; the OLD address is told.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from sqlalchemy import func, update
from sqlalchemy.exc import IntegrityError

from bastion.accounts import mfa
from bastion.accounts.models import User
from bastion.accounts.service import (
    AccountError,
    LockoutContext,
    Site,
    find_by_email,
    normalise_email,
    password_problems,
    verify_current_password,
)
from bastion.audit import Actor, EventTag, record, record_failure
from bastion.core.clock import utcnow
from bastion.core.db import db
from bastion.core.mail import MailMessage
from bastion.security import hash_guard, lockout, sessions
from bastion.security.tokens import InvalidToken, TokenPurpose, consume, issue, verify

INVALID_RESET = "This reset link is invalid, used or expired. Ask for a new one."


class WrongPassword(AccountError):
    """The current password given to confirm a change is not correct."""


class WrongCode(AccountError):
    """The second-factor code is missing or not correct."""


INVALID_EMAIL_LINK = "This confirmation link is invalid, used or expired."
ADDRESS_TAKEN = "That address now belongs to another account; nothing was changed."


def _link(site: Site, path: str) -> str:
    return site.public_url.rstrip("/") + path


def password_fingerprint(user: User) -> str:
    """A short digest of the current password state; changes with every password change."""
    state = f"{user.password_hash}|{user.password_changed_at.isoformat()}"
    return hashlib.sha256(state.encode()).hexdigest()[:32]


# --------------------------------------------------------------------- reset request
def reset_request_mail(email: str, *, actor: Actor, site: Site) -> MailMessage | None:
    """Return the reset mail for `email` if it names an active account, else None.

    The caller answers identically either way (and sends the mail after answering, so the
    timing does not tell either).
    """
    user = find_by_email(email)
    known = user is not None and user.active
    record(EventTag.PASSWORD_RESET_REQUEST, actor, target=email, details={"known_account": known})
    db.session.commit()
    if user is None or not user.active:
        return None
    token = issue(
        TokenPurpose.RESET_PASSWORD, str(user.id), email=user.email, pw=password_fingerprint(user)
    )
    return MailMessage(
        to=user.email,
        subject="Reset your Bastion password",
        body=(
            "Hello,\n\nSomeone (hopefully you) asked to reset the password of "
            "your Bastion account. The link works once, for 30 minutes:\n\n"
            f"{_link(site, '/auth/reset/' + token)}\n\n"
            "If you did not ask for this, ignore this message: your password stays as it is.\n"
        ),
    )


# ----------------------------------------------------------------------- reset itself
def check_reset_token(token: str) -> User:
    """Return the user a still-good reset token names, or raise AccountError."""
    try:
        payload = verify(TokenPurpose.RESET_PASSWORD, token)
    except InvalidToken:
        raise AccountError(INVALID_RESET) from None
    user = _user_of(payload.get("sub"))
    if (
        user is None
        or not user.active
        or user.email != payload.get("email")
        or password_fingerprint(user) != payload.get("pw")
    ):
        raise AccountError(INVALID_RESET)
    return user


def _user_of(subject: object) -> User | None:
    try:
        return db.session.get(User, int(str(subject)))
    except ValueError:
        return None


def _replace_password(user: User, bound_hash: str, new_hash: str) -> bool:
    """Set `new_hash` if the password hash is still `bound_hash`, the one the link was for.

    Two links mailed for the same password (asked for twice) may be posted at once: each
    request checked the fingerprint before the other wrote. One conditional UPDATE decides,
    in the database and so across nodes: the first request moves the hash on (every hash
    has its own salt), and the others match no row, as if their link had been voided.
    """
    now = utcnow()
    changed = db.session.execute(
        update(User)
        .where(User.id == user.id, User.password_hash == bound_hash)
        .values(
            password_hash=new_hash,
            password_changed_at=now,
            # The link proved the address.
            confirmed_at=func.coalesce(User.confirmed_at, now),
        )
        .execution_options(synchronize_session=False)
    )
    db.session.expire(user)
    return bool(changed.rowcount == 1)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class ResetResult:
    user: User
    sessions_ended: int


def reset_password(
    token: str, *, password: str, code: str | None, actor: Actor, site: Site
) -> ResetResult:
    """Set a new password through a reset link; end every session; never sign in.

    Raises AccountError for a bad link, a refused password, or a missing/wrong second factor
    (the token stays unused in those cases, so the form can be corrected).
    """
    user = check_reset_token(token)
    bound_hash = user.password_hash  # what the link is bound to; `user` reloads after commits
    problems = password_problems(password, email=user.email, name=user.name, site=site)
    if problems:
        raise AccountError(" ".join(problems))
    # Hashed first: a busy guard (503) must not find the second factor already spent.
    new_hash = hash_guard.hash_password(password)
    # ASVS 6.4.3: a reset does not bypass the second factor. Its wrong codes are not counted
    # on the account's lockout: the reset is the way out of a lock (it proves the mailbox),
    # and the mailbox holder receives the unlock link anyway, so a lock would stop only the
    # owner. They count on the credential's own streak, which no reset or unlock link ends
    # (mfa.verify_second_factor): NIST's 100 in a row holds here too.
    if mfa.has_totp(user.id) and (not code or mfa.verify_second_factor(user, code, actor) is None):
        raise WrongCode("That code is not correct.")
    try:
        consume(TokenPurpose.RESET_PASSWORD, token)
    except InvalidToken:
        raise AccountError(INVALID_RESET) from None
    if not _replace_password(user, bound_hash, new_hash):
        db.session.rollback()  # nothing of this reset is kept
        raise AccountError(INVALID_RESET)
    # The owner proved control of the mailbox: any lock (even the 100-failure hard lock) ends.
    lockout.reset(user.id)
    record(EventTag.PASSWORD_RESET, actor, target=user.email)
    db.session.commit()
    # OWASP Forgot Password CS / ASVS 7.4.3: every session and remember-me token ends.
    ended = sessions.revoke_user_sessions(user.id)
    return ResetResult(user=user, sessions_ended=ended)


# ---------------------------------------------------------------------- email change
def request_email_change(
    user: User,
    *,
    password: str,
    new_email: str,
    actor: Actor,
    site: Site,
    context: LockoutContext | None = None,
) -> MailMessage:
    """Check the password and return the mail for the new address.

    An address that already belongs to an account gets a notice instead of a link, and the
    caller shows the same answer either way, so this reveals no account (OWASP Auth CS).
    Raises AccountError for a wrong password or an unusable address.
    """
    if not verify_current_password(user, password, actor, context):
        record_failure(EventTag.EMAIL_CHANGE_REQUEST, actor, target=user.email)
        raise WrongPassword("Your current password is not correct.")
    new = normalise_email(new_email)
    if new == user.email:
        raise AccountError("That is already your address.")
    record(EventTag.EMAIL_CHANGE_REQUEST, actor, target=user.email, details={"new_email": new})
    db.session.commit()
    if find_by_email(new) is not None:
        return MailMessage(
            to=new,
            subject="Someone tried to use your address on Bastion",
            body=(
                "Someone asked to move a Bastion account to this address, which already has "
                "an account, so nothing was changed. If it wasn't you, ignore this message.\n"
            ),
        )
    token = issue(TokenPurpose.CHANGE_EMAIL, str(user.id), old=user.email, new=new)
    return MailMessage(
        to=new,
        subject="Confirm your new Bastion email address",
        body=(
            "Hello,\n\nConfirm that this is the new email address of your Bastion "
            "account. Sign in as yourself, then open this link (it works once, for 24 hours):"
            f"\n\n{_link(site, '/account/email/confirm/' + token)}\n\n"
            "If you did not ask for this, ignore this message.\n"
        ),
    )


def check_email_change(token: str, user: User) -> str:
    """Return the new address a still-good token offers to `user`, or raise AccountError."""
    try:
        payload = verify(TokenPurpose.CHANGE_EMAIL, token)
    except InvalidToken:
        raise AccountError(INVALID_EMAIL_LINK) from None
    if payload.get("sub") != str(user.id) or payload.get("old") != user.email:
        raise AccountError(INVALID_EMAIL_LINK)  # another user's link, or an address since changed
    return str(payload.get("new", ""))


def apply_email_change(token: str, user: User, actor: Actor) -> tuple[str, str]:
    """Move `user` to the token's new address; return (old, new). The token works once."""
    new = check_email_change(token, user)
    old = user.email  # the address the link was checked against
    try:
        consume(TokenPurpose.CHANGE_EMAIL, token)
    except InvalidToken:
        raise AccountError(INVALID_EMAIL_LINK) from None
    if find_by_email(new) is not None:
        db.session.rollback()
        raise AccountError(ADDRESS_TAKEN)
    try:
        moved = _move_address(user, old, new)
    except IntegrityError:  # a registration took the address in the meantime
        db.session.rollback()
        raise AccountError(ADDRESS_TAKEN) from None
    if not moved:
        db.session.rollback()
        raise AccountError(INVALID_EMAIL_LINK)
    record(EventTag.EMAIL_CHANGE, actor, target=new, details={"old_email": old})
    db.session.commit()
    return old, new


def _move_address(user: User, old: str, new: str) -> bool:
    """Change the address from `old` to `new`; False if it is no longer `old`.

    Each link is bound to the address it moves away from. Two links asked for from the same
    address (to two new ones) may be confirmed at once, each request having checked the old
    address before the other wrote. One conditional UPDATE decides, in the database: the
    first moves the address and the others match no row, so the account never ends up at
    an address whose link no longer named its current one, and the old address is told once.
    """
    changed = db.session.execute(
        update(User)
        .where(User.id == user.id, User.email == old)
        .values(email=new)
        .execution_options(synchronize_session=False)
    )
    db.session.expire(user)
    return bool(changed.rowcount == 1)  # type: ignore[attr-defined]
