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
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Select, false, select, update

from bastion.accounts import service as accounts
from bastion.accounts.models import User
from bastion.audit import Actor, EventTag, record, record_failure
from bastion.core.db import db
from bastion.core.mail import Mailer
from bastion.core.pagination import Page, clamp, paginate
from bastion.security import sessions
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


def search_users(query: str, *, status: str, number: int, per_page: int) -> Page[User]:
    """Users whose email or name contains `query` (literally: % and _ match themselves)."""
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
