"""Server-side sessions: a signed random id in ``__Host-session``, the data in a store.

Why our own ``SessionInterface``: Flask's default cookie session cannot be revoked (ASVS
7.4.1) and Flask-Session can unpickle stored data (see session_store.py).

What holds here:
- ids are 256-bit CSPRNG values (ASVS 7.2.3), signed with HMAC-SHA-256 and SECRET_KEY
  (fallbacks accepted, so a key rotation logs nobody out; the cookie is re-signed with the
  new key; a cookie signed with HMAC-SHA-1 before the switch is re-signed the same way,
  see signing.py);
- the session is loaded lazily, so per-IP rate limits run before any store round trip;
- idle (30 min) and absolute (8 h) timeouts are enforced server-side (ASVS 7.3.1/7.3.2);
  anonymous sessions (CSRF token on the login form) live an hour at most;
- an anonymous session that holds nothing but Flask-WTF's raw CSRF token is kept in its
  signed cookie, not in the store (`STATELESS_MARK`): a GET of the sign-in form writes no
  row and costs no store round trip, so anonymous traffic can't fill the store. Its
  cookie value is ``~<issued>~<token>``: signed like an id, so not forgeable, and never
  looked up, so a signed-in session's id can't pass for one. The first other value it must
  hold (a flash, a pending sign-in) moves it into the store under a new random id;
- the id changes whenever the signed-in user changes: at login, logout and on demand
  (ASVS 7.2.4, no fixation), even if a caller forgets to rotate;
- "remember me" is a random token stored server-side (hashed), so logout and revocation
  kill it; it restores a session that never counts as a fresh login.
"""

from __future__ import annotations

import hashlib
import itertools
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from http import HTTPStatus
from typing import Any, NamedTuple

import structlog
from flask import Flask, Request, Response, current_app, g, request
from flask.sessions import SessionInterface, SessionMixin
from itsdangerous import BadSignature, Signer
from sqlalchemy import ForeignKey, String, delete, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Mapped, mapped_column

from bastion.audit import Actor, EventTag, record, record_failure
from bastion.core import randomness
from bastion.core.clock import utcnow
from bastion.core.db import Base, db
from bastion.core.errors import DEPENDENCY_DOWN, DependencyUnavailable, error_response
from bastion.security import signing, tokens
from bastion.security.client import client_ip
from bastion.security.csrf import WTF_FIELD_NAME
from bastion.security.session_store import (
    SessionRecord,
    SessionStore,
    SessionStoreUnavailable,
    SqlSessionStore,
    UnreadableSession,
)

log = structlog.get_logger("bastion.sessions")

SESSION_COOKIE = "__Host-session"
REMEMBER_COOKIE = "__Host-remember"
SESSION_SALT = "bastion.session"
REMEMBER_SALT = "bastion.remember"
USER_KEY = "_user_id"  # the key Flask-Login keeps the user id under
REMEMBER_LINK = "remember"  # record.extra: hash of the remember-me token this session holds
TOUCH_INTERVAL = timedelta(seconds=60)  # last-seen precision; saves a write per request
PURGE_ONE_IN = 200  # opportunistic purge of expired rows, one new session in N
STATELESS_MARK = "~"  # starts a stateless anonymous session's cookie value; no id has it


def hash_id(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


class RememberToken(Base):
    """A "remember me" token, stored as a hash; deleting the row kills the cookie."""

    __tablename__ = "remember_tokens"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]


@dataclass(frozen=True)
class SessionPolicy:
    idle: timedelta
    absolute: timedelta
    anonymous: timedelta
    remember: timedelta


