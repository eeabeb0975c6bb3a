"""Admin rules for users and sessions, with their guard rails.

Each change is one transaction that carries its audit event, with the values before and
after. A refused change writes a failure event of its own. Services take the acting admin
as an explicit `Actor` (and the session store, mailer, site as arguments) and never read
the request, so they are tested without HTTP.

Guard rails: nobody disables or changes the role of their own account, and the last active
administrator can be neither disabled nor demoted. "Administrator" means a role granting
ADMIN_USERS, never a role name. The active administrators' rows are locked
(``SELECT … FOR UPDATE``, in id order) before they are counted, so two admins demoting
each other at the same moment cannot leave the installation without one. SQLite has no row
locks: there the transaction takes the database's single write lock before counting.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Select, exists, false, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from bastion.accounts import lifecycle, mfa
from bastion.accounts import service as accounts
from bastion.accounts.models import RecoveryCode, TotpCredential, User
from bastion.audit import Actor, EventTag, record, record_failure
from bastion.core.clock import utcnow
from bastion.core.db import db
from bastion.core.mail import Mailer, MailMessage
from bastion.core.pagination import Page, clamp, paginate
from bastion.security import alerts, lockout, sessions
from bastion.security.permissions import ROLE_PERMISSIONS, Permission, Role
from bastion.security.session_store import SessionRecord, SessionStore

MAX_ID = 2**31 - 1  # ids are 32-bit integers on PostgreSQL; the URL converter stops larger ones
SESSION_KEY = re.compile(r"[0-9a-f]{64}")  # store keys are SHA-256 hex digests
ADMIN_ROLES = frozenset(
    role for role, granted in ROLE_PERMISSIONS.items() if Permission.ADMIN_USERS in granted
)


class AdminError(ValueError):
    """A request the rules refuse; the message is safe to show the admin."""


class Conflict(AdminError):
    """The current state forbids the change (HTTP 409)."""


class GuardRail(Conflict):
    """The change would lock the caller or everyone out of administration."""


class NotFound(LookupError):
    """No such user or session (what the caller may not see answers the same)."""


# ------------------------------------------------------------------------- lookups
def get_user(user_id: int) -> User:
    """Return the user with this id or raise NotFound."""
    user = db.session.get(User, user_id) if 1 <= user_id <= MAX_ID else None
    if user is None:
        raise NotFound
    return user


def locked_clause(now: datetime) -> ColumnElement[bool]:
    """Users whose account is locked at `now` (a timed lock, or the hard lock)."""
    return exists().where(
        lockout.AccountLockout.user_id == User.id,
        or_(
            lockout.AccountLockout.disabled_at.is_not(None),
            lockout.AccountLockout.locked_until > now,
        ),
    )


def without_2fa_clause() -> ColumnElement[bool]:
    """Users with no TOTP credential."""
    return ~exists().where(TotpCredential.user_id == User.id)


def search_users(
    query: str,
    *,
    status: str,
    number: int,
    per_page: int,
    security: str = "",
    now: datetime | None = None,
) -> Page[User]:
    """Users whose email or name contains `query` (literally: % and _ match themselves).

    `security` narrows to accounts locked at `now` ("locked") or without 2FA ("no2fa").
    """
    statement: Select[User] = select(User).order_by(User.email)
    query = query.strip()
    if query:
        # Bound parameters, and autoescape turns LIKE wildcards in the query into literals.
        statement = statement.where(
            User.email.icontains(query, autoescape=True)
            | User.name.icontains(query, autoescape=True)
        )
    if status == "active":
        statement = statement.where(User.active.is_(True))
    elif status == "disabled":
        statement = statement.where(User.active.is_(False))
    if security == "locked":
        statement = statement.where(locked_clause(now or utcnow()))
    elif security == "no2fa":
        statement = statement.where(without_2fa_clause())
    return paginate(db.session, statement, number=number, per_page=per_page)


# ------------------------------------------------------------------- guard rails
def _lock_active_admin_ids() -> list[int]:
    """Lock, then return, the ids of the active administrators (see the module docstring)."""
    if db.engine.dialect.name == "sqlite":
        # pysqlite begins a transaction lazily, at the first write. A write matching no row
        # takes SQLite's one write lock now, so the count below cannot go stale.
        db.session.execute(
            update(User).where(false()).values(active=User.active),
            execution_options={"synchronize_session": False},
        )
    statement = (
        select(User.id)
        .where(
            User.role.in_([role.value for role in ADMIN_ROLES]),
            User.active.is_(True),
            User.confirmed_at.is_not(None),
        )
        .order_by(User.id)
        .with_for_update()
    )
    return list(db.session.scalars(statement))


def _lock_user(user_id: int) -> User:
    if not 1 <= user_id <= MAX_ID:
        raise NotFound
    user: User | None = db.session.scalar(select(User).where(User.id == user_id).with_for_update())
    if user is None:
        db.session.rollback()
        raise NotFound
    return user


def _refuse(tag: EventTag, actor: Actor, user: User, reason: str, message: str) -> GuardRail:
    target, user_id = user.email, user.id
    db.session.rollback()  # release the row locks; nothing was changed
    record_failure(tag, actor, target=target, details={"user_id": user_id, "reason": reason})
    return GuardRail(message)


def _check_removal(tag: EventTag, actor: Actor, user: User, admins: list[int]) -> None:
    """Raise GuardRail if taking admin power from `user` would leave no active admin."""
    if user.id in admins and len(admins) <= 1:
        raise _refuse(
            tag,
            actor,
            user,
            "last-admin",
            "This is the last active administrator: make someone else an administrator first.",
        )


# ------------------------------------------------------------------------ actions
def change_role(user_id: int, role: str, *, actor: Actor) -> bool:
    """Give the user `role`; return False when it already was theirs.

    Raises AdminError for an unknown role, GuardRail for the caller's own account or the
    last administrator, NotFound for an unknown user. The user's sessions end: a privilege
    change starts a new session (OWASP Session Management CS: renew on privilege change).
    """
    try:
        new_role = Role(role)
    except ValueError:
        raise AdminError("Choose one of the listed roles.") from None
    admins = _lock_active_admin_ids()
    user = _lock_user(user_id)
    tag = EventTag.ADMIN_ROLE_CHANGE
    if actor.user_id == user.id:
        raise _refuse(tag, actor, user, "self", "You cannot change the role of your own account.")
    before = user.role
    if before == new_role.value:
        db.session.rollback()
        return False
    if new_role not in ADMIN_ROLES:
        _check_removal(tag, actor, user, admins)
    user.role = new_role.value
    record(
        tag,
        actor,
        target=user.email,
        details={"user_id": user.id, "before": {"role": before}, "after": {"role": user.role}},
    )
    db.session.commit()
    _end_sessions(user.id)
    return True


def set_active(user_id: int, active: bool, *, actor: Actor) -> bool:
    """Enable or disable the account; return False when it already was so.

    Disabling ends all the user's sessions and remember-me tokens right after the change
    commits (ASVS 7.4.2). Raises GuardRail for the caller's own account or the last
    administrator, NotFound for an unknown user.
    """
    admins = _lock_active_admin_ids()
    user = _lock_user(user_id)
    tag = EventTag.ADMIN_USER_ENABLE if active else EventTag.ADMIN_USER_DISABLE
    if not active and actor.user_id == user.id:
        raise _refuse(tag, actor, user, "self", "You cannot disable your own account.")
    if user.active == active:
        db.session.rollback()
        return False
    if not active:
        _check_removal(tag, actor, user, admins)
    user.active = active
    record(
        tag,
        actor,
        target=user.email,
        details={"user_id": user.id, "before": {"active": not active}, "after": {"active": active}},
    )
    db.session.commit()
    if not active:
        _end_sessions(user.id)
    return True


def _end_sessions(user_id: int) -> None:
    """End a user's sessions and remember-me tokens after a committed change of their rights.

    After the commit, not inside it: the change's transaction holds locks (the admin rows,
    SQLite's write lock, the audit chain's) that the session store, writing on its own
    connection, would wait for. Should the store fail now, nothing is lost: a disabled
    account is refused on its next request anyway, and permissions are read per request.
    """
    sessions.revoke_user_sessions(user_id)


def revoke_sessions(user_id: int, *, actor: Actor) -> int:
    """End every session and remember-me token of the user; return how many sessions ended.

    On the caller's own account the current session is kept (like a password change).
    """
    user = get_user(user_id)
    own = actor.user_id == user.id
    # The event is only added here, not flushed: the store call inside revoke_user_sessions
    # runs first, on its own connection, and the commit then writes the event together with
    # the deletion of the remember-me tokens.
    alive = len(sessions.list_user_sessions(user.id))
    remembered = sessions.remember_tokens_for(user.id)
    record(
        EventTag.ADMIN_SESSIONS_REVOKE,
        actor,
        target=user.email,
        details={
            "user_id": user.id,
            "before": {"sessions": alive, "remember_tokens": remembered},
            "after": {"sessions": 1 if own and alive else 0, "remember_tokens": 0},
        },
    )
    return sessions.revoke_user_sessions(user.id, keep_current=own)


@dataclass(frozen=True)
class SessionRow:
    """One signed-in session as the admin sees it."""

    key: str
    user_id: int
    email: str
    name: str
    ip: str | None
    user_agent: str | None
    created_at: datetime
    last_seen_at: datetime


def _alive(record_: SessionRecord, now: datetime, idle: timedelta) -> bool:
    return now < record_.expires_at and now - record_.last_seen_at < idle


def list_sessions(
    store: SessionStore,
    *,
    idle: timedelta,
    now: datetime,
    user_id: int | None,
    number: int,
    per_page: int,
) -> Page[SessionRow]:
    """Signed-in sessions alive now, most recently seen first (one user's, or all)."""
    idle_seconds = int(idle.total_seconds())

    def fetch(page: int) -> tuple[list[SessionRecord], int]:
        return store.list_all(
            user_id=user_id,
            now=now,
            idle_seconds=idle_seconds,
            limit=per_page,
            offset=(page - 1) * per_page,
        )

    records, total = fetch(number)
    if not records and number > clamp(number, total, per_page):  # past the end: show the last
        number = clamp(number, total, per_page)
        records, total = fetch(number)
    owners = {r.user_id for r in records if r.user_id is not None}
    users = {u.id: u for u in db.session.scalars(select(User).where(User.id.in_(owners)))}
    rows = [
        SessionRow(
            key=r.key,
            user_id=r.user_id,
            email=users[r.user_id].email,
            name=users[r.user_id].name,
            ip=r.ip,
            user_agent=r.user_agent,
            created_at=r.created_at,
            last_seen_at=r.last_seen_at,
        )
        for r in records
        if r.user_id is not None and r.user_id in users
    ]
    return Page(items=rows, number=number, per_page=per_page, total=total)


def get_session(
    key: str, *, store: SessionStore, idle: timedelta, now: datetime
) -> tuple[SessionRecord, User]:
    """Return a live signed-in session and its owner, or raise NotFound.

    Malformed, unknown, anonymous and ended sessions are all simply not found.
    """
    if not SESSION_KEY.fullmatch(key):
        raise NotFound
    found = store.get(key)
    if found is None or found.user_id is None or not _alive(found, now, idle):
        raise NotFound
    user = db.session.get(User, found.user_id)
    if user is None:
        raise NotFound
    return found, user


def revoke_session(
    key: str,
    *,
    actor: Actor,
    store: SessionStore,
    idle: timedelta,
    now: datetime,
    current_key: str | None,
) -> str:
    """End one signed-in session; return its owner's email.

    Raises NotFound (see get_session), and GuardRail for the caller's own current session
    (signing out is the way to end that).
    """
    found, user = get_session(key, store=store, idle=idle, now=now)
    if key == current_key:
        raise GuardRail("This is your current session: use Sign out to end it.")
    record(
        EventTag.ADMIN_SESSION_REVOKE,
        actor,
        target=user.email,
        details={
            "user_id": user.id,
            "session": key[:12],
            "ip": found.ip,
            "before": {"active": True},
            "after": {"active": False},
        },
    )
    # Also drops the remember-me token tied to it, which would otherwise revive the session.
    sessions.revoke_session(key)
    db.session.commit()
    return user.email


def invite(email: str, *, actor: Actor, mailer: Mailer, site: accounts.Site, accepted: bool) -> str:
    """Mail a single-use invitation link to `email`; return the normalised address.

    The accounts service mints the INVITE token and writes the audit event. Admins may learn
    that an address already has an account, so that is said plainly. `accepted` says whether
    the registration page honours invitations (not when registration is closed): a link
    that cannot work is not sent.
    """
    if not accepted:
        raise Conflict(
            "Registration is closed, so an invitation could not be used. "
            "Set BASTION_REGISTRATION to 'invite' (or 'open') first."
        )
    try:
        address = accounts.normalise_email(email)
    except accounts.AccountError as exc:
        raise AdminError(str(exc)) from None
    if accounts.find_by_email(address) is not None:
        raise Conflict("An account with that email address already exists.")
    accounts.issue_invite(address, actor=actor, mailer=mailer, site=site)
    return address


# ------------------------------------------------- lockout, 2FA and password recovery
@dataclass(frozen=True)
class SecurityState:
    """What the user page shows about an account's lock and second factor."""

    lock: lockout.LockState
    locked: bool
    totp: bool
    recovery_codes: int


def security_state(user_id: int, now: datetime) -> SecurityState:
    lock = lockout.state(user_id)
    codes = db.session.scalar(
        select(func.count())
        .select_from(RecoveryCode)
        .where(RecoveryCode.user_id == user_id, RecoveryCode.used_at.is_(None))
    )
    return SecurityState(
        lock=lock, locked=lock.is_locked(now), totp=mfa.has_totp(user_id), recovery_codes=codes or 0
    )


def _lock_facts(lock: lockout.LockState, now: datetime) -> dict[str, object]:
    return {
        "locked": lock.is_locked(now),
        "hard_lock": lock.disabled,
        "failures": lock.failures,
        "until": lock.locked_until.isoformat() if lock.locked_until else None,
    }


def unlock(user_id: int, *, actor: Actor, now: datetime) -> bool:
    """Lift the account's lock (the hard lock too) and forget its failure streak.

    Returns False when there was nothing to forget. The owner's password is unchanged: an
    admin unlocks, the owner still has to know the password.
    """
    user = _lock_user(user_id)
    before = lockout.state(user.id)
    if before == lockout.UNLOCKED:
        db.session.rollback()
        return False
    lockout.reset(user.id)
    record(
        EventTag.ADMIN_USER_UNLOCK,
        actor,
        target=user.email,
        details={
            "user_id": user.id,
            "before": _lock_facts(before, now),
            "after": _lock_facts(lockout.UNLOCKED, now),
        },
    )
    db.session.commit()
    return True


def reset_2fa(user_id: int, *, actor: Actor, must_enrol: bool) -> bool:
    """Remove the user's TOTP credential and recovery codes; end their sessions.

    For someone who lost their authenticator and codes. Returns False when 2FA was not on.
    Refused on the caller's own account (the account page does that, with the code). With
    `must_enrol` (BASTION_REQUIRE_2FA covers the role) the next sign-in leads to enrolment.
    """
    user = _lock_user(user_id)
    tag = EventTag.ADMIN_MFA_RESET
    if actor.user_id == user.id:
        raise _refuse(
            tag,
            actor,
            user,
            "self",
            "Manage your own two-factor authentication on your account page.",
        )
    state = security_state(user.id, utcnow())
    if not state.totp and not state.recovery_codes:
        db.session.rollback()
        return False
    alive = len(sessions.list_user_sessions(user.id))
    record(
        tag,
        actor,
        target=user.email,
        details={
            "user_id": user.id,
            "before": {
                "totp": state.totp,
                "recovery_codes": state.recovery_codes,
                "sessions": alive,
            },
            "after": {"totp": False, "recovery_codes": 0, "sessions": 0},
            "must_enrol": must_enrol,
        },
    )
    mfa.disable(user, actor)  # deletes both and commits, with the event above
    _end_sessions(user.id)
    return True


UNUSABLE_HASH_PREFIX = "!admin-reset:"  # no argon2 hash starts so: nothing matches it


def force_password_reset(user_id: int, *, actor: Actor, site: accounts.Site) -> MailMessage:
    """Make the current password unusable, end every session, return the reset mail.

    The stored hash becomes a random value that is no argon2 hash, so no password matches
    it (the login still pays one argon2 verify, against the dummy hash) and every older
    reset link, bound to the old hash's fingerprint, dies. The owner chooses the new
    password through the mailed link: an admin never sets or learns one (ASVS 6.4.6). The
    link is minted by the ordinary reset mail (lifecycle.reset_request_mail) in the same
    transaction as the change and its audit event. Refused for the caller's own account
    and for a disabled one (its reset link would not work).
    """
    user = _lock_user(user_id)
    tag = EventTag.ADMIN_PASSWORD_RESET
    if actor.user_id == user.id:
        raise _refuse(
            tag, actor, user, "self", "Change your own password on your account page instead."
        )
    if not user.active:
        raise _refuse(tag, actor, user, "disabled", "The account is disabled: enable it first.")
    alive = len(sessions.list_user_sessions(user.id))
    usable = not user.password_hash.startswith(UNUSABLE_HASH_PREFIX)
    user.password_hash = UNUSABLE_HASH_PREFIX + secrets.token_hex(16)
    record(
        tag,
        actor,
        target=user.email,
        details={
            "user_id": user.id,
            "before": {"usable_credential": usable, "sessions": alive},
            "after": {"usable_credential": False, "sessions": 0, "reset_link_mailed": True},
        },
    )
    # Records the reset request and commits everything; the link is bound to the new hash.
    message = lifecycle.reset_request_mail(user.email, actor=actor, site=site)
    _end_sessions(user.id)
    if message is None:  # cannot happen for an active account; never mail nothing silently
        raise AdminError("The reset link could not be made.")
    link = re.search(r"https?://\S+/auth/reset/\S+", message.body)
    if link is None:
        raise AdminError("The reset link could not be made.")
    return MailMessage(
        to=message.to,
        subject="An administrator reset your Bastion password",
        body=(
            "Hello,\n\nAn administrator of Bastion has reset the password of your "
            "account: the old one no longer works and you have been signed out everywhere. "
            "Choose a new password with this link; it works once, for 30 minutes:\n\n"
            f"{link.group(0)}\n\n"
            "When it has expired, ask for a new one at "
            f"{site.public_url.rstrip('/')}/auth/reset.\n"
        ),
    )


# ------------------------------------------------------------------------- alerts
def acknowledge_alert(alert_id: int, *, actor: Actor, now: datetime) -> bool:
    """Mark an open alert as seen; return False when it already was acknowledged.

    Raises NotFound for an id that is no alert. The acknowledgement row and its audit event
    commit together; the alert event itself stays as it was (audit rows are insert-only).
    """
    row = alerts.get_alert(alert_id) if 1 <= alert_id <= MAX_ID else None
    if row is None:
        raise NotFound
    if alerts.is_acknowledged(row.id):
        return False
    target = row.target
    db.session.add(
        alerts.AlertAck(
            event_id=row.id, acknowledged_at=now, actor_id=actor.user_id, actor_email=actor.email
        )
    )
    record(
        EventTag.ADMIN_ALERT_ACK,
        actor,
        target=target,
        details={
            "alert_id": alert_id,
            "before": {"acknowledged": False},
            "after": {"acknowledged": True},
        },
    )
    try:
        db.session.commit()
    except IntegrityError:  # another admin acknowledged it at the same moment
        db.session.rollback()
        return False
    return True
