"""Every admin URL and action, tried by each role against another user's objects.

A plain user and an auditor get 403 from every action and page they lack the permission
for (and nothing changes); the auditor reads the dashboard and the audit log; anonymous
callers are sent to sign in; an admin asking for ids that don't exist gets 404. The route
list is checked against the URL map, so a new admin route cannot be left out.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from http import HTTPStatus

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from bastion.accounts.models import User
from bastion.audit.models import AuditEvent
from bastion.core.db import db
from bastion.security.session_store import SessionStore
from tests.conftest import AuthActions, HttpsClient
from tests.functional.admin.state import (
    alerts,
    give_totp,
    lock_account,
    lock_state,
    raise_alert,
    second_factor,
)


@dataclass(frozen=True)
class Route:
    method: str
    endpoint: str
    path: str  # {user}, {session} and {alert} are filled in per test
    data: tuple[tuple[str, str], ...] = ()

    def url(self, user: int, session: str, alert: int = 0) -> str:
        return self.path.format(user=user, session=session, alert=alert)

    @property
    def id(self) -> str:
        return f"{self.method} {self.path}"


ROUTES = [
    Route("GET", "admin.dashboard_page", "/admin/"),
    Route("GET", "admin.users", "/admin/users?q=victim"),
    Route("GET", "admin.user_detail", "/admin/users/{user}"),
    Route("GET", "admin.change_role", "/admin/users/{user}/role"),
    Route("POST", "admin.change_role", "/admin/users/{user}/role", (("role", "admin"),)),
    Route("GET", "admin.disable_user", "/admin/users/{user}/disable"),
    Route("POST", "admin.disable_user", "/admin/users/{user}/disable"),
    Route("GET", "admin.enable_user", "/admin/users/{user}/enable"),
    Route("POST", "admin.enable_user", "/admin/users/{user}/enable"),
    Route("GET", "admin.revoke_user_sessions", "/admin/users/{user}/sessions/revoke"),
    Route("POST", "admin.revoke_user_sessions", "/admin/users/{user}/sessions/revoke"),
    Route("GET", "admin.unlock_user", "/admin/users/{user}/unlock"),
    Route("POST", "admin.unlock_user", "/admin/users/{user}/unlock"),
    Route("GET", "admin.reset_2fa", "/admin/users/{user}/2fa/reset"),
    Route("POST", "admin.reset_2fa", "/admin/users/{user}/2fa/reset"),
    Route("GET", "admin.force_password_reset", "/admin/users/{user}/password/reset"),
    Route("POST", "admin.force_password_reset", "/admin/users/{user}/password/reset"),
    Route("GET", "admin.acknowledge_alert", "/admin/alerts/{alert}/ack"),
    Route("POST", "admin.acknowledge_alert", "/admin/alerts/{alert}/ack"),
    Route("GET", "admin.invite", "/admin/users/invite"),
    Route("POST", "admin.invite", "/admin/users/invite", (("email", "new@example.com"),)),
    Route("GET", "admin.sessions_page", "/admin/sessions?email=victim@example.com"),
    Route("GET", "admin.revoke_session", "/admin/sessions/{session}/revoke"),
    Route("POST", "admin.revoke_session", "/admin/sessions/{session}/revoke"),
    Route("GET", "admin.audit", "/admin/audit?actor=victim"),
    Route("GET", "admin.audit_csv", "/admin/audit.csv"),
]
AUDITOR_READS = {"admin.dashboard_page", "admin.audit", "admin.audit_csv"}
VICTIM = "victim@example.com"


def test_the_route_list_covers_every_admin_route(app: Flask) -> None:
    covered = {(r.method, r.endpoint) for r in ROUTES}
    declared = {
        (method, rule.endpoint)
        for rule in app.url_map.iter_rules()
        if rule.endpoint.startswith("admin.")
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}
    }
    assert declared == covered


def new_browser(app: Flask) -> tuple[FlaskClient, AuthActions]:
    app.test_client_class = HttpsClient
    client = app.test_client()
    return client, AuthActions(app, client)


@pytest.fixture
def victim(app: Flask) -> tuple[int, str, FlaskClient]:
    """Another user, signed in: their id, their session's store key, their browser.

    The account also has 2FA and a lock, and an alert is open: each admin action has
    something to change, so a missing permission check would show.
    """
    client, auth = new_browser(app)
    user_id = auth.create_user(VICTIM, name="Victim Person")
    assert auth.login(VICTIM).status_code == HTTPStatus.SEE_OTHER
    store: SessionStore = app.extensions["bastion.sessions"].store
    with app.app_context():
        [record] = store.list_for_user(user_id)
    give_totp(app, user_id)
    lock_account(app, user_id)
    return user_id, record.key, client


@pytest.fixture
def alert(app: Flask) -> int:
    return raise_alert(app)


def call(client: FlaskClient, auth: AuthActions, route: Route, url: str) -> int:
    if route.method == "GET":
        return client.get(url).status_code
    token = auth.csrf("/")  # a valid token: what answers is the permission check
    return client.post(url, data={"csrf_token": token, **dict(route.data)}).status_code


def admin_changes(app: Flask) -> list[str]:
    """Successful admin events that change something (an auditor's export changes nothing)."""
    with app.app_context():
        rows = db.session.scalars(
            select(AuditEvent.event).where(
                AuditEvent.event.like("admin.%"),
                AuditEvent.event != "admin.audit.export",
                AuditEvent.outcome == "success",
            )
        )
        return list(rows)


def assert_victim_untouched(app: Flask, victim_client: FlaskClient) -> None:
    with app.app_context():
        user = db.session.scalar(select(User).where(User.email == VICTIM))
        assert user is not None
        assert user.active is True
        assert user.role == "user"
        assert not user.password_hash.startswith("!")  # no forced reset
        user_id = user.id
    assert lock_state(app, user_id).failures == 10  # still locked
    assert second_factor(app, user_id) == (True, 3)  # 2FA untouched
    assert all(not a["acknowledged"] for a in alerts(app))
    assert victim_client.get("/").status_code == HTTPStatus.OK  # still signed in
    assert admin_changes(app) == []


@pytest.mark.parametrize("role", ["user", "auditor"])
def test_without_the_permission_every_admin_route_is_403(
    app: Flask, victim: tuple[int, str, FlaskClient], alert: int, role: str
) -> None:
    victim_id, victim_session, victim_client = victim
    client, auth = new_browser(app)
    auth.create_user(f"{role}@example.com", role=role)
    assert auth.login(f"{role}@example.com").status_code == HTTPStatus.SEE_OTHER

    answers = {r.id: call(client, auth, r, r.url(victim_id, victim_session, alert)) for r in ROUTES}

    allowed = AUDITOR_READS if role == "auditor" else set()
    expected = {
        r.id: HTTPStatus.OK if r.endpoint in allowed else HTTPStatus.FORBIDDEN for r in ROUTES
    }
    assert answers == expected
    assert_victim_untouched(app, victim_client)


def test_anonymous_callers_are_sent_to_sign_in(
    app: Flask, victim: tuple[int, str, FlaskClient], alert: int
) -> None:
    victim_id, victim_session, victim_client = victim
    client, auth = new_browser(app)
    for route in ROUTES:
        url = route.url(victim_id, victim_session, alert)
        if route.method == "GET":
            response = client.get(url)
        else:
            response = client.post(url, data={"csrf_token": auth.csrf(), **dict(route.data)})
        assert response.status_code == HTTPStatus.FOUND, route.id
        assert response.headers["Location"].startswith("/auth/login"), route.id
    assert_victim_untouched(app, victim_client)


def test_admin_asking_for_missing_objects_gets_404(
    app: Flask, victim: tuple[int, str, FlaskClient], alert: int
) -> None:
    _, _, victim_client = victim
    client, auth = new_browser(app)
    auth.create_user("root@example.com", role="admin")
    assert auth.login("root@example.com").status_code == HTTPStatus.SEE_OTHER
    missing_session = secrets.token_hex(32)

    answers = {
        r.id: call(client, auth, r, r.url(424242, missing_session, 424242))
        for r in ROUTES
        if "{" in r.path
    }

    assert answers == dict.fromkeys(answers, HTTPStatus.NOT_FOUND)
    assert len(answers) == 19
    assert_victim_untouched(app, victim_client)


@pytest.mark.parametrize(
    "path",
    [
        "/admin/users/abc",
        "/admin/users/-1",
        "/admin/users/0",
        "/admin/users/1.5",
        "/admin/users/99999999999999999999",
        "/admin/users/2147483648/disable",
        "/admin/sessions/short/revoke",
    ],
)
def test_ids_that_are_not_32_bit_integers_do_not_route(app: Flask, path: str) -> None:
    client, auth = new_browser(app)
    auth.create_user("root@example.com", role="admin")
    auth.login("root@example.com")
    response = client.get(path)
    assert response.status_code == HTTPStatus.NOT_FOUND