class ServerSession(SessionMixin):
    """Session data that loads from the store on first use."""

    def __init__(self, manager: SessionManager, sid: str | None, stale_signature: bool) -> None:
        self._manager = manager
        self.sid = sid
        self.stale_signature = stale_signature
        self.record: SessionRecord | None = None
        self._data: dict[str, Any] = {}
        self._loaded = False
        self.modified = False
        self.accessed = False
        self.new = sid is None
        self.destroyed = False
        self.clear_cookie = False
        self.new_id = False
        self.remember_value: str | None = None
        self.remember_max_age: int | None = None
        self.forget_remember = False
        self.owner_kept = False  # the store copied the owner's row into the record

    # SessionMixin's `permanent` reads the data; our lifetimes are server-side, so fixed.
    permanent = True

    @property
    def stateless(self) -> bool:
        """Whether the cookie holds a stateless anonymous session (never in the store)."""
        return self.sid is not None and self.sid.startswith(STATELESS_MARK)

    @property
    def stored_key(self) -> str | None:
        """The store key of this session's id; None when it has none or is stateless."""
        if self.sid is None or self.stateless:
            return None
        return hash_id(self.sid)

    def _load(self) -> dict[str, Any]:
        self.accessed = True
        if not self._loaded:
            if g.get(DEPENDENCY_DOWN):
                # An outage is being answered: render the 503 page as anonymous and leave
                # the store (and the cookie) alone rather than fail a second time.
                return self._data
            self._loaded = True
            self._manager.load(self)
        return self._data

    def __getitem__(self, key: str) -> Any:
        return self._load()[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._load()[key] = value
        self.modified = True

    def __delitem__(self, key: str) -> None:
        del self._load()[key]
        self.modified = True

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())

    @property
    def loaded(self) -> bool:
        return self._loaded

    def replace_data(self, data: dict[str, Any]) -> None:
        self._load()
        self._data = data
        self.modified = True


class _SessionSigners(NamedTuple):
    current: Signer  # signs; verifies the current key
    any_key: Signer  # verifies any configured key (a rotation's fallbacks)
    legacy: Signer  # verifies HMAC-SHA-1 under any configured key (signing.py), never signs


def _actor(user_id: int | None) -> Actor:
    """The audit actor while the session is being opened: Flask-Login's user isn't loaded
    yet (security/identity.py would load it, through this very session)."""
    return Actor(user_id=user_id, ip=client_ip(), request_id=g.get("request_id"))


