"""Deny by default: every view declares who may enter, and one hook enforces it.

A view carries exactly one marker: ``@public``, ``@login_required`` or
``@requires(Permission.X)``. ``assert_every_endpoint_declared`` makes `create_app` refuse to
start when a route has none (ASVS 8.2.1); ``enforce_policy`` runs before every view, so a
decorator cannot be bypassed by a forgotten wrapper.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from http import HTTPStatus
from typing import Any, TypeVar

from flask import Flask, abort, current_app, redirect, request, url_for
from flask_login import current_user
from werkzeug.wrappers import Response

from bastion.security.denials import record_denial
from bastion.security.permissions import Permission

POLICY_ATTR = "__bastion_policy__"
F = TypeVar("F", bound=Callable[..., Any])


class Access(StrEnum):
    PUBLIC = "public"
    LOGIN = "login"
    PERMISSION = "permission"


@dataclass(frozen=True)
class Policy:
    access: Access
    permissions: frozenset[Permission] = frozenset()


def _mark(policy: Policy) -> Callable[[F], F]:
    def decorate(view: F) -> F:
        if hasattr(view, POLICY_ATTR):
            raise TypeError(f"{view.__name__} declares two access policies")
        setattr(view, POLICY_ATTR, policy)
        return view

    return decorate


def public(view: F) -> F:
    """Anyone may enter, signed in or not."""
    return _mark(Policy(Access.PUBLIC))(view)


def login_required(view: F) -> F:
    """Any signed-in, active user may enter."""
    return _mark(Policy(Access.LOGIN))(view)


def requires(*permissions: Permission) -> Callable[[F], F]:
    """Only a signed-in user holding every listed permission may enter."""
    if not permissions:
        raise TypeError("requires() needs at least one permission")
    return _mark(Policy(Access.PERMISSION, frozenset(permissions)))


def policy_of(view: Callable[..., Any]) -> Policy | None:
    found: Policy | None = getattr(view, POLICY_ATTR, None)
    return found


def _is_static(endpoint: str) -> bool:
    return endpoint == "static" or endpoint.endswith(".static")


def assert_every_endpoint_declared(app: Flask) -> None:
    """Raise RuntimeError naming each route whose view declares no policy."""
    missing = sorted(
        rule.rule
        for rule in app.url_map.iter_rules()
        if not _is_static(rule.endpoint) and policy_of(app.view_functions[rule.endpoint]) is None
    )
    if missing:
        raise RuntimeError("routes without an access policy: " + ", ".join(missing))


def user_permissions() -> frozenset[Permission]:
    if not current_user.is_authenticated:
        return frozenset()
    granted: frozenset[Permission] = getattr(current_user, "permissions", frozenset())
    return granted


def wants_json() -> bool:
    return request.path.startswith("/api/")


def enforce_policy() -> Response | None:
    """Let the request through only if the view's declared policy admits the caller."""
    endpoint = request.endpoint
    if endpoint is None or _is_static(endpoint):
        return None  # routing failed (404/405 follow) or a static file
    policy = policy_of(current_app.view_functions[endpoint])
    if policy is None:  # unreachable after the start-up assertion; fail closed anyway
        abort(HTTPStatus.FORBIDDEN)
    if policy.access is Access.PUBLIC:
        return None
    if not current_user.is_authenticated:
        if wants_json():
            abort(HTTPStatus.UNAUTHORIZED)
        return redirect(url_for("accounts.login", next=request.full_path.rstrip("?")))
    if policy.access is Access.PERMISSION and not policy.permissions <= user_permissions():
        record_denial(endpoint, sorted(policy.permissions - user_permissions()))
        abort(HTTPStatus.FORBIDDEN)
    return None
