"""Fail closed: a dead session store, rate-limit store or database gives a fast 503.

Controls proven: explicit connect/socket timeouts on Redis and PostgreSQL (security/
session_store.py `redis_client`, core/db.py `engine_options`, security/rate_limit.py), no
in-memory fallback for the rate limiter, the 503 handler with Retry-After (core/errors.py),
and readiness that reports the outage while liveness stays up (web/views.py).

Every outage here is simulated with a closed local port or a private silent server on a
random port: the shared PostgreSQL and Redis are never stopped.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from http import HTTPStatus
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from bastion.security.sessions import SESSION_COOKIE
from tests.conftest import GOOD_PASSWORD, AuthActions
from tests.security.helpers import (
    closed_port,
    cookie_value,
    is_signed_in,
    login_form,
    with_session,
)

FAST = 3.0  # seconds: a dead dependency must not hold a worker thread longer


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts TCP connections and never answers (a hung Redis/PostgreSQL)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                continue
            accepted.append(connection)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    listener.close()


def outage(make_app: Callable[..., Flask], **overrides: object) -> Flask:
    """An app whose dependency is down, handling errors as in production.

    Testing mode re-raises errors that escape the error handlers (those raised while the
    session is saved, after the view); production answers them through the handlers.
    """
    down = make_app(**overrides)
    down.config["PROPAGATE_EXCEPTIONS"] = False
    return down


def timed(send: Callable[[], TestResponse]) -> tuple[TestResponse, float]:
    started = time.monotonic()
    response = send()
    return response, time.monotonic() - started


def assert_unavailable(response: TestResponse, elapsed: float) -> None:
    assert response.status_code == HTTPStatus.SERVICE_UNAVAILABLE
    assert int(response.headers["Retry-After"]) > 0
    assert elapsed < FAST, f"took {elapsed:.1f}s"
    assert "Traceback" not in response.get_data(as_text=True)


# ------------------------------------------------------------------------ Redis down
@pytest.fixture
def redis_down(make_app: Callable[..., Flask]) -> Flask:
    return outage(make_app, redis_url=f"redis://127.0.0.1:{closed_port()}/0")


@pytest.mark.timeout(30)
def test_redis_down_login_page_is_503_never_200(redis_down: Flask) -> None:
    client = redis_down.test_client()

    response, elapsed = timed(lambda: client.get("/auth/login"))

    assert_unavailable(response, elapsed)
    assert SESSION_COOKIE not in (response.headers.get("Set-Cookie") or "")


@pytest.mark.timeout(30)
def test_redis_down_login_post_is_503(redis_down: Flask, auth: AuthActions) -> None:
    auth.create_user()
    client = redis_down.test_client()

    response, elapsed = timed(
        lambda: client.post(
            "/auth/login",
            data=login_form("no-session-to-check-it-against", "alice@example.com", GOOD_PASSWORD),
        )
    )

    assert_unavailable(response, elapsed)


@pytest.mark.timeout(30)
def test_redis_down_signed_in_page_is_503(
    app: Flask, client: FlaskClient, auth: AuthActions, make_app: Callable[..., Flask]
) -> None:
    auth.create_user()
    auth.login()
    cookie = cookie_value(client)
    assert cookie is not None
    down = outage(make_app, redis_url=f"redis://127.0.0.1:{closed_port()}/0")

    response, elapsed = timed(lambda: with_session(down, cookie).get("/"))

    assert_unavailable(response, elapsed)
    # Fail closed, but don't sign everyone out over an outage: the cookie is left alone.
    assert SESSION_COOKIE not in (response.headers.get("Set-Cookie") or "")
    recovered = make_app()  # the dependency is back (a fresh app: the limiter is shared)
    assert is_signed_in(with_session(recovered, cookie))


@pytest.mark.timeout(30)
def test_redis_down_readiness_fails_and_liveness_holds(redis_down: Flask) -> None:
    client = redis_down.test_client()

    ready, elapsed = timed(lambda: client.get("/readyz"))
    alive = client.get("/healthz")

    assert ready.status_code == HTTPStatus.SERVICE_UNAVAILABLE
    assert ready.get_json()["checks"]["redis"] == "unavailable"
    assert elapsed < FAST
    assert alive.status_code == HTTPStatus.OK
    assert alive.get_json() == {"status": "ok"}


@pytest.mark.timeout(30)
def test_hung_redis_times_out_fast(make_app: Callable[..., Flask], silent_server: int) -> None:
    # redis-py's default socket timeout is "wait forever": without ours this test hangs.
    hung = outage(
        make_app, redis_url=f"redis://127.0.0.1:{silent_server}/0", redis_timeout_seconds=0.5
    )
    client = hung.test_client()

    limited, limited_elapsed = timed(lambda: client.get("/auth/login"))  # rate-limit store
    ready, ready_elapsed = timed(lambda: client.get("/readyz"))  # exempt: the session store

    assert_unavailable(limited, limited_elapsed)
    assert ready.status_code == HTTPStatus.SERVICE_UNAVAILABLE
    assert ready_elapsed < FAST


# --------------------------------------------------------------------- database down
def dead_database_url(backend_url: str, tmp_path: Path) -> str:
    if backend_url.startswith("postgresql"):
        return f"postgresql://127.0.0.1:{closed_port()}/x"
    return f"sqlite:///{tmp_path / 'no-such-directory' / 'bastion.db'}"


@pytest.fixture
def database_down(app: Flask, make_app: Callable[..., Flask], tmp_path: Path) -> Flask:
    settings = app.extensions["bastion.settings"]
    return outage(make_app, database_url=dead_database_url(settings.database_url, tmp_path))


@pytest.mark.timeout(30)
def test_database_down_readiness_is_503_fast(database_down: Flask) -> None:
    client = database_down.test_client()

    ready, elapsed = timed(lambda: client.get("/readyz"))

    assert ready.status_code == HTTPStatus.SERVICE_UNAVAILABLE
    assert ready.get_json()["checks"]["database"] == "unavailable"
    assert elapsed < FAST
    assert client.get("/healthz").status_code == HTTPStatus.OK


@pytest.mark.timeout(30)
def test_database_down_signed_in_page_is_503(
    app: Flask,
    client: FlaskClient,
    auth: AuthActions,
    make_app: Callable[..., Flask],
    tmp_path: Path,
) -> None:
    auth.create_user()
    auth.login()
    cookie = cookie_value(client)
    assert cookie is not None
    settings = app.extensions["bastion.settings"]
    down = outage(make_app, database_url=dead_database_url(settings.database_url, tmp_path))

    response, elapsed = timed(lambda: with_session(down, cookie).get("/"))

    assert_unavailable(response, elapsed)
    # Fail closed, but don't sign everyone out over an outage: the cookie is left alone.
    assert SESSION_COOKIE not in (response.headers.get("Set-Cookie") or "")
    recovered = make_app()  # the dependency is back (a fresh app: the limiter is shared)
    assert is_signed_in(with_session(recovered, cookie))


@pytest.mark.timeout(30)
def test_database_down_login_is_503(database_down: Flask, auth: AuthActions) -> None:
    auth.create_user()
    browser = database_down.test_client()
    page = browser.get("/auth/login")
    if page.status_code == HTTPStatus.SERVICE_UNAVAILABLE:
        return  # the embedded profile keeps sessions in the database: refused even earlier
    token = AuthActions(database_down, browser).csrf()

    response, elapsed = timed(
        lambda: browser.post(
            "/auth/login", data=login_form(token, "alice@example.com", GOOD_PASSWORD)
        )
    )

    assert_unavailable(response, elapsed)
    assert browser.get("/").status_code != HTTPStatus.OK


@pytest.mark.timeout(30)
def test_hung_database_times_out_fast(make_app: Callable[..., Flask], silent_server: int) -> None:
    # libpq waits forever by default; our connect_timeout (libpq's floor is 2 s) bounds it.
    hung = outage(
        make_app,
        database_url=f"postgresql://127.0.0.1:{silent_server}/x",
        db_connect_timeout_seconds=2,
    )
    client = hung.test_client()

    ready, elapsed = timed(lambda: client.get("/readyz"))

    assert ready.status_code == HTTPStatus.SERVICE_UNAVAILABLE
    assert ready.get_json()["checks"]["database"] == "unavailable"
    assert elapsed < FAST + 1
