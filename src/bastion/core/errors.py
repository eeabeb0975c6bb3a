"""Error answers: one helper that renders HTML, or JSON under /api/, never a traceback."""

from __future__ import annotations

from http import HTTPStatus

import structlog
from flask import Flask, g, jsonify, render_template, request
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

log = structlog.get_logger("bastion.errors")

MESSAGES: dict[int, str] = {
    400: "The request could not be understood. Check what you sent and try again.",
    401: "Please sign in to continue.",
    403: "You do not have permission to open this page.",
    404: "There is nothing here. Check the address, or go back to the home page.",
    405: "This page does not accept that kind of request.",
    413: "What you sent is too large.",
    429: "Too many requests. Wait a little and try again.",
    500: "Something went wrong on our side. It has been logged; please try again later.",
    503: "The service is briefly unavailable. Please try again in a moment.",
}


# Set on `g` while a dependency outage is answered, so the error page touches no store.
DEPENDENCY_DOWN = "dependency_down"


class DependencyUnavailable(Exception):
    """A backing service (database, Redis, session store) did not answer in time."""


def error_response(status: int, message: str | None = None) -> Response:
    """Answer `status` with a friendly page (HTML) or problem document (under /api/)."""
    phrase = HTTPStatus(status).phrase
    text = message or MESSAGES.get(status, phrase)
    if request.path.startswith("/api/"):
        response: Response = jsonify({"error": phrase, "message": text, "status": status})
    else:
        response = Response(
            render_template("errors/error.html", status=status, title=phrase, message=text),
            mimetype="text/html",
        )
    response.status_code = status
    return response


def _rollback() -> None:
    # A failed request must never have its half-done work committed by a later write.
    from bastion.core.db import db

    db.session.rollback()


def handle_http_exception(error: HTTPException) -> Response:
    status = error.code or 500
    response = error_response(status)
    if status == HTTPStatus.METHOD_NOT_ALLOWED and error.valid_methods:  # type: ignore[attr-defined]
        response.headers["Allow"] = ", ".join(error.valid_methods)  # type: ignore[attr-defined]
    if status == HTTPStatus.REQUEST_ENTITY_TOO_LARGE:
        response.headers["Connection"] = "close"
    return response


def handle_unavailable(error: Exception) -> Response:
    g.setdefault(DEPENDENCY_DOWN, True)
    _rollback()
    log.error("dependency unavailable", error_type=type(error).__name__)
    response = error_response(HTTPStatus.SERVICE_UNAVAILABLE)
    response.headers["Retry-After"] = "5"
    return response


def handle_unexpected(error: Exception) -> Response:
    _rollback()
    log.error("unhandled exception", exc_info=error)
    return error_response(HTTPStatus.INTERNAL_SERVER_ERROR)


def register_error_handlers(app: Flask, *, uses_redis: bool) -> None:
    from sqlalchemy.exc import InterfaceError, OperationalError

    app.register_error_handler(HTTPException, handle_http_exception)
    for unavailable in (DependencyUnavailable, OperationalError, InterfaceError):
        app.register_error_handler(unavailable, handle_unavailable)
    if uses_redis:
        # Only the scale-out profile imports redis-py (it costs every worker memory).
        import redis

        app.register_error_handler(redis.RedisError, handle_unavailable)
    app.register_error_handler(Exception, handle_unexpected)
