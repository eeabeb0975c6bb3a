"""Deny by default: every route answers every kind of caller as its declared policy says.

Controls proven (security/policy.py): `enforce_policy` in before_request (anonymous callers
are sent to sign in, callers lacking a permission get 403 and an audit event), and
`assert_every_endpoint_declared`, which makes create_app refuse a route without a policy.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from http import HTTPStatus

import pytest
from flask import Blueprint, Flask, url_for
from flask.testing import FlaskClient
from werkzeug.routing import Rule

from bastion import create_app
from bastion.security.permissions import Permission, permissions_for
from bastion.security.policy import (
    Access,
    Policy,
    assert_every_endpoint_declared,
    login_required,
    policy_of,
    public,
    requires,
)
from tests.conftest import AuthActions, Backend, csrf_token_from
from tests.security.helpers import audit_rows, set_user

DENIED_EVENT = "security.authz.denied"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


@dataclass(frozen=True)
class Route:
    rule: Rule
    policy: Policy
    url: str
    method: str

    @property
    def api(self) -> bool:
        return self.rule.rule.startswith("/api/")


def sample_value(converter: object) -> str | int:
    """A value the converter accepts but that names no existing object."""
    if type(converter).__name__ == "IntegerConverter":
        return 999_999
    if type(converter).__name__ == "UUIDConverter":
        return "00000000-0000-4000-8000-000000000000"
    regex = getattr(converter, "regex", "")
    size = re.search(r"\{(\d+)", regex)
    return "x" * max(1, int(size.group(1)) if size else 1) if size else "x-no-such-object"


def routes(app: Flask) -> Iterator[Route]:
    """Every non-static route with its declared policy, in an order safe to replay.

    GET where the route has it; POST-only routes last, and logout at the very end.
    """
    found = []
    with app.test_request_context(base_url="https://localhost"):
        for rule in app.url_map.iter_rules():
            if rule.endpoint == "static" or rule.endpoint.endswith(".static"):
                continue
            policy = policy_of(app.view_functions[rule.endpoint])
            assert policy is not None, rule.rule
            args = {name: sample_value(conv) for name, conv in rule._converters.items()}
            url = url_for(rule.endpoint, **args)
            methods = (rule.methods or set()) - {"HEAD", "OPTIONS"}
            method = "GET" if "GET" in methods else sorted(methods)[0]
            found.append(Route(rule, policy, url, method))
    found.sort(key=lambda r: (r.method != "GET", r.rule.endpoint == "accounts.logout", r.url))
    yield from found


@dataclass
class Caller:
    name: str
    client: FlaskClient
    permissions: frozenset[Permission]
    signed_in: bool

    def send(self, route: Route) -> object:
        if route.method == "GET":
            return self.client.get(route.url)
        token = csrf_token_from(self.client.get("/auth/login").get_data(as_text=True))
        return self.client.open(route.url, method=route.method, data={"csrf_token": token})


def make_caller(app: Flask, name: str) -> Caller:
    browser = app.test_client()
    auth = AuthActions(app, browser)
    if name == "anonymous":
        return Caller(name, browser, frozenset(), signed_in=False)
    role = {"disabled": "user"}.get(name, name)
    email = f"{name}@example.com"
    auth.create_user(email, role=role, name=f"{name.title()} Caller")
    assert auth.login(email).status_code == HTTPStatus.SEE_OTHER
    if name == "disabled":
        set_user(app, email, active=False)  # signed in a moment ago, disabled since
        return Caller(name, browser, frozenset(), signed_in=False)
    return Caller(name, browser, permissions_for(role), signed_in=True)


def denials_for(app: Flask, endpoint: str) -> int:
    return sum(1 for row in audit_rows(app, DENIED_EVENT) if row.target == endpoint)


@pytest.mark.parametrize("name", ["anonymous", "user", "auditor", "admin", "disabled"])
def test_every_route_answers_as_its_policy_declares(app: Flask, name: str) -> None:
    caller = make_caller(app, name)
    checked = 0

    for route in routes(app):
        endpoint = route.rule.endpoint
        denied_before = denials_for(app, endpoint)
        response = caller.send(route)
        status = response.status_code  # type: ignore[attr-defined]
        where = f"{name} {route.method} {route.rule.rule} -> {status}"
        assert status != HTTPStatus.NOT_FOUND or route.rule.arguments, where  # it was reached
        assert status < HTTPStatus.INTERNAL_SERVER_ERROR, where
        location = response.headers.get("Location", "")  # type: ignore[attr-defined]
        sent_to_sign_in = status in {302, 303} and location.startswith("/auth/login?next=")

        if route.policy.access is Access.PUBLIC:
            assert status not in {HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN} or (
                endpoint == "accounts.login" and route.method == "POST"
            ), where
        elif not caller.signed_in:
            if route.api:
                assert status == HTTPStatus.UNAUTHORIZED, where
            else:
                assert sent_to_sign_in, where
        elif route.policy.access is Access.PERMISSION and not (
            route.policy.permissions <= caller.permissions
        ):
            assert status == HTTPStatus.FORBIDDEN, where
            assert denials_for(app, endpoint) == denied_before + 1, where
        else:
            assert status not in {HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN}, where
            assert not sent_to_sign_in, where
            assert denials_for(app, endpoint) == denied_before, where
        checked += 1

    assert checked == len(list(routes(app))) >= 10


def test_the_walk_covers_every_kind_of_policy(app: Flask) -> None:
    # Guard the walk itself: a public, a sign-in and a permission route are all exercised.
    kinds = {route.policy.access for route in routes(app)}

    assert kinds >= {Access.PUBLIC, Access.LOGIN}


def test_a_permission_route_is_enforced(app: Flask, auth: AuthActions) -> None:
    # A probe route, so this holds even before a feature declares one.
    @requires(Permission.ADMIN_USERS)
    def probe() -> str:
        return "inside"

    app.add_url_rule("/__probe/admin-users", "probe_admin_users", probe)
    anonymous = app.test_client().get("/__probe/admin-users")
    auth.create_user("plain@example.com")
    auth.create_user("root@example.com", role="admin", name="Root Admin")
    user = app.test_client()
    AuthActions(app, user).login("plain@example.com")
    admin = app.test_client()
    AuthActions(app, admin).login("root@example.com")

    as_user = user.get("/__probe/admin-users")
    as_admin = admin.get("/__probe/admin-users")

    assert anonymous.status_code == HTTPStatus.FOUND
    assert anonymous.headers["Location"] == "/auth/login?next=/__probe/admin-users"
    assert as_user.status_code == HTTPStatus.FORBIDDEN
    assert "inside" not in as_user.get_data(as_text=True)
    assert denials_for(app, "probe_admin_users") == 1
    assert as_admin.status_code == HTTPStatus.OK
    assert as_admin.get_data(as_text=True) == "inside"


def test_an_api_route_answers_401_not_a_redirect(app: Flask) -> None:
    @login_required
    def probe() -> dict[str, str]:
        return {"ok": "yes"}

    app.add_url_rule("/api/__probe", "api_probe", probe)

    response = app.test_client().get("/api/__probe")

    assert response.status_code == HTTPStatus.UNAUTHORIZED
    assert response.mimetype == "application/json"


# -------------------------------------------------------------- refused at start-up
def test_create_app_refuses_a_route_without_a_policy(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bastion.web.views as web_views

    sneaky = Blueprint("web", web_views.__name__, template_folder="templates")
    for deferred in web_views.bp.deferred_functions:  # the real routes, plus one more
        sneaky.record(deferred)

    @sneaky.route("/forgotten-debug-page")
    def forgotten() -> str:
        return "no policy here"

    monkeypatch.setattr(web_views, "bp", sneaky)
    with pytest.raises(RuntimeError, match="/forgotten-debug-page"):
        create_app(backend.settings())


def test_assert_every_endpoint_declared_names_each_undeclared_route() -> None:
    bare = Flask(__name__)
    bare.add_url_rule("/declared", "declared", public(lambda: "ok"))
    bare.add_url_rule("/one", "one", lambda: "no policy")
    bare.add_url_rule("/two/<int:n>", "two", lambda n: "no policy")

    with pytest.raises(RuntimeError) as refused:
        assert_every_endpoint_declared(bare)

    message = str(refused.value)
    assert "/one" in message
    assert "/two/<int:n>" in message
    assert "/declared" not in message


def test_a_view_cannot_declare_two_policies() -> None:
    def view() -> str:
        return "x"

    with pytest.raises(TypeError):
        public(login_required(view))
    with pytest.raises(TypeError):
        requires()


def test_the_running_app_declares_every_route(app: Flask) -> None:
    assert_every_endpoint_declared(app)  # what create_app checked, checked again