class SessionManager(SessionInterface):
    """The Flask session interface backed by a `SessionStore`."""

    def __init__(self, store: SessionStore, policy: SessionPolicy, static_prefix: str) -> None:
        self.store = store
        self.policy = policy
        self.static_prefix = static_prefix
        self._signer_cache: tuple[tuple[Any, ...], _SessionSigners] | None = None
        self._new_sessions = itertools.count(1)

    # -------------------------------------------------------------------- signing
    def _signers(self, app: Flask) -> _SessionSigners:
        """The signer with the current key, and those that accept any configured key.

        Built once per key set (not per request); a change of keys builds new ones.
        """
        keys = (*app.config.get("SECRET_KEY_FALLBACKS", ()), app.secret_key)
        cached = self._signer_cache
        if cached is None or cached[0] != keys:
            signers = _SessionSigners(
                current=signing.signer(app.secret_key, SESSION_SALT),  # type: ignore[arg-type]
                any_key=signing.signer(keys, SESSION_SALT),
                legacy=signing.legacy_signer(keys, SESSION_SALT),
            )
            cached = (keys, signers)
            self._signer_cache = cached
        return cached[1]

    def _unsign(self, app: Flask, value: str) -> tuple[str | None, bool]:
        """The session id in `value`, and whether its signature is stale (to be re-signed)."""
        signers = self._signers(app)
        for signer, stale in (
            (signers.current, False),
            (signers.any_key, True),
            (signers.legacy, True),
        ):
            try:
                return signer.unsign(value).decode(), stale
            except BadSignature:
                continue
        return None, False

    # ------------------------------------------------------------ Flask interface
    def open_session(self, app: Flask, request: Request) -> ServerSession:
        raw = request.cookies.get(SESSION_COOKIE)
        sid, stale = self._unsign(app, raw) if raw else (None, False)
        session = ServerSession(self, sid, stale)
        if raw and sid is None:
            session.clear_cookie = True  # tampered or foreign: never accepted, never reused
        return session

    def is_null_session(self, obj: object) -> bool:
        return False

    def load(self, session: ServerSession) -> None:
        """Fetch the record behind the cookie, enforce timeouts, or restore from remember-me."""
        now = utcnow()
        if session.sid is not None and session.stateless:
            token = self._stateless_token(session.sid, now)
            if token is not None:
                session._data = {WTF_FIELD_NAME: token}
            else:
                session.sid = None
                session.clear_cookie = True
            self._restore_from_remember(session, now)
            return
        if session.sid is not None:
            key = hash_id(session.sid)
            record = self._stored(key)
            if record is not None and self._alive(record, now):
                session.record = record
                session._data = dict(record.data)
                return
            if record is not None:
                self.store.delete(key)
            session.sid = None
            session.clear_cookie = True
        self._restore_from_remember(session, now)

    def _stored(self, key: str) -> SessionRecord | None:
        """The record under `key`. One that is not ours (not our JSON: a pickle written into
        Redis, a damaged row) is deleted and counts as none: the browser starts anew."""
        try:
            return self.store.get(key)
        except UnreadableSession:
            log.warning("unreadable session record deleted")
            self.store.delete(key)
            return None

    def _stateless_token(self, value: str, now: datetime) -> str | None:
        """The CSRF token of a stateless session's cookie value, or None once it is older
        than the anonymous lifetime (or not in the shape `_stateless_value` writes)."""
        _, issued, token = [*value.split(STATELESS_MARK), "", ""][:3]
        if not (issued.isdigit() and token):
            return None
        if now.timestamp() - int(issued) >= self.policy.anonymous.total_seconds():
            return None
        return token

    @staticmethod
    def _stateless_value(token: str, now: datetime) -> str:
        return f"{STATELESS_MARK}{int(now.timestamp())}{STATELESS_MARK}{token}"

    def _alive(self, record: SessionRecord, now: datetime) -> bool:
        return now < record.expires_at and now - record.last_seen_at < self.policy.idle

    def _restore_from_remember(self, session: ServerSession, now: datetime) -> None:
        raw = request.cookies.get(REMEMBER_COOKIE)
        if not raw:
            return
        # Only the current key: a remember cookie outlives a rotation's reason (a leaked key),
        # so an old-key cookie is refused rather than honoured for two more weeks. Only
        # SHA-256 likewise: a 14-day cookie would keep SHA-1 alive past the 7 days
        # signing.py allows it, so one signed before the switch means one more sign-in.
        try:
            token = _remember_signer(current_app).unsign(raw).decode()
        except BadSignature:
            session.forget_remember = True
            return
        key = hash_id(token)
        row = db.session.execute(
            select(RememberToken.user_id, RememberToken.expires_at).where(RememberToken.key == key)
        ).one_or_none()
        if row is None or row.expires_at <= now:
            # Signed by us, so not a guess: a revoked or expired token, or a stolen copy of
            # one its owner's browser has since rotated. Audited (ASVS 16.3.1); a forged
            # signature above is not, so garbage cookies can't fill the trail.
            record_failure(
                EventTag.LOGIN_REMEMBER,
                _actor(row.user_id if row is not None else None),
                details={"factor": "remember_token", "reason": "expired" if row else "unknown"},
            )
            session.forget_remember = True
            return
        user_id, expires_at = row.user_id, row.expires_at
        # Rotate the token on use, so a stolen copy dies the next time its owner comes back;
        # the successor keeps the original expiry: "remember me" is 14 days from the
        # password login, not 14 days from the last visit.
        if not self._spend_remember_token(key):
            return
        # A sign-in without the password (or the second factor): audited as one, with its
        # factor, and committed with the successor token below.
        record(EventTag.LOGIN_REMEMBER, _actor(user_id), details={"factor": "remember_token"})
        session.remember_value = self._new_remember_token(user_id, now, expires_at)
        session.remember_max_age = int((expires_at - now).total_seconds())
        session.sid = None
        session.new_id = True
        session.record = self._new_record(user_id, now, auth_at=None)
        session.record.extra[REMEMBER_LINK] = hash_id(session.remember_value)
        session._data = {USER_KEY: str(user_id), "_fresh": False}
        session.modified = True

    @staticmethod
    def _spend_remember_token(key: str) -> bool:
        """Delete the token under `key`; True only for the request whose DELETE removed it.

        Several requests can present one token at once: a thief racing the owner, or the
        owner's own browser restoring tabs. Each read the row above; one conditional DELETE
        decides, in the database (so across nodes), and only its winner gets a successor:
        one token never forks into several live ones. The others stay anonymous and leave
        the cookie alone, so the owner's browser keeps the successor the winner set.
        """
        deleted = db.session.execute(
            delete(RememberToken)
            .where(RememberToken.key == key)
            .execution_options(synchronize_session=False)
        )
        db.session.commit()
        return bool(deleted.rowcount == 1)  # type: ignore[attr-defined]

    def _new_remember_token(
        self, user_id: int, now: datetime, expires_at: datetime | None = None
    ) -> str:
        token = secrets.token_urlsafe(32)
        db.session.add(
            RememberToken(
                key=hash_id(token),
                user_id=user_id,
                created_at=now,
                expires_at=expires_at or now + self.policy.remember,
            )
        )
        db.session.commit()
        return token

    def _new_record(
        self, user_id: int | None, now: datetime, auth_at: datetime | None
    ) -> SessionRecord:
        lifetime = self.policy.absolute if user_id is not None else self.policy.anonymous
        return SessionRecord(
            key="",
            user_id=user_id,
            data={},
            created_at=now,
            last_seen_at=now,
            expires_at=now + lifetime,
            auth_at=auth_at,
            ip=request.remote_addr,
            user_agent=request.user_agent.string[:512] or None,
        )

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        assert isinstance(session, ServerSession)
        if g.get(DEPENDENCY_DOWN):
            return  # don't sign anyone out over an outage: the cookie stays as it was
        try:
            self._save(app, session, response)
        except (DependencyUnavailable, SQLAlchemyError) as exc:
            # The store failed while the response was being finished: never send a success
            # whose session was not stored (a login that silently isn't); answer 503.
            log.error("session store failed on save", error_type=type(exc).__name__)
            _replace_with_unavailable(response)

    def _save(self, app: Flask, session: ServerSession, response: Response) -> None:
        if session.accessed:
            response.vary.add("Cookie")
        if session.forget_remember:
            self._delete_cookie(response, REMEMBER_COOKIE)
        if session.remember_value is not None:
            self._set_remember_cookie(
                app, response, session.remember_value, session.remember_max_age
            )
        if session.destroyed:
            self._delete_cookie(response, SESSION_COOKIE)
            self._delete_cookie(response, REMEMBER_COOKIE)
            return
        if not session.loaded:
            if session.clear_cookie:
                self._delete_cookie(response, SESSION_COOKIE)
            return
        now = utcnow()
        data = dict(session.items())
        if not data:
            if session.record is not None and session.stored_key is not None:
                self.store.delete(session.stored_key)
            if session.sid is not None or session.clear_cookie:
                self._delete_cookie(response, SESSION_COOKIE)
            return
        user_id = _user_id_of(data)
        record = session.record
        token = data.get(WTF_FIELD_NAME)
        if record is None and data.keys() == {WTF_FIELD_NAME} and isinstance(token, str):
            self._save_stateless(app, session, response, token, now)
            return
        if record is None or record.user_id != user_id:
            # A new sign-in state always gets a new id: no fixation, whoever forgot to rotate.
            if session.stored_key is not None:
                self.store.delete(session.stored_key)
            auth_at = record.auth_at if record is not None and record.user_id == user_id else None
            record = self._new_record(user_id, now, auth_at)
            session.sid = None
        if session.sid is None:
            session.sid = randomness.token_urlsafe(32)  # 256 bits; one per anonymous visit
            session.new_id = True
            if self._should_purge():
                self.store.purge_expired(now, int(self.policy.idle.total_seconds()))
                tokens.purge_spent(now)
        record.key = hash_id(session.sid)
        record.data = data
        idle_seconds = int(self.policy.idle.total_seconds())
        if session.modified or session.new_id or session.owner_kept:
            record.last_seen_at = now
            self.store.save(record, idle_seconds, new=session.new_id)
        elif now - record.last_seen_at >= TOUCH_INTERVAL:
            record.last_seen_at = now
            self.store.touch(record, idle_seconds)
        if session.new_id or session.stale_signature:
            self._set_session_cookie(app, response, session.sid)

    def _save_stateless(
        self, app: Flask, session: ServerSession, response: Response, token: str, now: datetime
    ) -> None:
        """Keep an anonymous session holding only its CSRF token in the cookie alone."""
        value = session.sid
        if value is None or session.stored_key is not None or session.modified or session.new_id:
            value = session.sid = self._stateless_value(token, now)
        elif not session.stale_signature:
            return  # the cookie already says this
        self._set_session_cookie(app, response, value)

    def _set_session_cookie(self, app: Flask, response: Response, value: str) -> None:
        response.set_cookie(
            SESSION_COOKIE,
            self._signers(app).current.sign(value).decode(),
            secure=app.config["SESSION_COOKIE_SECURE"],
            httponly=True,
            samesite="Lax",
            path="/",
        )

    def _should_purge(self) -> bool:
        """Every PURGE_ONE_IN-th new session of this process purges expired ones.

        A counter, not a random draw: the cadence needs no secrecy, a steady one is easier
        to reason about (and to test), and it spares a CSPRNG system call per new session.
        """
        return next(self._new_sessions) % PURGE_ONE_IN == 0

    def _set_remember_cookie(
        self, app: Flask, response: Response, token: str, max_age: int | None
    ) -> None:
        response.set_cookie(
            REMEMBER_COOKIE,
            _remember_signer(app).sign(token).decode(),
            max_age=max_age if max_age is not None else int(self.policy.remember.total_seconds()),
            secure=app.config["SESSION_COOKIE_SECURE"],
            httponly=True,
            samesite="Lax",
            path="/",
        )

    @staticmethod
    def _delete_cookie(response: Response, name: str) -> None:
        response.delete_cookie(name, path="/", secure=True, httponly=True, samesite="Lax")


