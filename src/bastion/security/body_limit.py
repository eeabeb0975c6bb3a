"""Refuse oversized request bodies by Content-Length, before reading them.

A refused body is still read and thrown away up to DRAIN_CAP: gunicorn closes the socket
after a `Connection: close` response, and unread bytes in the receive buffer make the
kernel send a reset that destroys the 413 page before the client reads it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from flask import current_app, request
from werkzeug.exceptions import RequestEntityTooLarge

DRAIN_CAP = 64 * 1024 * 1024
DRAIN_SECONDS = 15.0
LIMIT_ATTR = "__bastion_max_body__"
F = TypeVar("F", bound=Callable[..., Any])


def max_body(limit_bytes: int | Callable[[], int]) -> Callable[[F], F]:
    """Give one view a body limit of its own (e.g. uploads), instead of the global one.

    A callable is asked per request (inside the app context), for limits that come from
    settings, e.g. BASTION_MAX_UPLOAD_MB.
    """

    def decorate(view: F) -> F:
        setattr(view, LIMIT_ATTR, limit_bytes)
        return view

    return decorate


def _drain(stream: Any, length: int) -> None:
    deadline = time.monotonic() + DRAIN_SECONDS
    remaining = min(length, DRAIN_CAP)
    while remaining > 0 and time.monotonic() < deadline:
        chunk = stream.read(min(65536, remaining))
        if not chunk:
            break
        remaining -= len(chunk)


def enforce_body_limit() -> None:
    """Set this request's limit and raise 413 at once when Content-Length exceeds it."""
    limit: int | None = current_app.config["MAX_CONTENT_LENGTH"]
    if request.endpoint is not None:
        view = current_app.view_functions.get(request.endpoint)
        limit = getattr(view, LIMIT_ATTR, limit)
        if callable(limit):
            limit = limit()
    request.max_content_length = limit
    length = request.content_length
    if limit is not None and length is not None and length > limit:
        _drain(request.environ["wsgi.input"], length)
        request.environ["bastion.close_connection"] = True
        raise RequestEntityTooLarge


__all__ = ["enforce_body_limit", "max_body"]
