"""CSRF: Flask-WTF's synchronizer token plus our own Origin / Sec-Fetch-Site check.

Flask-WTF's HTTPS Referer check (WTF_CSRF_SSL_STRICT) breaks under strict referrer
policies and ignores Fetch Metadata (flask-wtf #455), so it is off and replaced by the
OWASP CSRF cheat sheet's Fetch Metadata policy: an unsafe request a browser marks
cross-site, or whose Origin is another origin, is refused; when a non-browser client sends
neither header, the token alone decides.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flask import Flask, current_app, g, request, session
from flask_wtf.csrf import CSRFError, generate_csrf
from werkzeug.wrappers import Response

from bastion.audit import EventTag, record_failure
from bastion.core.errors import error_response
from bastion.core.request_log import loggable_path
from bastion.extensions import csrf
from bastion.security import alerts
from bastion.security.identity import current_actor

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
EXEMPT_ATTR = "__bastion_csrf_exempt__"
WTF_FIELD_NAME = "csrf_token"  # Flask-WTF's WTF_CSRF_FIELD_NAME: in the session and in `g`
F = TypeVar("F", bound=Callable[..., Any])


def csrf_exempt(reason: str) -> Callable[[F], F]:
    """Exempt a view authenticated by something no browser sends on its own.

    Only for token-authenticated API calls, signed webhooks, and anonymous endpoints whose
    only effect is a log line (CSP reports); the reason is required so every exemption is
    reviewable.
    """

    def decorate(view: F) -> F:
        setattr(view, EXEMPT_ATTR, reason)
        return view

    return decorate


def _origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def _trusted_origins() -> set[str]:
    return {_origin_of(current_app.config["BASTION_PUBLIC_URL"]), _origin_of(request.host_url)}


def check_request() -> None:
    """Refuse unsafe cross-site requests, then require a valid CSRF token."""
    if request.method in SAFE_METHODS:
        return
    if request.routing_exception is not None:
        # No view will run (404, 405): the answer says so, and a PUT to a form page or a
        # POST to a mistyped URL is not a forged form (no audit row, no alert).
        return
    endpoint = request.endpoint
    if endpoint is not None:
        view = current_app.view_functions.get(endpoint)
        if view is not None and getattr(view, EXEMPT_ATTR, None):
            return
    fetch_site = request.headers.get("Sec-Fetch-Site")
    # `same-site` is a sibling subdomain: untrusted for unsafe methods (OWASP CSRF CS).
    if fetch_site is not None and fetch_site not in {"same-origin", "none"}:
        raise CSRFError("The request came from another site.")
    origin = request.headers.get("Origin")
    # Chromium sends `Origin: null` for a same-origin form posted from a page served with
    # `Referrer-Policy: no-referrer` (our one-time-link pages). Fetch Metadata then vouches
    # for it; an opaque origin anywhere else (sandboxed frames, data: URLs) is refused.
    if origin == "null" and fetch_site == "same-origin":
        origin = None
    if origin is not None and origin.lower() not in _trusted_origins():
        raise CSRFError("The request came from another site.")
    csrf.protect()


def handle_csrf_error(error: CSRFError) -> Response:
    record_failure(
        EventTag.CSRF_FAILURE,
        current_actor(),
        target=loggable_path(),  # a token in the URL must not reach the audit trail
        details={"reason": error.description, "method": request.method},
    )
    alerts.after_denial(current_actor())  # repeated failures raise an alert
    return error_response(
        HTTPStatus.BAD_REQUEST,
        "This form expired or was not sent from this site. Reload the page and try again.",
    )


class SignedTokens:
    """Flask-WTF's signed form token, signed once a minute per session, not once a page.

    Every signed-in page carries the sign-out form, and Flask-WTF signs the session's raw
    token anew for each: an HMAC plus a zlib pass (itsdangerous), and zlib lets the GIL go
    (bench/switches.py: ~1.9 context switches a page). A signed token is valid for
    WTF_CSRF_TIME_LIMIT from its timestamp, so reusing one for REUSE_SECONDS shortens a
    form's life by at most that. Keyed by the raw token: a new session, a sign-in (the
    session is renewed) or a new key (a restart) gets a new one. The signing is still
    Flask-WTF's own (`generate_csrf`); only its result is kept.
    """

    REUSE_SECONDS = 60
    MAX_ENTRIES = 10_000  # beyond this the table starts again empty (bounded memory)

    def __init__(self) -> None:
        self._signed: dict[str, tuple[int, str]] = {}  # raw token -> (minute, signed)

    def __call__(self) -> str:
        made = g.get(WTF_FIELD_NAME)  # this request already has one (a form made it)
        if isinstance(made, str):
            return made
        period = int(time.time()) // self.REUSE_SECONDS
        kept = self._signed.get(session.get(WTF_FIELD_NAME) or "")
        if kept is not None and kept[0] == period:
            setattr(g, WTF_FIELD_NAME, kept[1])  # Flask-WTF's per-request copy: forms agree
            return kept[1]
        token = str(generate_csrf())  # makes the session's raw token if it had none
        raw = session.get(WTF_FIELD_NAME)
        if isinstance(raw, str):
            if len(self._signed) >= self.MAX_ENTRIES:
                self._signed.clear()
            self._signed[raw] = (period, token)
        return token


def init_app(app: Flask) -> None:
    app.config["WTF_CSRF_SSL_STRICT"] = False
    app.config["WTF_CSRF_CHECK_DEFAULT"] = False  # we call protect() after the origin check
    csrf.init_app(app)
    # Flask-WTF offers `csrf_token` as a global and again through a context processor; a
    # later processor's names win, so ours is registered after its.
    signed = SignedTokens()
    app.jinja_env.globals["csrf_token"] = signed
    app.context_processor(lambda: {"csrf_token": signed})
    app.before_request(check_request)
    app.register_error_handler(CSRFError, handle_csrf_error)