def _remember_signer(app: Flask) -> Signer:
    """The remember cookie's signer: the current key and SHA-256 only (see its use)."""
    return signing.signer(app.secret_key, REMEMBER_SALT)  # type: ignore[arg-type]


def _replace_with_unavailable(response: Response) -> None:
    unavailable = error_response(HTTPStatus.SERVICE_UNAVAILABLE)
    response.set_data(unavailable.get_data())
    response.status_code = HTTPStatus.SERVICE_UNAVAILABLE
    response.headers["Content-Type"] = unavailable.headers["Content-Type"]
    for name in ("Location", "Set-Cookie"):
        response.headers.remove(name)
    response.headers["Retry-After"] = "5"


def _user_id_of(data: dict[str, Any]) -> int | None:
    raw = data.get(USER_KEY)
    return int(raw) if raw is not None else None


# ------------------------------------------------------------------ wiring and use
def init_app(app: Flask, settings: Any) -> SessionManager:
    """Pick the store for the profile and install the session interface."""
    store: SessionStore
    if settings.redis_url:
        from bastion.security.redis_store import RedisSessionStore, redis_client

        client = redis_client(settings.redis_url, settings.redis_timeout_seconds)
        redis_store = RedisSessionStore(client, settings.redis_prefix, Base.metadata)
        with app.app_context():
            redis_store.watch_users(db.engine)
        store = redis_store
    else:
        with app.app_context():
            store = SqlSessionStore(db.engine)
    policy = SessionPolicy(
        idle=timedelta(minutes=settings.session_idle_minutes),
        absolute=timedelta(hours=settings.session_absolute_hours),
        anonymous=timedelta(minutes=settings.anonymous_session_minutes),
        remember=timedelta(days=settings.remember_days),
    )
    manager = SessionManager(store, policy, app.static_url_path or "/static")
    app.session_interface = manager
    app.extensions["bastion.sessions"] = manager
    return manager


