"""Account rules: registration, confirmation, authentication, password change, admin setup.

Services take explicit arguments (the actor, the mailer, the site's URL) and never read
the request, so they are tested without HTTP.
"""

from __future__ import annotations

import hashlib
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime

import structlog
from email_validator import EmailNotValidError, validate_email
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from bastion.accounts import mfa, user_agents
from bastion.accounts.models import User
from bastion.audit import Actor, EventTag, Outcome, record, record_failure
from bastion.core import lanes
from bastion.core.clock import utcnow
from bastion.core.db import db
from bastion.core.mail import Mailer, MailError, MailMessage
from bastion.security import alerts, hash_guard, lockout, passwords, rate_limit
from bastion.security.devices import Device
from bastion.security.hash_guard import HashBusy
from bastion.security.lockout import LockoutPolicy, LockState
from bastion.security.permissions import Role
from bastion.security.rate_limit import LimitName
from bastion.security.tokens import InvalidToken, TokenPurpose, consume, issue, verify

SITE_WORD = "bastion"
log = structlog.get_logger("bastion.accounts")


class AccountError(ValueError):
    """A request the rules refuse; the message is safe to show the user."""


@dataclass(frozen=True)
class Site:
    """What mails need to know about the installation: its public URL, never the Host header."""

    public_url: str
    min_password_length: int


def normalise_email(raw: str) -> str:
    """Return the canonical, lower-cased address or raise AccountError."""
    try:
        result = validate_email(raw.strip(), check_deliverability=False)
    except EmailNotValidError:
        raise AccountError("Enter a valid email address.") from None
    return result.normalized.lower()


def context_words(email: str, name: str) -> list[str]:
    """Words a password must not lean on (NIST SP 800-63B-4 context-specific words)."""
    return [email.split("@")[0], *name.split(), SITE_WORD]


def password_problems(password: str, *, email: str, name: str, site: Site) -> list[str]:
    return passwords.check_password_policy(
        password, min_length=site.min_password_length, context_words=context_words(email, name)
    )


def find_by_email(email: str) -> User | None:
    return db.session.scalar(select(User).where(User.email == email))


def _link(site: Site, path: str) -> str:
    return site.public_url.rstrip("/") + path


# ------------------------------------------------------------------------ register
def register(
    *, email: str, name: str, password: str, actor: Actor, mailer: Mailer, site: Site
) -> None:
    """Create an unconfirmed account and mail its confirmation link.

    An address that already has an account gets a mail saying so instead, and nothing is
    written: the caller shows the same page either way, so registration reveals nothing.
    Both paths hash once, so they also take the same time.
    """
    password_hash = hash_guard.hash_password(password)  # capped: security/hash_guard.py
    existing = find_by_email(email)
    if existing is not None:
        # Repeated sign-ups must not turn into a mail bomb aimed at the address's owner:
        # beyond the confirmation limits, the same answer is given and nothing is sent.
        if not confirmation_mail_allowed(email, actor):
            return
        if existing.confirmed_at is None:
            _send_confirmation(existing, mailer, site)
        else:
            mailer.send(
                MailMessage(
                    to=email,
                    subject="Someone tried to register with your address",
                    body=(
                        "Someone tried to create a Bastion account with this address, which "
                        "already has one. If it was you, sign in instead:\n\n"
                        f"{_link(site, '/auth/login')}\n\n"
                        "If it wasn't, you can ignore this message.\n"
                    ),
                )
            )
        return
    user = User(email=email, name=name, password_hash=password_hash, role=Role.USER.value)
    db.session.add(user)
    try:
        db.session.flush()
    except IntegrityError:  # a concurrent registration won the race: same silent answer
        db.session.rollback()
        return
    record(EventTag.REGISTER, actor, target=email)
    db.session.commit()
    _send_confirmation(user, mailer, site)


def _send_confirmation(user: User, mailer: Mailer, site: Site) -> None:
    token = issue(TokenPurpose.CONFIRM_EMAIL, str(user.id), email=user.email)
    mailer.send(
        MailMessage(
            to=user.email,
            subject="Confirm your Bastion account",
            body=(
                "Hello,\n\nConfirm your account within 48 hours:\n\n"
                f"{_link(site, '/auth/confirm/' + token)}\n\n"
                "If you did not register, ignore this message.\n"
            ),
        )
    )


