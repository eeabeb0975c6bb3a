"""A request id on every request, the signed-in user's id once known, one access line each.

Who and what (ASVS 16.2.1): every log line of a request carries its ``request_id`` and,
from the moment the user is known (app.py's user loader, or a sign-in), its ``user_id``.
Both live in structlog's contextvars, so they reach every line, the stdlib's included.
`begin_request` clears them first: a thread serves one request after another, and an
anonymous request must not inherit the previous request's user.

The access line logs the route pattern instead of the path when a view takes a token in
its URL (`/auth/confirm/<token>`), so one-time links never reach the logs; query strings
are never logged.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterable

import structlog
from flask import Flask, current_app, g, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.wrappers import Response

from bastion.core import randomness

log = structlog.get_logger("bastion.access")
SECRET_VIEW_ARGS = frozenset({"token"})
# Our signed tokens are long runs of URL-safe base64 with dots; no page name looks like that.
TOKENISH = re.compile(r"[A-Za-z0-9_\-]{24,}(?:\.[A-Za-z0-9_\-]+)*")


REQUEST_ID_BYTES = 8
SPARE_BYTES = 18  # the CSP nonce's (security/headers.py)
_SPARE = "bastion.spare_random_bytes"


def begin_request() -> None:
    # One take for the id and the nonce: core/randomness.py says why it is pooled.
    drawn = randomness.take(REQUEST_ID_BYTES + SPARE_BYTES)
    g.request_id = drawn[:REQUEST_ID_BYTES].hex()
    setattr(g, _SPARE, drawn[REQUEST_ID_BYTES:])
    g.request_started = time.perf_counter()
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=g.request_id)


def bind_user(user_id: int) -> None:
    """Name `user_id` on every log line from here to the end of this request.

    Called with a user already in hand (loaded or just signed in): no query, no store.
    """
    structlog.contextvars.bind_contextvars(user_id=user_id)


def spare_random_bytes() -> bytes | None:
    """This request's spare CSPRNG bytes (SPARE_BYTES), handed out once; None after that."""
    spare: bytes | None = g.pop(_SPARE, None)
    return spare


def loggable_path() -> str:
    """This request's path as logs and audit rows may show it: token URLs as their pattern.

    When routing failed on the method (405), the URL still names a route (and its token):
    match it again with a method the route allows.
    """
    rule = request.url_rule
    names: Iterable[str] = request.view_args.keys() if request.view_args else ()
    failed = request.routing_exception
    if rule is None and isinstance(failed, MethodNotAllowed) and failed.valid_methods:
        allowed = next(iter(failed.valid_methods))
        adapter = current_app.url_map.bind_to_environ(request.environ)
        with contextlib.suppress(HTTPException):  # e.g. a redirect to add a slash
            rule, args = adapter.match(method=allowed, return_rule=True)
            names = args.keys()
    if rule is not None and SECRET_VIEW_ARGS.intersection(names):
        return rule.rule
    if rule is None:
        # No route matched (a mistyped one-time link, say): mask anything token-shaped.
        return TOKENISH.sub("<redacted>", request.path)
    return request.path


def end_request(response: Response) -> Response:
    request_id = g.get("request_id")
    if request_id:
        response.headers["X-Request-ID"] = request_id
    started = g.get("request_started")
    log.info(
        "request",
        method=request.method,
        path=loggable_path(),
        status=response.status_code,
        ms=round((time.perf_counter() - started) * 1000, 2) if started else None,
        ip=request.remote_addr,
    )
    return response


def init_app(app: Flask) -> None:
    app.before_request(begin_request)
    app.after_request(end_request)