def manager() -> SessionManager:
    found: SessionManager = current_app.extensions["bastion.sessions"]
    return found


def _current() -> ServerSession:
    from flask import session

    real = session._get_current_object()  # type: ignore[attr-defined]
    assert isinstance(real, ServerSession)
    return real


def start_authenticated_session(user_id: int, *, remember: bool) -> None:
    """Begin a fresh session for a password login: new id, no pre-login data (login CSRF)."""
    session = _current()
    if session.stored_key is not None:
        manager().store.delete(session.stored_key)
    now = utcnow()
    session.replace_data({})
    session.sid = None
    session.new_id = True
    session.record = manager()._new_record(user_id, now, auth_at=now)
    if remember:
        session.remember_value = manager()._new_remember_token(user_id, now)
        session.record.extra[REMEMBER_LINK] = hash_id(session.remember_value)


def rotate_session_id() -> None:
    """Give the current session a new id, keeping its data (privilege or password change)."""
    session = _current()
    session._load()
    if session.stored_key is not None:
        manager().store.delete(session.stored_key)
    session.sid = None
    session.new_id = True
    session.modified = True


def end_session() -> None:
    """Destroy the current session and its remember-me token (logout)."""
    session = _current()
    session._load()
    if session.stored_key is not None:
        manager().store.delete(session.stored_key)
    raw = request.cookies.get(REMEMBER_COOKIE)
    if raw:
        try:
            token = _remember_signer(current_app).unsign(raw).decode()
        except BadSignature:
            token = None
        if token is not None:
            db.session.execute(delete(RememberToken).where(RememberToken.key == hash_id(token)))
            db.session.commit()
    session._data = {}
    session.destroyed = True


