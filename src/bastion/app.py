"""The composition root: `create_app` wires every layer in one fixed, commented order."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar, cast

from flask import Flask, g
from flask_login import user_logged_in
from sqlalchemy import Engine, bindparam, create_engine, select
from sqlalchemy.orm import make_transient_to_detached
from werkzeug.middleware.proxy_fix import ProxyFix

from bastion.core import request_log
from bastion.core.db import db, defer_sqlite_checkpoints, engine_options, install_sqlite_pragmas
from bastion.core.errors import DEPENDENCY_DOWN, register_error_handlers
from bastion.core.logging import configure_logging
from bastion.core.mail import build_mailer
from bastion.extensions import login_manager
from bastion.security import csrf, headers, hosts, rate_limit, sessions
from bastion.security.body_limit import enforce_body_limit
from bastion.security.permissions import Permission
from bastion.security.policy import assert_every_endpoint_declared, enforce_policy
from bastion.settings import Environment, Settings

MIGRATIONS = Path(__file__).parent / "migrations"
M = TypeVar("M")


def create_app(settings: Settings | None = None) -> Flask:
    """Build the app from `settings` (default: the environment); refuse unsafe settings."""
    settings = settings or Settings.from_env()
    settings.check()  # 1. production guards before anything else exists

    app = Flask(__name__, instance_path=str(settings.instance_path))
    _configure(app, settings)
    configure_logging(settings.log_level)

    # 2. Proxies: trust exactly the configured number of hops, never a client's claim.
    if settings.trusted_proxies:
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=settings.trusted_proxies, x_proto=settings.trusted_proxies
        )

    # 3. Hooks that run before any session or database work, in this order:
    #    request id, the Host allow-list, body-size limit, then the per-IP rate limits.
    request_log.init_app(app)
    hosts.init_app(app, settings.allowed_hosts)
    app.before_request(enforce_body_limit)
    rate_limit.init_app(app, settings)

    # 4. Data layer and the stores built on it.
    db.init_app(app)
    with app.app_context():
        install_sqlite_pragmas(db.engine)
        defer_sqlite_checkpoints(app, db.engine)
    sessions.init_app(app, settings)
    _init_login(app, settings)

    # 5. Request checks that need the session: CSRF, then the route's access policy.
    csrf.init_app(app)
    app.before_request(enforce_policy)

    # 6. Response headers on every response, errors and static files included.
    headers.init_app(app, settings.hsts_preload)

    # 7. Services the features use.
    app.extensions["bastion.mailer"] = build_mailer(
        smtp_host=settings.smtp_host,
        smtp_port=settings.smtp_port,
        smtp_security=settings.smtp_security,
        smtp_username=settings.smtp_username,
        smtp_password=settings.smtp_password,
        smtp_timeout=settings.smtp_timeout_seconds,
        sender=settings.mail_from,
        outbox_dir=settings.instance_path / "outbox",
    )

    # 8. Features.
    from bastion.accounts.views import bp as accounts_bp
    from bastion.admin.views import bp as admin_bp
    from bastion.documents.views import bp as documents_bp
    from bastion.web.views import bp as web_bp

    app.register_blueprint(web_bp)
    app.register_blueprint(accounts_bp)
    app.register_blueprint(documents_bp)
    app.register_blueprint(admin_bp)

    # Templates check permissions, never role names (the nav's admin link).
    app.jinja_env.globals["permission"] = Permission

    # 9. Errors, and finally: every route must have declared who may enter.
    register_error_handlers(app, uses_redis=settings.redis_url is not None)
    assert_every_endpoint_declared(app)
    return app


def _configure(app: Flask, settings: Settings) -> None:
    if settings.is_sqlite:
        settings.instance_path.mkdir(mode=0o700, parents=True, exist_ok=True)
    app.extensions["bastion.settings"] = settings
    app.config.update(
        SECRET_KEY=settings.secret_key,
        SECRET_KEY_FALLBACKS=list(settings.secret_key_fallbacks),
        DEBUG=settings.debug,
        TESTING=settings.env is Environment.TESTING,
        SESSION_COOKIE_SECURE=settings.cookie_secure,
        MAX_CONTENT_LENGTH=settings.max_request_kb * 1024,
        MAX_FORM_MEMORY_SIZE=256 * 1024,
        MAX_FORM_PARTS=200,
        SQLALCHEMY_DATABASE_URI=settings.sqlalchemy_url,
        SQLALCHEMY_ENGINE_OPTIONS=engine_options(
            settings.sqlalchemy_url, settings.db_connect_timeout_seconds
        ),
        BASTION_PUBLIC_URL=settings.public_url,
        BASTION_MIN_PASSWORD=settings.password_min_length,
        WTF_CSRF_TIME_LIMIT=3600,
        TEMPLATES_AUTO_RELOAD=False,
        SEND_FILE_MAX_AGE_DEFAULT=3600,
    )


LOOKUP_ENGINE = "bastion.lookup_engine"


def _lookup_engine(settings: Settings) -> Engine | None:
    """PostgreSQL only: a small pool of AUTOCOMMIT connections for the per-request user row.

    Through the request's ORM session a page that only reads pays BEGIN, SELECT and, at
    teardown, ROLLBACK: three round trips. On connections opened in autocommit the same
    row is one. Switching a pooled connection to autocommit and back per request cost
    more app CPU than it saved (tried and reverted), hence a pool of its own. SQLite
    needs none: its session store reads the user row with the session.
    """
    if settings.is_sqlite:
        return None
    options = engine_options(settings.sqlalchemy_url, settings.db_connect_timeout_seconds)
    options.update(pool_size=4, max_overflow=4)
    return create_engine(settings.sqlalchemy_url, isolation_level="AUTOCOMMIT", **options)


def _init_login(app: Flask, settings: Settings) -> None:
    from bastion.accounts.models import User

    login_manager.init_app(app)
    # Flask-Login 0.6.3 builds its session identifier from the raw X-Forwarded-For header;
    # the server-side session is the binding, so its protection mode is off.
    login_manager.session_protection = None
    # Built once: `Session.get` builds and cache-keys a new statement on every call, which
    # costs more than the query itself.
    row_by_id = select(User.__table__).where(User.__table__.c.id == bindparam("user_id"))
    lookups = app.extensions[LOOKUP_ENGINE] = _lookup_engine(settings)

    def user_row(user_id: int) -> dict[str, Any] | None:
        params = {"user_id": user_id}
        if lookups is None:
            row = db.session.execute(row_by_id, params).mappings().first()
        else:
            with lookups.connect() as conn:
                row = conn.execute(row_by_id, params).mappings().first()
        return None if row is None else dict(row)

    @login_manager.user_loader  # type: ignore[untyped-decorator]
    def load_user(user_id: str) -> User | None:
        if g.get(DEPENDENCY_DOWN):
            return None  # answering an outage: the error page renders for nobody
        # The SQL session store read the owner's row with the session; else one query.
        row = sessions.owner_row(int(user_id))
        if row is None:
            row = user_row(int(user_id))
            if row is not None:
                sessions.keep_owner_row(int(user_id), row)
        user = None if row is None else _attached(User, row)
        # A disabled or unconfirmed account is anonymous from its next request on.
        if user is None or not user.is_active:
            return None
        request_log.bind_user(user.id)  # who, on this request's every later log line
        return user

    user_logged_in.connect(_name_signed_in_user, app)


def _name_signed_in_user(_app: Flask, user: Any, **_: Any) -> None:
    """A sign-in sets the user without the loader: name them on the rest of the request."""
    request_log.bind_user(user.id)


def _attached(model: type[M], row: dict[str, Any]) -> M:
    """The ORM object for a row read by another query, in the request's session, no query.

    SQLAlchemy's recipe for objects from elsewhere (its dogpile caching example): build it,
    mark it as loaded (`make_transient_to_detached`), add it; changes to it then flush as
    an UPDATE like those of any loaded object.
    """
    key = db.session.identity_key(model, row["id"])
    found = db.session.identity_map.get(key)
    if found is not None:
        return cast(M, found)
    instance = model(**row)
    make_transient_to_detached(instance)
    db.session.add(instance)
    return instance


def enable_migrations(app: Flask) -> None:
    """Attach Alembic (Flask-Migrate) for the CLI, `bastion serve` and tests.

    Not part of create_app: serving workers never migrate, and Alembic costs each of them
    ~10 MiB of memory.
    """
    from flask_migrate import Migrate

    Migrate(app, db, directory=str(MIGRATIONS), render_as_batch=True)


def close_app(app: Flask) -> None:
    """Release the app's pooled connections (tests and tools build many apps per process)."""
    from bastion.extensions import limiter

    with app.app_context():
        db.session.remove()
        db.engine.dispose()
    lookups = app.extensions.get(LOOKUP_ENGINE)
    if lookups is not None:
        lookups.dispose()
    store = app.extensions["bastion.sessions"].store
    client = getattr(store, "client", None)
    if client is not None:
        client.close()
    counters = getattr(limiter.storage, "storage", None)
    if counters is not None and hasattr(counters, "close"):
        counters.close()
