"""The upload route's own body limit, through gunicorn + TLS.

`/documents/upload` admits BASTION_MAX_UPLOAD_MB (16) plus a small multipart allowance,
where every other route stops at 1 MiB; a body over it gets a real 413 page that names
the limit, refused by Content-Length before the body is read (and drained, so the client
reads the page instead of a connection reset).
"""

from __future__ import annotations

import http.client
import socket

import pytest

from tests.server.conftest import LOOPBACK, Serve, client_context

pytestmark = pytest.mark.server

MiB = 1024 * 1024


PART = (
    b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n'
    b"Content-Type: text/plain\r\n\r\n"
)
END = b"\r\n--xyz--\r\n"


def post_body(server: Serve, path: str, size: int) -> tuple[int, str]:
    """POST a well-formed multipart body of `size` bytes: one file part, no CSRF token."""
    context = client_context(server.cafile)
    head = (
        f"POST {path} HTTP/1.1\r\n"
        f"Host: {LOOPBACK}:{server.port}\r\n"
        "Content-Type: multipart/form-data; boundary=xyz\r\n"
        f"Content-Length: {size}\r\n\r\n"
    ).encode() + PART
    size -= len(PART) + len(END)
    chunk = b"a" * 65536
    with (
        socket.create_connection((LOOPBACK, server.port), timeout=30) as raw,
        context.wrap_socket(raw, server_hostname=LOOPBACK) as tls,
    ):
        tls.sendall(head)
        sent = 0
        try:
            while sent < size:
                sent += tls.send(chunk[: size - sent])
            tls.sendall(END)
            response = http.client.HTTPResponse(tls, method="POST")  # type: ignore[arg-type]
            response.begin()
            body = response.read().decode()
        except OSError as exc:
            pytest.fail(f"no answer: connection failed after {sent} body bytes: {exc!r}")
    return response.status, body


def test_an_oversized_upload_gets_a_real_413_page_naming_the_limit(server: Serve) -> None:
    status, body = post_body(server, "/documents/upload", 18 * MiB)
    assert status == 413
    assert "uploads may be at most 16 MB" in body
    assert "<html" in body.lower()


def test_the_upload_route_admits_more_than_the_global_limit(server: Serve) -> None:
    # 2 MiB is over the global 1 MiB limit but within the upload limit: the request gets
    # past the size check and is refused later (no CSRF token), not with 413.
    status, _body = post_body(server, "/documents/upload", 2 * MiB)
    assert status == 400