def revoke_user_sessions(user_id: int, *, keep_current: bool = False) -> int:
    """End every session and remember-me token of a user (optionally keeping this one)."""
    keep = _current().stored_key if keep_current else None
    count = manager().store.delete_for_user(user_id, keep=keep)
    db.session.execute(delete(RememberToken).where(RememberToken.user_id == user_id))
    db.session.commit()
    return count


def revoke_session(key: str) -> None:
    """End one session (by its stored key) and the remember-me token that could revive it.

    Deleting only the session would leave a device with "keep me signed in" signed in:
    its remember cookie would restore a new session on the next request.
    """
    store = manager().store
    record = store.get(key)
    if record is not None:
        remember = record.extra.get(REMEMBER_LINK)
        if isinstance(remember, str):
            db.session.execute(delete(RememberToken).where(RememberToken.key == remember))
            db.session.commit()
    store.delete(key)


def list_user_sessions(user_id: int) -> list[SessionRecord]:
    now = utcnow()
    alive = [r for r in manager().store.list_for_user(user_id) if manager()._alive(r, now)]
    return sorted(alive, key=lambda r: r.last_seen_at, reverse=True)


def owner_row(user_id: int) -> dict[str, Any] | None:
    """The `users` row of `user_id` if the store read it with this request's session."""
    record = _current().record  # the owner was joined on record.user_id
    if record is None or record.user_id != user_id:
        return None
    return record.owner


def keep_owner_row(user_id: int, row: dict[str, Any]) -> None:
    """The loader read the owner's row itself: let the store keep it with the session."""
    session = _current()
    record = session.record
    if record is not None and record.user_id == user_id:
        session.owner_kept = manager().store.keep_owner(record, row)


def current_session_key() -> str | None:
    session = _current()
    session._load()
    return session.stored_key


def authenticated_at() -> datetime | None:
    """When the current session last proved a password; None for remembered sessions."""
    session = _current()
    session._load()
    return session.record.auth_at if session.record is not None else None


def remember_tokens_for(user_id: int) -> int:
    rows = db.session.execute(select(RememberToken).where(RememberToken.user_id == user_id))
    return len(rows.all())


__all__ = [
    "REMEMBER_COOKIE",
    "SESSION_COOKIE",
    "RememberToken",
    "ServerSession",
    "SessionManager",
    "SessionStoreUnavailable",
    "authenticated_at",
    "current_session_key",
    "end_session",
    "init_app",
    "list_user_sessions",
    "revoke_session",
    "revoke_user_sessions",
    "rotate_session_id",
    "start_authenticated_session",
]


def mark_reauthenticated() -> None:
    """Record a fresh password proof on the current session and give it a new id."""
    session = _current()
    session._load()
    if session.record is not None:
        session.record.auth_at = utcnow()
    rotate_session_id()
