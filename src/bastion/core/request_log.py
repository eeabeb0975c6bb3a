"""A request id on every request and one access-log line per response.

The access line logs the route pattern instead of the path when a view takes a token in
its URL (`/auth/confirm/<token>`), so one-time links never reach the logs; query strings
are never logged.
"""

from __future__ import annotations

import secrets
import time

import structlog
from flask import Flask, g, request
from werkzeug.wrappers import Response

log = structlog.get_logger("bastion.access")
SECRET_VIEW_ARGS = frozenset({"token"})


def begin_request() -> None:
    g.request_id = secrets.token_hex(8)
    g.request_started = time.perf_counter()
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=g.request_id)


def _loggable_path() -> str:
    if request.view_args and SECRET_VIEW_ARGS & request.view_args.keys() and request.url_rule:
        return request.url_rule.rule
    return request.path


def end_request(response: Response) -> Response:
    request_id = g.get("request_id")
    if request_id:
        response.headers["X-Request-ID"] = request_id
    started = g.get("request_started")
    log.info(
        "request",
        method=request.method,
        path=_loggable_path(),
        status=response.status_code,
        ms=round((time.perf_counter() - started) * 1000, 2) if started else None,
        ip=request.remote_addr,
    )
    return response


def init_app(app: Flask) -> None:
    app.before_request(begin_request)
    app.after_request(end_request)