INVALID_CONFIRMATION = "This confirmation link is invalid or has expired."
INVALID_UNLOCK = "This unlock link is invalid, used or expired."


def _check_link(purpose: TokenPurpose, token: str, message: str) -> None:
    """Raise AccountError(message) unless a mailed link's token is still good."""
    try:
        verify(purpose, token)
    except InvalidToken:
        raise AccountError(message) from None


def _use_link(purpose: TokenPurpose, token: str, message: str) -> User:
    """Spend a mailed link's token and return the account it was issued for.

    The token is bound to the user id and the address it was mailed to; an account whose
    address changed since gets nothing. The caller commits (which also spends the token).
    """
    try:
        payload = consume(purpose, token)
    except InvalidToken:
        raise AccountError(message) from None
    user = db.session.get(User, int(payload["sub"]))
    if user is None or user.email != payload.get("email"):
        db.session.rollback()
        raise AccountError(message)
    return user


def check_confirmation(token: str) -> None:
    """Raise AccountError unless the confirmation token is still good (GET shows a button)."""
    _check_link(TokenPurpose.CONFIRM_EMAIL, token, INVALID_CONFIRMATION)


def confirm(token: str, actor: Actor) -> User:
    """Activate the account a confirmation token names; the token works once."""
    user = _use_link(TokenPurpose.CONFIRM_EMAIL, token, INVALID_CONFIRMATION)
    if user.confirmed_at is None:
        user.confirmed_at = utcnow()
    record(EventTag.CONFIRM, actor, target=user.email)
    db.session.commit()
    return user


