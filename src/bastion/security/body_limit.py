"""Refuse oversized request bodies: by Content-Length before reading them, and a chunked
body (no Content-Length) as soon as it passes the limit.

A refused body is still read and thrown away up to DRAIN_CAP: gunicorn closes the socket
after a `Connection: close` response, and unread bytes in the receive buffer make the
kernel send a reset that destroys the 413 page before the client reads it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import IO, Any, TypeVar

from flask import current_app, request
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wsgi import LimitedStream

DRAIN_CAP = 64 * 1024 * 1024
DRAIN_SECONDS = 15.0
LIMIT_ATTR = "__bastion_max_body__"
F = TypeVar("F", bound=Callable[..., Any])


class ChunkedBodyLimit(LimitedStream):
    """A chunked request body (no Content-Length), capped at the request's limit.

    werkzeug caps such a body with a `LimitedStream` that raises 413 on a read past the
    limit, but its `readall` stops once the limit is reached without that extra read. A
    url-encoded form read whole was therefore parsed from its first `limit` bytes: a valid
    form followed by padding was accepted, cut short. Here reading it whole checks for
    one byte more, and a body over the limit gets its 413. (Multipart parsing reads in
    chunks and already raised.)
    """

    def __init__(self, stream: IO[bytes], limit: int) -> None:
        super().__init__(stream, limit, is_max=True)
        self._source = stream

    def readall(self) -> bytes:
        data = super().readall()
        if self.is_exhausted and self._source.read(1):
            self.on_exhausted()  # raises RequestEntityTooLarge
        return data


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
        raise RequestEntityTooLarge


__all__ = ["ChunkedBodyLimit", "enforce_body_limit", "max_body"]