# ------------------------------------------------------------------ authentication
def _unparsed_label(email_input: str) -> str:
    """Name a login attempt whose "email" isn't an address, without storing what was typed.

    People paste passwords into the email field; the raw text must never reach the audit
    trail or the log (ASVS 16.2.5). A short digest keeps distinct inputs distinct.
    """
    digest = hashlib.sha256(email_input.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"unparsed:{digest}"


def authenticate(
    email_input: str,
    password: str,
    actor: Actor,
    *,
    device: Device | None = None,
    mailer: Mailer | None = None,
    site: Site | None = None,
    policy: LockoutPolicy | None = None,
) -> User | None:
    """Return the user these credentials prove, else None — after the same work either way.

    Before any hashing the account limits are spent (security/rate_limit.py): ip_user.login
    (this IP and address) and user.login (this address from anywhere; a trusted device cookie
    skips it, so an attacker can't spend the owner's budget). They raise RateLimited (429),
    keyed by the normalised address whether or not it has an account.

    Unknown address, wrong password, disabled account and locked account each cost exactly
    one argon2 verify (a dummy hash stands in for unknown users) and give the caller the
    same None. A locked account is only evaluated for a trusted device within its per-lock
    budget (security/lockout.py); failures of evaluated attempts grow the lock.
    With 2FA on, the right password is only half a sign-in: the failure streak stays until
    `authenticate_second_factor` completes it.
    Raises HashBusy (503) when the process's hashing slots are all taken.
    """
    policy = policy or LockoutPolicy()
    try:
        email = normalise_email(email_input)
    except AccountError:
        email = None
    # The normalised address when valid, so case and spacing can't multiply the budget.
    key = email or email_input.strip().lower()[:320]
    rate_limit.check(LimitName.IP_USER_LOGIN, actor.ip or "unknown", key)
    user = find_by_email(email) if email is not None else None
    trusted = device is not None and user is not None and device.trusted_for(user.id)
    if not trusted:
        rate_limit.check(LimitName.USER_LOGIN, key)
    now = utcnow()
    lock = lockout.state(user.id) if user is not None else lockout.UNLOCKED
    locked = lock.is_locked(now)
    heard = not locked or _device_may_try(device, trusted, lock)
    ok = hash_guard.verify_password(user.password_hash if user else None, password)
    if ok and heard and user is not None and user.active:
        if not mfa.has_totp(user.id):
            # NIST 3.2.2: a success resets the failure count. With 2FA on, a password alone
            # is no success: resetting here would let its holder guess codes for ever.
            lockout.reset(user.id)
        if passwords.needs_rehash(user.password_hash):
            # Parameters changed since this hash was made: upgrade it now (OWASP Password
            # Storage CS); a busy process just tries again at the next sign-in.
            with suppress(HashBusy):
                user.password_hash = hash_guard.hash_password(password)
        db.session.commit()
        lanes.keep_in_front()  # the user's next page needn't queue behind a flood
        return user
    if user is not None and heard and not ok:
        lock = lockout.register_failure(user.id, policy, now)
        if device is not None and trusted:
            device.note_failure()
    # One transaction on every failure path (the count rides with the audit event), so
    # an existing account's failure costs no extra commit an attacker could time.
    record(
        EventTag.LOGIN_FAILURE,
        actor,
        outcome=Outcome.FAILURE,
        target=email or _unparsed_label(email_input),
        details={"known_account": user is not None, "locked": locked, "device": trusted},
    )
    db.session.commit()
    alerts.after_login_failure(actor, email or _unparsed_label(email_input))  # a few indexed COUNTs
    if user is not None and lock.newly_locked:
        _account_locked(user, lock, actor, mailer, site)
    return None


@dataclass(frozen=True)
class LockoutContext:
    """What counting an attempt on the account's lockout needs besides the user."""

    device: Device | None = None
    mailer: Mailer | None = None  # None: a new lock is audited but mails nobody
    site: Site | None = None
    policy: LockoutPolicy = field(default_factory=LockoutPolicy)


def _device_may_try(device: Device | None, trusted: bool, lock: LockState) -> bool:
    """Whether this browser is heard while the account is locked (OWASP device cookies).

    Only a trusted browser, a few times per lock period (each call spends one); the NIST
    hard lock (disabled password) hears nobody.
    """
    return (
        device is not None
        and trusted
        and not lock.disabled
        and device.spend_locked_attempt(lock.lock_id)
    )


def authenticate_second_factor(
    user: User, code: str, actor: Actor, context: LockoutContext | None = None
) -> mfa.Factor | None:
    """Check a TOTP or recovery code as one more sign-in attempt on the account's lockout.

    NIST SP 800-63B-4 3.2.2 caps consecutive failed attempts per account whichever factor
    failed, so a wrong code counts like a wrong password: same streak, same growing locks,
    same hard lock and lock mail. A right code completes the sign-in and resets the streak.
    While the account is locked the code is not even checked (a right one must not spend
    its time step or recovery code for nothing), unless this browser is a trusted device
    within its budget, exactly as at the password step; the caller shows its usual
    wrong-code answer. The caller throttles attempts (accounts/throttle.py) first.
    """
    context = context or LockoutContext()
    now = utcnow()
    heard, trusted = _heard(context, user, now)
    if not heard:
        record_failure(EventTag.MFA_VERIFY, actor, target=user.email, details={"locked": True})
        return None
    factor = mfa.verify_second_factor(user, code, actor)
    if factor is not None:
        lockout.reset(user.id)
        db.session.commit()
        return factor
    _count_failure(context, user, actor, now, trusted, wrong_code=True)
    return None


def _heard(context: LockoutContext, user: User, now: datetime) -> tuple[bool, bool]:
    """Whether an attempt on `user` is checked at all (not locked, or a trusted device
    within its budget), and whether this browser is trusted."""
    device = context.device
    trusted = device is not None and device.trusted_for(user.id)
    lock = lockout.state(user.id)
    return not lock.is_locked(now) or _device_may_try(device, trusted, lock), trusted


def _count_failure(
    context: LockoutContext,
    user: User,
    actor: Actor,
    now: datetime,
    trusted: bool,
    *,
    wrong_code: bool = False,
) -> None:
    """One more failure on the account's streak (and the trusted device's); a new lock is
    audited and mailed."""
    lock = lockout.register_failure(user.id, context.policy, now)
    if context.device is not None and trusted:
        context.device.note_failure()
    db.session.commit()
    if lock.newly_locked:
        _account_locked(user, lock, actor, context.mailer, context.site, wrong_code=wrong_code)


def _account_locked(
    user: User,
    lock: LockState,
    actor: Actor,
    mailer: Mailer | None,
    site: Site | None,
    *,
    wrong_code: bool = False,
) -> None:
    """Audit a new lock and mail its owner, at most once per lock period.

    `wrong_code`: the failure that locked was a second factor after the right password,
    so the mail tells the owner their password is known.
    """
    record_failure(
        EventTag.ACCOUNT_LOCKED,
        actor,
        target=user.email,
        details={
            "failures": lock.failures,
            "until": lock.locked_until.isoformat() if lock.locked_until else None,
            "disabled": lock.disabled,
            "factor": "code" if wrong_code else "password",
        },
    )
    if mailer is None or site is None or not lockout.claim_notification(user.id):
        return
    token = issue(TokenPurpose.UNLOCK, str(user.id), email=user.email)
    if lock.disabled:
        state = (
            f"After {lock.failures} failed attempts in a row, signing in with your password "
            "is switched off until you unlock your account with the link below or reset "
            "your password."
        )
    else:
        until = lock.locked_until.strftime("%Y-%m-%d %H:%M UTC") if lock.locked_until else ""
        state = (
            f"After {lock.failures} failed attempts in a row, your account is locked until "
            f"{until}. Browsers you have signed in with before can still sign in."
        )
    if wrong_code:
        cause = (
            "Someone has entered your password correctly and then repeatedly a wrong "
            "two-factor code"
        )
        advice = "your password is known to someone else: choose a new one now at"
    else:
        cause = "Someone has repeatedly entered a wrong password"
        advice = "someone may be guessing your password: unlock, then choose a new password at"
    body = (
        f"Hello,\n\n{cause} for your Bastion account. {state}\n\nIf this was you, unlock "
        "your account now (the link works once, for 24 hours):\n\n"
        f"{_link(site, '/auth/unlock/' + token)}\n\n"
        f"If it wasn't you, {advice} {_link(site, '/auth/reset')}.\n"
    )
    _send_quietly(
        mailer, MailMessage(to=user.email, subject="Your Bastion account is locked", body=body)
    )


def _send_quietly(mailer: Mailer, message: MailMessage) -> None:
    # A notification that can't be delivered must not change the login's answer (which
    # would tell a guesser the account exists).
    try:
        mailer.send(message)
    except MailError:
        log.error("security notification not sent", subject=message.subject)


def notify_new_device(
    user: User, *, actor: Actor, user_agent: str, mailer: Mailer, site: Site
) -> None:
    """Tell the owner their password was just used in a browser we have not seen them use."""
    record(EventTag.LOGIN_NEW_DEVICE, actor, target=user.email, details={"agent": user_agent[:200]})
    db.session.commit()
    when = utcnow().strftime("%Y-%m-%d %H:%M UTC")
    browser = user_agents.describe_for_mail(user_agent)  # never the header's own words
    _send_quietly(
        mailer,
        MailMessage(
            to=user.email,
            subject="New sign-in to your Bastion account",
            body=(
                "Hello,\n\nYour Bastion account was signed in to from a new "
                f"device or browser:\n\n  when: {when}\n  address: {actor.ip or 'unknown'}"
                f"\n  browser: {browser}\n\nIf this was you, there is "
                "nothing to do. If it wasn't, change your password now at "
                f"{_link(site, '/auth/reset')} and review your sessions at "
                f"{_link(site, '/account/sessions')}.\n"
            ),
        ),
    )


def check_unlock(token: str) -> None:
    """Raise AccountError unless the unlock link is still good (GET shows a button)."""
    _check_link(TokenPurpose.UNLOCK, token, INVALID_UNLOCK)


def unlock(token: str, actor: Actor) -> User:
    """Lift the lock (and a disabled password) the link was mailed for; the link works once."""
    user = _use_link(TokenPurpose.UNLOCK, token, INVALID_UNLOCK)
    lockout.reset(user.id)
    record(EventTag.ACCOUNT_UNLOCK, actor, target=user.email)
    db.session.commit()
    return user


def verify_current_password(
    user: User, password: str, actor: Actor, context: LockoutContext | None = None
) -> bool:
    """Check a signed-in user's password as one more attempt on the account's lockout.

    For re-authentication, password change, email change and turning 2FA off. A stolen
    session could otherwise guess the password there at the per-minute account limit
    for ever; now each wrong one counts on the same streak as at the sign-in form, with
    the same growing locks, the hard lock at BASTION_LOCKOUT_MAX_FAILURES and the lock
    mail. While the account is locked the password is not checked, unless this browser
    is a trusted device within its budget, as at sign-in. A right one does not reset the
    streak: only a complete sign-in (every factor) does.
    """
    context = context or LockoutContext()
    now = utcnow()
    heard, trusted = _heard(context, user, now)
    if not heard:
        return False
    if hash_guard.verify_password(user.password_hash, password):
        return True
    _count_failure(context, user, actor, now, trusted)
    return False


def reauthenticate(
    user: User, password: str, actor: Actor, context: LockoutContext | None = None
) -> bool:
    """Check the signed-in user's password again; failures are audited and counted."""
    if verify_current_password(user, password, actor, context):
        record(EventTag.REAUTH, actor, target=user.email)
        db.session.commit()
        return True
    record_failure(EventTag.REAUTH, actor, target=user.email)
    return False


def record_login(user: User, actor: Actor, *, remember: bool) -> None:
    record(
        EventTag.LOGIN_SUCCESS,
        Actor(user_id=user.id, email=user.email, ip=actor.ip, request_id=actor.request_id),
        target=user.email,
        details={"remember": remember},
    )
    db.session.commit()
    alerts.after_login_success(actor, user_id=user.id, email=user.email, role=user.role)


def confirmation_mail_allowed(email: str, actor: Actor) -> bool:
    """Spend `ip.confirm`, then `user.confirm`; True while both admit one more mail.

    For the mails an existing address gets when it is registered again or signs in
    unconfirmed: one inbox bombed from many addresses, or many inboxes from one.
    """
    return rate_limit.hit(LimitName.IP_CONFIRM, actor.ip or "unknown") and rate_limit.hit(
        LimitName.USER_CONFIRM, email
    )


def resend_confirmation(user: User, mailer: Mailer, site: Site) -> None:
    _send_confirmation(user, mailer, site)


# ------------------------------------------------------------------- password change
def change_password(
    user: User,
    *,
    current: str,
    new: str,
    actor: Actor,
    site: Site,
    context: LockoutContext | None = None,
) -> None:
    """Replace the password after proving the current one (ASVS 6.2.3)."""
    if not verify_current_password(user, current, actor, context):
        record_failure(EventTag.PASSWORD_CHANGE, actor, target=user.email)
        raise AccountError("Your current password is not correct.")
    problems = password_problems(new, email=user.email, name=user.name, site=site)
    if problems:
        raise AccountError(" ".join(problems))
    user.password_hash = hash_guard.hash_password(new)
    user.password_changed_at = utcnow()
    record(EventTag.PASSWORD_CHANGE, actor, target=user.email)
    db.session.commit()


# ------------------------------------------------------------------- creating users
ADDRESS_EXISTS = "An account with that email address already exists."


def create_user(
    *, email: str, name: str, password: str, role: str, actor: Actor, site: Site
) -> User:
    """Create a confirmed account (CLI and admin setup); the password policy still applies."""
    email = normalise_email(email)
    try:
        Role(role)
    except ValueError:
        raise AccountError(f"Unknown role {role!r}.") from None
    name = name.strip()
    if not name:
        raise AccountError("Enter a name.")
    problems = password_problems(password, email=email, name=name, site=site)
    if problems:
        raise AccountError(" ".join(problems))
    if find_by_email(email) is not None:
        raise AccountError(ADDRESS_EXISTS)
    user = User(
        email=email,
        name=name,
        password_hash=hash_guard.hash_password(password),
        role=role,
        confirmed_at=utcnow(),
    )
    db.session.add(user)
    try:
        db.session.flush()
    except IntegrityError:
        # A concurrent request (two invitations to one address accepted at once) created
        # the address after the check above: the unique index decides, with a clear answer.
        db.session.rollback()
        raise AccountError(ADDRESS_EXISTS) from None
    record(EventTag.USER_CREATED, actor, target=email, details={"role": role})
    db.session.commit()
    return user


# ------------------------------------------------------------------------- invites
def issue_invite(email: str, *, actor: Actor, mailer: Mailer, site: Site) -> None:
    """Mail a 7-day, single-use invitation to register `email`."""
    email = normalise_email(email)
    token = issue(TokenPurpose.INVITE, email)
    mailer.send(
        MailMessage(
            to=email,
            subject="You are invited to Bastion",
            body=(
                "You have been invited to create a Bastion account. The link works once "
                f"and for 7 days:\n\n{_link(site, '/auth/register?invite=' + token)}\n"
            ),
        )
    )
    record(EventTag.INVITE, actor, target=email)
    db.session.commit()


def check_invite(token: str) -> str:
    """Return the invited address, or raise AccountError."""
    try:
        payload = verify(TokenPurpose.INVITE, token)
    except InvalidToken:
        raise AccountError("This invitation is invalid, used or expired.") from None
    return str(payload["sub"])


def accept_invite(token: str, *, name: str, password: str, actor: Actor, site: Site) -> User:
    """Create the invited, already-confirmed account; the invitation works once."""
    email = check_invite(token)
    try:
        consume(TokenPurpose.INVITE, token)
        return create_user(
            email=email, name=name, password=password, role=Role.USER.value, actor=actor, site=site
        )
    except InvalidToken:
        raise AccountError("This invitation is invalid, used or expired.") from None
    except AccountError:
        db.session.rollback()  # the invitation stays usable for a corrected form
        raise


def admin_exists() -> bool:
    count = db.session.scalar(
        select(func.count()).select_from(User).where(User.role == Role.ADMIN.value)
    )
    return bool(count)


SETUP_LINK_GONE = "This setup link is no longer valid."
# Advisory lock key for first-admin setup ("bastion" + 0x02; the audit chain uses 0x01).
SETUP_LOCK_KEY = 0x62617374696F6E02


def issue_setup_link(site: Site) -> str | None:
    """A one-time link that creates the first admin, or None when an admin exists."""
    if admin_exists():
        return None
    return _link(site, "/setup/" + issue(TokenPurpose.ADMIN_SETUP, "first-admin"))


def check_setup_token(token: str) -> None:
    if admin_exists():
        raise AccountError(SETUP_LINK_GONE)
    try:
        verify(TokenPurpose.ADMIN_SETUP, token)
    except InvalidToken:
        raise AccountError(SETUP_LINK_GONE) from None


def _first_admin_slot_free() -> bool:
    """Serialise first-admin setups for the rest of this transaction, then look again.

    Each node's `bastion serve` prints its own setup link while no admin exists, so several
    valid links (different tokens: the used-token key does not collide) can be posted at
    once, each having seen no admin. Only the first may create one (the *first* admin),
    whichever node it reaches, so the lock is the database's: PostgreSQL's transaction-level
    advisory lock; on SQLite, consume() has already written, so this transaction holds the
    database write lock. After the lock, READ COMMITTED (or SQLite's single writer) shows
    any admin a concurrent setup committed.
    """
    if db.session.connection().dialect.name == "postgresql":
        db.session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SETUP_LOCK_KEY})
    return not admin_exists()


def setup_admin(
    token: str, *, email: str, name: str, password: str, actor: Actor, site: Site
) -> User:
    """Create the first admin through a setup token; refused once any admin exists."""
    check_setup_token(token)
    try:
        consume(TokenPurpose.ADMIN_SETUP, token)
    except InvalidToken:
        raise AccountError(SETUP_LINK_GONE) from None
    if not _first_admin_slot_free():
        db.session.rollback()
        raise AccountError(SETUP_LINK_GONE)
    try:
        user = create_user(
            email=email, name=name, password=password, role=Role.ADMIN.value, actor=actor, site=site
        )
    except AccountError:
        db.session.rollback()  # the token stays unused: the form can be corrected and resent
        raise
    record(EventTag.ADMIN_SETUP, actor, target=user.email, outcome=Outcome.SUCCESS)
    db.session.commit()
    return user
